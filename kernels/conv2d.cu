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
//           GEMM; the implicit-GEMM version that skips the workspace is the next step.
// Out-of-range taps (padding) contribute zero; every index is 64-bit.

#include "common.cuh"
#include "conv2d.cuh"
#include "matmul.cuh"

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

#define PYFAST_TRY(call)                          \
    do {                                          \
        const cudaError_t status_ = (call);       \
        if (status_ != cudaSuccess) return status_; \
    } while (0)

}  // namespace

bool conv2d_gemm_fits(const Conv2dParams& g) {
    const std::int64_t limit = 0x7fffffff;  // the GEMM's dimensions are 32-bit
    return g.c * g.r * g.s <= limit && g.n * g.p * g.q <= limit && g.k <= limit;
}

std::int64_t conv2d_workspace_size(const Conv2dParams& g, Conv2dVersion version) {
    if (version != Conv2dVersion::kGemm) return 0;
    return (g.c * g.r * g.s + g.k) * (g.n * g.p * g.q);
}

cudaError_t conv2d(const float* x, const float* w, const float* bias, float* y, float* workspace,
                   const Conv2dParams& g, Conv2dVersion version, cudaStream_t stream) {
    if (version == Conv2dVersion::kDirect) {
        return launch_grid_stride(conv2d_direct_kernel, g.n * g.k * g.p * g.q, stream, x, w, bias, y, g);
    }
    if (version != Conv2dVersion::kGemm || !conv2d_gemm_fits(g)) return cudaErrorInvalidValue;
    const GemmView v = gemm_view(g, workspace);
    PYFAST_TRY(launch_grid_stride(im2col_kernel, v.crs * v.npq, stream, x, v.cols, g));
    PYFAST_TRY(gemm(w, v.cols, v.knpq, g.k, v.npq, v.crs, false, false, stream));
    return launch_grid_stride(knpq_to_nchw_kernel, g.k * v.npq, stream, v.knpq, bias, y, g);
}

cudaError_t conv2d_backward_input(const float* dy, const float* w, float* dx, float* workspace,
                                  const Conv2dParams& g, Conv2dVersion version, cudaStream_t stream) {
    if (version == Conv2dVersion::kDirect) {
        return launch_grid_stride(conv2d_backward_input_direct_kernel, g.n * g.c * g.h * g.w, stream, dy, w, dx, g);
    }
    if (version != Conv2dVersion::kGemm || !conv2d_gemm_fits(g)) return cudaErrorInvalidValue;
    const GemmView v = gemm_view(g, workspace);
    PYFAST_TRY(launch_grid_stride(nchw_to_knpq_kernel, g.k * v.npq, stream, dy, v.knpq, g));
    PYFAST_TRY(gemm(w, v.knpq, v.cols, v.crs, v.npq, g.k, true, false, stream));  // W^T @ dY'
    return launch_grid_stride(col2im_kernel, g.n * g.c * g.h * g.w, stream, v.cols, dx, g);
}

cudaError_t conv2d_backward_weight(const float* dy, const float* x, float* dw, float* workspace,
                                   const Conv2dParams& g, Conv2dVersion version, cudaStream_t stream) {
    if (version == Conv2dVersion::kDirect) {
        return launch_grid_stride(conv2d_backward_weight_direct_kernel, g.k * g.c * g.r * g.s, stream, dy, x, dw, g);
    }
    if (version != Conv2dVersion::kGemm || !conv2d_gemm_fits(g)) return cudaErrorInvalidValue;
    const GemmView v = gemm_view(g, workspace);
    PYFAST_TRY(launch_grid_stride(im2col_kernel, v.crs * v.npq, stream, x, v.cols, g));
    PYFAST_TRY(launch_grid_stride(nchw_to_knpq_kernel, g.k * v.npq, stream, dy, v.knpq, g));
    return gemm(v.knpq, v.cols, dw, g.k, v.crs, v.npq, false, true, stream);  // dY' @ cols^T
}

}  // namespace pyfast
