// pyfast_emu.h - the device side of CUDA C++, for the host compiler: qualifiers, built-in
// variables, vector types, barriers, warp shuffles and votes, atomics, cached loads, math
// intrinsics, and the launch that runs a kernel on the CPU (csrc/emu/runtime.cpp).
//
// How a launch runs: synchronously, one block after another; a block's threads are fibers
// (user-space contexts, each with its own stack) on the launching host thread. A thread runs
// until it reaches a barrier, a warp collective (shuffle, vote, __syncwarp, mma.sync, ...) or
// its end, then the next ready thread runs. A barrier releases when every thread it names has
// arrived at it; what would hang or be undefined on a GPU (a barrier reached from different
// lines, a barrier some threads exited before, a collective naming an exited lane, a deadlock)
// ends the launch with an error naming the source line, block and thread.
// Static __shared__ variables are function statics: blocks run one at a time, so each block has
// them to itself; they are poisoned (all bits set: NaN as float) before every block, as is the
// dynamic shared memory (a __shared__ variable of a device function the kernel calls is not).
// Kernel sources use PYFAST_DYNAMIC_SHARED and pyfast::launch_kernel (kernels/common/common.cuh) so that
// they compile unchanged here and under nvcc.
#pragma once

#include <math.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "pyfast_emu_runtime.h"

// ----------------------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__ static
#define __managed__
#define __grid_constant__
// Function statics: blocks run one at a time, so each block has them to itself. The runtime finds
// a kernel's statics in the module's symbol table and poisons them before each of its blocks.
#define __shared__ static

// ---------------------------------------------------------------- vector types (CUDA alignment)
#define PYFAST_EMU_VECTOR1(T, NAME, ALIGN)                                \
    struct alignas(ALIGN) NAME {                                          \
        T x;                                                              \
    };                                                                    \
    inline NAME make_##NAME(T x) { return NAME{x}; }
#define PYFAST_EMU_VECTOR2(T, NAME, ALIGN)                                \
    struct alignas(ALIGN) NAME {                                          \
        T x, y;                                                           \
    };                                                                    \
    inline NAME make_##NAME(T x, T y) { return NAME{x, y}; }
#define PYFAST_EMU_VECTOR3(T, NAME, ALIGN)                                \
    struct alignas(ALIGN) NAME {                                          \
        T x, y, z;                                                        \
    };                                                                    \
    inline NAME make_##NAME(T x, T y, T z) { return NAME{x, y, z}; }
#define PYFAST_EMU_VECTOR4(T, NAME, ALIGN)                                \
    struct alignas(ALIGN) NAME {                                          \
        T x, y, z, w;                                                     \
    };                                                                    \
    inline NAME make_##NAME(T x, T y, T z, T w) { return NAME{x, y, z, w}; }

PYFAST_EMU_VECTOR1(signed char, char1, 1)
PYFAST_EMU_VECTOR2(signed char, char2, 2)
PYFAST_EMU_VECTOR4(signed char, char4, 4)
PYFAST_EMU_VECTOR1(unsigned char, uchar1, 1)
PYFAST_EMU_VECTOR2(unsigned char, uchar2, 2)
PYFAST_EMU_VECTOR4(unsigned char, uchar4, 4)
PYFAST_EMU_VECTOR2(short, short2, 4)
PYFAST_EMU_VECTOR4(short, short4, 8)
PYFAST_EMU_VECTOR2(unsigned short, ushort2, 4)
PYFAST_EMU_VECTOR4(unsigned short, ushort4, 8)
PYFAST_EMU_VECTOR1(int, int1, 4)
PYFAST_EMU_VECTOR2(int, int2, 8)
PYFAST_EMU_VECTOR3(int, int3, 4)
PYFAST_EMU_VECTOR4(int, int4, 16)
PYFAST_EMU_VECTOR1(unsigned int, uint1, 4)
PYFAST_EMU_VECTOR2(unsigned int, uint2, 8)
PYFAST_EMU_VECTOR3(unsigned int, uint3, 4)
PYFAST_EMU_VECTOR4(unsigned int, uint4, 16)
PYFAST_EMU_VECTOR1(float, float1, 4)
PYFAST_EMU_VECTOR2(float, float2, 8)
PYFAST_EMU_VECTOR3(float, float3, 4)
PYFAST_EMU_VECTOR4(float, float4, 16)
PYFAST_EMU_VECTOR2(long long, longlong2, 16)
PYFAST_EMU_VECTOR2(unsigned long long, ulonglong2, 16)
PYFAST_EMU_VECTOR2(double, double2, 16)

