"""Shared benchmark harness: correctness first, then honest GPU timing.

- Every benchmark checks its result against a float64 reference before timing it
  (``check``); a wrong result is recorded as such and makes the run exit non-zero.
- Timing: warm-up calls first (module load, cuBLAS handle creation), then CUDA events
  around each call, with the L2 cache flushed (a 2x-L2 buffer rewritten) before each call so
  the cache is not what is measured; that write also keeps the GPU busy while Python
  enqueues the op, so host launch overhead stays out of the kernel's time. Inputs rotate
  over several sets. The median of the repeats is the figure; p10 / p90 give the spread.
- Results: FLOP and byte counts give TFLOP/s and GB/s; every pyfast figure is also given
  as a ratio to the baseline (cuBLAS / cuDNN / PyTorch) measured in the same run.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import cupy

from benchmarks import source

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"


@dataclasses.dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int


class L2Flush:
    """Rewrites a buffer twice the size of the L2 cache (at least 256 MB)."""

    def __init__(self):
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
        size = max(2 * int(props["l2CacheSize"]), 256 << 20)
        self.buffer = cupy.empty(size // 4, dtype=cupy.float32)

    def __call__(self):
        self.buffer.fill(0)


_flush = None


def _refuse_the_emulator():
    if getattr(cupy, "_pyfast_emulator", False):
        raise RuntimeError("the benchmarks time a GPU; under PYFAST_EMULATE=1 the kernels run on the CPU emulator, "
                           "whose times say nothing about a GPU's")


def time_gpu(fn, inputs, *, warmup=3, budget_ms=1500.0, min_repeats=5, max_repeats=100, flush=True):
    """Median time of ``fn(*inputs[i % len(inputs)])`` over repeats, in milliseconds.

    The number of repeats fits ``budget_ms`` of measured time (at least ``min_repeats``).
    """
    _refuse_the_emulator()
    global _flush
    if flush and _flush is None:
        _flush = L2Flush()
    stream = cupy.cuda.get_current_stream()
    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    stream.synchronize()

    def timed(count):
        events = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(count)]
        for i, (start, end) in enumerate(events):
            if flush:
                _flush()
            start.record(stream)
            fn(*inputs[i % len(inputs)])
            end.record(stream)
        end.synchronize()
        return [cupy.cuda.get_elapsed_time(start, end) for start, end in events]

    first = timed(1)[0]
    repeats = int(min(max_repeats, max(min_repeats, budget_ms / max(first, 1e-3))))
    times = np.array(timed(repeats))
    return Timing(float(np.median(times)), float(np.percentile(times, 10)), float(np.percentile(times, 90)), repeats)


def time_back_to_back(fn, inputs, *, warmup=3, budget_ms=1500.0, rounds=7):
    """Per-call time of calls enqueued back to back between two events, median of `rounds`:
    what a loop of this op costs on the GPU timeline. For ops shorter than their Python
    overhead this is the host's cost per call, which is then the honest figure to compare.
    """
    _refuse_the_emulator()
    stream = cupy.cuda.get_current_stream()
    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    stream.synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()

    def per_call(count):
        start.record(stream)
        for i in range(count):
            fn(*inputs[i % len(inputs)])
        end.record(stream)
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / count

    calls = int(min(1000, max(3, budget_ms / rounds / max(per_call(3), 1e-3))))
    times = np.array([per_call(calls) for _ in range(rounds)])
    return Timing(float(np.median(times)), float(np.percentile(times, 10)), float(np.percentile(times, 90)),
                  calls * rounds)


def copy_bandwidth_gbps(nbytes=1 << 30):
    """The card's device-to-device copy rate in GB/s, counting bytes read plus bytes written:
    the ceiling for memory-bound kernels, measured in the same run."""
    src = cupy.ones(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    t = time_gpu(lambda: dst.__setitem__(Ellipsis, src), [()], flush=False)
    return gbps(2 * nbytes, t.median_ms)


def record_copy_ceiling(info, what):
    """Measures the copy ceiling into `info` and prints the benchmark's header line with it."""
    info["copy_gbps"] = copy_bandwidth_gbps()
    print(f"# {what} on {info['device']}; device-to-device copy {info['copy_gbps']:.0f} GB/s (read + write)")
    return info["copy_gbps"]


