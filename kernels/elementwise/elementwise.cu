// elementwise.cu - ReLU forward / backward, bias add, bias gradient (float32).
// Math: relu(x) = x < 0 ? 0 : x            relu_backward(dy, y) = y <= 0 ? 0 : dy
//       add_bias: y[o,c,i] = x[o,c,i] + b[c]  bias_grad: db[c] = sum_{o,i} dy[o,c,i]
// Versions: v0 grid-stride maps with 16-byte loads/stores when every pointer is aligned
//           (scalar tail); bias_grad: blocks per (channel, slice) for NCHW or per (32 columns,
//           slice) for (N, C) matrices (coalesced across columns), fixed-order sums, then a
//           second pass adding the slices in order (deterministic, no atomics).
// These are memory-bound: the figure of merit is GB/s against a device-to-device copy.
// In-place use (output == input) is allowed, so the aliasable pointers are not __restrict__.

#include "common/common.cuh"
#include "elementwise/elementwise.cuh"

namespace pyfast {
namespace {

constexpr int kThreads = 256;

struct ReluOp {
    __device__ float operator()(float x, float) const { return x < 0.0f ? 0.0f : x; }
};

struct ReluBackwardOp {
    __device__ float operator()(float dy, float y) const { return y <= 0.0f ? 0.0f : dy; }
};

// out[i] = op(in0[i], in1[i]) (in1 may be null for unary ops, which ignore it).
template <typename Op>
__global__ void map_kernel(const float* in0, const float* in1, float* out, std::int64_t n,
                           bool vector_ok, Op op) {
    const std::int64_t stride = (std::int64_t)gridDim.x * blockDim.x;
    const std::int64_t first = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const std::int64_t vector_n = vector_ok ? n / 4 : 0;
    for (std::int64_t v = first; v < vector_n; v += stride) {
        const float4 a = reinterpret_cast<const float4*>(in0)[v];
        const float4 b = in1 != nullptr ? reinterpret_cast<const float4*>(in1)[v] : a;
        reinterpret_cast<float4*>(out)[v] = make_float4(op(a.x, b.x), op(a.y, b.y), op(a.z, b.z), op(a.w, b.w));
    }
    for (std::int64_t i = vector_n * 4 + first; i < n; i += stride) {
        out[i] = op(in0[i], in1 != nullptr ? in1[i] : 0.0f);
    }
}

template <typename Op>
cudaError_t launch_map(const float* in0, const float* in1, float* out, std::int64_t n, Op op,
                       cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    const bool vector_ok = is_aligned16(in0) && is_aligned16(out) && (in1 == nullptr || is_aligned16(in1));
    const std::int64_t work = vector_ok ? ceil_div<std::int64_t>(n, 4) : n;
    return launch_kernel(map_kernel<Op>, grid_stride_blocks(work, kThreads), kThreads, 0, stream, in0, in1, out, n,
                         vector_ok, op);
}

// Each thread handles 4 consecutive elements, walking the (channel, inner) position
// forward instead of dividing for each of them.
__global__ void add_bias_kernel(const float* x, const float* __restrict__ bias, float* y,
                                ChannelShape shape, bool vector_ok) {
    const std::int64_t n = shape.outer * shape.channels * shape.inner;
    const std::int64_t groups = ceil_div<std::int64_t>(n, 4);
    const std::int64_t stride = (std::int64_t)gridDim.x * blockDim.x;
    for (std::int64_t g = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        const std::int64_t e = g * 4;
        const std::int64_t plane = e / shape.inner;
        std::int64_t i = e - plane * shape.inner;
        std::int64_t c = plane % shape.channels;
        float b[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            b[q] = bias[c];
            if (++i == shape.inner) {
                i = 0;
                c = c + 1 == shape.channels ? 0 : c + 1;
            }
        }
        if (vector_ok && e + 3 < n) {
            const float4 v = reinterpret_cast<const float4*>(x)[g];
            reinterpret_cast<float4*>(y)[g] = make_float4(v.x + b[0], v.y + b[1], v.z + b[2], v.w + b[3]);
        } else {
#pragma unroll
            for (int q = 0; q < 4; ++q)
                if (e + q < n) y[e + q] = x[e + q] + b[q];
        }
    }
}

// bias_grad runs in two passes so that any shape fills the GPU without atomics:
// pass 1 splits each channel's outer * inner values into `splits` slices, one block each,
// writing partial[slice][channel]; pass 2 adds the slices of a channel in order. One
// slice writes db directly. The order depends only on the shape and the SM count, so
// results are bitwise repeatable on a given GPU.

// (outer, channels, inner > 1): block (channel, slice) sums its part of the channel's plane.
__global__ void bias_grad_planes_kernel(const float* __restrict__ dy, float* __restrict__ partial,
                                        ChannelShape shape) {
    __shared__ float scratch[32];
    const std::int64_t c = blockIdx.x;
    const std::int64_t count = shape.outer * shape.inner;
    const std::int64_t per_slice = ceil_div<std::int64_t>(count, gridDim.y);
    const std::int64_t begin = per_slice * blockIdx.y;
    const std::int64_t end = begin + per_slice < count ? begin + per_slice : count;
    float sum = 0.0f;
    // Element e of the channel is (o, i) = (e / inner, e % inner): divide once, then step by
    // blockDim (step_o rows and step_i columns, with at most one carry) instead of a 64-bit
    // division per element. Same elements, same order as dividing each time.
    std::int64_t e = begin + threadIdx.x;
    std::int64_t o = e / shape.inner, i = e - o * shape.inner;
    const std::int64_t step_o = blockDim.x / shape.inner, step_i = blockDim.x - step_o * shape.inner;
    for (; e < end; e += blockDim.x) {
        sum += dy[(o * shape.channels + c) * shape.inner + i];
        o += step_o;
        i += step_i;
        if (i >= shape.inner) {
            i -= shape.inner;
            ++o;
        }
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) partial[blockIdx.y * shape.channels + c] = sum;
}

// (rows, channels) with inner == 1: block (column group, slice) owns 32 adjacent columns of
// a slice of rows; a warp reads 32 consecutive floats of a row, 8 warps stride down.
constexpr int kColumnsPerBlock = 32;
constexpr int kRowLanes = 8;

__global__ void bias_grad_rows_kernel(const float* __restrict__ dy, float* __restrict__ partial,
                                      std::int64_t rows, std::int64_t columns) {
    __shared__ float lane_sums[kRowLanes][kColumnsPerBlock + 1];
    const std::int64_t col = (std::int64_t)blockIdx.x * kColumnsPerBlock + threadIdx.x;
    const std::int64_t per_slice = ceil_div<std::int64_t>(rows, gridDim.y);
    const std::int64_t begin = per_slice * blockIdx.y;
    const std::int64_t end = begin + per_slice < rows ? begin + per_slice : rows;
    float sum = 0.0f;
    if (col < columns) {
        for (std::int64_t r = begin + threadIdx.y; r < end; r += kRowLanes) sum += dy[r * columns + col];
    }
    lane_sums[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && col < columns) {
        float total = 0.0f;
#pragma unroll
        for (int lane = 0; lane < kRowLanes; ++lane) total += lane_sums[lane][threadIdx.x];
        partial[blockIdx.y * columns + col] = total;
    }
}

__global__ void bias_grad_finish_kernel(const float* __restrict__ partial, float* __restrict__ db,
                                        std::int64_t channels, int splits) {
    const std::int64_t c = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) return;
    float total = 0.0f;
    for (int s = 0; s < splits; ++s) total += partial[s * channels + c];
    db[c] = total;
}

// Slices per channel (group): enough blocks for two waves over the SMs, each slice still
// a few thousand values so the second pass stays negligible.
int bias_grad_splits(ChannelShape shape) {
    if (shape.channels <= 0) return 1;
    const std::int64_t blocks_x =
        shape.inner == 1 ? ceil_div<std::int64_t>(shape.channels, kColumnsPerBlock) : shape.channels;
    const std::int64_t per_group = shape.inner == 1 ? shape.outer * kColumnsPerBlock : shape.outer * shape.inner;
    std::int64_t splits = ceil_div<std::int64_t>(2 * sm_count(), blocks_x);
    const std::int64_t by_size = per_group / 4096;
    if (splits > by_size) splits = by_size;
    if (splits > kMaxGridY) splits = kMaxGridY;
    return splits > 1 ? static_cast<int>(splits) : 1;
}

}  // namespace

