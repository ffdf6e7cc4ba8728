// fused.cuh - host launchers of fused.cu: whole training runs in one kernel launch.
#pragma once

#include <cuda_runtime.h>

namespace pyfast {

// Full-batch linear regression: `epochs` steps of SGD (no momentum) on the mean squared error
// of y ~ x @ weight^T + bias. weight and bias are updated in place.
struct LinearFitParams {
    const float* x;  // n x f
    const float* y;  // n x o
    float* weight;   // o x f
    float* bias;     // o
    float* losses;   // epochs values (the loss before each step), or nullptr
    int n, f, o, epochs;
    float lr;
};

// The whole problem lives in one block's shared memory: n * o + o * (f + 1) floats at most
constexpr int kLinearFitMaxFloats = 12000;  // 48000 bytes: under the 48 KB a block gets without opt-in

// One warp runs it (v1) for one output, f <= 8 and n <= 1024; one block (v0) otherwise.
bool linear_fit_uses_warp(const LinearFitParams& params);
cudaError_t linear_mse_sgd_fit(const LinearFitParams& params, cudaStream_t stream);

}  // namespace pyfast
