// data.cu - a training batch gathered from a data set resident on the GPU: rows picked by an
// index (an epoch's shuffled order), each image optionally shifted by whole pixels with zeros
// filling in (the digits augmentation), in one pass that writes every output element once.
// Math: out[b, p, i, j] = x[index[b], p, i - dy_b, j - dx_b] (0 outside), as
//       pyfast.reference.gather_batch.
// One thread per output element along a row of the output plane (coalesced stores; the reads
// are one source row, shifted); blockIdx.y walks the (b, p, i) rows, so there is no 64-bit
// division per element. Memory-bound: a batch of 256 digits (200 KB) is a few microseconds,
// one launch instead of a host copy per batch.

#include "common/common.cuh"
#include "data/data.cuh"

namespace pyfast {
namespace {

__global__ void gather_batch_kernel(const float* __restrict__ x, const std::int64_t* __restrict__ index,
                                    const std::int32_t* __restrict__ shifts, float* __restrict__ out,
                                    GatherShape g) {
    const std::int64_t rows_out = g.batch * g.planes * g.h;
    for (std::int64_t row = blockIdx.y; row < rows_out; row += gridDim.y) {
        const int i = static_cast<int>(row % g.h);
        const std::int64_t bp = row / g.h;
        const std::int64_t b = bp / g.planes, p = bp - b * g.planes;
        const std::int64_t source = __ldg(index + b);
        const int dy = shifts != nullptr ? __ldg(shifts + 2 * b) : 0;
        const int dx = shifts != nullptr ? __ldg(shifts + 2 * b + 1) : 0;
        const int si = i - dy;
        const bool row_ok = source >= 0 && source < g.rows && si >= 0 && si < g.h;
        const float* src = x + ((source * g.planes + p) * g.h + si) * g.w;
        float* dst = out + row * g.w;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < g.w; j += gridDim.x * blockDim.x) {
            const int sj = j - dx;
            dst[j] = row_ok && sj >= 0 && sj < g.w ? __ldg(src + sj) : 0.0f;
        }
    }
}

}  // namespace

cudaError_t gather_batch(const float* x, const std::int64_t* index, const std::int32_t* shifts, float* out,
                         GatherShape g, cudaStream_t stream) {
    const std::int64_t rows_out = g.batch * g.planes * g.h;
    if (rows_out <= 0 || g.w <= 0) return cudaSuccess;
    const int threads = g.w >= 128 ? 128 : 32;
    const std::int64_t blocks_x = ceil_div<std::int64_t>(g.w, threads);
    const dim3 grid(static_cast<unsigned>(blocks_x < 1024 ? blocks_x : 1024),
                    static_cast<unsigned>(rows_out < kMaxGridY ? rows_out : kMaxGridY));
    return launch_kernel(gather_batch_kernel, grid, threads, 0, stream, x, index, shifts, out, g);
}

}  // namespace pyfast
