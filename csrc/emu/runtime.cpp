// runtime.cpp - the emulator's runtime: a launch's blocks one after another, each block's threads
// as fibers on the launching host thread, barriers and warp collectives that release when every
// thread they name has arrived, the diagnostics a GPU gives only under compute-sanitizer or
// never, and the CUDA runtime calls of kernels/ and csrc/ on host memory.
//
// Fibers: each thread has its own stack (mmap'd once, reused, a guard page below each) and runs
// until it waits; the scheduler then switches to the next ready thread. The switch saves the
// callee-saved registers and the stack pointer (tens of nanoseconds; glibc's swapcontext also
// makes a system call for the signal mask, ~10x slower; OS threads ~100x). Under
// AddressSanitizer every switch is announced to it, so stack checks follow the fibers.

#include <dlfcn.h>
#include <elf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "internal.h"
#include "profile.h"
#include "pyfast_emu.h"
#include "pyfast_emu_control.h"

#if defined(__SANITIZE_ADDRESS__)
#define PYFAST_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PYFAST_EMU_ASAN 1
#endif
#endif
#if defined(PYFAST_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__) && !defined(PYFAST_EMU_UCONTEXT)
#define PYFAST_EMU_UCONTEXT 1
#endif
#if defined(PYFAST_EMU_UCONTEXT)
#include <ucontext.h>
#endif

#if !defined(PYFAST_EMU_UCONTEXT)
// void pyfast_emu_switch(void** save_sp, void* load_sp): saves the callee-saved registers on
// the current stack and its pointer in *save_sp, then resumes the context saved at load_sp.
// A new fiber's stack holds six zero registers and the address of pyfast_emu_fiber_start,
// which calls pyfast_emu_fiber_main() with the stack aligned as a call expects.
asm(R"(
    .text
    .p2align 4
    .globl pyfast_emu_switch
    .hidden pyfast_emu_switch
    .type pyfast_emu_switch, @function
pyfast_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size pyfast_emu_switch, .-pyfast_emu_switch

    .p2align 4
    .globl pyfast_emu_fiber_start
    .hidden pyfast_emu_fiber_start
    .type pyfast_emu_fiber_start, @function
pyfast_emu_fiber_start:
    call pyfast_emu_fiber_main
    ud2
    .size pyfast_emu_fiber_start, .-pyfast_emu_fiber_start
)");
extern "C" void pyfast_emu_switch(void** save_sp, void* load_sp);
extern "C" void pyfast_emu_fiber_start();
#endif
extern "C" void pyfast_emu_fiber_main();

namespace pyfast_emu {

enum class State : int { kReady, kRunning, kAtBarrier, kAtWarp, kExited };

struct ThreadState {
    uint3 idx{};
    int warp = 0, lane = 0;
    State state = State::kReady;
    const char* file = nullptr;  // where it waits
    int line = 0;
    Barrier barrier = Barrier::kSync;
    int predicate = 0;
    WarpOp warp_op = WarpOp::kSyncwarp;
    WarpSlot* slot = nullptr;
#if defined(PYFAST_EMU_UCONTEXT)
    ucontext_t context;
#else
    void* sp = nullptr;
#endif
    char* stack = nullptr;  // lowest usable byte
    std::size_t stack_bytes = 0;
    void* asan_fake_stack = nullptr;
    AsyncCopies copies;  // cp.async (ptx.cpp)
};

ThreadState* g_thread = nullptr;
uint3 g_block_idx{};
dim3 g_block_dim, g_grid_dim;

const uint3& thread_idx() { return g_thread->idx; }

namespace {

// ------------------------------------------------------------------------------ the card
constexpr long long kGiB = 1024LL * 1024 * 1024;
const DeviceProperties kPresets[] = {
    // name, cc, SMs, shared per block / opt-in / per SM, threads per SM, registers, L2, memory
    {"NVIDIA H100 80GB HBM3", 9, 0, 132, 48 * 1024, 232448, 233472, 2048, 65536, 50 * 1024 * 1024, 80 * kGiB},
    {"NVIDIA H200", 9, 0, 132, 48 * 1024, 232448, 233472, 2048, 65536, 60 * 1024 * 1024, 141 * kGiB},
    {"NVIDIA A100-SXM4-80GB", 8, 0, 108, 48 * 1024, 166912, 167936, 2048, 65536, 40 * 1024 * 1024, 80 * kGiB},
    {"Tesla V100-SXM2-16GB", 7, 0, 80, 48 * 1024, 98304, 98304, 2048, 65536, 6 * 1024 * 1024, 16 * kGiB},
};
const char* const kPresetNames[] = {"h100", "h200", "a100", "v100"};

DeviceProperties g_device = kPresets[0];

struct Options {
    bool random_order = false;
    std::uint64_t seed = 0;
};
Options g_options;

std::mutex g_launch_mutex;  // one launch at a time in the process: the block state is global

// ------------------------------------------------------------------------------ errors
cudaError_t g_last_error = cudaSuccess;
std::string g_diagnostic;  // what the last launch error was about (cudaGetErrorString shows it)
long long g_launch_errors = 0;

std::string shorten(const char* file) {
    if (file == nullptr) return "?";
    const std::string path(file);
    for (const char* root : {"/tests/kernels/", "/kernels/", "/csrc/", "/tests/"}) {
        const auto at = path.rfind(root);
        if (at != std::string::npos) return path.substr(at + 1);
    }
    return path;
}

std::string where(const char* file, int line) { return shorten(file) + ":" + std::to_string(line); }

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    char buffer[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buffer, sizeof(buffer), fmt, args);
    va_end(args);
    return buffer;
}

std::string name(const uint3& v) { return format("(%u,%u,%u)", v.x, v.y, v.z); }

const char* op_name(WarpOp op) {
    switch (op) {
        case WarpOp::kSyncwarp: return "__syncwarp";
        case WarpOp::kShflIdx: return "__shfl_sync";
        case WarpOp::kShflUp: return "__shfl_up_sync";
        case WarpOp::kShflDown: return "__shfl_down_sync";
        case WarpOp::kShflXor: return "__shfl_xor_sync";
        case WarpOp::kBallot: return "__ballot_sync";
        case WarpOp::kAny: return "__any_sync";
        case WarpOp::kAll: return "__all_sync";
        case WarpOp::kMatchAny: return "__match_any_sync";
        case WarpOp::kReduceAdd: return "__reduce_add_sync";
        case WarpOp::kReduceMin: return "__reduce_min_sync";
        case WarpOp::kReduceMax: return "__reduce_max_sync";
        case WarpOp::kReduceAnd: return "__reduce_and_sync";
        case WarpOp::kReduceOr: return "__reduce_or_sync";
        case WarpOp::kReduceXor: return "__reduce_xor_sync";
        case WarpOp::kMma: return "mma.sync";
        case WarpOp::kLdmatrix: return "ldmatrix";
    }
    return "a warp collective";
}

const char* barrier_name(Barrier kind) {
    switch (kind) {
        case Barrier::kSync: return "__syncthreads";
        case Barrier::kCount: return "__syncthreads_count";
        case Barrier::kAnd: return "__syncthreads_and";
        case Barrier::kOr: return "__syncthreads_or";
    }
    return "__syncthreads";
}

// ------------------------------------------------------------------------------ stacks
std::size_t stack_bytes() {
    static const std::size_t bytes = [] {
        const char* kb = std::getenv("PYFAST_EMU_STACK_KB");
        const long value = kb != nullptr ? std::strtol(kb, nullptr, 10) : 0;
#if defined(PYFAST_EMU_ASAN)
        const long fallback = 512;  // red zones around every local
#else
        const long fallback = 128;
#endif
        return static_cast<std::size_t>(value > 0 ? value : fallback) * 1024;
    }();
    return bytes;
}

// Stacks for up to `threads` fibers, each above a guard page (an overflow faults at once).
struct StackPool {
    char* base = nullptr;
    std::size_t slots = 0, slot_bytes = 0;

