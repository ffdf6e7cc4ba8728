"""pyfast's kernels registered as PyTorch custom ops (``torch.ops.pyfast.*``): each op's real
implementation (tensors in, checked, viewed as CuPy arrays, outputs from PyTorch's allocator,
launched on PyTorch's stream), its fake implementation (output shapes from the same checks, for
torch.compile), and its gradient, itself made of pyfast ops. Arguments arrive normalized by
pyfast.torch.functional (pairs as lists, tensors contiguous)."""

from typing import Optional

import torch
from torch import Tensor

from pyfast import _checks, ops
from pyfast.torch._bridge import array, capturing, check_tensor, launching, same_device, tensor
from pyfast.torch._bridge import empty as _empty

_LABELS = (torch.int64, torch.int32)


def _tensors(op, **tensors):
    """Each named tensor checked (float32 on pyfast's device; None where optional)."""
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if t is not None:
            check_tensor(op, name, t)
    same_device(op, first_name, first, **tensors)


def _padding(padding, padding_mode):
    return padding_mode if padding_mode else tuple(padding)


def _conv_dims(op, input, weight, bias, stride, padding, padding_mode, dilation, groups):
    _tensors(op, input=input, weight=weight, bias=bias)
    g = _checks.conv2d_dims(tuple(input.shape), tuple(weight.shape), tuple(stride), _padding(padding, padding_mode),
                            tuple(dilation), groups, names=("input", "weight"))
    if bias is not None:
        _checks.expect_shape("bias", tuple(bias.shape), (g["k"],))
    return g


def _unused(like):
    """A gradient output nobody asked for (a custom op returns tensors, never None)."""
    return _empty(like, (0,))


def _gradient_outputs(input, weight, output_mask):
    """(dinput, dweight, dbias) of a layer with a weight of shape (out, ...), each new or, when
    its entry of `output_mask` is False, empty."""
    want_input, want_weight, want_bias = output_mask
    return (_empty(input, input.shape) if want_input else _unused(input),
            _empty(weight, weight.shape) if want_weight else _unused(weight),
            _empty(weight, (weight.shape[0],)) if want_bias else _unused(weight))


def _wanted(ctx):
    """[input, weight, bias] gradients autograd asks of a layer op (input, weight, bias, ...)."""
    return [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]


def _grads(mask, *grads):
    return tuple(g if wanted else None for wanted, g in zip(mask, grads))


# ---------------------------------------------------------------------------- conv2d
@torch.library.custom_op("pyfast::conv2d", mutates_args=())
def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
           padding_mode: str, dilation: list[int], groups: int, relu: bool) -> Tensor:
    g = _conv_dims("conv2d", input, weight, bias, stride, padding, padding_mode, dilation, groups)
    out = _empty(input, g["y_shape"])
    with launching("conv2d", input):
        ops.conv2d(array(input), array(weight), array(bias), tuple(stride), _padding(padding, padding_mode),
                   tuple(dilation), groups, activation="relu" if relu else None, out=array(out))
    return out


@conv2d.register_fake
def _(input, weight, bias, stride, padding, padding_mode, dilation, groups, relu):
    g = _conv_dims("conv2d", input, weight, bias, stride, padding, padding_mode, dilation, groups)
    return _empty(input, g["y_shape"])


