// conv2d.cu - 2D convolution, NCHW x OIHW -> NCHW, forward and both gradients (float32).
// Math: y[n,k,p,q]  = sum_{c,r,s} x[n,c,p*sh-ph+r*dh, q*sw-pw+s*dw] * w[k,c,r,s] (+ b[k])
//       dx[n,c,i,j] = sum over (k,r,s) and the (p,q) with p*sh-ph+r*dh = i, q*sw-pw+s*dw = j of dy[n,k,p,q] w[k,c,r,s]
//       dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n,c,p*sh-ph+r*dh, q*sw-pw+s*dw]
// Versions: v0 direct - one thread per output element of each pass, a plain loop over its sum
//           (gather form everywhere: no atomics, deterministic). The readable on-GPU oracle.
//           v1 gemm - explicit im2col: the input's windows copied into a (C*R*S) x (N*P*Q) matrix
//           in a workspace, each pass then one call of the tiled matmul kernel (matmul.cu v1):
//             forward          Y'  (K x NPQ)   = W (K x CRS) @ cols
//             backward_weight  dW  (K x CRS)   = dY' @ cols^T
//             backward_input   dcols (CRS x NPQ) = W^T @ dY', then col2im (a gather: deterministic)
//           with dY' / Y' the K x NPQ transposes of dy / y (one pass each). Memory-hungry (the
//           workspace is CRS*NPQ + K*NPQ floats) but every FLOP runs in the register-blocked
//           GEMM.
//           v2 implicit - the same three products on matmul's tiled kernel (tiled_gemm.cuh), with
//           no matrix in memory: its tile loaders gather the im2col / dY' / W^T elements from the
//           NCHW / OIHW tensors as they stage a k-tile, and the epilogue scatters into NCHW.
//             forward         Y (K x NPQ)   = W (K x CRS) @ cols (CRS x NPQ), + bias[k]
//             backward_weight dW (K x CRS)  = dY' (K x NPQ) @ cols^T, K split over the SMs
//                                             (deterministic split-K: dW is small, NPQ long)
//             backward_input  dX (C x NHW)  = W' (C x KRS) @ taps (KRS x NHW), taps[(k,r,s)][(n,i,j)]
//                                             = dy[n,k,p,q] where p*sh - ph + r*dh = i and
//                                             q*sw - pw + s*dw = j, else 0 (a gather)
//           Workspace: only backward_weight's split-K partial sums (slices x K x CRS floats).
//           v3 tiled - direct convolution through shared-memory tiles, register-blocked, for
//           stride 1 / dilation 1 3x3 and 5x5 filters: its own file, conv2d_tiled.cu.
// Out-of-range taps (padding) contribute zero; every index is 64-bit.

#include "common/common.cuh"
#include "conv2d/conv2d.cuh"
#include "elementwise/elementwise.cuh"
#include "matmul/matmul.cuh"
#include "common/tiled_gemm.cuh"

namespace pyfast {
namespace {

__global__ void conv2d_direct_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                     const float* __restrict__ bias, float* __restrict__ y, Conv2dParams g) {
    const std::int64_t total = g.n * g.k * g.p * g.q;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t q = e % g.q, p = (e / g.q) % g.p, k = (e / (g.q * g.p)) % g.k, n = e / (g.q * g.p * g.k);
        float acc = bias != nullptr ? bias[k] : 0.0f;
        for (std::int64_t c = 0; c < g.c; ++c) {
            for (std::int64_t r = 0; r < g.r; ++r) {
                const std::int64_t i = p * g.stride_h - g.pad_h + r * g.dilation_h;
                if (i < 0 || i >= g.h) continue;
                for (std::int64_t s = 0; s < g.s; ++s) {
                    const std::int64_t j = q * g.stride_w - g.pad_w + s * g.dilation_w;
                    if (j < 0 || j >= g.w) continue;
                    acc = fmaf(x[((n * g.c + c) * g.h + i) * g.w + j], w[((k * g.c + c) * g.r + r) * g.s + s], acc);
                }
            }
        }
        y[e] = acc;
    }
}

// The output index o that tap t reaches from input position i, if any: o*stride - pad + t*dil = i.
__device__ __forceinline__ bool tap_source(std::int64_t i, std::int64_t t, int stride, int pad, int dilation,
                                           std::int64_t limit, std::int64_t* o) {
    const std::int64_t numerator = i + pad - t * dilation;
    if (numerator < 0 || numerator % stride != 0) return false;
    *o = numerator / stride;
    return *o < limit;
}

