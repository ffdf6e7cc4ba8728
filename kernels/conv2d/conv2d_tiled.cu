// conv2d_tiled.cu - conv2d version 3 "tiled": direct convolution through shared-memory tiles with
// register blocking, for stride 1, dilation 1 and square 3x3 / 5x5 filters (the CNN's layers, the
// 5x5 1->20 layer, ResNet-style 3x3). No GEMM padding: a tile is a patch of output pixels times
// a group of output channels, so C = 1 or K = 1 wastes nothing.
//
// Forward (and the input gradient, see below), kernel conv_tiled_kernel<R, S, PX, KT, FLIPPED>:
//   A block computes a TY x (TX*PX) patch of one image's output for KG*KT output channels.
//   Thread (group g, k-group kg) owns PX adjacent output pixels of one row times KT output
//   channels (PX*KT accumulators). Per chunk of CB input channels the block stages the input
//   patch with its halo ((TY+R-1) x (TX*PX+S-1) per channel, zeros outside the image) and the
//   weights [c][r][s][k] (k fastest) in shared memory. Per (channel, filter row) a thread reads
//   PX+S-1 input values and KT*S weights (float4 broadcasts: every lane of a k-group reads the
//   same address) and does PX*KT*S FMAs: with PX=4, KT=8, 3x3: 6 + 6 LDS.128 per 96 FMAs.
//   Bytes: each input element is read from memory once per k-block (the halo re-reads come from
//   L2), each output written once: the 1->32 layer is store-bound (its output is 32x its input).
//   Epilogue: + bias[k], optional ReLU (NaN kept, as torch.relu), 16-byte stores when the rows
//   allow.
// Input gradient (stride 1): dx = conv(dy, w') with w'[c][k][r][s] = w[k][c][R-1-r][S-1-s] and
//   padding (R-1-ph, S-1-pw): the same kernel with FLIPPED = true, which reads w transposed and
//   flipped while staging it (no extra launch and no workspace for a flipped copy).
// Weight gradient, kernel conv_wgrad_tiled_kernel<S, KT, PXW>:
//   dw[k][c][r][s] = sum over row tasks (n, p) and q of dy[n][k][p][q] * x[n][c][p-ph+r][q-pw+s].
//   A block owns KG*KT output channels x CB input channels x all R x S taps and one slice of the
//   N*P row tasks; thread (kg, c, r) keeps KT x S sums (and KT bias sums when c = r = 0) and
//   walks runs of PXW pixels: per run PXW+S-1 input values and KT float4 dy loads for
//   KT*PXW*S FMAs. RG row groups of threads take interleaved row tasks and are summed in a
//   fixed order in shared memory at the end; each slice's sums go to a workspace and one more
//   pass adds the slices in order: the result repeats bit for bit, no atomics.
// Every index inside an image is 32-bit; offsets into the tensors are 64-bit.
// Measured results: benchmarks/NOTES.md ("conv2d v3 tiled").

#include <vector>

#include "common/common.cuh"
#include "conv2d/conv2d.cuh"
#include "common/tiled_gemm.cuh"