    bool reserve(std::size_t threads) {
        if (threads <= slots) return true;
        const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        const std::size_t bytes = stack_bytes() + page;
        void* memory = mmap(nullptr, bytes * threads, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (memory == MAP_FAILED) return false;
        for (std::size_t i = 0; i < threads; ++i) mprotect(static_cast<char*>(memory) + i * bytes, page, PROT_NONE);
        if (base != nullptr) {
#if defined(PYFAST_EMU_ASAN)
            // The fibers' bottom frames never return: their red zones are still poisoned, and the
            // shadow outlives the mapping (whatever is mapped here next would read as poisoned).
            __asan_unpoison_memory_region(base, slot_bytes * slots);
#endif
            munmap(base, slot_bytes * slots);
        }
        base = static_cast<char*>(memory);
        slots = threads;
        slot_bytes = bytes;
        return true;
    }
    char* stack(std::size_t i) const { return base + i * slot_bytes + (slot_bytes - stack_bytes()); }
};
StackPool g_stacks;

// ------------------------------------------------------------------------------ the block
struct PendingCollective {
    WarpOp op;
    unsigned mask, arrived;
    const char* file;
    int line;
    WarpCombine combine;
    const void* info;
};

struct Warp {
    unsigned present = 0;  // lanes the block has
    unsigned exited = 0;
    std::vector<PendingCollective> pending;
};

struct Block {
    std::vector<ThreadState> threads;
    std::vector<Warp> warps;
    int count = 0, exited = 0, at_barrier = 0;
    int barrier_result = 0;
    std::vector<int> ready;
    std::size_t ready_head = 0;
    std::mt19937_64 rng;
    bool failed = false;
    cudaError_t error = cudaSuccess;
    std::string message;
    void (*body)(void*) = nullptr;
    void* args = nullptr;
    char* dynamic_shared = nullptr;
#if defined(PYFAST_EMU_UCONTEXT)
    ucontext_t scheduler;
#else
    void* scheduler_sp = nullptr;
#endif
    const void* scheduler_stack = nullptr;  // for AddressSanitizer's fiber switches
    std::size_t scheduler_stack_bytes = 0;
    void* scheduler_fake_stack = nullptr;
};
Block g_block;

void make_ready(int i) {
    g_block.threads[i].state = State::kReady;
    g_block.ready.push_back(i);
}

int next_ready() {
    Block& b = g_block;
    if (b.ready_head >= b.ready.size()) {
        b.ready.clear();
        b.ready_head = 0;
        return -1;
    }
    if (g_options.random_order) {
        std::uniform_int_distribution<std::size_t> pick(b.ready_head, b.ready.size() - 1);
        std::swap(b.ready[b.ready_head], b.ready[pick(b.rng)]);
    }
    return b.ready[b.ready_head++];
}

// Ends the block with an error; later blocks of the launch do not run.
void fail(cudaError_t error, const std::string& message) {
    if (g_block.failed) return;
    g_block.failed = true;
    g_block.error = error;
    g_block.message = "pyfast emulator: " + message + format(" (block %s of grid %s, block %s)",
                                                            name(g_block_idx).c_str(), name(g_grid_dim).c_str(),
                                                            name(g_block_dim).c_str());
}

std::string thread_at(const ThreadState& t) {
    return "thread " + name(t.idx) + " at " + where(t.file, t.line);
}

// ------------------------------------------------------------------------------ switching
void switch_to_scheduler(ThreadState* t, bool exiting) {
#if defined(PYFAST_EMU_ASAN)
    __sanitizer_start_switch_fiber(exiting ? nullptr : &t->asan_fake_stack, g_block.scheduler_stack,
                                   g_block.scheduler_stack_bytes);
#else
    (void)exiting;
#endif
#if defined(PYFAST_EMU_UCONTEXT)
    swapcontext(&t->context, &g_block.scheduler);
#else
    pyfast_emu_switch(&t->sp, g_block.scheduler_sp);
#endif
#if defined(PYFAST_EMU_ASAN)
    __sanitizer_finish_switch_fiber(t->asan_fake_stack, nullptr, nullptr);
#endif
}

// The running thread waits; it continues when the scheduler switches back to it.
void wait_here(ThreadState* t) { switch_to_scheduler(t, false); }

[[noreturn]] void abandon(ThreadState* t) {
    // A failed block's threads never run again; the scheduler ends the launch.
    switch_to_scheduler(t, false);
    std::abort();
}

void run_thread(ThreadState* t) {
    g_thread = t;
    t->state = State::kRunning;
#if defined(PYFAST_EMU_ASAN)
    __sanitizer_start_switch_fiber(&g_block.scheduler_fake_stack, t->stack, t->stack_bytes);
#endif
#if defined(PYFAST_EMU_UCONTEXT)
    swapcontext(&g_block.scheduler, &t->context);
#else
    pyfast_emu_switch(&g_block.scheduler_sp, t->sp);
#endif
#if defined(PYFAST_EMU_ASAN)
    __sanitizer_finish_switch_fiber(g_block.scheduler_fake_stack, nullptr, nullptr);
#endif
}

void init_thread(ThreadState& t, int i) {
    t.stack = g_stacks.stack(static_cast<std::size_t>(i));
    t.stack_bytes = stack_bytes();
#if defined(PYFAST_EMU_UCONTEXT)
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = t.stack;
    t.context.uc_stack.ss_size = t.stack_bytes;
    t.context.uc_link = nullptr;
    makecontext(&t.context, pyfast_emu_fiber_main, 0);
#else
    // Six registers to pop, then the return address; pyfast_emu_fiber_start's call then
    // finds the stack 16-byte aligned, as the ABI wants at a call.
    char* top = t.stack + t.stack_bytes;
    void** sp = reinterpret_cast<void**>(top - 72);
    for (int r = 0; r < 6; ++r) sp[r] = nullptr;
    sp[6] = reinterpret_cast<void*>(&pyfast_emu_fiber_start);
    t.sp = sp;
#endif
    t.state = State::kReady;
    t.asan_fake_stack = nullptr;
    t.copies.committed.clear();
    t.copies.open.clear();
}

// ------------------------------------------------------------------------------ barriers
void resolve_barrier() {
    Block& b = g_block;
    const ThreadState* first = nullptr;
    const ThreadState* gone = nullptr;
    for (int i = 0; i < b.count; ++i) {
        const ThreadState& t = b.threads[i];
        if (t.state == State::kAtBarrier && first == nullptr) first = &t;
        if (t.state == State::kExited && gone == nullptr) gone = &t;
    }
    if (b.exited > 0) {
        fail(cudaErrorLaunchFailure,
             format("%s reached by %d threads after %d of the block had exited (thread %s returned); every "
                    "thread of the block must reach each barrier (%s)",
                    barrier_name(first->barrier), b.at_barrier, b.exited, name(gone->idx).c_str(),
                    thread_at(*first).c_str()));
        return;
    }
    int result = first->barrier == Barrier::kAnd ? 1 : 0;
    for (int i = 0; i < b.count; ++i) {
        const ThreadState& t = b.threads[i];
        if (t.line != first->line || t.barrier != first->barrier ||
            (t.file != first->file && std::strcmp(t.file, first->file) != 0)) {
            fail(cudaErrorLaunchFailure, format("divergent barrier: thread %s waits at %s, thread %s at %s",
                                                name(first->idx).c_str(), where(first->file, first->line).c_str(),
                                                name(t.idx).c_str(), where(t.file, t.line).c_str()));
            return;
        }
        if (first->barrier == Barrier::kCount) result += t.predicate;
        if (first->barrier == Barrier::kAnd) result &= t.predicate;
        if (first->barrier == Barrier::kOr) result |= t.predicate;
    }
    b.barrier_result = result;
    b.at_barrier = 0;
    profile::block_synchronized();
    for (int i = 0; i < b.count; ++i) make_ready(i);
}

// Every thread still running waits at something that cannot complete: say who waits where.
void diagnose_stall() {
    Block& b = g_block;
    std::string detail;
    for (int i = 0; i < b.count; ++i) {
        const ThreadState& t = b.threads[i];
        if (t.state == State::kAtBarrier) {
            detail += format("; %d threads wait at %s (%s)", b.at_barrier, barrier_name(t.barrier),
                             thread_at(t).c_str());
            break;
        }
    }
    bool divergent = false;
    int groups = 0;
    for (std::size_t w = 0; w < b.warps.size(); ++w) {
        const std::vector<PendingCollective>& pending = b.warps[w].pending;
        for (std::size_t i = 0; i < pending.size(); ++i) {
            const PendingCollective& p = pending[i];
            for (std::size_t j = i + 1; j < pending.size(); ++j) divergent |= (p.mask & pending[j].mask) != 0;
            if (groups++ < 4) {
                detail += format("; lanes 0x%08x of warp %zu wait at %s(mask 0x%08x) at %s for lanes 0x%08x",
                                 p.arrived, w, op_name(p.op), p.mask, where(p.file, p.line).c_str(),
                                 p.mask & ~p.arrived);
            }
        }
    }
    if (divergent) {
        fail(cudaErrorLaunchFailure, "divergent warp: lanes wait at collectives whose masks overlap" + detail);
    } else {
        fail(cudaErrorLaunchTimeout, "deadlock: no thread of the block can continue" + detail);
    }
}

void exit_thread(ThreadState* t) {
    Block& b = g_block;
    complete_copies(t->copies, -1);  // a thread's outstanding cp.async land before it is gone
    t->state = State::kExited;
    ++b.exited;
    Warp& w = b.warps[t->warp];
    w.exited |= 1u << t->lane;
    for (const PendingCollective& p : w.pending) {
        if (p.mask & (1u << t->lane)) {
            fail(cudaErrorLaunchFailure,
                 format("%s at %s names lane %d of warp %d (mask 0x%08x), which exited without reaching it",
                        op_name(p.op), where(p.file, p.line).c_str(), t->lane, t->warp, p.mask));
            return;
        }
    }
    if (b.at_barrier > 0 && b.at_barrier + b.exited == b.count) resolve_barrier();
}

// ------------------------------------------------------------------------------ blocks
void run_block() {
    Block& b = g_block;
    b.exited = b.at_barrier = 0;
    b.ready.clear();
    b.ready_head = 0;
    for (Warp& w : b.warps) {
        w.exited = 0;
        w.pending.clear();
    }
    for (int i = 0; i < b.count; ++i) {
        init_thread(b.threads[i], i);
        b.ready.push_back(i);
    }
    for (int i = next_ready(); i >= 0 && !b.failed; i = next_ready()) run_thread(&b.threads[i]);
    if (!b.failed && b.exited < b.count) diagnose_stall();
#if defined(PYFAST_EMU_ASAN)
    if (b.failed) {  // abandoned frames leave their red zones behind on the reused stacks
        for (int i = 0; i < b.count; ++i) __asan_unpoison_memory_region(b.threads[i].stack, b.threads[i].stack_bytes);
    }
#endif
}

// ------------------------------------------------------------------------------ static shared
// A kernel's static __shared__ variables are its function statics; the module's own symbol table
// names them: the statics of function F are the objects whose mangled names start with "_ZZ",
// F's encoding (F's name without its "_Z") and "E". Read once, looked up once per kernel.
struct StaticObject {
    std::string name;
    char* address;
    std::size_t bytes;
};

struct SymbolTable {
    bool loaded = false;
    std::map<std::uintptr_t, std::string> functions;
    std::vector<StaticObject> statics;
};

SymbolTable load_symbols() {
    SymbolTable table;
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&run_launch), &info) == 0 || info.dli_fname == nullptr) return table;
    std::ifstream file(info.dli_fname, std::ios::binary);
    const std::vector<char> image((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (image.size() < sizeof(Elf64_Ehdr) || std::memcmp(image.data(), ELFMAG, SELFMAG) != 0) return table;
    const auto* header = reinterpret_cast<const Elf64_Ehdr*>(image.data());
    if (header->e_ident[EI_CLASS] != ELFCLASS64 || header->e_shoff + header->e_shnum * sizeof(Elf64_Shdr) > image.size()) {
        return table;
    }
    const auto* sections = reinterpret_cast<const Elf64_Shdr*>(image.data() + header->e_shoff);
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(info.dli_fbase);
    for (int i = 0; i < header->e_shnum; ++i) {
        if (sections[i].sh_type != SHT_SYMTAB || sections[i].sh_link >= header->e_shnum) continue;
        const Elf64_Shdr& strings = sections[sections[i].sh_link];
        const auto* symbols = reinterpret_cast<const Elf64_Sym*>(image.data() + sections[i].sh_offset);
        const std::size_t count = sections[i].sh_size / sizeof(Elf64_Sym);
        for (std::size_t k = 0; k < count; ++k) {
            const Elf64_Sym& sym = symbols[k];
            if (sym.st_name >= strings.sh_size || sym.st_value == 0) continue;
            const char* symbol = image.data() + strings.sh_offset + sym.st_name;
            const int type = ELF64_ST_TYPE(sym.st_info);
            if (type == STT_FUNC) {
                table.functions[base + sym.st_value] = symbol;
            } else if (type == STT_OBJECT && std::strncmp(symbol, "_ZZ", 3) == 0 && sym.st_size > 0) {
                table.statics.push_back(StaticObject{symbol, reinterpret_cast<char*>(base + sym.st_value), sym.st_size});
            }
        }
        table.loaded = true;
    }
    return table;
}

const SymbolTable& symbol_table() {
    static const SymbolTable table = load_symbols();
    return table;
}

// The static __shared__ variables of `kernel` (empty when the symbol table is gone: a stripped build).
const std::vector<StaticObject>& kernel_statics(const void* kernel) {
    static std::map<const void*, std::vector<StaticObject>> cache;
    const auto cached = cache.find(kernel);
    if (cached != cache.end()) return cached->second;
    std::vector<StaticObject>& found = cache[kernel];
    const SymbolTable& table = symbol_table();
    const auto function = table.functions.find(reinterpret_cast<std::uintptr_t>(kernel));
    if (function == table.functions.end() || function->second.size() < 3) return found;
    const std::string encoding = function->second.substr(2);  // without "_Z"
    for (const StaticObject& object : table.statics) {
        // "_ZZ<encoding>E<name>", or "_ZZZ<encoding>E...E<name>" for one in a lambda inside the kernel
        const std::string& name = object.name;
        std::size_t at = 2;
        while (at < name.size() && name[at] == 'Z') ++at;
        if (at >= 3 && name.compare(at, encoding.size(), encoding) == 0 && name.size() > at + encoding.size() &&
            name[at + encoding.size()] == 'E') {
            found.push_back(object);
        }
    }
    return found;
}

void poison(const std::vector<StaticObject>& statics) {
    for (const StaticObject& object : statics) std::memset(object.address, 0xff, object.bytes);
}

std::map<const void*, int>& dynamic_shared_limits() {
    static std::map<const void*, int> limits;
    return limits;
}

}  // namespace