__global__ void conv2d_backward_input_direct_kernel(const float* __restrict__ dy, const float* __restrict__ w,
                                                    float* __restrict__ dx, Conv2dParams g) {
    const std::int64_t total = g.n * g.c * g.h * g.w;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t j = e % g.w, i = (e / g.w) % g.h, c = (e / (g.w * g.h)) % g.c, n = e / (g.w * g.h * g.c);
        float acc = 0.0f;
        for (std::int64_t k = 0; k < g.k; ++k) {
            for (std::int64_t r = 0; r < g.r; ++r) {
                std::int64_t p;
                if (!tap_source(i, r, g.stride_h, g.pad_h, g.dilation_h, g.p, &p)) continue;
                for (std::int64_t s = 0; s < g.s; ++s) {
                    std::int64_t q;
                    if (!tap_source(j, s, g.stride_w, g.pad_w, g.dilation_w, g.q, &q)) continue;
                    acc = fmaf(dy[((n * g.k + k) * g.p + p) * g.q + q], w[((k * g.c + c) * g.r + r) * g.s + s], acc);
                }
            }
        }
        dx[e] = acc;
    }
}

__global__ void conv2d_backward_weight_direct_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                                     float* __restrict__ dw, Conv2dParams g) {
    const std::int64_t total = g.k * g.c * g.r * g.s;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t s = e % g.s, r = (e / g.s) % g.r, c = (e / (g.s * g.r)) % g.c, k = e / (g.s * g.r * g.c);
        float acc = 0.0f;
        for (std::int64_t n = 0; n < g.n; ++n) {
            for (std::int64_t p = 0; p < g.p; ++p) {
                const std::int64_t i = p * g.stride_h - g.pad_h + r * g.dilation_h;
                if (i < 0 || i >= g.h) continue;
                for (std::int64_t q = 0; q < g.q; ++q) {
                    const std::int64_t j = q * g.stride_w - g.pad_w + s * g.dilation_w;
                    if (j < 0 || j >= g.w) continue;
                    acc = fmaf(dy[((n * g.k + k) * g.p + p) * g.q + q], x[((n * g.c + c) * g.h + i) * g.w + j], acc);
                }
            }
        }
        dw[e] = acc;
    }
}

// ---------------------------------------------------------------- v1: im2col + GEMM
// cols[(c*R + r)*S + s][(n*P + p)*Q + q] = x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw] (0 in padding).
// Consecutive threads write consecutive output pixels: coalesced stores.
__global__ void im2col_kernel(const float* __restrict__ x, float* __restrict__ cols, Conv2dParams g) {
    const std::int64_t npq = g.n * g.p * g.q;
    const std::int64_t total = g.c * g.r * g.s * npq;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t column = e % npq, row = e / npq;
        const std::int64_t q = column % g.q, p = (column / g.q) % g.p, n = column / (g.q * g.p);
        const std::int64_t s = row % g.s, r = (row / g.s) % g.r, c = row / (g.s * g.r);
        const std::int64_t i = p * g.stride_h - g.pad_h + r * g.dilation_h;
        const std::int64_t j = q * g.stride_w - g.pad_w + s * g.dilation_w;
        cols[e] = (i >= 0 && i < g.h && j >= 0 && j < g.w) ? x[((n * g.c + c) * g.h + i) * g.w + j] : 0.0f;
    }
}

// dx[n, c, i, j] = sum over the (r, s, p, q) whose tap lands on (i, j) of dcols[(c*R+r)*S+s][(n*P+p)*Q+q].
__global__ void col2im_kernel(const float* __restrict__ dcols, float* __restrict__ dx, Conv2dParams g) {
    const std::int64_t npq = g.n * g.p * g.q;
    const std::int64_t total = g.n * g.c * g.h * g.w;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t j = e % g.w, i = (e / g.w) % g.h, c = (e / (g.w * g.h)) % g.c, n = e / (g.w * g.h * g.c);
        float acc = 0.0f;
        for (std::int64_t r = 0; r < g.r; ++r) {
            std::int64_t p;
            if (!tap_source(i, r, g.stride_h, g.pad_h, g.dilation_h, g.p, &p)) continue;
            for (std::int64_t s = 0; s < g.s; ++s) {
                std::int64_t q;
                if (!tap_source(j, s, g.stride_w, g.pad_w, g.dilation_w, g.q, &q)) continue;
                acc += dcols[((c * g.r + r) * g.s + s) * npq + (n * g.p + p) * g.q + q];
            }
        }
        dx[e] = acc;
    }
}