namespace pyfast {
namespace {

constexpr int kSharedFloats = 48 * 1024 / 4;  // static limit of shared memory per block, no opt-in
constexpr int kTargetThreads = 256;

__host__ __device__ constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }

// One forward-shaped convolution: out[n][ko][i][j] = sum over ci, r, s of
// in[n][ci][i - pad_h + r][j - pad_w + s] * weight(ko, ci, r, s) (+ bias[ko], ReLU).
struct TiledConv {
    const float* in;
    const float* w;  // OIHW (kout x cin x R x S), or with FLIPPED the (cin x kout x R x S) weight flipped
    const float* bias;
    float* out;
    int n, cin, hin, win, kout, hout, wout, pad_h, pad_w;
    bool relu, vector_out;
    // tile geometry (set by the launcher): pixel groups per row, row groups (of PY rows),
    // k-groups, channels per stage
    int tx, ty, kg, cb, tiles_w, tiles_h;
    // POOL: the 2x2 stride-2 max-pool of the output, written instead of it (the output stays
    // in registers): pooled values and their flat indices in the output plane.
    float* pool_out;
    long long* pool_indices;
    int pool_h, pool_w;
};

// At most kTargetThreads threads (forward_tile's rule): up to 255 registers for the wide configurations.
// POOL: each thread computes two adjacent output rows (PY = 2) and pools its 2x2 windows in the
// epilogue (PX even), so the convolution's output never reaches memory.
template <int R, int S, int PX, int KT, bool FLIPPED, bool POOL = false>
__global__ void __launch_bounds__(kTargetThreads) conv_tiled_kernel(TiledConv t) {
    constexpr int PY = POOL ? 2 : 1;
    static_assert(!POOL || (PX % 2 == 0 && !FLIPPED), "pooling needs whole 2x2 windows of a forward pass");
    PYFAST_DYNAMIC_SHARED(float, smem);
    const int kb = t.kg * KT;  // output channels of this block
    const int in_h = t.ty * PY + R - 1;
    const int in_w = t.tx * PX + S - 1;
    const int ld = in_w | 1;  // odd row stride: the rows one warp reads start in different banks
    float* in_s = smem;                                  // [cb][in_h][ld]
    float* w_s = smem + round_up(t.cb * in_h * ld, 4);  // [cb][R][S][kb], 16-byte aligned

    const int tiles = t.tiles_w * t.tiles_h;
    const int n = blockIdx.x / tiles, tile = blockIdx.x - n * tiles;
    const int oy0 = tile / t.tiles_w * t.ty * PY;
    const int ox0 = (tile - tile / t.tiles_w * t.tiles_w) * t.tx * PX;
    const int k0 = blockIdx.y * kb;
    const int groups = t.tx * t.ty;
    const int tid = threadIdx.x, threads = blockDim.x;
    const int lane = tid % 32, warp = tid / 32, warps = threads / 32;
    const int g = tid % groups, kgi = tid / groups;  // kgi >= kg: staging only (block rounded to warps)
    const int row = g / t.tx * PY, col = (g - g / t.tx * t.tx) * PX;  // first of the thread's PY rows
    const std::int64_t plane = (std::int64_t)t.hin * t.win;
    const float* in_n = t.in + (std::int64_t)n * t.cin * plane;

    float acc[KT][PY][PX];
#pragma unroll
    for (int kt = 0; kt < KT; ++kt)
#pragma unroll
        for (int py = 0; py < PY; ++py)
#pragma unroll
            for (int px = 0; px < PX; ++px) acc[kt][py][px] = 0.0f;

    for (int c0 = 0; c0 < t.cin; c0 += t.cb) {
        // Input rows: one warp per (channel, row), lanes along the row (coalesced), zeros in the halo.
        for (int rr = warp; rr < t.cb * in_h; rr += warps) {
            const int ci = rr / in_h, y = rr - ci * in_h;
            const int gi = oy0 - t.pad_h + y;
            const bool row_ok = c0 + ci < t.cin && gi >= 0 && gi < t.hin;
            for (int x = lane; x < in_w; x += 32) {
                const int gj = ox0 - t.pad_w + x;
                float v = 0.0f;
                if (row_ok && gj >= 0 && gj < t.win) {
                    v = __ldg(in_n + (c0 + ci) * plane + (std::int64_t)gi * t.win + gj);
                }
                in_s[rr * ld + x] = v;
            }
        }
        // Weights [ci][r][s][kk]; channels past cin or kout are zeros (their products vanish).
        for (int e = tid; e < t.cb * R * S * kb; e += threads) {
            const int kk = e % kb, cirs = e / kb;
            const int ci = cirs / (R * S), rs = cirs - ci * (R * S);
            const int ko = k0 + kk, c = c0 + ci;
            float v = 0.0f;
            if (ko < t.kout && c < t.cin) {
                v = FLIPPED ? __ldg(t.w + ((std::int64_t)c * t.kout + ko) * (R * S) + (R * S - 1 - rs))
                            : __ldg(t.w + ((std::int64_t)ko * t.cin + c) * (R * S) + rs);
            }
            w_s[e] = v;
        }
        __syncthreads();
        if (kgi < t.kg) {
            for (int ci = 0; ci < t.cb; ++ci) {
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    float v[PY][PX + S - 1];
#pragma unroll
                    for (int py = 0; py < PY; ++py) {
                        const float* src = in_s + (ci * in_h + row + py + r) * ld + col;
#pragma unroll
                        for (int j = 0; j < PX + S - 1; ++j) v[py][j] = src[j];
                    }
#pragma unroll
                    for (int s = 0; s < S; ++s) {
                        const float* wp = w_s + ((ci * R + r) * S + s) * kb + kgi * KT;
                        float wv[KT];
                        if constexpr (KT % 4 == 0) {
#pragma unroll
                            for (int q = 0; q < KT; q += 4) {
                                const float4 w4 = *reinterpret_cast<const float4*>(wp + q);
                                wv[q] = w4.x;
                                wv[q + 1] = w4.y;
                                wv[q + 2] = w4.z;
                                wv[q + 3] = w4.w;
                            }
                        } else {
#pragma unroll
                            for (int q = 0; q < KT; ++q) wv[q] = wp[q];
                        }
#pragma unroll
                        for (int kt = 0; kt < KT; ++kt)
#pragma unroll
                            for (int py = 0; py < PY; ++py)
#pragma unroll
                                for (int px = 0; px < PX; ++px)
                                    acc[kt][py][px] = fmaf(v[py][px + s], wv[kt], acc[kt][py][px]);
                    }
                }
            }
        }
        __syncthreads();  // the next chunk overwrites what this one read
    }