// ------------------------------------------------------------------------------ device side
int block_barrier(Barrier kind, int predicate, const char* file, int line) {
    ThreadState* t = g_thread;
    Block& b = g_block;
    t->state = State::kAtBarrier;
    t->file = file;
    t->line = line;
    t->barrier = kind;
    t->predicate = predicate != 0;
    profile::barrier(static_cast<int>(t - b.threads.data()));
    ++b.at_barrier;
    if (b.at_barrier + b.exited == b.count) resolve_barrier();
    if (b.failed) abandon(t);
    wait_here(t);
    return b.barrier_result;
}

void warp_collective(WarpOp op, unsigned mask, WarpSlot* slot, WarpCombine combine, const void* info,
                     const char* file, int line) {
    ThreadState* t = g_thread;
    Block& b = g_block;
    Warp& w = b.warps[t->warp];
    const unsigned bit = 1u << t->lane;
    t->file = file;
    t->line = line;
    if ((mask & bit) == 0) {
        fail(cudaErrorLaunchFailure, format("%s at %s: its mask 0x%08x does not name the calling lane %d (thread %s)",
                                            op_name(op), where(file, line).c_str(), mask, t->lane,
                                            name(t->idx).c_str()));
        abandon(t);
    }
    if ((mask & ~w.present) != 0) {
        fail(cudaErrorLaunchFailure, format("%s at %s: its mask 0x%08x names lanes 0x%08x that warp %d of the block "
                                            "does not have (thread %s)",
                                            op_name(op), where(file, line).c_str(), mask, mask & ~w.present, t->warp,
                                            name(t->idx).c_str()));
        abandon(t);
    }
    if ((mask & w.exited) != 0) {
        fail(cudaErrorLaunchFailure, format("%s at %s: its mask 0x%08x names lanes 0x%08x, which have exited "
                                            "(thread %s)",
                                            op_name(op), where(file, line).c_str(), mask, mask & w.exited,
                                            name(t->idx).c_str()));
        abandon(t);
    }
    // Join the collective of the same mask the other lanes wait at. PTX lets lanes meet at shfl.sync
    // or bar.warp.sync from different places (same qualifiers, same mask); .aligned instructions
    // (mma.sync, ldmatrix) must be the same instruction. Overlapping masks may resolve one after
    // the other (a half-warp shuffle, then the whole warp); if they cannot, the stall says so.
    PendingCollective* pending = nullptr;
    for (PendingCollective& p : w.pending) {
        if (p.mask == mask) {
            pending = &p;
            break;
        }
    }
    if (pending != nullptr) {
        const bool aligned = op == WarpOp::kMma || op == WarpOp::kLdmatrix;
        const bool same_place = pending->line == line && (pending->file == file || std::strcmp(pending->file, file) == 0);
        if (pending->op != op || (aligned && !same_place)) {
            fail(cudaErrorLaunchFailure,
                 format("divergent warp: lane %d (thread %s) reached %s(mask 0x%08x) at %s while lanes 0x%08x wait "
                        "for it at %s(mask 0x%08x) at %s",
                        t->lane, name(t->idx).c_str(), op_name(op), mask, where(file, line).c_str(), pending->arrived,
                        op_name(pending->op), pending->mask, where(pending->file, pending->line).c_str()));
            abandon(t);
        }
    } else {
        w.pending.push_back(PendingCollective{op, mask, 0u, file, line, combine, info});
        pending = &w.pending.back();
    }
    t->state = State::kAtWarp;
    t->warp_op = op;
    t->slot = slot;
    pending->arrived |= bit;
    if (pending->arrived != mask) {
        wait_here(t);
        return;
    }
    // The last lane: apply the collective for all of them.
    WarpSlot* slots[32] = {};
    const int first = t->warp * 32;
    for (int lane = 0; lane < 32; ++lane) {
        if (mask & (1u << lane)) slots[lane] = b.threads[first + lane].slot;
    }
    const PendingCollective done = *pending;
    w.pending.erase(w.pending.begin() + (pending - w.pending.data()));
    if (done.combine != nullptr) done.combine(slots, mask, done.info);
    if (b.failed) abandon(t);
    for (int lane = 0; lane < 32; ++lane) {
        if ((mask & (1u << lane)) && lane != t->lane) make_ready(first + lane);
    }
    t->state = State::kRunning;
}