// Between NCHW (N x K x PQ) and K x (N*PQ). to_nchw adds the bias on the way when given.
__global__ void nchw_to_knpq_kernel(const float* __restrict__ nchw, float* __restrict__ knpq, Conv2dParams g) {
    const std::int64_t pq = g.p * g.q, npq = g.n * pq;
    const std::int64_t total = g.k * npq;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t k = e / npq, column = e % npq, n = column / pq, position = column % pq;
        knpq[e] = nchw[(n * g.k + k) * pq + position];
    }
}

__global__ void knpq_to_nchw_kernel(const float* __restrict__ knpq, const float* __restrict__ bias,
                                    float* __restrict__ nchw, Conv2dParams g) {
    const std::int64_t pq = g.p * g.q, npq = g.n * pq;
    const std::int64_t total = g.k * npq;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t position = e % pq, k = (e / pq) % g.k, n = e / (pq * g.k);
        nchw[e] = knpq[k * npq + n * pq + position] + (bias != nullptr ? bias[k] : 0.0f);
    }
}

// The GEMM dimensions of a pass, and the workspace's two regions.
struct GemmView {
    std::int64_t crs, npq;
    float* cols;  // CRS x NPQ
    float* knpq;  // K x NPQ
};

GemmView gemm_view(const Conv2dParams& g, float* workspace) {
    const std::int64_t crs = g.c * g.r * g.s, npq = g.n * g.p * g.q;
    return GemmView{crs, npq, workspace, workspace + crs * npq};
}

cudaError_t gemm(const float* a, const float* b, float* c, std::int64_t m, std::int64_t n, std::int64_t k,
                 bool trans_a, bool trans_b, cudaStream_t stream) {
    const MatmulParams params{a, b, nullptr, c, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                              trans_a, trans_b, Activation::kNone};
    return matmul(params, MatmulVersion::kTiled, stream);
}

// ---------------------------------------------------------------- v2: implicit GEMM
// 32-bit sizes (conv2d_implicit_fits checks every GEMM dimension); offsets into tensors are 64-bit.
struct ConvShape {
    int n, c, h, w, k, r, s, p, q, sh, sw, ph, pw, dh, dw;
    int rs, pq, hw;
};

ConvShape conv_shape(const Conv2dParams& g) {
    return ConvShape{static_cast<int>(g.n), static_cast<int>(g.c), static_cast<int>(g.h), static_cast<int>(g.w),
                     static_cast<int>(g.k), static_cast<int>(g.r), static_cast<int>(g.s), static_cast<int>(g.p),
                     static_cast<int>(g.q), g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w,
                     static_cast<int>(g.r * g.s), static_cast<int>(g.p * g.q), static_cast<int>(g.h * g.w)};
}

// cols[crs][npq] = x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw], 0 in the padding.
__device__ __forceinline__ float gather_cols(const float* __restrict__ x, const ConvShape& g, int crs, int npq) {
    const int c = crs / g.rs, rs = crs - c * g.rs, r = rs / g.s, s = rs - r * g.s;
    const int n = npq / g.pq, pq = npq - n * g.pq, p = pq / g.q, q = pq - p * g.q;
    const int i = p * g.sh - g.ph + r * g.dh, j = q * g.sw - g.pw + s * g.dw;
    if (i < 0 || i >= g.h || j < 0 || j >= g.w) return 0.0f;
    return x[((int64_t)n * g.c + c) * g.hw + (int64_t)i * g.w + j];
}

// dY'[k][npq] = dy[n, k, p, q].
__device__ __forceinline__ float gather_dy(const float* __restrict__ dy, const ConvShape& g, int k, int npq) {
    const int n = npq / g.pq, pq = npq - n * g.pq;
    return dy[((int64_t)n * g.k + k) * g.pq + pq];
}

