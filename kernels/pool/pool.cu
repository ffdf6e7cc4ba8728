// pool.cu - 2D max / average pooling, forward and backward, NCHW float32 (PyTorch's semantics:
// dilated max windows, ceil_mode's last windows reaching past the padded input, divisor_override).
// Math: max: y = max over the window's real taps (padding never wins), NaN propagates;
//       avg: y = sum over the window's real elements / divisor, divisor = divisor_override, or
//            the window's size inside the padded plane (count_include_pad: kh*kw unless a
//            ceil_mode window reaches past it), or the number of real elements.
// Versions: v0 direct - one thread per output (forward); avg backward: one thread per input
//           element gathering from the windows that contain it; max backward: a memset, then one
//           thread per plane adding dy at the recorded indices in order. No atomics: deterministic, and
//           correct when windows overlap.
//           v1 (max pooling, what the ops run) - planes along blockIdx.y and positions inside a
//           plane along x, so every index is 32-bit within a plane (no 64-bit division per
//           element). Forward: one thread per output; the 2x2 stride-2 unpadded window with an
//           even W reads its two rows as 8-byte pairs. Backward, given the window geometry: one
//           thread per input element gathers dy from the windows that hold it (one window
//           when stride >= kernel) where the window's recorded index is this element, in the
//           order p, then q (the order v0's walk adds them: the same sums, bit for bit), and
//           writes dx once, zeros included: no memset, no read-modify-write. relu_output (the
//           pooled output of a ReLU's output) folds ReLU's backward in: a window whose maximum
//           is <= 0 passes nothing (relu_backward's rule at the element that won).
//           Average pooling v1: the same grid; the backward gathers dy times the reciprocal
//           of the divisor when all windows share one, else divides by each window's.
// References: PyTorch's max_pool2d_with_indices and avg_pool2d CUDA kernels (the scan order and
//             NaN rule are theirs).

#include "common/common.cuh"
#include "pool/pool.cuh"

