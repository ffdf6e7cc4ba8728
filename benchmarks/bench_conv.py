"""conv2d forward and both gradients, every version and the per-pass choice (version=None),
against cuDNN through PyTorch (cudnn.benchmark on, TF32 off: true FP32), on the CNN's layers
(batch 64, 128, 256, 1024), the 5x5 1->20 layer and ResNet-style 3x3 layers.

    python -m benchmarks.bench_conv [--quick] [--out DIR]

Each result is checked against PyTorch's float64 convolution before it is timed. The ratio
is cuDNN time / pyfast time (above 1: faster than cuDNN). "auto" is version=None (the
measured table in pyfast/conv_tuning.json, else the rule in pyfast.ops); "direct" is left out
above batch 128 (seconds per call: it is the oracle, not a candidate). "forward+relu+pool" is the
CNN's layer pair, conv2d_max_pool2d, against cuDNN's conv + ReLU + max_pool2d (the TFLOP/s count
the convolution only).
"""

import sys

import cupy

from benchmarks import harness
from pyfast import _checks, ops
from pyfast.testing import assert_close, reduction_atol

VERSIONS = (*ops.CONV2D_VERSIONS, None)


def cases(quick):
    """(label, x shape, w shape, padding)."""
    for batch in ([128, 1024] if quick else [64, 128, 256, 1024]):
        yield f"cnn1 b{batch}", (batch, 1, 28, 28), (32, 1, 3, 3), 1
        yield f"cnn2 b{batch}", (batch, 32, 14, 14), (64, 32, 3, 3), 1
    yield "5x5 1->20 b256", (256, 1, 28, 28), (20, 1, 5, 5), 0
    yield "resnet128 28x28 b128", (128, 128, 28, 28), (128, 128, 3, 3), 1
    if not quick:
        yield "resnet64 32x32 b32", (32, 64, 32, 32), (64, 64, 3, 3), 1


def versions_for(x_shape, w_shape, padding):
    g = _checks.conv2d_dims(x_shape, w_shape, 1, padding, 1)
    for version in VERSIONS:
        if version == "direct" and x_shape[0] > 128:
            continue
        # Every pass is timed: a version must launch all three on this shape.
        if version is None or all(_checks.conv2d_fits(g, ops.CONV2D_VERSIONS.index(version), pass_name)
                                  for pass_name in _checks.CONV2D_PASSES):
            yield version


def main(argv=None):
    args = harness.parse_args(__doc__, argv)
    info = harness.device_info()
    torch = harness.torch_or_none()
    if torch is None:
        print("# cuDNN baseline unavailable: PyTorch with CUDA is not importable", file=sys.stderr)
    print(f"# conv2d on {info['device']} (stride 1)")
    rows, failures = [], 0
    for index, (label, x_shape, w_shape, pad) in enumerate(cases(args.quick)):
        rng = cupy.random.default_rng(index)
        x = rng.standard_normal(x_shape, dtype=cupy.float32)
        w = rng.standard_normal(w_shape, dtype=cupy.float32)
        n, c, h, wd = x_shape
        k, _, r, s = w_shape
        y_shape = (n, k, h + 2 * pad - r + 1, wd + 2 * pad - s + 1)
        dy = rng.standard_normal(y_shape, dtype=cupy.float32)
        flop = 2.0 * n * k * y_shape[2] * y_shape[3] * c * r * s
        passes = {
            "forward": (lambda v: ops.conv2d(x, w, padding=pad, version=v, out=y_buf), c * r * s),
            "backward_input": (lambda v: ops.conv2d_backward_input(dy, w, x_shape, padding=pad, version=v, out=dx_buf),
                               k * r * s),
            "backward_weight": (lambda v: ops.conv2d_backward_weight(dy, x, w_shape, padding=pad, version=v,
                                                                     out=dw_buf), n * y_shape[2] * y_shape[3]),
            # The CNN's layer pair: conv, ReLU and the 2x2 max-pool (conv2d_max_pool2d).
            "forward+relu+pool": (lambda v: ops.conv2d_max_pool2d(x, w, padding=pad, activation="relu", version=v,
                                                                  out=pool_buf, out_indices=index_buf)[0], c * r * s),
        }
        pool_shape = (n, k, y_shape[2] // 2, y_shape[3] // 2)
        pool_buf, index_buf = cupy.empty(pool_shape, cupy.float32), cupy.empty(pool_shape, cupy.int64)
        y_buf, dx_buf = cupy.empty(y_shape, cupy.float32), cupy.empty(x_shape, cupy.float32)
        dw_buf = cupy.empty(w_shape, cupy.float32)
        expected, baselines = {}, {}
        if torch is not None:
            import torch.nn.functional as F

            xt, wt, dyt = (torch.from_dlpack(a) for a in (x, w, dy))
            x64, w64, dy64 = (t.double() for t in (xt, wt, dyt))
            expected = {"forward": F.conv2d(x64, w64, padding=pad),
                        "backward_input": torch.nn.grad.conv2d_input(x_shape, w64, dy64, padding=pad),
                        "backward_weight": torch.nn.grad.conv2d_weight(x64, w_shape, dy64, padding=pad),
                        "forward+relu+pool": F.max_pool2d(F.relu(F.conv2d(x64, w64, padding=pad)), 2)}
            baselines = {"forward": lambda: F.conv2d(xt, wt, padding=pad),
                         "backward_input": lambda: torch.nn.grad.conv2d_input(x_shape, wt, dyt, padding=pad),
                         "backward_weight": lambda: torch.nn.grad.conv2d_weight(xt, w_shape, dyt, padding=pad),
                         "forward+relu+pool": lambda: F.max_pool2d(F.relu(F.conv2d(xt, wt, padding=pad)), 2,
                                                                   return_indices=True)}
        for pass_name, (run, reduction) in passes.items():
            base_ms = harness.time_gpu(baselines[pass_name], [()]).median_ms if baselines else None
            for version in versions_for(x_shape, w_shape, pad):
                chosen = ops.conv2d_plan(pass_name.split("+")[0], x_shape, w_shape, padding=pad, version=version)
                row = dict(case=label, x=list(x_shape), w=list(w_shape), op=pass_name, version=version or "auto",
                           ran="{}/{}".format(*chosen))
                if expected:
                    def check():
                        assert_close(run(version), cupy.from_dlpack(expected[pass_name].contiguous()),
                                     atol=reduction_atol(reduction), name=f"{label} {pass_name} {version}")

                    if not harness.check_first(rows, row, check):
                        failures += 1
                        continue
                t = harness.time_gpu(lambda: run(version), [()])
                rows.append(dict(row, correct=bool(expected), ms=t.median_ms, p10_ms=t.p10_ms, p90_ms=t.p90_ms,
                                 tflops=harness.tflops(flop, t.median_ms), cudnn_ms=base_ms,
                                 cudnn_tflops=harness.tflops(flop, base_ms) if base_ms else None,
                                 ratio=base_ms / t.median_ms if base_ms else None))
    columns = [("case", "case", "{}"), ("pass", "op", "{}"), ("version", "version", "{}"), ("ran", "ran", "{}"),
               ("ms", "ms", "{:.4f}"),
               ("TFLOP/s", "tflops", "{:.2f}"), ("cuDNN ms", "cudnn_ms", "{:.4f}"),
               ("cuDNN TFLOP/s", "cudnn_tflops", "{:.2f}"), ("vs cuDNN", "ratio", "{:.3f}")]
    return harness.finish("conv", info, rows, columns, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
