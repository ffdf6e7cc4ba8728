// ptx_probe.cuh - host launchers of ptx_probe.cu: each wrapper of ptx.cuh run by one warp on
// given inputs, so a test can hold the result against a plain product, on the GPU (the
// hardware's layouts) and under the emulator (its implementation of them).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pyfast {

// d (16x8) = a (16xK) b (Kx8) + c (16x8), row-major float32; the operands rounded to TF32 (K = 8)
// or to BF16 (K = 16) on the way into the fragments. cudaErrorNotSupported below sm_80.
cudaError_t ptx_probe_mma(const float* a, const float* b, const float* c, float* d, bool bf16, cudaStream_t stream);

// `matrices` (1, 2, 4) 8x8 tiles of 16-bit values (row-major, one after another) through
// ldmatrix (.trans when asked); out[lane * matrices + i] = register i of lane.
cudaError_t ptx_probe_ldmatrix(const std::uint16_t* tiles, std::uint32_t* out, int matrices, bool trans,
                               cudaStream_t stream);

// Four threads each cp.async one `chunk_bytes` chunk (4, 8 or 16) of src into shared memory with
// src_bytes[i] of it read (the rest zeros), commit, wait, then write the chunks to out.
cudaError_t ptx_probe_cp_async(const float* src, const int* src_bytes, float* out, int chunk_bytes,
                               cudaStream_t stream);

}  // namespace pyfast
