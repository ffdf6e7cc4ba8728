"""Whether a usable GPU is there, and the guard every GPU op calls first."""

import functools


@functools.lru_cache(maxsize=None)
def _gpu_status():
    """(usable, reason it is not). Never raises, never crashes without a GPU."""
    from pyfast import _emulation

    if _emulation.requested() and not _emulation.active():
        return False, _emulation.error()
    try:
        from pyfast import _C
    except ImportError as error:
        return False, f"the compiled extension pyfast._C is not importable ({error}); build it with `pip install -e .`"
    count, error = _C.device_count()
    if count == 0:
        return False, f"no usable CUDA device ({error})" if error else "no CUDA device is visible"
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy missing, or its CUDA libraries unusable
        return False, f"CuPy cannot use the GPU ({type(error).__name__}: {error})"
    return True, ""


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
