// profile.h - the emulator's counters (csrc/emu/profile.cpp): what runtime.cpp tells the profiler
// about launches, blocks and barriers, and what the bindings ask of it. In a build without
// PYFAST_EMU_PROFILE nothing records accesses (the kernels carry no hooks), and the calls below
// only count launches, blocks and barriers while a profile runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pyfast_emu.h"

namespace pyfast_emu {

// The bytes [start, start + bytes) of one shared-memory object of the running kernel.
struct SharedRange {
    const char* start;
    std::size_t bytes;
};

namespace profile {

// Whether this build's kernels record their memory accesses (compiled with the hooks).
bool instrumented();
bool active();

// Profiling starts: every launch from now on is recorded until stop(). At most `sample_blocks`
// blocks of each launch (spread evenly over the grid; 0: all) have their accesses grouped into
// warp requests; with `run_sampled_only`, the other blocks do not run at all (counts only: the
// launch's results are then wrong, for shapes too large to run whole on the CPU).
void start(long long sample_blocks, bool run_sampled_only);
struct SiteCounts {
    std::uintptr_t site;  // return address of the access hook: offset into the module
    int kind;             // 0 global, 1 shared
    bool write, atomic;
    int bytes;            // bytes per lane
    unsigned long long requests, sectors, ideal_sectors, wavefronts, ideal_wavefronts, lanes;
};
struct LaunchCounts {
    std::string kernel;  // the kernel's mangled symbol ("" where the symbol table does not name it)
    dim3 grid, block;
    std::size_t dynamic_shared, static_shared;
    unsigned long long blocks, sampled_blocks, run_blocks;
    unsigned long long barriers;  // warp-level barrier instructions in the sampled blocks
    unsigned long long unique_read_sectors, unique_write_sectors;  // over the blocks that ran
    // Sizes of the allocations those blocks read / wrote: a bound on the launch's unique bytes where
    // only sampled blocks ran.
    unsigned long long read_allocation_bytes, written_allocation_bytes;
    std::vector<SiteCounts> sites;  // over the sampled blocks
    // (code address of a basic block, times warps of the sampled blocks entered it)
    std::vector<std::pair<std::uintptr_t, unsigned long long>> code;
};
std::vector<LaunchCounts> stop();

// From runtime.cpp.
void launch_begin(const LaunchConfig& config, const std::string& kernel, std::vector<SharedRange> statics,
                  std::vector<std::pair<const char*, std::size_t>> allocations, unsigned long long blocks);
// Whether the block of linear index `block` runs (false: skipped, in run_sampled_only mode).
bool block_begin(unsigned long long block, const char* dynamic_shared, std::size_t dynamic_bytes);
void block_end(bool failed);
void launch_end();
void barrier(int thread);  // the running thread (its index in the block) reached a barrier
void block_synchronized();  // every thread of the block passed a barrier: its requests so far are whole

}  // namespace profile
}  // namespace pyfast_emu
