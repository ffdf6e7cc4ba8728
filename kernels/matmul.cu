// matmul.cu - single-precision GEMM with a fused epilogue, row-major.
// Math: C[m,n] = act( sum_k op(A)[m,k] * op(B)[k,n] + bias[n] ),  act = identity or ReLU,
//       op(X) = X or X^T (trans_a / trans_b read the stored matrix transposed, no copy).
// Versions: v0 simple - one thread per output, a plain loop over k (the readable on-GPU oracle);
//                       consecutive threads take consecutive columns so B reads coalesce.
//           v1 tiled  - BLOCK_M x BLOCK_N tile per block staged through shared memory,
//                       THREAD_M x THREAD_N outputs per thread held in registers (2D register
//                       blocking), 16-byte global loads where alignment allows, the next k-tile
//                       prefetched into registers while the current one is multiplied (double
//                       buffered shared memory, one barrier per k-tile). Two tile shapes:
//                       128x128x8 with 8x8 per thread for large C, 64x64x16 with 4x4 per
//                       thread when the large tiles would leave SMs idle.
// References: S. Boehm, "How to optimize a CUDA matmul kernel for cuBLAS-like performance"
//             (SGEMM_CUDA); CUTLASS's threadblock/warp/thread tiling hierarchy.
//           v2 tensor core (matmul_tc.cu) - mma.sync on TF32 or BF16 operands, float32 accumulation.
// Split-K (any version but simple, chosen by a MatmulPlan): K is cut into slices, one per
// blockIdx.z; each writes its partial product to a workspace and a second kernel sums the
// slices in order and applies the epilogue, so results do not depend on timing. It fills the
// GPU when M x N has few tiles but K is long (a batch of 64 against 3136 x 128 weights).
// Every edge is guarded: any M, N, K >= 1 (and K = 0) is computed exactly; out-of-range
// loads read as zero, out-of-range stores are skipped.

#include "common.cuh"
#include "matmul.cuh"
#include "matmul_common.cuh"

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

// ---------------------------------------------------------------- v1: tiled
// MIN_BLOCKS caps registers so that several blocks can share an SM (their warps cover each
// other's barrier waits). The 8x8 thread tile needs about 150 registers: capped at 128
// (two blocks per SM) ptxas spills ~200 bytes, so that configuration asks for one block.
// SPLIT: this launch is one slice of a split K (a separate instantiation, so the unsplit
// kernel carries no slice bookkeeping in its registers).
template <int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREAD_M, int THREAD_N, int MIN_BLOCKS, bool TRANS_A,
          bool TRANS_B, bool SPLIT>