int running_thread_index() {
    return g_thread != nullptr ? static_cast<int>(g_thread - g_block.threads.data()) : -1;
}

unsigned active_mask() {
    const Warp& w = g_block.warps[g_thread->warp];
    return w.present & ~w.exited;
}

void fault(cudaError_t status, const char* what, const char* file, int line) {
    ThreadState* t = g_thread;
    t->file = file;
    t->line = line;
    fail(status, format("%s (%s)", what, thread_at(*t).c_str()));
    abandon(t);
}

// Source lane of lane `lane` for a shuffle (PTX shfl.sync: out-of-segment sources read their own value).
void combine_shuffle(WarpSlot* const* slots, unsigned mask, const void*) {
    for (int lane = 0; lane < 32; ++lane) {
        WarpSlot* s = slots[lane];
        if (s == nullptr) continue;
        const int width = s->width;
        if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
            fail(cudaErrorLaunchFailure, format("shuffle width %d is not a power of two up to 32", width));
            return;
        }
        const int segment = lane & ~(width - 1);
        int source = lane;
        switch (g_block.threads[g_thread->warp * 32 + lane].warp_op) {
            case WarpOp::kShflIdx: source = segment + (s->operand & (width - 1)); break;
            case WarpOp::kShflUp: source = lane - s->operand >= segment ? lane - s->operand : lane; break;
            case WarpOp::kShflDown: source = lane + s->operand < segment + width ? lane + s->operand : lane; break;
            case WarpOp::kShflXor: source = (lane ^ s->operand) < segment + width ? lane ^ s->operand : lane; break;
            default: break;
        }
        if ((mask & (1u << source)) == 0) {
            fail(cudaErrorLaunchFailure, format("shuffle: lane %d reads lane %d, which is not in the mask 0x%08x "
                                                "(the value is undefined on a GPU)",
                                                lane, source, mask));
            return;
        }
        s->result = slots[source]->value;
    }
}