#undef PYFAST_EMU_VECTOR1
#undef PYFAST_EMU_VECTOR2
#undef PYFAST_EMU_VECTOR3
#undef PYFAST_EMU_VECTOR4

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

constexpr int warpSize = 32;

// ------------------------------------------------------------------------ built-in variables
namespace pyfast_emu {

// The running thread; blocks run one at a time, so the block's variables are plain globals.
struct ThreadState;
extern ThreadState* g_thread;
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;
const uint3& thread_idx();  // of g_thread

}  // namespace pyfast_emu

#define threadIdx (::pyfast_emu::thread_idx())
#define blockIdx (static_cast<const uint3&>(::pyfast_emu::g_block_idx))
#define blockDim (static_cast<const dim3&>(::pyfast_emu::g_block_dim))
#define gridDim (static_cast<const dim3&>(::pyfast_emu::g_grid_dim))

// ------------------------------------------------------------ barriers and warp collectives
namespace pyfast_emu {

enum class Barrier : int { kSync, kCount, kAnd, kOr };
int block_barrier(Barrier kind, int predicate, const char* file, int line);

enum class WarpOp : int {
    kSyncwarp,
    kShflIdx,
    kShflUp,
    kShflDown,
    kShflXor,
    kBallot,
    kAny,
    kAll,
    kMatchAny,
    kReduceAdd,
    kReduceMin,
    kReduceMax,
    kReduceAnd,
    kReduceOr,
    kReduceXor,
    kMma,       // PTX mma.sync (csrc/emu/ptx.cpp)
    kLdmatrix,  // PTX ldmatrix
};

// What one lane brings to a warp collective and takes from it. `value` / `result` carry the
// bits of a shuffled or voted value; `operand` is the source lane, delta or lane mask (shuffles)
// or the predicate (votes); `data` points at the lane's fragments (mma, ldmatrix).
struct WarpSlot {
    std::uint64_t value = 0;
    std::uint64_t result = 0;
    int operand = 0;
    int width = 32;
    void* data = nullptr;
};

// Applies a completed collective: slots[l] for the lanes of `mask`, null for the others.
using WarpCombine = void (*)(WarpSlot* const* slots, unsigned mask, const void* info);

// Blocks the calling thread until every lane of `mask` has reached the same collective (the
// same op and mask; the same line too, except for __syncwarp), then `combine` runs once.
void warp_collective(WarpOp op, unsigned mask, WarpSlot* slot, WarpCombine combine, const void* info,
                     const char* file, int line);
unsigned active_mask();

// A fault a GPU would report (misaligned or null access, trap): ends the launch with `status`.
[[noreturn]] void fault(cudaError_t status, const char* what, const char* file, int line);

template <typename T>
std::uint64_t to_bits(T value) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move at most 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    return bits;
}

template <typename T>
T from_bits(std::uint64_t bits) {
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

void combine_shuffle(WarpSlot* const* slots, unsigned mask, const void* info);
void combine_vote(WarpSlot* const* slots, unsigned mask, const void* info);
void combine_reduce(WarpSlot* const* slots, unsigned mask, const void* info);

template <typename T>
T shuffle(WarpOp op, unsigned mask, T var, int operand, int width, const char* file, int line) {
    WarpSlot slot;
    slot.value = to_bits(var);
    slot.operand = operand;
    slot.width = width;
    warp_collective(op, mask, &slot, combine_shuffle, nullptr, file, line);
    return from_bits<T>(slot.result);
}

template <typename T>
inline void check_access(const T* p, const char* file, int line) {
    if (p == nullptr) fault(cudaErrorIllegalAddress, "load or store through a null pointer", file, line);
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0) {
        fault(cudaErrorMisalignedAddress, "vector load or store at an address not aligned to its size", file, line);
    }
}

}  // namespace pyfast_emu

#define PYFAST_EMU_HERE const char *file_ = __builtin_FILE(), int line_ = __builtin_LINE()

