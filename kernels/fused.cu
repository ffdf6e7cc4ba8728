// fused.cu - whole training runs in one kernel launch, for problems small enough that launch
// and host overhead would dominate a step made of separate kernels.
// Math (linear_mse_sgd_fit), per epoch, the same float32 steps as the eager path
// (matmul + bias, mse_loss, matmul / bias_grad, sgd_step):
//   r[i,k]  = (sum_f x[i,f] * w[k,f]) + b[k] - y[i,k]         (fma chain from 0, then + bias)
//   loss    = (sum_{i,k} r[i,k]^2) / (n o)                     written before the update
//   d[i,k]  = (2 / (n o)) * r[i,k]                             the MSE gradient
//   w[k,f] -= lr * sum_i d[i,k] x[i,f];  b[k] -= lr * sum_i d[i,k]   (sums in order of i)
// Versions: v0 one block of 256 threads holds residuals and parameters in shared memory;
//           a barrier separates the residual pass, the loss sum and the update pass, so a
//           1000-epoch run costs about a thousand of those barriers instead of ~6000 launches.
// Deterministic: every sum has a fixed order.

#include "common.cuh"
#include "fused.cuh"

namespace pyfast {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) linear_mse_sgd_fit_kernel(LinearFitParams p) {
    extern __shared__ float smem[];
    __shared__ float scratch[32];
    const int no = p.n * p.o;
    const int params = p.o * (p.f + 1);
    float* residual = smem;          // n x o, scaled to the gradient d after the loss sum
    float* w = smem + no;            // o x f, then the o biases
    float* b = w + p.o * p.f;
    const float grad_scale = 2.0f / (float)no;
    const float loss_scale = 1.0f / (float)no;

    for (int i = threadIdx.x; i < p.o * p.f; i += blockDim.x) w[i] = p.weight[i];
    for (int i = threadIdx.x; i < p.o; i += blockDim.x) b[i] = p.bias[i];
    __syncthreads();

    for (int epoch = 0; epoch < p.epochs; ++epoch) {
        float sum = 0.0f;
        for (int idx = threadIdx.x; idx < no; idx += blockDim.x) {
            const int i = idx / p.o, k = idx % p.o;
            float acc = 0.0f;
            for (int j = 0; j < p.f; ++j) acc = fmaf(p.x[(int64_t)i * p.f + j], w[k * p.f + j], acc);
            const float r = (acc + b[k]) - p.y[idx];
            sum += r * r;
            residual[idx] = grad_scale * r;
        }
        sum = block_sum(sum, scratch);  // its barriers also publish `residual`
        if (threadIdx.x == 0 && p.losses != nullptr) p.losses[epoch] = sum * loss_scale;
        for (int q = threadIdx.x; q < params; q += blockDim.x) {
            if (q < p.o * p.f) {
                const int k = q / p.f, j = q % p.f;
                float g = 0.0f;
                for (int i = 0; i < p.n; ++i) g = fmaf(residual[i * p.o + k], p.x[(int64_t)i * p.f + j], g);
                w[q] = w[q] - p.lr * g;
            } else {
                const int k = q - p.o * p.f;
                float g = 0.0f;
                for (int i = 0; i < p.n; ++i) g += residual[i * p.o + k];
                b[k] = b[k] - p.lr * g;
            }
        }
        __syncthreads();  // the next residual pass reads the updated parameters
    }
    for (int i = threadIdx.x; i < p.o * p.f; i += blockDim.x) p.weight[i] = w[i];
    for (int i = threadIdx.x; i < p.o; i += blockDim.x) p.bias[i] = b[i];
}

}  // namespace

cudaError_t linear_mse_sgd_fit(const LinearFitParams& p, cudaStream_t stream) {
    if (p.n < 1 || p.f < 1 || p.o < 1 || p.epochs < 0) return cudaErrorInvalidValue;
    const long long floats = (long long)p.n * p.o + (long long)p.o * (p.f + 1);
    if (floats > kLinearFitMaxFloats) return cudaErrorInvalidValue;
    const size_t bytes = sizeof(float) * (size_t)floats;
    linear_mse_sgd_fit_kernel<<<1, kThreads, bytes, stream>>>(p);
    PYFAST_RETURN_IF_LAUNCH_FAILED();
    return cudaSuccess;
}

}  // namespace pyfast
