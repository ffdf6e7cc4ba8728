"""Fused optimizer steps against torch.optim (fused=True and foreach=True) on the same card.

    python -m benchmarks.bench_optim [--quick] [--out DIR]

Adam moves 28 bytes per parameter (parameter, gradient and both moments read; parameter and
moments written); SGD with momentum 20. Times are per step with steps issued back to back
(harness.time_back_to_back), as in a training loop: for the small CNN both sides are bound by
their Python overhead, which is then what is compared; for 10^8 parameters, by memory.
"""

import sys

import numpy as np

import cupy

from benchmarks import harness
from pyfast import ops, reference
from pyfast.testing import assert_close

CNN_SHAPES = [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,), (3136, 128), (128,), (128, 10), (10,)]  # 421,642
LARGE_SHAPES = [(25_000_000,)] * 4  # 10^8 parameters


def make_state(shapes, seed):
    rng = cupy.random.default_rng(seed)
    params = [rng.standard_normal(s, dtype=cupy.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=cupy.float32) * 0.1 for s in shapes]
    exp_avg = [cupy.zeros(s, cupy.float32) for s in shapes]
    exp_avg_sq = [cupy.zeros(s, cupy.float32) for s in shapes]
    return params, grads, exp_avg, exp_avg_sq


def check_adam(shapes):
    """One step against the NumPy reference before anything is timed."""
    params, grads, m, v = make_state(shapes, seed=99)
    host = [[x.get() for x in xs] for xs in (params, grads, m, v)]
    ops.adam_step(params, grads, m, v, step=1, lr=1e-3, weight_decay=1e-2)
    reference.adam_step(*host, step=1, lr=1e-3, weight_decay=1e-2)
    for got, expected in zip(params + m + v, host[0] + host[2] + host[3]):
        assert_close(got, expected, atol=1e-6, rtol=1e-5, name="adam step")


def main(argv=None):
    args = harness.parse_args(__doc__, argv)
    info = harness.device_info()
    torch = harness.torch_or_none()
    copy = harness.record_copy_ceiling(info, "optimizers")
    rows = []
    failures = 0 if harness.check_first(rows, dict(case="adam step vs reference", op="adamw"),
                                        lambda: check_adam(CNN_SHAPES)) else 1
    for label, shapes in (("cnn 422k x 8", CNN_SHAPES), ("1e8 x 4", LARGE_SHAPES)):
        count = int(sum(np.prod(s) for s in shapes))
        params, grads, m, v = make_state(shapes, seed=1)
        step = [0]

        def adam():
            step[0] += 1
            ops.adam_step(params, grads, m, v, step=step[0], lr=1e-3, weight_decay=1e-2)

        velocity = [cupy.zeros_like(p) for p in params]

        def sgd():
            ops.sgd_step(params, grads, lr=1e-3, momentum=0.9, velocity=velocity)

        for name, fn, nbytes in (("adamw", adam, 28 * count), ("sgd momentum", sgd, 20 * count)):
            t = harness.time_back_to_back(fn, [()])
            row = dict(case=label, op=name, params=count, bytes=nbytes, ms=t.median_ms, p10_ms=t.p10_ms,
                       p90_ms=t.p90_ms, gbps=harness.gbps(nbytes, t.median_ms),
                       of_copy=harness.gbps(nbytes, t.median_ms) / copy)
            if torch is not None:
                tensors = [torch.from_dlpack(p).clone().requires_grad_() for p in params]
                for tensor, g in zip(tensors, grads):
                    tensor.grad = torch.from_dlpack(g)
                for variant in ("fused", "foreach"):
                    if name == "adamw":
                        opt = torch.optim.AdamW(tensors, lr=1e-3, weight_decay=1e-2, **{variant: True})
                    else:
                        opt = torch.optim.SGD(tensors, lr=1e-3, momentum=0.9, **{variant: True})
                    base = harness.time_back_to_back(opt.step, [()])
                    row[f"torch_{variant}_ms"] = base.median_ms
                    row[f"vs_{variant}"] = base.median_ms / t.median_ms
                tensors = opt = None  # free their GPU memory now
            rows.append(row)
        params = grads = m = v = velocity = None  # free their GPU memory now
        cupy.get_default_memory_pool().free_all_blocks()
    columns = [("case", "case", "{}"), ("op", "op", "{}"), ("ms", "ms", "{:.4f}"), ("GB/s", "gbps", "{:.0f}"),
               ("of copy", "of_copy", "{:.0%}"), ("torch fused ms", "torch_fused_ms", "{:.4f}"),
               ("vs fused", "vs_fused", "{:.2f}"), ("torch foreach ms", "torch_foreach_ms", "{:.4f}"),
               ("vs foreach", "vs_foreach", "{:.2f}")]
    return harness.finish("optim", info, rows, columns, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
