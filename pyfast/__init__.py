"""pyfast: hand-written CUDA kernels for training neural networks, called from Python.

- ``pyfast.ops``: the GPU ops on CuPy arrays (or any ``__cuda_array_interface__`` / DLPack
  CUDA array, such as a PyTorch CUDA tensor); outputs are CuPy arrays.
- ``pyfast.reference``: the same ops in NumPy (float64 inside, float32 out): the oracle the
  kernels are tested against, and the CPU backend.
"""

from pyfast import ops, reference
from pyfast._device import is_available, set_sync, unavailable_reason
from pyfast.errors import CudaError

__version__ = "0.1.0"
__all__ = ["ops", "reference", "is_available", "unavailable_reason", "set_sync", "CudaError", "__version__"]
