"""What the profiled emulated build counts of each launch (csrc/emu/profile.cpp), as Nsight
Compute names it: warp-level requests, 32-byte sectors and sectors per request of global loads,
stores and atomics; shared-memory wavefronts and bank conflicts; barriers; the unique sectors a
launch reads and writes (its compulsory DRAM traffic). Per launch and per source line.

Exact for the blocks that were sampled (all of them unless ``sample_blocks`` limits it); a
sampled launch's request, sector, wavefront and barrier counts are scaled by blocks / sampled
blocks (``Launch.scale``), its unique sectors are those of the blocks that ran (all of them,
unless ``run_sampled_only``: then an estimate, marked so). What no counter here knows: caches
beyond the compulsory traffic (a re-read may hit L1 / L2 or not), timing, and accesses made by
the emulator's implementation of PTX instructions (ldmatrix, cp.async) rather than by C++ in the
kernel.
"""

import collections
import dataclasses
import functools
import os
import re
import subprocess

from pyfast.emulator import loader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTOR = 32


def controls():
    """The emulator's controls when the profiled build is the one running, else a RuntimeError
    saying how to get it."""
    if not loader.active():
        raise RuntimeError(f"the profiler runs on the emulator, which is not active ({loader.error()}); "
                           f"use `python -m pyfast.profile`, which starts it with the profiled build")
    emulator = loader.extension().emulator
    if not emulator.profiled():
        raise RuntimeError("the emulated build running does not count memory accesses: build it with "
                           "PYFAST_EMU_PROFILE=1 (python -m pyfast.profile does, into build/emu-profile/)")
    return emulator


@dataclasses.dataclass
class Site:
    """One memory instruction of a kernel (its call site in the emulated build): counts summed over
    the sampled blocks (not scaled)."""
    location: str  # file:line, the innermost inlined function's
    function: str
    space: str  # global or shared
    op: str  # load, store or atomic
    bytes: int  # per lane
    requests: int
    lanes: int
    sectors: int
    ideal_sectors: int
    wavefronts: int
    ideal_wavefronts: int

    @property
    def sectors_per_request(self):
        return self.sectors / self.requests if self.requests else 0.0

    @property
    def ideal_per_request(self):
        if self.space == "global":
            return self.ideal_sectors / self.requests if self.requests else 0.0
        return self.ideal_wavefronts / self.requests if self.requests else 0.0

    @property
    def bank_conflicts(self):
        return self.wavefronts - self.ideal_wavefronts


@dataclasses.dataclass
class Launch:
    kernel: str
    grid: tuple
    block: tuple
    dynamic_shared: int
    static_shared: int
    blocks: int
    sampled_blocks: int
    run_blocks: int
    barriers: int
    unique_read_bytes: int
    unique_write_bytes: int
    sites: list
    unique_estimated: bool = False  # only sampled blocks ran: unique bytes estimated (see _unique)
    code: list = dataclasses.field(default_factory=list)  # (basic block's offset, warp entries), sampled blocks
    memory_sites: list = dataclasses.field(default_factory=list)  # (a site's offset, its requests), sampled blocks

    @property
    def scale(self):
        """Blocks of the launch per sampled block: what the sampled counts are multiplied by."""
        return self.blocks / self.sampled_blocks if self.sampled_blocks else 0.0

    @property
    def threads_per_block(self):
        return self.block[0] * self.block[1] * self.block[2]

    def total(self, field, space=None, op=None):
        """A counter over the launch (scaled), for one space / op or all."""
        value = sum(getattr(s, field) for s in self.sites
                    if (space is None or s.space == space) and (op is None or s.op == op))
        return value * self.scale

    @property
    def short_name(self):
        return short_kernel_name(self.kernel)


def short_kernel_name(kernel):
    """The kernel's name without its return type, parameters, namespaces and functor arguments."""
    name = re.sub(r"^void ", "", kernel)
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # drop the parameter list: the last top-level "(...)"
        if ch in "<":
            depth += 1
        elif ch in ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            cut = i
    name = name[:cut]
    return re.sub(r"\b(pyfast|\(anonymous namespace\))::", "", name)