    const int oy = oy0 + row, ox = ox0 + col;
    if (kgi >= t.kg || oy >= t.hout || ox >= t.wout) return;
    if constexpr (POOL) {
        // Window (pr, pq) of the 2x2 stride-2 pool: PyTorch's scan, row by row, `>` keeps the
        // first maximum and a NaN wins; indices are flat in the (hout x wout) output plane.
        const int pr = oy / 2;
        if (pr >= t.pool_h) return;  // the last row of an odd height is in no window
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            const int ko = k0 + kgi * KT + kt;
            if (ko >= t.kout) break;
            const float b = t.bias != nullptr ? __ldg(t.bias + ko) : 0.0f;
            const std::int64_t first =
                ((std::int64_t)n * t.kout + ko) * t.pool_h * t.pool_w + (std::int64_t)pr * t.pool_w;
#pragma unroll
            for (int px = 0; px < PX; px += 2) {
                const int pq = (ox + px) / 2;
                if (pq >= t.pool_w) break;
                float best = -INFINITY;
                int best_index = oy * t.wout + ox + px;
#pragma unroll
                for (int dy = 0; dy < 2; ++dy) {
#pragma unroll
                    for (int dx = 0; dx < 2; ++dx) {
                        float value = acc[kt][dy][px + dx] + b;
                        if (t.relu) value = value < 0.0f ? 0.0f : value;
                        if (value > best || isnan(value)) {
                            best = value;
                            best_index = (oy + dy) * t.wout + ox + px + dx;
                        }
                    }
                }
                t.pool_out[first + pq] = best;
                t.pool_indices[first + pq] = best_index;
            }
        }
    } else {
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
            const int ko = k0 + kgi * KT + kt;
            if (ko >= t.kout) break;
            const float b = t.bias != nullptr ? __ldg(t.bias + ko) : 0.0f;
            float v[PX];
#pragma unroll
            for (int px = 0; px < PX; ++px) {
                v[px] = acc[kt][0][px] + b;
                if (t.relu) v[px] = v[px] < 0.0f ? 0.0f : v[px];  // NaN stays NaN
            }
            float* dst = t.out + (((std::int64_t)n * t.kout + ko) * t.hout + oy) * t.wout + ox;
            if constexpr (PX % 4 == 0) {
                if (t.vector_out) {  // wout % 4 == 0 and ox % 4 == 0: each run of 4 is wholly in or out
#pragma unroll
                    for (int px = 0; px < PX; px += 4)
                        if (ox + px < t.wout) {
                            *reinterpret_cast<float4*>(dst + px) = make_float4(v[px], v[px + 1], v[px + 2], v[px + 3]);
                        }
                    continue;
                }
            }
#pragma unroll
            for (int px = 0; px < PX; ++px)
                if (ox + px < t.wout) dst[px] = v[px];
        }
    }
}

// Forward / input-gradient configurations (index = the `config` a plan names): PX output
// pixels per thread along a row, KT output channels per thread.
//   0: PX 4, KT 8 (the default)   1: PX 4, KT 4   2: PX 2, KT 8   3: PX 7, KT 8 (14- and 28-wide
//   planes without a ragged run)   4: PX 4, KT 1 (one or few output channels: a first layer's
//   input gradient)   5: PX 8, KT 4   6: PX 4, KT 16 and 7: PX 8, KT 8 (128+ channels: 10-12
//   FMAs per shared load)   8: PX 8, KT 1
constexpr int kForwardConfigs = 9;
constexpr int kForwardShape[kForwardConfigs][2] = {{4, 8}, {4, 4}, {2, 8}, {7, 8}, {4, 1}, {8, 4}, {4, 16}, {8, 8},
                                                   {8, 1}};

// The block's tile for a config: rows no wider than 64 pixels, about kTargetThreads threads,
// tiles of equal size (the last one not mostly empty), CB channels per stage within the static
// shared-memory limit. Where one channel's weights for the k-groups and its input patch would
// not fit (5x5 filters, many output channels, narrow rows), fewer k-groups, then fewer row
// groups, per block: every geometry of the class gets a plan (tests/test_conv_tiled.py).
bool forward_tile(TiledConv& t, int r, int s, int px, int kt, int py) {
    t.tx = ceil_div(t.wout < 64 ? t.wout : 64, px);
    t.tiles_w = ceil_div(t.wout, t.tx * px);
    t.tx = ceil_div(ceil_div(t.wout, t.tiles_w), px);
    const int row_floats = (t.tx * px + s - 1) | 1;
    const int kg_needed = t.kout > kt ? ceil_div(t.kout, kt) : 1;  // an input gradient of no channels: 1
    const int kg_cap = 128 / t.tx > 1 ? 128 / t.tx : 1;
    const int kg_fit = (kSharedFloats - 4 - (py + r - 1) * row_floats) / (r * s * kt);
    if (kg_fit < 1) return false;
    t.kg = kg_needed < kg_cap ? kg_needed : kg_cap;
    t.kg = t.kg < kg_fit ? t.kg : kg_fit;
    const int row_groups = ceil_div(t.hout, py);  // a thread takes py rows
    const int ty_fit = ((kSharedFloats - 4 - r * s * t.kg * kt) / row_floats - (r - 1)) / py;
    int ty = kTargetThreads / (t.tx * t.kg);
    ty = ty > ty_fit ? ty_fit : ty;
    ty = ty < 1 ? 1 : (ty > row_groups ? row_groups : ty);
    t.tiles_h = ceil_div(row_groups, ty);
    t.ty = ceil_div(row_groups, t.tiles_h);
    const int per_channel = (t.ty * py + r - 1) * row_floats + r * s * t.kg * kt;
    int cb = (kSharedFloats - 4) / per_channel;
    if (cb < 1) return false;
    cb = cb < t.cin ? cb : t.cin;
    // Equal chunks; an input without channels is an empty reduction (the output is the bias).
    t.cb = t.cin > 0 ? ceil_div(t.cin, ceil_div(t.cin, cb)) : 1;
    return true;
}

