"""Build pyfast._C: kernels/<family>/*.cu (and the test-only tests/kernels/*.cu) compiled by nvcc, csrc/*.cpp by the host compiler; and
pyfast._C_emu: the same kernels compiled by the host compiler against the emulator (csrc/emu).

Environment:
  CUDA_HOME / CUDA_PATH   the CUDA toolkit (the folder holding bin/nvcc); otherwise
                          /usr/local/cuda, otherwise the nvcc on PATH (resolved through
                          wrapper scripts by asking nvcc itself where it lives).
  PYFAST_CUDA_ARCHS       compute capabilities to build machine code for, separated by
                          ';', ',' or spaces (default "80;90"); "90a" builds sm_90a.
                          PTX for the newest one is always embedded so newer GPUs can JIT it.
  PYFAST_BUILD_JOBS       parallel compile jobs (default: MAX_JOBS, else the CPU count).
  PYFAST_PTXAS_VERBOSE=1  print registers / shared memory / spills per kernel.
  PYFAST_BUILD            all (default: pyfast._C where a CUDA toolkit is found, and always the
                          emulated pyfast._C_emu), cuda, or emulator.
  PYFAST_EMU_SANITIZE     e.g. "address,undefined": the emulated extension under those sanitizers.
  PYFAST_EMU_DEBUG=1      the emulated extension without optimization (for gdb).
  PYFAST_EMU_PROFILE=1    the emulated extension with its kernels counting their memory accesses
                          (pyfast.profile; csrc/emu/profile.cpp).
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pybind11
from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "80;90"
# Files inside pyfast/ that the wheel must carry (tests/test_packaging.py checks the list is whole).
PACKAGE_DATA = ["matmul_tuning.json", "conv_tuning.json", "digits.npz"]
# And inside pyfast/profile/: the model's cards and its calibration points.
PROFILE_DATA = ["cards.json", "calibration.json"]
# Every package of the wheel (tests/test_packaging.py checks none is missing).
PACKAGES = ["pyfast", "pyfast.emulator", "pyfast.profile", "pyfast.torch", "pyfast.train"]


class CudaNotFound(RuntimeError):
    pass


def _is_toolkit(home):
    return home is not None and (Path(home) / "bin" / "nvcc").is_file()


def find_cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            if not _is_toolkit(home):
                raise CudaNotFound(f"{var}={home} has no bin/nvcc; point it at the CUDA toolkit folder")
            return Path(home)
    if _is_toolkit("/usr/local/cuda"):
        return Path("/usr/local/cuda")
    nvcc = shutil.which("nvcc")
    if nvcc:
        # nvcc on PATH may be a wrapper script (realpath cannot see through it):
        # nvcc --dryrun prints the toolkit's own location as TOP.
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True)
        match = re.search(r"^#\$ TOP=(.*)$", out.stdout + out.stderr, re.M)
        if match and _is_toolkit(Path(match.group(1)).resolve().parent):
            return Path(match.group(1)).resolve().parent
        home = Path(os.path.realpath(nvcc)).parent.parent
        if _is_toolkit(home):
            return home
    raise CudaNotFound(
        "pyfast needs the CUDA toolkit (nvcc) to build, and none was found. Install it and set "
        "CUDA_HOME to its folder (the one holding bin/nvcc), e.g. CUDA_HOME=/usr/local/cuda-13.0"
    )


def cuda_version(home):
    out = subprocess.run([str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True)
    match = re.search(r"release (\d+)\.(\d+)", out.stdout)
    if not match:
        raise CudaNotFound(f"could not read the CUDA version from {home}/bin/nvcc --version")
    return int(match.group(1)), int(match.group(2))


def cuda_lib_dir(home):
    for sub in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
        if (home / sub / "libcudart_static.a").is_file():
            return home / sub
    raise CudaNotFound(f"libcudart_static.a not found under {home}")


def gencode_flags(archs):
    codes = [a for a in re.split(r"[;,\s]+", archs.strip()) if a]
    if not codes or not all(re.fullmatch(r"\d{2,3}a?", c) for c in codes):
        raise ValueError(f"PYFAST_CUDA_ARCHS={archs!r}: expected compute capabilities like '80;90' or '90a'")
    flags = [f"-gencode=arch=compute_{c},code=sm_{c}" for c in codes]
    newest = max(codes, key=lambda c: int(c.rstrip("a")))
    flags.append(f"-gencode=arch=compute_{newest},code=compute_{newest}")
    return flags


def build_jobs():
    return int(os.environ.get("PYFAST_BUILD_JOBS") or os.environ.get("MAX_JOBS") or os.cpu_count() or 1)


EMULATOR_DIR = ROOT / "csrc" / "emu"
# The kernels, one folder per family (#include paths start at kernels/: "common/common.cuh"), and
# the kernels only the tests call (tests/kernels: the PTX probes), built into the same module.
KERNEL_DIRS = (ROOT / "kernels", ROOT / "tests" / "kernels")


def kernel_files(pattern):
    return sorted(p for folder in KERNEL_DIRS for p in folder.rglob(pattern))




def build_targets():
    """Which extensions to build: PYFAST_BUILD=all (default: the CUDA one where a toolkit is
    found, always the emulated one), cuda, or emulator."""
    target = os.environ.get("PYFAST_BUILD", "all")
    if target not in ("all", "cuda", "emulator"):
        raise ValueError(f"PYFAST_BUILD={target!r}: expected all, cuda or emulator")
    cuda = target in ("all", "cuda")
    if cuda and target == "all":
        try:
            find_cuda_home()
        except CudaNotFound as error:
            print(f"pyfast: no CUDA toolkit ({error}); building only the emulated extension", flush=True)
            cuda = False
    return cuda, target in ("all", "emulator")


def emulator_flags():
    """Host-compiler flags of the emulated build: (every source's, the link's, the kernels' own).
    PYFAST_EMU_SANITIZE=address,undefined builds it under those sanitizers (load it with their
    runtime preloaded; see README "Without a GPU"); PYFAST_EMU_DEBUG=1 without optimization, for
    gdb; PYFAST_EMU_PROFILE=1 with the kernels (the .cu files) calling the profiler's hooks before
    every memory access (GCC's ThreadSanitizer instrumentation, whose __tsan_* calls
    csrc/emu/profile.cpp answers; libtsan is not linked) and at every basic block (coverage's
    trace-pc); line tables for the per-line report; no scalar replacement of aggregates, which would
    split a float4 access into four."""
    flags = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-DPYFAST_EMULATOR",
             # The GPU contracts a * b + c where it likes (fmad); the host would only where the ISA
             # has FMA: no contraction keeps the emulated results the same on every host.
             "-ffp-contract=off",
             f"-I{EMULATOR_DIR / 'include'}", f"-I{EMULATOR_DIR}", *(f"-I{folder}" for folder in KERNEL_DIRS)]
    sanitize = os.environ.get("PYFAST_EMU_SANITIZE", "")
    if sanitize:
        if not re.fullmatch(r"[a-z]+(,[a-z]+)*", sanitize):
            raise ValueError(f"PYFAST_EMU_SANITIZE={sanitize!r}: expected sanitizer names like 'address,undefined'")
        flags += ["-O2", "-g1", f"-fsanitize={sanitize}", "-fno-omit-frame-pointer",
                  f'-DPYFAST_EMU_SANITIZERS="{sanitize}"']
    elif os.environ.get("PYFAST_EMU_DEBUG") == "1":
        flags += ["-O0", "-g"]
    else:
        flags += ["-O2"]
    # The kernels' inner loops are fmaf chains: with the FMA instructions the host compiler inlines
    # them (the same exactly rounded result as libm's fmaf, several times faster).
    if host_has_fma():
        flags += ["-mfma"]
    kernel_flags = []
    if os.environ.get("PYFAST_EMU_PROFILE") == "1":
        if sanitize:
            raise ValueError("PYFAST_EMU_PROFILE=1 and PYFAST_EMU_SANITIZE: build one or the other")
        flags += ["-DPYFAST_EMU_PROFILE", "-g1"]
        kernel_flags = ["-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0", "-fno-tree-sra",
                        "-fsanitize-coverage=trace-pc"]
    return flags, ([f"-fsanitize={sanitize}"] if sanitize else []), kernel_flags


def host_has_fma():
    """x86-64 with FMA3 (the emulated extension is built where it runs); elsewhere fmaf stays a call."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("flags") and " fma " in f" {line.split(':', 1)[-1].strip()} " for line in cpuinfo)
    except OSError:
        return False


def compile_objects(build, sources, obj_dir, command, label, headers):
    """Compiles `sources` (paths relative to ROOT) into obj_dir in parallel with command(src, obj);
    an object is rebuilt when its source or a header is newer, or the command's flags changed."""
    obj_dir.mkdir(parents=True, exist_ok=True)
    stamp = obj_dir / "flags.txt"
    flags = " ".join(command("SRC", "OBJ"))
    flags_changed = not stamp.exists() or stamp.read_text() != flags

    def compile_one(src):
        obj = obj_dir / (str(Path(src).with_suffix("")).replace(os.sep, "_") + ".o")
        newest_input = max(p.stat().st_mtime for p in [ROOT / src, *headers])
        if build.force or flags_changed or not obj.exists() or obj.stat().st_mtime < newest_input:
            cmd = command(str(ROOT / src), str(obj))
            start = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True)
            # One line per file (pip shows it with -v); the compiler's own output only when it has any.
            print(f"pyfast: {label} {src} ({time.perf_counter() - start:.0f} s)", flush=True)
            sys.stdout.write(result.stdout + result.stderr)
            if result.returncode != 0:
                raise RuntimeError(f"{label} failed on {src} (exit {result.returncode}): {' '.join(cmd)}")
        return str(obj)

    with ThreadPoolExecutor(max_workers=build_jobs()) as pool:
        objects = list(pool.map(compile_one, sources))
    stamp.write_text(flags)
    return objects


