// matmul_tc.cu - matmul v2: the same product as matmul.cu, on the tensor cores (sm_80+).
// Math: C[m,n] = act( sum_k round(op(A)[m,k]) * round(op(B)[k,n]) + bias[n] ), float32 sums,
//       round = to TF32 (10-bit mantissa, cvt.rna: nearest, ties away from zero) or to BF16
//       (7-bit mantissa, nearest even). A and B are float32, or bfloat16 for the BF16 path.
// Design: a BLOCK_M x BLOCK_N tile per block, WARPS_M x WARPS_N warps each owning a
//         (BLOCK_M / WARPS_M) x (BLOCK_N / WARPS_N) warp tile of m16n8 accumulators, K in tiles
//         of 16 32-bit words per row (16 TF32 values or 32 BF16 values = two mma k-steps).
//         Global -> registers (rounded on the way) -> shared memory double buffer, the next
//         k-tile's loads in flight while the tensor cores work on the current one (one barrier
//         per k-tile, as matmul.cu v1). Shared tiles are stored with K contiguous for both
//         operands ([m][k] and [n][k]) in rows of 20 words: the 4-word pad makes the fragment
//         reads (8 rows x 4 words per warp) hit 32 different banks.
// Instructions (kernels/common/ptx.cuh): mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 and
//         mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA, "Matrix Fragments for
//         mma.m16n8k8 / m16n8k16"). With g = lane / 4 and t = lane % 4, both read A words
//         (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4) and B words (n = g; t), (g; t + 4) of an
//         8-word k-step, and hold C at rows g, g + 8 and columns 2t, 2t + 1; a BF16 word is a
//         pair of consecutive k, the lower k in the low half.
// Not yet here (the next steps, measured on a GPU first): cp.async / TMA staging, ldmatrix,
//         a swizzled layout instead of the pad, and sm_90a wgmma.
// Every edge is guarded as in matmul.cu; split-K follows matmul.cu's SplitK contract.

#include <cuda_bf16.h>

#include "common/common.cuh"
#include "matmul/matmul.cuh"
#include "common/matmul_common.cuh"
#include "common/ptx.cuh"

