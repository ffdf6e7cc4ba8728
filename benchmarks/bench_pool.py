"""max / avg pooling forward and backward against PyTorch (cuDNN / ATen kernels), in GB/s.

    python -m benchmarks.bench_pool [--quick] [--out DIR]

Bytes: input read once, output (and max-pool indices, 8 bytes each) written once; backward:
dy (and indices) read, dx written. Each result is checked against PyTorch before timing.
"max backward" is the older call form (indices only: a memset and a serial walk per plane);
"max backward (window)" passes the window (each dx element gathered and written once), and
"max backward + relu" also folds in the ReLU's backward (relu_output=y) against PyTorch's
pool backward followed by threshold_backward. "of copy" is the fraction of the card's
device-to-device copy rate measured in the same run.
"""

import sys

import cupy

from benchmarks import harness
from pyfast import ops
from pyfast.testing import assert_close


def cases(quick):
    for batch in ([64, 1024] if quick else [1, 64, 128, 1024]):
        yield f"pool1 b{batch}", (batch, 32, 28, 28), 2, None, 0
        yield f"pool2 b{batch}", (batch, 64, 14, 14), 2, None, 0
    yield "overlap 3x3 s2 p1 b64", (64, 64, 32, 32), 3, 2, 1
    yield "large 2x2 256x64x112x112", (256, 64, 112, 112), 2, None, 0


def main(argv=None):
    args = harness.parse_args(__doc__, argv)
    info = harness.device_info()
    torch = harness.torch_or_none()
    copy_gbps = harness.record_copy_ceiling(info, "pooling")
    rows, failures = [], 0
    for index, (label, shape, kernel, stride, padding) in enumerate(cases(args.quick)):
        rng = cupy.random.default_rng(index)
        x = rng.standard_normal(shape, dtype=cupy.float32)
        y, indices = ops.max_pool2d(x, kernel, stride, padding, return_indices=True)
        dy = rng.standard_normal(y.shape, dtype=cupy.float32)
        relu_x = cupy.maximum(x, 0)  # a ReLU's output, pooled: what the fold's relu_output describes
        relu_y, relu_indices = ops.max_pool2d(relu_x, kernel, stride, padding, return_indices=True)
        n_in, n_out = x.size, y.size
        benches = {
            "max forward": (lambda: ops.max_pool2d(x, kernel, stride, padding, return_indices=True),
                            4 * n_in + 12 * n_out),
            "max backward": (lambda: ops.max_pool2d_backward(dy, indices, shape), 12 * n_out + 4 * n_in),
            "max backward (window)": (lambda: ops.max_pool2d_backward(dy, indices, shape, kernel, stride, padding),
                                      12 * n_out + 4 * n_in),
            "max backward + relu": (lambda: ops.max_pool2d_backward(dy, relu_indices, shape, kernel, stride, padding,
                                                                    relu_output=relu_y), 16 * n_out + 4 * n_in),
            "avg forward": (lambda: ops.avg_pool2d(x, kernel, stride, padding), 4 * n_in + 4 * n_out),
            "avg backward": (lambda: ops.avg_pool2d_backward(dy, shape, kernel, stride, padding), 4 * n_out + 4 * n_in),
        }
        baselines, expected = {}, {}
        if torch is not None:
            import torch.nn.functional as F

            xt, dyt = torch.from_dlpack(x), torch.from_dlpack(dy)
            yt, it = F.max_pool2d(xt, kernel, stride, padding, return_indices=True)
            aten = torch.ops.aten
            baselines = {
                "max forward": lambda: F.max_pool2d(xt, kernel, stride, padding, return_indices=True),
                "max backward": lambda: aten.max_pool2d_with_indices_backward(
                    dyt, xt, [kernel] * 2 if isinstance(kernel, int) else kernel,
                    [stride or kernel] * 2, [padding] * 2, [1, 1], False, it),
                "avg forward": lambda: F.avg_pool2d(xt, kernel, stride, padding),
                "avg backward": lambda: aten.avg_pool2d_backward(
                    dyt, xt, [kernel] * 2, [stride or kernel] * 2, [padding] * 2, False, True, None),
            }
            baselines["max backward (window)"] = baselines["max backward"]
            relu_xt = torch.from_dlpack(relu_x)
            _, relu_it = F.max_pool2d(relu_xt, kernel, stride, padding, return_indices=True)
            window = ([kernel] * 2 if isinstance(kernel, int) else kernel, [stride or kernel] * 2, [padding] * 2)
            baselines["max backward + relu"] = lambda: aten.threshold_backward(
                aten.max_pool2d_with_indices_backward(dyt, relu_xt, *window, [1, 1], False, relu_it), relu_xt, 0)
            expected = {name: fn() for name, fn in baselines.items()}
            expected["max forward"] = expected["max forward"][0]
        for name, (run, nbytes) in benches.items():
            row = dict(case=label, shape=list(shape), op=name, bytes=nbytes)
            if expected:
                result = run()
                result = result[0] if isinstance(result, tuple) else result
                def check():
                    assert_close(result, cupy.from_dlpack(expected[name].contiguous()), atol=1e-5,
                                 name=f"{label} {name}")

                if not harness.check_first(rows, row, check):
                    failures += 1
                    continue
            t = harness.time_gpu(run, [()])
            base_ms = harness.time_gpu(baselines[name], [()]).median_ms if baselines else None
            rows.append(dict(row, correct=bool(expected), ms=t.median_ms, gbps=harness.gbps(nbytes, t.median_ms),
                             of_copy=harness.gbps(nbytes, t.median_ms) / copy_gbps,
                             torch_ms=base_ms, torch_gbps=harness.gbps(nbytes, base_ms) if base_ms else None,
                             ratio=base_ms / t.median_ms if base_ms else None))
    columns = [("case", "case", "{}"), ("op", "op", "{}"), ("ms", "ms", "{:.4f}"), ("GB/s", "gbps", "{:.0f}"),
               ("of copy", "of_copy", "{:.2f}"),
               ("torch ms", "torch_ms", "{:.4f}"), ("torch GB/s", "torch_gbps", "{:.0f}"),
               ("vs torch", "ratio", "{:.2f}")]
    return harness.finish("pool", info, rows, columns, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
