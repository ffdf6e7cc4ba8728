"""The operands of the NumPy backends' ops, checked once for both: pyfast.reference (the float64
oracle) and pyfast.cpu (float32 on BLAS, the trainer's CPU backend).

One function per op, named as the op: it takes the op's arguments, checks them with the rules
and messages pyfast.ops uses (pyfast._checks), and returns the op's arrays converted to the
backend's compute ``dtype`` (C-contiguous as given; converting a float32 array to float32
copies nothing, so pyfast.cpu must never write into what it gets back) with the geometry the
math needs. The backends hold only the math.
"""

import numpy as np

from pyfast import _checks


# ------------------------------------------------------------------------------ arrays
def array(name, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__module__}.{type(x).__name__}")
    return x


def layout(name, x, transposed_ok=False):
    """x when it is laid out as pyfast.ops takes it (C-contiguous; matmul: or the .T of such)."""
    if not x.flags.c_contiguous and not (transposed_ok and x.ndim == 2 and x.flags.f_contiguous):
        raise _checks.not_contiguous(name, x.shape, "np", transposed_ok)
    return x


def floats(name, x, dtype, *, optional=False):
    """A float32 array argument, converted to `dtype` (None when optional and not given)."""
    if x is None and optional:
        return None
    array(name, x)
    _checks.expect_float32(name, x.dtype)
    return layout(name, x).astype(dtype, copy=False)


def output(out, shape, name="out"):
    """`out` checked as the float32 array of `shape` a result is written into (None: not given)."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(out).__module__}.{type(out).__name__}")
    _checks.expect_float32(name, out.dtype)
    _checks.expect_shape(name, out.shape, tuple(shape))
    return out


def finish(result, out):
    """The result rounded to float32, into `out` when given."""
    if out is None:
        # C order, as the GPU ops return (np.ascontiguousarray would turn a 0-d result into 1-d)
        return np.array(result, dtype=np.float32, order="C")
    output(out, result.shape)[...] = result
    return out


def indices_output(out_indices, shape):
    """`out_indices` checked as the int64 array of `shape` max pooling writes (None: not given)."""
    if out_indices is None:
        return None
    if not isinstance(out_indices, np.ndarray):
        raise TypeError(f"out_indices: expected a NumPy array, got {type(out_indices).__name__}")
    _checks.expect_indices("out_indices", out_indices.dtype)
    _checks.expect_shape("out_indices", out_indices.shape, tuple(shape))
    return out_indices


# ------------------------------------------------------------------------------- matmul
def _array_module(x):
    """NumPy, or CuPy for a CuPy array (the benchmarks round operands on the GPU)."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def round_tf32(x):
    """float32 values rounded to TF32 as the tensor-core kernel does (cvt.rna.tf32.f32: keep 10
    mantissa bits, nearest, ties away from zero); NaN and infinities pass unchanged."""
    xp = _array_module(x)
    x = xp.asarray(x, dtype=xp.float32)
    bits = x.view(xp.uint32)
    rounded = ((bits + xp.uint32(0x1000)) & xp.uint32(0xFFFFE000)).view(xp.float32)
    return xp.where(xp.isfinite(x), rounded, x)


def round_bf16(x):
    """float32 values rounded to bfloat16 (7 mantissa bits, nearest even), kept as float32;
    NaN and infinities pass unchanged."""
    xp = _array_module(x)
    x = xp.asarray(x, dtype=xp.float32)
    bits = x.view(xp.uint32)
    bias = xp.uint32(0x7FFF) + ((bits >> xp.uint32(16)) & xp.uint32(1))
    rounded = ((bits + bias) & xp.uint32(0xFFFF0000)).view(xp.float32)
    return xp.where(xp.isfinite(x), rounded, x)


_ROUNDING = {0: None, 1: round_tf32, 2: round_bf16}