// W'[c][krs] = w[k, c, r, s] with krs = (k*R + r)*S + s.
__device__ __forceinline__ float gather_w(const float* __restrict__ w, const ConvShape& g, int c, int krs) {
    const int k = krs / g.rs, rs = krs - k * g.rs;
    return w[((int64_t)k * g.c + c) * g.rs + rs];
}

// taps[krs][nij] = dy[n, k, p, q] for the output (p, q) whose tap (r, s) lands on input (i, j), else 0.
__device__ __forceinline__ float gather_taps(const float* __restrict__ dy, const ConvShape& g, int krs, int nij) {
    const int k = krs / g.rs, rs = krs - k * g.rs, r = rs / g.s, s = rs - r * g.s;
    const int n = nij / g.hw, ij = nij - n * g.hw, i = ij / g.w, j = ij - i * g.w;
    const int p_num = i + g.ph - r * g.dh, q_num = j + g.pw - s * g.dw;
    if (p_num < 0 || q_num < 0 || p_num % g.sh != 0 || q_num % g.sw != 0) return 0.0f;
    const int p = p_num / g.sh, q = q_num / g.sw;
    if (p >= g.p || q >= g.q) return 0.0f;
    return dy[(((int64_t)n * g.k + k) * g.p + p) * g.q + q];
}

// Results C[row][col .. col+3] of a (channels x N*plane) GEMM into the NCHW tensor p.c, where
// column col is image col / plane, position col % plane; plus `bias`.
__device__ __forceinline__ void store_nchw4(const MatmulParams& p, int row, int col, const float (&acc)[4],
                                            int channels, int plane, float bias) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        if (col + q >= p.n) continue;
        const int n = (col + q) / plane, position = (col + q) - n * plane;
        p.c[((int64_t)n * channels + row) * plane + position] = acc[q] + bias;
    }
}

// The chunk of a k-tile that matmul_detail::fetch_tiles gives thread tid's chunk i, for an
// operand whose chunks run along k (A untransposed, B transposed): (row in the tile, k offset)
// - or along the tile's other dimension (A transposed, B untransposed): (k offset, column).
template <int TILE, int BLOCK_K>
__device__ __forceinline__ void chunk_along_k(int chunk, int* row, int* kk) {
    *row = chunk / (BLOCK_K / 4);
    *kk = chunk % (BLOCK_K / 4) * 4;
}
template <int TILE, int BLOCK_K>
__device__ __forceinline__ void chunk_across_k(int chunk, int* kk, int* column) {
    *kk = chunk / (TILE / 4);
    *column = chunk % (TILE / 4) * 4;
}

// Four values v[q] = gather(row, k0 + q) or gather(k, col + q), 0 where out of range.
template <typename Gather>
__device__ __forceinline__ float4 gather4(Gather gather, bool in_range, int limit, int first) {
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (in_range) {
#pragma unroll
        for (int q = 0; q < 4; ++q)
            if (first + q < limit) v[q] = gather(first + q);
    }
    return make_float4(v[0], v[1], v[2], v[3]);
}

// Forward: M = K, N = NPQ, K = CRS. A = W (row-major K x CRS), B = cols gathered; y NCHW.
struct ConvForwardTiles {
    template <bool TA, bool TB, bool SPLIT>
    static constexpr bool supports() { return !TA && !TB && !SPLIT; }
    const float* x;
    ConvShape g;

    template <bool TRANS_A, bool TRANS_B, int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREADS, int A_CHUNKS,
              int B_CHUNKS>
    __device__ __forceinline__ void fetch(const MatmulParams& p, int m0, int n0, int k0, int k_hi, int tid,
                                          bool vector_a, bool, float4 (&a_stage)[A_CHUNKS],
                                          float4 (&b_stage)[B_CHUNKS]) const {
        static_assert(!TRANS_A && !TRANS_B, "forward runs W @ cols");
        const float* w = static_cast<const float*>(p.a);
#pragma unroll
        for (int i = 0; i < A_CHUNKS; ++i) {
            int mm, kk;
            chunk_along_k<BLOCK_M, BLOCK_K>(tid + i * THREADS, &mm, &kk);
            a_stage[i] = matmul_detail::load4(w, p.k, p.m, k_hi, m0 + mm, k0 + kk, vector_a);
        }
#pragma unroll
        for (int i = 0; i < B_CHUNKS; ++i) {
            int kk, nn;
            chunk_across_k<BLOCK_N, BLOCK_K>(tid + i * THREADS, &kk, &nn);
            const int crs = k0 + kk;
            b_stage[i] = gather4([&](int npq) { return gather_cols(x, g, crs, npq); }, crs < k_hi, p.n, n0 + nn);
        }
    }

