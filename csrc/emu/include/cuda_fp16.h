// cuda_fp16.h for the emulated build: half-precision storage and its conversions (round to
// nearest even, subnormals kept, NaN kept as a quiet NaN).
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

struct alignas(2) __half {
    unsigned short __x;
    __half() = default;
    __half(float f);  // rounds to nearest even, as __float2half
    operator float() const;
};
struct alignas(4) __half2 {
    __half x, y;
};
typedef __half half;
typedef __half2 half2;

inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short x) {
    __half h;
    h.__x = x;
    return h;
}
inline float __half2float(__half h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h.__x & 0x8000u) << 16;
    const std::uint32_t exponent = (h.__x >> 10) & 0x1fu;
    std::uint32_t mantissa = h.__x & 0x3ffu;
    std::uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {  // subnormal: normalize
        int e = 113;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --e;
        }
        bits = sign | (static_cast<std::uint32_t>(e) << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
inline __half __float2half_rn(float f) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const std::uint32_t sign = (bits >> 16) & 0x8000u;
    const std::uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return __ushort_as_half(static_cast<unsigned short>(sign | 0x7fffu));
    if (magnitude >= 0x477ff000u) return __ushort_as_half(static_cast<unsigned short>(sign | 0x7c00u));  // to inf
    if (magnitude < 0x38800000u) {  // below the smallest normal half: a subnormal or zero
        if (magnitude < 0x33000000u) return __ushort_as_half(static_cast<unsigned short>(sign));
        const int shift = 126 - static_cast<int>(magnitude >> 23);  // 14 .. 24
        const std::uint32_t m = (magnitude & 0x7fffffu) | 0x800000u;
        std::uint32_t value = m >> shift;
        const std::uint32_t rest = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (value & 1u))) ++value;
        return __ushort_as_half(static_cast<unsigned short>(sign | value));
    }
    std::uint32_t value = ((magnitude >> 13) - (112u << 10));
    const std::uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (value & 1u))) ++value;
    return __ushort_as_half(static_cast<unsigned short>(sign | value));
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __half::__half(float f) : __x(__float2half_rn(f).__x) {}
inline __half::operator float() const { return __half2float(*this); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half_rn(lo), __float2half_rn(hi)}; }
inline __half2 __float2half2_rn(float f) { return __floats2half2_rn(f, f); }
inline float2 __half22float2(__half2 v) { return make_float2(__half2float(v.x), __half2float(v.y)); }
inline float __low2float(__half2 v) { return __half2float(v.x); }
inline float __high2float(__half2 v) { return __half2float(v.y); }
