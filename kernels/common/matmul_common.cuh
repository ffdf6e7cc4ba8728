// matmul_common.cuh - device helpers shared by the matmul kernels (matmul.cu, matmul_tc.cu):
// guarded 4-element loads of a tile, the staging of an A / B k-tile into registers, the
// bias + ReLU epilogue, and the host-side dispatch over transposes and split-K.
#pragma once

#include <cuda_bf16.h>

#include <type_traits>

#include "common/common.cuh"
#include "matmul/matmul.cuh"

namespace pyfast {
namespace matmul_detail {

// ReLU keeps NaN (NaN < 0 is false), as torch.relu does.
__device__ __forceinline__ float apply_epilogue(float v, const float* __restrict__ bias, int col,
                                                Activation activation) {
    if (bias != nullptr) v += __ldg(bias + col);
    if (activation == Activation::kRelu) v = v < 0.0f ? 0.0f : v;
    return v;
}

// Four consecutive elements (as float) of row `row` of a row-major matrix with `ld` elements
// per row, from column `col` (a multiple of 4); zeros where row >= rows or col >= cols (the
// bounds may stop short of the stored matrix: a split-K slice ends inside it). One vector load
// (16 bytes of float, 8 of bfloat16) when the caller established that the base is aligned to
// that and ld % 4 == 0 (cols is then ld or a multiple of 4, so the chunk is whole).
__device__ __forceinline__ float4 load4(const float* __restrict__ matrix, int ld, int rows, int cols, int row, int col,
                                        bool vector_ok) {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (row >= rows || col >= cols) return v;
    const float* p = matrix + (int64_t)row * ld + col;
    // Inputs are read-only for the whole kernel: __ldg takes the non-coherent (read-only) path.
    if (vector_ok) return __ldg(reinterpret_cast<const float4*>(p));
    v.x = __ldg(p);
    if (col + 1 < cols) v.y = __ldg(p + 1);
    if (col + 2 < cols) v.z = __ldg(p + 2);
    if (col + 3 < cols) v.w = __ldg(p + 3);
    return v;
}

__device__ __forceinline__ float4 load4(const __nv_bfloat16* __restrict__ matrix, int ld, int rows, int cols, int row,
                                        int col, bool vector_ok) {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (row >= rows || col >= cols) return v;
    const __nv_bfloat16* p = matrix + (int64_t)row * ld + col;
    if (vector_ok) {
        const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
        const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
        const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
        return make_float4(lo.x, lo.y, hi.x, hi.y);
    }
    v.x = __bfloat162float(__ldg(p));
    if (col + 1 < cols) v.y = __bfloat162float(__ldg(p + 1));
    if (col + 2 < cols) v.z = __bfloat162float(__ldg(p + 2));
    if (col + 3 < cols) v.w = __bfloat162float(__ldg(p + 3));
    return v;
}

// Global -> registers: the BLOCK_M x BLOCK_K tile of op(A) at (m0, k0) and the BLOCK_K x BLOCK_N
// tile of op(B) at (k0, n0), as chunks of 4 elements along each stored matrix's contiguous
// dimension; K ends at k_hi. Chunk i of thread tid is chunk number tid + i * THREADS.
template <bool TRANS_A, bool TRANS_B, int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREADS, int A_CHUNKS,
          int B_CHUNKS, typename T>
__device__ __forceinline__ void fetch_tiles(const T* a, const T* b, const MatmulParams& p, int m0, int n0, int k0,
                                            int k_hi, int tid, bool vector_a, bool vector_b, float4 (&a_stage)[A_CHUNKS],
                                            float4 (&b_stage)[B_CHUNKS]) {
#pragma unroll
    for (int i = 0; i < A_CHUNKS; ++i) {
        const int chunk = tid + i * THREADS;
        if (TRANS_A) {  // stored K x M
            const int kk = chunk / (BLOCK_M / 4), mm = chunk % (BLOCK_M / 4) * 4;
            a_stage[i] = load4(a, p.m, k_hi, p.m, k0 + kk, m0 + mm, vector_a);
        } else {  // stored M x K
            const int mm = chunk / (BLOCK_K / 4), kk = chunk % (BLOCK_K / 4) * 4;
            a_stage[i] = load4(a, p.k, p.m, k_hi, m0 + mm, k0 + kk, vector_a);
        }
    }
#pragma unroll
    for (int i = 0; i < B_CHUNKS; ++i) {
        const int chunk = tid + i * THREADS;
        if (TRANS_B) {  // stored N x K
            const int nn = chunk / (BLOCK_K / 4), kk = chunk % (BLOCK_K / 4) * 4;
            b_stage[i] = load4(b, p.k, p.n, k_hi, n0 + nn, k0 + kk, vector_b);
        } else {  // stored K x N
            const int kk = chunk / (BLOCK_N / 4), nn = chunk % (BLOCK_N / 4) * 4;
            b_stage[i] = load4(b, p.n, k_hi, p.n, k0 + kk, n0 + nn, vector_b);
        }
    }
}

// The k-loop both tiled kernels share: shared memory double-buffered, one barrier per k-tile.
// fetch(k0) loads the k-tile at absolute k0 into registers, stash(buf) writes them to shared
// buffer `buf`, compute(buf) multiplies buffer `buf`. The next tile's global loads are issued
// before the current tile's math so their latency hides behind it; stash(buf ^ 1) overwrites
// the buffer read in the previous iteration, which ended with a barrier.
template <int BLOCK_K, typename Fetch, typename Stash, typename Compute>
__device__ __forceinline__ void double_buffered_k_loop(int k_lo, int k_tiles, Fetch&& fetch, Stash&& stash,
                                                       Compute&& compute) {
    if (k_tiles > 0) {
        fetch(k_lo);
        stash(0);
    }
    __syncthreads();
    for (int t = 0; t < k_tiles; ++t) {
        const int buf = t & 1;
        if (t + 1 < k_tiles) fetch(k_lo + (t + 1) * BLOCK_K);
        compute(buf);
        if (t + 1 < k_tiles) stash(buf ^ 1);
        __syncthreads();
    }
}

// Calls launch(trans_a, trans_b, split) with each as a std::integral_constant<bool, ...>, so
// the caller instantiates its kernel for the one layout this call has.
template <typename Launch>
void dispatch_layout(bool trans_a, bool trans_b, bool split, Launch&& launch) {
    auto with_split = [&](auto ta, auto tb) {
        if (split) {
            launch(ta, tb, std::true_type{});
        } else {
            launch(ta, tb, std::false_type{});
        }
    };
    if (trans_a && trans_b) {
        with_split(std::true_type{}, std::true_type{});
    } else if (trans_a) {
        with_split(std::true_type{}, std::false_type{});
    } else if (trans_b) {
        with_split(std::false_type{}, std::true_type{});
    } else {
        with_split(std::false_type{}, std::false_type{});
    }
}

}  // namespace matmul_detail
}  // namespace pyfast