def matmul(a, b, trans_a, trans_b, bias, activation, version, precision, plan, dtype):
    """(a, b, bias, m, n, relu): a and b rounded as ``precision`` says (what the tensor-core
    kernel multiplies), in their layouts (a transposed view stays one)."""
    for name, x in (("a", a), ("b", b)):
        array(name, x)
    _, precision_code, bf16_storage = _checks.matmul_kernel(version, precision, a.dtype, b.dtype)
    _checks.matmul_plan(plan)
    a, b = layout("a", a, transposed_ok=True), layout("b", b, transposed_ok=True)
    rounding = None if bf16_storage else _ROUNDING[precision_code]  # bfloat16 storage is already rounded
    a = (a if rounding is None else rounding(a)).astype(dtype, copy=False)
    b = (b if rounding is None else rounding(b)).astype(dtype, copy=False)
    bias = floats("bias", bias, dtype, optional=True)
    m, n, _ = _checks.matmul_dims(a.shape, b.shape, trans_a, trans_b)
    if bias is not None:
        _checks.expect_shape("bias", bias.shape, (n,))
    relu = _checks.activation_code(activation) == _checks.ACTIVATIONS["relu"]
    return a, b, bias, m, n, relu


# ------------------------------------------------------------------------ element-wise
def gather_batch(x, index, shifts, dtype):
    """(x, rows): the data set and its sample count."""
    x = floats("x", x, dtype)
    if not isinstance(index, np.ndarray):
        raise TypeError(f"index: expected a NumPy array, got {type(index).__module__}.{type(index).__name__}")
    if shifts is not None and not isinstance(shifts, np.ndarray):
        raise TypeError(f"shifts: expected a NumPy array, got {type(shifts).__module__}.{type(shifts).__name__}")
    rows, *_ = _checks.gather_batch_dims(x.shape, index.shape, index.dtype, None if shifts is None else shifts.shape,
                                         None if shifts is None else shifts.dtype)
    return x, rows


def relu_backward(dy, y, dtype):
    dy, y = floats("dy", dy, dtype), floats("y", y, dtype)
    _checks.expect_shape("y", y.shape, dy.shape)
    return dy, y


def add_bias(x, bias, dtype):
    """(x, bias viewed to broadcast over x's channel axis)."""
    x, bias = floats("x", x, dtype), floats("bias", bias, dtype)
    _, channels, _ = _checks.channel_view("x", x.shape)
    _checks.expect_shape("bias", bias.shape, (channels,))
    return x, bias.reshape((channels,) + (1,) * (x.ndim - 2))


def bias_grad(dy, dtype):
    dy = floats("dy", dy, dtype)
    _checks.channel_view("dy", dy.shape)
    return dy


# ------------------------------------------------------------------------------ losses
def labels(labels, rows, classes):
    """Class indices (N,) in [0, classes), as int64."""
    array("labels", labels)
    _checks.expect_labels("labels", labels.dtype)
    layout("labels", labels)
    _checks.classifier_dims((rows, classes), labels.shape)
    invalid = int(np.count_nonzero((labels < 0) | (labels >= classes)))
    if invalid:
        raise _checks.invalid_labels_error(invalid, classes)
    return labels.astype(np.int64, copy=False)


def mse_loss(pred, target, size_average, reduce, reduction, weight, dtype):
    """(input, target, loss scale, gradient scale, per element?)."""
    pred, target = floats("input", pred, dtype), floats("target", target, dtype)
    _checks.expect_shape("target", target.shape, pred.shape)
    _checks.legacy_reduction(size_average, reduce)
    _checks.no_loss_weight(weight)
    return (pred, target, *_checks.mse_reduction(reduction, pred.size))


def softmax_cross_entropy(logits, labels_, reduction, validate, dtype):
    """(logits, labels, loss scale, gradient scale)."""
    x = floats("logits", logits, dtype)
    rows, classes = _checks.classifier_dims(x.shape)
    y = labels(labels_, rows, classes)
    _checks.expect_bool("validate", validate)
    return (x, y, *_checks.reduction_scales(reduction, rows))


def cross_entropy(x, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing, validate, dtype):
    """(input, target (int64 labels or probabilities), weight or None, ignore_index, reduction,
    label_smoothing, probabilities?); labels neither in [0, C) nor ignore_index raise."""
    x = floats("input", x, dtype)
    array("target", target)
    weight = floats("weight", weight, dtype, optional=True)
    _checks.legacy_reduction(size_average, reduce)
    ignore_index, _, smoothing = _checks.cross_entropy_options(ignore_index, reduction, label_smoothing)
    _, classes, _, probabilities, _ = _checks.cross_entropy_dims(x.shape, target.shape, target.dtype,
                                                                 None if weight is None else weight.shape)
    _checks.expect_bool("validate", validate)
    if probabilities:
        target = floats("target", target, dtype)
    else:
        layout("target", target)
        invalid = int(np.count_nonzero(((target < 0) | (target >= classes)) & (target != ignore_index)))
        if invalid:
            raise _checks.invalid_targets_error(invalid, classes, ignore_index)
        target = target.astype(np.int64, copy=False)
    return x, target, weight, ignore_index, reduction, smoothing, probabilities