namespace pyfast {
namespace {

constexpr int kRowWords = 16;           // data words per shared row (one k-tile)
constexpr int kRowStride = kRowWords + 4;  // + pad: 20 words = 80 bytes, 16-byte aligned rows

template <MatmulPrecision P>
struct MmaTraits;

template <>
struct MmaTraits<MatmulPrecision::kTf32> {
    static constexpr int kValuesPerWord = 1;
    // Round-to-nearest (ties away) TF32 in a 32-bit register, the form mma reads.
    __device__ static uint32_t word(float x) { return ptx::cvt_rna_tf32(x); }
    __device__ static void pack(const float4& v, uint32_t* words) {
        words[0] = word(v.x);
        words[1] = word(v.y);
        words[2] = word(v.z);
        words[3] = word(v.w);
    }
    // c += a (16x8) * b (8x8)
    __device__ static void mma(float* c, const uint32_t* a, const uint32_t* b) { ptx::mma_m16n8k8_tf32(c, a, b); }
};

template <>
struct MmaTraits<MatmulPrecision::kBf16> {
    static constexpr int kValuesPerWord = 2;
    // Two words of (lower k, higher k) BF16 pairs, rounded to nearest even.
    __device__ static void pack(const float4& v, uint32_t* words) {
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y);  // .x (low half) = v.x
        const __nv_bfloat162 hi = __floats2bfloat162_rn(v.z, v.w);
        words[0] = *reinterpret_cast<const uint32_t*>(&lo);
        words[1] = *reinterpret_cast<const uint32_t*>(&hi);
    }
    // c += a (16x16) * b (16x8)
    __device__ static void mma(float* c, const uint32_t* a, const uint32_t* b) { ptx::mma_m16n8k16_bf16(c, a, b); }
};

template <MatmulPrecision P, typename InT, int BLOCK_M, int BLOCK_N, int WARPS_M, int WARPS_N, bool TRANS_A,
          bool TRANS_B, bool SPLIT>
__global__ void __launch_bounds__(32 * WARPS_M * WARPS_N)
matmul_tc_kernel(MatmulParams p, SplitK split, bool vector_a, bool vector_b) {
    using Traits = MmaTraits<P>;
    constexpr int THREADS = 32 * WARPS_M * WARPS_N;
    constexpr int BLOCK_K = kRowWords * Traits::kValuesPerWord;  // k values per tile
    constexpr int STEP_K = 8 * Traits::kValuesPerWord;            // k values per mma
    constexpr int WARP_M = BLOCK_M / WARPS_M, WARP_N = BLOCK_N / WARPS_N;
    constexpr int MT = WARP_M / 16, NT = WARP_N / 8;  // mma tiles per warp
    constexpr int A_CHUNKS = BLOCK_M * BLOCK_K / 4 / THREADS;  // 4-value loads per thread
    constexpr int B_CHUNKS = BLOCK_N * BLOCK_K / 4 / THREADS;
    constexpr int WORDS_PER_CHUNK = 4 / Traits::kValuesPerWord;
    static_assert(WARP_M % 16 == 0 && WARP_N % 8 == 0, "warp tiles are whole mma tiles");
    static_assert(A_CHUNKS * THREADS * 4 == BLOCK_M * BLOCK_K, "A tile must split evenly");
    static_assert(B_CHUNKS * THREADS * 4 == BLOCK_N * BLOCK_K, "B tile must split evenly");
    static_assert(BLOCK_K % kSplitKAlign == 0 || kSplitKAlign % BLOCK_K == 0, "split-K slices hold whole k-tiles");

    __shared__ __align__(16) uint32_t As[2][BLOCK_M][kRowStride];
    __shared__ __align__(16) uint32_t Bs[2][BLOCK_N][kRowStride];

    const InT* __restrict__ a = static_cast<const InT*>(p.a);
    const InT* __restrict__ b = static_cast<const InT*>(p.b);
    const int tid = threadIdx.x;
    const int lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int warp_m0 = (warp / WARPS_N) * WARP_M;
    const int warp_n0 = (warp % WARPS_N) * WARP_N;
    const int tiles_m = ceil_div(p.m, BLOCK_M);
    const int k_lo = SPLIT ? blockIdx.z * split.k_chunk : 0;
    const int k_hi = SPLIT ? min(p.k, k_lo + split.k_chunk) : p.k;
    const int k_tiles = k_hi > k_lo ? ceil_div(k_hi - k_lo, BLOCK_K) : 0;
    float* __restrict__ partial = SPLIT ? split.partial + (int64_t)blockIdx.z * p.m * p.n : nullptr;
    const int n0 = blockIdx.x * BLOCK_N;

    for (int tile = blockIdx.y; tile < tiles_m; tile += gridDim.y) {
        const int m0 = tile * BLOCK_M;
        float4 a_stage[A_CHUNKS];
        float4 b_stage[B_CHUNKS];

        // Global -> registers: the k-tile from absolute k0.
        auto fetch = [&](int k0) {
            matmul_detail::fetch_tiles<TRANS_A, TRANS_B, BLOCK_M, BLOCK_N, BLOCK_K, THREADS>(
                a, b, p, m0, n0, k0, k_hi, tid, vector_a, vector_b, a_stage, b_stage);
        };

        // Registers -> shared buffer `buf` as rounded words, rows of the tile with K contiguous.
        // A chunk along k becomes consecutive words of one row; a chunk along m (n) is four
        // rows' values at one k, packed in k pairs for BF16 by the pack of a transposed read.
        auto stash_rows = [&](uint32_t (*tile_smem)[kRowStride], const float4& v, int row, int kk, bool along_k) {
            if (along_k) {
                uint32_t words[WORDS_PER_CHUNK];
                Traits::pack(v, words);
                uint32_t* dst = &tile_smem[row][kk / Traits::kValuesPerWord];
                if constexpr (WORDS_PER_CHUNK == 4) {
                    *reinterpret_cast<uint4*>(dst) = make_uint4(words[0], words[1], words[2], words[3]);
                } else {
                    *reinterpret_cast<uint2*>(dst) = make_uint2(words[0], words[1]);
                }
            } else {
                // v holds rows row..row+3 at one k: write each as the half (BF16) or word (TF32)
                // of its own row. 16-bit stores keep neighbouring k of other threads intact.
                const float vals[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    if constexpr (Traits::kValuesPerWord == 1) {
                        tile_smem[row + q][kk] = Traits::word(vals[q]);
                    } else {
                        reinterpret_cast<__nv_bfloat16*>(&tile_smem[row + q][0])[kk] = __float2bfloat16_rn(vals[q]);
                    }
                }
            }
        };
        auto stash = [&](int buf) {
#pragma unroll
            for (int i = 0; i < A_CHUNKS; ++i) {
                const int chunk = tid + i * THREADS;
                if (TRANS_A) {
                    const int kk = chunk / (BLOCK_M / 4), mm = chunk % (BLOCK_M / 4) * 4;
                    stash_rows(As[buf], a_stage[i], mm, kk, false);
                } else {
                    const int mm = chunk / (BLOCK_K / 4), kk = chunk % (BLOCK_K / 4) * 4;
                    stash_rows(As[buf], a_stage[i], mm, kk, true);
                }
            }
#pragma unroll
            for (int i = 0; i < B_CHUNKS; ++i) {
                const int chunk = tid + i * THREADS;
                if (TRANS_B) {
                    const int nn = chunk / (BLOCK_K / 4), kk = chunk % (BLOCK_K / 4) * 4;
                    stash_rows(Bs[buf], b_stage[i], nn, kk, true);
                } else {
                    const int kk = chunk / (BLOCK_N / 4), nn = chunk % (BLOCK_N / 4) * 4;
                    stash_rows(Bs[buf], b_stage[i], nn, kk, false);
                }
            }
        };

        float acc[MT][NT][4];
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

        matmul_detail::double_buffered_k_loop<BLOCK_K>(k_lo, k_tiles, fetch, stash, [&](int buf) {
#pragma unroll
            for (int step = 0; step < BLOCK_K / STEP_K; ++step) {
                const int w0 = step * 8;  // first word of this mma's k-step
                uint32_t a_frag[MT][4];
                uint32_t b_frag[NT][2];
#pragma unroll
                for (int i = 0; i < MT; ++i) {
                    const int r = warp_m0 + i * 16 + g;
                    a_frag[i][0] = As[buf][r][w0 + t];
                    a_frag[i][1] = As[buf][r + 8][w0 + t];
                    a_frag[i][2] = As[buf][r][w0 + t + 4];
                    a_frag[i][3] = As[buf][r + 8][w0 + t + 4];
                }
#pragma unroll
                for (int j = 0; j < NT; ++j) {
                    const int c = warp_n0 + j * 8 + g;
                    b_frag[j][0] = Bs[buf][c][w0 + t];
                    b_frag[j][1] = Bs[buf][c][w0 + t + 4];
                }
#pragma unroll
                for (int i = 0; i < MT; ++i)
#pragma unroll
                    for (int j = 0; j < NT; ++j) Traits::mma(acc[i][j], a_frag[i], b_frag[j]);
            }
        });

        // Epilogue: accumulator q of tile (i, j) is C[g + 8 * (q / 2)][2t + q % 2] of that tile.
        float* __restrict__ out = partial ? partial : p.c;
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = m0 + warp_m0 + i * 16 + g + 8 * half;
                if (row >= p.m) continue;
                float* out_row = out + (int64_t)row * p.n;
#pragma unroll
                for (int j = 0; j < NT; ++j) {
                    const int col = n0 + warp_n0 + j * 8 + 2 * t;
#pragma unroll
                    for (int q = 0; q < 2; ++q) {
                        if (col + q >= p.n) continue;
                        const float v = acc[i][j][2 * half + q];
                        out_row[col + q] =
                            partial ? v : matmul_detail::apply_epilogue(v, p.bias, col + q, p.activation);
                    }
                }
            }
        }
    }
}

