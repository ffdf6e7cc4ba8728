"""pyfast: hand-written CUDA kernels for training neural networks, called from Python.

- ``pyfast.ops``: the GPU ops on CuPy arrays (or any ``__cuda_array_interface__`` / DLPack
  CUDA array, such as a PyTorch CUDA tensor); outputs are CuPy arrays.
- ``pyfast.reference``: the same ops in NumPy (float64 inside, float32 out): the oracle the
  kernels are tested against, and the CPU backend.
- ``pyfast.emulator``: the same kernels run on the CPU (``PYFAST_EMULATE=1``), for checking and
  debugging them without a GPU.
"""

from pyfast.emulator import loader

if loader.requested():  # PYFAST_EMULATE=1: the CPU emulator, before anything imports cupy or _C
    loader.install()

from pyfast import emulator, ops, reference  # noqa: E402
from pyfast._device import is_available, set_sync, unavailable_reason  # noqa: E402
from pyfast.errors import CudaError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ops", "reference", "emulator", "is_available", "unavailable_reason", "set_sync", "CudaError", "__version__"]
