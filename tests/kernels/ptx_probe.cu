// ptx_probe.cu - one warp runs one instruction of ptx.cuh on inputs from global memory, loading
// and storing the fragments in the layouts ptx.cuh's header gives (from the PTX ISA): the test
// of those layouts (tests/test_ptx.py), on the GPU and under the emulator alike.

#include <cuda_bf16.h>

#include "common/common.cuh"
#include "common/ptx.cuh"
#include "ptx_probe.cuh"

namespace pyfast {
namespace {

__device__ __forceinline__ std::uint32_t bf16_pair(float lo, float hi) {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
    return *reinterpret_cast<const std::uint32_t*>(&pair);
}

template <bool BF16>
__global__ void mma_probe_kernel(const float* a, const float* b, const float* c, float* d) {
    constexpr int K = BF16 ? 16 : 8;
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    std::uint32_t a_frag[4], b_frag[2];
    float acc[4];
    for (int q = 0; q < 4; ++q) {
        const int row = g + 8 * (q % 2), word = t + 4 * (q / 2);  // a0..a3: (g, t) (g+8, t) (g, t+4) (g+8, t+4)
        a_frag[q] = BF16 ? bf16_pair(a[row * K + 2 * word], a[row * K + 2 * word + 1])
                         : ptx::cvt_rna_tf32(a[row * K + word]);
        acc[q] = c[(g + 8 * (q / 2)) * 8 + 2 * t + q % 2];  // c0..c3: (g, 2t) (g, 2t+1) (g+8, 2t) (g+8, 2t+1)
    }
    for (int q = 0; q < 2; ++q) {
        const int word = t + 4 * q;  // b0, b1: k word t, t + 4 at column g
        b_frag[q] = BF16 ? bf16_pair(b[(2 * word) * 8 + g], b[(2 * word + 1) * 8 + g]) : ptx::cvt_rna_tf32(b[word * 8 + g]);
    }
    if constexpr (BF16) {
        ptx::mma_m16n8k16_bf16(acc, a_frag, b_frag);
    } else {
        ptx::mma_m16n8k8_tf32(acc, a_frag, b_frag);
    }
    for (int q = 0; q < 4; ++q) d[(g + 8 * (q / 2)) * 8 + 2 * t + q % 2] = acc[q];
}

template <int MATRICES, bool TRANS>
__global__ void ldmatrix_probe_kernel(const std::uint16_t* tiles, std::uint32_t* out) {
    __shared__ __align__(16) std::uint16_t smem[4 * 64];
    const int lane = threadIdx.x;
    for (int i = lane; i < MATRICES * 64; i += 32) smem[i] = tiles[i];
    __syncwarp();
    std::uint32_t r[MATRICES];
    // Lane 8 m + row supplies the address of row `row` of matrix m (lanes past the matrices: any).
    const int m = (lane / 8) % MATRICES, row = lane % 8;
    ptx::ldmatrix<MATRICES, TRANS>(r, smem + m * 64 + row * 8);
    for (int i = 0; i < MATRICES; ++i) out[lane * MATRICES + i] = r[i];
}

template <int BYTES>
__global__ void cp_async_probe_kernel(const float* src, const int* src_bytes, float* out) {
    __shared__ __align__(16) float smem[16];
    constexpr int FLOATS = BYTES / 4;
    const int i = threadIdx.x;
    ptx::cp_async<BYTES>(smem + i * FLOATS, src + i * FLOATS, src_bytes[i]);
    ptx::cp_async_commit();
    ptx::cp_async_wait<0>();
    __syncthreads();
    for (int j = 0; j < FLOATS; ++j) out[i * FLOATS + j] = smem[i * FLOATS + j];
}

}  // namespace

cudaError_t ptx_probe_mma(const float* a, const float* b, const float* c, float* d, bool bf16, cudaStream_t stream) {
    if (device_attribute<cudaDevAttrComputeCapabilityMajor>() < 8) return cudaErrorNotSupported;
    return bf16 ? launch_kernel(mma_probe_kernel<true>, 1, 32, 0, stream, a, b, c, d)
                : launch_kernel(mma_probe_kernel<false>, 1, 32, 0, stream, a, b, c, d);
}

cudaError_t ptx_probe_ldmatrix(const std::uint16_t* tiles, std::uint32_t* out, int matrices, bool trans,
                               cudaStream_t stream) {
    if (device_attribute<cudaDevAttrComputeCapabilityMajor>() < 8) return cudaErrorNotSupported;
    switch (matrices * 2 + (trans ? 1 : 0)) {
        case 2: return launch_kernel(ldmatrix_probe_kernel<1, false>, 1, 32, 0, stream, tiles, out);
        case 3: return launch_kernel(ldmatrix_probe_kernel<1, true>, 1, 32, 0, stream, tiles, out);
        case 4: return launch_kernel(ldmatrix_probe_kernel<2, false>, 1, 32, 0, stream, tiles, out);
        case 5: return launch_kernel(ldmatrix_probe_kernel<2, true>, 1, 32, 0, stream, tiles, out);
        case 8: return launch_kernel(ldmatrix_probe_kernel<4, false>, 1, 32, 0, stream, tiles, out);
        case 9: return launch_kernel(ldmatrix_probe_kernel<4, true>, 1, 32, 0, stream, tiles, out);
        default: return cudaErrorInvalidValue;
    }
}

cudaError_t ptx_probe_cp_async(const float* src, const int* src_bytes, float* out, int chunk_bytes,
                               cudaStream_t stream) {
    if (device_attribute<cudaDevAttrComputeCapabilityMajor>() < 8) return cudaErrorNotSupported;
    switch (chunk_bytes) {
        case 4: return launch_kernel(cp_async_probe_kernel<4>, 1, 4, 0, stream, src, src_bytes, out);
        case 8: return launch_kernel(cp_async_probe_kernel<8>, 1, 4, 0, stream, src, src_bytes, out);
        case 16: return launch_kernel(cp_async_probe_kernel<16>, 1, 4, 0, stream, src, src_bytes, out);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace pyfast
