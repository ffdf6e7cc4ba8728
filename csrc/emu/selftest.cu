// selftest.cu - tiny kernels for the emulator's own tests (tests/test_emulator.py): kernels that
// break a rule the emulator must catch (each returns the launch's error and message), and kernels
// whose results show that barriers, shuffles, votes, atomics and poisoning behave as on a GPU.
// Built into the emulated extension only: on a GPU most of these would hang or fault.

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <cmath>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/common.cuh"
#include "common/ptx.cuh"
#include "selftest.h"

namespace pyfast_emu {
namespace {

using pyfast::launch_kernel;

__global__ void divergent_barrier(float*) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        __syncthreads();
    }
}

__global__ void barrier_after_exit(float*) {
    if (threadIdx.x >= 40) return;
    __syncthreads();
}

__global__ void shuffle_names_exited_lane(float* out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void deadlock(float* out) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    }
}

// Lanes of one mask at shuffles of different kinds: undefined on a GPU.
__global__ void divergent_shuffle(float* out) {
    float v = static_cast<float>(threadIdx.x);
    if (threadIdx.x % 2 == 0) {
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    } else {
        v = __shfl_down_sync(0xffffffffu, v, 1);
    }
    out[threadIdx.x] = v;
}

// The same shuffle from two places: PTX lets the lanes meet (sm_70 and later).
__global__ void shuffle_from_two_places(float* out) {
    float v = static_cast<float>(threadIdx.x);
    if (threadIdx.x % 2 == 0) {
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    } else {
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    }
    out[threadIdx.x] = v;
}

// Half-warps at masks that each name a lane waiting at the other: neither can complete.
__global__ void overlapping_masks(float* out) {
    const float v = static_cast<float>(threadIdx.x);
    out[threadIdx.x] = threadIdx.x < 16 ? __shfl_xor_sync(0x0001ffffu, v, 1) : __shfl_xor_sync(0xffff0001u, v, 1);
}

__global__ void mask_without_caller(float* out) {
    out[threadIdx.x] = __shfl_sync(0x1u, 1.0f, 0);
}

__global__ void source_outside_mask(float* out) {
    if (threadIdx.x < 2) out[threadIdx.x] = __shfl_sync(0x3u, 1.0f, 2);
}

__global__ void misaligned_vector_load(float* out) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(out + 1));
    out[0] = v.x;
}

__global__ void null_load(float* out) {
    out[0] = __ldg(static_cast<const float*>(nullptr));
}

__global__ void trap(float*) { __trap(); }

__global__ void dynamic_shared_reader(float* out) {
    PYFAST_DYNAMIC_SHARED(float, smem);
    // Block 0 reads before anything was written, then writes; block 1 must not see block 0's writes.
    out[blockIdx.x * blockDim.x + threadIdx.x] = smem[threadIdx.x];
    smem[threadIdx.x] = 1.0f;
}

// A template, as most kernels are (their statics are found by symbol, not by section).
template <int N>
__global__ void static_shared_reader(float* out) {
    __shared__ float scratch[N];
    out[threadIdx.x] = scratch[threadIdx.x];
    scratch[threadIdx.x] = 1.0f;
}

// Barriers with predicates, shuffles of every kind, votes, atomics on shared and global memory:
// out[0 .. 63] per thread of a 64-thread block, then block-wide results.
__global__ void collectives(float* out) {
    __shared__ int shared_sum;
    const int tid = threadIdx.x, lane = tid % 32;
    if (tid == 0) shared_sum = 0;
    __syncthreads();
    atomicAdd(&shared_sum, tid);
    const int count = __syncthreads_count(tid % 3 == 0);
    const int all = __syncthreads_and(tid < 64);
    const int any = __syncthreads_or(tid == 63);
    const float v = static_cast<float>(tid);
    out[tid] = __shfl_xor_sync(0xffffffffu, v, 5);                    // tid ^ 5
    out[64 + tid] = __shfl_down_sync(0xffffffffu, v, 3);              // tid + 3 within the warp, else tid
    out[128 + tid] = __shfl_up_sync(0xffffffffu, v, 2, 8);            // tid - 2 within groups of 8, else tid
    out[192 + tid] = __shfl_sync(0xffffffffu, v, 7, 16);              // lane 7 of the 16-lane group
    out[256 + tid] = static_cast<float>(__popc(__ballot_sync(0xffffffffu, lane < 10)));
    out[320 + tid] = static_cast<float>(__any_sync(0xffffffffu, lane == 31) + 2 * __all_sync(0xffffffffu, lane < 31));
    out[384 + tid] = static_cast<float>(__reduce_add_sync(0xffffffffu, static_cast<unsigned>(lane)));
    if (lane < 16) out[448 + tid] = __shfl_xor_sync(0x0000ffffu, v, 8);  // a half-warp on its own
    else out[448 + tid] = -1.0f;
    __syncwarp();
    out[520 + tid] = static_cast<float>(__popc(__match_any_sync(0xffffffffu, lane % 4)));  // 8 lanes each
    out[584 + tid] = static_cast<float>(__popc(__activemask()));
    atomicAdd(out + 512, 1.0f);
    __syncthreads();
    if (tid == 0) {
        out[513] = static_cast<float>(shared_sum);
        out[514] = static_cast<float>(count);
        out[515] = static_cast<float>(all);
        out[516] = static_cast<float>(any);
    }
}

