// loss.cu - fused losses and their gradients, softmax / log_softmax and their backward, accuracy
// (float32).
// Math: mse:      L = s_L * sum_i (p_i - t_i)^2,                 dL/dp_i = s_g * 2 (p_i - t_i)
//                 (reduction "none": L_i = (p_i - t_i)^2 written per element, s_g = 1)
//       cross-entropy over a row x with label y:
//                 m = max_c x_c, S = sum_c exp(x_c - m),         l = m + log S - x_y
//                 L = s_L * sum_rows l,                          dL/dx_c = s_g (exp(x_c - m)/S - [c == y])
//       (s_L, s_g) = (1/N, 1/N) for reduction "mean", (1, 1) for "sum").
//       softmax backward from the output y and dy: dx_c = y_c (dy_c - sum_j dy_j y_j);
//       log_softmax backward: dx_c = dy_c - exp(y_c) sum_j dy_j.
// Versions: v0 -
//   mse:      one pass: each thread writes the gradient of its elements (16-byte accesses when
//             aligned) and accumulates (p - t)^2; per-block partial sums, then one block adds the
//             partials in order. At most kMseBlocks blocks, independent of the GPU, so the sum
//             is bitwise the same on every card.
//   softmax rows: a row is read once into registers (a warp per row up to 1024 classes, a
//             1024-thread block per row up to 16384), max and sum reduced in the group, the
//             output (probabilities, log-probabilities or the cross-entropy gradient) written
//             from registers (values and their exponentials: one expf per element; the label is
//             read before the row so its latency overlaps; 16-byte loads and stores when the
//             rows allow): probabilities never touch memory. Wider rows take an online
//             (max, sum) first pass and a second read. Cross-entropy's per-row losses are added
//             in order by one block, which also counts labels outside [0, classes).
//   v1 cross-entropy with few classes (C <= 32, the CNN's 10): a thread per row. A block's 256
//             rows are one contiguous run of logits, staged through shared memory with 16-byte
//             loads and written back the same way (a warp per row would leave 22 of 32 lanes idle
//             and read 40-byte rows); each thread keeps its row's values and exponentials in
//             registers (one exp per element). Row losses and invalid labels are summed per block,
//             and the last block to finish adds the blocks' sums in block order (a ticket counter,
//             reset by that block): one launch, no single-block follow-up kernels, deterministic.
//   softmax backward: a warp per row: the row's dot product (or sum) reduced in the warp, then
//             dx written in a second read of the row (from L1 for rows of a few KB).
// References: llm.c's fused classifier (loss + gradient in one kernel); Milakov & Gimelshein,
//             "Online normalizer calculation for softmax" (2018) for the wide-row path.

#include <cmath>

#include "common/common.cuh"
#include "loss/loss.cuh"

