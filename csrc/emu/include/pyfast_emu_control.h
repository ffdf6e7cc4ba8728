// pyfast_emu_control.h - what the emulated build's Python bindings (csrc/emu/bindings.cpp) ask of
// the runtime: the card, the scheduling order, device memory, counters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pyfast_emu_runtime.h"

namespace pyfast_emu {

std::vector<std::string> presets();
// Threads and blocks in the order drawn from `seed` (random) or in index order (the default).
void set_order(bool random, std::uint64_t seed);
bool random_order();
std::uint64_t order_seed();

// "Device" memory: 256-byte aligned host memory of exactly the size asked (so AddressSanitizer
// sees every byte past the end), counted against the card's memory. nullptr when out of it.
void* device_alloc(std::size_t bytes);
bool device_free(void* pointer);
std::size_t allocated_bytes();
// Host memory used as device memory without being allocated here (a PyTorch CPU tensor's storage
// taken by DLPack): listed with the allocations, so the profiler counts the kernels' accesses to
// it, but not counted against the card's memory. Registrations of one range nest (counted).
void register_host_memory(const void* pointer, std::size_t bytes);
void unregister_host_memory(const void* pointer, std::size_t bytes);

long long launch_errors();               // launches that ended in a diagnostic so far
const std::string& last_diagnostic();    // the latest one's message
bool poisons_static_shared();            // false in a build whose symbol table was stripped
// Grows the fibers' stack pool by one stack, releasing its old mapping as a launch of a larger block
// does; under AddressSanitizer, 1 when the released range is still poisoned (memory mapped there
// later, a Python arena say, would then be reported), else 0; -1 in a build without it.
int regrow_stack_pool();

}  // namespace pyfast_emu