// cp.async: the destination shows the copy only after the wait that covers its group.
__global__ void cp_async_wait_order(float* out) {
    __shared__ __align__(16) float smem[8];
    const float4* src = reinterpret_cast<const float4*>(out + 32);
    pyfast::ptx::cp_async<16>(smem, src);
    pyfast::ptx::cp_async_commit();
    pyfast::ptx::cp_async<16>(smem + 4, src + 1);
    pyfast::ptx::cp_async_commit();
    out[0] = smem[0];  // before any wait: poison
    pyfast::ptx::cp_async_wait<1>();
    out[1] = smem[0];  // the first group is done
    pyfast::ptx::cp_async_wait<0>();
    out[2] = smem[4];
}

// What only the sanitized build catches (a GPU only under compute-sanitizer): one float past the
// dynamic shared memory, and a signed overflow in index math. Refused by other builds, where
// they would corrupt the heap or be undefined.
__global__ void shared_overrun(float* out) {
    PYFAST_DYNAMIC_SHARED(float, smem);
    smem[threadIdx.x] = 1.0f;  // 32 threads, 31 floats of shared memory
    __syncthreads();
    out[threadIdx.x] = smem[threadIdx.x];
}

__global__ void index_overflow(float* out, int rows) {
    const int offset = rows * static_cast<int>(blockDim.x) * 65536;  // rows = 65536: past 2^31
    out[0] = static_cast<float>(offset);
}

#if defined(PYFAST_EMU_SANITIZERS)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// Round trips through half and bfloat16 storage: out[256 + i] = half(in[i]), out[512 + i] = bf16(in[i])
// for the inputs out[0 .. 255] (edge cases, then values spread over the exponents).
__global__ void storage_conversions(float* out) {
    const int i = threadIdx.x;
    out[256 + i] = __half2float(__float2half_rn(out[i]));
    out[512 + i] = __bfloat162float(__float2bfloat16_rn(out[i]));
}

struct Result {
    cudaError_t status;
    std::vector<float> values;
};

