// matmul.cu - single-precision GEMM with a fused epilogue, row-major.
// Math: C[m,n] = act( sum_k op(A)[m,k] * op(B)[k,n] + bias[n] ),  act = identity or ReLU,
//       op(X) = X or X^T (trans_a / trans_b read the stored matrix transposed, no copy).
// Versions: v0 simple - one thread per output, a plain loop over k (the readable on-GPU oracle);
//                       consecutive threads take consecutive columns so B reads coalesce.
//           v1 tiled  - BLOCK_M x BLOCK_N tile per block staged through shared memory,
//                       THREAD_M x THREAD_N outputs per thread held in registers (2D register
//                       blocking), 16-byte global loads where alignment allows, the next k-tile
//                       prefetched into registers while the current one is multiplied (double
//                       buffered shared memory, one barrier per k-tile). The kernel lives in
//                       tiled_gemm.cuh (conv2d's implicit GEMM shares it). By default
//                       128x128x8 with 8x8 per thread for large C, 64x64x16 with 4x4 per
//                       thread when the large tiles would leave SMs idle; four more tile
//                       shapes for measured plans (pyfast/matmul_tuning.json).
//           v2 tensor core (matmul_tc.cu) - mma.sync on TF32 or BF16 operands, float32 accumulation.
// References: S. Boehm, "How to optimize a CUDA matmul kernel for cuBLAS-like performance"
//             (SGEMM_CUDA); CUTLASS's threadblock/warp/thread tiling hierarchy.
// Split-K (any version but simple, chosen by a MatmulPlan, else by matmul_rule_splits when the
// tile grid leaves SMs idle and K is long): K is cut into slices, one per
// blockIdx.z; each writes its partial product to a workspace and a second kernel sums the
// slices in order and applies the epilogue, so results do not depend on timing. It fills the
// GPU when M x N has few tiles but K is long (a batch of 64 against 3136 x 128 weights).
// Every edge is guarded: any M, N, K >= 1 (and K = 0) is computed exactly; out-of-range
// loads read as zero, out-of-range stores are skipped.

#include "common/common.cuh"
#include "matmul/matmul.cuh"
#include "common/matmul_common.cuh"
#include "common/tiled_gemm.cuh"

namespace pyfast {
namespace {

using matmul_detail::apply_epilogue;

// ---------------------------------------------------------------- v0: simple
__global__ void matmul_simple_kernel(MatmulParams p) {
    const float* __restrict__ a = static_cast<const float*>(p.a);
    const float* __restrict__ b = static_cast<const float*>(p.b);
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= p.n) return;
    for (int row = blockIdx.y * blockDim.y + threadIdx.y; row < p.m; row += gridDim.y * blockDim.y) {
        float acc = 0.0f;
        for (int k = 0; k < p.k; ++k) {
            const float x = p.trans_a ? a[(int64_t)k * p.m + row] : a[(int64_t)row * p.k + k];
            const float y = p.trans_b ? b[(int64_t)col * p.k + k] : b[(int64_t)k * p.n + col];
            acc = fmaf(x, y, acc);
        }
        p.c[(int64_t)row * p.n + col] = apply_epilogue(acc, p.bias, col, p.activation);
    }
}

// ---------------------------------------------------------------- v1: tiled (tiled_gemm.cuh)
cudaError_t launch_tiled(const MatmulParams& p, int config, const SplitK& split, cudaStream_t stream) {
    // 16-byte loads need an aligned base and rows whose length is a multiple of 4 floats.
    const bool vector_a = is_aligned16(p.a) && (p.trans_a ? p.m : p.k) % 4 == 0;
    const bool vector_b = is_aligned16(p.b) && (p.trans_b ? p.k : p.n) % 4 == 0;
    const bool vector_c = is_aligned16(split.partial ? split.partial : p.c) && p.n % 4 == 0;
    return tiled_gemm::launch_config(p, config, split, tiled_gemm::MatrixTiles{}, vector_a, vector_b, vector_c,
                                     stream);
}

}  // namespace