cudaError_t relu(const float* x, float* y, std::int64_t n, cudaStream_t stream) {
    return launch_map(x, nullptr, y, n, ReluOp{}, stream);
}

cudaError_t relu_backward(const float* dy, const float* y, float* dx, std::int64_t n, cudaStream_t stream) {
    return launch_map(dy, y, dx, n, ReluBackwardOp{}, stream);
}

cudaError_t add_bias(const float* x, const float* bias, float* y, ChannelShape shape, cudaStream_t stream) {
    const std::int64_t n = shape.outer * shape.channels * shape.inner;
    if (n <= 0) return cudaSuccess;
    const bool vector_ok = is_aligned16(x) && is_aligned16(y);
    return launch_kernel(add_bias_kernel, grid_stride_blocks(ceil_div<std::int64_t>(n, 4), kThreads), kThreads, 0,
                         stream, x, bias, y, shape, vector_ok);
}

std::int64_t bias_grad_workspace_size(ChannelShape shape) {
    const int splits = bias_grad_splits(shape);
    return splits > 1 ? splits * shape.channels : 0;
}

cudaError_t bias_grad(const float* dy, float* db, float* workspace, ChannelShape shape, cudaStream_t stream) {
    if (shape.channels <= 0) return cudaSuccess;
    const int splits = bias_grad_splits(shape);
    float* partial = splits > 1 ? workspace : db;
    if (shape.inner == 1) {
        const dim3 grid(static_cast<unsigned>(ceil_div<std::int64_t>(shape.channels, kColumnsPerBlock)), splits);
        PYFAST_TRY(launch_kernel(bias_grad_rows_kernel, grid, dim3(kColumnsPerBlock, kRowLanes), 0,
                                              stream, dy, partial, shape.outer, shape.channels));
    } else {
        const dim3 grid(static_cast<unsigned>(shape.channels), splits);
        PYFAST_TRY(launch_kernel(bias_grad_planes_kernel, grid, kThreads, 0, stream, dy, partial, shape));
    }
    if (splits == 1) return cudaSuccess;
    const unsigned blocks = static_cast<unsigned>(ceil_div<std::int64_t>(shape.channels, kThreads));
    return launch_kernel(bias_grad_finish_kernel, blocks, kThreads, 0, stream, workspace, db, shape.channels, splits);
}

}  // namespace pyfast