__global__ void __launch_bounds__((BLOCK_M / THREAD_M) * (BLOCK_N / THREAD_N), MIN_BLOCKS)
matmul_tiled_kernel(MatmulParams p, SplitK split, bool vector_a, bool vector_b, bool vector_c) {
    constexpr int THREADS_M = BLOCK_M / THREAD_M;
    constexpr int THREADS_N = BLOCK_N / THREAD_N;
    constexpr int THREADS = THREADS_M * THREADS_N;
    // Tiles live in shared memory k-major (As[k][m], Bs[k][n]) so the inner product reads
    // a column of A and a row of B as 16-byte vectors. The pad keeps rows 16-byte aligned
    // and spreads the transposing stores of a row-major A over all banks.
    constexpr int PAD = 4;
    constexpr int A_CHUNKS = BLOCK_M * BLOCK_K / 4 / THREADS;  // float4 loads per thread
    constexpr int B_CHUNKS = BLOCK_N * BLOCK_K / 4 / THREADS;
    static_assert(THREAD_M % 4 == 0 && THREAD_N % 4 == 0, "thread tiles are runs of 4");
    static_assert(A_CHUNKS * THREADS * 4 == BLOCK_M * BLOCK_K, "A tile must split evenly");
    static_assert(B_CHUNKS * THREADS * 4 == BLOCK_N * BLOCK_K, "B tile must split evenly");
    static_assert(BLOCK_K % 4 == 0, "k-tiles are loaded as float4");

    __shared__ __align__(16) float As[2][BLOCK_K][BLOCK_M + PAD];
    __shared__ __align__(16) float Bs[2][BLOCK_K][BLOCK_N + PAD];

    const float* a = static_cast<const float*>(p.a);
    const float* b = static_cast<const float*>(p.b);
    const int tid = threadIdx.x;
    const int tx = tid % THREADS_N;
    const int ty = tid / THREADS_N;
    const int tiles_m = ceil_div(p.m, BLOCK_M);
    // This block's K slice [k_lo, k_hi); the whole of K unless split.
    const int k_lo = SPLIT ? blockIdx.z * split.k_chunk : 0;
    const int k_hi = SPLIT ? min(p.k, k_lo + split.k_chunk) : p.k;
    const int k_tiles = k_hi > k_lo ? ceil_div(k_hi - k_lo, BLOCK_K) : 0;
    float* __restrict__ partial = SPLIT ? split.partial + (int64_t)blockIdx.z * p.m * p.n : nullptr;
    const int n0 = blockIdx.x * BLOCK_N;

    // A thread's outputs are runs of 4 rows (columns) spaced 4*THREADS_M (4*THREADS_N) apart,
    // so 8 neighbouring threads read 32 consecutive floats: conflict-free 16-byte loads.
    auto tile_row = [](int i) { return (i / 4) * (THREADS_M * 4) + (i % 4); };
    auto tile_col = [](int j) { return (j / 4) * (THREADS_N * 4) + (j % 4); };

    for (int tile = blockIdx.y; tile < tiles_m; tile += gridDim.y) {
        const int m0 = tile * BLOCK_M;
        float4 a_stage[A_CHUNKS];
        float4 b_stage[B_CHUNKS];

        // Global -> registers for the k-tile starting at k0 (absolute).
        auto fetch = [&](int k0) {
            matmul_detail::fetch_tiles<TRANS_A, TRANS_B, BLOCK_M, BLOCK_N, BLOCK_K, THREADS>(
                a, b, p, m0, n0, k0, k_hi, tid, vector_a, vector_b, a_stage, b_stage);
        };
        // Registers -> shared buffer `buf`, transposing chunks that ran along k.
        auto stash = [&](int buf) {
#pragma unroll
            for (int i = 0; i < A_CHUNKS; ++i) {
                const int chunk = tid + i * THREADS;
                const float4 v = a_stage[i];
                if (TRANS_A) {
                    const int kk = chunk / (BLOCK_M / 4), mm = chunk % (BLOCK_M / 4) * 4;
                    *reinterpret_cast<float4*>(&As[buf][kk][mm]) = v;
                } else {
                    const int mm = chunk / (BLOCK_K / 4), kk = chunk % (BLOCK_K / 4) * 4;
                    As[buf][kk + 0][mm] = v.x;
                    As[buf][kk + 1][mm] = v.y;
                    As[buf][kk + 2][mm] = v.z;
                    As[buf][kk + 3][mm] = v.w;
                }
            }
#pragma unroll
            for (int i = 0; i < B_CHUNKS; ++i) {
                const int chunk = tid + i * THREADS;
                const float4 v = b_stage[i];
                if (TRANS_B) {
                    const int nn = chunk / (BLOCK_K / 4), kk = chunk % (BLOCK_K / 4) * 4;
                    Bs[buf][kk + 0][nn] = v.x;
                    Bs[buf][kk + 1][nn] = v.y;
                    Bs[buf][kk + 2][nn] = v.z;
                    Bs[buf][kk + 3][nn] = v.w;
                } else {
                    const int kk = chunk / (BLOCK_N / 4), nn = chunk % (BLOCK_N / 4) * 4;
                    *reinterpret_cast<float4*>(&Bs[buf][kk][nn]) = v;
                }
            }
        };

        float acc[THREAD_M][THREAD_N];
#pragma unroll
        for (int i = 0; i < THREAD_M; ++i)
#pragma unroll
            for (int j = 0; j < THREAD_N; ++j) acc[i][j] = 0.0f;

        if (k_tiles > 0) {
            fetch(k_lo);
            stash(0);
        }
        __syncthreads();

        for (int t = 0; t < k_tiles; ++t) {
            const int buf = t & 1;
            // Issue the next tile's global loads first; their latency hides behind the FMAs.
            if (t + 1 < k_tiles) fetch(k_lo + (t + 1) * BLOCK_K);
#pragma unroll
            for (int kk = 0; kk < BLOCK_K; ++kk) {
                float a_frag[THREAD_M];
                float b_frag[THREAD_N];
#pragma unroll
                for (int i = 0; i < THREAD_M; i += 4) {
                    const float4 v = *reinterpret_cast<const float4*>(&As[buf][kk][tile_row(i) + ty * 4]);
                    a_frag[i + 0] = v.x;
                    a_frag[i + 1] = v.y;
                    a_frag[i + 2] = v.z;
                    a_frag[i + 3] = v.w;
                }
#pragma unroll
                for (int j = 0; j < THREAD_N; j += 4) {
                    const float4 v = *reinterpret_cast<const float4*>(&Bs[buf][kk][tile_col(j) + tx * 4]);
                    b_frag[j + 0] = v.x;
                    b_frag[j + 1] = v.y;
                    b_frag[j + 2] = v.z;
                    b_frag[j + 3] = v.w;
                }
#pragma unroll
                for (int i = 0; i < THREAD_M; ++i)
#pragma unroll
                    for (int j = 0; j < THREAD_N; ++j) acc[i][j] = fmaf(a_frag[i], b_frag[j], acc[i][j]);
            }
            // The other buffer was last read in iteration t-1, which ended with a barrier.
            if (t + 1 < k_tiles) stash(buf ^ 1);
            __syncthreads();
        }

        // Epilogue: bias, activation, guarded (vectorized where possible) stores; a split-K
        // slice stores its raw sums and leaves the epilogue to the reduction.
#pragma unroll
        for (int i = 0; i < THREAD_M; ++i) {
            const int row = m0 + tile_row(i) + ty * 4;
            if (row >= p.m) continue;
            float* c_row = (partial ? partial : p.c) + (int64_t)row * p.n;
#pragma unroll
            for (int j = 0; j < THREAD_N; j += 4) {
                const int col = n0 + tile_col(j) + tx * 4;
                if (col >= p.n) continue;
                float v[4];
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    if constexpr (SPLIT) {
                        v[q] = col + q < p.n ? acc[i][j + q] : 0.0f;
                    } else {
                        v[q] = col + q < p.n ? apply_epilogue(acc[i][j + q], p.bias, col + q, p.activation) : 0.0f;
                    }
                }
                if (vector_c && col + 3 < p.n) {
                    *reinterpret_cast<float4*>(c_row + col) = make_float4(v[0], v[1], v[2], v[3]);
                } else {
#pragma unroll
                    for (int q = 0; q < 4; ++q)
                        if (col + q < p.n) c_row[col + q] = v[q];
                }
            }
        }
    }
}

