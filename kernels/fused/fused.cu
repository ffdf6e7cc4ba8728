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
//           1000-epoch run costs about a thousand of those barriers instead of ~6000 launches
//           (measured on an H100: 3.1 ms for the tutorial's 100 x 2, 1000 epochs).
//           v1 one warp, for one output, F <= 8 and n <= 1024 (the tutorial): x (transposed:
//           conflict-free) and y in shared memory, the F + 1 parameters in every lane's
//           registers; lane l takes samples l, l + 32, ...; the gradient and loss sums are
//           butterfly shuffles, so every lane ends with the same sums, applies the same update
//           and no barrier is needed. An epoch is ~4 samples per lane and 5 shuffle rounds:
//           a few hundred cycles, ~0.15 ms for 1000 epochs (predicted, NOTES.md).
// Deterministic: every sum has a fixed order (v1: each lane's samples in order, then the
// butterfly), so runs repeat bit for bit; v0 and v1 round differently (the tests' tolerance).

#include "common/common.cuh"
#include "fused/fused.cuh"

namespace pyfast {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) linear_mse_sgd_fit_kernel(LinearFitParams p) {
    PYFAST_DYNAMIC_SHARED(float, smem);
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

constexpr int kWarpMaxFeatures = 8;
constexpr int kWarpMaxSamples = 1024;

template <int F>
__global__ void __launch_bounds__(32) linear_mse_sgd_fit_warp_kernel(LinearFitParams p) {
    PYFAST_DYNAMIC_SHARED(float, smem);
    float* xs = smem;             // F x n (transposed: lanes read consecutive words)
    float* ys = smem + F * p.n;  // n
    const int lane = threadIdx.x;
    for (int i = lane; i < p.n * F; i += 32) xs[(i % F) * p.n + i / F] = p.x[i];
    for (int i = lane; i < p.n; i += 32) ys[i] = p.y[i];
    __syncwarp();
    float w[F];
#pragma unroll
    for (int j = 0; j < F; ++j) w[j] = p.weight[j];
    float b = p.bias[0];
    const float grad_scale = 2.0f / (float)p.n;
    const float loss_scale = 1.0f / (float)p.n;

    for (int epoch = 0; epoch < p.epochs; ++epoch) {
        float g[F], gb = 0.0f, sum = 0.0f;
#pragma unroll
        for (int j = 0; j < F; ++j) g[j] = 0.0f;
        for (int s = lane; s < p.n; s += 32) {
            float x[F];
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < F; ++j) {
                x[j] = xs[j * p.n + s];
                acc = fmaf(x[j], w[j], acc);
            }
            const float r = (acc + b) - ys[s];
            sum += r * r;
            const float d = grad_scale * r;
#pragma unroll
            for (int j = 0; j < F; ++j) g[j] = fmaf(d, x[j], g[j]);
            gb += d;
        }
        // Butterfly: the F + 2 sums reduced together (independent chains overlap their latency).
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            sum += __shfl_xor_sync(0xffffffffu, sum, offset);
            gb += __shfl_xor_sync(0xffffffffu, gb, offset);
#pragma unroll
            for (int j = 0; j < F; ++j) g[j] += __shfl_xor_sync(0xffffffffu, g[j], offset);
        }
        if (lane == 0 && p.losses != nullptr) p.losses[epoch] = sum * loss_scale;
#pragma unroll
        for (int j = 0; j < F; ++j) w[j] = w[j] - p.lr * g[j];
        b = b - p.lr * gb;
    }
    if (lane == 0) {
#pragma unroll
        for (int j = 0; j < F; ++j) p.weight[j] = w[j];
        p.bias[0] = b;
    }
}

template <int F>
cudaError_t launch_warp(const LinearFitParams& p, cudaStream_t stream) {
    return launch_kernel(linear_mse_sgd_fit_warp_kernel<F>, 1, 32, sizeof(float) * (size_t)p.n * (F + 1), stream, p);
}

}  // namespace

bool linear_fit_uses_warp(const LinearFitParams& p) {
    return p.o == 1 && p.f <= kWarpMaxFeatures && p.n <= kWarpMaxSamples;
}

cudaError_t linear_mse_sgd_fit(const LinearFitParams& p, cudaStream_t stream) {
    if (p.n < 1 || p.f < 1 || p.o < 1 || p.epochs < 0) return cudaErrorInvalidValue;
    const long long floats = (long long)p.n * p.o + (long long)p.o * (p.f + 1);
    if (floats > kLinearFitMaxFloats) return cudaErrorInvalidValue;
    if (linear_fit_uses_warp(p)) {  // n * (f + 1) <= 9216 floats: within the same 48 KB
        switch (p.f) {
            case 1: return launch_warp<1>(p, stream);
            case 2: return launch_warp<2>(p, stream);
            case 3: return launch_warp<3>(p, stream);
            case 4: return launch_warp<4>(p, stream);
            case 5: return launch_warp<5>(p, stream);
            case 6: return launch_warp<6>(p, stream);
            case 7: return launch_warp<7>(p, stream);
            default: return launch_warp<8>(p, stream);
        }
    }
    const size_t bytes = sizeof(float) * (size_t)floats;
    return launch_kernel(linear_mse_sgd_fit_kernel, 1, kThreads, bytes, stream, p);
}

}  // namespace pyfast
