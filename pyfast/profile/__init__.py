"""Profile without a GPU: what Nsight Compute would count of pyfast's kernels, from the CPU
emulator, and a model that turns those counts into a time per card, labelled as modelled.

    python -m pyfast.profile script.py [args]       # every launch the script makes, and its worst lines
    python -m pyfast.profile -c "CODE"

- counters (pyfast.profile.counters): the profiled emulated build (PYFAST_EMU_PROFILE=1, built
  into build/emu-profile/ by the command above in a source checkout) counts each launch's
  warp-level memory requests, sectors, unique bytes, shared-memory wavefronts and barriers, per
  source line. Exact where the kernel's C++ makes the access; see counters for what it misses.
- report (pyfast.profile.report): the tables.

A modelled time is a tool to rank and explain kernels, never a measurement: it is always labelled
"modelled (<model>, <card>)" and kept out of measured results.
"""

from pyfast.profile.counters import Launch, Site, controls, record, start, stop  # noqa: F401
