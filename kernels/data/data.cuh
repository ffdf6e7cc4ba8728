// data.cuh - host launchers of data.cu: batches gathered from a data set that lives on the GPU.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pyfast {

struct GatherShape {
    std::int64_t rows;   // samples in the data set (index values outside [0, rows) give zeros)
    std::int64_t batch;  // samples gathered
    std::int64_t planes; // product of the dimensions between the sample axis and the last two
    int h, w;            // the last two dimensions (1, features for a matrix)
};

// out[b, p, i, j] = x[index[b], p, i - shifts[b][0], j - shifts[b][1]], zero where that falls
// outside the image or index[b] outside the data set; shifts may be nullptr (no shift).
cudaError_t gather_batch(const float* x, const std::int64_t* index, const std::int32_t* shifts, float* out,
                         GatherShape shape, cudaStream_t stream);

}  // namespace pyfast