def softmax(logits, dim, softmax_dtype, dtype):
    """(input, the axis to normalize)."""
    x = floats("input", logits, dtype)
    axis = _checks.softmax_dim(dim, x.ndim)
    _checks.softmax_dtype(softmax_dtype)
    return x, axis


def softmax_backward(dy, y, dim, dtype):
    """(dy, the forward's output, the axis)."""
    dy, y = floats("dy", dy, dtype), floats("y", y, dtype)
    _checks.expect_shape("y", y.shape, dy.shape)
    return dy, y, _checks.softmax_dim(dim, dy.ndim)


def relu(x, inplace, out, dtype):
    """(input, out): inplace=True makes out the input."""
    out = _checks.relu_target(inplace, out, x)
    return floats("input", x, dtype), out


def accuracy(logits, labels_, dtype):
    x = floats("logits", logits, dtype)
    rows, _ = _checks.classifier_dims(x.shape)
    array("labels", labels_)
    _checks.expect_labels("labels", labels_.dtype)
    layout("labels", labels_)
    _checks.expect_shape("labels", labels_.shape, (rows,))
    return x, labels_


# -------------------------------------------------------------------------- optimizers
def state(name, arrays, params):
    """Per-parameter arrays updated in place: NumPy, float32, C-contiguous, each its parameter's shape."""
    for i, (array_, param) in enumerate(zip(arrays, params)):
        if not isinstance(array_, np.ndarray):
            raise TypeError(f"{name}[{i}]: expected a NumPy array, got {type(array_).__name__}")
        _checks.expect_float32(f"{name}[{i}]", array_.dtype)
        layout(f"{name}[{i}]", array_)
        _checks.expect_shape(f"{name}[{i}]", array_.shape, param.shape)
    return arrays


def sgd_step(params, grads, lr, momentum, weight_decay, nesterov, velocity):
    _checks.param_lists(params=params, grads=grads, velocity=velocity)
    _checks.sgd_hyperparameters(lr, momentum, weight_decay, nesterov)
    if momentum and velocity is None:
        raise ValueError("velocity: momentum > 0 needs a list of buffers (zeros before the first step)")
    state("params", params, params)
    state("grads", grads, params)
    if momentum:
        state("velocity", velocity, params)


