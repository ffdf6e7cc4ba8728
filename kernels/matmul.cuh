// matmul.cuh - host launchers of matmul.cu: C = op(A) @ op(B) (+ bias) (then ReLU), float32.
#pragma once

#include <cuda_runtime.h>

namespace pyfast {

enum class Activation : int { kNone = 0, kRelu = 1 };

// Numbering follows the versions in matmul.cu's header; the Python layer names them.
enum class MatmulVersion : int { kSimple = 0, kTiled = 1 };

struct MatmulParams {
    const float* a;     // op(A) is M x K: A is stored M x K row-major, or K x M when trans_a
    const float* b;     // op(B) is K x N: B is stored K x N row-major, or N x K when trans_b
    const float* bias;  // N values added to every row, or nullptr
    float* c;           // M x N row-major; must not overlap a, b or bias
    int m, n, k;        // each < 2^31; k may be 0 (C = bias or zeros)
    bool trans_a, trans_b;
    Activation activation;
};

cudaError_t matmul(const MatmulParams& params, MatmulVersion version, cudaStream_t stream);

}  // namespace pyfast
