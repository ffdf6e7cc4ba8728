"""pyfast.ops.matmul, every version and precision, against cuBLAS in the same precision.

    python -m benchmarks.bench_matmul [--quick] [--out DIR] [--no-tensor-cores]

Baselines: cuBLAS FP32 (cupy.matmul with CUPY_TF32=0) for the FP32 versions; cuBLAS TF32 and
BF16 through PyTorch (allow_tf32 set explicitly; bfloat16 tensors) for the tensor-core path.
Shapes: squares 256..8192 and the CNN's fully connected layers (batch x 3136 -> 128 and
128 -> 10, forward and both gradients). Rows: simple and tiled (the launcher's plan: the
tuning table's, else by shape), "tiled splitk" (where the library's split-K rule splits, that
rule's plan given explicitly: beside "tiled" it shows what a measured plan gains over the
rule), and "tensor_core tf32 / bf16" (bf16 with bfloat16 operands when ml_dtypes is there).
Each result is checked against a float64 product (of the rounded operands for the
reduced precisions) before it is timed. Prints a table (ratio = baseline time / pyfast time,
above 1 is faster) and writes JSON under benchmarks/results/.
"""

import os
import sys

os.environ.setdefault("CUPY_TF32", "0")  # cuBLAS baseline in true FP32 (read at CuPy import)

import cupy  # noqa: E402

from benchmarks import harness  # noqa: E402
from pyfast import _C, ops, reference  # noqa: E402
from pyfast.testing import assert_close, reduction_atol  # noqa: E402


def splitk_plan(m, n, k, sms):
    """The K split the library's rule gives this shape on `sms` SMs (kernels/common/tiled_gemm.cuh's
    rule_splits, asked through the binding) as a plan, or None where the rule does not split."""
    splits = _C.matmul_rule_splits(ops.MATMUL_VERSIONS.index("tiled"), m, n, k, sms)
    return (-1, splits) if splits > 1 else None


def cases(quick):
    squares = [256, 1024, 4096] if quick else [256, 512, 1024, 2048, 4096, 8192]
    for size in squares:
        yield f"square {size}", size, size, size, False, False
    for batch in ([64, 1024] if quick else [64, 256, 1024]):
        # nn.Linear's three products with its (out, in) weight, as the trainer calls them
        yield f"fc1 fwd b{batch}", batch, 128, 3136, False, True       # y = x @ W^T
        yield f"fc1 dx b{batch}", batch, 3136, 128, False, False       # dx = dy @ W
        yield f"fc1 dw b{batch}", 128, 3136, batch, True, False        # dW = dy^T @ x
        yield f"fc2 fwd b{batch}", batch, 10, 128, False, True


def make_inputs(m, n, k, trans_a, trans_b, sets, seed):
    rng = cupy.random.default_rng(seed)
    shape_a = (k, m) if trans_a else (m, k)
    shape_b = (n, k) if trans_b else (k, n)
    return [(rng.standard_normal(shape_a, dtype=cupy.float32), rng.standard_normal(shape_b, dtype=cupy.float32))
            for _ in range(sets)]


def _time_row(rows, row, fn, inputs, check, flop, base_ms):
    """Checks fn's result first, then times it; returns False for a wrong result."""
    if not harness.check_first(rows, row, check):
        return False
    t = harness.time_gpu(fn, inputs)
    rows.append(dict(row, ms=t.median_ms, p10_ms=t.p10_ms, p90_ms=t.p90_ms, repeats=t.repeats,
                     tflops=harness.tflops(flop, t.median_ms), ratio=base_ms / t.median_ms if base_ms else None,
                     correct=True))
    return True