@torch.library.custom_op("pyfast::conv2d_backward", mutates_args=())
def conv2d_backward(grad: Tensor, input: Tensor, weight: Tensor, relu_output: Optional[Tensor], stride: list[int],
                    padding: list[int], padding_mode: str, dilation: list[int], groups: int,
                    output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """(dinput, dweight, dbias) of conv2d from its output's gradient; ``relu_output``: the
    forward's output when it applied ReLU (its backward first). Unwanted ones are empty."""
    _tensors("conv2d_backward", grad=grad, input=input, weight=weight, relu_output=relu_output)
    want_input, want_weight, want_bias = output_mask
    d_input, d_weight, d_bias = _gradient_outputs(input, weight, output_mask)
    options = dict(stride=tuple(stride), padding=_padding(padding, padding_mode), dilation=tuple(dilation),
                   groups=groups)
    with launching("conv2d_backward", input):
        dy = array(grad)
        if relu_output is not None:
            dy = ops.relu_backward(dy, array(relu_output))
        if want_input:
            ops.conv2d_backward_input(dy, array(weight), tuple(input.shape), out=array(d_input), **options)
        if want_weight:
            ops.conv2d_backward_weight(dy, array(input), tuple(weight.shape), bias=want_bias, out=array(d_weight),
                                       out_bias=array(d_bias) if want_bias else None, **options)
        elif want_bias:
            ops.bias_grad(dy, out=array(d_bias))
    return d_input, d_weight, d_bias


@conv2d_backward.register_fake
def _(grad, input, weight, relu_output, stride, padding, padding_mode, dilation, groups, output_mask):
    return _gradient_outputs(input, weight, output_mask)


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, padding_mode, dilation, groups, relu = inputs
    ctx.save_for_backward(input, weight, output if relu else None)
    ctx.options = (list(stride), list(padding), padding_mode, list(dilation), groups)
    ctx.has_bias = bias is not None


def _conv2d_gradient(ctx, grad):
    input, weight, relu_output = ctx.saved_tensors
    mask = _wanted(ctx)
    grads = torch.ops.pyfast.conv2d_backward(grad.contiguous(), input, weight, relu_output, *ctx.options, mask)
    return (*_grads(mask, *grads), None, None, None, None, None, None)


conv2d.register_autograd(_conv2d_gradient, setup_context=_conv2d_setup)


# ------------------------------------------------------------------- conv2d + max-pool
@torch.library.custom_op("pyfast::conv2d_max_pool2d", mutates_args=())
def conv2d_max_pool2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
                      padding_mode: str, dilation: list[int], groups: int, relu: bool) -> tuple[Tensor, Tensor]:
    """(y, indices): conv2d (then ReLU) and its 2x2 stride-2 max-pool in one op."""
    g = _conv_dims("conv2d_max_pool2d", input, weight, bias, stride, padding, padding_mode, dilation, groups)
    pool = _checks.pool2d_dims(g["y_shape"], 2, 2, 0)
    y, indices = _empty(input, pool["y_shape"]), _empty(input, pool["y_shape"], torch.int64)
    with launching("conv2d_max_pool2d", input):
        ops.conv2d_max_pool2d(array(input), array(weight), array(bias), tuple(stride), _padding(padding, padding_mode),
                              tuple(dilation), groups, activation="relu" if relu else None, out=array(y),
                              out_indices=array(indices))
    return y, indices


@conv2d_max_pool2d.register_fake
def _(input, weight, bias, stride, padding, padding_mode, dilation, groups, relu):
    g = _conv_dims("conv2d_max_pool2d", input, weight, bias, stride, padding, padding_mode, dilation, groups)
    pool = _checks.pool2d_dims(g["y_shape"], 2, 2, 0)
    return _empty(input, pool["y_shape"]), _empty(input, pool["y_shape"], torch.int64)


def _conv2d_max_pool2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, padding_mode, dilation, groups, relu = inputs
    y, indices = output
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(input, weight, y if relu else None, indices)
    ctx.options = (list(stride), list(padding), padding_mode, list(dilation), groups)
    ctx.conv_shape = list(_checks.conv2d_dims(tuple(input.shape), tuple(weight.shape), tuple(stride),
                                              _padding(padding, padding_mode), tuple(dilation), groups,
                                              names=("input", "weight"))["y_shape"])
    ctx.has_bias = bias is not None


def _conv2d_max_pool2d_gradient(ctx, grad, _indices_grad):
    input, weight, relu_output, indices = ctx.saved_tensors
    # The pooling's backward, with the ReLU's folded in (a window whose maximum is <= 0 passes nothing).
    d_conv = torch.ops.pyfast.max_pool2d_backward(grad.contiguous(), indices, ctx.conv_shape, [2, 2], [2, 2], [0, 0],
                                                  [1, 1], False, relu_output)
    mask = _wanted(ctx)
    grads = torch.ops.pyfast.conv2d_backward(d_conv, input, weight, None, *ctx.options, mask)
    return (*_grads(mask, *grads), None, None, None, None, None, None)


conv2d_max_pool2d.register_autograd(_conv2d_max_pool2d_gradient, setup_context=_conv2d_max_pool2d_setup)