// Configurations that can pool (PX even, at most 64 accumulators for the two rows).
bool pool_config(int config) {
    return config >= 0 && config < kForwardConfigs && kForwardShape[config][0] % 2 == 0 &&
           2 * kForwardShape[config][0] * kForwardShape[config][1] <= 64;
}

template <int R, int S, bool FLIPPED, bool POOL>
cudaError_t launch_forward_shaped(TiledConv t, int config, cudaStream_t stream) {
    if (config < 0 || config >= kForwardConfigs || (POOL && !pool_config(config))) return cudaErrorInvalidValue;
    const int px = kForwardShape[config][0], kt = kForwardShape[config][1], py = POOL ? 2 : 1;
    if (!forward_tile(t, R, S, px, kt, py)) return cudaErrorInvalidValue;
    const std::int64_t blocks_x = (std::int64_t)t.n * t.tiles_w * t.tiles_h;
    const int blocks_y = ceil_div(t.kout, t.kg * kt);
    if (blocks_x > 0x7fffffff || blocks_y > kMaxGridY) return cudaErrorInvalidValue;
    const int threads = round_up(t.tx * t.ty * t.kg, 32);
    if (threads > kTargetThreads) return cudaErrorInvalidValue;
    const int in_floats = round_up(t.cb * (t.ty * py + R - 1) * ((t.tx * px + S - 1) | 1), 4);
    const size_t bytes = sizeof(float) * (in_floats + t.cb * R * S * t.kg * kt);
    t.vector_out = t.wout % 4 == 0 && is_aligned16(t.out);
    const dim3 grid(static_cast<unsigned>(blocks_x), blocks_y);
    if constexpr (POOL) {
        switch (config) {
            case 0: return launch_kernel(conv_tiled_kernel<R, S, 4, 8, false, true>, grid, threads, bytes, stream, t);
            case 1: return launch_kernel(conv_tiled_kernel<R, S, 4, 4, false, true>, grid, threads, bytes, stream, t);
            case 2: return launch_kernel(conv_tiled_kernel<R, S, 2, 8, false, true>, grid, threads, bytes, stream, t);
            case 4: return launch_kernel(conv_tiled_kernel<R, S, 4, 1, false, true>, grid, threads, bytes, stream, t);
            case 5: return launch_kernel(conv_tiled_kernel<R, S, 8, 4, false, true>, grid, threads, bytes, stream, t);
            default: return launch_kernel(conv_tiled_kernel<R, S, 8, 1, false, true>, grid, threads, bytes, stream, t);
        }
    }
    switch (config) {
        case 0: return launch_kernel(conv_tiled_kernel<R, S, 4, 8, FLIPPED>, grid, threads, bytes, stream, t);
        case 1: return launch_kernel(conv_tiled_kernel<R, S, 4, 4, FLIPPED>, grid, threads, bytes, stream, t);
        case 2: return launch_kernel(conv_tiled_kernel<R, S, 2, 8, FLIPPED>, grid, threads, bytes, stream, t);
        case 3: return launch_kernel(conv_tiled_kernel<R, S, 7, 8, FLIPPED>, grid, threads, bytes, stream, t);
        case 4: return launch_kernel(conv_tiled_kernel<R, S, 4, 1, FLIPPED>, grid, threads, bytes, stream, t);
        case 5: return launch_kernel(conv_tiled_kernel<R, S, 8, 4, FLIPPED>, grid, threads, bytes, stream, t);
        case 6: return launch_kernel(conv_tiled_kernel<R, S, 4, 16, FLIPPED>, grid, threads, bytes, stream, t);
        case 7: return launch_kernel(conv_tiled_kernel<R, S, 8, 8, FLIPPED>, grid, threads, bytes, stream, t);
        default: return launch_kernel(conv_tiled_kernel<R, S, 8, 1, FLIPPED>, grid, threads, bytes, stream, t);
    }
}

template <bool FLIPPED, bool POOL = false>
cudaError_t launch_forward_shaped(const TiledConv& t, int r, int config, cudaStream_t stream) {
    if (r == 3) return launch_forward_shaped<3, 3, FLIPPED, POOL>(t, config, stream);
    if (r == 5) return launch_forward_shaped<5, 5, FLIPPED, POOL>(t, config, stream);
    return cudaErrorInvalidValue;
}

// ------------------------------------------------------------------------- weight gradient
struct TiledWgrad {
    const float* dy;
    const float* x;
    float* partial;  // [slices][K][C*R*S], then [slices][K] of bias sums
    int n, c, h, w, k, r, p, q, pad_h, pad_w;
    int kg, cb, rg, chunk;  // k-groups of KT, channels per block, row groups, row tasks per stage
    int slices, tasks_per_slice;
    int qp, ld;  // dy row length in shared memory (q rounded up to PXW), staged input row length
};