inline void __syncthreads(PYFAST_EMU_HERE) {
    ::pyfast_emu::block_barrier(::pyfast_emu::Barrier::kSync, 0, file_, line_);
}
inline int __syncthreads_count(int predicate, PYFAST_EMU_HERE) {
    return ::pyfast_emu::block_barrier(::pyfast_emu::Barrier::kCount, predicate, file_, line_);
}
inline int __syncthreads_and(int predicate, PYFAST_EMU_HERE) {
    return ::pyfast_emu::block_barrier(::pyfast_emu::Barrier::kAnd, predicate, file_, line_);
}
inline int __syncthreads_or(int predicate, PYFAST_EMU_HERE) {
    return ::pyfast_emu::block_barrier(::pyfast_emu::Barrier::kOr, predicate, file_, line_);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, PYFAST_EMU_HERE) {
    ::pyfast_emu::WarpSlot slot;
    ::pyfast_emu::warp_collective(::pyfast_emu::WarpOp::kSyncwarp, mask, &slot, nullptr, nullptr, file_, line_);
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, PYFAST_EMU_HERE) {
    return ::pyfast_emu::shuffle(::pyfast_emu::WarpOp::kShflIdx, mask, var, src_lane, width, file_, line_);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, PYFAST_EMU_HERE) {
    return ::pyfast_emu::shuffle(::pyfast_emu::WarpOp::kShflUp, mask, var, static_cast<int>(delta), width, file_,
                                 line_);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, PYFAST_EMU_HERE) {
    return ::pyfast_emu::shuffle(::pyfast_emu::WarpOp::kShflDown, mask, var, static_cast<int>(delta), width, file_,
                                 line_);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, PYFAST_EMU_HERE) {
    return ::pyfast_emu::shuffle(::pyfast_emu::WarpOp::kShflXor, mask, var, lane_mask, width, file_, line_);
}

namespace pyfast_emu {
inline unsigned vote(WarpOp op, unsigned mask, int predicate, const char* file, int line) {
    WarpSlot slot;
    slot.operand = predicate != 0;
    warp_collective(op, mask, &slot, combine_vote, nullptr, file, line);
    return static_cast<unsigned>(slot.result);
}
template <typename T>
T reduce(WarpOp op, unsigned mask, T value, const char* file, int line) {
    static_assert(sizeof(T) == 4, "__reduce_*_sync takes 32-bit integers");
    WarpSlot slot;
    slot.value = to_bits(value);
    slot.operand = std::is_signed<T>::value;
    warp_collective(op, mask, &slot, combine_reduce, nullptr, file, line);
    return from_bits<T>(slot.result);
}
}  // namespace pyfast_emu

inline unsigned __ballot_sync(unsigned mask, int predicate, PYFAST_EMU_HERE) {
    return ::pyfast_emu::vote(::pyfast_emu::WarpOp::kBallot, mask, predicate, file_, line_);
}
inline int __any_sync(unsigned mask, int predicate, PYFAST_EMU_HERE) {
    return static_cast<int>(::pyfast_emu::vote(::pyfast_emu::WarpOp::kAny, mask, predicate, file_, line_));
}
inline int __all_sync(unsigned mask, int predicate, PYFAST_EMU_HERE) {
    return static_cast<int>(::pyfast_emu::vote(::pyfast_emu::WarpOp::kAll, mask, predicate, file_, line_));
}
inline unsigned __activemask() { return ::pyfast_emu::active_mask(); }
template <typename T>
unsigned __match_any_sync(unsigned mask, T value, PYFAST_EMU_HERE) {
    ::pyfast_emu::WarpSlot slot;
    slot.value = ::pyfast_emu::to_bits(value);
    ::pyfast_emu::warp_collective(::pyfast_emu::WarpOp::kMatchAny, mask, &slot, ::pyfast_emu::combine_vote, nullptr,
                                  file_, line_);
    return static_cast<unsigned>(slot.result);
}
#define PYFAST_EMU_REDUCE(NAME, OP)                                                              \
    inline unsigned NAME(unsigned mask, unsigned value, PYFAST_EMU_HERE) {                        \
        return ::pyfast_emu::reduce(::pyfast_emu::WarpOp::OP, mask, value, file_, line_);         \
    }                                                                                             \
    inline int NAME(unsigned mask, int value, PYFAST_EMU_HERE) {                                  \
        return ::pyfast_emu::reduce(::pyfast_emu::WarpOp::OP, mask, value, file_, line_);         \
    }
PYFAST_EMU_REDUCE(__reduce_add_sync, kReduceAdd)
PYFAST_EMU_REDUCE(__reduce_min_sync, kReduceMin)
PYFAST_EMU_REDUCE(__reduce_max_sync, kReduceMax)
PYFAST_EMU_REDUCE(__reduce_and_sync, kReduceAnd)
PYFAST_EMU_REDUCE(__reduce_or_sync, kReduceOr)
PYFAST_EMU_REDUCE(__reduce_xor_sync, kReduceXor)
#undef PYFAST_EMU_REDUCE