    template <bool SPLIT>
    __device__ __forceinline__ void store4(const MatmulParams& p, float*, int row, int col, const float (&acc)[4],
                                           bool) const {
        static_assert(!SPLIT, "the forward pass does not split K");
        store_nchw4(p, row, col, acc, g.k, g.pq, p.bias != nullptr ? p.bias[row] : 0.0f);
    }
};

// Weight gradient: M = K, N = CRS, K = NPQ. A = dY' gathered, op(B) = cols^T gathered; dW is a
// plain K x CRS matrix (OIHW), so the results store as matmul's do (split-K included).
struct ConvWeightGradTiles {
    template <bool TA, bool TB, bool SPLIT>
    static constexpr bool supports() { return !TA && TB; }
    const float* x;
    const float* dy;
    ConvShape g;

    template <bool TRANS_A, bool TRANS_B, int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREADS, int A_CHUNKS,
              int B_CHUNKS>
    __device__ __forceinline__ void fetch(const MatmulParams& p, int m0, int n0, int k0, int k_hi, int tid, bool, bool,
                                          float4 (&a_stage)[A_CHUNKS], float4 (&b_stage)[B_CHUNKS]) const {
        static_assert(!TRANS_A && TRANS_B, "the weight gradient runs dY' @ cols^T");
#pragma unroll
        for (int i = 0; i < A_CHUNKS; ++i) {
            int mm, kk;
            chunk_along_k<BLOCK_M, BLOCK_K>(tid + i * THREADS, &mm, &kk);
            const int k = m0 + mm;
            a_stage[i] = gather4([&](int npq) { return gather_dy(dy, g, k, npq); }, k < p.m, k_hi, k0 + kk);
        }
#pragma unroll
        for (int i = 0; i < B_CHUNKS; ++i) {
            int nn, kk;
            chunk_along_k<BLOCK_N, BLOCK_K>(tid + i * THREADS, &nn, &kk);
            const int crs = n0 + nn;
            b_stage[i] = gather4([&](int npq) { return gather_cols(x, g, crs, npq); }, crs < p.n, k_hi, k0 + kk);
        }
    }

    template <bool SPLIT>
    __device__ __forceinline__ void store4(const MatmulParams& p, float* out, int row, int col, const float (&acc)[4],
                                           bool vector_c) const {
        tiled_gemm::MatrixTiles{}.store4<SPLIT>(p, out, row, col, acc, vector_c);
    }
};

// Input gradient: M = C, N = NHW, K = KRS. A = W' gathered, B = taps gathered; dx NCHW.
struct ConvInputGradTiles {
    template <bool TA, bool TB, bool SPLIT>
    static constexpr bool supports() { return !TA && !TB && !SPLIT; }
    const float* w;
    const float* dy;
    ConvShape g;

    template <bool TRANS_A, bool TRANS_B, int BLOCK_M, int BLOCK_N, int BLOCK_K, int THREADS, int A_CHUNKS,
              int B_CHUNKS>
    __device__ __forceinline__ void fetch(const MatmulParams& p, int m0, int n0, int k0, int k_hi, int tid, bool, bool,
                                          float4 (&a_stage)[A_CHUNKS], float4 (&b_stage)[B_CHUNKS]) const {
        static_assert(!TRANS_A && !TRANS_B, "the input gradient runs W' @ taps");
#pragma unroll
        for (int i = 0; i < A_CHUNKS; ++i) {
            int mm, kk;
            chunk_along_k<BLOCK_M, BLOCK_K>(tid + i * THREADS, &mm, &kk);
            const int c = m0 + mm;
            a_stage[i] = gather4([&](int krs) { return gather_w(w, g, c, krs); }, c < p.m, k_hi, k0 + kk);
        }
#pragma unroll
        for (int i = 0; i < B_CHUNKS; ++i) {
            int kk, nn;
            chunk_across_k<BLOCK_N, BLOCK_K>(tid + i * THREADS, &kk, &nn);
            const int krs = k0 + kk;
            b_stage[i] = gather4([&](int nij) { return gather_taps(dy, g, krs, nij); }, krs < k_hi, p.n, n0 + nn);
        }
    }