// BIAS: also sum dy per output channel (its own instantiation: the predicated adds cost a third
// of the inner loop's issue slots when nobody wants the bias gradient).
template <int S, int KT, int PXW, bool BIAS>
__global__ void __launch_bounds__(512) conv_wgrad_tiled_kernel(TiledWgrad t) {
    PYFAST_DYNAMIC_SHARED(float, smem);
    const int kb = t.kg * KT;
    float* dy_s = smem;                                      // [kb][chunk][qp]
    float* x_s = smem + kb * t.chunk * t.qp;                 // [cb][chunk][R][ld]
    const int slice = blockIdx.x, c0 = blockIdx.y * t.cb, k0 = blockIdx.z * kb;
    const int units = t.kg * t.cb * t.r;
    const int tid = threadIdx.x, threads = blockDim.x;
    const int unit = tid % units, rgi = tid / units;  // rgi >= rg: staging only
    const int cr = unit % (t.cb * t.r), kgi = unit / (t.cb * t.r);
    const int ci = cr / t.r, r = cr - ci * t.r;
    const bool bias_unit = BIAS && blockIdx.y == 0 && ci == 0 && r == 0;
    const int total_tasks = t.n * t.p;
    const int task_lo = slice * t.tasks_per_slice;
    const int task_hi = task_lo + t.tasks_per_slice < total_tasks ? task_lo + t.tasks_per_slice : total_tasks;
    const std::int64_t plane_x = (std::int64_t)t.h * t.w, plane_y = (std::int64_t)t.p * t.q;

    float acc[KT][S], acc_b[KT];
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
        acc_b[kt] = 0.0f;
#pragma unroll
        for (int s = 0; s < S; ++s) acc[kt][s] = 0.0f;
    }

    for (int t0 = task_lo; t0 < task_hi; t0 += t.chunk) {
        // dy rows [kk][task][qq], zeros past Q, past K and past the slice: one warp per row, lanes
        // along it (coalesced), so the divisions are per row, not per element.
        const int lane = tid % 32, warp = tid / 32, warps = threads / 32;
        for (int row = warp; row < kb * t.chunk; row += warps) {
            const int kk = row / t.chunk, task = row - kk * t.chunk;
            const int tk = t0 + task, ko = k0 + kk;
            const bool row_ok = tk < task_hi && ko < t.k;
            const int nn = row_ok ? tk / t.p : 0, pp = row_ok ? tk - nn * t.p : 0;
            const float* src = t.dy + ((std::int64_t)nn * t.k + (row_ok ? ko : 0)) * plane_y + (std::int64_t)pp * t.q;
            for (int qq = lane; qq < t.qp; qq += 32) {
                dy_s[row * t.qp + qq] = row_ok && qq < t.q ? __ldg(src + qq) : 0.0f;
            }
        }
        // The input rows each (task, filter row) reads, [ci][task][r][jj], jj = column + pad_w.
        for (int row = warp; row < t.cb * t.chunk * t.r; row += warps) {
            const int rr = row % t.r, rest = row / t.r;
            const int task = rest % t.chunk, cc = rest / t.chunk;
            const int tk = t0 + task, c = c0 + cc;
            const int nn = tk / t.p, i = tk - nn * t.p - t.pad_h + rr;
            const bool row_ok = tk < task_hi && c < t.c && i >= 0 && i < t.h;
            const float* src = t.x + ((std::int64_t)nn * t.c + (row_ok ? c : 0)) * plane_x +
                               (std::int64_t)(row_ok ? i : 0) * t.w - t.pad_w;
            for (int jj = lane; jj < t.ld; jj += 32) {
                const int j = jj - t.pad_w;
                x_s[row * t.ld + jj] = row_ok && j >= 0 && j < t.w ? __ldg(src + jj) : 0.0f;
            }
        }
        __syncthreads();
        if (rgi < t.rg) {
            for (int task = rgi; task < t.chunk; task += t.rg) {
                const float* xrow = x_s + ((ci * t.chunk + task) * t.r + r) * t.ld;
                const float* dyrow = dy_s + (kgi * KT * t.chunk + task) * t.qp;
                for (int q0 = 0; q0 < t.qp; q0 += PXW) {
                    float xv[PXW + S - 1];
#pragma unroll
                    for (int j = 0; j < PXW + S - 1; ++j) xv[j] = xrow[q0 + j];
#pragma unroll
                    for (int kt = 0; kt < KT; ++kt) {
                        float d[PXW];
#pragma unroll
                        for (int j = 0; j < PXW; j += 4) {
                            const float4 d4 = *reinterpret_cast<const float4*>(dyrow + kt * t.chunk * t.qp + q0 + j);
                            d[j] = d4.x;
                            d[j + 1] = d4.y;
                            d[j + 2] = d4.z;
                            d[j + 3] = d4.w;
                        }
#pragma unroll
                        for (int s = 0; s < S; ++s)
#pragma unroll
                            for (int j = 0; j < PXW; ++j) acc[kt][s] = fmaf(d[j], xv[j + s], acc[kt][s]);
                        if (bias_unit) {
#pragma unroll
                            for (int j = 0; j < PXW; ++j) acc_b[kt] += d[j];
                        }
                    }
                }
            }
        }
        __syncthreads();
    }

    // Row groups summed in order 0, 1, ..., rg-1 through shared memory (the staging space is
    // free now; the launcher sized it for this too).
    constexpr int kPerUnit = KT * (S + 1);
    if (rgi < t.rg && t.rg > 1) {
        float* mine = smem + (rgi * units + unit) * kPerUnit;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
            for (int s = 0; s < S; ++s) mine[kt * S + s] = acc[kt][s];
            mine[KT * S + kt] = acc_b[kt];
        }
    }
    __syncthreads();
    if (rgi != 0) return;
    if (t.rg > 1) {
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
            for (int s = 0; s < S; ++s) acc[kt][s] = smem[unit * kPerUnit + kt * S + s];
            acc_b[kt] = smem[unit * kPerUnit + KT * S + kt];
        }
        for (int group = 1; group < t.rg; ++group) {
            const float* theirs = smem + (group * units + unit) * kPerUnit;
#pragma unroll
            for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
                for (int s = 0; s < S; ++s) acc[kt][s] += theirs[kt * S + s];
                acc_b[kt] += theirs[KT * S + kt];
            }
        }
    }
    const int c = c0 + ci;
    if (c >= t.c) return;
    const std::int64_t crs = (std::int64_t)t.c * t.r * S;
    float* out = t.partial + (std::int64_t)slice * t.k * crs;
    float* out_b = t.partial + (std::int64_t)t.slices * t.k * crs + (std::int64_t)slice * t.k;
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
        const int ko = k0 + kgi * KT + kt;
        if (ko >= t.k) break;
