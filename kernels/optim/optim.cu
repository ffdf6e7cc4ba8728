// optim.cu - fused, in-place optimizer updates over lists of parameter tensors.
// Math (per element, float32, the order of PyTorch's fused CUDA kernels):
//   SGD:  g = grad + wd * p;  buf = momentum * buf + g;  g = nesterov ? g + momentum * buf : buf;
//         p = p - lr * g                                       (no momentum: p = p - lr * g)
//   Adam: AdamW: p = p - lr * wd * p   |  Adam: g = grad + wd * p
//         m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
//         p = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  step_size = lr / (1 - beta1^t)
//         (step_size and the bias correction come from the host, or for a capturable Adam from a
//         device array that adam_schedule_kernel advances each step: CUDA graphs can replay it)
// Versions: v0 multi-tensor apply: up to kGroupTensors tensors per launch, described in the
//           kernel's parameter block (no host-to-device copy, no synchronization); each tensor is
//           cut into kChunk-element chunks and blocks stride over the chunks of the whole group,
//           so one launch fills the GPU for one huge tensor or many small ones. 16-byte accesses
//           wherever a tensor's pointers are aligned. Memory-bound: Adam moves 28 bytes/element.
// References: PyTorch's multi_tensor_apply and fused_adam_utils.cuh; Apex's fused optimizers.

#include "common/common.cuh"
#include "optim/optim.cuh"

namespace pyfast {
namespace {

constexpr int kGroupTensors = 48;  // keeps the parameter block near 2.4 KB (limit 4 KB)
constexpr int kChunk = 4096;       // elements per chunk: 4 float4 per thread of a 256-thread block
constexpr int kThreads = 256;

struct TensorGroup {
    float* param[kGroupTensors];
    const float* grad[kGroupTensors];
    float* state0[kGroupTensors];
    float* state1[kGroupTensors];
    std::int64_t size[kGroupTensors];
    std::int64_t chunk_begin[kGroupTensors + 1];  // chunk_begin[t]: first chunk of tensor t
    int count;
};

struct SgdUpdate {
    SgdParams h;
    __device__ void operator()(float& p, float g, float& buf, float&) const {
        if (h.weight_decay != 0.0f) g = g + h.weight_decay * p;
        if (h.momentum != 0.0f) {
            buf = h.momentum * buf + g;
            g = h.nesterov ? g + h.momentum * buf : buf;
        }
        p = p - h.lr * g;
    }
};

struct AdamUpdate {
    AdamParams h;
    __device__ void operator()(float& p, float g, float& m, float& v) const {
        if (h.weight_decay != 0.0f) {
            if (h.decoupled) {
                p = p - h.lr * h.weight_decay * p;
            } else {
                g = g + h.weight_decay * p;
            }
        }
        const float step_size = h.schedule != nullptr ? h.schedule[0] : h.step_size;
        const float bias_correction2_sqrt = h.schedule != nullptr ? h.schedule[1] : h.bias_correction2_sqrt;
        m = h.beta1 * m + (1.0f - h.beta1) * g;
        v = h.beta2 * v + (1.0f - h.beta2) * g * g;
        const float denom = sqrtf(v) / bias_correction2_sqrt + h.eps;
        p = p - step_size * m / denom;
    }
};

__device__ __forceinline__ float4 load4(const float* base, std::int64_t e) {
    return *reinterpret_cast<const float4*>(base + e);
}

__device__ __forceinline__ void store4(float* base, std::int64_t e, const float (&v)[4]) {
    *reinterpret_cast<float4*>(base + e) = make_float4(v[0], v[1], v[2], v[3]);
}

template <typename Update>
__global__ void __launch_bounds__(kThreads) multi_tensor_kernel(TensorGroup group, Update update) {
    const std::int64_t total_chunks = group.chunk_begin[group.count];
    for (std::int64_t chunk = blockIdx.x; chunk < total_chunks; chunk += gridDim.x) {
        int t = 0;
        while (chunk >= group.chunk_begin[t + 1]) ++t;  // the same t for the whole block
        const std::int64_t begin = (chunk - group.chunk_begin[t]) * kChunk;
        const std::int64_t end = begin + kChunk < group.size[t] ? begin + kChunk : group.size[t];
        float* param = group.param[t];
        const float* grad = group.grad[t];
        float* state0 = group.state0[t];
        float* state1 = group.state1[t];
        const bool vector_ok = is_aligned16(param) && is_aligned16(grad) &&
                               (state0 == nullptr || is_aligned16(state0)) &&
                               (state1 == nullptr || is_aligned16(state1));
        for (std::int64_t e = begin + threadIdx.x * 4; e < end; e += kThreads * 4) {
            float p[4], g[4], s0[4] = {}, s1[4] = {};
            const bool full = vector_ok && e + 4 <= end;
            if (full) {
                const float4 pv = load4(param, e), gv = load4(grad, e);
                p[0] = pv.x, p[1] = pv.y, p[2] = pv.z, p[3] = pv.w;
                g[0] = gv.x, g[1] = gv.y, g[2] = gv.z, g[3] = gv.w;
                if (state0 != nullptr) {
                    const float4 v = load4(state0, e);
                    s0[0] = v.x, s0[1] = v.y, s0[2] = v.z, s0[3] = v.w;
                }
                if (state1 != nullptr) {
                    const float4 v = load4(state1, e);
                    s1[0] = v.x, s1[1] = v.y, s1[2] = v.z, s1[3] = v.w;
                }
            } else {
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    if (e + q >= end) continue;
                    p[q] = param[e + q];
                    g[q] = grad[e + q];
                    if (state0 != nullptr) s0[q] = state0[e + q];
                    if (state1 != nullptr) s1[q] = state1[e + q];
                }
            }
#pragma unroll
            for (int q = 0; q < 4; ++q) update(p[q], g[q], s0[q], s1[q]);
            if (full) {
                store4(param, e, p);
                if (state0 != nullptr) store4(state0, e, s0);
                if (state1 != nullptr) store4(state1, e, s1);
            } else {
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    if (e + q >= end) continue;
                    param[e + q] = p[q];
                    if (state0 != nullptr) state0[e + q] = s0[q];
                    if (state1 != nullptr) state1[e + q] = s1[q];
                }
            }
        }
    }
}

