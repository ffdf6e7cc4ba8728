"""Build pyfast._C: kernels/*.cu compiled by nvcc, csrc/*.cpp by the host compiler.

Environment:
  CUDA_HOME / CUDA_PATH   the CUDA toolkit (the folder holding bin/nvcc); otherwise
                          /usr/local/cuda, otherwise the nvcc on PATH (resolved through
                          wrapper scripts by asking nvcc itself where it lives).
  PYFAST_CUDA_ARCHS       compute capabilities to build machine code for, separated by
                          ';', ',' or spaces (default "80;90"); "90a" builds sm_90a.
                          PTX for the newest one is always embedded so newer GPUs can JIT it.
  PYFAST_BUILD_JOBS       parallel compile jobs (default: MAX_JOBS, else the CPU count).
  PYFAST_PTXAS_VERBOSE=1  print registers / shared memory / spills per kernel.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCHS = "80;90"
# Files inside pyfast/ that the wheel must carry (tests/test_packaging.py checks the list is whole).
PACKAGE_DATA = ["matmul_tuning.json", "conv_tuning.json", "digits.npz"]


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


class BuildExtWithNvcc(build_ext):
    """Compiles each extension's .cu sources with nvcc (in parallel), then lets setuptools
    compile the C++ sources and link everything into one shared object."""

    def build_extension(self, ext):
        home = find_cuda_home()
        nvcc = str(home / "bin" / "nvcc")
        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        flags = [
            "-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr",
            "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
            f"-I{ROOT / 'kernels'}",
            *gencode_flags(os.environ.get("PYFAST_CUDA_ARCHS", DEFAULT_ARCHS)),
        ]
        if os.environ.get("PYFAST_PTXAS_VERBOSE") == "1":
            flags += ["-Xptxas", "-v"]
        obj_dir = Path(self.build_temp) / "kernels"
        obj_dir.mkdir(parents=True, exist_ok=True)
        headers = list((ROOT / "kernels").glob("*.cuh"))
        # Objects built with other flags (another PYFAST_CUDA_ARCHS) are rebuilt.
        stamp = obj_dir / "nvcc-flags.txt"
        flags_changed = not stamp.exists() or stamp.read_text() != " ".join(flags)

        archs = os.environ.get("PYFAST_CUDA_ARCHS", DEFAULT_ARCHS)

        def compile_one(src):
            obj = obj_dir / (Path(src).stem + ".o")
            newest_input = max(p.stat().st_mtime for p in [ROOT / src, *headers])
            if self.force or flags_changed or not obj.exists() or obj.stat().st_mtime < newest_input:
                cmd = [nvcc, "-c", str(ROOT / src), "-o", str(obj), *flags]
                start = time.perf_counter()
                result = subprocess.run(cmd, capture_output=True, text=True)
                # One line per file (pip shows it with -v); nvcc's own output only when it has any.
                print(f"pyfast: nvcc {src} for sm {archs} ({time.perf_counter() - start:.0f} s)", flush=True)
                sys.stdout.write(result.stdout + result.stderr)
                if result.returncode != 0:
                    raise RuntimeError(f"nvcc failed on {src} (exit {result.returncode}): {' '.join(cmd)}")
            return str(obj)

        with ThreadPoolExecutor(max_workers=build_jobs()) as pool:
            objects = list(pool.map(compile_one, cu_sources))
        stamp.write_text(" ".join(flags))
        ext.extra_objects = objects + list(ext.extra_objects)
        # setuptools relinks only when a listed input is newer than the module: the kernels'
        # objects and every header count, not just the C++ sources.
        ext.depends = [*ext.depends, *objects, *(str(h) for h in headers),
                       *(str(h) for h in (ROOT / "csrc").glob("*.h"))]
        ext.include_dirs += [str(home / "include"), str(ROOT / "kernels")]
        ext.library_dirs += [str(cuda_lib_dir(home))]
        self.parallel = build_jobs()
        super().build_extension(ext)


def extension():
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels").glob("*.cu"))
    return Pybind11Extension(
        "pyfast._C",
        sources,
        cxx_std=17,
        # The CUDA runtime is linked statically: the module needs only the driver at run time.
        libraries=["cudart_static", "dl", "rt", "pthread"],
        extra_compile_args=["-O3"],
    )


def requirements():
    major, _ = cuda_version(find_cuda_home())
    # The CuPy wheel must match the CUDA major version the kernels were built with.
    return ["numpy>=1.24", f"cupy-cuda{major}x>=13"]


setup(
    name="pyfast",
    version="0.1.0",
    description="Hand-written CUDA kernels for training neural networks from Python",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=["pyfast"],
    package_data={"pyfast": PACKAGE_DATA},
    python_requires=">=3.9",
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtWithNvcc},
    install_requires=requirements(),
    entry_points={"console_scripts": ["pyfast-train = pyfast.train:main"]},
    extras_require={
        # scikit-learn: cross-checks the shipped digits; ml_dtypes: bfloat16 arrays for matmul's bf16 path;
        # matplotlib: the training curves and benchmark charts are drawn in the tests
        "test": ["pytest>=7", "hypothesis", "scikit-learn", "ml_dtypes", "matplotlib"],
        "bench": ["torch", "matplotlib"],
        "train": ["matplotlib", "tqdm"],
    },
    zip_safe=False,
)
