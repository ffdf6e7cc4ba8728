"""Static facts of the CUDA build, without a GPU: registers, spills and shared memory per kernel
(ptxas -v), theoretical occupancy on a card, and the SASS of every source line (nvcc -lineinfo,
disassembled by nvdisasm), by instruction class.

Each kernels/<family>/*.cu is compiled once more to a cubin for one architecture (default sm_90, the H100
and H200), with the flags of the real build, into build/sass/ (kept until its sources change).
nvdisasm comes from the CUDA toolkit or PyPI (``pip install nvidia-cuda-nvdisasm``, the
``profile`` extra).

Dynamic instruction counts: the profiled emulator counts how often each warp entered each basic
block of the host build of a kernel; mapped to source lines, and times each line's SASS, that
estimates the instructions the GPU issues. The approximation: the host compiler and nvcc split a
line's code differently (a line's count is the most any of its host blocks was entered), unrolled
or predicated GPU code executes all of a line's SASS each time, and code the GPU has that the host
does not (or the reverse) counts nothing.
"""

import bisect
import collections
import dataclasses
import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from pyfast.profile import counters

ROOT = counters.ROOT
CACHE = os.path.join(ROOT, "build", "sass")

# The classes the model issues differently: FP32 FMA, other FP32, integer and logic, memory
# (global, shared, local, constant loads of registers, shuffles), control (branches, barriers),
# tensor core, uniform datapath.
CLASSES = ("ffma", "fp32", "integer", "memory", "control", "tensor", "uniform", "other")
_FP32 = {"FADD", "FMUL", "FMNMX", "FSETP", "FSEL", "FSET", "FCHK", "MUFU", "FRND", "FSWZADD", "F2F", "F2FP"}
# Loads and stores of data (what the emulator counts as requests); constant loads, shuffles and
# fences are "other".
_MEMORY = {"LDG", "STG", "LDS", "STS", "LD", "ST", "LDL", "STL", "ATOM", "ATOMS", "ATOMG", "RED", "REDG", "LDSM",
           "LDGSTS"}
_OTHER = {"LDC", "ULDC", "SHFL", "MEMBAR", "CCTL", "LDGDEPBAR", "S2R", "CS2R", "S2UR", "R2UR", "B2R", "R2B"}
_CONTROL = {"BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BAR", "BSSY", "BSYNC", "WARPSYNC", "NOP", "BMOV",
            "YIELD", "DEPBAR", "KILL", "BPT", "ERRBAR", "VOTE", "VOTEU", "MATCH", "NANOSLEEP", "ACQBULK"}
_TENSOR = {"HMMA", "IMMA", "DMMA", "BMMA", "HGMMA", "IGMMA"}


def instruction_class(opcode):
    base = opcode.split(".")[0]
    if base == "FFMA":
        return "ffma"
    if base in _FP32:
        return "fp32"
    if base in _MEMORY:
        return "memory"
    if base in _OTHER:
        return "other"
    if base in _CONTROL:
        return "control"
    if base in _TENSOR:
        return "tensor"
    if base.startswith("U"):
        return "uniform"
    return "integer"


def _tool(name):
    found = shutil.which(name)
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidates = [os.path.join(home, "bin", name)]
    try:
        import nvidia  # the PyPI wheels (nvidia-cuda-nvdisasm) install under nvidia/cu*/bin

        for root in nvidia.__path__:
            candidates += sorted(glob.glob(os.path.join(root, "cu*", "bin", name)), reverse=True)
    except ImportError:
        pass
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def tools():
    """(nvcc, nvdisasm) paths, or a RuntimeError naming what is missing and how to get it."""
    nvcc, nvdisasm = _tool("nvcc"), _tool("nvdisasm")
    if nvcc is None:
        raise RuntimeError("the SASS of the kernels needs nvcc (the CUDA toolkit): none found")
    if nvdisasm is None:
        raise RuntimeError("the SASS of the kernels needs nvdisasm: pip install nvidia-cuda-nvdisasm (the profile "
                           "extra), or the CUDA toolkit's")
    return nvcc, nvdisasm


@dataclasses.dataclass
class KernelSass:
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int
    static_shared: int
    lines: dict  # "kernels/family/x.cu:123" -> Counter of instruction classes
    blocks: list = dataclasses.field(default_factory=list)  # SassBlock per basic block, in order

    @property
    def instructions(self):
        return sum(sum(c.values()) for c in self.lines.values())


