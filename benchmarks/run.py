"""Every benchmark family in one command, with the card's ceilings and one report.

    python -m benchmarks.run [--quick] [--only matmul,conv,...] [--out DIR]

Measures the ceilings first (device-to-device copy; cuBLAS FP32 through CuPy; cuBLAS TF32 and
BF16 through PyTorch with the precision set explicitly), runs each family's benchmark (each
checks its results against a reference before timing, and fails on a wrong one), then writes
into DIR (default benchmarks/results/<card>-<date>/): results.json (card, versions, ceilings,
every row), results.csv, report.md and the charts. Exits non-zero when any family failed.
"""

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("CUPY_TF32", "0")  # cuBLAS FP32 means FP32 (read at CuPy import)

import cupy  # noqa: E402

from benchmarks import harness, report  # noqa: E402


def measure_ceilings(size=8192):
    """The rates the report compares against, measured now on this card."""
    ceilings = {"copy_gbps": harness.copy_bandwidth_gbps()}
    a = cupy.random.default_rng(0).standard_normal((size, size), dtype=cupy.float32)
    flop = 2.0 * size**3
    ceilings["cublas_fp32_tflops"] = harness.tflops(flop, harness.time_gpu(lambda: cupy.matmul(a, a), [()]).median_ms)
    torch = harness.torch_or_none()
    if torch is not None:
        t = torch.from_dlpack(a)
        torch.backends.cuda.matmul.allow_tf32 = True  # labelled TF32: the tensor-core ceiling
        ceilings["cublas_tf32_tflops"] = harness.tflops(flop, harness.time_gpu(lambda: t @ t, [()]).median_ms)
        torch.backends.cuda.matmul.allow_tf32 = False
        b = t.bfloat16()
        ceilings["cublas_bf16_tflops"] = harness.tflops(flop, harness.time_gpu(lambda: b @ b, [()]).median_ms)
    return ceilings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes per family")
    parser.add_argument("--only", help=f"comma-separated families among {','.join(report.FAMILIES)}")
    parser.add_argument("--out", help="output folder (default benchmarks/results/<card>-<date>/)")
    args = parser.parse_args(argv)
    families = args.only.split(",") if args.only else list(report.FAMILIES)
    unknown = set(families) - set(report.FAMILIES)
    if unknown:
        parser.error(f"--only: unknown families {sorted(unknown)}")
    info = harness.device_info()
    out = Path(args.out) if args.out else harness.RESULTS_DIR / f"{harness.card_slug(info)}-{info['date'][:10]}"
    family_dir = out / "families"
    family_dir.mkdir(parents=True, exist_ok=True)
    ceilings = measure_ceilings()
    print("# ceilings: " + ", ".join(f"{k} {v:.1f}" for k, v in ceilings.items()))
    failed = []
    for family in families:
        print(f"\n## {family}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{family}")
        if module.main((["--quick"] if args.quick else []) + ["--out", str(family_dir)]) != 0:
            failed.append(family)
    results = report.load_results(sorted(family_dir.glob("*.json")))
    results["info"] = dict(info, **{k: v for k, v in results["info"].items() if k not in info})
    results["ceilings"].update(ceilings)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n# {report.write_report(results, out)}")
    if failed:
        print(f"# failed (wrong results or errors): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