# ---------------------------------------------------------------------------- matmul
def _matmul_shape(op, a, b, trans_a, trans_b, bias=None):
    _tensors(op, a=a, b=b, bias=bias)
    m, n, _ = _checks.matmul_dims(tuple(a.shape), tuple(b.shape), trans_a, trans_b)
    if bias is not None:
        _checks.expect_shape("bias", tuple(bias.shape), (n,))
    return m, n


@torch.library.custom_op("pyfast::matmul", mutates_args=())
def matmul(a: Tensor, b: Tensor, trans_a: bool, trans_b: bool) -> Tensor:
    """op(a) @ op(b) of 2-D tensors, op(x) = x.T when trans_x (read transposed, not copied)."""
    out = _empty(a, _matmul_shape("matmul", a, b, trans_a, trans_b))
    with launching("matmul", a):
        ops.matmul(array(a), array(b), trans_a=trans_a, trans_b=trans_b, out=array(out))
    return out


@matmul.register_fake
def _(a, b, trans_a, trans_b):
    return _empty(a, _matmul_shape("matmul", a, b, trans_a, trans_b))


def _matmul_setup(ctx, inputs, output):
    a, b, trans_a, trans_b = inputs
    ctx.save_for_backward(a, b)
    ctx.trans = (trans_a, trans_b)


def _matmul_gradient(ctx, grad):
    a, b = ctx.saved_tensors
    trans_a, trans_b = ctx.trans
    grad = grad.contiguous()
    mm = torch.ops.pyfast.matmul
    d_a = d_b = None
    if ctx.needs_input_grad[0]:  # dop(a) = dC op(b)^T, stored transposed when a is read transposed
        d_a = mm(b, grad, trans_b, True) if trans_a else mm(grad, b, False, not trans_b)
    if ctx.needs_input_grad[1]:  # dop(b) = op(a)^T dC
        d_b = mm(grad, a, True, trans_a) if trans_b else mm(a, grad, not trans_a, False)
    return d_a, d_b, None, None


matmul.register_autograd(_matmul_gradient, setup_context=_matmul_setup)


# ---------------------------------------------------------------------------- linear
def _linear_shape(input, weight, bias):
    _tensors("linear", input=input, weight=weight, bias=bias)
    if input.dim() < 1:
        raise ValueError("pyfast.torch.linear: input: expected at least 1 dimension, got a 0-d tensor")
    _checks.expect_ndim("weight", tuple(weight.shape), 2)
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(f"pyfast.torch.linear: input: its last dimension {input.shape[-1]} must equal weight's "
                         f"in_features {weight.shape[1]} (weight {tuple(weight.shape)})")
    if bias is not None:
        _checks.expect_shape("bias", tuple(bias.shape), (weight.shape[0],))
    return (*input.shape[:-1], weight.shape[0])


@torch.library.custom_op("pyfast::linear", mutates_args=())
def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor], relu: bool) -> Tensor:
    """input @ weight.T + bias (then ReLU): one matmul with the bias and ReLU in its epilogue."""
    out = _empty(input, _linear_shape(input, weight, bias))
    with launching("linear", input):
        ops.matmul(array(input.reshape(-1, weight.shape[1])), array(weight), trans_b=True, bias=array(bias),
                   activation="relu" if relu else None, out=array(out.view(-1, weight.shape[0])))
    return out


@linear.register_fake
def _(input, weight, bias, relu):
    return _empty(input, _linear_shape(input, weight, bias))


