// conv2d.cu - 2D convolution, NCHW x OIHW -> NCHW, forward and both gradients (float32).
// Math: y[n,k,p,q]  = sum_{c,r,s} x[n,c,p*sh-ph+r*dh, q*sw-pw+s*dw] * w[k,c,r,s] (+ b[k])
//       dx[n,c,i,j] = sum over (k,r,s) and the (p,q) with p*sh-ph+r*dh = i, q*sw-pw+s*dw = j of dy[n,k,p,q] w[k,c,r,s]
//       dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n,c,p*sh-ph+r*dh, q*sw-pw+s*dw]
// Versions: v0 direct - one thread per output element of each pass, a plain loop over its sum
//           (gather form everywhere: no atomics, deterministic). The readable on-GPU oracle;
//           the implicit-GEMM fast path is the next version.
// Out-of-range taps (padding) contribute zero; every index is 64-bit.

#include "common.cuh"
#include "conv2d.cuh"

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

}  // namespace

cudaError_t conv2d(const float* x, const float* w, const float* bias, float* y, const Conv2dParams& g,
                   Conv2dVersion version, cudaStream_t stream) {
    if (version != Conv2dVersion::kDirect) return cudaErrorInvalidValue;
    return launch_grid_stride(conv2d_direct_kernel, g.n * g.k * g.p * g.q, stream, x, w, bias, y, g);
}

cudaError_t conv2d_backward_input(const float* dy, const float* w, float* dx, const Conv2dParams& g,
                                  Conv2dVersion version, cudaStream_t stream) {
    if (version != Conv2dVersion::kDirect) return cudaErrorInvalidValue;
    return launch_grid_stride(conv2d_backward_input_direct_kernel, g.n * g.c * g.h * g.w, stream, dy, w, dx, g);
}

cudaError_t conv2d_backward_weight(const float* dy, const float* x, float* dw, const Conv2dParams& g,
                                   Conv2dVersion version, cudaStream_t stream) {
    if (version != Conv2dVersion::kDirect) return cudaErrorInvalidValue;
    return launch_grid_stride(conv2d_backward_weight_direct_kernel, g.k * g.c * g.r * g.s, stream, dy, x, dw, g);
}

}  // namespace pyfast
