// profile_probe.cu - tiny kernels whose memory counters are known by hand, for the profiler's own
// tests (tests/test_profile.py): each is launched on fresh device memory by name, and the test
// compares what the profiled build counts with the counts worked out in its comments.
// Built into the emulated extension only (as selftest.cu is); they count only in the profiled
// build (PYFAST_EMU_PROFILE=1).

#include <algorithm>
#include <string>
#include <vector>

#include "common/common.cuh"
#include "profile_probe.h"
#include "pyfast_emu_control.h"

namespace pyfast_emu {
namespace {

using pyfast::launch_kernel;

// Every probe: one block of 64 threads (two warps) unless it says otherwise, `in` and `out` 4 KB
// each (256-byte aligned, as cudaMalloc).

// 32 lanes read 32 consecutive floats: 128 bytes, 4 sectors a request (ideal).
__global__ void copy_coalesced(const float* in, float* out) { out[threadIdx.x] = in[threadIdx.x]; }

// Every other float: 256 bytes spanned, 8 sectors a request (ideal 4).
__global__ void copy_stride2(const float* in, float* out) { out[threadIdx.x] = in[2 * threadIdx.x]; }

// One float per 128 bytes: 32 sectors a request (ideal 4).
__global__ void copy_stride32(const float* in, float* out) { out[threadIdx.x] = in[(32 * threadIdx.x) % 1024]; }

// Consecutive floats from 4 bytes past a sector's start: 5 sectors a request (ideal 4).
__global__ void copy_offset(const float* in, float* out) { out[threadIdx.x] = in[threadIdx.x + 1]; }

// float4 per lane: 512 bytes, 16 sectors a request (ideal: the same).
__global__ void copy_float4(const float* in, float* out) {
    reinterpret_cast<float4*>(out)[threadIdx.x] = reinterpret_cast<const float4*>(in)[threadIdx.x];
}

// Only the odd lanes load, consecutive floats: 16 lanes in 128 bytes, 4 sectors in one request
// (ideal 2: their 64 bytes).
__global__ void odd_lanes(const float* in, float* out) {
    if (threadIdx.x % 2 == 1) out[threadIdx.x] = in[threadIdx.x];
}

// A 32 x 32 tile through shared memory, one 32-thread warp per row (block 32 x 8, 4 rows each):
// stored by rows (conflict-free), read by columns: without padding all 32 lanes hit one bank (32
// wavefronts a read request); with a column of padding every lane another bank (1).
template <int PAD>
__global__ void transpose(const float* in, float* out) {
    __shared__ float tile[32][32 + PAD];
    for (int row = threadIdx.y; row < 32; row += 8) tile[row][threadIdx.x] = in[row * 32 + threadIdx.x];
    __syncthreads();
    for (int row = threadIdx.y; row < 32; row += 8) out[row * 32 + threadIdx.x] = tile[threadIdx.x][row];
}

// Lane l of the single warp loops l times, each time loading the float 32 k + l: the warp issues
// the load 31 times (k = 0 .. 30), with lanes k + 1 .. 31 active; they lie in one 128-byte line,
// from byte 4 (k + 1), so a request touches 4 - (k + 1) / 8 sectors.
__global__ void divergent_loop(const float* in, float* out) {
    float sum = 0.0f;
    for (unsigned k = 0; k < threadIdx.x; ++k) sum += in[32 * k + threadIdx.x];
    out[threadIdx.x] = sum;
}

// Every thread adds 1 to out[0]: one atomic request per warp, one sector.
__global__ void atomics(const float*, float* out) { atomicAdd(out, 1.0f); }

// Three barriers, two warps: 6 warp-level barrier instructions.
__global__ void barriers(const float* in, float* out) {
    __shared__ float value;
    if (threadIdx.x == 0) value = in[0];
    __syncthreads();
    const float v = value;
    __syncthreads();
    if (threadIdx.x == 1) value = v + 1.0f;
    __syncthreads();
    out[threadIdx.x] = value;
}

// 8 blocks of 32 threads, each copying its 32 floats: the grid the sampling tests cut.
__global__ void blocks8(const float* in, float* out) {
    out[blockIdx.x * 32 + threadIdx.x] = in[blockIdx.x * 32 + threadIdx.x];
}

struct Probe {
    const char* name;
    void (*kernel)(const float*, float*);
    dim3 grid, block;
};

const std::vector<Probe>& probes() {
    static const std::vector<Probe> list = {
        {"copy_coalesced", copy_coalesced, dim3(1), dim3(64)},
        {"copy_stride2", copy_stride2, dim3(1), dim3(64)},
        {"copy_stride32", copy_stride32, dim3(1), dim3(64)},
        {"copy_offset", copy_offset, dim3(1), dim3(64)},
        {"copy_float4", copy_float4, dim3(1), dim3(64)},
        {"odd_lanes", odd_lanes, dim3(1), dim3(64)},
        {"transpose", transpose<0>, dim3(1), dim3(32, 8)},
        {"transpose_padded", transpose<1>, dim3(1), dim3(32, 8)},
        {"divergent_loop", divergent_loop, dim3(1), dim3(32)},
        {"atomics", atomics, dim3(1), dim3(64)},
        {"barriers", barriers, dim3(1), dim3(64)},
        {"blocks8", blocks8, dim3(8), dim3(32)},
    };
    return list;
}

}  // namespace

std::vector<std::string> profile_probe_names() {
    std::vector<std::string> names;
    for (const Probe& p : probes()) names.emplace_back(p.name);
    return names;
}

bool run_profile_probe(const std::string& name, cudaError_t* status) {
    const auto& list = probes();
    const auto found = std::find_if(list.begin(), list.end(), [&](const Probe& p) { return name == p.name; });
    if (found == list.end()) return false;
    float* in = static_cast<float*>(device_alloc(4096));
    float* out = static_cast<float*>(device_alloc(4096));
    for (int i = 0; i < 1024; ++i) {
        in[i] = static_cast<float>(i);
        out[i] = 0.0f;
    }
    *status = launch_kernel(found->kernel, found->grid, found->block, 0, nullptr, static_cast<const float*>(in), out);
    device_free(in);
    device_free(out);
    return true;
}

}  // namespace pyfast_emu