namespace pyfast {
namespace {

__device__ __forceinline__ std::int64_t max64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// The first tap at or after 0 of a window starting at `start` (taps start + i * step).
template <typename T>
__device__ __forceinline__ T first_tap(T start, int step) {
    return start >= 0 ? start : start + (-start + step - 1) / step * step;
}

// The taps of output (p, q) inside the real input: rows i0, i0 + dilation_h, ... below i1,
// columns likewise from j0 below j1.
struct Window {
    std::int64_t i0, i1, j0, j1;
};

__device__ __forceinline__ Window window_of(const Pool2dParams& g, std::int64_t p, std::int64_t q) {
    const std::int64_t top = p * g.stride_h - g.pad_h, left = q * g.stride_w - g.pad_w;
    return Window{first_tap(top, g.dilation_h), min64(top + (g.kernel_h - 1) * g.dilation_h + 1, g.h),
                  first_tap(left, g.dilation_w), min64(left + (g.kernel_w - 1) * g.dilation_w + 1, g.w)};
}

// Average pooling's divisor of output (p, q) (no dilation there).
__device__ __forceinline__ float avg_divisor(const Pool2dParams& g, std::int64_t p, std::int64_t q) {
    if (g.divisor != 0) return static_cast<float>(g.divisor);
    const std::int64_t top = p * g.stride_h - g.pad_h, left = q * g.stride_w - g.pad_w;
    if (g.count_include_pad) {  // the window inside the padded plane
        return static_cast<float>((min64(top + g.kernel_h, g.h + g.pad_h) - top) *
                                  (min64(left + g.kernel_w, g.w + g.pad_w) - left));
    }
    return static_cast<float>((min64(top + g.kernel_h, g.h) - max64(top, 0)) *
                              (min64(left + g.kernel_w, g.w) - max64(left, 0)));
}

// Outputs p in [first, last] whose window (`extent` = (kernel - 1) * dilation + 1 rows from
// p * stride - pad) spans input row i; with dilation a spanned row may fall between taps.
__device__ __forceinline__ void windows_holding(std::int64_t i, int extent, int stride, int pad, std::int64_t outputs,
                                                std::int64_t* first, std::int64_t* last) {
    const std::int64_t padded = i + pad;  // window p spans padded rows [p*stride, p*stride + extent)
    *first = padded < extent ? 0 : (padded - extent) / stride + 1;
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
        for (std::int64_t i = win.i0; i < win.i1; i += g.dilation_h) {
            for (std::int64_t j = win.j0; j < win.j1; j += g.dilation_w) {
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
        y[e] = sum / avg_divisor(g, p, q);
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
                acc += dy[(plane * g.p + p) * g.q + q] / avg_divisor(g, p, q);
        dx[e] = acc;
    }
}

// ------------------------------------------------------------------ v1: planes x positions
// 32-bit sizes of one plane (pool_plane_fits checks them).
struct PlaneShape {
    int h, w, p, q, kh, kw, sh, sw, ph, pw, dh, dw;
    int divisor;  // average pooling's divisor_override (0: none)
};

PlaneShape plane_shape(const Pool2dParams& g) {
    return PlaneShape{static_cast<int>(g.h), static_cast<int>(g.w), static_cast<int>(g.p), static_cast<int>(g.q),
                      g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w,
                      g.divisor};
}

// One output of plane `in`: the scan of v0 (row by row, `>` keeps the first maximum, a NaN wins
// and the last NaN stays).
__device__ __forceinline__ void max_window(const float* __restrict__ in, const PlaneShape& s, int p, int q,
                                           float* best_out, int* index_out) {
    const int top = p * s.sh - s.ph, left = q * s.sw - s.pw;
    const int i0 = first_tap(top, s.dh), i1 = min(top + (s.kh - 1) * s.dh + 1, s.h);
    const int j0 = first_tap(left, s.dw), j1 = min(left + (s.kw - 1) * s.dw + 1, s.w);
    float best = -INFINITY;
    int best_index = i0 * s.w + j0;
    for (int i = i0; i < i1; i += s.dh) {
        for (int j = j0; j < j1; j += s.dw) {
            const float value = __ldg(in + i * s.w + j);
            if (value > best || isnan(value)) {
                best = value;
                best_index = i * s.w + j;
            }
        }
    }
    *best_out = best;
    *index_out = best_index;
}

// What the pool sees of an input value: + the plane's channel bias, then ReLU, when asked (the
// CNN's conv output pooled in one pass: relu(max) = max(relu), and the argmax is the ReLU'd
// values' own, first maximum first, as a separate ReLU then pool gives).
struct PoolInput {
    const float* bias;  // per channel, or nullptr
    int channels;
    bool relu;

    __device__ __forceinline__ float operator()(float v, float b) const {
        if (bias != nullptr) v += b;
        return relu && v < 0.0f ? 0.0f : v;  // NaN stays NaN
    }
};

// PAIRS: the 2x2 stride-2 unpadded undilated window with W even and every window inside the
// plane: each row of the window is one aligned 8-byte load (the same scan order: (0,0), (0,1),
// (1,0), (1,1)).
template <bool PAIRS, bool TRANSFORM>
__global__ void max_pool2d_planes_kernel(const float* __restrict__ x, float* __restrict__ y,
                                         long long* __restrict__ indices, std::int64_t planes, PlaneShape s,
                                         PoolInput input) {
    const int outputs = s.p * s.q;
    for (std::int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const float* in = x + plane * s.h * s.w;
        const float b = TRANSFORM && input.bias != nullptr ? __ldg(input.bias + plane % input.channels) : 0.0f;
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < outputs; o += gridDim.x * blockDim.x) {
            const int p = o / s.q, q = o - p * s.q;
            float best;
            int best_index;
            if constexpr (PAIRS || TRANSFORM) {
                const int top = p * s.sh - s.ph, left = q * s.sw - s.pw;
                const int i0 = first_tap(top, s.dh), i1 = min(top + (s.kh - 1) * s.dh + 1, s.h);
                const int j0 = first_tap(left, s.dw), j1 = min(left + (s.kw - 1) * s.dw + 1, s.w);
                best = -INFINITY;
                best_index = i0 * s.w + j0;
                auto scan = [&](float value, int index) {
                    if (TRANSFORM) value = input(value, b);
                    if (value > best || isnan(value)) {
                        best = value;
                        best_index = index;
                    }
                };
                if (PAIRS) {
                    const int corner = i0 * s.w + j0;
                    const float2 rows[2] = {__ldg(reinterpret_cast<const float2*>(in + corner)),
                                            __ldg(reinterpret_cast<const float2*>(in + corner + s.w))};
                    scan(rows[0].x, corner);
                    scan(rows[0].y, corner + 1);
                    scan(rows[1].x, corner + s.w);
                    scan(rows[1].y, corner + s.w + 1);
                } else {
                    for (int i = i0; i < i1; i += s.dh)
                        for (int j = j0; j < j1; j += s.dw) scan(__ldg(in + i * s.w + j), i * s.w + j);
                }
            } else {
                max_window(in, s, p, q, &best, &best_index);
            }
            y[plane * outputs + o] = best;
            indices[plane * outputs + o] = best_index;
        }
    }
}

// Outputs p in [*first, *last] whose window (`extent` rows from p*stride - pad) spans row i.
__device__ __forceinline__ void windows_holding32(int i, int extent, int stride, int pad, int outputs, int* first,
                                                  int* last) {
    const int padded = i + pad;
    *first = padded < extent ? 0 : (padded - extent) / stride + 1;
    *last = min(padded / stride, outputs - 1);
}

// Calls visit(p, q) for each window spanning element e = i * W + j of a plane, in the order p,
// then q (the order the gathers add in). With dilation e may fall between a window's taps: the
// max gather's index test skips those windows (average pooling has no dilation).
template <typename Visit>
__device__ __forceinline__ void for_windows_holding(const PlaneShape& s, int e, Visit&& visit) {
    const int i = e / s.w, j = e - i * s.w;
    int p0, p1, q0, q1;
    windows_holding32(i, (s.kh - 1) * s.dh + 1, s.sh, s.ph, s.p, &p0, &p1);
    windows_holding32(j, (s.kw - 1) * s.dw + 1, s.sw, s.pw, s.q, &q0, &q1);
    for (int p = p0; p <= p1; ++p)
        for (int q = q0; q <= q1; ++q) visit(p, q);
}

__global__ void max_pool2d_backward_gather_kernel(const float* __restrict__ dy, const long long* __restrict__ indices,
                                                  const float* __restrict__ relu_output, float* __restrict__ dx,
                                                  std::int64_t planes, PlaneShape s) {
    const int positions = s.h * s.w, outputs = s.p * s.q;
    for (std::int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const std::int64_t first_output = plane * outputs;
        for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < positions; e += gridDim.x * blockDim.x) {
            float acc = 0.0f;
            for_windows_holding(s, e, [&](int p, int q) {
                const std::int64_t o = first_output + p * s.q + q;
                if (__ldg(indices + o) != e) return;
                if (relu_output != nullptr && __ldg(relu_output + o) <= 0.0f) return;  // NaN passes
                acc += __ldg(dy + o);
            });
            dx[plane * positions + e] = acc;
        }
    }
}

// Average pooling v1: the same grid. The divisor of window (p, q): divisor_override, the window
// inside the padded plane, or its real (unpadded) part.
__device__ __forceinline__ int avg_window_divisor(const PlaneShape& s, int p, int q, bool count_include_pad) {
    if (s.divisor != 0) return s.divisor;
    const int top = p * s.sh - s.ph, left = q * s.sw - s.pw;
    if (count_include_pad) return (min(top + s.kh, s.h + s.ph) - top) * (min(left + s.kw, s.w + s.pw) - left);
    return (min(top + s.kh, s.h) - max(top, 0)) * (min(left + s.kw, s.w) - max(left, 0));
}

__global__ void avg_pool2d_planes_kernel(const float* __restrict__ x, float* __restrict__ y, std::int64_t planes,
                                         PlaneShape s, bool count_include_pad) {
    const int outputs = s.p * s.q;
    for (std::int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const float* in = x + plane * s.h * s.w;
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < outputs; o += gridDim.x * blockDim.x) {
            const int p = o / s.q, q = o - p * s.q;
            const int top = p * s.sh - s.ph, left = q * s.sw - s.pw;
            const int i0 = max(top, 0), i1 = min(top + s.kh, s.h), j0 = max(left, 0), j1 = min(left + s.kw, s.w);
            float sum = 0.0f;  // rows, then columns: v0's order
            for (int i = i0; i < i1; ++i)
                for (int j = j0; j < j1; ++j) sum += __ldg(in + i * s.w + j);
            y[plane * outputs + o] = sum / static_cast<float>(avg_window_divisor(s, p, q, count_include_pad));
        }
    }
}