def torch_or_none():
    """PyTorch with CUDA, FP32 pinned (no TF32 anywhere), or None when it is not usable."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "ieee"  # newer PyTorch: the explicit form of "no TF32"
    torch.backends.cudnn.benchmark = True  # cuDNN's best algorithm per shape
    return torch


def tflops(flop, ms):
    return flop / (ms * 1e-3) / 1e12


def gbps(nbytes, ms):
    return nbytes / (ms * 1e-3) / 1e9


def device_info():
    """The card and software versions every result file carries."""
    import pyfast

    if not pyfast.is_available():
        raise SystemExit(f"the benchmarks need a GPU: {pyfast.unavailable_reason()}")
    from pyfast import _C

    device = cupy.cuda.runtime.getDevice()
    props = cupy.cuda.runtime.getDeviceProperties(device)
    measured = source.describe()
    info = {
        "device": props["name"].decode(),
        "compute_capability": f"{props['major']}.{props['minor']}",
        "multiprocessors": props["multiProcessorCount"],
        "l2_cache_bytes": props["l2CacheSize"],
        "memory_bytes": props["totalGlobalMem"],
        "driver_cuda_version": _C.driver_version(),
        "pyfast_cuda_runtime": _C.runtime_version(),
        "cupy": cupy.__version__,
        "cupy_tf32": os.environ.get("CUPY_TF32", "0"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # The source measured (benchmarks/source.py: from git, or on a copied tree from its stamp).
        "git_commit": source.label(measured),
        "git_dirty": measured["dirty"],
    }
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["driver"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        pass
    return info


def card_slug(info):
    return re.sub(r"[^a-z0-9]+", "-", info["device"].lower()).strip("-")


def write_results(family, info, rows, out_dir=None):
    """Writes ``<family>-<card>-<date>.json`` into out_dir (default benchmarks/results/)."""
    out_dir = Path(out_dir) if out_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{family}-{card_slug(info)}-{info['date'][:10]}.json"
    path.write_text(json.dumps({"family": family, "info": info, "rows": rows}, indent=1) + "\n")
    return path


def print_table(rows, columns):
    """columns: (header, key, format) triples; missing values print as '-'."""
    cells = [[h for h, _, _ in columns]]  # noqa: C416
    for row in rows:
        cells.append([("-" if row.get(k) is None else fmt.format(row[k])) for _, k, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# ----------------------------------------------------------- the shape of every bench_* script
def argument_parser(doc):
    """--quick and --out, the options every family's benchmark takes (add more, then parse)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--out", help="directory for the JSON (default benchmarks/results/)")
    return parser


def parse_args(doc, argv=None):
    return argument_parser(doc).parse_args(argv)


def check_first(rows, row, check):
    """Runs check() (an assertion against the reference) before anything is timed. A wrong
    result is reported and recorded as such; returns whether the result was right."""
    try:
        check()
        return True
    except AssertionError as error:
        print(f"WRONG RESULT: {error}", file=sys.stderr)
        rows.append(dict(row, correct=False))
        return False


def finish(family, info, rows, columns, out_dir, failures):
    """Prints the table, writes the JSON; the exit status refuses a run with wrong results."""
    print_table(rows, columns)
    print(f"# results: {write_results(family, info, rows, out_dir)}")
    if failures:
        print(f"# {failures} wrong results: run refused", file=sys.stderr)
        return 1
    return 0


def update_tuning_table(path, info, entries, about, dry_run=False):
    """Merges a tuner's {class key: entry} for this card into the table at `path` (other cards'
    entries and this card's unmeasured classes stay), or prints them with `dry_run`."""
    import json
    from pathlib import Path

    from pyfast import _tuning

    card = info["device"]
    if dry_run:
        print(json.dumps(entries, indent=1))
        return
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if data.get("format") != _tuning.FORMAT:
        data = {"format": _tuning.FORMAT, "about": about, "cards": {}}
    data["cards"].setdefault(card, {}).update(entries)
    data.setdefault("measured", {})[card] = {key: info[key] for key in ("date", "driver_cuda_version", "git_commit")}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    _tuning.clear_cache()
    print(f"# wrote {len(entries)} classes for {card} to {path}")


def tuner_args(doc, table, budget_ms, argv=None):
    """The command line both tuners take: --quick, --table (default `table`), --budget-ms,
    --dry-run."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--table", default=str(table), help="the table to update")
    parser.add_argument("--budget-ms", type=float, default=budget_ms, help="timing budget per candidate")
    parser.add_argument("--dry-run", action="store_true", help="print, do not write the table")
    return parser.parse_args(argv)
