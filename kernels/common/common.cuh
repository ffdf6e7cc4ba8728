// common.cuh - helpers shared by every kernel family: the one way to launch (and to declare
// dynamic shared memory), launch checks, ceil_div, grid sizing, warp / block reductions,
// 16-byte vector access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include <cuda_runtime.h>

namespace pyfast {

// Every launch goes through launch_kernel: kernel<<<grid, block, shared_bytes, stream>>>(args...)
// under nvcc, a run on the CPU under the emulator (csrc/emu: -DPYFAST_EMULATOR), so the same
// sources build both ways. Returns the launch's status (cudaGetLastError() under nvcc).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
                          cudaStream_t stream, Args&&... args) {
#if defined(PYFAST_EMULATOR)
    return pyfast_emu::launch(kernel, grid, block, shared_bytes, stream, std::forward<Args>(args)...);
#else
    // The arguments as lvalues, copied into the kernel's parameters as a direct <<<...>>> would
    // (with std::forward, cicc vectorizes one shared load of one tiled-conv instance differently).
    kernel<<<grid, block, shared_bytes, stream>>>(args...);
    return cudaGetLastError();
#endif
}

// Returns from the calling launcher with the status of `call` (evaluated once) unless it is
// cudaSuccess: for launchers that launch more than one kernel.
#define PYFAST_TRY(call)                              \
    do {                                              \
        const cudaError_t pyfast_status_ = (call);    \
        if (pyfast_status_ != cudaSuccess) {          \
            return pyfast_status_;                    \
        }                                             \
    } while (0)

// Declares the block's dynamic shared memory (the launch's shared_bytes) as NAME, an array of T
// aligned to 16 bytes; under the emulator a pointer to the running block's copy.
#if defined(PYFAST_EMULATOR)
#define PYFAST_DYNAMIC_SHARED(T, NAME) T* const NAME = static_cast<T*>(::pyfast_emu::dynamic_shared())
#else
#define PYFAST_DYNAMIC_SHARED(T, NAME) extern __shared__ __align__(16) T NAME[]
#endif

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
    return (a + b - 1) / b;
}

// An attribute of the current device, read once per device (0 when it cannot be read). The
// emulated card can be reconfigured while running (pyfast.emulator.configure): read every time.
template <cudaDeviceAttr ATTR>
int device_attribute() {
#if defined(PYFAST_EMULATOR)
    int emulated = 0;
    return cudaDeviceGetAttribute(&emulated, ATTR, 0) == cudaSuccess ? emulated : 0;
#else
    static int cached[64] = {};
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 0;
    if (cached[device] == 0) {
        int value = 0;
        cudaDeviceGetAttribute(&value, ATTR, device);
        cached[device] = value;
    }
    return cached[device];
#endif
}

// Multiprocessors of the current device (at least 1).
inline int sm_count() {
    const int count = device_attribute<cudaDevAttrMultiProcessorCount>();
    return count > 0 ? count : 1;
}

// Grid-stride kernels get a few blocks per SM: enough to hide latency, few enough
// that each thread does several elements and the launch stays cheap.
inline unsigned grid_stride_blocks(std::int64_t work_items, int threads_per_block) {
    const std::int64_t wanted = ceil_div<std::int64_t>(work_items, threads_per_block);
    const std::int64_t cap = static_cast<std::int64_t>(sm_count()) * 8;
    return static_cast<unsigned>(wanted < cap ? (wanted > 0 ? wanted : 1) : cap);
}

// Launches kernel with kGridStrideThreads threads a block for `items` independent work items
// with a grid-stride grid; launches nothing when there are none. (tiny-cuda-nn's linear_kernel.)
constexpr int kGridStrideThreads = 256;

template <typename Kernel, typename... Args>
cudaError_t launch_grid_stride(Kernel kernel, std::int64_t items, cudaStream_t stream, Args... args) {
    if (items <= 0) return cudaSuccess;
    return launch_kernel(kernel, grid_stride_blocks(items, kGridStrideThreads), kGridStrideThreads, 0, stream,
                         args...);
}

// Grids are 1-D in x (up to 2^31-1 blocks); y and z stop at 65535, so kernels that
// tile those dimensions loop with a stride of gridDim.y instead of assuming one block each.
constexpr int kMaxGridY = 65535;

struct SumOp {
    __device__ float operator()(float a, float b) const { return a + b; }
};
// fmaxf drops a NaN operand; NaN inputs still poison whatever is computed from the max.
struct MaxOp {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Butterfly reduction: every lane ends with the result, in the same order on every run.
template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp{}); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce(v, MaxOp{}); }

// Reduction over the whole block, in a fixed order (deterministic). Every thread must call
// it; the result is valid in every thread. `scratch` holds at least 32 floats; `identity`
// fills the lanes of warps the block does not have.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch, Op op, float identity) {
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int warps = (blockDim.x + 31) / 32;
    v = warp_reduce(v, op);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : identity;
    return warp_reduce(v, op);
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
    return block_reduce(v, scratch, SumOp{}, 0.0f);
}

__host__ __device__ __forceinline__ bool is_aligned16(const void* p) {
    return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0;
}

}  // namespace pyfast
