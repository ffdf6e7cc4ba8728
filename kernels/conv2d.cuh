// conv2d.cuh - host launchers of conv2d.cu: 2D convolution (cross-correlation) NCHW x OIHW.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pyfast {

struct Conv2dParams {
    std::int64_t n, c, h, w;  // input  N x C x H x W
    std::int64_t k, r, s;     // weight K x C x R x S
    std::int64_t p, q;        // output N x K x P x Q
    int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

// Numbering follows the versions in conv2d.cu's header; the Python layer names them.
enum class Conv2dVersion : int { kDirect = 0, kGemm = 1, kImplicit = 2 };

// Floats of scratch memory a version needs for these sizes (0: none), the same for every pass.
std::int64_t conv2d_workspace_size(const Conv2dParams& params, Conv2dVersion version);
// Whether the gemm / implicit versions' matrix dimensions fit their 32-bit GEMM (else they
// return an error).
bool conv2d_gemm_fits(const Conv2dParams& params);
bool conv2d_implicit_fits(const Conv2dParams& params);

// y = conv(x, w) (+ bias[k], bias may be nullptr).
cudaError_t conv2d(const float* x, const float* w, const float* bias, float* y, float* workspace,
                   const Conv2dParams& params, Conv2dVersion version, cudaStream_t stream);
// dx = gradient of conv with respect to x, given dy (N x K x P x Q).
cudaError_t conv2d_backward_input(const float* dy, const float* w, float* dx, float* workspace,
                                  const Conv2dParams& params, Conv2dVersion version, cudaStream_t stream);
// dw = gradient of conv with respect to w, given dy and x.
cudaError_t conv2d_backward_weight(const float* dy, const float* x, float* dw, float* workspace,
                                   const Conv2dParams& params, Conv2dVersion version, cudaStream_t stream);

}  // namespace pyfast
