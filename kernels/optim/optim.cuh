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
    // When set, {step_size, bias_correction2_sqrt} are read from this device array instead
    // (written by adam_schedule on the same stream), so the update can replay in a CUDA graph.
    const float* schedule = nullptr;
};

// PyTorch's torch.optim.Adam / AdamW update, in the same float32 order as its fused kernel.
cudaError_t adam_step(const std::vector<ParamSlot>& slots, const AdamParams& params, cudaStream_t stream);

// The device-side step count of a capturable Adam: ++*step, then schedule[0] = lr / (1 -
// beta1^step) and schedule[1] = sqrt(1 - beta2^step), in double as the host computes them.
cudaError_t adam_schedule(long long* step, double lr, double beta1, double beta2, float* schedule,
                          cudaStream_t stream);

}  // namespace pyfast
