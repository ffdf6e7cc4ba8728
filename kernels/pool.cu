// pool.cu - 2D max / average pooling, forward and backward, NCHW float32 (PyTorch's semantics,
// ceil_mode=False, dilation 1).
// Math: max: y = max over the window's real elements (padding never wins), NaN propagates;
//       avg: y = sum over the window's real elements / divisor, divisor = kh*kw
//            (count_include_pad) or the number of real elements.
// Versions: v0 direct - one thread per output (forward); avg backward: one thread per input
//           element gathering from the windows that contain it; max backward: a memset, then one
//           thread per plane adding dy at the recorded indices in order. No atomics: deterministic, and
//           correct when windows overlap.
// References: PyTorch's max_pool2d_with_indices and avg_pool2d CUDA kernels (the scan order and
//             NaN rule are theirs).

#include "common.cuh"
#include "pool.cuh"

namespace pyfast {
namespace {

__device__ __forceinline__ std::int64_t max64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// The window of output (p, q) clipped to the real input: rows [i0, i1), columns [j0, j1).
struct Window {
    std::int64_t i0, i1, j0, j1;
};

__device__ __forceinline__ Window window_of(const Pool2dParams& g, std::int64_t p, std::int64_t q) {
    const std::int64_t top = p * g.stride_h - g.pad_h, left = q * g.stride_w - g.pad_w;
    return Window{max64(top, 0), min64(top + g.kernel_h, g.h), max64(left, 0), min64(left + g.kernel_w, g.w)};
}

__device__ __forceinline__ float avg_divisor(const Pool2dParams& g, const Window& win) {
    return g.count_include_pad ? static_cast<float>(g.kernel_h * g.kernel_w)
                               : static_cast<float>((win.i1 - win.i0) * (win.j1 - win.j0));
}

// Outputs (p, q) whose window holds input row i: p in [first, last] along one axis.
__device__ __forceinline__ void windows_holding(std::int64_t i, int kernel, int stride, int pad, std::int64_t outputs,
                                                std::int64_t* first, std::int64_t* last) {
    const std::int64_t padded = i + pad;  // window p covers padded rows [p*stride, p*stride + kernel)
    *first = padded < kernel ? 0 : (padded - kernel) / stride + 1;
    *last = min64(padded / stride, outputs - 1);
}

__global__ void max_pool2d_kernel(const float* __restrict__ x, float* __restrict__ y, long long* __restrict__ indices,
                                  Pool2dParams g) {
    const std::int64_t total = g.planes * g.p * g.q;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t q = e % g.q, p = (e / g.q) % g.p, plane = e / (g.q * g.p);
        const float* in = x + plane * g.h * g.w;
        const Window win = window_of(g, p, q);
        float best = -INFINITY;
        std::int64_t best_index = win.i0 * g.w + win.j0;
        for (std::int64_t i = win.i0; i < win.i1; ++i) {
            for (std::int64_t j = win.j0; j < win.j1; ++j) {
                const float value = in[i * g.w + j];
                if (value > best || isnan(value)) {
                    best = value;
                    best_index = i * g.w + j;
                }
            }
        }
        y[e] = best;
        indices[e] = best_index;
    }
}

// After dx is zeroed (a memset, coalesced), one thread per input plane walks the plane's
// outputs in order adding each dy at its recorded index. The op, like PyTorch's, receives only
// the indices (not the window geometry), so it cannot gather; a serial walk per plane keeps the
// sum order fixed (deterministic) where windows overlap. Indices outside the plane are skipped.
__global__ void max_pool2d_backward_kernel(const float* __restrict__ dy, const long long* __restrict__ indices,
                                           float* __restrict__ dx, Pool2dParams g) {
    const std::int64_t plane_size = g.h * g.w, outputs = g.p * g.q;
    for (std::int64_t plane = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; plane < g.planes;
         plane += (std::int64_t)gridDim.x * blockDim.x) {
        float* out = dx + plane * plane_size;
        for (std::int64_t o = plane * outputs; o < (plane + 1) * outputs; ++o) {
            const long long index = indices[o];
            if (index >= 0 && index < plane_size) out[index] += dy[o];
        }
    }
}

__global__ void avg_pool2d_kernel(const float* __restrict__ x, float* __restrict__ y, Pool2dParams g) {
    const std::int64_t total = g.planes * g.p * g.q;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t q = e % g.q, p = (e / g.q) % g.p, plane = e / (g.q * g.p);
        const float* in = x + plane * g.h * g.w;
        const Window win = window_of(g, p, q);
        float sum = 0.0f;
        for (std::int64_t i = win.i0; i < win.i1; ++i)
            for (std::int64_t j = win.j0; j < win.j1; ++j) sum += in[i * g.w + j];
        y[e] = sum / avg_divisor(g, win);
    }
}

__global__ void avg_pool2d_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx, Pool2dParams g) {
    const std::int64_t total = g.planes * g.h * g.w;
    for (std::int64_t e = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (std::int64_t)gridDim.x * blockDim.x) {
        const std::int64_t position = e % (g.h * g.w), plane = e / (g.h * g.w);
        const std::int64_t i = position / g.w, j = position % g.w;
        std::int64_t p0, p1, q0, q1;
        windows_holding(i, g.kernel_h, g.stride_h, g.pad_h, g.p, &p0, &p1);
        windows_holding(j, g.kernel_w, g.stride_w, g.pad_w, g.q, &q0, &q1);
        float acc = 0.0f;
        for (std::int64_t p = p0; p <= p1; ++p)
            for (std::int64_t q = q0; q <= q1; ++q)
                acc += dy[(plane * g.p + p) * g.q + q] / avg_divisor(g, window_of(g, p, q));
        dx[e] = acc;
    }
}

}  // namespace

cudaError_t max_pool2d(const float* x, float* y, long long* indices, const Pool2dParams& g, cudaStream_t stream) {
    return launch_grid_stride(max_pool2d_kernel, g.planes * g.p * g.q, stream, x, y, indices, g);
}

cudaError_t max_pool2d_backward(const float* dy, const long long* indices, float* dx, const Pool2dParams& g,
                                cudaStream_t stream) {
    if (g.planes <= 0 || g.h * g.w <= 0) return cudaSuccess;
    const cudaError_t status = cudaMemsetAsync(dx, 0, sizeof(float) * g.planes * g.h * g.w, stream);
    if (status != cudaSuccess) return status;
    return launch_grid_stride(max_pool2d_backward_kernel, g.planes, stream, dy, indices, dx, g);
}

cudaError_t avg_pool2d(const float* x, float* y, const Pool2dParams& g, cudaStream_t stream) {
    return launch_grid_stride(avg_pool2d_kernel, g.planes * g.p * g.q, stream, x, y, g);
}

cudaError_t avg_pool2d_backward(const float* dy, float* dx, const Pool2dParams& g, cudaStream_t stream) {
    return launch_grid_stride(avg_pool2d_backward_kernel, g.planes * g.h * g.w, stream, dy, dx, g);
}

}  // namespace pyfast