def _flags(arch):
    return ["-cubin", f"-arch=sm_{arch}", "-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr",
            f"-I{os.path.join(ROOT, 'kernels')}", "-Xptxas", "-v"]


def _sources(pattern):
    """The kernel files (kernels/<family>/, kernels/common/) matching `pattern`, in order."""
    return sorted(glob.glob(os.path.join(ROOT, "kernels", "**", pattern), recursive=True))


def _digest(source, arch):
    total = hashlib.sha256(" ".join(_flags(arch)).encode())
    for path in [source, *_sources("*.cuh")]:
        with open(path, "rb") as f:
            total.update(f.read())
    return total.hexdigest()[:16]


def _compiled(source, arch):
    """(ptxas log, nvdisasm text) of `source` for sm_`arch`, from the cache or compiled now.

    Test workers (pytest -n) may compile the same source at once: each writes under a name of its
    own and renames into place, the .sass last, so a reader that finds the .sass finds both whole."""
    nvcc, nvdisasm = tools()
    os.makedirs(CACHE, exist_ok=True)
    name = os.path.relpath(source, ROOT).replace(os.sep, "_")
    stem = os.path.join(CACHE, f"{name}.sm{arch}.{_digest(source, arch)}")
    if not os.path.isfile(stem + ".sass"):
        own = tempfile.mkdtemp(dir=CACHE)
        try:
            cubin = os.path.join(own, "kernel.cubin")
            result = subprocess.run([nvcc, *_flags(arch), source, "-o", cubin], capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"nvcc failed on {source}: {result.stderr[-2000:]}")
            disassembled = subprocess.run([nvdisasm, "-g", "-c", cubin], capture_output=True, text=True)
            if disassembled.returncode != 0:
                raise RuntimeError(f"nvdisasm failed on {source}: {disassembled.stderr[-2000:]}")
            for suffix, text in ((".ptxas", result.stderr), (".sass", disassembled.stdout)):
                with open(os.path.join(own, suffix), "w") as f:
                    f.write(text)
                os.replace(os.path.join(own, suffix), stem + suffix)
        finally:
            shutil.rmtree(own, ignore_errors=True)
    with open(stem + ".ptxas") as f, open(stem + ".sass") as g:
        return f.read(), g.read()


def parse_ptxas(log):
    """{mangled kernel: (registers, spill stores, spill loads, stack bytes, static shared bytes)}."""
    facts, current, frame = {}, None, (0, 0, 0)
    for line in log.splitlines():
        entry = re.search(r"(?:Compiling entry function|Function properties for) '?([\w$]+)'?", line)
        if entry:
            current = entry.group(1)
            continue
        spill = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if spill and current:
            frame = (int(spill.group(1)), int(spill.group(2)), int(spill.group(3)))
            continue
        used = re.search(r"Used (\d+) registers", line)
        if used and current:
            shared = re.search(r"(\d+) bytes smem", line)
            facts[current] = (int(used.group(1)), frame[1], frame[2], frame[0], int(shared.group(1)) if shared else 0)
            frame = (0, 0, 0)
    return facts


@dataclasses.dataclass
class SassBlock:
    """A basic block of a kernel's SASS (from a label or a branch to the next): its instruction
    classes, and per source line (basename:line) its load / store instructions and all of them."""
    classes: collections.Counter
    memory: collections.Counter
    lines: collections.Counter
    calls: bool = False  # it calls a subroutine (nvcc's slow paths: 64-bit division, ...)


