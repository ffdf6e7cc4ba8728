// selftest.h - the emulator's self-test kernels (selftest.cu), run by name from its Python tests.
#pragma once

#include <string>
#include <vector>

#include "pyfast_emu_runtime.h"

namespace pyfast_emu {

std::vector<std::string> selftest_names();
// Runs one: the launch's status and the 1024 floats its kernel wrote; false for an unknown name.
bool run_selftest(const std::string& name, cudaError_t* status, std::vector<float>* values);

}  // namespace pyfast_emu
