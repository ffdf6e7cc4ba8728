"""relu, relu_backward, add_bias and bias_grad against CuPy's element-wise kernels and
reductions, in GB/s (bytes each op must move at least: inputs read once, output written once).

    python -m benchmarks.bench_elementwise [--quick] [--out DIR]
"""

import sys

import cupy

from benchmarks import harness
from pyfast import ops
from pyfast.testing import assert_close, reduction_atol


def cases(quick):
    batches = [64, 1024] if quick else [64, 256, 1024]
    for batch in batches:
        yield f"conv1 act b{batch}", (batch, 32, 28, 28)
        yield f"fc1 act b{batch}", (batch, 128)
    yield "flat 2^26", (1 << 26,)


def main(argv=None):
    args = harness.parse_args(__doc__, argv)
    info = harness.device_info()
    print(f"# element-wise ops on {info['device']}")
    rows, failures = [], 0
    for index, (label, shape) in enumerate(cases(args.quick)):
        rng = cupy.random.default_rng(index)
        sets = [rng.standard_normal(shape, dtype=cupy.float32) for _ in range(3)]
        pairs = [(x, rng.standard_normal(shape, dtype=cupy.float32)) for x in sets]
        nbytes = sets[0].nbytes
        out = cupy.empty(shape, cupy.float32)
        benches = [
            ("relu", [(x,) for x in sets], lambda x: ops.relu(x, out=out), lambda x: cupy.maximum(x, 0, out=out),
             2 * nbytes, lambda x: cupy.maximum(x, 0), 0.0),
            ("relu_backward", pairs, lambda dy, y: ops.relu_backward(dy, y, out=out),
             lambda dy, y: cupy.multiply(dy, y > 0, out=out), 3 * nbytes, lambda dy, y: cupy.where(y <= 0, 0, dy), 0.0),
        ]
        if len(shape) > 1:
            channels = shape[1]
            bias = rng.standard_normal(channels, dtype=cupy.float32)
            view = (1, channels) + (1,) * (len(shape) - 2)
            axes = (0,) + tuple(range(2, len(shape)))
            db = cupy.empty(channels, cupy.float32)
            count = sets[0].size // channels
            benches += [
                ("add_bias", [(x,) for x in sets], lambda x: ops.add_bias(x, bias, out=out),
                 lambda x: cupy.add(x, bias.reshape(view), out=out), 2 * nbytes,
                 lambda x: x.astype(cupy.float64) + bias.reshape(view), 1e-6),
                ("bias_grad", [(x,) for x in sets], lambda x: ops.bias_grad(x, out=db),
                 lambda x: cupy.sum(x, axis=axes, out=db), nbytes,
                 lambda x: x.astype(cupy.float64).sum(axis=axes), reduction_atol(count, factor=1.0)),
            ]
        for name, inputs, ours, baseline, moved, reference, atol in benches:
            row = dict(case=label, op=name, shape=list(shape), bytes=moved)
            def check():
                assert_close(ours(*inputs[0]), reference(*inputs[0]), atol=atol, rtol=1e-6, name=f"{label} {name}")

            if not harness.check_first(rows, row, check):
                failures += 1
                continue
            base = harness.time_gpu(baseline, inputs)
            t = harness.time_gpu(ours, inputs)
            rows.append(dict(row, correct=True, ms=t.median_ms, p10_ms=t.p10_ms, p90_ms=t.p90_ms,
                             gbps=harness.gbps(moved, t.median_ms), cupy_ms=base.median_ms,
                             cupy_gbps=harness.gbps(moved, base.median_ms), ratio=base.median_ms / t.median_ms))
    columns = [("case", "case", "{}"), ("op", "op", "{}"), ("ms", "ms", "{:.4f}"), ("GB/s", "gbps", "{:.0f}"),
               ("CuPy ms", "cupy_ms", "{:.4f}"), ("CuPy GB/s", "cupy_gbps", "{:.0f}"),
               ("vs CuPy", "ratio", "{:.2f}")]
    return harness.finish("elementwise", info, rows, columns, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