    template <bool SPLIT>
    __device__ __forceinline__ void store4(const MatmulParams& p, float*, int row, int col, const float (&acc)[4],
                                           bool) const {
        static_assert(!SPLIT, "the input gradient does not split K");
        store_nchw4(p, row, col, acc, g.c, g.hw, 0.0f);
    }
};

// The GEMM of one implicit pass: C (m x n) over k, with `a` / `c` passed through MatmulParams.
MatmulParams implicit_gemm(const float* a, float* c, const float* bias, std::int64_t m, std::int64_t n,
                           std::int64_t k, bool trans_b) {
    return MatmulParams{a, nullptr, bias, c, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                        false, trans_b, Activation::kNone};
}

// backward_weight's K split (NPQ, long where dW is small): matmul's rule, on the tiles of the
// configuration launch_default_config picks.
SplitK weight_grad_split(const Conv2dParams& g, float* workspace) {
    const std::int64_t m = g.k, n = g.c * g.r * g.s, k = g.n * g.p * g.q;
    const int sms = sm_count();
    const int* tile = tiled_gemm::kConfigTiles[tiled_gemm::default_config(static_cast<int>(m), static_cast<int>(n), sms)];
    const std::int64_t tiles = ceil_div<std::int64_t>(m, tile[0]) * ceil_div<std::int64_t>(n, tile[1]);
    return tiled_gemm::split_k(static_cast<int>(k), tiled_gemm::rule_splits(tiles, k, sms), workspace);
}

}  // namespace

bool conv2d_gemm_fits(const Conv2dParams& g) {
    const std::int64_t limit = 0x7fffffff;  // the GEMM's dimensions are 32-bit
    return g.c * g.r * g.s <= limit && g.n * g.p * g.q <= limit && g.k <= limit;
}

bool conv2d_implicit_fits(const Conv2dParams& g) {
    const std::int64_t limit = 0x7fffffff;  // 32-bit GEMM dimensions and tensor sizes within a plane of work
    return conv2d_gemm_fits(g) && g.n * g.h * g.w <= limit && g.k * g.r * g.s <= limit && g.c <= limit;
}

std::int64_t conv2d_workspace_size(const Conv2dParams& g, Conv2dVersion version, Conv2dPass pass, int config) {
    if (version == Conv2dVersion::kGemm) return (g.c * g.r * g.s + g.k) * (g.n * g.p * g.q);
    if (pass != Conv2dPass::kBackwardWeight) return 0;
    if (version == Conv2dVersion::kImplicit) {
        const SplitK split = weight_grad_split(g, nullptr);
        return split.slices > 1 ? split.slices * g.k * g.c * g.r * g.s : 0;
    }
    if (version == Conv2dVersion::kTiled) return conv2d_tiled_workspace_size(g, config);
    return 0;
}

cudaError_t conv2d(const float* x, const float* w, const float* bias, float* y, float* workspace,
                   const Conv2dParams& g, Conv2dVersion version, int config, bool relu, cudaStream_t stream) {
    if (version == Conv2dVersion::kTiled) return conv2d_tiled(x, w, bias, y, g, relu, config, stream);
    if (version == Conv2dVersion::kDirect) {
        PYFAST_TRY(launch_grid_stride(conv2d_direct_kernel, g.n * g.k * g.p * g.q, stream, x, w, bias, y, g));
    } else if (version == Conv2dVersion::kImplicit) {
        if (!conv2d_implicit_fits(g)) return cudaErrorInvalidValue;
        const MatmulParams p = implicit_gemm(w, y, bias, g.k, g.n * g.p * g.q, g.c * g.r * g.s, false);
        const bool vector_w = is_aligned16(w) && p.k % 4 == 0;
        PYFAST_TRY(tiled_gemm::launch_default_config(p, tiled_gemm::split_k(p.k, 1, nullptr),
                                                     ConvForwardTiles{x, conv_shape(g)}, vector_w, false, false,
                                                     stream));
    } else {
        if (version != Conv2dVersion::kGemm || !conv2d_gemm_fits(g)) return cudaErrorInvalidValue;
        const GemmView v = gemm_view(g, workspace);
        PYFAST_TRY(launch_grid_stride(im2col_kernel, v.crs * v.npq, stream, x, v.cols, g));
        PYFAST_TRY(gemm(w, v.cols, v.knpq, g.k, v.npq, v.crs, false, false, stream));
        PYFAST_TRY(launch_grid_stride(knpq_to_nchw_kernel, g.k * v.npq, stream, v.knpq, bias, y, g));
    }
    // Versions without a fused epilogue: ReLU in place, a second pass over y.
    return relu ? pyfast::relu(y, y, g.n * g.k * g.p * g.q, stream) : cudaSuccess;
}

