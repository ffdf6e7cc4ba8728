"""Offline conv2d tuner: on this GPU, time every candidate of every pass (versions gemm and
implicit, and each configuration of version tiled where it applies) on bench_conv's shapes,
and write the fastest per pass and shape class into the table version=None reads.

    python -m benchmarks.tune_conv [--quick] [--table PATH] [--dry-run]

The table (default pyfast/conv_tuning.json) keeps other cards' entries and this card's entries
for classes not measured now. Every candidate's result is checked against a float64
convolution (PyTorch's when it is importable, else pyfast.reference) first; a wrong candidate
is reported and never chosen. "direct" is the on-GPU oracle, never a candidate.
"""

import sys

import cupy

from benchmarks import bench_conv, harness
from pyfast import _checks, _tuning, ops, reference
from pyfast.testing import assert_close, reduction_atol

CANDIDATE_VERSIONS = ("gemm", "implicit", "tiled")


def candidates(g, pass_name):
    """(version, config) pairs that take geometry g; config None: the version's default."""
    for version in CANDIDATE_VERSIONS:
        if not _checks.conv2d_fits(g, ops.CONV2D_VERSIONS.index(version)):
            continue
        if version == "tiled":
            for config in range(_checks.CONV2D_TILED_CONFIGS[pass_name]):
                if _checks.conv2d_tiled_has_plan(g, pass_name, config):  # others cannot launch on this shape
                    yield version, config
        else:
            yield version, None


def expected_results(x, w, dy, pad):
    """The three passes in float64 (CuPy arrays)."""
    torch = harness.torch_or_none()
    if torch is not None:
        import torch.nn.functional as F

        x64, w64, dy64 = (torch.from_dlpack(a).double() for a in (x, w, dy))
        results = (F.conv2d(x64, w64, padding=pad), torch.nn.grad.conv2d_input(x.shape, w64, dy64, padding=pad),
                   torch.nn.grad.conv2d_weight(x64, w.shape, dy64, padding=pad))
        return [cupy.from_dlpack(t.contiguous()) for t in results]
    xh, wh, dyh = (a.get() for a in (x, w, dy))
    return [cupy.asarray(reference.conv2d(xh, wh, padding=pad)),
            cupy.asarray(reference.conv2d_backward_input(dyh, wh, x.shape, padding=pad)),
            cupy.asarray(reference.conv2d_backward_weight(dyh, xh, w.shape, padding=pad))]


def tune_shape(label, x_shape, w_shape, pad, budget_ms):
    """{class key: entry} for the three passes of one shape."""
    g = _checks.conv2d_dims(x_shape, w_shape, 1, pad, 1)
    rng = cupy.random.default_rng(sum(x_shape) * 31 + sum(w_shape))
    x = rng.standard_normal(x_shape, dtype=cupy.float32)
    w = rng.standard_normal(w_shape, dtype=cupy.float32)
    dy = rng.standard_normal(g["y_shape"], dtype=cupy.float32)
    expected = dict(zip(_checks.CONV2D_PASSES, expected_results(x, w, dy, pad)))
    outs = {"forward": cupy.empty(g["y_shape"], cupy.float32), "backward_input": cupy.empty(x_shape, cupy.float32),
            "backward_weight": cupy.empty(w_shape, cupy.float32)}
    reductions = {"forward": g["c"] * g["r"] * g["s"], "backward_input": g["k"] * g["r"] * g["s"],
                  "backward_weight": g["n"] * g["p"] * g["q"]}
    entries = {}
    for pass_code, pass_name in enumerate(_checks.CONV2D_PASSES):
        out = outs[pass_name]

        def run(version, config, pass_name=pass_name, out=out):
            kwargs = dict(padding=pad, version=version, config=config, out=out)
            if pass_name == "forward":
                return ops.conv2d(x, w, **kwargs)
            if pass_name == "backward_input":
                return ops.conv2d_backward_input(dy, w, x_shape, **kwargs)
            return ops.conv2d_backward_weight(dy, x, w_shape, **kwargs)

        timings = {}
        for version, config in candidates(g, pass_name):
            out.fill(cupy.nan)
            try:
                assert_close(run(version, config), expected[pass_name], atol=reduction_atol(reductions[pass_name]),
                             name=f"{label} {pass_name} {version} config {config}")
            except AssertionError as error:
                print(f"WRONG RESULT, candidate skipped: {error}", file=sys.stderr)
                continue
            timings[(version, config)] = harness.time_gpu(lambda: run(version, config), [()],
                                                          budget_ms=budget_ms).median_ms
        if not timings:
            continue
        (version, config) = best = min(timings, key=timings.get)
        key = _tuning.conv_class_key(pass_code, g)
        entries[key] = {"plan": [ops.CONV2D_VERSIONS.index(version), -1 if config is None else config],
                        "ms": round(timings[best], 5), "shape": [list(x_shape), list(w_shape), pad],
                        "candidates_ms": {f"{v}/{-1 if c is None else c}": round(ms, 5)
                                          for (v, c), ms in sorted(timings.items(), key=lambda item: item[1])}}
        print(f"{label:22s} {pass_name:16s} best {version}/{config} {timings[best]:.4f} ms   "
              + "  ".join(f"{v}/{c}:{ms:.4f}" for (v, c), ms in sorted(timings.items(), key=lambda item: item[1])))
    return entries


def main(argv=None):
    args = harness.tuner_args(__doc__, _tuning.CONV_TABLE_PATH, 100.0, argv)

    info = harness.device_info()
    card = info["device"]
    print(f"# tuning conv2d on {card} ({info['multiprocessors']} SMs)")
    entries = {}
    for label, x_shape, w_shape, pad in bench_conv.cases(args.quick):
        entries.update(tune_shape(label, x_shape, w_shape, pad, args.budget_ms))
    harness.update_tuning_table(args.table, info, entries, "Measured conv2d plans (pyfast/_tuning.py).", args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