#pragma unroll
        for (int s = 0; s < S; ++s) out[((std::int64_t)ko * t.c + c) * t.r * S + r * S + s] = acc[kt][s];
        if (bias_unit) out_b[ko] = acc_b[kt];
    }
}

// Weight-gradient configurations: KT output channels per thread, PXW pixels per run.
//   0: KT 8, PXW 4 (the default)   1: KT 4, PXW 4   2: KT 8, PXW 8   3: KT 4, PXW 8
constexpr int kWgradConfigs = 4;
constexpr int kWgradShape[kWgradConfigs][2] = {{8, 4}, {4, 4}, {8, 8}, {4, 8}};

// The block shape and slices of a config: K in groups of KT (at most 64 channels a block), C in
// blocks so that a block has 96..256 (k-group, c, r) units, row groups up to kTargetThreads
// threads, and enough slices for about three blocks per SM. A row task (the block's dy rows and
// its input rows) must fit shared memory: wide rows (Q near 256) take fewer input channels, then
// fewer k-groups, per block.
bool wgrad_plan(TiledWgrad& t, int s, int kt, int pxw, int sms) {
    t.qp = round_up(t.q, pxw);
    t.ld = t.qp + s - 1;
    const int kg_needed = ceil_div(t.k, kt);
    const int kg_fit = (kSharedFloats - t.r * t.ld) / (kt * t.qp);
    if (kg_fit < 1) return false;
    t.kg = kg_needed < 64 / kt ? kg_needed : 64 / kt;
    t.kg = t.kg < kg_fit ? t.kg : kg_fit;
    const int cb_fit = (kSharedFloats - t.kg * kt * t.qp) / (t.r * t.ld);
    int cb = kTargetThreads / (t.kg * t.r);
    cb = cb > cb_fit ? cb_fit : cb;
    cb = cb < 1 ? 1 : (cb > t.c ? t.c : cb);
    t.cb = t.c > 0 ? ceil_div(t.c, ceil_div(t.c, cb)) : 1;  // no input channel: no dw, one empty block row
    const int units = t.kg * t.cb * t.r;
    if (units > 512) return false;
    // Row tasks per stage: two per row group, within shared memory; no more groups than tasks.
    const int per_task = t.kg * kt * t.qp + t.cb * t.r * t.ld;
    const int fit = kSharedFloats / per_task;
    if (fit < 1) return false;
    t.rg = kTargetThreads / units > 1 ? kTargetThreads / units : 1;
    t.rg = t.rg < fit ? t.rg : fit;
    t.chunk = 2 * t.rg < fit ? 2 * t.rg : fit;
    while (t.rg > 1 && (std::int64_t)t.rg * units * kt * (s + 1) > kSharedFloats) --t.rg;  // the final sum
    const int tasks = t.n * t.p > 0 ? t.n * t.p : 1;  // an empty batch still writes zeros
    const int blocks_ck = ceil_div(t.c > 0 ? t.c : 1, t.cb) * ceil_div(t.k, t.kg * kt);
    int slices = ceil_div(3 * sms, blocks_ck);
    const int max_slices = ceil_div(tasks, t.chunk);
    slices = slices < max_slices ? slices : max_slices;
    t.slices = slices > 1 ? slices : 1;
    t.tasks_per_slice = ceil_div(tasks, t.slices);
    t.slices = ceil_div(tasks, t.tasks_per_slice);
    return blocks_ck <= kMaxGridY && ceil_div(t.k, t.kg * kt) <= 65535;
}

size_t wgrad_shared_bytes(const TiledWgrad& t, int s, int kt) {
    const size_t staging = (size_t)t.kg * kt * t.chunk * t.qp + (size_t)t.cb * t.chunk * t.r * t.ld;
    const size_t reduction = t.rg > 1 ? (size_t)t.rg * t.kg * t.cb * t.r * kt * (s + 1) : 0;
    return sizeof(float) * (staging > reduction ? staging : reduction);
}

TiledWgrad wgrad_params(const Conv2dParams& g, const float* dy, const float* x, float* workspace) {
    TiledWgrad t{};
    t.dy = dy;
    t.x = x;
    t.partial = workspace;
    t.n = static_cast<int>(g.n);
    t.c = static_cast<int>(g.c);
    t.h = static_cast<int>(g.h);
    t.w = static_cast<int>(g.w);
    t.k = static_cast<int>(g.k);
    t.r = static_cast<int>(g.r);
    t.p = static_cast<int>(g.p);
    t.q = static_cast<int>(g.q);
    t.pad_h = g.pad_h;
    t.pad_w = g.pad_w;
    return t;
}