namespace pyfast {
namespace {

constexpr int kThreads = 256;
constexpr int kMseBlocks = 1024;
constexpr int kFinishThreads = 1024;

// ------------------------------------------------------------------------------- mse
// squares: nullptr, or where (p - t)^2 goes per element (reduction "none").
__global__ void mse_partial_kernel(const float* __restrict__ pred, const float* __restrict__ target,
                                   float* __restrict__ grad, float* __restrict__ partial,
                                   float* __restrict__ squares, std::int64_t n, float grad_factor, bool vector_ok) {
    __shared__ float scratch[32];
    const std::int64_t stride = (std::int64_t)gridDim.x * blockDim.x;
    const std::int64_t first = (std::int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const std::int64_t vector_n = vector_ok ? n / 4 : 0;
    float sum = 0.0f;
    for (std::int64_t v = first; v < vector_n; v += stride) {
        const float4 p = reinterpret_cast<const float4*>(pred)[v];
        const float4 t = reinterpret_cast<const float4*>(target)[v];
        const float4 d = make_float4(p.x - t.x, p.y - t.y, p.z - t.z, p.w - t.w);
        reinterpret_cast<float4*>(grad)[v] =
            make_float4(grad_factor * d.x, grad_factor * d.y, grad_factor * d.z, grad_factor * d.w);
        if (squares != nullptr) {
            reinterpret_cast<float4*>(squares)[v] = make_float4(d.x * d.x, d.y * d.y, d.z * d.z, d.w * d.w);
        }
        sum += d.x * d.x + d.y * d.y + d.z * d.z + d.w * d.w;
    }
    for (std::int64_t i = vector_n * 4 + first; i < n; i += stride) {
        const float d = pred[i] - target[i];
        grad[i] = grad_factor * d;
        if (squares != nullptr) squares[i] = d * d;
        sum += d * d;
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// One block adds `count` values in a fixed order and writes scale * total.
__global__ void sum_in_order_kernel(const float* __restrict__ values, std::int64_t count, float scale,
                                    float* __restrict__ result) {
    __shared__ float scratch[32];
    float sum = 0.0f;
    for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += values[i];
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) *result = sum * scale;
}

int mse_blocks(std::int64_t n) {
    const std::int64_t wanted = ceil_div<std::int64_t>(ceil_div<std::int64_t>(n, 4), kThreads);
    return static_cast<int>(wanted < kMseBlocks ? (wanted > 0 ? wanted : 1) : kMseBlocks);
}

// ---------------------------------------------------------------------- softmax rows
enum class RowOutput : int { kCrossEntropy = 0, kSoftmax = 1, kLogSoftmax = 2 };

struct RowArgs {
    const float* logits;
    const void* labels;  // cross-entropy only
    bool labels_int64;
    float* out;          // gradient, probabilities or log-probabilities
    float* row_loss;     // cross-entropy only
    std::int64_t rows, classes;
    float grad_scale;
    RowOutput output;
};

__device__ __forceinline__ std::int64_t load_label(const void* labels, bool labels_int64, std::int64_t row) {
    return labels_int64 ? static_cast<const long long*>(labels)[row] : static_cast<const int*>(labels)[row];
}

// Writes one output element from x_c, its exp(x_c - m), log S and 1/S (m: the row max).
__device__ __forceinline__ float row_output(const RowArgs& a, float x, float row_max, float exp_x, float log_sum,
                                            float inv_sum, bool is_label, bool valid) {
    if (a.output == RowOutput::kLogSoftmax) return (x - row_max) - log_sum;
    const float p = exp_x * inv_sum;
    if (a.output == RowOutput::kSoftmax) return p;
    return valid ? a.grad_scale * (p - (is_label ? 1.0f : 0.0f)) : NAN;
}

// The per-row loss (cross-entropy) or nothing; lane/thread 0 of the row's group calls it.
__device__ __forceinline__ void write_row_loss(const RowArgs& a, std::int64_t row, std::int64_t label, bool valid,
                                               float row_max, float log_sum) {
    if (a.output != RowOutput::kCrossEntropy) return;
    a.row_loss[row] = valid ? (row_max + log_sum) - a.logits[row * a.classes + label] : NAN;
}

// GROUP threads own a row (32: a warp; 1024: the block); each holds EPT of its values.
// The launch bound caps registers so a 1024-thread block fits an SM (at most 64 each).
// VEC: rows of a multiple of 4 classes on 16-byte boundaries: lane l holds runs of 4 adjacent
// values (columns 4 (l + i GROUP) + 0..3), read and written as float4.
template <int GROUP, int EPT, bool VEC>
__global__ void __launch_bounds__(GROUP == 32 ? 256 : GROUP) softmax_rows_kernel(RowArgs a) {
    static_assert(!VEC || EPT % 4 == 0, "16-byte runs need EPT a multiple of 4");
    // The column of value j of this lane.
    auto column = [](int lane, int j) -> std::int64_t {
        return VEC ? ((std::int64_t)(j / 4) * GROUP + lane) * 4 + j % 4 : lane + (std::int64_t)j * GROUP;
    };
    __shared__ float scratch[32];
    const int lane = threadIdx.x % GROUP;
    const std::int64_t groups_per_block = blockDim.x / GROUP;
    auto group_reduce = [&](float v, auto op, float identity) {
        if constexpr (GROUP == 32) {
            return warp_reduce(v, op);
        } else {
            return block_reduce(v, scratch, op, identity);
        }
    };
    for (std::int64_t row = blockIdx.x * groups_per_block + threadIdx.x / GROUP; row < a.rows;
         row += gridDim.x * groups_per_block) {
        const float* x = a.logits + row * a.classes;
        // The label is read first: its latency hides behind the row's loads and reductions.
        const std::int64_t label = a.output == RowOutput::kCrossEntropy ? load_label(a.labels, a.labels_int64, row)
                                                                        : -1;
        float v[EPT];
        float row_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < EPT; ++j) {
            const std::int64_t c = column(lane, j);
            if constexpr (VEC) {
                if (j % 4 == 0) {  // classes % 4 == 0: a run is wholly in the row or wholly past it
                    const float4 run = c < a.classes ? __ldg(reinterpret_cast<const float4*>(x + c))
                                                     : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
                    v[j] = run.x;
                    v[j + 1] = run.y;
                    v[j + 2] = run.z;
                    v[j + 3] = run.w;
                }
            } else {
                v[j] = c < a.classes ? x[c] : -INFINITY;
            }
        }
#pragma unroll
        for (int j = 0; j < EPT; ++j) row_max = fmaxf(row_max, v[j]);
        row_max = group_reduce(row_max, MaxOp{}, -INFINITY);
        // The exponentials stay in registers for the outputs (one expf per element, not two).
        float e[EPT];
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < EPT; ++j) {
            e[j] = column(lane, j) < a.classes ? expf(v[j] - row_max) : 0.0f;
            sum += e[j];
        }
        sum = group_reduce(sum, SumOp{}, 0.0f);
        const float log_sum = logf(sum);
        const float inv_sum = 1.0f / sum;
        const bool valid = label >= 0 && label < a.classes;
        float* out = a.out + row * a.classes;
        float o[EPT];
#pragma unroll
        for (int j = 0; j < EPT; ++j) {
            const std::int64_t c = column(lane, j);
            o[j] = row_output(a, v[j], row_max, e[j], log_sum, inv_sum, c == label, valid);
            if (!VEC && c < a.classes) out[c] = o[j];
        }
        if constexpr (VEC) {
#pragma unroll
            for (int j = 0; j < EPT; j += 4) {
                const std::int64_t c = column(lane, j);
                if (c < a.classes) {
                    *reinterpret_cast<float4*>(out + c) = make_float4(o[j], o[j + 1], o[j + 2], o[j + 3]);
                }
            }
        }
        if (lane == 0) write_row_loss(a, row, label, valid, row_max, log_sum);
    }
}

// Rows wider than 16384: block per row, online (max, sum) in one read, outputs in a second.
__global__ void softmax_wide_rows_kernel(RowArgs a) {
    __shared__ float scratch[32];
    for (std::int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
        const float* x = a.logits + row * a.classes;
        float thread_max = -INFINITY, thread_sum = 0.0f;
        for (std::int64_t c = threadIdx.x; c < a.classes; c += blockDim.x) {
            const float value = x[c];
            if (value > thread_max) {  // rescale the running sum to the new max
                thread_sum = thread_sum * expf(thread_max - value) + 1.0f;
                thread_max = value;
            } else if (value != -INFINITY) {  // exp(-inf) adds 0; NaN lands here and propagates
                thread_sum += expf(value - thread_max);
            }
        }
        const float row_max = block_reduce(thread_max, scratch, MaxOp{}, -INFINITY);
        const float rescaled = thread_sum == 0.0f ? 0.0f : thread_sum * expf(thread_max - row_max);
        const float sum = block_sum(rescaled, scratch);
        const float log_sum = logf(sum);
        const float inv_sum = 1.0f / sum;
        std::int64_t label = -1;
        if (a.output == RowOutput::kCrossEntropy) label = load_label(a.labels, a.labels_int64, row);
        const bool valid = label >= 0 && label < a.classes;
        float* out = a.out + row * a.classes;
        for (std::int64_t c = threadIdx.x; c < a.classes; c += blockDim.x) {
            const float value = x[c];
            out[c] = row_output(a, value, row_max, expf(value - row_max), log_sum, inv_sum, c == label, valid);
        }
        if (threadIdx.x == 0) write_row_loss(a, row, label, valid, row_max, log_sum);
    }
}

template <int GROUP, int EPT>
cudaError_t launch_rows(const RowArgs& a, cudaStream_t stream) {
    const int threads = GROUP == 32 ? kThreads : GROUP;
    const unsigned blocks = grid_stride_blocks(a.rows * GROUP, threads);
    if constexpr (EPT % 4 == 0) {
        if (a.classes % 4 == 0 && is_aligned16(a.logits) && is_aligned16(a.out)) {
            return launch_kernel(softmax_rows_kernel<GROUP, EPT, true>, blocks, threads, 0, stream, a);
        }
    }
    return launch_kernel(softmax_rows_kernel<GROUP, EPT, false>, blocks, threads, 0, stream, a);
}

// Picks the register layout that holds a whole row: the smallest EPT with GROUP * EPT >= classes.
cudaError_t launch_softmax_rows(const RowArgs& a, cudaStream_t stream) {
    const std::int64_t c = a.classes;
    if (c <= 32) return launch_rows<32, 1>(a, stream);
    if (c <= 64) return launch_rows<32, 2>(a, stream);
    if (c <= 128) return launch_rows<32, 4>(a, stream);
    if (c <= 256) return launch_rows<32, 8>(a, stream);
    if (c <= 512) return launch_rows<32, 16>(a, stream);
    if (c <= 1024) return launch_rows<32, 32>(a, stream);
    if (c <= 2048) return launch_rows<1024, 2>(a, stream);
    if (c <= 4096) return launch_rows<1024, 4>(a, stream);
    if (c <= 8192) return launch_rows<1024, 8>(a, stream);
    if (c <= 16384) return launch_rows<1024, 16>(a, stream);
    // 32 values per thread of a 1024-thread block would need 128 registers each: twice what an
    // SM has for such a block. Wider rows are read twice instead (the second read mostly hits L2).
    return launch_kernel(softmax_wide_rows_kernel, grid_stride_blocks(a.rows * 1024, 1024), 1024, 0, stream, a);
}

// ------------------------------------------------------------- v1: few classes, a row per thread
constexpr int kSmallRows = 256;  // rows (threads) per block
constexpr int kSmallMaxClasses = 32;

struct SmallRowsArgs {
    const float* logits;
    const void* labels;
    bool labels_int64;
    float* grad;
    float* loss;
    long long* invalid_labels;
    float* block_sums;       // 2 * blocks: the blocks' loss sums, then their invalid-label counts
    unsigned int* tickets;   // zero before the launch; the last block resets it
    std::int64_t rows;
    int classes;
    float loss_scale, grad_scale;
};

// Copies `count` floats between global and shared memory, 16 bytes at a time when both ends allow.
__device__ __forceinline__ void copy_run(float* __restrict__ dst, const float* __restrict__ src, int count,
                                         bool vector) {
    int done = 0;
    if (vector) {
        const int quads = count / 4;
        for (int v = threadIdx.x; v < quads; v += blockDim.x)
            reinterpret_cast<float4*>(dst)[v] = reinterpret_cast<const float4*>(src)[v];
        done = quads * 4;
    }
    for (int i = done + threadIdx.x; i < count; i += blockDim.x) dst[i] = src[i];
}

template <int C_MAX>
__global__ void __launch_bounds__(kSmallRows) cross_entropy_small_kernel(SmallRowsArgs a) {
    __shared__ __align__(16) float tile[kSmallRows * C_MAX];
    __shared__ float scratch[32];
    __shared__ unsigned long long invalid_total;
    __shared__ bool last_block;
    const std::int64_t row0 = (std::int64_t)blockIdx.x * kSmallRows;
    const int rows_here = static_cast<int>(a.rows - row0 < kSmallRows ? a.rows - row0 : kSmallRows);
    const int count = rows_here * a.classes;
    const std::int64_t first = row0 * a.classes;  // a multiple of 4: blocks start at multiples of 256 rows
    const bool vector = is_aligned16(a.logits) && is_aligned16(a.grad);
    if (threadIdx.x == 0) invalid_total = 0;
    copy_run(tile, a.logits + first, count, vector);
    __syncthreads();

    float row_loss = 0.0f;
    unsigned int invalid = 0;
    const int t = threadIdx.x;
    if (t < rows_here) {
        float* row = tile + t * a.classes;
        float v[C_MAX], e[C_MAX];
        float row_max = -INFINITY;
#pragma unroll
        for (int c = 0; c < C_MAX; ++c) {
            v[c] = c < a.classes ? row[c] : -INFINITY;
            row_max = fmaxf(row_max, v[c]);
        }
        float sum = 0.0f;
#pragma unroll
        for (int c = 0; c < C_MAX; ++c) {
            e[c] = c < a.classes ? expf(v[c] - row_max) : 0.0f;
            sum += e[c];
        }
        const float log_sum = logf(sum);
        const float inv_sum = 1.0f / sum;
        const std::int64_t label = load_label(a.labels, a.labels_int64, row0 + t);
        const bool valid = label >= 0 && label < a.classes;
        float x_label = 0.0f;
#pragma unroll
        for (int c = 0; c < C_MAX; ++c) {
            if (c < a.classes) {
                if (c == label) x_label = v[c];
                row[c] = valid ? a.grad_scale * (e[c] * inv_sum - (c == label ? 1.0f : 0.0f)) : NAN;
            }
        }
        row_loss = valid ? (row_max + log_sum) - x_label : NAN;
        invalid = valid ? 0 : 1;
    }
    __syncthreads();
    copy_run(a.grad + first, tile, count, vector);

    // This block's sums (rows in thread order), then the last block adds all blocks' in order.
    const float block_loss = block_sum(row_loss, scratch);
    atomicAdd(&invalid_total, (unsigned long long)invalid);  // integers: exact in any order
    __syncthreads();
    const std::int64_t blocks = gridDim.x;
    if (threadIdx.x == 0) {
        a.block_sums[blockIdx.x] = block_loss;
        a.block_sums[blocks + blockIdx.x] = static_cast<float>(invalid_total);  // <= 256: exact
        __threadfence();  // the sums are visible before the ticket says so
        last_block = atomicAdd(a.tickets, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    float total = 0.0f;
    unsigned long long invalid_count = 0;
    for (std::int64_t b = threadIdx.x; b < blocks; b += blockDim.x) {
        total += __ldcg(a.block_sums + b);  // from L2: other blocks wrote them
        invalid_count += static_cast<unsigned long long>(__ldcg(a.block_sums + blocks + b));
    }
    total = block_sum(total, scratch);
    if (threadIdx.x == 0) invalid_total = 0;
    __syncthreads();
    atomicAdd(&invalid_total, invalid_count);
    __syncthreads();
    if (threadIdx.x == 0) {
        *a.loss = total * a.loss_scale;
        *a.invalid_labels = static_cast<long long>(invalid_total);
        *a.tickets = 0;  // ready for the next launch (and a graph's next replay)
    }
}

__global__ void count_invalid_labels_kernel(const void* labels, bool labels_int64, std::int64_t rows,
                                            std::int64_t classes, long long* invalid) {
    __shared__ unsigned long long total;  // integer sums are exact in any order
    if (threadIdx.x == 0) total = 0;
    __syncthreads();
    unsigned long long count = 0;
    for (std::int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
        const std::int64_t label = load_label(labels, labels_int64, r);
        count += (label < 0 || label >= classes) ? 1 : 0;
    }
    atomicAdd(&total, count);
    __syncthreads();
    if (threadIdx.x == 0) *invalid = static_cast<long long>(total);
}

// --------------------------------------------------- v2: cross_entropy with PyTorch's options
// Three launches: a one-block prepass over the labels and weights (the mean's divisor, W, the
// invalid count), a warp per row (two reads of the row: an online max / sum with W-weighted
// sums, then the gradient, the second read mostly from L1), and a one-block sum in row order.
// (N, C, d1, ...) input: a row's classes lie `inner` floats apart, so a warp's loads are
// strided (a sector each) there; a layout with the classes last reads them coalesced.
// Every sum has a fixed order: bitwise repeatable.
__device__ __forceinline__ float class_weight(const float* weight, std::int64_t c) {
    return weight != nullptr ? __ldg(weight + c) : 1.0f;
}

// The offset of a row's first class: rows are (n, i) with the classes `inner` apart.
__device__ __forceinline__ std::int64_t row_start(const CrossEntropyParams& a, std::int64_t row) {
    return a.inner == 1 ? row * a.classes : (row / a.inner) * a.classes * a.inner + row % a.inner;
}

__device__ __forceinline__ float smoothed_target(const CrossEntropyParams& a, std::int64_t start, std::int64_t c) {
    const float eps = a.label_smoothing;
    return (1.0f - eps) * __ldg(a.target_probs + start + c * a.inner) + eps / static_cast<float>(a.classes);
}

__global__ void cross_entropy_prepass_kernel(CrossEntropyParams a) {
    __shared__ float scratch[32];
    __shared__ unsigned long long invalid_total;
    if (threadIdx.x == 0) invalid_total = 0;
    __syncthreads();
    float total_weight = 0.0f;  // W
    for (std::int64_t c = threadIdx.x; c < a.classes; c += blockDim.x) total_weight += class_weight(a.weight, c);
    total_weight = block_sum(total_weight, scratch);
    float divisor = 0.0f;  // sum of w_y over the rows not ignored
    unsigned long long invalid = 0;
    if (a.labels != nullptr) {
        for (std::int64_t r = threadIdx.x; r < a.rows; r += blockDim.x) {
            const std::int64_t y = load_label(a.labels, a.labels_int64, r);
            if (y == a.ignore_index) continue;
            if (y < 0 || y >= a.classes) {
                ++invalid;
                continue;
            }
            divisor += class_weight(a.weight, y);
        }
    }
    divisor = block_sum(divisor, scratch);
    atomicAdd(&invalid_total, invalid);  // integers: exact in any order
    __syncthreads();
    if (threadIdx.x == 0) {
        float scale = 1.0f;
        if (a.reduction == 0) scale = a.labels != nullptr ? 1.0f / divisor : 1.0f / static_cast<float>(a.rows);
        a.scales[0] = scale;  // 1 / 0 = inf where every row is ignored: the mean is NaN, as PyTorch's
        a.scales[1] = total_weight;
        *a.invalid_labels = static_cast<long long>(invalid_total);
    }
}

__global__ void cross_entropy_rows_kernel(CrossEntropyParams a) {
    const int lane = threadIdx.x % 32;
    const std::int64_t warps = (std::int64_t)gridDim.x * (blockDim.x / 32);
    const float eps = a.label_smoothing, inv_classes = 1.0f / static_cast<float>(a.classes);
    const bool probs = a.target_probs != nullptr;
    for (std::int64_t row = (std::int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < a.rows;
         row += warps) {
        const std::int64_t start = row_start(a, row), step = a.inner;
        const float* x = a.logits + start;
        const std::int64_t y = probs ? -1 : load_label(a.labels, a.labels_int64, row);
        const bool ignored = !probs && y == a.ignore_index;
        const bool valid = probs || (!ignored && y >= 0 && y < a.classes);
        // Pass 1: online max and exp-sum (as the wide-row kernel), and T = sum w_c t'_c.
        float lane_max = -INFINITY, lane_sum = 0.0f, target_total = 0.0f;
        for (std::int64_t c = lane; c < a.classes; c += 32) {
            const float value = x[c * step];
            if (value > lane_max) {
                lane_sum = lane_sum * expf(lane_max - value) + 1.0f;
                lane_max = value;
            } else if (value != -INFINITY) {
                lane_sum += expf(value - lane_max);
            }
            if (probs) target_total += class_weight(a.weight, c) * smoothed_target(a, start, c);
        }
        const float row_max = warp_reduce(lane_max, MaxOp{});
        const float sum = warp_reduce(lane_sum == 0.0f ? 0.0f : lane_sum * expf(lane_max - row_max), SumOp{});
        target_total = warp_reduce(target_total, SumOp{});
        const float log_sum = logf(sum), inv_sum = 1.0f / sum;
        const float scale = a.scales[0], total_weight = a.scales[1];
        const float w_y = valid && !probs ? class_weight(a.weight, y) : 0.0f;
        // Pass 2: the gradient, and the weighted sum of (x_c - max) the loss needs.
        float weighted = 0.0f;
        float* g = a.grad + start;
        for (std::int64_t c = lane; c < a.classes; c += 32) {
            const float shifted = x[c * step] - row_max;
            const float p = expf(shifted) * inv_sum;
            const float w_c = class_weight(a.weight, c);
            float grad;
            if (probs) {
                const float t = w_c * smoothed_target(a, start, c);
                weighted += t * shifted;
                grad = p * target_total - t;
            } else {
                weighted += w_c * shifted;
                grad = (1.0f - eps) * w_y * (p - (c == y ? 1.0f : 0.0f)) + eps * inv_classes * (p * total_weight - w_c);
            }
            g[c * step] = ignored ? 0.0f : (valid ? scale * grad : NAN);
        }
        weighted = warp_reduce(weighted, SumOp{});
        if (lane == 0) {
            float loss;
            if (probs) {
                loss = target_total * log_sum - weighted;  // -sum t (shifted - log_sum)
            } else {
                const float nll = valid ? -w_y * ((x[y * step] - row_max) - log_sum) : 0.0f;
                loss = (1.0f - eps) * nll + eps * inv_classes * (total_weight * log_sum - weighted);
            }
            a.row_loss[row] = ignored ? 0.0f : (valid ? loss : NAN);
        }
    }
}

// One block adds the row losses in order, times the prepass's scale.
__global__ void cross_entropy_sum_kernel(CrossEntropyParams a) {
    __shared__ float scratch[32];
    float sum = 0.0f;
    for (std::int64_t i = threadIdx.x; i < a.rows; i += blockDim.x) sum += a.row_loss[i];
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) *a.loss = sum * a.scales[0];
}

// ------------------------------------------------------------------------ accuracy
// A warp per row finds the first index of the maximum, NaN counting as -inf (so an all-NaN
// row predicts class 0, as NumPy's argmax of the same row with NaN replaced by -inf would);
// lane 0 counts a hit. Integer atomics: the count is exact in any order.
__global__ void accuracy_kernel(const float* __restrict__ logits, const void* labels, bool labels_int64,
                                std::int64_t rows, std::int64_t classes, unsigned long long* correct) {
    const int lane = threadIdx.x % 32;
    const std::int64_t warps = (std::int64_t)gridDim.x * (blockDim.x / 32);
    for (std::int64_t row = (std::int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < rows;
         row += warps) {
        const float* x = logits + row * classes;
        float best = -INFINITY;
        std::int64_t best_index = classes;  // no element seen: loses to any real index
        for (std::int64_t c = lane; c < classes; c += 32) {
            const float value = isnan(x[c]) ? -INFINITY : x[c];
            if (value > best || best_index == classes) {
                best = value;
                best_index = c;
            }
        }
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float other = __shfl_xor_sync(0xffffffffu, best, offset);
            const std::int64_t other_index = __shfl_xor_sync(0xffffffffu, best_index, offset);
            if (other_index < classes &&
                (best_index == classes || other > best || (other == best && other_index < best_index))) {
                best = other;
                best_index = other_index;
            }
        }
        if (lane == 0 && best_index == load_label(labels, labels_int64, row)) atomicAdd(correct, 1ull);
    }
}

}  // namespace

// ------------------------------------------------------------------------ launchers
std::int64_t mse_loss_workspace_size(std::int64_t n) { return mse_blocks(n); }

cudaError_t mse_loss(const float* pred, const float* target, float* grad, float* loss, float* workspace,
                     std::int64_t n, float loss_scale, float grad_scale, cudaStream_t stream, float* squares) {
    const int blocks = mse_blocks(n);
    const bool vector_ok = is_aligned16(pred) && is_aligned16(target) && is_aligned16(grad) &&
                           (squares == nullptr || is_aligned16(squares));
    PYFAST_TRY(launch_kernel(mse_partial_kernel, blocks, kThreads, 0, stream, pred, target, grad, workspace, squares,
                             n, 2.0f * grad_scale, vector_ok));
    if (loss == nullptr) return cudaSuccess;  // reduction "none": the squares are the result
    return launch_kernel(sum_in_order_kernel, 1, kFinishThreads, 0, stream, workspace, blocks, loss_scale, loss);
}

std::int64_t softmax_cross_entropy_workspace_size(std::int64_t rows, std::int64_t classes) {
    if (rows > 0 && classes > 0 && classes <= kSmallMaxClasses) {
        return 2 * ceil_div<std::int64_t>(rows, kSmallRows) + 1;  // block sums and the ticket counter
    }
    return rows;  // the per-row losses
}

cudaError_t softmax_cross_entropy(const SoftmaxCrossEntropyParams& p, cudaStream_t stream) {
    if (p.rows > 0 && p.classes > 0 && p.classes <= kSmallMaxClasses) {
        const std::int64_t blocks = ceil_div<std::int64_t>(p.rows, kSmallRows);
        if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
        unsigned int* tickets = reinterpret_cast<unsigned int*>(p.row_loss + 2 * blocks);
        cudaError_t status = cudaMemsetAsync(tickets, 0, sizeof(unsigned int), stream);
        if (status != cudaSuccess) return status;
        const SmallRowsArgs args{p.logits, p.labels, p.labels_int64, p.grad, p.loss, p.invalid_labels, p.row_loss,
                                 tickets, p.rows, static_cast<int>(p.classes), p.loss_scale, p.grad_scale};
        const unsigned grid = static_cast<unsigned>(blocks);
        if (p.classes <= 8) return launch_kernel(cross_entropy_small_kernel<8>, grid, kSmallRows, 0, stream, args);
        if (p.classes <= 16) return launch_kernel(cross_entropy_small_kernel<16>, grid, kSmallRows, 0, stream, args);
        return launch_kernel(cross_entropy_small_kernel<32>, grid, kSmallRows, 0, stream, args);
    }
    if (p.rows > 0 && p.classes > 0) {
        const RowArgs args{p.logits, p.labels, p.labels_int64, p.grad, p.row_loss, p.rows, p.classes,
                           p.grad_scale, RowOutput::kCrossEntropy};
        const cudaError_t status = launch_softmax_rows(args, stream);
        if (status != cudaSuccess) return status;
    }
    PYFAST_TRY(launch_kernel(count_invalid_labels_kernel, 1, kFinishThreads, 0, stream, p.labels,
                                          p.labels_int64, p.rows, p.classes, p.invalid_labels));
    return launch_kernel(sum_in_order_kernel, 1, kFinishThreads, 0, stream, p.row_loss, p.classes > 0 ? p.rows : 0,
                         p.loss_scale, p.loss);
}

cudaError_t cross_entropy(const CrossEntropyParams& p, cudaStream_t stream) {
    if (p.classes <= 0 || p.inner < 1 || p.reduction < 0 || p.reduction > 2) return cudaErrorInvalidValue;
    if ((p.labels == nullptr) == (p.target_probs == nullptr)) return cudaErrorInvalidValue;
    if (p.reduction != 2 && p.loss == nullptr) return cudaErrorInvalidValue;
    PYFAST_TRY(launch_kernel(cross_entropy_prepass_kernel, 1, kFinishThreads, 0, stream, p));
    if (p.rows > 0) {
        PYFAST_TRY(launch_kernel(cross_entropy_rows_kernel, grid_stride_blocks(p.rows * 32, kThreads), kThreads, 0,
                                 stream, p));
    }
    if (p.reduction == 2) return cudaSuccess;
    return launch_kernel(cross_entropy_sum_kernel, 1, kFinishThreads, 0, stream, p);
}

cudaError_t softmax(const float* logits, float* out, std::int64_t rows, std::int64_t classes, bool log,
                    cudaStream_t stream) {
    if (rows <= 0 || classes <= 0) return cudaSuccess;
    const RowArgs args{logits, nullptr, false, out, nullptr, rows, classes, 0.0f,
                       log ? RowOutput::kLogSoftmax : RowOutput::kSoftmax};
    return launch_softmax_rows(args, stream);
}

namespace {

// A warp per row (grid-stride over rows); lanes stride the row so each load is coalesced.
__global__ void softmax_backward_kernel(const float* __restrict__ dy, const float* __restrict__ y,
                                        float* __restrict__ dx, std::int64_t rows, std::int64_t classes, bool log) {
    const int lane = threadIdx.x % 32;
    const std::int64_t warps = (std::int64_t)gridDim.x * (blockDim.x / 32);
    for (std::int64_t row = (std::int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < rows;
         row += warps) {
        const std::int64_t start = row * classes;
        float sum = 0.0f;  // log: sum dy; softmax: sum dy * y
        for (std::int64_t c = lane; c < classes; c += 32) sum += log ? dy[start + c] : dy[start + c] * y[start + c];
        sum = warp_sum(sum);
        for (std::int64_t c = lane; c < classes; c += 32) {
            const float g = dy[start + c], out = y[start + c];
            dx[start + c] = log ? g - expf(out) * sum : out * (g - sum);
        }
    }
}

}  // namespace

cudaError_t softmax_backward(const float* dy, const float* y, float* dx, std::int64_t rows, std::int64_t classes,
                             bool log, cudaStream_t stream) {
    if (rows <= 0 || classes <= 0) return cudaSuccess;
    return launch_kernel(softmax_backward_kernel, grid_stride_blocks(rows * 32, kThreads), kThreads, 0, stream, dy, y,
                         dx, rows, classes, log);
}

cudaError_t accuracy(const float* logits, const void* labels, bool labels_int64, std::int64_t rows,
                     std::int64_t classes, unsigned long long* correct, cudaStream_t stream) {
    cudaError_t status = cudaMemsetAsync(correct, 0, sizeof(*correct), stream);
    if (status != cudaSuccess) return status;
    if (rows <= 0) return cudaSuccess;
    return launch_kernel(accuracy_kernel, grid_stride_blocks(rows * 32, kThreads), kThreads, 0, stream, logits, labels,
                         labels_int64, rows, classes, correct);
}

}  // namespace pyfast