void combine_vote(WarpSlot* const* slots, unsigned mask, const void*) {
    unsigned ballot = 0;
    for (int lane = 0; lane < 32; ++lane)
        if (slots[lane] != nullptr && slots[lane]->operand) ballot |= 1u << lane;
    const WarpOp op = g_thread->warp_op;
    for (int lane = 0; lane < 32; ++lane) {
        WarpSlot* s = slots[lane];
        if (s == nullptr) continue;
        switch (op) {
            case WarpOp::kBallot: s->result = ballot; break;
            case WarpOp::kAny: s->result = ballot != 0; break;
            case WarpOp::kAll: s->result = ballot == mask; break;
            case WarpOp::kMatchAny: {
                unsigned same = 0;
                for (int other = 0; other < 32; ++other)
                    if (slots[other] != nullptr && slots[other]->value == s->value) same |= 1u << other;
                s->result = same;
                break;
            }
            default: break;
        }
    }
}

void combine_reduce(WarpSlot* const* slots, unsigned, const void*) {
    const WarpOp op = g_thread->warp_op;
    bool started = false;
    std::uint32_t total = 0;
    bool is_signed = false;
    for (int lane = 0; lane < 32; ++lane) {
        const WarpSlot* s = slots[lane];
        if (s == nullptr) continue;
        is_signed = s->operand != 0;
        const std::uint32_t v = static_cast<std::uint32_t>(s->value);
        if (!started) {
            total = v;
            started = true;
            continue;
        }
        switch (op) {
            case WarpOp::kReduceAdd: total += v; break;
            case WarpOp::kReduceAnd: total &= v; break;
            case WarpOp::kReduceOr: total |= v; break;
            case WarpOp::kReduceXor: total ^= v; break;
            case WarpOp::kReduceMin:
                total = is_signed ? static_cast<std::uint32_t>(std::min<std::int32_t>(total, v)) : std::min(total, v);
                break;
            case WarpOp::kReduceMax:
                total = is_signed ? static_cast<std::uint32_t>(std::max<std::int32_t>(total, v)) : std::max(total, v);
                break;
            default: break;
        }
    }
    for (int lane = 0; lane < 32; ++lane)
        if (slots[lane] != nullptr) slots[lane]->result = total;
}

