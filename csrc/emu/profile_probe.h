// profile_probe.h - the profiler's probe kernels (profile_probe.cu), run by name from its tests.
#pragma once

#include <string>
#include <vector>

#include "pyfast_emu_runtime.h"

namespace pyfast_emu {

std::vector<std::string> profile_probe_names();
// Launches one on fresh 4 KB device arrays (in[i] = i, out zeroed); false for an unknown name.
bool run_profile_probe(const std::string& name, cudaError_t* status);

}  // namespace pyfast_emu
