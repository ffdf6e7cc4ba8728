// loss.cuh - host launchers of loss.cu: fused losses with their gradients, softmax family,
// accuracy. Every reduction has a fixed order: results are bitwise repeatable.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pyfast {

// Floats of scratch memory mse_loss needs (one partial sum per block).
std::int64_t mse_loss_workspace_size(std::int64_t n);

// grad = grad_scale * 2 * (pred - target); *loss = loss_scale * sum (pred - target)^2.
// Scales: 1/n and 1/n for reduction "mean", 1 and 1 for "sum".
cudaError_t mse_loss(const float* pred, const float* target, float* grad, float* loss, float* workspace,
                     std::int64_t n, float loss_scale, float grad_scale, cudaStream_t stream);

struct SoftmaxCrossEntropyParams {
    const float* logits;   // rows x classes
    const void* labels;    // rows class indices, int32 or int64
    bool labels_int64;
    float* grad;           // rows x classes: grad_scale * (softmax - onehot)
    float* loss;           // 1 float: loss_scale * sum over rows of (logsumexp - logit[label])
    long long* invalid_labels;  // how many labels fall outside [0, classes)
    float* row_loss;       // workspace: softmax_cross_entropy_workspace_size(rows, classes) floats
    std::int64_t rows, classes;
    float loss_scale, grad_scale;
};

// Floats of scratch memory softmax_cross_entropy needs: the per-row losses, or with at most 32
// classes the per-block sums and a counter.
std::int64_t softmax_cross_entropy_workspace_size(std::int64_t rows, std::int64_t classes);

// Rows with an invalid label get NaN loss and NaN gradient, and are counted.
cudaError_t softmax_cross_entropy(const SoftmaxCrossEntropyParams& params, cudaStream_t stream);

// out = softmax(logits) (or log_softmax) along the last axis of a rows x classes matrix.
cudaError_t softmax(const float* logits, float* out, std::int64_t rows, std::int64_t classes, bool log,
                    cudaStream_t stream);

// *correct = number of rows whose first maximal logit (NaN counting as -inf) is at its label.
cudaError_t accuracy(const float* logits, const void* labels, bool labels_int64, std::int64_t rows,
                     std::int64_t classes, unsigned long long* correct, cudaStream_t stream);

}  // namespace pyfast