// Memory fences order one thread's accesses for others; threads here never run at once, so
// keeping the compiler from moving accesses across the fence is all there is to do.
inline void __threadfence() { std::atomic_signal_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_signal_fence(std::memory_order_seq_cst); }

[[noreturn]] inline void __trap(PYFAST_EMU_HERE) {
    ::pyfast_emu::fault(cudaErrorIllegalInstruction, "__trap()", file_, line_);
}
long long clock64();  // a counter, not cycles (device code calling clock() gets the host's)

inline void __nanosleep(unsigned) {}

// ------------------------------------------------------------------ loads and stores with hints
// Cache hints do not change what is read; the emulator checks what a GPU would fault on.
#define PYFAST_EMU_LOAD(NAME)                                         \
    template <typename T>                                             \
    T NAME(const T* p, PYFAST_EMU_HERE) {                             \
        ::pyfast_emu::check_access(p, file_, line_);                  \
        return *p;                                                    \
    }
PYFAST_EMU_LOAD(__ldg)
PYFAST_EMU_LOAD(__ldca)
PYFAST_EMU_LOAD(__ldcg)
PYFAST_EMU_LOAD(__ldcs)
PYFAST_EMU_LOAD(__ldlu)
PYFAST_EMU_LOAD(__ldcv)
#undef PYFAST_EMU_LOAD
#define PYFAST_EMU_STORE(NAME)                                        \
    template <typename T>                                             \
    void NAME(T* p, T value, PYFAST_EMU_HERE) {                       \
        ::pyfast_emu::check_access(p, file_, line_);                  \
        *p = value;                                                   \
    }
PYFAST_EMU_STORE(__stwb)
PYFAST_EMU_STORE(__stcg)
PYFAST_EMU_STORE(__stcs)
PYFAST_EMU_STORE(__stwt)
#undef PYFAST_EMU_STORE

// ------------------------------------------------------------------------------- atomics
// One host thread runs every thread of the launch and never switches inside an atomic, so a
// plain read-modify-write is atomic. Integer arithmetic wraps as on the GPU.
// In the profiled build (csrc/emu/profile.cpp) an atomic is one counted access at its caller's line
// (hence not inlined: its return address is in the kernel), not the read and write that do it.
namespace pyfast_emu {
#if defined(PYFAST_EMU_PROFILE)
namespace profile {
void atomic_begin(const void* address, int bytes, const void* site);
void atomic_end();
}  // namespace profile
template <typename T, typename F>
__attribute__((noinline)) T atomic_update(T* address, F&& update) {
    profile::atomic_begin(address, static_cast<int>(sizeof(T)), __builtin_return_address(0));
    const T old = *address;
    *address = update(old);
    profile::atomic_end();
    return old;
}
#else
template <typename T, typename F>
T atomic_update(T* address, F&& update) {
    const T old = *address;
    *address = update(old);
    return old;
}
#endif
template <typename T>
T wrapping_add(T a, T b) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
}
}  // namespace pyfast_emu

inline int atomicAdd(int* a, int v) {
    return ::pyfast_emu::atomic_update(a, [v](int o) { return ::pyfast_emu::wrapping_add(o, v); });
}
inline unsigned atomicAdd(unsigned* a, unsigned v) {
    return ::pyfast_emu::atomic_update(a, [v](unsigned o) { return o + v; });
}
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
    return ::pyfast_emu::atomic_update(a, [v](unsigned long long o) { return o + v; });
}
inline float atomicAdd(float* a, float v) {
    return ::pyfast_emu::atomic_update(a, [v](float o) { return o + v; });
}
inline double atomicAdd(double* a, double v) {
    return ::pyfast_emu::atomic_update(a, [v](double o) { return o + v; });
}
inline int atomicSub(int* a, int v) {
    return ::pyfast_emu::atomic_update(a, [v](int o) { return ::pyfast_emu::wrapping_add(o, -v); });
}
inline unsigned atomicSub(unsigned* a, unsigned v) {
    return ::pyfast_emu::atomic_update(a, [v](unsigned o) { return o - v; });
}
template <typename T>
T atomicExch(T* a, T v) {
    return ::pyfast_emu::atomic_update(a, [v](T) { return v; });
}
template <typename T>
T atomicMin(T* a, T v) {
    return ::pyfast_emu::atomic_update(a, [v](T o) { return v < o ? v : o; });
}
template <typename T>
T atomicMax(T* a, T v) {
    return ::pyfast_emu::atomic_update(a, [v](T o) { return v > o ? v : o; });
}
template <typename T>
T atomicAnd(T* a, T v) {
    return ::pyfast_emu::atomic_update(a, [v](T o) { return o & v; });
}
template <typename T>
T atomicOr(T* a, T v) {
    return ::pyfast_emu::atomic_update(a, [v](T o) { return o | v; });
}
template <typename T>
T atomicXor(T* a, T v) {
    return ::pyfast_emu::atomic_update(a, [v](T o) { return o ^ v; });
}
template <typename T>
T atomicCAS(T* a, T compare, T v) {
    return ::pyfast_emu::atomic_update(a, [compare, v](T o) { return o == compare ? v : o; });
}
inline unsigned atomicInc(unsigned* a, unsigned limit) {
    return ::pyfast_emu::atomic_update(a, [limit](unsigned o) { return o >= limit ? 0u : o + 1u; });
}
inline unsigned atomicDec(unsigned* a, unsigned limit) {
    return ::pyfast_emu::atomic_update(a, [limit](unsigned o) { return (o == 0u || o > limit) ? limit : o - 1u; });
}