bool wgrad_config_ok(int config) { return config >= 0 && config < kWgradConfigs; }

// The forward-shaped convolution of a pass: the forward itself, or the input gradient as the
// forward of dy (K channels, P x Q) into C channels of H x W with padding R-1-pad; the caller
// sets where the result goes.
TiledConv forward_shaped(const Conv2dParams& g, bool input_grad, const float* in, const float* w,
                         const float* bias = nullptr, bool relu = false) {
    TiledConv t{};
    t.in = in;
    t.w = w;
    t.bias = bias;
    t.relu = relu;
    t.n = static_cast<int>(g.n);
    t.cin = static_cast<int>(input_grad ? g.k : g.c);
    t.hin = static_cast<int>(input_grad ? g.p : g.h);
    t.win = static_cast<int>(input_grad ? g.q : g.w);
    t.kout = static_cast<int>(input_grad ? g.c : g.k);
    t.hout = static_cast<int>(input_grad ? g.h : g.p);
    t.wout = static_cast<int>(input_grad ? g.w : g.q);
    t.pad_h = input_grad ? static_cast<int>(g.r) - 1 - g.pad_h : g.pad_h;
    t.pad_w = input_grad ? static_cast<int>(g.s) - 1 - g.pad_w : g.pad_w;
    return t;
}

}  // namespace

int conv2d_tiled_config_count(Conv2dPass pass) {
    return pass == Conv2dPass::kBackwardWeight ? kWgradConfigs : kForwardConfigs;
}

bool conv2d_tiled_fits(const Conv2dParams& g) {
    const std::int64_t limit = 0x7fffffff;
    const bool square = g.r == g.s && (g.r == 3 || g.r == 5);
    const bool unit_steps = g.stride_h == 1 && g.stride_w == 1 && g.dilation_h == 1 && g.dilation_w == 1;
    // The input gradient runs the forward kernel with padding R-1-pad, which must not be negative.
    const bool pads = g.pad_h <= g.r - 1 && g.pad_w <= g.s - 1;
    return square && unit_steps && pads && g.q <= 256 && g.n * g.c * g.h * g.w <= limit &&
           g.n * g.k * g.p * g.q <= limit && g.n * g.p <= limit && g.k * g.c * g.r * g.s <= limit;
}

std::int64_t conv2d_tiled_workspace_size(const Conv2dParams& g, int config) {
    if (!conv2d_tiled_fits(g)) return 0;
    if (config < 0) config = 0;
    if (!wgrad_config_ok(config)) return 0;
    TiledWgrad t = wgrad_params(g, nullptr, nullptr, nullptr);
    if (!wgrad_plan(t, static_cast<int>(g.s), kWgradShape[config][0], kWgradShape[config][1], sm_count())) {
        return 0;
    }
    return (std::int64_t)t.slices * g.k * (g.c * g.r * g.s + 1);
}

std::vector<int> conv2d_tiled_plan(const Conv2dParams& g, Conv2dPass pass, int config, int sms) {
    if (!conv2d_tiled_fits(g)) return {};
    if (pass == Conv2dPass::kBackwardWeight) {
        if (config < 0) config = 0;
        if (!wgrad_config_ok(config)) return {};
        const int kt = kWgradShape[config][0], pxw = kWgradShape[config][1];
        TiledWgrad t = wgrad_params(g, nullptr, nullptr, nullptr);
        if (!wgrad_plan(t, t.r, kt, pxw, sms)) return {};
        return {kt, pxw, t.kg, t.cb, t.rg, t.chunk, t.slices, t.tasks_per_slice, t.qp, t.ld,
                round_up(t.kg * t.cb * t.r * t.rg, 32), static_cast<int>(wgrad_shared_bytes(t, t.r, kt))};
    }
    const bool input_grad = pass == Conv2dPass::kBackwardInput;
    const bool pool = pass == Conv2dPass::kForwardPool;
    if (config < 0) config = input_grad && g.c < 8 ? 4 : 0;
    if (config >= kForwardConfigs || (pool && !pool_config(config))) return {};
    const int px = kForwardShape[config][0], kt = kForwardShape[config][1], py = pool ? 2 : 1;
    TiledConv t = forward_shaped(g, input_grad, nullptr, nullptr);
    const int r = static_cast<int>(g.r), s = static_cast<int>(g.s);
    if (!forward_tile(t, r, s, px, kt, py)) return {};
    const int in_floats = round_up(t.cb * (t.ty * py + r - 1) * ((t.tx * px + s - 1) | 1), 4);
    return {px, kt, t.tx, t.ty, t.kg, t.cb, t.tiles_w, t.tiles_h, round_up(t.tx * t.ty * t.kg, 32),
            static_cast<int>(sizeof(float) * (in_floats + t.cb * r * s * t.kg * kt))};
}

cudaError_t conv2d_tiled(const float* x, const float* w, const float* bias, float* y, const Conv2dParams& g,
                         bool relu, int config, cudaStream_t stream) {
    if (!conv2d_tiled_fits(g)) return cudaErrorInvalidValue;
    TiledConv t = forward_shaped(g, false, x, w, bias, relu);
    t.out = y;
    return launch_forward_shaped<false>(t, static_cast<int>(g.r), config < 0 ? 0 : config, stream);
}