def unrolled_kernels(folder):
    """Copies of the kernels (KERNEL_DIRS) and csrc/emu's in which `#pragma unroll [N]` reads `#pragma GCC
    unroll N` (65534: fully), each starting with a #line directive naming its original, so line
    tables still point at the sources. The profiled build compiles these: the host compiler then
    unrolls the loops nvcc unrolls, and a source line's basic blocks are entered as often as the
    GPU executes its SASS (pyfast/profile/sass.py multiplies the two)."""
    for source in [*kernel_files("*.cu"), *kernel_files("*.cuh"), *EMULATOR_DIR.glob("*.cu")]:
        text = source.read_text()
        text = re.sub(r"^(\s*)#pragma unroll\s*$", r"\1#pragma GCC unroll 65534", text, flags=re.M)
        text = re.sub(r"^(\s*)#pragma unroll\s+(\w+)\s*$", r"\1#pragma GCC unroll \2", text, flags=re.M)
        copy = folder / source.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        written = f'#line 1 "{source}"\n{text}'
        if not copy.exists() or copy.read_text() != written:
            copy.write_text(written)
    return folder


class BuildExtWithNvcc(build_ext):
    """pyfast._C: the .cu sources compiled by nvcc (in parallel), then setuptools compiles the C++
    sources and links everything into one shared object. pyfast._C_emu: the same sources
    compiled by the host compiler against csrc/emu (no nvcc needed)."""

    def build_extensions(self):
        # One extension at a time: each compiles its own sources in parallel, into a temporary
        # folder of its own (both compile csrc/bindings.cpp, with different flags).
        self.parallel = None
        super().build_extensions()

    def build_extension(self, ext):
        base_temp = self.build_temp
        self.build_temp = os.path.join(base_temp, ext.name.rsplit(".", 1)[-1])
        try:
            self._build_one(ext)
        finally:
            self.build_temp = base_temp

    def _build_one(self, ext):
        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        headers = [*kernel_files("*.cuh"), *(ROOT / "csrc").glob("*.h"),
                   *EMULATOR_DIR.glob("*.h"), *(EMULATOR_DIR / "include").glob("*.h")]
        if ext.name == "pyfast._C_emu":
            # Every source by the host compiler, in parallel; setuptools only links. The Python glue
            # (the bindings.cpp files) is built without the sanitizers: they are for the kernels and
            # the emulator, and it is the slowest code to compile under them.
            flags, link_flags, kernel_flags = emulator_flags()
            cxx = os.environ.get("CXX") or self.compiler.compiler_so[0].replace("gcc", "g++")
            includes = [f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]

            unrolled = unrolled_kernels(Path(self.build_temp) / "unrolled") if kernel_flags else None

            def command(src, obj):
                language = ["-x", "c++"] if src.endswith(".cu") else []
                own = [f for f in flags if not f.startswith("-fsanitize")] if src.endswith("bindings.cpp") else flags
                if language and kernel_flags:
                    # The profiled build compiles the kernels as nvcc unrolls them (see unrolled_kernels).
                    copy = unrolled / Path(src).relative_to(ROOT) if Path(src).is_absolute() else unrolled / src
                    src = str(copy) if copy.exists() else src
                    own = [*(f"-I{unrolled / folder.relative_to(ROOT)}" for folder in KERNEL_DIRS), *own]
                return [cxx, *language, "-c", src, "-o", obj, *own, *(kernel_flags if language else []), *includes]

            objects = compile_objects(self, [*cu_sources, *ext.sources], Path(self.build_temp) / "emulated",
                                      command, "host compiler (emulated)", headers)
            ext.sources = []
            ext.extra_link_args = [*ext.extra_link_args, *link_flags]
        else:
            home = find_cuda_home()
            nvcc = str(home / "bin" / "nvcc")
            archs = os.environ.get("PYFAST_CUDA_ARCHS", DEFAULT_ARCHS)
            flags = [
                "-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr",
                "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
                *(f"-I{folder}" for folder in KERNEL_DIRS),
                *gencode_flags(archs),
            ]
            if os.environ.get("PYFAST_PTXAS_VERBOSE") == "1":
                flags += ["-Xptxas", "-v"]
            # Objects built with other flags (another PYFAST_CUDA_ARCHS) are rebuilt.
            objects = compile_objects(self, cu_sources, Path(self.build_temp) / "kernels",
                                      lambda src, obj: [nvcc, "-c", src, "-o", obj, *flags], f"nvcc for sm {archs}",
                                      headers)
            ext.include_dirs += [str(home / "include"), *(str(folder) for folder in KERNEL_DIRS)]
            ext.library_dirs += [str(cuda_lib_dir(home))]
        ext.extra_objects = objects + list(ext.extra_objects)
        # setuptools relinks only when a listed input is newer than the module: the kernels'
        # objects and every header count, not just the C++ sources.
        ext.depends = [*ext.depends, *objects, *(str(h) for h in headers)]
        super().build_extension(ext)


