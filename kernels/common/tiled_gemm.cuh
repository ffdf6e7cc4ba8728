// tiled_gemm.cuh - matmul v1's kernel (128x128x8 or 64x64x16 block tiles, 8x8 / 4x4 register
// blocking, double-buffered shared memory, split-K) as a template over where its tiles come
// from and where its results go, so that other families run the same verified core:
//   MatrixTiles      - plain row-major matrices (pyfast.ops.matmul, matmul.cu)
//   conv2d.cu's      - implicit-GEMM convolution: tiles gathered from NCHW tensors
// A Tiles policy provides
//   supports<TRANS_A, TRANS_B, SPLIT>()  whether it handles that layout (only those are compiled)
//   fetch<TRANS_A, TRANS_B, BLOCK_M, BLOCK_N, BLOCK_K, THREADS>(p, m0, n0, k0, k_hi, tid, vector_a,
//         vector_b, a_stage, b_stage)   fills chunk i (= tid + i * THREADS) of the k-tile at k0 for
//         both operands, in the chunk order of matmul_detail::fetch_tiles (chunks run along the
//         stored contiguous dimension of op(A) / op(B): k when !TRANS_A / TRANS_B, else m / n)
//   store4<SPLIT>(p, out, row, col, v, vector_c)  writes the results C[row][col .. col+3] that
//         exist (col + q < p.n); with SPLIT, raw sums into the matrix `out` (a split-K slice).
#pragma once

#include "common/matmul_common.cuh"

namespace pyfast {
namespace tiled_gemm {

using matmul_detail::apply_epilogue;

// Row-major matrices: op(A) = A or A^T, op(B) = B or B^T, C with bias per column.
struct MatrixTiles {
    template <bool TA, bool TB, bool SPLIT>
    static constexpr bool supports() { return true; }

    template <bool TRANS_A, bool TRANS_B, int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREADS, int A_CHUNKS,
              int B_CHUNKS>
    __device__ __forceinline__ void fetch(const MatmulParams& p, int m0, int n0, int k0, int k_hi, int tid,
                                          bool vector_a, bool vector_b, float4 (&a_stage)[A_CHUNKS],
                                          float4 (&b_stage)[B_CHUNKS]) const {
        matmul_detail::fetch_tiles<TRANS_A, TRANS_B, BLOCK_M, BLOCK_N, BLOCK_K, THREADS>(
            static_cast<const float*>(p.a), static_cast<const float*>(p.b), p, m0, n0, k0, k_hi, tid, vector_a,
            vector_b, a_stage, b_stage);
    }

