"""pyfast inside PyTorch (needs PyTorch: ``pip install pyfast[torch]``).

- ``pyfast.torch.conv2d``, ``linear``, ``matmul``, ``max_pool2d``, ``avg_pool2d``, ``relu``,
  ``softmax``, ``log_softmax``, ``cross_entropy``, ``mse_loss`` (torch.nn.functional's
  signatures) and ``conv2d_max_pool2d``: pyfast's kernels as PyTorch custom ops
  (``torch.ops.pyfast.*``) with their gradients, fake shapes for torch.compile, tensors in and
  out with no copies, launched on PyTorch's current stream.
- ``pyfast.torch.nn``: ``Conv2d``, ``Linear``, ``MaxPool2d``, ``AvgPool2d``, ``ReLU``,
  ``Softmax``, ``LogSoftmax``, ``CrossEntropyLoss``, ``MSELoss`` (torch.nn's constructors and
  state_dict keys), and ``swap_modules(model)``, which swaps an existing model's modules in place.
- ``pyfast.torch.optim``: ``Adam`` / ``AdamW`` stepping torch parameters with pyfast's fused
  multi-tensor kernel.

On the GPU the tensors are CUDA tensors; under ``PYFAST_EMULATE=1`` the same kernels run on the
CPU emulator and take CPU tensors (``device_type()`` says which).
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("pyfast.torch needs PyTorch: pip install 'pyfast[torch]' (or any torch >= 2.4)") from error

from pyfast.torch import nn, optim  # noqa: E402
from pyfast.torch._bridge import device_type  # noqa: E402
from pyfast.torch.functional import (  # noqa: E402
    avg_pool2d,
    conv2d,
    conv2d_max_pool2d,
    cross_entropy,
    linear,
    log_softmax,
    matmul,
    max_pool2d,
    mse_loss,
    relu,
    softmax,
)

__all__ = ["nn", "optim", "device_type", "conv2d", "conv2d_max_pool2d", "linear", "matmul", "max_pool2d",
           "avg_pool2d", "relu", "softmax", "log_softmax", "cross_entropy", "mse_loss"]
