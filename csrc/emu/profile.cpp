// profile.cpp - the emulator's counters: what Nsight Compute would count of a kernel's memory
// accesses, from the accesses themselves.
//
// In the profiled build (PYFAST_EMU_PROFILE=1) kernels/**/*.cu are compiled with GCC's ThreadSanitizer
// instrumentation, which calls __tsan_read4(address), __tsan_write16(address), ... before every
// memory access a kernel makes; this file defines those hooks itself (libtsan is never linked), so
// each access arrives here with its address, size and call site. Accesses to the running block's
// shared memory (its static __shared__ objects and dynamic buffer) and to device allocations count;
// the rest (parameters, locals, the emulator's own data) does not.
//
// The emulator does not run a warp in lockstep, but each thread runs its own accesses in program
// order, so the k-th access a thread makes from one site belongs to the same warp instruction as
// the k-th access of every other lane of its warp from that site: grouping a block's accesses by
// (warp, site, k) rebuilds the warp-level requests. Per request:
// - global: 32-byte sectors touched (Nsight's sectors / request; ideal: the lanes' bytes / 32);
// - shared: wavefronts, the passes the banks need. A request is served in phases of 128 bytes
//   (32 lanes of 4 bytes, 16 of 8, 8 of 16); a phase takes as many wavefronts as the most distinct
//   4-byte words any one of the 32 banks must deliver (the same word to several lanes is one).
//   Ideal: one per phase; bank conflicts = wavefronts - ideal.
// Unique sectors read and written over the launch: its compulsory DRAM traffic (no cache model).
// Basic blocks entered, per warp (the most any lane entered each): GCC's -fsanitize-coverage=trace-pc
// calls a hook at each, and the source lines they map to times each line's SASS (from nvcc's build
// of the same file) estimate the instructions the GPU would issue.
//
// Sampling: grouping is costly, so at most `sample_blocks` blocks of a launch, spread evenly
// over the grid, are grouped; their totals stand for the launch's scaled by blocks / sampled
// (Python scales them, saying so). Blocks of one launch run the same code on other data, which is
// what makes that fair for the kernels here; a kernel whose edge blocks differ is sampled at both
// ends (the first and last block are always in the sample).

#include "profile.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "internal.h"