def extensions():
    kernels = [str(p.relative_to(ROOT)) for p in kernel_files("*.cu")]
    cuda, emulated = build_targets()
    built = []
    if cuda:
        built.append(Pybind11Extension(
            "pyfast._C",
            sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp")) + kernels,
            cxx_std=17,
            # The CUDA runtime is linked statically: the module needs only the driver at run time.
            libraries=["cudart_static", "dl", "rt", "pthread"],
            extra_compile_args=["-O3"],
        ))
    if emulated:
        emulator = sorted(str(p.relative_to(ROOT)) for p in EMULATOR_DIR.glob("*.cpp"))
        emulator_kernels = sorted(str(p.relative_to(ROOT)) for p in EMULATOR_DIR.glob("*.cu"))
        built.append(Pybind11Extension(
            "pyfast._C_emu",
            sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp")) + emulator + kernels
            + emulator_kernels,
            cxx_std=17,
            libraries=["dl", "pthread"],
        ))
    return built, cuda


def requirements(cuda):
    # tqdm: the progress bar within an epoch, which the trainer shows on a terminal
    base = ["numpy>=1.24", "tqdm>=4.60"]
    if not cuda:
        return base
    major, _ = cuda_version(find_cuda_home())
    # The CuPy wheel must match the CUDA major version the kernels were built with.
    return base + [f"cupy-cuda{major}x>=13"]


