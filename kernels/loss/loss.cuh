// loss.cuh - host launchers of loss.cu: fused losses with their gradients, softmax family,
// accuracy. Every reduction has a fixed order: results are bitwise repeatable.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pyfast {

// Floats of scratch memory mse_loss needs (one partial sum per block).
std::int64_t mse_loss_workspace_size(std::int64_t n);

// grad = grad_scale * 2 * (pred - target); *loss = loss_scale * sum (pred - target)^2.
// Scales: 1/n and 1/n for reduction "mean", 1 and 1 for "sum". squares (reduction "none"):
// (pred - target)^2 per element, and loss may then be nullptr (no sum).
cudaError_t mse_loss(const float* pred, const float* target, float* grad, float* loss, float* workspace,
                     std::int64_t n, float loss_scale, float grad_scale, cudaStream_t stream,
                     float* squares = nullptr);

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

// PyTorch's cross_entropy with its options, over rows x classes logits, or (N, C, d1, ...) ones
// with the classes `inner` apart (v2): class-index
// targets (labels) with a per-class weight, ignore_index and label smoothing, or probability
// targets (target_probs, rows x classes). Per row n, with log-probabilities lp = x - logsumexp(x),
// w (weight, or ones), W = sum w, e = label_smoothing, C = classes:
//   labels: l_n = (1 - e) (-w_y lp_y) + (e / C) (-sum_c w_c lp_c), 0 where y == ignore_index
//   probs:  l_n = -sum_c w_c t'_c lp_c, t' = (1 - e) t + e / C
// reduction "mean" divides by sum of w_y over the rows not ignored (labels) or by rows (probs);
// "sum" adds; "none" leaves row_loss as the result. grad = scale * dl/dx (the gradient of the
// sum of the row losses for "none"); ignored rows get 0, invalid labels (not ignore_index and
// outside [0, classes)) NaN and are counted.
struct CrossEntropyParams {
    const float* logits;        // rows x classes
    const void* labels;         // rows class indices (int32 / int64), or nullptr with target_probs
    bool labels_int64;
    const float* target_probs;  // rows x classes, or nullptr
    const float* weight;        // classes, or nullptr (all ones)
    float* grad;                // rows x classes
    float* row_loss;            // rows: the per-row losses (the result for reduction "none")
    float* loss;                // 1 float for "mean" / "sum", or nullptr ("none")
    long long* invalid_labels;  // how many labels are invalid
    float* scales;              // workspace: 2 floats (the gradient / loss scale, then W)
    long long ignore_index;
    float label_smoothing;
    int reduction;              // 0 mean, 1 sum, 2 none
    std::int64_t rows, classes;
    std::int64_t inner = 1;     // (N, C, d1, ...) input: d1 * ...; row n * inner + i has class c at
                                // n * classes * inner + c * inner + i (rows = N * inner)
};

cudaError_t cross_entropy(const CrossEntropyParams& params, cudaStream_t stream);

// out = softmax(logits) (or log_softmax) along the last axis of a rows x classes matrix.
cudaError_t softmax(const float* logits, float* out, std::int64_t rows, std::int64_t classes, bool log,
                    cudaStream_t stream);

// dx of softmax (log false) or log_softmax (log true) along the last axis, from dy and the
// forward's output y (all rows x classes). dx overlaps neither (the loads are __restrict__).
cudaError_t softmax_backward(const float* dy, const float* y, float* dx, std::int64_t rows, std::int64_t classes,
                             bool log, cudaStream_t stream);

// *correct = number of rows whose first maximal logit (NaN counting as -inf) is at its label.
cudaError_t accuracy(const float* logits, const void* labels, bool labels_int64, std::int64_t rows,
                     std::int64_t classes, unsigned long long* correct, cudaStream_t stream);

}  // namespace pyfast