// -------------------------------------------------------------------------- math intrinsics
// The host's libm rounds its float functions correctly or nearly so; the GPU's are within the
// CUDA guide's ulp bounds (and -use_fast_math differs more): tests compare with tolerances.
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0

inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(nearbyintf(x)); }
inline long long __float2ll_rn(float x) { return static_cast<long long>(nearbyintf(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }

inline float __int_as_float(int x) { return ::pyfast_emu::from_bits<float>(static_cast<std::uint32_t>(x)); }
inline float __uint_as_float(unsigned x) { return ::pyfast_emu::from_bits<float>(x); }
inline int __float_as_int(float x) { return static_cast<int>(static_cast<std::uint32_t>(::pyfast_emu::to_bits(x))); }
inline unsigned __float_as_uint(float x) { return static_cast<std::uint32_t>(::pyfast_emu::to_bits(x)); }
inline double __longlong_as_double(long long x) { return ::pyfast_emu::from_bits<double>(static_cast<std::uint64_t>(x)); }
inline long long __double_as_longlong(double x) { return static_cast<long long>(::pyfast_emu::to_bits(x)); }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline int __mul24(int a, int b) { return static_cast<int>(static_cast<unsigned>((a << 8) >> 8) * static_cast<unsigned>((b << 8) >> 8)); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) {
    return static_cast<long long>((static_cast<__int128>(a) * b) >> 64);
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
    const unsigned s = shift & 31u;
    return s == 0 ? hi : (hi << s) | (lo >> (32 - s));
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    const unsigned s = shift & 31u;
    return s == 0 ? lo : (lo >> s) | (hi << (32 - s));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long bytes = (static_cast<unsigned long long>(y) << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((bytes >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
}

// CUDA's min / max overloads (the device code calls them unqualified).
#define PYFAST_EMU_MINMAX(T)                          \
    inline T min(T a, T b) { return b < a ? b : a; }  \
    inline T max(T a, T b) { return a < b ? b : a; }
PYFAST_EMU_MINMAX(int)
PYFAST_EMU_MINMAX(unsigned int)
PYFAST_EMU_MINMAX(long)
PYFAST_EMU_MINMAX(unsigned long)
PYFAST_EMU_MINMAX(long long)
PYFAST_EMU_MINMAX(unsigned long long)
#undef PYFAST_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// -------------------------------------------------------------------------------- launches
namespace pyfast_emu {

struct LaunchConfig {
    dim3 grid, block;
    std::size_t shared_bytes;
    cudaStream_t stream;
    const void* kernel;  // identifies the kernel (cudaFuncSetAttribute)
};

// Runs body(args) as every thread of the launch; returns what the GPU's launch would return
// (configuration errors), or the error a diagnostic found while it ran.
cudaError_t run_launch(const LaunchConfig& config, void (*body)(void*), void* args);

// The dynamic shared memory of the running block (PYFAST_DYNAMIC_SHARED in common.cuh).
void* dynamic_shared();

template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                   Args&&... args) {
    // The arguments converted to the kernel's parameter types once; each thread calls the
    // kernel with its own copy, as each GPU thread reads its own parameter values.
    struct Call {
        void (*kernel)(Params...);
        std::tuple<std::decay_t<Params>...> params;
    };
    Call call{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
    auto body = [](void* p) {
        Call* c = static_cast<Call*>(p);
        std::apply(c->kernel, c->params);
    };
    return run_launch(LaunchConfig{grid, block, shared_bytes, stream, reinterpret_cast<const void*>(kernel)}, body,
                      &call);
}

}  // namespace pyfast_emu
