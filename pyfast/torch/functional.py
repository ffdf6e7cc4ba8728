"""torch.nn.functional's signatures on pyfast's kernels: tensors in, tensors out, gradients
through autograd (each op is a ``torch.ops.pyfast`` custom op with its backward made of pyfast's
backward kernels), traceable by torch.compile without a graph break.

Inputs: float32 tensors on the GPU (CPU tensors under ``PYFAST_EMULATE=1``); class indices int64
or int32. A non-contiguous input is copied to a contiguous one first (PyTorch's own ops accept
them; channels_last tensors included), everything else is taken as it is, without a copy. Another
dtype, device or layout, or an option the kernels lack, is an error naming the argument.
"""

import torch

from pyfast._checks import CROSS_ENTROPY_REDUCTIONS as _REDUCTIONS
from pyfast.torch import _ops  # noqa: F401  (registers torch.ops.pyfast.*)
from pyfast.torch._bridge import check_dense


def _pair(op, name, value):
    """An int or a pair as the list a custom op takes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(isinstance(v, int) for v in value):
        return [value[0], value[0]] if len(value) == 1 else list(value)
    raise TypeError(f"pyfast.torch.{op}: {name}: expected an int or a pair of ints, got {value!r}")


def _dense(op, name, t, optional=False):
    """Tensor argument `name` contiguous (a copy only when it is not)."""
    if t is None and optional:
        return None
    check_dense(op, name, t)
    return t.contiguous()


def _conv_padding(op, padding):
    """(padding as a pair, padding string or "")."""
    if isinstance(padding, str):
        return [0, 0], padding
    return _pair(op, "padding", padding), ""


def _reduction(op, size_average, reduce, reduction):
    """PyTorch's reduction, the deprecated size_average / reduce mapped as PyTorch maps them."""
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce, emit_warning=False)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"pyfast.torch.{op}: reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _activation(op, activation):
    if activation not in (None, "relu"):
        raise ValueError(f"pyfast.torch.{op}: activation: expected None or 'relu', got {activation!r}")
    return activation == "relu"


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
    """torch.nn.functional.conv2d on pyfast's convolution (the kernel chosen per pass and shape,
    as ``pyfast.ops.conv2d``); ``padding`` also "same" / "valid". ``activation="relu"``:
    ReLU fused on the way out, its backward folded into the convolution's."""
    op = "conv2d"
    padding, padding_mode = _conv_padding(op, padding)
    return torch.ops.pyfast.conv2d(_dense(op, "input", input), _dense(op, "weight", weight),
                                   _dense(op, "bias", bias, True), _pair(op, "stride", stride), padding, padding_mode,
                                   _pair(op, "dilation", dilation), groups, _activation(op, activation))


def conv2d_max_pool2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None):
    """``max_pool2d(conv2d(...), 2)`` (``activation="relu"``: with ReLU between them) in one op:
    the tiled kernel pools in registers and never writes the convolution's output; the
    backward is one gather through the saved indices and the convolution's backward."""
    op = "conv2d_max_pool2d"
    padding, padding_mode = _conv_padding(op, padding)
    y, _ = torch.ops.pyfast.conv2d_max_pool2d(_dense(op, "input", input), _dense(op, "weight", weight),
                                              _dense(op, "bias", bias, True), _pair(op, "stride", stride), padding,
                                              padding_mode, _pair(op, "dilation", dilation), groups,
                                              _activation(op, activation))
    return y


def linear(input, weight, bias=None, *, activation=None):
    """torch.nn.functional.linear: ``input @ weight.T + bias`` over the last axis of ``input``,
    one matmul with the bias (and ``activation="relu"``) in its epilogue."""
    op = "linear"
    return torch.ops.pyfast.linear(_dense(op, "input", input), _dense(op, "weight", weight),
                                   _dense(op, "bias", bias, True), _activation(op, activation))


def matmul(input, other):
    """torch.matmul of two 2-D tensors on pyfast's matmul (float32 on the CUDA cores)."""
    input, other = _dense("matmul", "input", input), _dense("matmul", "other", other)
    for name, t in (("input", input), ("other", other)):
        if t.dim() != 2:
            raise ValueError(f"pyfast.torch.matmul: {name}: expected a 2-D tensor, got {t.dim()}-D "
                             f"{tuple(t.shape)} (batched and 1-D matmul are not in pyfast)")
    return torch.ops.pyfast.matmul(input, other, False, False)


