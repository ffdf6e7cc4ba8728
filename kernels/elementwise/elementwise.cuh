// elementwise.cuh - host launchers of elementwise.cu: ReLU and its gradient, bias add and
// bias gradient. Tensors are viewed as (outer, channels, inner): (N, C) matrices have
// inner = 1, NCHW images have outer = N, inner = H * W.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pyfast {

struct ChannelShape {
    std::int64_t outer;     // N
    std::int64_t channels;  // C: the axis the bias runs along
    std::int64_t inner;     // product of the dimensions after C (1 for a matrix)
};

// y = x < 0 ? 0 : x (NaN propagates). y may be x.
cudaError_t relu(const float* x, float* y, std::int64_t n, cudaStream_t stream);

// dx = y <= 0 ? 0 : dy, where y = relu(x) (the same rule as torch's threshold_backward).
cudaError_t relu_backward(const float* dy, const float* y, float* dx, std::int64_t n, cudaStream_t stream);

// y[o, c, i] = x[o, c, i] + bias[c]. y may be x.
cudaError_t add_bias(const float* x, const float* bias, float* y, ChannelShape shape, cudaStream_t stream);

// db[c] = sum over o, i of dy[o, c, i]; a fixed summation order (deterministic).
// `workspace` holds bias_grad_workspace_size(shape) floats (nullptr when that is 0).
std::int64_t bias_grad_workspace_size(ChannelShape shape);
cudaError_t bias_grad(const float* dy, float* db, float* workspace, ChannelShape shape, cudaStream_t stream);

}  // namespace pyfast