    template <bool SPLIT>
    __device__ __forceinline__ void store4(const MatmulParams& p, float* out, int row, int col, const float (&acc)[4],
                                           bool vector_c) const {
        float* c_row = out + (int64_t)row * p.n;
        float v[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            if constexpr (SPLIT) {
                v[q] = col + q < p.n ? acc[q] : 0.0f;
            } else {
                v[q] = col + q < p.n ? apply_epilogue(acc[q], p.bias, col + q, p.activation) : 0.0f;
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
};

// MIN_BLOCKS caps registers so that several blocks can share an SM (their warps cover each
// other's barrier waits). The 8x8 thread tile needs about 150 registers: capped at 128
// (two blocks per SM) ptxas spills ~200 bytes, so that configuration asks for one block.
// SPLIT: this launch is one slice of a split K (a separate instantiation, so the unsplit
// kernel carries no slice bookkeeping in its registers).
template <int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREAD_M, int THREAD_N, int MIN_BLOCKS, bool TRANS_A,
          bool TRANS_B, bool SPLIT, typename Tiles>
__global__ void __launch_bounds__((BLOCK_M / THREAD_M) * (BLOCK_N / THREAD_N), MIN_BLOCKS)
tiled_gemm_kernel(MatmulParams p, SplitK split, Tiles tiles, bool vector_a, bool vector_b, bool vector_c) {
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
            tiles.template fetch<TRANS_A, TRANS_B, BLOCK_M, BLOCK_N, BLOCK_K, THREADS>(
                p, m0, n0, k0, k_hi, tid, vector_a, vector_b, a_stage, b_stage);
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

        matmul_detail::double_buffered_k_loop<BLOCK_K>(k_lo, k_tiles, fetch, stash, [&](int buf) {
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
        });

        // Epilogue: the policy stores each run of 4 results; a split-K slice stores its raw
        // sums into its partial matrix and leaves the epilogue to the reduction.
#pragma unroll
        for (int i = 0; i < THREAD_M; ++i) {
            const int row = m0 + tile_row(i) + ty * 4;
            if (row >= p.m) continue;
#pragma unroll
            for (int j = 0; j < THREAD_N; j += 4) {
                const int col = n0 + tile_col(j) + tx * 4;
                if (col >= p.n) continue;
                const float v[4] = {acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]};
                tiles.template store4<SPLIT>(p, SPLIT ? partial : p.c, row, col, v, vector_c);
            }
        }
    }
}

// Launches one configuration for p's layout and split; vector_* say which 16-byte accesses the
// policy may use (MatrixTiles: aligned bases, rows a multiple of 4 floats).
template <int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREAD_M, int THREAD_N, int MIN_BLOCKS, typename Tiles>
cudaError_t launch(const MatmulParams& p, const SplitK& split, const Tiles& tiles, bool vector_a, bool vector_b,
                   bool vector_c, cudaStream_t stream) {
    constexpr int threads = (BLOCK_M / THREAD_M) * (BLOCK_N / THREAD_N);
    const int tiles_m = ceil_div(p.m, BLOCK_M);
    const dim3 grid(ceil_div(p.n, BLOCK_N), tiles_m < kMaxGridY ? tiles_m : kMaxGridY, split.slices);
    cudaError_t status = cudaErrorInvalidValue;  // a layout the policy does not support
    matmul_detail::dispatch_layout(p.trans_a, p.trans_b, split.slices > 1, [&](auto ta, auto tb, auto sp) {
        constexpr bool TA = decltype(ta)::value, TB = decltype(tb)::value, SPLIT = decltype(sp)::value;
        if constexpr (Tiles::template supports<TA, TB, SPLIT>()) {
            status = launch_kernel(
                tiled_gemm_kernel<BLOCK_M, BLOCK_N, BLOCK_K, THREAD_M, THREAD_N, MIN_BLOCKS, TA, TB, SPLIT, Tiles>,
                grid, threads, 0, stream, p, split, tiles, vector_a, vector_b, vector_c);
        }
    });
    return status;
}

// Configurations, indexed by MatmulPlan::config (block tile M x N x K, outputs per thread):
//   0: 128x128x8,  8x8   the default for large C        3: 128x64x16, 8x4
//   1: 64x64x16,   4x4   the default for small C        4: 64x128x16, 4x8
//   2: 128x128x16, 8x8                                  5: 64x64x32,  4x4
// 2-5 exist for the tuner (benchmarks/tune_matmul.py) to choose per shape class and card.
constexpr int kConfigs = 6;
constexpr int kConfigTiles[kConfigs][2] = {{128, 128}, {64, 64}, {128, 128}, {128, 64}, {64, 128}, {64, 64}};

// Large tiles reuse each loaded element 8x more per thread, but only pay off when there are
// enough of them to occupy every SM.
inline int default_config(int m, int n, int sms) {
    const long long large_tiles = (long long)ceil_div(m, 128) * ceil_div(n, 128);
    return large_tiles >= sms ? 0 : 1;
}

inline int default_config(int m, int n) { return default_config(m, n, sm_count()); }

template <typename Tiles>
cudaError_t launch_config(const MatmulParams& p, int config, const SplitK& split, const Tiles& tiles, bool vector_a,
                          bool vector_b, bool vector_c, cudaStream_t stream) {
    switch (config) {
        case 0: return launch<128, 128, 8, 8, 8, 1>(p, split, tiles, vector_a, vector_b, vector_c, stream);
        case 1: return launch<64, 64, 16, 4, 4, 4>(p, split, tiles, vector_a, vector_b, vector_c, stream);
        case 2: return launch<128, 128, 16, 8, 8, 1>(p, split, tiles, vector_a, vector_b, vector_c, stream);
        case 3: return launch<128, 64, 16, 8, 4, 2>(p, split, tiles, vector_a, vector_b, vector_c, stream);
        case 4: return launch<64, 128, 16, 4, 8, 2>(p, split, tiles, vector_a, vector_b, vector_c, stream);
        case 5: return launch<64, 64, 32, 4, 4, 3>(p, split, tiles, vector_a, vector_b, vector_c, stream);
        default: return cudaErrorInvalidValue;
    }
}

// Config 0 or 1 by default_config: the two every caller gets without a tuned plan (the others
// are compiled only where a plan can name them, in matmul.cu).
template <typename Tiles>
cudaError_t launch_default_config(const MatmulParams& p, const SplitK& split, const Tiles& tiles, bool vector_a,
                                  bool vector_b, bool vector_c, cudaStream_t stream) {
    if (default_config(p.m, p.n) == 0) {
        return launch<128, 128, 8, 8, 8, 1>(p, split, tiles, vector_a, vector_b, vector_c, stream);
    }
    return launch<64, 64, 16, 4, 4, 4>(p, split, tiles, vector_a, vector_b, vector_c, stream);
}

// The K slicing of `splits` slices: whole kSplitKAlign multiples, none empty.
inline SplitK split_k(int k, int splits, float* workspace) {
    if (splits <= 1 || k <= kSplitKAlign) return SplitK{k > 0 ? k : 1, 1, nullptr};
    const int k_chunk = ceil_div(ceil_div(k, splits), kSplitKAlign) * kSplitKAlign;
    const int slices = ceil_div(k, k_chunk);
    if (slices <= 1) return SplitK{k, 1, nullptr};
    return SplitK{k_chunk, slices, workspace};
}

// A plan may cut K into at most this many slices (the partial sums' workspace grows with it).
constexpr int kMaxSplits = 64;

// The split-K rule, the one every caller without a measured plan follows (matmul, conv2d's
// weight gradient; the benchmarks and tuners ask it through the binding): only when the `tiles`
// output tiles of the default configuration leave SMs idle and K is long (>= 1024), enough
// slices for about two blocks per SM, each at least 256 deep, at most kMaxSplits.
inline int rule_splits(std::int64_t tiles, std::int64_t k, int sms) {
    if (tiles <= 0 || tiles >= sms || k < 1024 || sms < 1) return 1;
    std::int64_t splits = ceil_div<std::int64_t>(2LL * sms, tiles);
    splits = splits < k / 256 ? splits : k / 256;
    splits = splits < kMaxSplits ? splits : kMaxSplits;
    return splits > 1 ? static_cast<int>(splits) : 1;
}

// C = act(sum over slices z, in order, of partial[z] + bias[column]): split-K's second half.
template <int UNUSED = 0>
__global__ void splitk_reduce_kernel(const float* __restrict__ partial, int slices, std::int64_t mn, int n,
                                     const float* __restrict__ bias, Activation activation, float* __restrict__ c) {
    for (std::int64_t i = blockIdx.x * (std::int64_t)blockDim.x + threadIdx.x; i < mn;
         i += (std::int64_t)gridDim.x * blockDim.x) {
        float v = partial[i];
        for (int z = 1; z < slices; ++z) v += partial[z * mn + i];
        c[i] = apply_epilogue(v, bias, static_cast<int>(i % n), activation);
    }
}

inline cudaError_t reduce_slices(const SplitK& split, int m, int n, const float* bias, Activation activation,
                                 float* c, cudaStream_t stream) {
    const std::int64_t mn = (std::int64_t)m * n;
    return launch_grid_stride(splitk_reduce_kernel<>, mn, stream, static_cast<const float*>(split.partial),
                              split.slices, mn, n, bias, activation, c);
}

}  // namespace tiled_gemm
}  // namespace pyfast
