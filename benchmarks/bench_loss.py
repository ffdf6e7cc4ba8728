"""Fused losses (value + gradient) against PyTorch's forward + backward, in GB/s and as a
fraction of the card's device-to-device copy bandwidth measured in the same run.

    python -m benchmarks.bench_loss [--quick] [--out DIR]

Bytes counted are the minimum: inputs read once, the gradient written once.
"""

import sys

import cupy

from benchmarks import harness
from pyfast import ops, reference
from pyfast.testing import assert_close


def cases(quick):
    """The issue's grid: classes 10, 100, 1000, 32768 over rows 64 .. 2^20 (a row count per
    class that keeps the logits within 256 MB), the quick run its corners."""
    if quick:
        for shape in ((65536, 1000), (1 << 20, 10), (1024, 10)):
            yield "cross_entropy", shape
    else:
        for classes in (10, 100, 1000, 32768):
            for rows in (64, 1024, 65536, 1 << 20):
                if rows * classes <= 1 << 26:
                    yield "cross_entropy", (rows, classes)
    yield "mse", (1 << 26,)
    yield "mse", (1 << 20,)
    if not quick:
        yield "mse", (100,)


def main(argv=None):
    args = harness.parse_args(__doc__, argv)
    info = harness.device_info()
    torch = harness.torch_or_none()
    copy = harness.record_copy_ceiling(info, "losses")
    rows, failures = [], 0
    for index, (name, shape) in enumerate(cases(args.quick)):
        rng = cupy.random.default_rng(index)
        if name == "cross_entropy":
            n, c = shape
            inputs = [(rng.standard_normal(shape, dtype=cupy.float32) * 3, rng.integers(0, c, n, dtype=cupy.int64))
                      for _ in range(2)]
            grad = cupy.empty(shape, cupy.float32)
            nbytes = 2 * n * c * 4 + n * 8

            def ours(x, y, grad=grad):
                return ops.softmax_cross_entropy(x, y, out_grad=grad, validate=False)

            x0, y0 = inputs[0]
            small = n * c <= 1 << 22  # the float64 NumPy reference on the host for small cases
            if small:
                expected = reference.softmax_cross_entropy(x0.get(), y0.get())
            else:  # same math on the GPU in float64 for the big ones
                x64 = x0.astype(cupy.float64)
                log_p = x64 - x64.max(axis=1, keepdims=True)
                log_p -= cupy.log(cupy.exp(log_p).sum(axis=1, keepdims=True))
                g = cupy.exp(log_p)
                g[cupy.arange(n), y0] -= 1
                expected = (-log_p[cupy.arange(n), y0].mean(), g / n)
                x64 = log_p = None  # free their GPU memory now
            grad_atol, loss_atol = 1e-6 / n, 1e-4
        else:
            (n,) = shape
            inputs = [(rng.standard_normal(shape, dtype=cupy.float32), rng.standard_normal(shape, dtype=cupy.float32))
                      for _ in range(2)]
            grad = cupy.empty(shape, cupy.float32)
            nbytes = 3 * n * 4

            def ours(p, t, grad=grad):
                return ops.mse_loss(p, t, out_grad=grad)

            p0, t0 = inputs[0]
            d = p0.astype(cupy.float64) - t0
            expected = ((d * d).mean(), 2 * d / n)
            d = None  # free their GPU memory now
            grad_atol, loss_atol = 0.0, 1e-5
        row = dict(op=name, shape=list(shape), bytes=nbytes)
        def check():
            loss, g = ours(*inputs[0])
            assert_close(g, expected[1], atol=grad_atol, rtol=1e-5, name=f"{name} {shape} grad")
            assert_close(loss, expected[0], atol=loss_atol, rtol=1e-5, name=f"{name} {shape} loss")

        if not harness.check_first(rows, row, check):
            failures += 1
            continue
        expected = None  # free their GPU memory now
        t = harness.time_gpu(ours, inputs)
        row.update(correct=True, ms=t.median_ms, p10_ms=t.p10_ms, p90_ms=t.p90_ms,
                   gbps=harness.gbps(nbytes, t.median_ms), of_copy=harness.gbps(nbytes, t.median_ms) / copy)
        if torch is not None:
            import torch.nn.functional as F

            torch_inputs = [tuple(torch.from_dlpack(a) for a in pair) for pair in inputs]
            for x, _ in torch_inputs:
                x.requires_grad_()
            loss_fn = F.cross_entropy if name == "cross_entropy" else F.mse_loss

            def theirs(x, y):
                x.grad = None
                loss_fn(x, y).backward()

            base = harness.time_gpu(theirs, torch_inputs)
            row.update(torch_ms=base.median_ms, torch_gbps=harness.gbps(nbytes, base.median_ms),
                       ratio=base.median_ms / t.median_ms)
        rows.append(row)
        inputs = None  # free their GPU memory now
        cupy.get_default_memory_pool().free_all_blocks()
    for r in rows:
        r["case"] = f"{r['op']} {'x'.join(map(str, r['shape']))}"
    columns = [("case", "case", "{}"), ("ms", "ms", "{:.4f}"), ("GB/s", "gbps", "{:.0f}"),
               ("of copy", "of_copy", "{:.0%}"), ("torch ms", "torch_ms", "{:.4f}"),
               ("torch GB/s", "torch_gbps", "{:.0f}"), ("vs torch", "ratio", "{:.2f}")]
    return harness.finish("loss", info, rows, columns, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