cudaError_t conv2d_backward_input(const float* dy, const float* w, float* dx, float* workspace,
                                  const Conv2dParams& g, Conv2dVersion version, int config, cudaStream_t stream) {
    if (version == Conv2dVersion::kTiled) return conv2d_tiled_backward_input(dy, w, dx, g, config, stream);
    if (version == Conv2dVersion::kDirect) {
        return launch_grid_stride(conv2d_backward_input_direct_kernel, g.n * g.c * g.h * g.w, stream, dy, w, dx, g);
    }
    if (version == Conv2dVersion::kImplicit) {
        if (!conv2d_implicit_fits(g)) return cudaErrorInvalidValue;
        const MatmulParams p = implicit_gemm(w, dx, nullptr, g.c, g.n * g.h * g.w, g.k * g.r * g.s, false);
        return tiled_gemm::launch_default_config(p, tiled_gemm::split_k(p.k, 1, nullptr),
                                                 ConvInputGradTiles{w, dy, conv_shape(g)}, false, false, false, stream);
    }
    if (version != Conv2dVersion::kGemm || !conv2d_gemm_fits(g)) return cudaErrorInvalidValue;
    const GemmView v = gemm_view(g, workspace);
    PYFAST_TRY(launch_grid_stride(nchw_to_knpq_kernel, g.k * v.npq, stream, dy, v.knpq, g));
    PYFAST_TRY(gemm(w, v.knpq, v.cols, v.crs, v.npq, g.k, true, false, stream));  // W^T @ dY'
    return launch_grid_stride(col2im_kernel, g.n * g.c * g.h * g.w, stream, v.cols, dx, g);
}

cudaError_t conv2d_backward_weight(const float* dy, const float* x, float* dw, float* db, float* workspace,
                                   const Conv2dParams& g, Conv2dVersion version, int config, cudaStream_t stream) {
    if (version == Conv2dVersion::kTiled) {
        return conv2d_tiled_backward_weight(dy, x, dw, db, workspace, g, config, stream);
    }
    if (db != nullptr) return cudaErrorInvalidValue;  // only the tiled version folds the bias gradient in
    if (version == Conv2dVersion::kDirect) {
        return launch_grid_stride(conv2d_backward_weight_direct_kernel, g.k * g.c * g.r * g.s, stream, dy, x, dw, g);
    }
    if (version == Conv2dVersion::kImplicit) {
        if (!conv2d_implicit_fits(g)) return cudaErrorInvalidValue;
        const MatmulParams p = implicit_gemm(dy, dw, nullptr, g.k, g.c * g.r * g.s, g.n * g.p * g.q, true);
        const SplitK split = weight_grad_split(g, workspace);
        if (split.slices > 1 && workspace == nullptr) return cudaErrorInvalidValue;
        const bool vector_c = is_aligned16(split.slices > 1 ? workspace : dw) && p.n % 4 == 0;
        PYFAST_TRY(tiled_gemm::launch_default_config(p, split,
                                             ConvWeightGradTiles{x, dy, conv_shape(g)}, false, false, vector_c,
                                             stream));
        if (split.slices == 1) return cudaSuccess;
        return tiled_gemm::reduce_slices(split, p.m, p.n, nullptr, Activation::kNone, dw, stream);
    }
    if (version != Conv2dVersion::kGemm || !conv2d_gemm_fits(g)) return cudaErrorInvalidValue;
    const GemmView v = gemm_view(g, workspace);
    PYFAST_TRY(launch_grid_stride(im2col_kernel, v.crs * v.npq, stream, x, v.cols, g));
    PYFAST_TRY(launch_grid_stride(nchw_to_knpq_kernel, g.k * v.npq, stream, dy, v.knpq, g));
    return gemm(v.knpq, v.cols, dw, g.k, v.crs, v.npq, false, true, stream);  // dY' @ cols^T
}

}  // namespace pyfast