// ---------------------------------------------------------------- launcher
int matmul_config_count(MatmulVersion version) {
    switch (version) {
        case MatmulVersion::kSimple: return 1;
        case MatmulVersion::kTiled: return tiled_gemm::kConfigs;
        case MatmulVersion::kTensorCore: return matmul_tensor_core_config_count();
    }
    return 0;
}

void matmul_config_tile(MatmulVersion version, int config, int* block_m, int* block_n) {
    *block_m = *block_n = 0;
    if (config < 0 || config >= matmul_config_count(version)) return;
    if (version == MatmulVersion::kSimple) {
        *block_m = 8;
        *block_n = 32;
    } else if (version == MatmulVersion::kTiled) {
        *block_m = tiled_gemm::kConfigTiles[config][0];
        *block_n = tiled_gemm::kConfigTiles[config][1];
    } else {
        matmul_tensor_core_config_tile(config, block_m, block_n);
    }
}

int matmul_rule_splits(MatmulVersion version, int m, int n, int k, int sms) {
    if (version == MatmulVersion::kSimple || m <= 0 || n <= 0 || sms < 1) return 1;
    int block_m = 0, block_n = 0;
    matmul_config_tile(version, tiled_gemm::default_config(m, n, sms), &block_m, &block_n);
    if (block_m == 0) return 1;
    return tiled_gemm::rule_splits((long long)ceil_div(m, block_m) * ceil_div(n, block_n), k, sms);
}

int matmul_max_splits() { return tiled_gemm::kMaxSplits; }

std::size_t matmul_workspace_bytes(int m, int n, int k, const MatmulPlan& plan) {
    if (m <= 0 || n <= 0) return 0;
    const SplitK split = tiled_gemm::split_k(k, plan.splits, nullptr);
    return split.slices > 1 ? sizeof(float) * (std::size_t)split.slices * m * n : 0;
}

cudaError_t matmul(const MatmulParams& p, MatmulVersion version, MatmulPrecision precision, const MatmulPlan& plan,
                   float* workspace, cudaStream_t stream) {
    if (plan.splits < 1 || plan.splits > tiled_gemm::kMaxSplits) return cudaErrorInvalidValue;
    if (plan.config < -1 || plan.config >= matmul_config_count(version)) return cudaErrorInvalidValue;
    // FP32 kernels read float32 only; the tensor cores need a reduced precision.
    const bool tensor_core = version == MatmulVersion::kTensorCore;
    if (tensor_core == (precision == MatmulPrecision::kFp32)) return cudaErrorInvalidValue;
    if (!tensor_core && p.input != ElementType::kFloat32) return cudaErrorInvalidValue;
    if (precision == MatmulPrecision::kTf32 && p.input != ElementType::kFloat32) return cudaErrorInvalidValue;
    if (p.m <= 0 || p.n <= 0) return cudaSuccess;  // empty C: nothing to write

    if (version == MatmulVersion::kSimple) {
        const dim3 block(32, 8);
        const int blocks_m = ceil_div(p.m, 8);
        const dim3 grid(ceil_div(p.n, 32), blocks_m < kMaxGridY ? blocks_m : kMaxGridY);
        return launch_kernel(matmul_simple_kernel, grid, block, 0, stream, p);
    }

    const SplitK split = tiled_gemm::split_k(p.k, plan.splits, workspace);
    if (split.slices > 1 && workspace == nullptr) return cudaErrorInvalidValue;
    // Both versions number their configurations alike: 0 is 128x128 tiles, 1 is 64x64.
    const int config = plan.config >= 0 ? plan.config : tiled_gemm::default_config(p.m, p.n);
    const cudaError_t status =
        tensor_core ? matmul_tensor_core(p, precision, config, split, stream) : launch_tiled(p, config, split, stream);
    if (status != cudaSuccess || split.slices == 1) return status;
    return tiled_gemm::reduce_slices(split, p.m, p.n, p.bias, p.activation, p.c, stream);
}

}  // namespace pyfast