__global__ void adam_schedule_kernel(long long* step, double lr, double beta1, double beta2, float* schedule) {
    const long long t = *step + 1;
    *step = t;
    schedule[0] = static_cast<float>(lr / (1.0 - pow(beta1, static_cast<double>(t))));
    schedule[1] = static_cast<float>(sqrt(1.0 - pow(beta2, static_cast<double>(t))));
}

// Launches the update over the slots, kGroupTensors non-empty tensors per launch.
template <typename Update>
cudaError_t multi_tensor_apply(const std::vector<ParamSlot>& slots, const Update& update, cudaStream_t stream) {
    TensorGroup group{};
    auto launch = [&]() -> cudaError_t {
        const std::int64_t chunks = group.chunk_begin[group.count];
        const std::int64_t cap = static_cast<std::int64_t>(sm_count()) * 8;
        const cudaError_t status = launch_kernel(multi_tensor_kernel<Update>,
                                                 static_cast<unsigned>(chunks < cap ? chunks : cap), kThreads, 0,
                                                 stream, group, update);
        group.count = 0;
        return status;
    };
    for (const ParamSlot& slot : slots) {
        if (slot.size <= 0) continue;
        const int t = group.count;
        group.param[t] = slot.param;
        group.grad[t] = slot.grad;
        group.state0[t] = slot.state0;
        group.state1[t] = slot.state1;
        group.size[t] = slot.size;
        group.chunk_begin[t + 1] = group.chunk_begin[t] + ceil_div<std::int64_t>(slot.size, kChunk);
        group.count = t + 1;
        if (group.count == kGroupTensors) {
            const cudaError_t status = launch();
            if (status != cudaSuccess) return status;
        }
    }
    return group.count > 0 ? launch() : cudaSuccess;
}

}  // namespace

cudaError_t sgd_step(const std::vector<ParamSlot>& slots, const SgdParams& params, cudaStream_t stream) {
    return multi_tensor_apply(slots, SgdUpdate{params}, stream);
}

cudaError_t adam_step(const std::vector<ParamSlot>& slots, const AdamParams& params, cudaStream_t stream) {
    return multi_tensor_apply(slots, AdamUpdate{params}, stream);
}

cudaError_t adam_schedule(long long* step, double lr, double beta1, double beta2, float* schedule,
                          cudaStream_t stream) {
    return launch_kernel(adam_schedule_kernel, 1, 1, 0, stream, step, lr, beta1, beta2, schedule);
}

}  // namespace pyfast
