// common.cuh - helpers shared by every kernel family: launch checks, ceil_div,
// grid sizing, warp / block reductions, 16-byte vector access.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pyfast {

// Host launchers return the CUDA status of their launch; the binding layer turns a
// failure into pyfast.CudaError carrying the op's name. Use right after a <<<...>>>.
#define PYFAST_RETURN_IF_LAUNCH_FAILED()                \
    do {                                                \
        cudaError_t launch_status_ = cudaGetLastError(); \
        if (launch_status_ != cudaSuccess) {            \
            return launch_status_;                      \
        }                                               \
    } while (0)

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
    return (a + b - 1) / b;
}

// An attribute of the current device, read once per device (0 when it cannot be read).
template <cudaDeviceAttr ATTR>
int device_attribute() {
    static int cached[64] = {};
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 0;
    if (cached[device] == 0) {
        int value = 0;
        cudaDeviceGetAttribute(&value, ATTR, device);
        cached[device] = value;
    }
    return cached[device];
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

// Launches kernel<<<grid, kGridStrideThreads>>>(args...) for `items` independent work items
// with a grid-stride grid; launches nothing when there are none. (tiny-cuda-nn's linear_kernel.)
constexpr int kGridStrideThreads = 256;

template <typename Kernel, typename... Args>
cudaError_t launch_grid_stride(Kernel kernel, std::int64_t items, cudaStream_t stream, Args... args) {
    if (items <= 0) return cudaSuccess;
    kernel<<<grid_stride_blocks(items, kGridStrideThreads), kGridStrideThreads, 0, stream>>>(args...);
    return cudaGetLastError();
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