cudaError_t conv2d_tiled_max_pool(const float* x, const float* w, const float* bias, float* y_pool,
                                  long long* indices, const Conv2dParams& g, bool relu, int config,
                                  cudaStream_t stream) {
    if (!conv2d_tiled_fits(g) || g.p < 2 || g.q < 2) return cudaErrorInvalidValue;
    TiledConv t = forward_shaped(g, false, x, w, bias, relu);
    t.pool_out = y_pool;
    t.pool_indices = indices;
    t.pool_h = static_cast<int>(g.p / 2);
    t.pool_w = static_cast<int>(g.q / 2);
    return launch_forward_shaped<false, true>(t, static_cast<int>(g.r), config < 0 ? 0 : config, stream);
}

cudaError_t conv2d_tiled_backward_input(const float* dy, const float* w, float* dx, const Conv2dParams& g,
                                        int config, cudaStream_t stream) {
    if (!conv2d_tiled_fits(g)) return cudaErrorInvalidValue;
    TiledConv t = forward_shaped(g, true, dy, w);
    t.out = dx;
    if (config < 0) config = g.c < 8 ? 4 : 0;  // one or few input channels: KT = 1 (as conv2d_tiled_plan)
    return launch_forward_shaped<true>(t, static_cast<int>(g.r), config, stream);
}

cudaError_t conv2d_tiled_backward_weight(const float* dy, const float* x, float* dw, float* db, float* workspace,
                                         const Conv2dParams& g, int config, cudaStream_t stream) {
    if (!conv2d_tiled_fits(g) || workspace == nullptr) return cudaErrorInvalidValue;
    if (config < 0) config = 0;
    if (!wgrad_config_ok(config)) return cudaErrorInvalidValue;
    const int kt = kWgradShape[config][0], pxw = kWgradShape[config][1];
    TiledWgrad t = wgrad_params(g, dy, x, workspace);
    if (!wgrad_plan(t, t.r, kt, pxw, sm_count())) return cudaErrorInvalidValue;
    const size_t bytes = wgrad_shared_bytes(t, t.r, kt);
    if (bytes > sizeof(float) * kSharedFloats) return cudaErrorInvalidValue;
    const dim3 grid(t.slices, ceil_div(t.c, t.cb), ceil_div(t.k, t.kg * kt));
    const int threads = round_up(t.kg * t.cb * t.r * t.rg, 32);
    auto launch = [&](auto kernel) { return launch_kernel(kernel, grid, threads, bytes, stream, t); };
    // Instantiations by (R, config, bias gradient wanted).
    const int key = (t.r * 10 + config) * 2 + (db != nullptr ? 1 : 0);
    cudaError_t status = cudaSuccess;
    switch (key) {
        case 60: status = launch(conv_wgrad_tiled_kernel<3, 8, 4, false>); break;
        case 61: status = launch(conv_wgrad_tiled_kernel<3, 8, 4, true>); break;
        case 62: status = launch(conv_wgrad_tiled_kernel<3, 4, 4, false>); break;
        case 63: status = launch(conv_wgrad_tiled_kernel<3, 4, 4, true>); break;
        case 64: status = launch(conv_wgrad_tiled_kernel<3, 8, 8, false>); break;
        case 65: status = launch(conv_wgrad_tiled_kernel<3, 8, 8, true>); break;
        case 66: status = launch(conv_wgrad_tiled_kernel<3, 4, 8, false>); break;
        case 67: status = launch(conv_wgrad_tiled_kernel<3, 4, 8, true>); break;
        case 100: status = launch(conv_wgrad_tiled_kernel<5, 8, 4, false>); break;
        case 101: status = launch(conv_wgrad_tiled_kernel<5, 8, 4, true>); break;
        case 102: status = launch(conv_wgrad_tiled_kernel<5, 4, 4, false>); break;
        case 103: status = launch(conv_wgrad_tiled_kernel<5, 4, 4, true>); break;
        case 104: status = launch(conv_wgrad_tiled_kernel<5, 8, 8, false>); break;
        case 105: status = launch(conv_wgrad_tiled_kernel<5, 8, 8, true>); break;
        case 106: status = launch(conv_wgrad_tiled_kernel<5, 4, 8, false>); break;
        case 107: status = launch(conv_wgrad_tiled_kernel<5, 4, 8, true>); break;
        default: return cudaErrorInvalidValue;
    }
    PYFAST_TRY(status);
    const std::int64_t weights = g.k * g.c * g.r * g.s;
    // dw (and db) = the slices' sums added in slice order: split-K's reduction, no epilogue.
    const auto sum_slices = [&](const float* partial, std::int64_t size, float* out) {
        return launch_grid_stride(tiled_gemm::splitk_reduce_kernel<>, size, stream, partial, t.slices, size,
                                  static_cast<int>(size), static_cast<const float*>(nullptr), Activation::kNone, out);
    };
    status = sum_slices(workspace, weights, dw);
    if (status != cudaSuccess || db == nullptr) return status;
    return sum_slices(workspace + (std::int64_t)t.slices * weights, g.k, db);
}

}  // namespace pyfast