Result run(const std::string& name) {
    std::vector<float> out(1024, 0.0f);
    float* p = out.data();
    cudaError_t s = cudaErrorInvalidValue;
    if (name == "divergent_barrier") s = launch_kernel(divergent_barrier, 2, 64, 0, nullptr, p);
    if (name == "barrier_after_exit") s = launch_kernel(barrier_after_exit, 1, 64, 0, nullptr, p);
    if (name == "shuffle_names_exited_lane") s = launch_kernel(shuffle_names_exited_lane, 1, 32, 0, nullptr, p);
    if (name == "deadlock") s = launch_kernel(deadlock, 1, 32, 0, nullptr, p);
    if (name == "divergent_shuffle") s = launch_kernel(divergent_shuffle, 1, 32, 0, nullptr, p);
    if (name == "shuffle_from_two_places") s = launch_kernel(shuffle_from_two_places, 1, 32, 0, nullptr, p);
    if (name == "overlapping_masks") s = launch_kernel(overlapping_masks, 1, 32, 0, nullptr, p);
    if (name == "mask_without_caller") s = launch_kernel(mask_without_caller, 1, 32, 0, nullptr, p);
    if (name == "source_outside_mask") s = launch_kernel(source_outside_mask, 1, 32, 0, nullptr, p);
    if (name == "shuffle_in_partial_warp") s = launch_kernel(collectives, 1, 48, 0, nullptr, p);
    if (name == "misaligned_vector_load") s = launch_kernel(misaligned_vector_load, 1, 1, 0, nullptr, p);
    if (name == "null_load") s = launch_kernel(null_load, 1, 1, 0, nullptr, p);
    if (name == "trap") s = launch_kernel(trap, 1, 1, 0, nullptr, p);
    if (name == "too_many_threads") s = launch_kernel(trap, 1, 1025, 0, nullptr, p);
    if (name == "grid_y_too_large") s = launch_kernel(trap, dim3(1, 65536), 1, 0, nullptr, p);
    if (name == "shared_over_default_limit") {
        s = launch_kernel(dynamic_shared_reader, 1, 32, 48 * 1024 + 4, nullptr, p);
    }
    if (name == "shared_opt_in") {
        const int bytes = 64 * 1024;
        s = cudaFuncSetAttribute(dynamic_shared_reader, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
        if (s == cudaSuccess) s = launch_kernel(dynamic_shared_reader, 1, 32, bytes, nullptr, p);
        cudaFuncSetAttribute(dynamic_shared_reader, cudaFuncAttributeMaxDynamicSharedMemorySize, 48 * 1024);
    }
    if (name == "shared_opt_in_over_card") {
        s = cudaFuncSetAttribute(dynamic_shared_reader, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 device_properties().shared_per_block_optin + 1);
    }
    if (name == "dynamic_shared_poisoned") s = launch_kernel(dynamic_shared_reader, 2, 32, 32 * sizeof(float), nullptr, p);
    if (name == "static_shared_poisoned") s = launch_kernel(static_shared_reader<64>, 2, 64, 0, nullptr, p);
    if (name == "collectives") s = launch_kernel(collectives, 1, 64, 0, nullptr, p);
    if (name == "cp_async_wait_order") {
        for (int i = 0; i < 8; ++i) out[32 + i] = 10.0f + i;
        s = launch_kernel(cp_async_wait_order, 1, 1, 0, nullptr, p);
    }
    if (name == "storage_conversions") {
        const float edge[] = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65520.0f, 65519.0f, 6.1035156e-05f,
                              5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f, 1.0009766f, 1.0004883f, 1.0014648f,
                              3.3895314e38f, 1.0e-40f, INFINITY, -INFINITY, NAN, 1.00390625f, 1.0078125f};
        const int edges = sizeof(edge) / sizeof(edge[0]);
        unsigned state = 12345u;
        for (int i = 0; i < 256; ++i) {
            state = state * 1664525u + 1013904223u;
            const float spread = std::ldexp(static_cast<float>(state >> 8) / 16777216.0f + 0.5f, (int)(state % 70) - 35);
            out[i] = i < edges ? edge[i] : (state & 0x80000000u ? -spread : spread);
        }
        s = launch_kernel(storage_conversions, 1, 256, 0, nullptr, p);
    }
    if (name == "shared_overrun") {
        s = kSanitized ? launch_kernel(shared_overrun, 1, 32, 31 * sizeof(float), nullptr, p) : cudaErrorNotSupported;
    }
    if (name == "index_overflow") {
        s = kSanitized ? launch_kernel(index_overflow, 1, 32, 0, nullptr, p, 65536) : cudaErrorNotSupported;
    }
    return Result{s, out};
}

}  // namespace

std::vector<std::string> selftest_names() {
    return {"divergent_barrier", "barrier_after_exit", "shuffle_names_exited_lane", "deadlock", "divergent_shuffle",
            "shuffle_from_two_places", "overlapping_masks",
            "mask_without_caller", "source_outside_mask", "shuffle_in_partial_warp", "misaligned_vector_load",
            "null_load", "trap", "too_many_threads", "grid_y_too_large", "shared_over_default_limit",
            "shared_opt_in", "shared_opt_in_over_card", "dynamic_shared_poisoned", "static_shared_poisoned",
            "collectives", "cp_async_wait_order", "storage_conversions", "shared_overrun", "index_overflow"};
}

bool run_selftest(const std::string& name, cudaError_t* status, std::vector<float>* values) {
    const std::vector<std::string> names = selftest_names();
    if (std::find(names.begin(), names.end(), name) == names.end()) return false;
    Result result = run(name);
    *status = result.status;
    *values = std::move(result.values);
    return true;
}

}  // namespace pyfast_emu
