"""python -m pyfast.profile [options] (SCRIPT [ARGS] | -c CODE): runs the script on the profiled CPU
emulator and prints one row per kernel launch and the source lines furthest from their ideal."""

import argparse
import glob
import os
import runpy
import subprocess
import sys

from pyfast.profile import counters, model, report

BUILD = os.path.join(counters.ROOT, "build", "emu-profile")


def profiled_module():
    """The profiled emulated extension of this source checkout, built or brought up to date (the
    first build takes about 1.5 minutes on 2 cores; later ones rebuild what changed)."""
    if not os.path.isfile(os.path.join(counters.ROOT, "setup.py")) or not os.path.isdir(
            os.path.join(counters.ROOT, "kernels")):
        raise SystemExit("pyfast.profile: the profiled build needs pyfast's source checkout (kernels/ and setup.py "
                         f"beside the package); {counters.ROOT} is not one")
    print("pyfast.profile: building the profiled emulator into build/emu-profile/ (PYFAST_EMU_PROFILE=1)",
          file=sys.stderr, flush=True)
    env = dict(os.environ, PYFAST_BUILD="emulator", PYFAST_EMU_PROFILE="1")
    env.pop("PYFAST_EMU_SANITIZE", None)
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", BUILD, "--build-temp",
                             BUILD + "-temp"], cwd=counters.ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit("pyfast.profile: the profiled build failed:\n" + (result.stdout + result.stderr)[-3000:])
    found = glob.glob(os.path.join(BUILD, "pyfast", "_C_emu*"))
    if not found:
        raise SystemExit(f"pyfast.profile: the build left no module in {BUILD}")
    return found[0]


def modelled(launches, card_name):
    """({launch index: (seconds, bound)}, total seconds) on the named card (raises RuntimeError
    without nvcc and nvdisasm, which the SASS needs)."""
    from pyfast.profile import sass

    sass.tools()
    key, card = model.card_named(card_name)
    params = model.load_cards()["parameters"]
    timings, total = {}, 0.0
    for i, launch in enumerate(launches):
        seconds, bound, _ = model.launch_time(model.features(launch, sass.for_launch(launch)), card, params)
        timings[i] = (seconds, bound)
        total += seconds
    return timings, total


def parser():
    p = argparse.ArgumentParser(prog="python -m pyfast.profile", description=__doc__.splitlines()[0])
    p.add_argument("--sample-blocks", type=int, default=64,
                   help="blocks per launch whose accesses are grouped into requests (0: all); counts are scaled")
    p.add_argument("--only-sampled", action="store_true",
                   help="run only the sampled blocks (counts only, wrong results: for shapes too large to run)")
    p.add_argument("--lines", type=int, default=10, help="worst source lines to list")
    p.add_argument("--card", default="H100 SXM", help="the card of the modelled times (H100 SXM or H200)")
    p.add_argument("--no-model", action="store_true", help="counts only, no modelled times")
    p.add_argument("-c", dest="code", help="profile this Python code instead of a script")
    p.add_argument("script", nargs="?", help="the script to profile")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return p


def _on_profiled_emulator(argv):
    """None where the profiled emulator runs here; else the exit code of this command rerun on it."""
    import pyfast  # noqa: F401  (starts the emulator when asked for)
    from pyfast.emulator import loader

    if loader.active() and loader.extension().emulator.profiled():
        return None
    if os.environ.get("PYFAST_PROFILE_CHILD"):
        raise SystemExit(f"pyfast.profile: the profiled emulator did not start: {loader.error()}")
    env = dict(os.environ, PYFAST_EMULATE="1", PYFAST_EMU_MODULE=profiled_module(), PYFAST_PROFILE_CHILD="1")
    return subprocess.run([sys.executable, "-m", "pyfast.profile", *argv], env=env).returncode


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["calibrate"]:
        from pyfast.profile import calibration

        if argv[1:2] == ["profile"]:
            rerun = _on_profiled_emulator(argv)
            if rerun is not None:
                return rerun
        return calibration.main(argv[1:])
    args = parser().parse_args(argv)
    if (args.code is None) == (args.script is None):
        parser().error("give a script or -c CODE")
    rerun = _on_profiled_emulator(argv)
    if rerun is not None:
        return rerun
    counters.start(args.sample_blocks, args.only_sampled)
    try:
        if args.code is not None:
            exec(compile(args.code, "<-c>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = [args.script, *args.args]
            runpy.run_path(args.script, run_name="__main__")
    finally:
        launches = counters.stop()
    print(f"# {len(launches)} launches on the profiled emulator (counts per launch, scaled from sampled blocks; "
          f"DRAM = unique bytes, the compulsory traffic; ~ = estimated from sampled blocks only)")
    timings, note = {}, ""
    if not args.no_model:
        try:
            timings, total = modelled(launches, args.card)
            note = f"# {model.label(args.card)}: {total * 1e3:.3f} ms in all, not a measurement"
        except RuntimeError as error:  # no nvcc / nvdisasm: counts only
            note = f"# no modelled times ({error})"
    print(report.launch_table(launches, timings))
    if note:
        print(note)
    print(f"\n# worst lines")
    print(report.worst_lines(launches, args.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