namespace pyfast_emu {
namespace profile {
namespace {

enum Flags : unsigned { kWrite = 1, kAtomic = 2 };

struct Access {
    std::uintptr_t site;
    std::uintptr_t address;
    std::uint32_t thread;
    std::uint16_t bytes;
    std::uint8_t flags;
    std::uint8_t shared;
};

// The sectors a device allocation's bytes fall into, as bits: read and written apart.
struct Touched {
    const char* start = nullptr;
    std::size_t bytes = 0;
    std::vector<std::uint64_t> read, written;
};

struct SiteKey {
    std::uintptr_t site;
    unsigned kind_flags_bytes;
    bool operator==(const SiteKey& o) const { return site == o.site && kind_flags_bytes == o.kind_flags_bytes; }
};
struct SiteKeyHash {
    std::size_t operator()(const SiteKey& k) const { return std::hash<std::uintptr_t>()(k.site * 31 + k.kind_flags_bytes); }
};

struct State {
    bool active = false;
    long long sample_blocks = 0;
    bool run_sampled_only = false;
    std::vector<LaunchCounts> launches;
    // The launch running.
    LaunchCounts current;
    std::vector<SharedRange> shared;  // its static objects, then the dynamic buffer of the block running
    std::vector<Touched> touched;     // per device allocation, sorted by start
    std::size_t last_touched = 0;
    std::unordered_map<SiteKey, SiteCounts, SiteKeyHash> sites;
    unsigned long long sample_stride = 1;
    // The block running.
    bool recording = false;  // the block is in the sample
    bool counting = false;   // accesses count at all (a profile runs)
    bool in_atomic = false;  // inside an atomic of the shim: its own read and write do not count
    std::vector<Access> accesses;
    std::unordered_map<std::uint64_t, std::uint32_t> kth;  // (thread, site) -> its accesses so far
    std::vector<unsigned> barriers;  // per thread of the block
    std::unordered_map<std::uint64_t, std::uint32_t> blocks_entered;  // (code address, thread) -> entries
    std::unordered_map<std::uintptr_t, unsigned long long> code_executions;  // code address -> warp entries
};
State g;

std::size_t bits_for(std::size_t bytes) { return (bytes + 31) / 32; }

Touched* allocation_of(std::uintptr_t address) {
    if (g.touched.empty()) return nullptr;
    Touched* last = &g.touched[g.last_touched];
    if (address - reinterpret_cast<std::uintptr_t>(last->start) < last->bytes) return last;
    auto after = std::upper_bound(g.touched.begin(), g.touched.end(), address, [](std::uintptr_t a, const Touched& t) {
        return a < reinterpret_cast<std::uintptr_t>(t.start);
    });
    if (after == g.touched.begin()) return nullptr;
    Touched* found = &*(after - 1);
    if (address - reinterpret_cast<std::uintptr_t>(found->start) >= found->bytes) return nullptr;
    g.last_touched = static_cast<std::size_t>(found - g.touched.data());
    return found;
}

void mark(std::vector<std::uint64_t>& bits, std::size_t first, std::size_t last) {
    for (std::size_t s = first; s <= last; ++s) bits[s / 64] |= 1ULL << (s % 64);
}

int shared_range_of(std::uintptr_t address) {
    for (const SharedRange& r : g.shared) {
        if (address - reinterpret_cast<std::uintptr_t>(r.start) < r.bytes) return 1;
    }
    return 0;
}

unsigned long long popcount_all(const std::vector<std::uint64_t>& bits) {
    unsigned long long n = 0;
    for (std::uint64_t w : bits) n += static_cast<unsigned long long>(__builtin_popcountll(w));
    return n;
}

// One warp request: the lanes' addresses of one (warp, site, k).
struct Request {
    std::uintptr_t address[32];
    unsigned lanes = 0;
};

void count_global(const Request& r, int bytes, SiteCounts& c) {
    std::uintptr_t sectors[64];
    int n = 0;
    for (int lane = 0; lane < 32; ++lane) {
        if (!(r.lanes & (1u << lane))) continue;
        const std::uintptr_t first = r.address[lane] / 32, last = (r.address[lane] + bytes - 1) / 32;
        for (std::uintptr_t s = first; s <= last && n < 64; ++s) sectors[n++] = s;
    }
    std::sort(sectors, sectors + n);
    const int distinct = static_cast<int>(std::unique(sectors, sectors + n) - sectors);
    const unsigned lanes = static_cast<unsigned>(__builtin_popcount(r.lanes));
    c.sectors += static_cast<unsigned long long>(distinct);
    c.ideal_sectors += (static_cast<unsigned long long>(lanes) * bytes + 31) / 32;
}

void count_shared(const Request& r, int bytes, SiteCounts& c) {
    const int per_phase = bytes >= 4 ? 128 / bytes : 32;
    for (int phase = 0; phase < 32; phase += per_phase) {
        std::uintptr_t words[32][4];  // per bank, the distinct words asked of it (at most 4 lanes' worth)
        int in_bank[32] = {};
        int wavefronts = 0;
        bool any = false;
        for (int lane = phase; lane < phase + per_phase && lane < 32; ++lane) {
            if (!(r.lanes & (1u << lane))) continue;
            any = true;
            const int words_per_lane = bytes >= 4 ? bytes / 4 : 1;
            for (int w = 0; w < words_per_lane; ++w) {
                const std::uintptr_t word = r.address[lane] / 4 + static_cast<std::uintptr_t>(w);
                const int bank = static_cast<int>(word % 32);
                bool seen = false;
                for (int i = 0; i < std::min(in_bank[bank], 4); ++i) seen = seen || words[bank][i] == word;
                if (!seen) {
                    if (in_bank[bank] < 4) words[bank][in_bank[bank]] = word;
                    ++in_bank[bank];
                    wavefronts = std::max(wavefronts, in_bank[bank]);
                }
            }
        }
        if (any) {
            c.wavefronts += static_cast<unsigned long long>(wavefronts);
            c.ideal_wavefronts += 1;
        }
    }
}

// Groups the sampled block's accesses so far into warp requests and adds them to the sites'
// counts. Called when every thread has passed a barrier (each request before it is whole) and at
// the block's end, so a long kernel's accesses never pile up beyond one barrier interval.
void group_block() {
    std::unordered_map<std::uint64_t, std::uint32_t>& kth = g.kth;  // (thread, site) -> accesses so far
    struct Key {
        std::uintptr_t site;
        std::uint64_t warp_k;
        unsigned kind_flags_bytes;
        bool operator==(const Key& o) const {
            return site == o.site && warp_k == o.warp_k && kind_flags_bytes == o.kind_flags_bytes;
        }
    };
    struct KeyHash {
        std::size_t operator()(const Key& k) const {
            return std::hash<std::uint64_t>()(k.site * 0x9E3779B97F4A7C15ULL ^ k.warp_k * 31 ^ k.kind_flags_bytes);
        }
    };
    std::unordered_map<Key, Request, KeyHash> requests;
    requests.reserve(g.accesses.size() / 8 + 16);
    for (const Access& a : g.accesses) {
        const unsigned kfb = (static_cast<unsigned>(a.shared) << 24) | (static_cast<unsigned>(a.flags) << 16) | a.bytes;
        const std::uint64_t per_thread = (static_cast<std::uint64_t>(a.thread) << 40) ^ (a.site * 0x100000001B3ULL) ^ kfb;
        const std::uint32_t k = kth[per_thread]++;
        const std::uint64_t warp = a.thread / 32;
        Request& r = requests[Key{a.site, (warp << 40) | k, kfb}];
        const unsigned lane = a.thread % 32;
        r.address[lane] = a.address;
        r.lanes |= 1u << lane;
    }
    for (const auto& [key, request] : requests) {
        SiteCounts& c = g.sites[SiteKey{key.site, key.kind_flags_bytes}];
        const int bytes = static_cast<int>(key.kind_flags_bytes & 0xffff);
        const unsigned flags = (key.kind_flags_bytes >> 16) & 0xff;
        c.site = key.site;
        c.kind = static_cast<int>(key.kind_flags_bytes >> 24);
        c.write = (flags & kWrite) != 0;
        c.atomic = (flags & kAtomic) != 0;
        c.bytes = bytes;
        c.requests += 1;
        c.lanes += static_cast<unsigned long long>(__builtin_popcount(request.lanes));
        if (c.kind == 0) {
            count_global(request, bytes, c);
        } else {
            count_shared(request, bytes, c);
        }
    }
}

}  // namespace

bool instrumented() {
#if defined(PYFAST_EMU_PROFILE)
    return true;
#else
    return false;
#endif
}

bool active() { return g.active; }

void start(long long sample_blocks, bool run_sampled_only) {
    g = State{};
    g.active = true;
    g.sample_blocks = sample_blocks;
    g.run_sampled_only = run_sampled_only;
}

std::vector<LaunchCounts> stop() {
    std::vector<LaunchCounts> launches = std::move(g.launches);
    g = State{};
    return launches;
}

void launch_begin(const LaunchConfig& config, const std::string& kernel, std::vector<SharedRange> statics,
                  std::vector<std::pair<const char*, std::size_t>> allocations, unsigned long long blocks) {
    if (!g.active) return;
    g.current = LaunchCounts{};
    g.current.kernel = kernel;
    g.current.grid = config.grid;
    g.current.block = config.block;
    g.current.dynamic_shared = config.shared_bytes;
    g.current.static_shared = 0;
    for (const SharedRange& r : statics) g.current.static_shared += r.bytes;
    g.current.blocks = blocks;
    g.shared = std::move(statics);
    g.shared.push_back(SharedRange{nullptr, 0});  // the dynamic buffer, set per block
    std::sort(allocations.begin(), allocations.end());
    g.touched.clear();
    for (const auto& [start, bytes] : allocations) {
        Touched t;
        t.start = start;
        t.bytes = bytes;
        g.touched.push_back(std::move(t));
    }
    g.last_touched = 0;
    g.sites.clear();
    const unsigned long long wanted = g.sample_blocks > 0 ? static_cast<unsigned long long>(g.sample_blocks) : blocks;
    g.sample_stride = wanted >= blocks ? 1 : (blocks + wanted - 1) / wanted;
}

bool block_begin(unsigned long long block, const char* dynamic_shared, std::size_t dynamic_bytes) {
    if (!g.active) return true;
    const unsigned long long blocks = g.current.blocks;
    g.recording = block % g.sample_stride == 0 || block == blocks - 1;
    if (g.run_sampled_only && !g.recording) return false;
    g.counting = true;
    g.shared.back() = SharedRange{dynamic_shared, dynamic_bytes};
    g.accesses.clear();
    g.kth.clear();
    g.blocks_entered.clear();
    const std::size_t threads = 1ULL * g.current.block.x * g.current.block.y * g.current.block.z;
    g.barriers.assign(threads, 0);
    ++g.current.run_blocks;
    if (g.recording) ++g.current.sampled_blocks;
    return true;
}

void block_end(bool failed) {
    if (!g.active) return;
    g.counting = false;
    if (!g.recording || failed) return;
    group_block();
    for (std::size_t warp = 0; warp * 32 < g.barriers.size(); ++warp) {
        unsigned most = 0;
        for (std::size_t t = warp * 32; t < std::min(g.barriers.size(), warp * 32 + 32); ++t) {
            most = std::max(most, g.barriers[t]);
        }
        g.current.barriers += most;
    }
    // A warp enters a basic block as often as its most frequent lane (lanes that skip it wait).
    std::unordered_map<std::uint64_t, std::uint32_t> per_warp;
    for (const auto& [key, count] : g.blocks_entered) {
        std::uint32_t& most = per_warp[(key >> 11) << 6 | ((key & 0x7ff) / 32)];
        most = std::max(most, count);
    }
    for (const auto& [key, count] : per_warp) g.code_executions[static_cast<std::uintptr_t>(key >> 6)] += count;
    g.accesses.clear();
    g.blocks_entered.clear();
}

void launch_end() {
    if (!g.active) return;
    for (const Touched& t : g.touched) {
        g.current.unique_read_sectors += popcount_all(t.read);
        g.current.unique_write_sectors += popcount_all(t.written);
        if (!t.read.empty()) g.current.read_allocation_bytes += t.bytes;
        if (!t.written.empty()) g.current.written_allocation_bytes += t.bytes;
    }
    for (auto& [key, counts] : g.sites) {
        (void)key;
        g.current.sites.push_back(counts);
    }
    for (const auto& [code, count] : g.code_executions) g.current.code.emplace_back(code, count);
    std::sort(g.current.code.begin(), g.current.code.end());
    g.code_executions.clear();
    std::sort(g.current.sites.begin(), g.current.sites.end(), [](const SiteCounts& a, const SiteCounts& b) {
        return a.site != b.site ? a.site < b.site : a.write < b.write;
    });
    g.launches.push_back(std::move(g.current));
    g.current = LaunchCounts{};
    g.touched.clear();
    g.sites.clear();
}

void block_synchronized() {
    if (g.counting && g.recording) {
        group_block();
        g.accesses.clear();
    }
}

void barrier(int thread) {
    if (g.counting && g.recording && thread >= 0 && static_cast<std::size_t>(thread) < g.barriers.size()) {
        ++g.barriers[static_cast<std::size_t>(thread)];
    }
}

// One access of a kernel (the hooks below).
inline void record(const void* address, int bytes, unsigned flags, const void* site) {
    if (!g.counting || (g.in_atomic && !(flags & kAtomic))) return;
    const int thread = running_thread_index();
    if (thread < 0) return;
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(address);
    const int shared = shared_range_of(a);
    if (!shared) {
        Touched* t = allocation_of(a);
        if (t == nullptr) return;  // a parameter, a local, the emulator's own memory
        const std::size_t offset = a - reinterpret_cast<std::uintptr_t>(t->start);
        std::vector<std::uint64_t>& bits = (flags & kWrite) ? t->written : t->read;
        if (bits.empty()) bits.assign((bits_for(t->bytes) + 63) / 64, 0);
        mark(bits, offset / 32, std::min(offset + static_cast<std::size_t>(bytes) - 1, t->bytes - 1) / 32);
        if (flags & kAtomic) {  // an atomic reads as well as writes
            if (t->read.empty()) t->read.assign((bits_for(t->bytes) + 63) / 64, 0);
            mark(t->read, offset / 32, std::min(offset + static_cast<std::size_t>(bytes) - 1, t->bytes - 1) / 32);
        }
    }
    if (!g.recording) return;
    g.accesses.push_back(Access{reinterpret_cast<std::uintptr_t>(site), a, static_cast<std::uint32_t>(thread),
                                static_cast<std::uint16_t>(bytes), static_cast<std::uint8_t>(flags),
                                static_cast<std::uint8_t>(shared)});
}

// An atomic of the emulator's shim (pyfast_emu.h): one access, flagged; the plain read and write
// that carry it out are not counted again.
// A kernel's basic block entered by the running thread (the coverage hook below).
inline void enter(const void* code) {
    if (!g.counting || !g.recording) return;
    const int thread = running_thread_index();
    if (thread < 0) return;
    ++g.blocks_entered[static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(code)) << 11 |
                       static_cast<std::uint64_t>(thread)];
}

void atomic_begin(const void* address, int bytes, const void* site) {
    record(address, bytes, kWrite | kAtomic, site);
    g.in_atomic = true;
}
void atomic_end() { g.in_atomic = false; }

}  // namespace profile
}  // namespace pyfast_emu