template <int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREAD_M, int THREAD_N, int MIN_BLOCKS>
cudaError_t launch_tiled(const MatmulParams& p, const SplitK& split, cudaStream_t stream) {
    constexpr int threads = (BLOCK_M / THREAD_M) * (BLOCK_N / THREAD_N);
    const int tiles_m = ceil_div(p.m, BLOCK_M);
    const dim3 grid(ceil_div(p.n, BLOCK_N), tiles_m < kMaxGridY ? tiles_m : kMaxGridY, split.slices);
    // 16-byte loads need an aligned base and rows whose length is a multiple of 4 floats.
    const bool vector_a = is_aligned16(p.a) && (p.trans_a ? p.m : p.k) % 4 == 0;
    const bool vector_b = is_aligned16(p.b) && (p.trans_b ? p.k : p.n) % 4 == 0;
    const bool vector_c = is_aligned16(split.partial ? split.partial : p.c) && p.n % 4 == 0;
    matmul_detail::dispatch_layout(p.trans_a, p.trans_b, split.slices > 1, [&](auto ta, auto tb, auto sp) {
        matmul_tiled_kernel<BLOCK_M, BLOCK_N, BLOCK_K, THREAD_M, THREAD_N, MIN_BLOCKS, decltype(ta)::value,
                            decltype(tb)::value, decltype(sp)::value>
            <<<grid, threads, 0, stream>>>(p, split, vector_a, vector_b, vector_c);
    });
    PYFAST_RETURN_IF_LAUNCH_FAILED();
    return cudaSuccess;
}