void* dynamic_shared() { return g_block.dynamic_shared; }

AsyncCopies& running_thread_copies() { return g_thread->copies; }

long long clock64_value() {
    static long long ticks = 0;
    return ticks += 1000;
}

// ------------------------------------------------------------------------------ launches
cudaError_t run_launch(const LaunchConfig& config, void (*body)(void*), void* args) {
    const dim3 grid = config.grid, block = config.block;
    const unsigned long long threads = 1ULL * block.x * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 ||
        block.z > 64) {
        return cudaErrorInvalidConfiguration;
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        return cudaErrorInvalidConfiguration;
    }
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    const auto limit = dynamic_shared_limits().find(config.kernel);
    const std::size_t shared_limit = static_cast<std::size_t>(
        limit != dynamic_shared_limits().end() ? limit->second : g_device.shared_per_block);
    if (config.shared_bytes > shared_limit) return cudaErrorInvalidValue;
    if (!g_stacks.reserve(threads)) return cudaErrorMemoryAllocation;

    Block& b = g_block;
    b.count = static_cast<int>(threads);
    if (b.threads.size() < threads) b.threads.resize(threads);
    b.warps.assign((threads + 31) / 32, Warp{});
    for (int i = 0; i < b.count; ++i) {
        ThreadState& t = b.threads[i];
        t.warp = i / 32;
        t.lane = i % 32;
        t.idx = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
        b.warps[t.warp].present |= 1u << t.lane;
    }
    b.failed = false;
    b.error = cudaSuccess;
    b.body = body;
    b.args = args;
    b.rng.seed(g_options.seed);
    std::vector<char> none(1);
    b.dynamic_shared = config.shared_bytes > 0 ? static_cast<char*>(std::malloc(config.shared_bytes)) : none.data();
    if (b.dynamic_shared == nullptr) return cudaErrorMemoryAllocation;
    g_grid_dim = grid;
    g_block_dim = block;
    const std::vector<StaticObject>& statics = kernel_statics(config.kernel);
    const unsigned long long blocks = 1ULL * grid.x * grid.y * grid.z;
    if (profile::active()) {
        std::vector<SharedRange> ranges;
        for (const StaticObject& object : statics) ranges.push_back(SharedRange{object.address, object.bytes});
        const auto function = symbol_table().functions.find(reinterpret_cast<std::uintptr_t>(config.kernel));
        profile::launch_begin(config, function != symbol_table().functions.end() ? function->second : std::string(),
                              std::move(ranges), allocation_list(), blocks);
    }

    // Blocks in order, or in an order drawn from the seed: i -> (a i + c) mod blocks, a coprime.
    unsigned long long step = 1, offset = 0;
    if (g_options.random_order && blocks > 1) {
        std::uniform_int_distribution<unsigned long long> pick(1, blocks - 1);
        do step = pick(b.rng);
        while (std::gcd(step, blocks) != 1);
        offset = pick(b.rng);
    }
    for (unsigned long long i = 0; i < blocks && !b.failed; ++i) {
        const unsigned long long index = static_cast<unsigned long long>(
            (static_cast<unsigned __int128>(i) * step + offset) % blocks);
        g_block_idx = uint3{static_cast<unsigned>(index % grid.x), static_cast<unsigned>((index / grid.x) % grid.y),
                            static_cast<unsigned>(index / (1ULL * grid.x * grid.y))};
        if (!profile::block_begin(index, b.dynamic_shared, config.shared_bytes)) continue;
        if (config.shared_bytes > 0) std::memset(b.dynamic_shared, 0xff, config.shared_bytes);
        poison(statics);
        run_block();
        profile::block_end(b.failed);
    }
    profile::launch_end();
    if (config.shared_bytes > 0) std::free(b.dynamic_shared);
    b.dynamic_shared = nullptr;
    g_thread = nullptr;
    if (b.failed) {
        g_diagnostic = b.message;
        ++g_launch_errors;
        return b.error;
    }
    return cudaSuccess;
}

