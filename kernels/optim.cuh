// optim.cuh - host launchers of optim.cu: fused, in-place optimizer updates over lists of
// parameter tensors (a few launches for any number of tensors).
#pragma once

#include <cstdint>
#include <vector>
#include <cuda_runtime.h>

namespace pyfast {

// One entry per parameter tensor; all pointers address `size` floats.
struct ParamSlot {
    float* param;
    const float* grad;
    float* state0;  // SGD: momentum buffer (nullptr without momentum); Adam: exp_avg
    float* state1;  // Adam: exp_avg_sq
    std::int64_t size;
};

struct SgdParams {
    float lr, momentum, weight_decay;
    bool nesterov;
};

// PyTorch's torch.optim.SGD with dampening 0: a zero momentum buffer makes the first step
// take buf = grad, as PyTorch's lazily created buffer does.
cudaError_t sgd_step(const std::vector<ParamSlot>& slots, const SgdParams& params, cudaStream_t stream);

struct AdamParams {
    float lr, beta1, beta2, eps, weight_decay;
    bool decoupled;           // AdamW: param *= 1 - lr * weight_decay; else grad += weight_decay * param
    float step_size;          // lr / (1 - beta1^step), computed in double on the host
    float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
};

// PyTorch's torch.optim.Adam / AdamW update, in the same float32 order as its fused kernel.
cudaError_t adam_step(const std::vector<ParamSlot>& slots, const AdamParams& params, cudaStream_t stream);

}  // namespace pyfast
