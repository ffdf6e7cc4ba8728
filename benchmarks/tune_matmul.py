"""Offline matmul tuner: on this GPU, time every plan (tile configuration x K splits) of the
tiled FP32 kernel and of the tensor-core kernel (TF32, BF16) on a representative shape of each
class, and write the fastest per class into the table pyfast's launcher reads.

    python -m benchmarks.tune_matmul [--quick] [--table PATH] [--dry-run]

The table (default pyfast/matmul_tuning.json) keeps other cards' entries and this card's
entries for classes not measured now. Every candidate's result is checked against a float64
product first; a wrong candidate is reported and never chosen. Splits are tried only where
the unsplit grid leaves SMs idle (at most 4 waves after splitting); the launcher's own choice
(default tiles, K split by the library's rule) is timed beside them.
"""

import math
import os
import sys

os.environ.setdefault("CUPY_TF32", "0")

import cupy  # noqa: E402

from benchmarks import bench_matmul, harness  # noqa: E402
from pyfast import _C, _tuning, ops, reference  # noqa: E402
from pyfast.testing import assert_close, reduction_atol  # noqa: E402

SPLITS = (1, 2, 4, 8, 16, 32)
MODES = (("tiled", None), ("tensor_core", "tf32"), ("tensor_core", "bf16"))


def shapes(quick):
    """(m, n, k, trans_a, trans_b): bench_matmul's cases (squares and the CNN's fully connected
    layers as the trainer calls them)."""
    for _, *shape in bench_matmul.cases(quick):
        yield tuple(shape)


def candidates(version_code, m, n, k, sms):
    for config in range(_C.matmul_config_count(version_code)):
        block_m, block_n = _C.matmul_config_tile(version_code, config)
        tiles = math.ceil(m / block_m) * math.ceil(n / block_n)
        for splits in SPLITS:
            if splits == 1 or (tiles * splits <= 4 * sms and k // splits >= 64):
                yield config, splits


def tune_shape(m, n, k, trans_a, trans_b, sms, budget_ms):
    """{class key: entry} for one shape, every mode."""
    rng = cupy.random.default_rng(m * 7 + n * 13 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=cupy.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=cupy.float32)
    out = cupy.empty((m, n), cupy.float32)
    entries = {}
    for version, precision in MODES:
        rounding = {"tf32": reference.round_tf32, "bf16": reference.round_bf16}.get(precision, lambda x: x)
        ea, eb = (rounding(x).astype(cupy.float64) for x in (a, b))
        expected = cupy.matmul(ea.T if trans_a else ea, eb.T if trans_b else eb)
        atol = reduction_atol(k, factor=8.0 if precision else 4.0)
        version_code = len(ops.MATMUL_VERSIONS) if precision else ops.MATMUL_VERSIONS.index(version)
        timings = {}
        # The launcher's own choice without a table: its default tiles, K split by the library's rule.
        default = (-1, _C.matmul_rule_splits(version_code, m, n, k, sms))
        for plan in [default, *candidates(version_code, m, n, k, sms)]:
            def run(a, b, plan=plan, version=version, precision=precision):
                return ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, version=version, precision=precision,
                                  plan=plan, out=out)

            out.fill(cupy.nan)
            try:
                assert_close(run(a, b), expected, atol=atol, name=f"{m}x{n}x{k} {precision or 'fp32'} plan {plan}")
            except AssertionError as error:
                print(f"WRONG RESULT, candidate skipped: {error}", file=sys.stderr)
                continue
            timings[plan] = harness.time_gpu(run, [(a, b)], budget_ms=budget_ms).median_ms
        measured = {plan: ms for plan, ms in timings.items() if plan[0] >= 0}
        if not measured:
            continue
        best = min(measured, key=measured.get)
        key = _tuning.class_key(version_code, ops.MATMUL_PRECISIONS.index(precision or "fp32"), trans_a, trans_b,
                                m, n, k)
        entries[key] = {"plan": list(best), "ms": round(measured[best], 5),
                        "launcher_default_ms": round(timings.get(default, float("nan")), 5), "shape": [m, n, k]}
        print(f"{key:32s} best {best} {measured[best]:.4f} ms (launcher's own choice "
              f"{timings.get(default, float('nan')):.4f} ms)")
    return entries


def main(argv=None):
    args = harness.tuner_args(__doc__, _tuning.TABLE_PATH, 150.0, argv)

    info = harness.device_info()
    card = info["device"]
    print(f"# tuning matmul on {card} ({info['multiprocessors']} SMs)")
    entries = {}
    for shape in shapes(args.quick):
        entries.update(tune_shape(*shape, sms=info["multiprocessors"], budget_ms=args.budget_ms))
    harness.update_tuning_table(args.table, info, entries, "Measured matmul plans (pyfast/_tuning.py).", args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