#if defined(PYFAST_EMU_PROFILE)
// The hooks GCC's -fsanitize=thread instrumentation calls (no libtsan is linked). Plain, unaligned
// and volatile accesses of 1 to 16 bytes, ranges, and the entry points its runtime would have.
#define PYFAST_EMU_HOOK(name, bytes, flags)                                                                  \
    extern "C" __attribute__((visibility("default"))) void name(void* address) {                           \
        pyfast_emu::profile::record(address, bytes, flags, __builtin_return_address(0));                    \
    }
#define PYFAST_EMU_HOOKS(bytes)                                                   \
    PYFAST_EMU_HOOK(__tsan_read##bytes, bytes, 0)                                 \
    PYFAST_EMU_HOOK(__tsan_write##bytes, bytes, 1)                                \
    PYFAST_EMU_HOOK(__tsan_unaligned_read##bytes, bytes, 0)                       \
    PYFAST_EMU_HOOK(__tsan_unaligned_write##bytes, bytes, 1)                      \
    PYFAST_EMU_HOOK(__tsan_volatile_read##bytes, bytes, 0)                        \
    PYFAST_EMU_HOOK(__tsan_volatile_write##bytes, bytes, 1)
PYFAST_EMU_HOOKS(1)
PYFAST_EMU_HOOKS(2)
PYFAST_EMU_HOOKS(4)
PYFAST_EMU_HOOKS(8)
PYFAST_EMU_HOOKS(16)
#undef PYFAST_EMU_HOOKS
#undef PYFAST_EMU_HOOK

extern "C" __attribute__((visibility("default"))) void __tsan_read_range(void* address, unsigned long bytes) {
    pyfast_emu::profile::record(address, static_cast<int>(std::min(bytes, 16UL)), 0, __builtin_return_address(0));
}
extern "C" __attribute__((visibility("default"))) void __tsan_write_range(void* address, unsigned long bytes) {
    pyfast_emu::profile::record(address, static_cast<int>(std::min(bytes, 16UL)), 1, __builtin_return_address(0));
}
// Atomic loads the instrumentation makes of what the C++ runtime reads atomically (the guard byte
// of a function's static local): not a kernel's access, performed and not counted.
extern "C" __attribute__((visibility("default"))) unsigned char __tsan_atomic8_load(const volatile unsigned char* a,
                                                                                   int order) {
    (void)order;
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);
}
extern "C" __attribute__((visibility("default"))) void __tsan_init() {}
// -fsanitize-coverage=trace-pc: called at the start of every basic block of a kernel; with the SASS
// of each source line (pyfast/profile/sass.py) these give the instruction counts.
extern "C" __attribute__((visibility("default"))) void __sanitizer_cov_trace_pc() {
    pyfast_emu::profile::enter(__builtin_return_address(0));
}
extern "C" __attribute__((visibility("default"))) void __tsan_func_entry(void*) {}
extern "C" __attribute__((visibility("default"))) void __tsan_func_exit() {}
extern "C" __attribute__((visibility("default"))) void __tsan_vptr_update(void*, void*) {}
extern "C" __attribute__((visibility("default"))) void __tsan_atomic_thread_fence(int) {}
extern "C" __attribute__((visibility("default"))) void __tsan_atomic_signal_fence(int) {}
#endif