def main(argv=None):
    parser = harness.argument_parser(__doc__)
    parser.add_argument("--no-tensor-cores", action="store_true", help="FP32 rows only")
    args = parser.parse_args(argv)

    info = harness.device_info()
    print(f"# matmul on {info['device']} (driver CUDA {info['driver_cuda_version']}, CuPy {info['cupy']}, "
          f"CUPY_TF32={info['cupy_tf32']})")
    torch = None if args.no_tensor_cores else harness.torch_or_none()
    try:
        import ml_dtypes
    except ImportError:
        ml_dtypes = None
    rows, failures = [], 0
    for index, (label, m, n, k, trans_a, trans_b) in enumerate(cases(args.quick)):
        flop = 2.0 * m * n * k
        # Enough input sets that together they outsize the L2 even without the flush.
        sets = 1 if 4 * (m * k + k * n) > 64 << 20 else 3
        inputs = make_inputs(m, n, k, trans_a, trans_b, sets, seed=index)
        shape = dict(case=label, m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b)

        def op_a(a):
            return a.T if trans_a else a

        def op_b(b):
            return b.T if trans_b else b

        def cublas(a, b):
            return cupy.matmul(op_a(a), op_b(b))

        a0, b0 = inputs[0]
        expected = cupy.matmul(op_a(a0).astype(cupy.float64), op_b(b0).astype(cupy.float64))
        base = harness.time_gpu(cublas, inputs)
        rows.append(dict(shape, version="cublas", ms=base.median_ms, p10_ms=base.p10_ms, p90_ms=base.p90_ms,
                         repeats=base.repeats, tflops=harness.tflops(flop, base.median_ms), ratio=1.0, correct=True))
        out = cupy.full((m, n), cupy.nan, dtype=cupy.float32)

        # FP32 on the CUDA cores: every version with the launcher's plan, then tiled split K.
        fp32 = [(version, version, None) for version in ops.MATMUL_VERSIONS]
        split = splitk_plan(m, n, k, info["multiprocessors"])
        if split is not None:
            fp32.append(("tiled splitk", "tiled", split))
        for name, version, plan in fp32:
            def ours(a, b, version=version, plan=plan):
                return ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, out=out, version=version, plan=plan)

            def check(ours=ours, name=name):
                out.fill(cupy.nan)
                assert_close(ours(a0, b0), expected, atol=reduction_atol(k), name=f"{label} {name}")

            row = dict(shape, version=name, baseline="cublas", plan=plan)
            failures += not _time_row(rows, row, ours, inputs, check, flop, base.median_ms)

        # Tensor cores: ours against cuBLAS in the same precision (through PyTorch).
        if not args.no_tensor_cores:
            failures += _tensor_core_rows(rows, shape, inputs, out, flop, torch, ml_dtypes)
        inputs = expected = out = None  # free their GPU memory now
        cupy.get_default_memory_pool().free_all_blocks()

    # Progress against the on-GPU oracle: speed-up over simple per case.
    simple = {r["case"]: r["ms"] for r in rows if r["version"] == "simple" and r.get("ms")}
    for r in rows:
        if r["version"] != "simple" and not r["version"].startswith("cublas") and r.get("ms") and r["case"] in simple:
            r["vs_simple"] = simple[r["case"]] / r["ms"]
    columns = [("case", "case", "{}"), ("M", "m", "{}"), ("N", "n", "{}"), ("K", "k", "{}"),
               ("version", "version", "{}"), ("ms", "ms", "{:.4f}"), ("p10 ms", "p10_ms", "{:.4f}"),
               ("p90 ms", "p90_ms", "{:.4f}"), ("TFLOP/s", "tflops", "{:.2f}"), ("vs baseline", "ratio", "{:.3f}"),
               ("baseline", "baseline", "{}"), ("vs simple", "vs_simple", "{:.1f}x")]
    return harness.finish("matmul", info, rows, columns, args.out, failures)


def _tensor_core_rows(rows, shape, inputs, out, flop, torch, ml_dtypes):
    """TF32 and BF16 rows for one shape; returns the number of wrong results."""
    m, n, k, trans_a, trans_b, label = (shape[key] for key in ("m", "n", "k", "trans_a", "trans_b", "case"))
    failures = 0
    a0, b0 = inputs[0]
    rounding = {"tf32": reference.round_tf32, "bf16": reference.round_bf16}
    for precision in ("tf32", "bf16"):
        # bf16 runs on bfloat16 operands (half the bytes, what cuBLAS BF16 reads) when it can.
        ours_inputs = inputs
        if precision == "bf16" and ml_dtypes is not None:
            try:
                ours_inputs = [(a.astype(ml_dtypes.bfloat16), b.astype(ml_dtypes.bfloat16)) for a, b in inputs]
            except Exception as error:  # a CuPy without bfloat16 support
                print(f"# bf16 on float32 operands: CuPy cannot make bfloat16 arrays ({error})")
        # The float64 product of exactly the values the tensor cores multiply, on the GPU.
        ea, eb = ((x.astype(cupy.float64) for x in ours_inputs[0]) if ours_inputs is not inputs
                  else (rounding[precision](x).astype(cupy.float64) for x in (a0, b0)))
        expected = cupy.matmul(ea.T if trans_a else ea, eb.T if trans_b else eb)
        base_name = f"cublas {precision}"
        base_ms = None
        if torch is not None:
            t_inputs = [_torch_operands(torch, a, b, trans_a, trans_b, precision) for a, b in inputs]
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            try:
                base = harness.time_gpu(lambda a, b: torch.matmul(a, b), t_inputs)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = False
            base_ms = base.median_ms
            rows.append(dict(shape, version=base_name, ms=base_ms, p10_ms=base.p10_ms, p90_ms=base.p90_ms,
                             repeats=base.repeats, tflops=harness.tflops(flop, base_ms), ratio=1.0, correct=True))

        def ours(a, b, precision=precision):
            return ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, out=out, precision=precision)

        def check(ours=ours, precision=precision, expected=expected):
            out.fill(cupy.nan)
            a, b = ours_inputs[0]
            assert_close(ours(a, b), expected, atol=reduction_atol(k, factor=8.0), name=f"{label} {precision}")

        row = dict(shape, version=f"tensor_core {precision}", baseline=base_name,
                   storage="bfloat16" if ours_inputs is not inputs else "float32")
        failures += not _time_row(rows, row, ours, ours_inputs, check, flop, base_ms)
    return failures


def _torch_operands(torch, a, b, trans_a, trans_b, precision):
    """op(a), op(b) as PyTorch views of the same layouts (bfloat16 copies for bf16)."""
    ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
    if precision == "bf16":
        ta, tb = ta.bfloat16(), tb.bfloat16()
    return (ta.T if trans_a else ta), (tb.T if trans_b else tb)


if __name__ == "__main__":
    sys.exit(main())
