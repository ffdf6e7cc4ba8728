// cuda_error.h - a failed CUDA call as a C++ exception; bindings.cpp translates it into
// pyfast.errors.CudaError (a RuntimeError) carrying the op and the CUDA error name.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace pyfast {

class CudaError : public std::runtime_error {
public:
    CudaError(std::string op, cudaError_t status)
        : std::runtime_error(op + ": " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status)),
          op_(std::move(op)),
          status_(status) {}
    const std::string& op() const { return op_; }
    cudaError_t status() const { return status_; }

private:
    std::string op_;
    cudaError_t status_;
};

inline void check_cuda(cudaError_t status, const char* op) {
    if (status != cudaSuccess) {
        cudaGetLastError();  // clear a non-sticky error so it is not blamed on the next op
        throw CudaError(op, status);
    }
}

}  // namespace pyfast
