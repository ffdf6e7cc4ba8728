// internal.h - what the emulator's own translation units share beyond pyfast_emu.h: the running
// thread's asynchronous copies (cp.async, csrc/emu/ptx.cpp), kept with the thread in runtime.cpp,
// and what the profiler (csrc/emu/profile.cpp) asks of the runtime.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace pyfast_emu {

// The running thread's index in its block (x fastest), or -1 outside a kernel (profile.cpp).
int running_thread_index();
// The device allocations alive now: (start, bytes), for the profiler's map of global memory.
std::vector<std::pair<const char*, std::size_t>> allocation_list();

struct AsyncCopy {
    void* dst;
    const void* src;
    int bytes, src_bytes;
};

// Copies issued and not yet complete: committed groups, oldest first, then the open group.
struct AsyncCopies {
    std::vector<std::vector<AsyncCopy>> committed;
    std::vector<AsyncCopy> open;
};

AsyncCopies& running_thread_copies();
// Completes every committed group but the newest `keep` (all of them, and the open group too,
// with keep < 0: a thread's end).
void complete_copies(AsyncCopies& copies, int keep);

}  // namespace pyfast_emu
