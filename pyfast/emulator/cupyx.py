"""What ``import cupyx`` gives under PYFAST_EMULATE=1: pinned host buffers (plain NumPy arrays
here: the emulated device reads host memory directly)."""

import numpy as np

__version__ = "emulated"
_pyfast_emulator = True


def empty_pinned(shape, dtype=float, order="C"):
    return np.empty(shape, dtype=dtype, order=order)


def zeros_pinned(shape, dtype=float, order="C"):
    return np.zeros(shape, dtype=dtype, order=order)


def empty_like_pinned(a, dtype=None):
    return np.empty_like(a, dtype=dtype)
