// internal.h - what the emulator's own translation units share beyond pyfast_emu.h: the running
// thread's asynchronous copies (cp.async, csrc/emu/ptx.cpp), kept with the thread in runtime.cpp.
#pragma once

#include <vector>

namespace pyfast_emu {

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
