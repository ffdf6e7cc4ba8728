// ptx.cuh - one device function per PTX instruction the kernels write as inline assembly, so
// that under nvcc each is exactly its asm statement and under the emulator (csrc/emu/ptx.cpp)
// a warp-collective implementation of the PTX ISA's semantics and fragment layouts.
//   cvt_rna_tf32        cvt.rna.tf32.f32: round to TF32 (10-bit mantissa), nearest, ties away
//   mma_m16n8k8_tf32    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, C += A B
//   mma_m16n8k16_bf16   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, C += A B
//   ldmatrix<X, TRANS>  ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16
//   cp_async<BYTES>     cp.async.{ca,cg}.shared.global (zero-filled past src_bytes),
//   cp_async_commit / cp_async_wait<N>   cp.async.commit_group / cp.async.wait_group N
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k8 / m16n8k16", "ldmatrix"), with
// g = lane / 4 and t = lane % 4:
//   m16n8k8 TF32  A a0..a3 = (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4); B b0, b1 = (k t, n g),
//                 (k t + 4, n g)
//   m16n8k16 BF16 A words as TF32's at k pairs: word (r, c) holds k = 2c, 2c + 1 (the lower in the
//                 low half), word columns t and t + 4; B b0, b1 = k 2t, 2t + 1 and 2t + 8, 2t + 9 at n g
//   C / D         c0..c3 = (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)
//   ldmatrix      matrix i's row r from the address lane 8 i + r supplies; lane l gets row l / 4,
//                 columns 2 (l % 4), 2 (l % 4) + 1 of each matrix (.trans: that of the transpose)
// tests/kernels/ptx_probe.cu runs each on given inputs; tests/test_ptx.py holds the results against
// plain products, on the emulator and on a GPU.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#if defined(PYFAST_EMULATOR)
namespace pyfast_emu {
std::uint32_t cvt_rna_tf32(float x);
void mma_m16n8k8_tf32(float* c, const std::uint32_t* a, const std::uint32_t* b, const char* file, int line);
void mma_m16n8k16_bf16(float* c, const std::uint32_t* a, const std::uint32_t* b, const char* file, int line);
void ldmatrix(std::uint32_t* r, int matrices, bool trans, const void* row, const char* file, int line);
void cp_async(void* shared, const void* global, int bytes, int src_bytes, const char* file, int line);
void cp_async_commit();
void cp_async_wait(int pending_groups);
}  // namespace pyfast_emu
#define PYFAST_PTX_HERE , const char *file_ = __builtin_FILE(), int line_ = __builtin_LINE()
#else
#define PYFAST_PTX_HERE
#endif

namespace pyfast {
namespace ptx {

__device__ __forceinline__ std::uint32_t cvt_rna_tf32(float x) {
#if defined(PYFAST_EMULATOR)
    return pyfast_emu::cvt_rna_tf32(x);
#else
    std::uint32_t w = 0;
#if __CUDA_ARCH__ >= 800
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(w) : "f"(x));
#endif
    return w;
#endif
}

// c (16x8, float) += a (16x8, TF32 words) * b (8x8, TF32 words), fragments as above.
__device__ __forceinline__ void mma_m16n8k8_tf32(float* c, const std::uint32_t* a,
                                                 const std::uint32_t* b PYFAST_PTX_HERE) {
#if defined(PYFAST_EMULATOR)
    pyfast_emu::mma_m16n8k8_tf32(c, a, b, file_, line_);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// c (16x8, float) += a (16x16, BF16 pairs) * b (16x8, BF16 pairs).
__device__ __forceinline__ void mma_m16n8k16_bf16(float* c, const std::uint32_t* a,
                                                  const std::uint32_t* b PYFAST_PTX_HERE) {
#if defined(PYFAST_EMULATOR)
    pyfast_emu::mma_m16n8k16_bf16(c, a, b, file_, line_);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// MATRICES (1, 2 or 4) 8x8 tiles of 16-bit values from shared memory: `row` is the 16-byte
// aligned address of the row this lane supplies (lanes 0 .. 8 MATRICES - 1 supply them).
template <int MATRICES, bool TRANS = false>
__device__ __forceinline__ void ldmatrix(std::uint32_t (&r)[MATRICES], const void* row PYFAST_PTX_HERE) {
    static_assert(MATRICES == 1 || MATRICES == 2 || MATRICES == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(PYFAST_EMULATOR)
    pyfast_emu::ldmatrix(r, MATRICES, TRANS, row, file_, line_);
#elif __CUDA_ARCH__ >= 800
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
    if constexpr (MATRICES == 1 && !TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(address));
    } else if constexpr (MATRICES == 1) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(address));
    } else if constexpr (MATRICES == 2 && !TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(address));
    } else if constexpr (MATRICES == 2) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(address));
    } else if constexpr (!TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
    }
#endif
}

// BYTES (4, 8 or 16) from global to shared memory, asynchronously; bytes past src_bytes are
// zeros (src_bytes 0: nothing is read). Visible after cp_async_wait covers its group.
template <int BYTES>
__device__ __forceinline__ void cp_async(void* shared, const void* global, int src_bytes = BYTES PYFAST_PTX_HERE) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(PYFAST_EMULATOR)
    pyfast_emu::cp_async(shared, global, BYTES, src_bytes, file_, line_);
#elif __CUDA_ARCH__ >= 800
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
    if constexpr (BYTES == 16) {  // .cg: L2 only, for data read once per block
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global), "r"(src_bytes));
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(address), "l"(global), "n"(BYTES),
                     "r"(src_bytes));
    }
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(PYFAST_EMULATOR)
    pyfast_emu::cp_async_commit();
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most PENDING of this thread's committed groups are still in flight.
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
#if defined(PYFAST_EMULATOR)
    pyfast_emu::cp_async_wait(PENDING);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
#endif
}

}  // namespace ptx
}  // namespace pyfast

#undef PYFAST_PTX_HERE