def parse_sass(text):
    """{mangled function: ({file:line: Counter(class)}, [SassBlock])} from `nvdisasm -g` output."""
    functions, current, location, block = {}, None, "?", None

    def new_block():
        functions[current][1].append(SassBlock(collections.Counter(), collections.Counter(), collections.Counter()))
        return functions[current][1][-1]

    for line in text.splitlines():
        header = re.match(r"^(\S+):\s*$", line)
        if header and not header.group(1).startswith("."):
            current = header.group(1)
            functions[current] = (collections.defaultdict(collections.Counter), [])
            block = new_block()
            continue
        if current and re.match(r"^\.L_x_\d+:", line):
            block = new_block() if sum(block.classes.values()) else block
            continue
        where = re.search(r'//## File "([^"]+)", line (\d+)', line)
        if where:
            location = f"{counters._short_path(where.group(1))}:{where.group(2)}"
            continue
        instruction = re.match(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if instruction and current:
            cls = instruction_class(instruction.group(1))
            functions[current][0][location][cls] += 1
            block.classes[cls] += 1
            block.lines[os.path.basename(location)] += 1
            if cls == "memory":
                block.memory[os.path.basename(location)] += 1
            if instruction.group(1).startswith("CALL"):
                block.calls = True
            if instruction.group(1).split(".")[0] in ("BRA", "BRX", "EXIT", "RET", "JMP", "JMX"):
                block = new_block()
    return functions


def demangle(names):
    if not names:
        return {}
    result = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    out = result.stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def canonical(kernel):
    """A demangled kernel name as both compilers write it (GCC and nvcc name anonymous namespaces
    alike once demangled; spacing differs)."""
    return re.sub(r"\s+", "", kernel)


@functools.lru_cache(maxsize=None)
def source_kernels(source, arch="90"):
    """{canonical demangled kernel name: KernelSass} of one kernel file for sm_`arch`."""
    found = {}
    log, text = _compiled(source, arch)
    facts, lines = parse_ptxas(log), parse_sass(text)
    if lines:
        names = demangle(sorted(lines))
        for mangled, (per_line, blocks) in lines.items():
            registers, spill_stores, spill_loads, stack, shared = facts.get(mangled, (0, 0, 0, 0, 0))
            found[canonical(names[mangled])] = KernelSass(registers, spill_stores, spill_loads, stack, shared,
                                                          dict(per_line), [b for b in blocks if b.classes])
    return found


def kernels(arch="90"):
    """{canonical demangled kernel name: KernelSass} of every kernels/**/*.cu for sm_`arch` (the
    first call compiles them all: about 2 minutes on 2 cores; cached in build/sass/)."""
    found = {}
    for source in _sources("*.cu"):
        found.update(source_kernels(source, arch))
    return found


def for_launch(launch, arch="90"):
    """The KernelSass of a profiled launch's kernel (None where no kernel file has it), compiling
    first the files its accesses name, then the rest."""
    named = [location.split(":")[0] for location in (s.location for s in launch.sites)]
    first = [os.path.join(ROOT, path) for path in dict.fromkeys(named) if path.endswith(".cu")]
    rest = [source for source in _sources("*.cu") if source not in first]
    for source in first + rest:
        if os.path.isfile(source):
            found = source_kernels(source, arch).get(canonical(launch.kernel))
            if found is not None:
                return found
    return None


def occupancy(card, registers, threads, shared_bytes):
    """Theoretical occupancy (resident warps / the SM's maximum) of a block of `threads` using
    `registers` per thread and `shared_bytes` of shared memory, on `card` (model.CARDS' entry)."""
    warps = -(-threads // 32)
    per_warp = -(-max(registers, 1) * 32 // 256) * 256  # registers are allocated per warp in 256s
    by_registers = card["registers_per_sm"] // (per_warp * warps) if per_warp * warps else card["max_blocks_per_sm"]
    by_shared = (card["shared_per_sm"] // (shared_bytes + card["shared_reserved_per_block"])
                 if shared_bytes else card["max_blocks_per_sm"])
    by_warps = card["max_warps_per_sm"] // warps
    blocks = max(0, min(by_registers, by_shared, by_warps, card["max_blocks_per_sm"]))
    return blocks, blocks * warps / card["max_warps_per_sm"]


@functools.lru_cache(maxsize=4)
def _code_map(module, stamp):
    """(sorted return addresses of the coverage hook's calls, sorted line-table rows (address,
    file basename:line)) of the profiled module; `stamp` (its mtime) renews the cache."""
    del stamp
    disassembly = subprocess.run(["objdump", "-d", "--no-show-raw-insn", module], capture_output=True, text=True,
                                 timeout=600).stdout.splitlines()
    returns = []
    for i, line in enumerate(disassembly[:-1]):
        if "call" in line and "<__sanitizer_cov_trace_pc" in line:
            following = re.match(r"^\s*([0-9a-f]+):", disassembly[i + 1])
            if following:
                returns.append(int(following.group(1), 16))
    rows = []
    for line in subprocess.run(["objdump", "--dwarf=decodedline", module], capture_output=True, text=True,
                               timeout=600).stdout.splitlines():
        row = re.match(r"^(\S+)\s+(\d+)\s+(0x[0-9a-f]+)", line)
        if row:
            rows.append((int(row.group(3), 16), f"{row.group(1)}:{row.group(2)}"))
    rows.sort()
    return sorted(returns), rows


def line_executions(launch):
    """({file basename:line: warp executions}, the same summed) of a profiled launch's sampled
    blocks: a host basic block runs from one coverage call to the next, and each line with code in
    it is executed as often as the block was entered; a line in several host blocks counts the
    most of them in the first, their total in the second."""
    module = counters.controls().profile_module()
    returns, rows = _code_map(module, os.path.getmtime(module))
    addresses = [a for a, _ in rows]
    most, total = collections.Counter(), collections.Counter()
    for offset, count in launch.code:
        end_at = bisect.bisect_right(returns, offset)
        end = max(returns[end_at] - 5 if end_at < len(returns) else offset + 1, offset + 1)
        lines = {rows[k][1] for k in range(bisect.bisect_left(addresses, offset), bisect.bisect_left(addresses, end))}
        for line in lines:
            most[line] = max(most[line], count)
            total[line] += count
    return most, total


def block_executions(launch, kernel_sass):
    """Estimated warp executions of each SASS basic block of the kernel in the sampled blocks.

    nvcc unrolls loops the host compiler keeps (a line's SASS then holds several iterations) and
    compiles variants of a loop (by a flag, a remainder): a line's host count times its SASS
    would count every copy every time. Loads and stores pin it down instead: the emulator counts
    each line's warp requests, and the block holding most of that line's load / store
    instructions executes requests / (its instructions of the line) times; the line's other
    variants count as not run. A block with no load or store runs as often as the most-executed
    host code of its lines, at most as often as a pinned block sharing a line with it, and
    identical such blocks (the same lines, the same instructions: copies of one piece of code)
    share the host's total of those lines instead of each taking it; a block calling a
    subroutine (nvcc's slow paths, as 64-bit division for values beyond 32 bits; the subroutines
    themselves are not the kernel's) counts as not run.
    Approximate where a line's requests split between variants."""
    hot = {}  # line -> (index of the block holding most of its memory instructions, their count)
    for i, block in enumerate(kernel_sass.blocks):
        for line, n in block.memory.items():
            if n > hot.get(line, (None, 0))[1]:
                hot[line] = (i, n)
    requests = collections.Counter()
    for site in launch.sites:
        requests[os.path.basename(site.location)] += site.requests
    host, host_total = line_executions(launch)
    executions = [None] * len(kernel_sass.blocks)
    pinned_lines = {}  # line -> the most executions of a pinned block holding any of its code
    for i, block in enumerate(kernel_sass.blocks):
        pinned = [requests[line] / n for line, (j, n) in hot.items() if j == i and requests[line]]
        if pinned:
            executions[i] = max(pinned)
            for line in block.lines:
                pinned_lines[line] = max(pinned_lines.get(line, 0.0), executions[i])
        elif block.memory or block.calls:
            # A variant of lines whose requests another block made; or a slow path calling a
            # subroutine (64-bit division beyond 32-bit values), which the kernels here never take.
            executions[i] = 0.0
    # Copies: unpinned blocks with the same lines and the same instructions are one piece of code
    # that nvcc unrolled or duplicated (a helper inlined at each tap of an unrolled loop, or at
    # two call sites): the copies share what the host ran of those lines in all (summed over the
    # host blocks holding them), each at most the most of one host block. The sum may hold other
    # call sites of an inlined helper, hence the cap; with one copy it is the most, as above.
    copies = collections.Counter(_signature(block) for i, block in enumerate(kernel_sass.blocks)
                                 if executions[i] is None)
    for i, block in enumerate(kernel_sass.blocks):
        if executions[i] is None:
            # As often as its host code, but no more than a pinned block sharing its lines (loop
            # control beside an unrolled body runs once per unrolled trip, not per iteration).
            copied = copies[_signature(block)]
            count = float(max((min(host_total.get(line, 0), copied * host.get(line, 0)) / copied
                               for line in block.lines), default=0))
            caps = [pinned_lines[line] for line in block.lines if line in pinned_lines]
            executions[i] = min([count, *caps])
    return executions


def _signature(block):
    return tuple(sorted(block.lines.items())), tuple(sorted(block.classes.items()))


def dynamic_instructions(launch, kernel_sass):
    """{class: warp instructions the launch issues} (scaled from the sampled blocks): each SASS
    basic block's instructions times its estimated executions (block_executions)."""
    totals = collections.Counter()
    for block, count in zip(kernel_sass.blocks, block_executions(launch, kernel_sass)):
        for cls, n in block.classes.items():
            totals[cls] += n * count * launch.scale
    return totals