def _window(op, kernel_size, stride):
    """(kernel, stride) pairs; stride None (or PyTorch's empty list) means the kernel's."""
    kernel_size = _pair(op, "kernel_size", kernel_size)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel_size, kernel_size
    return kernel_size, _pair(op, "stride", stride)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d; with ``return_indices=True`` also PyTorch's indices
    (flat h * W + w in the input plane, int64)."""
    op = "max_pool2d"
    kernel_size, stride = _window(op, kernel_size, stride)
    y, indices = torch.ops.pyfast.max_pool2d(_dense(op, "input", input), kernel_size, stride,
                                             _pair(op, "padding", padding), _pair(op, "dilation", dilation), ceil_mode)
    return (y, indices) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch.nn.functional.avg_pool2d."""
    op = "avg_pool2d"
    kernel_size, stride = _window(op, kernel_size, stride)
    return torch.ops.pyfast.avg_pool2d(_dense(op, "input", input), kernel_size, stride, _pair(op, "padding", padding),
                                       ceil_mode, count_include_pad, divisor_override)


def relu(input, inplace=False):
    """torch.nn.functional.relu. ``inplace=True`` writes the result back into ``input`` (a copy
    after the kernel, as autograd needs the op itself to be out of place)."""
    y = torch.ops.pyfast.relu(_dense("relu", "input", input))
    if inplace:
        return input.copy_(y)
    return y


def _softmax_dtype(op, dtype):
    if dtype not in (None, torch.float32):
        raise TypeError(f"pyfast.torch.{op}: dtype: only None or torch.float32, got {dtype}")


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """torch.nn.functional.softmax along ``dim`` (None: PyTorch's implicit axis)."""
    _softmax_dtype("softmax", dtype)
    return torch.ops.pyfast.softmax(_dense("softmax", "input", input), dim, False)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """torch.nn.functional.log_softmax along ``dim`` (None: PyTorch's implicit axis)."""
    _softmax_dtype("log_softmax", dtype)
    return torch.ops.pyfast.softmax(_dense("log_softmax", "input", input), dim, True)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0, *, validate=True):
    """torch.nn.functional.cross_entropy (every argument): (N, C) or (N, C, d1, ...) logits,
    class indices or probabilities as ``target``. The forward pass writes the gradient too (the
    backward only scales it). ``validate=True`` reads the count of labels neither in [0, C) nor
    ``ignore_index`` back to the host (a synchronization) and raises; it is skipped while a CUDA
    graph is captured, and with ``validate=False``: such rows then give NaN. No gradient flows to
    ``target`` or ``weight``: asking for one is an error."""
    reduction = _reduction("cross_entropy", size_average, reduce, reduction)
    for name, t in (("target", target), ("weight", weight)):
        if isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled():
            raise ValueError(f"pyfast.torch.cross_entropy: {name}: requires grad, but pyfast computes the gradient "
                             f"with respect to input only; pass {name}.detach()")
    op = "cross_entropy"
    loss, _ = torch.ops.pyfast.cross_entropy(_dense(op, "input", input), _dense(op, "target", target),
                                             _dense(op, "weight", weight, True), ignore_index, reduction,
                                             float(label_smoothing), validate)
    return loss


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """torch.nn.functional.mse_loss (``weight`` must be None); the forward pass writes the
    gradient too, the backward only scales it."""
    reduction = _reduction("mse_loss", size_average, reduce, reduction)
    if weight is not None:
        raise ValueError("pyfast.torch.mse_loss: weight: a loss weight is not supported; pass weight=None")
    loss, _ = torch.ops.pyfast.mse_loss(_dense("mse_loss", "input", input), _dense("mse_loss", "target", target),
                                        reduction)
    return loss


__all__ = ["conv2d", "conv2d_max_pool2d", "linear", "matmul", "max_pool2d", "avg_pool2d", "relu", "softmax",
           "log_softmax", "cross_entropy", "mse_loss"]