// Tensor-core configurations, indexed by MatmulPlan::config.
//   0: 128 x 128 tile, 8 warps (2 x 4) of 64 x 32 - large products
//   1:  64 x  64 tile, 4 warps (2 x 2) of 32 x 32 - more blocks when C has few large tiles
constexpr int kConfigs = 2;

template <MatmulPrecision P, typename InT, int BLOCK_M, int BLOCK_N, int WARPS_M, int WARPS_N>
cudaError_t launch(const MatmulParams& p, const SplitK& split, cudaStream_t stream) {
    const int tiles_m = ceil_div(p.m, BLOCK_M);
    const dim3 grid(ceil_div(p.n, BLOCK_N), tiles_m < kMaxGridY ? tiles_m : kMaxGridY, split.slices);
    const dim3 block(32 * WARPS_M * WARPS_N);
    // Vector loads: 16 bytes of float or 8 of bfloat16, rows a multiple of 4 elements.
    const auto aligned = [](const void* ptr) {
        return reinterpret_cast<std::uintptr_t>(ptr) % (4 * sizeof(InT)) == 0;
    };
    const bool vector_a = aligned(p.a) && (p.trans_a ? p.m : p.k) % 4 == 0;
    const bool vector_b = aligned(p.b) && (p.trans_b ? p.k : p.n) % 4 == 0;
    cudaError_t status = cudaSuccess;
    matmul_detail::dispatch_layout(p.trans_a, p.trans_b, split.slices > 1, [&](auto ta, auto tb, auto sp) {
        status = launch_kernel(matmul_tc_kernel<P, InT, BLOCK_M, BLOCK_N, WARPS_M, WARPS_N, decltype(ta)::value,
                                                decltype(tb)::value, decltype(sp)::value>,
                               grid, block, 0, stream, p, split, vector_a, vector_b);
    });
    return status;
}