const DeviceProperties& device_properties() { return g_device; }

bool select_device(const char* preset) {
    for (std::size_t i = 0; i < sizeof(kPresets) / sizeof(kPresets[0]); ++i) {
        if (std::strcmp(preset, kPresetNames[i]) == 0) {
            g_device = kPresets[i];
            return true;
        }
    }
    return false;
}

void set_multiprocessors(int count) { g_device.multiprocessors = count > 0 ? count : 1; }

void set_order(bool random, std::uint64_t seed) {
    g_options.random_order = random;
    g_options.seed = seed;
}

bool random_order() { return g_options.random_order; }
std::uint64_t order_seed() { return g_options.seed; }
long long launch_errors() { return g_launch_errors; }
const std::string& last_diagnostic() { return g_diagnostic; }

bool poisons_static_shared() { return symbol_table().loaded; }

int regrow_stack_pool() {
#if defined(PYFAST_EMU_ASAN)
    char* const old = g_stacks.base;
    const std::size_t bytes = g_stacks.slot_bytes * g_stacks.slots;
    if (!g_stacks.reserve(g_stacks.slots + 1)) return -2;
    return old != nullptr && __asan_region_is_poisoned(old, bytes) != nullptr ? 1 : 0;
#else
    return -1;
#endif
}

std::vector<std::string> presets() { return std::vector<std::string>(std::begin(kPresetNames), std::end(kPresetNames)); }

// ------------------------------------------------------------------------------ memory
namespace {
std::mutex g_memory_mutex;
std::map<const void*, std::size_t>& allocations() {
    static std::map<const void*, std::size_t> live;
    return live;
}
std::size_t g_allocated = 0;
// (start, bytes) -> registrations of host memory standing in for device memory
std::map<std::pair<const void*, std::size_t>, int>& host_ranges() {
    static std::map<std::pair<const void*, std::size_t>, int> ranges;
    return ranges;
}
}  // namespace

void register_host_memory(const void* p, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    if (bytes > 0) ++host_ranges()[{p, bytes}];
}

void unregister_host_memory(const void* p, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    const auto it = host_ranges().find({p, bytes});
    if (it != host_ranges().end() && --it->second == 0) host_ranges().erase(it);
}

void* device_alloc(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    if (bytes > static_cast<std::size_t>(g_device.global_bytes) - g_allocated) return nullptr;
    void* p = nullptr;
    // CuPy's pool hands out 512-byte multiples; 256-byte alignment is what cudaMalloc promises.
    if (posix_memalign(&p, 256, bytes > 0 ? bytes : 1) != 0) return nullptr;
    allocations()[p] = bytes;
    g_allocated += bytes;
    return p;
}

bool device_free(void* p) {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    const auto it = allocations().find(p);
    if (it == allocations().end()) return false;
    g_allocated -= it->second;
    allocations().erase(it);
    std::free(p);
    return true;
}

std::vector<std::pair<const char*, std::size_t>> allocation_list() {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    std::vector<std::pair<const char*, std::size_t>> list;
    for (const auto& [start, bytes] : allocations()) list.emplace_back(static_cast<const char*>(start), bytes);
    for (const auto& [range, count] : host_ranges()) {
        list.emplace_back(static_cast<const char*>(range.first), range.second);
    }
    return list;
}

std::size_t allocated_bytes() {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    return g_allocated;
}

// Reads PYFAST_EMU_DEVICE, PYFAST_EMU_SM_COUNT, PYFAST_EMU_ORDER and PYFAST_EMU_SEED once. A value
// none of these takes is left out here; pyfast/_emulation.py refuses it with its name right after.
struct Environment {
    Environment() {
        if (const char* device = std::getenv("PYFAST_EMU_DEVICE")) {
            if (*device != '\0') select_device(device);
        }
        if (const char* sms = std::getenv("PYFAST_EMU_SM_COUNT")) {
            if (std::atoi(sms) > 0) set_multiprocessors(std::atoi(sms));
        }
        if (const char* order = std::getenv("PYFAST_EMU_ORDER")) g_options.random_order = std::strcmp(order, "random") == 0;
        if (const char* seed = std::getenv("PYFAST_EMU_SEED")) g_options.seed = std::strtoull(seed, nullptr, 10);
    }
};
const Environment g_environment;

}  // namespace pyfast_emu

extern "C" void pyfast_emu_fiber_main() {
    using namespace pyfast_emu;
    ThreadState* t = g_thread;
#if defined(PYFAST_EMU_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &g_block.scheduler_stack, &g_block.scheduler_stack_bytes);
#endif
    g_block.body(g_block.args);
    exit_thread(t);
    switch_to_scheduler(t, true);
    std::abort();  // an exited thread is never resumed
}

long long clock64() { return pyfast_emu::clock64_value(); }

// ------------------------------------------------------------------------------ runtime API
namespace {
using pyfast_emu::g_device;
using pyfast_emu::g_last_error;

cudaError_t record(cudaError_t status) {
    if (status != cudaSuccess) g_last_error = status;
    return status;
}
}  // namespace