// dx[i, j] = sum over the windows holding (i, j) of dy / divisor, in the order p then q.
// uniform_reciprocal (> 0 when every window has the same divisor: divisor_override, or
// count_include_pad with no window past the padded plane): a multiply per window.
__global__ void avg_pool2d_backward_gather_kernel(const float* __restrict__ dy, float* __restrict__ dx,
                                                  std::int64_t planes, PlaneShape s, bool count_include_pad,
                                                  float uniform_reciprocal) {
    const int positions = s.h * s.w;
    for (std::int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const float* grad = dy + plane * s.p * s.q;
        for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < positions; e += gridDim.x * blockDim.x) {
            float acc = 0.0f;
            for_windows_holding(s, e, [&](int p, int q) {
                const float g = __ldg(grad + p * s.q + q);
                acc += uniform_reciprocal > 0.0f
                           ? g * uniform_reciprocal
                           : g / static_cast<float>(avg_window_divisor(s, p, q, count_include_pad));
            });
            dx[plane * positions + e] = acc;
        }
    }
}

// The (positions, planes) grid of a v1 kernel: x covers a plane's positions, y the planes.
dim3 plane_grid(std::int64_t positions, std::int64_t planes, int threads) {
    const std::int64_t x = ceil_div<std::int64_t>(positions, threads);
    const std::int64_t y = planes < kMaxGridY ? planes : kMaxGridY;
    return dim3(static_cast<unsigned>(x < 1024 ? x : 1024), static_cast<unsigned>(y));
}