@functools.lru_cache(maxsize=None)
def _module_lines(module, offsets):
    """{offset: (file:line, function)} of code offsets in `module`, by addr2line: of the chain of
    inlined calls at the offset, the innermost line outside the emulator's CUDA shim (an __ldg or
    an atomic there is reported at the kernel's line that called it). The offsets are return
    addresses of the hooks, so the call is the byte before."""
    if not offsets:
        return {}
    # Each address prints its chain of (function, file:line) pairs, innermost first; address 0,
    # asked after each, prints "??:0" and marks where the chain ends.
    addresses = [a for o in offsets for a in (hex(o - 1), "0x0")]
    try:
        result = subprocess.run(["addr2line", "-e", module, "-f", "-C", "-i", *addresses], capture_output=True,
                                text=True, timeout=600)
    except OSError:  # no addr2line (binutils): counts without their lines
        return {o: ("?", "?") for o in offsets}
    chains, chain, lines = [], [], result.stdout.splitlines()
    for function, location in zip(lines[::2], lines[1::2]):
        if location.startswith("??:"):
            chains.append(chain)
            chain = []
        else:
            chain.append((_short_path(location), function))
    if result.returncode != 0 or len(chains) != len(offsets):
        return {o: ("?", "?") for o in offsets}
    shim = os.path.join("csrc", "emu", "include") + os.sep
    found = {}
    for offset, frames in zip(offsets, chains):
        own = [f for f in frames if not f[0].startswith(shim)]
        found[offset] = (own or frames or [("?", "?")])[0]
    return found


def _short_path(location):
    location = re.sub(r" \(discriminator \d+\)$", "", location)
    # The profiled build compiles copies of the kernels (setup.py's unrolled_kernels): their lines
    # are the sources' lines.
    location = re.sub(r"^.*/unrolled/", ROOT + os.sep, location)
    if location.startswith(ROOT + os.sep):
        return location[len(ROOT) + 1:]
    return location


def start(sample_blocks=0, run_sampled_only=False):
    """Record every launch from now on (see the module's docstring for the sampling)."""
    if sample_blocks < 0:
        raise ValueError(f"sample_blocks: expected 0 (every block) or more, got {sample_blocks}")
    if run_sampled_only and not sample_blocks:
        raise ValueError("run_sampled_only: needs sample_blocks > 0 (the blocks that run)")
    controls().profile_start(int(sample_blocks), bool(run_sampled_only))


def stop():
    """The launches recorded since start(), as Launch objects with their sites' source lines."""
    emulator = controls()
    raw = emulator.profile_stop()
    module = emulator.profile_module()
    offsets = tuple(sorted({s["offset"] for launch in raw for s in launch["sites"]}))
    lines = _module_lines(module, offsets)
    launches = []
    for launch in raw:
        sites = [Site(location=lines[s["offset"]][0], function=lines[s["offset"]][1], space=s["space"], op=s["op"],
                      bytes=s["bytes"], requests=s["requests"], lanes=s["lanes"], sectors=s["sectors"],
                      ideal_sectors=s["ideal_sectors"], wavefronts=s["wavefronts"],
                      ideal_wavefronts=s["ideal_wavefronts"]) for s in launch["sites"]]
        launches.append(Launch(kernel=launch["kernel"], grid=tuple(launch["grid"]), block=tuple(launch["block"]),
                               dynamic_shared=launch["dynamic_shared"], static_shared=launch["static_shared"],
                               blocks=launch["blocks"], sampled_blocks=launch["sampled_blocks"],
                               run_blocks=launch["run_blocks"], barriers=launch["barriers"],
                               unique_read_bytes=_unique(launch, "unique_read_sectors", "read_allocation_bytes"),
                               unique_write_bytes=_unique(launch, "unique_write_sectors", "written_allocation_bytes"),
                               sites=_merged(sites),
                               unique_estimated=launch["run_blocks"] < launch["blocks"],
                               code=[tuple(c) for c in launch.get("code", [])],
                               memory_sites=[(s["offset"], s["requests"]) for s in launch["sites"]]))
    return launches


def _unique(launch, sectors, allocations):
    """Unique bytes of a launch: counted, where every block ran; where only sampled blocks ran,
    theirs scaled to the grid, at most the bytes of the allocations they touched (an estimate:
    blocks that share data would count it more than once)."""
    counted = launch[sectors] * SECTOR
    if launch["run_blocks"] >= launch["blocks"] or not launch["run_blocks"]:
        return counted
    return int(min(counted * launch["blocks"] / launch["run_blocks"], launch[allocations]))


def _merged(sites):
    """Sites at the same source line, space, op and width summed (a line can hold several calls)."""
    merged = collections.OrderedDict()
    for s in sites:
        key = (s.location, s.space, s.op, s.bytes)
        if key in merged:
            m = merged[key]
            for field in ("requests", "lanes", "sectors", "ideal_sectors", "wavefronts", "ideal_wavefronts"):
                setattr(m, field, getattr(m, field) + getattr(s, field))
        else:
            merged[key] = dataclasses.replace(s)
    return list(merged.values())


def record(fn, *args, sample_blocks=0, run_sampled_only=False, **kwargs):
    """(fn's result, the launches it made) on the profiled emulator."""
    start(sample_blocks, run_sampled_only)
    try:
        result = fn(*args, **kwargs)
    finally:
        launches = stop()
    return result, launches