def adam_step(params, grads, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, decoupled):
    """(beta1, beta2, step size, sqrt of the second bias correction); a step counter array is
    incremented here (pyfast.ops' device counter)."""
    _checks.param_lists(params=params, grads=grads, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    if isinstance(step, np.ndarray):
        if step.shape != () or step.dtype != np.int64:
            raise ValueError(f"step: a step counter must be a 0-d int64 array, got {step.dtype} {step.shape}")
        step[...] += 1
        step = int(step)
    hyperparameters = _checks.adam_hyperparameters(step, lr, betas, eps, weight_decay, decoupled)
    for name, arrays in (("params", params), ("grads", grads), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        state(name, arrays, params)
    return hyperparameters


def linear_mse_sgd_fit(x, y, weight, bias, lr, epochs, dtype):
    """(x, y, samples, outputs); weight and bias are checked as arrays updated in place."""
    x, y = floats("x", x, dtype), floats("y", y, dtype)
    for name, array_ in (("weight", weight), ("bias", bias)):
        if not isinstance(array_, np.ndarray):
            raise TypeError(f"{name}: expected a NumPy array (updated in place), got {type(array_).__name__}")
        _checks.expect_float32(name, array_.dtype)
        layout(name, array_)
    n, _, o = _checks.linear_fit_dims(x.shape, y.shape, weight.shape, bias.shape, epochs, lr)
    return x, y, n, o


# --------------------------------------------------------------- convolution and pooling
def conv_padding(g):
    """((top, bottom), (left, right)) of a convolution's geometry (PyTorch's "same" may pad the
    bottom / right one more)."""
    return tuple(zip(g["padding"], g["padding_end"]))


def conv2d(x, w, bias, stride, padding, dilation, groups, activation, version, config, dtype):
    """(input, weight, bias, geometry, relu) of a forward convolution."""
    x, w = floats("input", x, dtype), floats("weight", w, dtype)
    bias = floats("bias", bias, dtype, optional=True)
    g = _checks.conv2d_dims(x.shape, w.shape, stride, padding, dilation, groups, names=("input", "weight"))
    if bias is not None:
        _checks.expect_shape("bias", bias.shape, (g["k"],))
    relu = _checks.conv2d_activation(activation)
    _checks.conv2d_plan(_checks.conv2d_group_geometry(g), "forward", version, config)
    return x, w, bias, g, relu


def conv2d_max_pool2d(x, w, bias, stride, padding, dilation, groups, activation, version, config, dtype):
    """(input, weight, bias, convolution geometry, relu) of the convolution whose output is pooled 2x2."""
    x, w = floats("input", x, dtype), floats("weight", w, dtype)
    g = _checks.conv2d_dims(x.shape, w.shape, stride, padding, dilation, groups, names=("input", "weight"))
    relu = _checks.conv2d_activation(activation)
    if g["groups"] == 1:
        _checks.conv2d_max_pool2d_plan(g, version, config)
    else:  # a grouped convolution, then the pooling
        _checks.conv2d_plan(_checks.conv2d_group_geometry(g), "forward", version, config)
        _checks.pool2d_dims(g["y_shape"], 2, 2, 0)
    bias = floats("bias", bias, dtype, optional=True)
    if bias is not None:
        _checks.expect_shape("bias", bias.shape, (g["k"],))
    return x, w, bias, g, relu


def _conv_gradient_geometry(pass_name, dy, x_shape, w_shape, stride, padding, dilation, groups, version, config):
    g = _checks.conv2d_dims(x_shape, w_shape, stride, padding, dilation, groups)
    _checks.expect_shape("dy", dy.shape, g["y_shape"])
    _checks.conv2d_plan(_checks.conv2d_group_geometry(g), pass_name, version, config)
    return g


def conv2d_backward_input(dy, w, x_shape, stride, padding, dilation, groups, version, config, dtype):
    """(dy, w, geometry)."""
    x_shape = _checks.image_shape("x_shape", x_shape)
    dy, w = floats("dy", dy, dtype), floats("w", w, dtype)
    return dy, w, _conv_gradient_geometry("backward_input", dy, x_shape, w.shape, stride, padding, dilation, groups,
                                          version, config)


def conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups, bias, out_bias, version, config,
                           dtype):
    """(dy, x, geometry)."""
    w_shape = _checks.image_shape("w_shape", w_shape)
    _checks.expect_bool("bias", bias)
    if out_bias is not None and not bias:
        raise ValueError("out_bias: given without bias=True")
    dy, x = floats("dy", dy, dtype), floats("x", x, dtype)
    return dy, x, _conv_gradient_geometry("backward_weight", dy, x.shape, w_shape, stride, padding, dilation, groups,
                                          version, config)


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, bias, activation, out_indices,
               dtype):
    """(input, bias, geometry, relu)."""
    x = floats("input", x, dtype)
    bias = floats("bias", bias, dtype, optional=True)
    g = _checks.pool2d_dims(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    _checks.expect_bool("return_indices", return_indices)
    if out_indices is not None and not return_indices:
        raise ValueError("out_indices: given with return_indices=False")
    if bias is not None:
        _checks.expect_shape("bias", bias.shape, (g["c"],))
    return x, bias, g, _checks.conv2d_activation(activation)


def window_origin(g):
    """Padded-plane row and column of each window's top-left tap, (P, 1) and (1, Q)."""
    return (np.arange(g["p"])[:, None] * g["stride"][0], np.arange(g["q"])[None, :] * g["stride"][1])


def pool_padding(g):
    """((top, bottom), (left, right)) rows and columns around the input that every window
    (ceil_mode's last ones, which may reach past the padded input, included) stays inside."""
    sides = []
    for size, out, kernel, stride, pad, step in zip((g["h"], g["w"]), (g["p"], g["q"]), g["kernel"], g["stride"],
                                                    g["padding"], g["dilation"]):
        reach = (out - 1) * stride + (kernel - 1) * step + 1  # the padded rows the windows span
        sides.append((pad, pad + max(0, reach - (size + 2 * pad))))
    return tuple(sides)


def max_pool2d_backward(dy, indices, x_shape, kernel_size, stride, padding, dilation, ceil_mode, relu_output, dtype):
    """(dy, indices, relu_output, x_shape, geometry or None): the indices must lie in the plane
    and, with the window given, each inside its own window."""
    dy = floats("dy", dy, dtype)
    if not isinstance(indices, np.ndarray):
        raise TypeError(f"indices: expected a NumPy array, got {type(indices).__name__}")
    _checks.expect_indices("indices", indices.dtype)
    layout("indices", indices)
    relu_output = floats("relu_output", relu_output, dtype, optional=True)
    (n, c, h, w), g = _checks.max_pool2d_backward_dims(dy.shape, indices.shape, x_shape, kernel_size, stride,
                                                       padding, dilation, ceil_mode,
                                                       None if relu_output is None else relu_output.shape)
    if indices.size and (g is None or not _inside_windows(indices, g)):
        if indices.min() < 0 or indices.max() >= h * w:
            raise ValueError(f"indices: expected flat indices in [0, {h * w}) of the {h}x{w} input plane")
        if g is not None:
            raise ValueError("indices: expected each index inside its own window (as max_pool2d records them)")
    return dy, indices, relu_output, (n, c, h, w), g


def _inside_windows(indices, g):
    """Whether every index is the flat index of an element of its own window inside the plane:
    one comparison per window tap against where that tap lies (an integer pass each, which
    NumPy runs far faster than dividing the indices into rows and columns)."""
    (ph, pw), (row0, col0), w = g["padding"], window_origin(g), g["w"]
    (dh, dw) = g["dilation"]
    planes = indices.reshape(-1, g["p"] * g["q"])
    inside, equal = np.zeros(planes.shape, np.bool_), np.empty(planes.shape, np.bool_)
    for i in range(g["kernel"][0]):
        for j in range(g["kernel"][1]):
            rows, cols = np.broadcast_arrays(row0 + i * dh - ph, col0 + j * dw - pw)
            # A tap in the padding has no flat index (-1 matches none).
            at = np.where((rows >= 0) & (rows < g["h"]) & (cols >= 0) & (cols < w), rows * w + cols, -1)
            np.equal(planes, at.reshape(-1), out=equal)
            inside |= equal
    return bool(inside.all())


def avg_divisor(g, count_include_pad, divisor=None):
    """Divisor of each window, (P, Q): divisor_override, the window's size inside the padded
    plane (a ceil_mode window may reach past it), or the number of real (unpadded) elements."""
    if divisor is not None:
        return np.full((g["p"], g["q"]), divisor, np.float64)
    kh, kw = g["kernel"]
    row0, col0 = window_origin(g)
    ph, pw = g["padding"]
    if count_include_pad:
        rows = np.minimum(row0 + kh, g["h"] + 2 * ph) - row0
        cols = np.minimum(col0 + kw, g["w"] + 2 * pw) - col0
    else:
        rows = np.minimum(row0 + kh, g["h"] + ph) - np.maximum(row0, ph)
        cols = np.minimum(col0 + kw, g["w"] + pw) - np.maximum(col0, pw)
    return (rows * cols).astype(np.float64)


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, dtype):
    """(input, geometry, divisor_override)."""
    x = floats("input", x, dtype)
    _checks.expect_bool("count_include_pad", count_include_pad)
    divisor = _checks.divisor_override(divisor_override)
    return x, _checks.pool2d_dims(x.shape, kernel_size, stride, padding, 1, ceil_mode), divisor


def avg_pool2d_backward(dy, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                        dtype):
    """(dy, geometry, divisor_override)."""
    dy = floats("dy", dy, dtype)
    x_shape = _checks.image_shape("x_shape", x_shape)
    _checks.expect_bool("count_include_pad", count_include_pad)
    divisor = _checks.divisor_override(divisor_override)
    g = _checks.pool2d_dims(x_shape, kernel_size, stride, padding, 1, ceil_mode, name="x_shape")
    _checks.expect_shape("dy", dy.shape, g["y_shape"])
    return dy, g, divisor
