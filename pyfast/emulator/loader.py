"""PYFAST_EMULATE=1: run pyfast's CUDA kernels on the CPU. Read by ``import pyfast`` before anything
imports CuPy or pyfast._C: it loads the emulated extension (pyfast._C_emu, the kernels compiled
by the host compiler against csrc/emu; PYFAST_EMU_MODULE=path loads another build of it, such as
a sanitized one) as ``pyfast._C``, and puts the NumPy-backed stand-in for CuPy
(pyfast/emulator/cupy.py) in ``sys.modules`` as ``cupy`` and ``cupyx``, so pyfast, its tests and
scripts that import pyfast first run unchanged. See pyfast.emulator."""

import functools
import importlib
import importlib.util
import os
import re
import sys
import types

_extension = None
_error = None


def requested():
    return os.environ.get("PYFAST_EMULATE", "") not in ("", "0")


def active():
    """True once the emulator is installed (the GPU ops then run on it)."""
    return _extension is not None


def extension():
    """The emulated extension module itself (pyfast._C_emu)."""
    if _extension is None:
        raise RuntimeError(f"the pyfast emulator is not active: {error()}")
    return _extension


def error():
    return _error or "PYFAST_EMULATE is not set"


def _load():
    path = os.environ.get("PYFAST_EMU_MODULE")
    if not path:
        return importlib.import_module("pyfast._C_emu")
    spec = importlib.util.spec_from_file_location("pyfast._C_emu", path)
    if spec is None or not os.path.isfile(path):
        raise ImportError(f"PYFAST_EMU_MODULE={path}: no such extension module")
    if _needs_asan_runtime(path) and not _asan_runtime_loaded():
        # Loading it anyway would end the process at once ("ASan runtime does not come first"),
        # and under pytest's output capture without a word.
        raise ImportError(f"PYFAST_EMU_MODULE={path} is built with -fsanitize=address, and this Python did not "
                          f"load AddressSanitizer's runtime first: run it with "
                          f"LD_PRELOAD=\"$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)\" "
                          f"(tests/emulated.sh sanitize does)")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pyfast._C_emu"] = module
    spec.loader.exec_module(module)
    return module


def _needs_asan_runtime(path):
    """Whether the shared object links AddressSanitizer's runtime (its name in the dynamic strings)."""
    with open(path, "rb") as f:
        return b"libasan.so" in f.read()


def _asan_runtime_loaded():
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return True  # cannot tell here: let the loader say


def _check_environment(controls):
    """The emulator's settings in the environment (read by the extension when it loads): a value it
    does not take is a ValueError naming the variable and what it takes, never silently ignored."""
    def setting(name):
        value = os.environ.get(name, "")
        return value or None

    device = setting("PYFAST_EMU_DEVICE")
    if device is not None and device not in controls.presets():
        raise ValueError(f"PYFAST_EMU_DEVICE={device!r}: expected one of {', '.join(controls.presets())}")
    order = setting("PYFAST_EMU_ORDER")
    if order is not None and order not in ("index", "random"):
        raise ValueError(f"PYFAST_EMU_ORDER={order!r}: expected index (the default) or random")
    for name, minimum in (("PYFAST_EMU_SM_COUNT", 1), ("PYFAST_EMU_SEED", 0), ("PYFAST_EMU_STACK_KB", 1)):
        value = setting(name)
        if value is not None and not (value.isdigit() and int(value) >= minimum):
            raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")


def _stream_position(function):
    """Index of the `stream` parameter in a binding's signature (pybind11's first doc line), or None."""
    doc = (function.__doc__ or "").splitlines()
    names = re.findall(r"(\w+):", doc[0][doc[0].find("(") + 1:]) if doc else []
    return names.index("stream") if "stream" in names else None


def _captured(extension_module):
    """pyfast._C for the emulator: the extension's functions, those that launch on a stream
    recorded instead of run while that stream captures a graph (cupy.cuda.Stream.begin_capture)."""
    from pyfast.emulator import cupy as stand_in

    module = types.ModuleType("pyfast._C", extension_module.__doc__)
    for name in dir(extension_module):
        if name.startswith("__"):
            continue
        value = getattr(extension_module, name)
        position = _stream_position(value) if callable(value) else None
        if position is not None:
            value = _recording(value, position, stand_in)
        setattr(module, name, value)
    module.__file__ = getattr(extension_module, "__file__", None)
    return module


def _recording(function, position, stand_in):
    @functools.wraps(function)
    def launch(*args, **kwargs):
        handle = kwargs["stream"] if "stream" in kwargs else (args[position] if len(args) > position else None)
        stream = stand_in._stream_of(handle) if handle is not None else None
        if stream is not None and stream.is_capturing():
            stream._graph.append(functools.partial(function, *args, **kwargs))
            return None
        return function(*args, **kwargs)

    return launch


def install():
    """Loads the emulated extension and the CuPy stand-in (once); on failure the GPU ops report
    why through pyfast.unavailable_reason()."""
    global _extension, _error
    if _extension is not None:
        return
    existing = sys.modules.get("cupy")
    if existing is not None and not getattr(existing, "_pyfast_emulator", False):
        raise ImportError("PYFAST_EMULATE=1: CuPy was imported before pyfast; import pyfast first, so that `cupy` "
                          "is the emulator's NumPy-backed stand-in")
    try:
        loaded = _load()
    except ImportError as failure:
        _error = (f"PYFAST_EMULATE=1 but the emulated extension cannot be loaded ({failure}); "
                  f"`pip install -e .` builds it (pyfast._C_emu)")
        return
    _check_environment(loaded.emulator)
    _extension = loaded
    from pyfast.emulator import cupy as stand_in
    from pyfast.emulator import cupyx as stand_in_x

    stand_in.use(loaded)

    sys.modules["cupy"] = stand_in
    sys.modules["cupy.cuda"] = stand_in.cuda
    sys.modules["cupy.cuda.runtime"] = stand_in.cuda.runtime
    sys.modules["cupy.cuda.memory"] = stand_in.cuda.memory
    sys.modules["cupy.random"] = stand_in.random
    sys.modules["cupyx"] = stand_in_x
    wrapped = _captured(loaded)
    sys.modules["pyfast._C"] = wrapped
    sys.modules["pyfast"].__dict__["_C"] = wrapped