const char* cudaGetErrorName(cudaError_t error) {
    switch (error) {
#define PYFAST_EMU_NAME(E) \
    case E: return #E;
        PYFAST_EMU_NAME(cudaSuccess)
        PYFAST_EMU_NAME(cudaErrorInvalidValue)
        PYFAST_EMU_NAME(cudaErrorMemoryAllocation)
        PYFAST_EMU_NAME(cudaErrorInitializationError)
        PYFAST_EMU_NAME(cudaErrorInvalidConfiguration)
        PYFAST_EMU_NAME(cudaErrorInvalidDevicePointer)
        PYFAST_EMU_NAME(cudaErrorInvalidMemcpyDirection)
        PYFAST_EMU_NAME(cudaErrorInsufficientDriver)
        PYFAST_EMU_NAME(cudaErrorInvalidDeviceFunction)
        PYFAST_EMU_NAME(cudaErrorNoDevice)
        PYFAST_EMU_NAME(cudaErrorInvalidDevice)
        PYFAST_EMU_NAME(cudaErrorInvalidResourceHandle)
        PYFAST_EMU_NAME(cudaErrorNotReady)
        PYFAST_EMU_NAME(cudaErrorIllegalAddress)
        PYFAST_EMU_NAME(cudaErrorLaunchOutOfResources)
        PYFAST_EMU_NAME(cudaErrorLaunchTimeout)
        PYFAST_EMU_NAME(cudaErrorAssert)
        PYFAST_EMU_NAME(cudaErrorIllegalInstruction)
        PYFAST_EMU_NAME(cudaErrorMisalignedAddress)
        PYFAST_EMU_NAME(cudaErrorLaunchFailure)
        PYFAST_EMU_NAME(cudaErrorNotSupported)
        PYFAST_EMU_NAME(cudaErrorStreamCaptureUnsupported)
        PYFAST_EMU_NAME(cudaErrorUnknown)
#undef PYFAST_EMU_NAME
    }
    return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
    // Errors a launch's diagnostic found carry its message (the GPU's description, then why).
    static thread_local std::string text;
    const char* description = "unrecognized error code";
    switch (error) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInitializationError: return "initialization error";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevicePointer: return "invalid device pointer";
        case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
        case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
        case cudaErrorInvalidDeviceFunction: return "invalid device function";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorNotReady: return "device not ready";
        case cudaErrorNotSupported: return "operation not supported";
        case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
        case cudaErrorIllegalAddress: description = "an illegal memory access was encountered"; break;
        case cudaErrorLaunchOutOfResources: description = "too many resources requested for launch"; break;
        case cudaErrorLaunchTimeout: description = "the launch timed out and was terminated"; break;
        case cudaErrorAssert: description = "device-side assert triggered"; break;
        case cudaErrorIllegalInstruction: description = "an illegal instruction was encountered"; break;
        case cudaErrorMisalignedAddress: description = "misaligned address"; break;
        case cudaErrorLaunchFailure: description = "unspecified launch failure"; break;
        case cudaErrorUnknown: description = "unknown error"; break;
    }
    const std::string& diagnostic = pyfast_emu::last_diagnostic();
    if (diagnostic.empty()) return description;
    text = std::string(description) + ": " + diagnostic;
    return text.c_str();
}

cudaError_t cudaGetLastError() {
    const cudaError_t status = g_last_error;
    g_last_error = cudaSuccess;
    return status;
}

cudaError_t cudaPeekAtLastError() { return g_last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return record(device == 0 ? cudaSuccess : cudaErrorInvalidDevice); }

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
    if (device != 0) return record(cudaErrorInvalidDevice);
    switch (attribute) {
        case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
        case cudaDevAttrMaxBlockDimX: *value = 1024; break;
        case cudaDevAttrMaxBlockDimY: *value = 1024; break;
        case cudaDevAttrMaxBlockDimZ: *value = 64; break;
        case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; break;
        case cudaDevAttrMaxGridDimY: *value = 65535; break;
        case cudaDevAttrMaxGridDimZ: *value = 65535; break;
        case cudaDevAttrMaxSharedMemoryPerBlock: *value = g_device.shared_per_block; break;
        case cudaDevAttrWarpSize: *value = 32; break;
        case cudaDevAttrMaxRegistersPerBlock: *value = g_device.registers_per_block; break;
        case cudaDevAttrMultiProcessorCount: *value = g_device.multiprocessors; break;
        case cudaDevAttrL2CacheSize: *value = g_device.l2_bytes; break;
        case cudaDevAttrMaxThreadsPerMultiProcessor: *value = g_device.max_threads_per_multiprocessor; break;
        case cudaDevAttrComputeCapabilityMajor: *value = g_device.major; break;
        case cudaDevAttrComputeCapabilityMinor: *value = g_device.minor; break;
        case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = g_device.shared_per_multiprocessor; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = g_device.shared_per_block_optin; break;
        default: return record(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaRuntimeGetVersion(int* version) {
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void** pointer, std::size_t bytes) {
    *pointer = pyfast_emu::device_alloc(bytes);
    return record(*pointer != nullptr ? cudaSuccess : cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* pointer) {
    if (pointer == nullptr) return cudaSuccess;
    return record(pyfast_emu::device_free(pointer) ? cudaSuccess : cudaErrorInvalidDevicePointer);
}

cudaError_t cudaMemset(void* pointer, int value, std::size_t bytes) {
    if (bytes > 0 && pointer == nullptr) return record(cudaErrorInvalidValue);
    if (bytes > 0) std::memset(pointer, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* pointer, int value, std::size_t bytes, cudaStream_t) {
    return cudaMemset(pointer, value, bytes);
}

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return record(cudaErrorInvalidMemcpyDirection);
    if (bytes > 0 && (dst == nullptr || src == nullptr)) return record(cudaErrorInvalidValue);
    if (bytes > 0) std::memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemGetInfo(std::size_t* free, std::size_t* total) {
    *total = static_cast<std::size_t>(g_device.global_bytes);
    *free = *total - pyfast_emu::allocated_bytes();
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attribute, int value) {
    if (attribute == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
    if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
        value > g_device.shared_per_block_optin) {
        return record(cudaErrorInvalidValue);
    }
    std::lock_guard<std::mutex> lock(pyfast_emu::g_launch_mutex);
    pyfast_emu::dynamic_shared_limits()[kernel] = value;
    return cudaSuccess;
}
