"""pyfast.ops.matmul, every version, against cuBLAS FP32 (cupy.matmul, TF32 off).

    python -m benchmarks.bench_matmul [--quick] [--out DIR]

Shapes: squares 256..8192 and the CNN's fully connected layers (batch x 3136 -> 128 and
128 -> 10, forward and both gradients). Each result is checked against a float64 product
before it is timed. Prints a table (time, TFLOP/s, ratio = cuBLAS time / pyfast time, so
above 1 is faster than cuBLAS) and writes JSON under benchmarks/results/.
"""

import os
import sys

os.environ.setdefault("CUPY_TF32", "0")  # cuBLAS baseline in true FP32 (read at CuPy import)

import cupy  # noqa: E402

from benchmarks import harness  # noqa: E402
from pyfast import ops  # noqa: E402
from pyfast.testing import assert_close, reduction_atol  # noqa: E402


def cases(quick):
    squares = [256, 1024, 4096] if quick else [256, 512, 1024, 2048, 4096, 8192]
    for size in squares:
        yield f"square {size}", size, size, size, False, False
    for batch in ([64, 1024] if quick else [64, 256, 1024]):
        yield f"fc1 fwd b{batch}", batch, 128, 3136, False, False      # x @ w
        yield f"fc1 dx b{batch}", batch, 3136, 128, False, True        # dy @ w^T
        yield f"fc1 dw b{batch}", 3136, 128, batch, True, False        # x^T @ dy
        yield f"fc2 fwd b{batch}", batch, 10, 128, False, False


def make_inputs(m, n, k, trans_a, trans_b, sets, seed):
    rng = cupy.random.default_rng(seed)
    shape_a = (k, m) if trans_a else (m, k)
    shape_b = (n, k) if trans_b else (k, n)
    return [(rng.standard_normal(shape_a, dtype=cupy.float32), rng.standard_normal(shape_b, dtype=cupy.float32))
            for _ in range(sets)]


def main(argv=None):
    args = harness.parse_args(__doc__, argv)

    info = harness.device_info()
    print(f"# matmul on {info['device']} (driver CUDA {info['driver_cuda_version']}, CuPy {info['cupy']}, "
          f"CUPY_TF32={info['cupy_tf32']})")
    rows, failures = [], 0
    for index, (label, m, n, k, trans_a, trans_b) in enumerate(cases(args.quick)):
        flop = 2.0 * m * n * k
        # Enough input sets that together they outsize the L2 even without the flush.
        sets = 1 if 4 * (m * k + k * n) > 64 << 20 else 3
        inputs = make_inputs(m, n, k, trans_a, trans_b, sets, seed=index)

        def op_a(a):
            return a.T if trans_a else a

        def op_b(b):
            return b.T if trans_b else b

        def cublas(a, b):
            return cupy.matmul(op_a(a), op_b(b))

        a0, b0 = inputs[0]
        expected = cupy.matmul(op_a(a0).astype(cupy.float64), op_b(b0).astype(cupy.float64))
        base = harness.time_gpu(cublas, inputs)
        base_row = dict(case=label, m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b, version="cublas",
                        ms=base.median_ms, p10_ms=base.p10_ms, p90_ms=base.p90_ms, repeats=base.repeats,
                        tflops=harness.tflops(flop, base.median_ms), ratio=1.0, correct=True)
        rows.append(base_row)
        for version in ops.MATMUL_VERSIONS:
            out = cupy.full((m, n), cupy.nan, dtype=cupy.float32)

            def ours(a, b, version=version, out=out):
                return ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, out=out, version=version)

            row = dict(case=label, m=m, n=n, k=k, trans_a=trans_a, trans_b=trans_b, version=version)
            def check():
                assert_close(ours(a0, b0), expected, atol=reduction_atol(k), name=f"{label} {version}")

            if not harness.check_first(rows, row, check):
                failures += 1
                continue
            t = harness.time_gpu(ours, inputs)
            rows.append(dict(row, ms=t.median_ms, p10_ms=t.p10_ms, p90_ms=t.p90_ms, repeats=t.repeats,
                             tflops=harness.tflops(flop, t.median_ms), ratio=base.median_ms / t.median_ms,
                             correct=True))
        inputs = expected = None  # free their GPU memory now
        cupy.get_default_memory_pool().free_all_blocks()

    # Progress against the on-GPU oracle: tiled speed-up over simple per case.
    simple = {r["case"]: r["ms"] for r in rows if r["version"] == "simple" and r.get("ms")}
    for r in rows:
        if r["version"] != "simple" and r.get("ms") and r["case"] in simple:
            r["vs_simple"] = simple[r["case"]] / r["ms"]
    columns = [("case", "case", "{}"), ("M", "m", "{}"), ("N", "n", "{}"), ("K", "k", "{}"),
               ("version", "version", "{}"), ("ms", "ms", "{:.4f}"), ("p10 ms", "p10_ms", "{:.4f}"),
               ("p90 ms", "p90_ms", "{:.4f}"), ("TFLOP/s", "tflops", "{:.2f}"), ("vs cuBLAS", "ratio", "{:.3f}"),
               ("vs simple", "vs_simple", "{:.1f}x")]
    return harness.finish("matmul", info, rows, columns, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
