// pool.cuh - host launchers of pool.cu: 2D max and average pooling, forward and backward (NCHW).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pyfast {

struct Pool2dParams {
    std::int64_t planes;  // N * C
    std::int64_t h, w;    // input plane
    std::int64_t p, q;    // output plane
    int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
    bool count_include_pad;  // average pooling: divide by the window's size in the padded plane
    int dilation_h = 1, dilation_w = 1;  // max pooling: taps p * stride - pad + i * dilation
    int divisor = 0;                     // average pooling: divide by this instead (0: none)
};

// Windows: output p covers input rows p * stride - pad + i * dilation, i in [0, kernel) (PyTorch's;
// the output size, ceil_mode's included, is the caller's: a window may reach past the padded
// input, and what lies outside the input never counts).

// y = max of each window, indices = flat h * W + w of the winner in its input plane
// (NaN wins, the last NaN of the window; ties keep the first maximum). With bias (per channel,
// planes = N * channels) and / or relu, each value is pooled as relu(x + bias[c]): a conv
// output's bias, ReLU and pooling in one pass (needs each plane's sizes below 2^31).
cudaError_t max_pool2d(const float* x, float* y, long long* indices, const Pool2dParams& params,
                       cudaStream_t stream, const float* bias = nullptr, int channels = 0, bool relu = false);
// dx[plane, i] = sum of dy over the windows whose index is i (windows may overlap). Uses only
// planes, h, w, p and q of params; indices outside the plane are skipped.
cudaError_t max_pool2d_backward(const float* dy, const long long* indices, float* dx, const Pool2dParams& params,
                                cudaStream_t stream);
// The same gradient from the window geometry (all of params): each dx element gathers dy from
// the windows that hold it and recorded it as their maximum, in a fixed order, written once (no
// memset). relu_output (the pooled y of a ReLU's output, or nullptr) also applies the ReLU's
// backward: windows whose maximum is <= 0 pass nothing. Indices outside their window count
// nowhere. Needs each plane's sizes below 2^31 (else cudaErrorInvalidValue).
cudaError_t max_pool2d_backward_gather(const float* dy, const long long* indices, const float* relu_output, float* dx,
                                       const Pool2dParams& params, cudaStream_t stream);
cudaError_t avg_pool2d(const float* x, float* y, const Pool2dParams& params, cudaStream_t stream);
cudaError_t avg_pool2d_backward(const float* dy, float* dx, const Pool2dParams& params, cudaStream_t stream);

}  // namespace pyfast