EXTENSIONS, WITH_CUDA = extensions()

setup(
    name="pyfast",
    version="0.1.0",
    description="Hand-written CUDA kernels for training neural networks from Python",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=PACKAGES,
    package_data={"pyfast": PACKAGE_DATA, "pyfast.profile": PROFILE_DATA},
    python_requires=">=3.9",
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": BuildExtWithNvcc},
    install_requires=requirements(WITH_CUDA),
    entry_points={"console_scripts": ["pyfast-train = pyfast.train:main"]},
    extras_require={
        # scikit-learn: cross-checks the shipped digits; ml_dtypes: bfloat16 arrays for matmul's bf16 path;
        # matplotlib: the training curves and benchmark charts are drawn in the tests
        # pytest-xdist: the emulated GPU tests on every core; setuptools and pybind11: tests/emulated.sh
        # sanitize builds the sanitized emulated extension outside pip's build environment;
        # nvidia-cuda-nvdisasm: the profiler's SASS tests (tests/emulated.sh profile)
        "test": ["pytest>=7", "pytest-xdist", "hypothesis", "scikit-learn", "ml_dtypes", "matplotlib",
                 "setuptools>=64", "pybind11>=2.10", "nvidia-cuda-nvdisasm"],
        # nvdisasm: the SASS per source line behind pyfast.profile's instruction counts and model
        "profile": ["nvidia-cuda-nvdisasm"],
        "bench": ["torch", "matplotlib"],
        # pyfast.torch: the kernels as PyTorch custom ops and torch.nn layers
        "torch": ["torch>=2.4"],
        "train": ["matplotlib"],
    },
    zip_safe=False,
)