// 1 / the divisor every window of average pooling shares, or 0 when they differ.
float uniform_avg_reciprocal(const Pool2dParams& g) {
    if (g.divisor != 0) return 1.0f / static_cast<float>(g.divisor);
    const bool past_padding = (g.p - 1) * g.stride_h + g.kernel_h > g.h + 2 * g.pad_h ||
                              (g.q - 1) * g.stride_w + g.kernel_w > g.w + 2 * g.pad_w;
    return g.count_include_pad && !past_padding ? 1.0f / static_cast<float>(g.kernel_h * g.kernel_w) : 0.0f;
}

bool pool_plane_fits(const Pool2dParams& g) {
    const std::int64_t limit = 0x7fffffff;
    return g.h * g.w <= limit && g.p * g.q <= limit && (g.h + g.pad_h) * g.w <= limit;
}

}  // namespace

cudaError_t max_pool2d(const float* x, float* y, long long* indices, const Pool2dParams& g, cudaStream_t stream,
                       const float* bias, int channels, bool relu) {
    if (g.planes <= 0 || g.p * g.q <= 0) return cudaSuccess;
    const bool transform = bias != nullptr || relu;
    if (transform && channels < 1) return cudaErrorInvalidValue;
    if (!pool_plane_fits(g)) {
        if (transform) return cudaErrorInvalidValue;
        return launch_grid_stride(max_pool2d_kernel, g.planes * g.p * g.q, stream, x, y, indices, g);
    }
    constexpr int kThreads = 256;
    const PlaneShape s = plane_shape(g);
    const bool pairs = s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0 && s.dh == 1 &&
                       s.dw == 1 && s.w % 2 == 0 && 2 * s.p <= s.h && 2 * s.q <= s.w && is_aligned16(x);
    const dim3 grid = plane_grid(g.p * g.q, g.planes, kThreads);
    const PoolInput input{bias, channels, relu};
    auto launch = [&](auto kernel) {
        return launch_kernel(kernel, grid, kThreads, 0, stream, x, y, indices, g.planes, s, input);
    };
    if (pairs) {
        return transform ? launch(max_pool2d_planes_kernel<true, true>) : launch(max_pool2d_planes_kernel<true, false>);
    }
    return transform ? launch(max_pool2d_planes_kernel<false, true>) : launch(max_pool2d_planes_kernel<false, false>);
}

cudaError_t max_pool2d_backward(const float* dy, const long long* indices, float* dx, const Pool2dParams& g,
                                cudaStream_t stream) {
    if (g.planes <= 0 || g.h * g.w <= 0) return cudaSuccess;
    const cudaError_t status = cudaMemsetAsync(dx, 0, sizeof(float) * g.planes * g.h * g.w, stream);
    if (status != cudaSuccess) return status;
    return launch_grid_stride(max_pool2d_backward_kernel, g.planes, stream, dy, indices, dx, g);
}

cudaError_t max_pool2d_backward_gather(const float* dy, const long long* indices, const float* relu_output, float* dx,
                                       const Pool2dParams& g, cudaStream_t stream) {
    if (g.planes <= 0 || g.h * g.w <= 0) return cudaSuccess;
    if (!pool_plane_fits(g)) return cudaErrorInvalidValue;
    constexpr int kThreads = 256;
    return launch_kernel(max_pool2d_backward_gather_kernel, plane_grid(g.h * g.w, g.planes, kThreads), kThreads, 0,
                         stream, dy, indices, relu_output, dx, g.planes, plane_shape(g));
}

cudaError_t avg_pool2d(const float* x, float* y, const Pool2dParams& g, cudaStream_t stream) {
    if (g.planes <= 0 || g.p * g.q <= 0) return cudaSuccess;
    if (!pool_plane_fits(g)) return launch_grid_stride(avg_pool2d_kernel, g.planes * g.p * g.q, stream, x, y, g);
    constexpr int kThreads = 256;
    return launch_kernel(avg_pool2d_planes_kernel, plane_grid(g.p * g.q, g.planes, kThreads), kThreads, 0, stream, x,
                         y, g.planes, plane_shape(g), g.count_include_pad);
}

cudaError_t avg_pool2d_backward(const float* dy, float* dx, const Pool2dParams& g, cudaStream_t stream) {
    if (g.planes <= 0 || g.h * g.w <= 0) return cudaSuccess;
    if (!pool_plane_fits(g)) {
        return launch_grid_stride(avg_pool2d_backward_kernel, g.planes * g.h * g.w, stream, dy, dx, g);
    }
    constexpr int kThreads = 256;
    return launch_kernel(avg_pool2d_backward_gather_kernel, plane_grid(g.h * g.w, g.planes, kThreads), kThreads, 0,
                         stream, dy, dx, g.planes, plane_shape(g), g.count_include_pad, uniform_avg_reciprocal(g));
}

}  // namespace pyfast
