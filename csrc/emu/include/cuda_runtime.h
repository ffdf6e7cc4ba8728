// cuda_runtime.h for the emulated build (csrc/emu): what `#include <cuda_runtime.h>` gives the
// kernels and csrc/ when the host compiler builds them with -DPYFAST_EMULATOR -I csrc/emu/include.
#pragma once

#include "pyfast_emu_runtime.h"
#include "pyfast_emu.h"