@torch.library.custom_op("pyfast::linear_backward", mutates_args=())
def linear_backward(grad: Tensor, input: Tensor, weight: Tensor, relu_output: Optional[Tensor],
                    output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """(dinput, dweight, dbias) of linear; unwanted ones are empty."""
    _tensors("linear_backward", grad=grad, input=input, weight=weight, relu_output=relu_output)
    want_input, want_weight, want_bias = output_mask
    d_input, d_weight, d_bias = _gradient_outputs(input, weight, output_mask)
    out_features, in_features = weight.shape
    with launching("linear_backward", input):
        dy = array(grad.reshape(-1, out_features))
        if relu_output is not None:
            dy = ops.relu_backward(dy, array(relu_output.reshape(-1, out_features)))
        if want_input:
            ops.matmul(dy, array(weight), out=array(d_input.view(-1, in_features)))
        if want_weight:
            ops.matmul(dy, array(input.reshape(-1, in_features)), trans_a=True, out=array(d_weight))
        if want_bias:
            ops.bias_grad(dy, out=array(d_bias))
    return d_input, d_weight, d_bias


@linear_backward.register_fake
def _(grad, input, weight, relu_output, output_mask):
    return _gradient_outputs(input, weight, output_mask)


def _linear_setup(ctx, inputs, output):
    input, weight, bias, relu = inputs
    ctx.save_for_backward(input, weight, output if relu else None)
    ctx.has_bias = bias is not None


def _linear_gradient(ctx, grad):
    input, weight, relu_output = ctx.saved_tensors
    mask = _wanted(ctx)
    grads = torch.ops.pyfast.linear_backward(grad.contiguous(), input, weight, relu_output, mask)
    return (*_grads(mask, *grads), None)


linear.register_autograd(_linear_gradient, setup_context=_linear_setup)


# --------------------------------------------------------------------------- pooling
def _pool_dims(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    _tensors(op, input=input)
    return _checks.pool2d_dims(tuple(input.shape), tuple(kernel_size), tuple(stride), tuple(padding),
                               tuple(dilation), ceil_mode)


@torch.library.custom_op("pyfast::max_pool2d", mutates_args=())
def max_pool2d(input: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int],
               ceil_mode: bool) -> tuple[Tensor, Tensor]:
    """(y, indices): each window's maximum and its flat index h * W + w in the input plane."""
    g = _pool_dims("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    y, indices = _empty(input, g["y_shape"]), _empty(input, g["y_shape"], torch.int64)
    with launching("max_pool2d", input):
        ops.max_pool2d(array(input), tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), ceil_mode,
                       return_indices=True, out=array(y), out_indices=array(indices))
    return y, indices


@max_pool2d.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    g = _pool_dims("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    return _empty(input, g["y_shape"]), _empty(input, g["y_shape"], torch.int64)


@torch.library.custom_op("pyfast::max_pool2d_backward", mutates_args=())
def max_pool2d_backward(grad: Tensor, indices: Tensor, input_shape: list[int], kernel_size: list[int],
                        stride: list[int], padding: list[int], dilation: list[int], ceil_mode: bool,
                        relu_output: Optional[Tensor]) -> Tensor:
    """dinput of max_pool2d, each element gathering from the windows that hold it; with
    ``relu_output`` (the pooled output of a ReLU) the ReLU's backward too."""
    _tensors("max_pool2d_backward", grad=grad, relu_output=relu_output)
    check_tensor("max_pool2d_backward", "indices", indices, (torch.int64,))
    out = _empty(grad, input_shape)
    with launching("max_pool2d_backward", grad):
        ops.max_pool2d_backward(array(grad), array(indices), tuple(input_shape), tuple(kernel_size), tuple(stride),
                                tuple(padding), tuple(dilation), ceil_mode, relu_output=array(relu_output),
                                out=array(out))
    return out


@max_pool2d_backward.register_fake
def _(grad, indices, input_shape, kernel_size, stride, padding, dilation, ceil_mode, relu_output):
    return _empty(grad, input_shape)


def _max_pool2d_setup(ctx, inputs, output):
    input, kernel_size, stride, padding, dilation, ceil_mode = inputs
    _, indices = output
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(indices)
    ctx.options = (list(input.shape), list(kernel_size), list(stride), list(padding), list(dilation), ceil_mode)


def _max_pool2d_gradient(ctx, grad, _indices_grad):
    (indices,) = ctx.saved_tensors
    d_input = torch.ops.pyfast.max_pool2d_backward(grad.contiguous(), indices, *ctx.options, None)
    return d_input, None, None, None, None, None


max_pool2d.register_autograd(_max_pool2d_gradient, setup_context=_max_pool2d_setup)


def _avg_options(count_include_pad, divisor_override):
    return dict(count_include_pad=count_include_pad, divisor_override=divisor_override)


@torch.library.custom_op("pyfast::avg_pool2d", mutates_args=())
def avg_pool2d(input: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool,
               count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    g = _pool_dims("avg_pool2d", input, kernel_size, stride, padding, [1, 1], ceil_mode)
    y = _empty(input, g["y_shape"])
    with launching("avg_pool2d", input):
        ops.avg_pool2d(array(input), tuple(kernel_size), tuple(stride), tuple(padding), ceil_mode,
                       **_avg_options(count_include_pad, divisor_override), out=array(y))
    return y


@avg_pool2d.register_fake
def _(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    _checks.divisor_override(divisor_override)
    return _empty(input, _pool_dims("avg_pool2d", input, kernel_size, stride, padding, [1, 1], ceil_mode)["y_shape"])


@torch.library.custom_op("pyfast::avg_pool2d_backward", mutates_args=())
def avg_pool2d_backward(grad: Tensor, input_shape: list[int], kernel_size: list[int], stride: list[int],
                        padding: list[int], ceil_mode: bool, count_include_pad: bool,
                        divisor_override: Optional[int]) -> Tensor:
    _tensors("avg_pool2d_backward", grad=grad)
    out = _empty(grad, input_shape)
    with launching("avg_pool2d_backward", grad):
        ops.avg_pool2d_backward(array(grad), tuple(input_shape), tuple(kernel_size), tuple(stride), tuple(padding),
                                ceil_mode, **_avg_options(count_include_pad, divisor_override), out=array(out))
    return out


@avg_pool2d_backward.register_fake
def _(grad, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _empty(grad, input_shape)


def _avg_pool2d_setup(ctx, inputs, output):
    input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override = inputs
    ctx.options = (list(input.shape), list(kernel_size), list(stride), list(padding), ceil_mode, count_include_pad,
                   divisor_override)


def _avg_pool2d_gradient(ctx, grad):
    return (torch.ops.pyfast.avg_pool2d_backward(grad.contiguous(), *ctx.options), None, None, None, None, None,
            None)


avg_pool2d.register_autograd(_avg_pool2d_gradient, setup_context=_avg_pool2d_setup)


# ---------------------------------------------------------------------- element-wise
@torch.library.custom_op("pyfast::relu", mutates_args=())
def relu(input: Tensor) -> Tensor:
    _tensors("relu", input=input)
    out = _empty(input, input.shape)
    with launching("relu", input):
        ops.relu(array(input), out=array(out))
    return out


@relu.register_fake
def _(input):
    _tensors("relu", input=input)
    return _empty(input, input.shape)


@torch.library.custom_op("pyfast::relu_backward", mutates_args=())
def relu_backward(grad: Tensor, output: Tensor) -> Tensor:
    """grad where the ReLU's output is > 0, else 0."""
    _tensors("relu_backward", grad=grad, output=output)
    out = _empty(grad, grad.shape)
    with launching("relu_backward", grad):
        ops.relu_backward(array(grad), array(output), out=array(out))
    return out


@relu_backward.register_fake
def _(grad, output):
    return _empty(grad, grad.shape)


def _relu_setup(ctx, inputs, output):
    ctx.save_for_backward(output)


def _relu_gradient(ctx, grad):
    (output,) = ctx.saved_tensors
    return torch.ops.pyfast.relu_backward(grad.contiguous(), output)


relu.register_autograd(_relu_gradient, setup_context=_relu_setup)


@torch.library.custom_op("pyfast::softmax", mutates_args=())
def softmax(input: Tensor, dim: Optional[int], log: bool) -> Tensor:
    """softmax (log_softmax when ``log``) along ``dim`` (None: PyTorch's implicit axis, as
    pyfast.ops resolves it)."""
    _tensors("softmax", input=input)
    out = _empty(input, input.shape)
    with launching("softmax", input):
        (ops.log_softmax if log else ops.softmax)(array(input), dim, out=array(out))
    return out


@softmax.register_fake
def _(input, dim, log):
    _tensors("softmax", input=input)
    _checks.softmax_dim(dim, input.dim())
    return _empty(input, input.shape)


@torch.library.custom_op("pyfast::softmax_backward", mutates_args=())
def softmax_backward(grad: Tensor, output: Tensor, dim: Optional[int], log: bool) -> Tensor:
    _tensors("softmax_backward", grad=grad, output=output)
    out = _empty(grad, grad.shape)
    with launching("softmax_backward", grad):
        (ops.log_softmax_backward if log else ops.softmax_backward)(array(grad), array(output), dim, out=array(out))
    return out


@softmax_backward.register_fake
def _(grad, output, dim, log):
    return _empty(grad, grad.shape)


def _softmax_setup(ctx, inputs, output):
    _, dim, log = inputs
    ctx.save_for_backward(output)
    ctx.options = (dim, log)


def _softmax_gradient(ctx, grad):
    (output,) = ctx.saved_tensors
    return torch.ops.pyfast.softmax_backward(grad.contiguous(), output, *ctx.options), None, None


softmax.register_autograd(_softmax_gradient, setup_context=_softmax_setup)


# ---------------------------------------------------------------------------- losses
def _cross_entropy_dims(input, target, weight):
    _tensors("cross_entropy", input=input, weight=weight)
    check_tensor("cross_entropy", "target", target, (*_LABELS, torch.float32))
    same_device("cross_entropy", "input", input, target=target)
    _, _, _, _, loss_shape = _checks.cross_entropy_dims(
        tuple(input.shape), tuple(target.shape), _numpy_dtype(target.dtype),
        None if weight is None else tuple(weight.shape))
    return loss_shape


def _numpy_dtype(dtype):
    import numpy as np

    return {torch.int64: np.dtype(np.int64), torch.int32: np.dtype(np.int32)}.get(dtype, np.dtype(np.float32))


def _loss_shape(reduction, per_element_shape):
    return tuple(per_element_shape) if reduction == "none" else ()


@torch.library.custom_op("pyfast::cross_entropy", mutates_args=())
def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, reduction: str,
                  label_smoothing: float, validate: bool) -> tuple[Tensor, Tensor]:
    """(loss, grad): torch.nn.functional.cross_entropy's loss and its gradient with respect to
    ``input`` (of the loss, or of the losses' sum with reduction "none"), from one fused pass."""
    _cross_entropy_dims(input, target, weight)
    grad = _empty(input, input.shape)
    with launching("cross_entropy", input):
        loss, _ = ops.cross_entropy(array(input), array(target), array(weight), None, ignore_index, None, reduction,
                                    label_smoothing, out_grad=array(grad), validate=validate and not capturing())
        loss = tensor(loss)
    return loss, grad


@cross_entropy.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, validate):
    _checks.cross_entropy_options(ignore_index, reduction, label_smoothing)
    return _empty(input, _loss_shape(reduction, _cross_entropy_dims(input, target, weight))), _empty(input, input.shape)


def _save_loss_gradient(ctx, output, per_element, per_row):
    _, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.save_for_backward(grad)
    ctx.per_element, ctx.per_row = per_element, per_row


def _scaled(ctx, grad, grad_loss):
    """The forward's gradient times the loss's incoming gradient: a scalar, or with reduction
    "none" one per element (MSE) or per row (cross-entropy: broadcast over the class axis)."""
    if ctx.per_element and ctx.per_row:
        grad_loss = grad_loss.unsqueeze(1)
    return grad * grad_loss


def _cross_entropy_setup(ctx, inputs, output):
    _save_loss_gradient(ctx, output, inputs[4] == "none", True)


def _cross_entropy_gradient(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    return _scaled(ctx, grad, grad_loss), None, None, None, None, None, None


cross_entropy.register_autograd(_cross_entropy_gradient, setup_context=_cross_entropy_setup)


def _mse_shape(input, target):
    _tensors("mse_loss", input=input, target=target)
    _checks.expect_shape("target", tuple(target.shape), tuple(input.shape))


@torch.library.custom_op("pyfast::mse_loss", mutates_args=())
def mse_loss(input: Tensor, target: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    """(loss, grad): the mean (sum, or per-element) squared error and its gradient with respect
    to ``input``, from one pass."""
    _mse_shape(input, target)
    grad = _empty(input, input.shape)
    with launching("mse_loss", input):
        loss, _ = ops.mse_loss(array(input), array(target), reduction=reduction, out_grad=array(grad))
        loss = tensor(loss)
    return loss, grad


@mse_loss.register_fake
def _(input, target, reduction):
    _mse_shape(input, target)
    _checks.mse_reduction(reduction, 1)
    return _empty(input, _loss_shape(reduction, input.shape)), _empty(input, input.shape)


def _mse_setup(ctx, inputs, output):
    _save_loss_gradient(ctx, output, inputs[2] == "none", False)


def _mse_gradient(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    d_input = _scaled(ctx, grad, grad_loss)
    return d_input, (-d_input if ctx.needs_input_grad[1] else None), None


mse_loss.register_autograd(_mse_gradient, setup_context=_mse_setup)
