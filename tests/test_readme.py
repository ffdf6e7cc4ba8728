"""Every command and snippet of README.md runs as the README shows it: the snippets as written
(the Use snippet also through the substitution the README gives for machines without a GPU),
the commands each by a test here or by CI (.ci/run runs them verbatim); a command added to the
README without one fails test_every_readme_command_is_run. Its recorded outputs are the
transcripts under benchmarks/results."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyfast

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RECORDED = ROOT / "benchmarks" / "results" / "cpu-intel-r-xeon-r-processor-2026-12-02"


def _snippet(after):
    """The first ```python block after the text `after`."""
    return re.search(r"```python\n(.*?)```", README[README.index(after):], re.S).group(1)


def _commands():
    """Every command line of the README's ```bash blocks, without its comment."""
    return [line.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)
            for line in block.splitlines() if line.strip()]


def _run(command, cwd, timeout=600, **env):
    """(exit code, stdout, stderr) of a README command line, run by the shell as a user runs it
    (this Python's scripts first on PATH)."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    result = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), **env})
    return result.returncode, result.stdout, result.stderr


# How each README command is run: by a test below (its name), or by CI (.ci/run holds it verbatim).
COMMANDS = {
    "pip install .": "test_pip_install_dot_builds_what_a_user_runs",
    'pip install -e ".[test]"': "ci",
    "pyfast-train linreg": "test_the_training_commands_run_as_written",
    "pyfast-train cnn --save cnn.npz": "test_the_training_commands_run_as_written",
    "python -m pytest -q -n auto": "ci",
    "bash tests/emulated.sh": "test_the_emulated_test_commands_are_what_ci_runs",
    "bash tests/emulated.sh all": "ci",
    'PYFAST_EMULATE=1 python -m pytest -q -n 2 -m "gpu and not slow"': "test_the_emulated_test_commands_are_what_ci_runs",
    "PYFAST_EMULATE=1 PYFAST_EMU_ORDER=random PYFAST_EMU_SEED=3 python my_script.py":
        "test_use_snippet_runs_as_written_under_the_emulator",
    'python -m pyfast.profile -c "import cupy, pyfast; from pyfast import ops; ops.relu(cupy.ones((1 << 20,), '
    'cupy.float32))"': "test_the_profile_commands_run_as_written",
    "python -m pyfast.profile --sample-blocks 4 --card H200 my_script.py": "test_the_profile_commands_run_as_written",
    "bash benchmarks/gpu_check.sh": "test_the_gpu_commands_run_or_refuse_plainly",
    "bash benchmarks/gpu_check.sh matmul": "test_the_gpu_commands_run_or_refuse_plainly",
    "bash benchmarks/gpu_check.sh conv": "test_the_gpu_commands_run_or_refuse_plainly",
    "python -m benchmarks.bench_conv": "test_the_gpu_commands_run_or_refuse_plainly",
    "python -m benchmarks.tune_conv": "test_the_gpu_commands_run_or_refuse_plainly",
    "python -m benchmarks.bench_matmul": "test_the_gpu_commands_run_or_refuse_plainly",
    "python -m benchmarks.tune_matmul": "test_the_gpu_commands_run_or_refuse_plainly",
    "python -m benchmarks.bench_elementwise": "test_the_gpu_commands_run_or_refuse_plainly",
    "python -m benchmarks.bench_loss": "test_the_gpu_commands_run_or_refuse_plainly",
    "python -m benchmarks.bench_optim": "test_the_gpu_commands_run_or_refuse_plainly",
}


def test_every_readme_command_is_run():
    commands = _commands()
    assert set(commands) == set(COMMANDS), "give each new README command a test here (and drop gone ones)"
    # .ci/run spells python as python3 and quiets pip's version check; otherwise the same lines.
    ci = [re.sub(r"^python3 ", "python ", line).replace("python -m pip install --disable-pip-version-check", "pip install")
          for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command, how in COMMANDS.items():
        if how == "ci":
            assert command in ci, f"{command!r} is not a line of .ci/run"
        else:
            assert how in globals(), how


def _use_checks():
    """Lines appended after the Use snippet: what it must have computed."""
    return ("\nassert dx.shape == (64, 3136) and dw.shape == (3136, 128) and loss.shape == ()\n"
            "assert pooled.shape == (64, 32, 14, 14) and dconv.shape == (64, 32, 28, 28)\n"
            "assert dkernel.shape == (32, 1, 3, 3) and dbias.shape == (32,)\n"
            "import numpy\nassert numpy.isfinite(float(loss)) and numpy.isfinite(float(abs(dkernel).sum()))\n"
            "print('use snippet ok')\n")


@pytest.mark.parametrize("module", ["cpu", "reference"])
def test_use_snippet_runs_on_the_numpy_backends(module):
    code = _snippet("## Use")
    substituted = code.replace("import pyfast, cupy\nfrom pyfast import ops",
                               f"import numpy as cupy, pyfast\nfrom pyfast import {module} as ops")
    assert substituted != code, "the README's substitution no longer applies to its snippet"
    assert f"`from pyfast import cpu as ops`" in README
    scope = {}
    exec(compile(substituted + _use_checks(), "README.md (Use)", "exec"), scope)


def test_use_snippet_runs_as_written_under_the_emulator(tmp_path):
    """The snippet exactly as written, saved as my_script.py, run by the README's command for it."""
    if pyfast.is_available() and not pyfast.emulator.enabled():
        pytest.skip("a GPU is usable here: the snippet runs on it in test_use_snippet_runs_on_the_gpu")
    (tmp_path / "my_script.py").write_text(_snippet("## Use") + _use_checks())
    command = "PYFAST_EMULATE=1 PYFAST_EMU_ORDER=random PYFAST_EMU_SEED=3 python my_script.py"
    assert command in _commands()
    code, out, err = _run(command, tmp_path, timeout=300)
    assert code == 0 and "use snippet ok" in out, err[-3000:]


@pytest.mark.gpu
def test_use_snippet_runs_on_the_gpu(tmp_path):
    scope = {}
    exec(compile(_snippet("## Use") + _use_checks(), "README.md (Use)", "exec"), scope)


@pytest.mark.gpu
def test_use_from_pytorch_snippet_runs():
    """The PyTorch snippet as written, on the GPU or (CI) the emulator with CPU tensors."""
    pytest.importorskip("torch")
    checks = ("\nassert loss.shape == () and y.shape == (16, 8, 14, 14) and logits.shape == (16, 10)\n"
              "assert type(plain[0]) is pt.nn.Conv2d and report.swapped == ['0', '1']\n"
              "assert torch.isfinite(logits).all() and model[0].weight.grad is not None\n")
    exec(compile(_snippet("## Use from PyTorch") + checks, "README.md (Use from PyTorch)", "exec"), {})


def _recorded_block():
    """The README's block of recorded CLI output, as {command: [lines]}."""
    block = re.search(r"```text\n(\$ pyfast-train linreg.*?)```", README, re.S).group(1)
    runs, command = {}, None
    for line in block.splitlines():
        if line.startswith("$ "):
            command = line[2:]
            runs[command] = []
        elif line:
            runs[command].append(line)
    return runs


def test_the_readme_output_is_the_recorded_runs():
    """Each line the README shows is a line of the recorded transcript, in order (the device
    error shortened to '...', lines left out as '...')."""
    transcripts = {"pyfast-train linreg": "pyfast-train-linreg.txt",
                   "pyfast-train cnn --no-progress --save cnn.npz": "pyfast-train-cnn.txt"}
    shown = _recorded_block()
    assert set(shown) == set(transcripts)
    for command, name in transcripts.items():
        recorded = (RECORDED / name).read_text().splitlines()
        assert recorded[0] == f"$ {command}"
        at = 1
        for line in shown[command]:
            if line == "...":
                continue
            pattern = re.escape(line).replace(re.escape(": ...)"), r": [^)]*\)")
            while at < len(recorded) and not re.fullmatch(pattern, recorded[at]):
                at += 1
            assert at < len(recorded), f"{command}: {line!r} is not in {name} (in order)"
            at += 1


def _numbers(line):
    return [float(x) for x in re.findall(r"\d+\.\d+", line)]


def test_the_training_commands_run_as_written(tmp_path):
    """pyfast-train linreg (and its python -m form) and the CNN commands as the README shows them;
    their losses and accuracies are the recorded run's (to float32 rounding across machines:
    BLAS sums in another order elsewhere), their speeds are not compared."""
    assert "pyfast-train linreg                 # or: python -m pyfast.train linreg" in README
    recorded = {"linreg": (RECORDED / "pyfast-train-linreg.txt").read_text().splitlines()[2:],
                "cnn": (RECORDED / "pyfast-train-cnn.txt").read_text().splitlines()[2:]}
    for command in ("pyfast-train linreg", "python -m pyfast.train linreg"):
        code, out, err = _run(command, tmp_path, PYFAST_EMULATE="")
        assert code == 0, err
        lines = out.splitlines()
        if not pyfast.is_available():
            assert len(lines) == len(recorded["linreg"])
            for got, want in zip(lines, recorded["linreg"]):
                assert got.split("=")[0] == want.split("=")[0]
                assert _numbers(got) == pytest.approx(_numbers(want), rel=1e-4)
    plot = " --plot curves.png" if _has_matplotlib() else ""  # as the README's comment on the command says
    code, out, err = _run("pyfast-train cnn --save cnn.npz" + plot, tmp_path, PYFAST_EMULATE="")
    assert code == 0, err
    assert (tmp_path / "cnn.npz").exists() and (not plot or (tmp_path / "curves.png").exists())
    if not pyfast.is_available():  # the recorded run is the NumPy backend's
        epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
        expected = [line for line in recorded["cnn"] if line.startswith("epoch ")]
        assert len(epochs) == len(expected) == 10
        for got, want in zip(epochs, expected):
            assert _numbers(got)[:4] == pytest.approx(_numbers(want)[:4], abs=5e-3), (got, want)
        test_line = next(line for line in out.splitlines() if line.startswith("test accuracy"))
        assert _numbers(test_line)[0] == pytest.approx(0.9888, abs=0.02)


def _has_matplotlib():
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def test_the_emulated_test_commands_are_what_ci_runs():
    """`bash tests/emulated.sh` is its `suite` mode, which runs the README's PYFAST_EMULATE=1 pytest
    command (with pytest-xdist's worker count from the machine); CI runs `all`, suite included."""
    script = (ROOT / "tests" / "emulated.sh").read_text()
    assert 'mode="${1:-suite}"' in script and "for part in suite sanitize order profile" in script
    assert 'PYFAST_EMULATE=1 "$PYTHON" -m pytest -q "${workers[@]}" -m "gpu and not slow"' in script
    assert "bash tests/emulated.sh all" in (ROOT / ".ci" / "run").read_text()


def test_the_profile_commands_run_as_written(tmp_path):
    """The Profile section's commands, my_script.py being the Use snippet. They need the profiled
    build, which `tests/emulated.sh profile` makes and then runs this test with (CI does); the CPU
    run skips it rather than spend two minutes building it."""
    if not list((ROOT / "build" / "emu-profile" / "pyfast").glob("_C_emu*")):
        pytest.skip("the profiled build is not there: `bash tests/emulated.sh profile` builds it and runs this")
    (tmp_path / "my_script.py").write_text(_snippet("## Use") + _use_checks())
    commands = [c for c, how in COMMANDS.items() if how == "test_the_profile_commands_run_as_written"]
    assert len(commands) == 2 and all(c in _commands() for c in commands)
    for command, card in zip(commands, ("H100 SXM", "H200")):
        code, out, err = _run(command, tmp_path, timeout=600)
        assert code == 0, err[-3000:]
        assert f"modelled (pyfast-model-1, {card})" in out and "not a measurement" in out, out[-3000:]
        assert "# worst lines" in out
    assert "use snippet ok" in out and "conv" in out


def test_the_sanitized_run_leaves_out_cases_that_exist():
    """tests/emulated.sh leaves the largest cases out of the sanitized run by name: each name must
    still name a test (an index that moved once let the two largest in, doubling that run)."""
    script = (ROOT / "tests" / "emulated.sh").read_text()
    names = re.search(r'-k "not \((.*?)\)"', script).group(1).split(" or ")
    kernel_tests = re.search(r"KERNEL_TESTS=\((.*?)\)", script, re.S).group(1).split()
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly",
                             "-k", " or ".join(names), *kernel_tests], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    for name in names:
        # pytest's own ids of parameters (x_shape9) are positions, which move when cases are added.
        assert not re.fullmatch(r"[a-z]+_[a-z]+\d+", name), f"{name!r}: name the case (pytest ids=), not its position"
        assert any(name.lower() in line.lower() for line in collected), f"{name!r} names no test any more"


GPU_COMMANDS = [command for command, how in COMMANDS.items() if how == "test_the_gpu_commands_run_or_refuse_plainly"]


@pytest.mark.parametrize("command", GPU_COMMANDS)
def test_the_gpu_commands_run_or_refuse_plainly(tmp_path, command):
    """Without a GPU each says so in one line and exits 1, before any work (gpu_check.sh before
    building); with one they are the GPU run itself (benchmarks/gpu_check.sh), not a test."""
    if pyfast.is_available():
        pytest.skip("a GPU is usable here: these are the GPU run (gpu_check.sh), minutes each")
    code, out, err = _run(command, ROOT, timeout=300, OUT=str(tmp_path), PYFAST_EMULATE="")
    assert code == 1, out + err
    assert "Traceback" not in err, err
    assert re.search(r"(the benchmarks need a GPU|=== gpu_check: no usable GPU): ", out + err), out + err
    assert "=== build" not in out


def test_pip_install_dot_builds_what_a_user_runs(tmp_path):
    """`pip install .` into a fresh virtual environment (sharing this one's packages, so nothing
    is downloaded), the emulated extension only (PYFAST_BUILD=emulator: nvcc's minutes are what
    `pip install -e` in CI already spends): the wheel's console script trains and the bundled
    digits load, from outside the source tree."""
    import sysconfig

    venv = tmp_path / "venv"
    # Without its own pip and setuptools: this environment's (on its path below) build the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # This environment's packages on the new one's path (a plain path line: its .pth files, among them
    # the editable install of this pyfast, are not run there), after the new one's own site-packages.
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code, out, err = _run(f"{python} -m pip install --no-build-isolation --no-deps -q {ROOT}", tmp_path, timeout=900,
                          PYFAST_BUILD="emulator", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONPATH="")
    assert code == 0, (out + err)[-3000:]
    code, out, err = _run(f"{venv / 'bin' / 'pyfast-train'} linreg --epochs 100", tmp_path, PYTHONPATH="",
                          PYFAST_EMULATE="")
    assert code == 0 and "Epoch 100, loss=" in out, err
    check = "import pyfast, pyfast.data as d; print(pyfast.__file__); print(d.load_digits()[0].shape)"
    code, out, err = _run(f"{python} -c '{check}'", tmp_path, PYTHONPATH="")
    assert code == 0, err
    assert str(venv) in out.splitlines()[0] and "(1797, 1, 28, 28)" in out


def test_train_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it saves m.npz
    code = _snippet("In Python (")
    short = code.replace("epochs=10", "epochs=1").replace("T_max=10", "T_max=1")  # one epoch is enough here
    assert short.count("=1,") == 1 and "T_max=1)" in short
    scope = {}
    exec(compile(short, "README.md (Train)", "exec"), scope)
    assert scope["history"]["epoch"] == [1] and set(scope["stats"]) == {"mean", "std"}
    assert (tmp_path / "m.npz").exists()


def test_the_gpu_status_section_is_what_the_recorded_runs_and_git_say():
    import subprocess

    from benchmarks import status

    runs = status.load_runs()
    known = subprocess.run(["git", "cat-file", "-e", f"{runs[-1]['commit']}^{{commit}}"], capture_output=True,
                           cwd=Path(__file__).resolve().parents[1])
    if known.returncode != 0:
        pytest.skip(f"no git history holding {runs[-1]['commit']} here")
    block = README.split(status.README_START, 1)[1].split(status.README_END, 1)[0]
    assert block.strip() == status.section(runs).strip(), "regenerate it: python -m benchmarks.status --readme README.md"


def test_the_status_follows_a_kernel_across_moves(tmp_path, monkeypatch):
    """A kernel moved into a family folder keeps its GPU history: its old name is found, a pure
    move does not count as a change, an edit (in the same commit as a move or not) does."""
    import subprocess

    from benchmarks import status

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    body = "".join(f"int line{i} = {i};\n" for i in range(40))
    (tmp_path / "pool.cu").write_text(body)
    (tmp_path / "loss.cu").write_text(body + "int loss;\n")
    git("add", "-A")
    git("commit", "-q", "-m", "measured")
    measured = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "pool").mkdir()
    (tmp_path / "loss").mkdir()
    git("mv", "pool.cu", "pool/pool.cu")
    git("mv", "loss.cu", "loss/loss.cu")
    (tmp_path / "loss" / "loss.cu").write_text(body + "int loss_moved;\n")  # moved and edited
    git("add", "-A")
    git("commit", "-q", "-m", "move")
    monkeypatch.setattr(status, "ROOT", tmp_path)
    assert status.history(measured, "pool/pool.cu") == ("pool.cu", set())
    name, changed = status.history(measured, "loss/loss.cu")
    assert name == "loss.cu" and len(changed) == 1
    assert status.commits_since(measured, ["pool/pool.cu", "loss/loss.cu"]) == 1


def test_a_run_is_recorded_from_its_pytest_log(tmp_path):
    from benchmarks import status

    log = ("...\nFAILED tests/test_loss.py::test_x - AssertionError\n"
           "==== 1 failed, 1022 passed, 11 skipped in 30.1s ====\n")
    entry = status.record(log, "NVIDIA H200", "pytest -m gpu")
    assert (entry["passed"], entry["failed"], entry["skipped"]) == (1022, 1, 11)
    assert entry["failures"] == ["tests/test_loss.py::test_x"] and entry["card"] == "NVIDIA H200"
    assert "commit" in entry and "dirty" in entry