template <MatmulPrecision P, typename InT>
cudaError_t launch_config(const MatmulParams& p, int config, const SplitK& split, cudaStream_t stream) {
    switch (config) {
        case 0: return launch<P, InT, 128, 128, 2, 4>(p, split, stream);
        case 1: return launch<P, InT, 64, 64, 2, 2>(p, split, stream);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace

int matmul_tensor_core_config_count() { return kConfigs; }

void matmul_tensor_core_config_tile(int config, int* block_m, int* block_n) {
    *block_m = *block_n = config == 0 ? 128 : 64;
}

cudaError_t matmul_tensor_core(const MatmulParams& p, MatmulPrecision precision, int config, const SplitK& split,
                               cudaStream_t stream) {
    if (device_attribute<cudaDevAttrComputeCapabilityMajor>() < 8) return cudaErrorNotSupported;  // mma.sync TF32 / BF16 needs sm_80
    if (precision == MatmulPrecision::kTf32) {
        if (p.input != ElementType::kFloat32) return cudaErrorInvalidValue;
        return launch_config<MatmulPrecision::kTf32, float>(p, config, split, stream);
    }
    if (precision != MatmulPrecision::kBf16) return cudaErrorInvalidValue;
    if (p.input == ElementType::kBfloat16)
        return launch_config<MatmulPrecision::kBf16, __nv_bfloat16>(p, config, split, stream);
    return launch_config<MatmulPrecision::kBf16, float>(p, config, split, stream);
}

}  // namespace pyfast
