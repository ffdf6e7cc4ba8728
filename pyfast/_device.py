"""Whether a usable GPU is there, and the guard every GPU op calls first."""

import functools


@functools.lru_cache(maxsize=None)
def _gpu_status():
    """(usable, reason it is not). Never raises, never crashes without a GPU."""
    from pyfast.emulator import loader

    if loader.requested() and not loader.active():
        return False, loader.error()
    try:
        from pyfast import _C
    except ImportError as error:
        return False, _not_built_reason(error)
    count, error = _C.device_count()
    if count == 0:
        return False, f"no usable CUDA device ({error})" if error else "no CUDA device is visible"
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy missing, or its CUDA libraries unusable
        return False, f"CuPy cannot use the GPU ({type(error).__name__}: {error})"
    return True, ""


def _not_built_reason(error):
    """Why pyfast._C is missing, the common case named: a source checkout (which has no compiled
    module unless installed with -e) imported instead of the installed package, because Python
    looks in the current folder first."""
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.dirname(package)
    if os.path.isfile(os.path.join(checkout, "setup.py")) and os.path.isdir(os.path.join(checkout, "kernels")):
        for entry in sys.path:
            other = os.path.join(os.path.abspath(entry or os.curdir), "pyfast")
            if other != package and os.path.isdir(other) and any(
                    name.startswith("_C.") for name in os.listdir(other)):
                return (f"pyfast was imported from the source checkout {checkout}, which has no compiled extension, "
                        f"instead of the installed pyfast in {os.path.dirname(other)} (Python looks in the current "
                        f"folder first): run from another folder, or install with `pip install -e .` to use the "
                        f"checkout")
        return (f"the compiled extension pyfast._C is not in the source checkout {checkout} ({error}); build it "
                f"there with `pip install -e .`")
    return f"the compiled extension pyfast._C is not importable ({error}); reinstall pyfast (`pip install .`)"


def is_available():
    """True when the compiled kernels, a CUDA device and CuPy are all usable."""
    return _gpu_status()[0]


def unavailable_reason():
    """Why :func:`is_available` is False ('' when it is True)."""
    return _gpu_status()[1]


def require_gpu(op):
    usable, reason = _gpu_status()
    if not usable:
        raise RuntimeError(
            f"pyfast.ops.{op} needs a usable CUDA GPU, but {reason}. "
            "On the CPU, pyfast.reference has the same ops on NumPy arrays."
        )


def set_sync(on=True):
    """Make every op synchronize and check its stream (what PYFAST_SYNC=1 sets at import),
    so an asynchronous fault is reported by the op that caused it."""
    from pyfast import _C

    _C.set_sync(bool(on))


# The card's properties the ops plan by, read once per device (pyfast.emulator.configure forgets
# them when it changes the emulated card).
_SM_COUNTS = {}
_DEVICE_NAMES = {}


def _properties(device):
    import cupy

    return cupy.cuda.runtime.getDeviceProperties(device)


def sm_count(device):
    """The CUDA device's number of SMs (what split-K and the conv rules size grids by)."""
    count = _SM_COUNTS.get(device)
    if count is None:
        count = _SM_COUNTS[device] = int(_properties(device)["multiProcessorCount"])
    return count


def device_name(device):
    """The CUDA device's name ("NVIDIA H200"), the tuning tables' card key."""
    name = _DEVICE_NAMES.get(device)
    if name is None:
        name = _properties(device)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        _DEVICE_NAMES[device] = name
    return name


def forget_device_properties():
    _SM_COUNTS.clear()
    _DEVICE_NAMES.clear()