// C = act(sum over slices z, in order, of partial[z] + bias): the second half of split-K.
__global__ void splitk_reduce_kernel(const float* __restrict__ partial, int slices, std::int64_t mn, int n,
                                     const float* __restrict__ bias, Activation activation, float* __restrict__ c) {
    for (std::int64_t i = blockIdx.x * (std::int64_t)blockDim.x + threadIdx.x; i < mn;
         i += (std::int64_t)gridDim.x * blockDim.x) {
        float v = partial[i];
        for (int z = 1; z < slices; ++z) v += partial[z * mn + i];
        c[i] = apply_epilogue(v, bias, static_cast<int>(i % n), activation);
    }
}

// Tiled configurations, indexed by MatmulPlan::config.
constexpr int kTiledConfigs = 2;  // 0: 128x128x8, 8x8 per thread; 1: 64x64x16, 4x4 per thread

int tiled_default_config(const MatmulParams& p) {
    // Large tiles reuse each loaded element 8x more per thread, but only pay off when
    // there are enough of them to occupy every SM.
    const long long large_tiles = (long long)ceil_div(p.m, 128) * ceil_div(p.n, 128);
    return large_tiles >= sm_count() ? 0 : 1;
}

cudaError_t launch_tiled_config(const MatmulParams& p, int config, const SplitK& split, cudaStream_t stream) {
    switch (config) {
        case 0: return launch_tiled<128, 128, 8, 8, 8, 1>(p, split, stream);
        case 1: return launch_tiled<64, 64, 16, 4, 4, 4>(p, split, stream);
        default: return cudaErrorInvalidValue;
    }
}

constexpr int kMaxSplits = 64;

// The K slicing of a plan: slices of whole kSplitKAlign multiples, none empty.
SplitK split_k(int k, int splits, float* workspace) {
    if (splits <= 1 || k <= kSplitKAlign) return SplitK{k > 0 ? k : 1, 1, nullptr};
    const int k_chunk = ceil_div(ceil_div(k, splits), kSplitKAlign) * kSplitKAlign;
    const int slices = ceil_div(k, k_chunk);
    if (slices <= 1) return SplitK{k, 1, nullptr};
    return SplitK{k_chunk, slices, workspace};
}

}  // namespace

// ---------------------------------------------------------------- launcher
int matmul_config_count(MatmulVersion version) {
    switch (version) {
        case MatmulVersion::kSimple: return 1;
        case MatmulVersion::kTiled: return kTiledConfigs;
        case MatmulVersion::kTensorCore: return matmul_tensor_core_config_count();
    }
    return 0;
}

std::size_t matmul_workspace_bytes(int m, int n, int k, const MatmulPlan& plan) {
    if (m <= 0 || n <= 0) return 0;
    const SplitK split = split_k(k, plan.splits, nullptr);
    return split.slices > 1 ? sizeof(float) * (std::size_t)split.slices * m * n : 0;
}

cudaError_t matmul(const MatmulParams& p, MatmulVersion version, MatmulPrecision precision, const MatmulPlan& plan,
                   float* workspace, cudaStream_t stream) {
    if (plan.splits < 1 || plan.splits > kMaxSplits) return cudaErrorInvalidValue;
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
        matmul_simple_kernel<<<grid, block, 0, stream>>>(p);
        PYFAST_RETURN_IF_LAUNCH_FAILED();
        return cudaSuccess;
    }

    const SplitK split = split_k(p.k, plan.splits, workspace);
    if (split.slices > 1 && workspace == nullptr) return cudaErrorInvalidValue;
    cudaError_t status;
    if (tensor_core) {
        const int config = plan.config >= 0 ? plan.config : matmul_tensor_core_default_config(p);
        status = matmul_tensor_core(p, precision, config, split, stream);
    } else {
        const int config = plan.config >= 0 ? plan.config : tiled_default_config(p);
        status = launch_tiled_config(p, config, split, stream);
    }
    if (status != cudaSuccess || split.slices == 1) return status;
    const std::int64_t mn = (std::int64_t)p.m * p.n;
    return launch_grid_stride(splitk_reduce_kernel, mn, stream, static_cast<const float*>(split.partial),
                              split.slices, mn, p.n, p.bias, p.activation, p.c);
}

}  // namespace pyfast
