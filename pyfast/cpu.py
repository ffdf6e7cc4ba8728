"""The CPU backend: every op of pyfast.ops on NumPy arrays, computed in float32 on BLAS.

What the trainer runs without a GPU (``backend="numpy"``). Same names, signatures, checks and
messages as pyfast.ops and pyfast.reference (the checks are pyfast._numpy_operands, shared with
the reference); the difference from pyfast.reference, the float64 oracle the kernels are tested
against, is speed: float32 throughout, convolutions as im2col + one batched matrix product per
pass (NumPy's matmul, on BLAS's threads), pooling as one vectorised pass per window tap, and
scratch memory (im2col columns, padded planes) kept per thread and shape and reused across
steps. Results agree with the reference within float32 rounding (tests/test_cpu_backend.py);
sums run in another order, as on the GPU.
"""

import collections
import threading

import numpy as np

from pyfast import _checks, _groups, reference
from pyfast import _numpy_operands as operands

_F32 = np.float32

# ------------------------------------------------------------------------------ scratch
_SCRATCH_ENTRIES = 64  # per thread: a training run needs about 20 per batch shape (train, last batch, eval)
_local = threading.local()


def _scratch(name, shape, dtype=_F32, fill=None):
    """A scratch array kept for the next call with the same name, shape and dtype (per thread;
    the least recently used go beyond _SCRATCH_ENTRIES). With `fill`, the array is filled when
    created: for borders of padded planes that callers never write, so they stay filled."""
    cache = getattr(_local, "scratch", None)
    if cache is None:
        cache = _local.scratch = collections.OrderedDict()
    key = (name, tuple(shape), np.dtype(dtype).str, fill)
    array = cache.get(key)
    if array is None:
        array = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
        cache[key] = array
        if len(cache) > _SCRATCH_ENTRIES:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return array


def clear_scratch():
    """Frees this thread's scratch arrays (they are rebuilt on the next call)."""
    _local.scratch = None


def _target(out, shape, *inputs, name="out"):
    """Where to compute a result: `out` (checked), or a new array; also a new array when `out`
    shares memory with an input (the result then goes into `out` at the end, as the reference
    writes it: the inputs are read whole first)."""
    out = operands.output(out, shape, name)
    if out is None or any(x is not None and np.may_share_memory(out, x) for x in inputs):
        return np.empty(shape, _F32), out
    return out, out


def _deliver(result, out):
    if out is not None and result is not out:
        out[...] = result
        return out
    return result


def _scalar(value):
    return np.array(value, dtype=_F32)


# ------------------------------------------------------------------------------- matmul
def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, activation=None, out=None, version=None,
           precision=None, plan=None):
    """op(a) @ op(b) (+ bias) (then ReLU) as one float32 BLAS product; precision "tf32" / "bf16"
    rounds the operands first, as the tensor-core kernel does. ``version`` and ``plan`` are
    checked and otherwise ignored."""
    a, b, bias, m, n, relu = operands.matmul(a, b, trans_a, trans_b, bias, activation, version, precision, plan, _F32)
    c, out = _target(out, (m, n), a, b, bias)
    np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=c)
    if bias is not None:
        c += bias
    if relu:
        np.maximum(c, 0, out=c)  # NaN stays NaN, as in the kernels
    return _deliver(c, out)


# ------------------------------------------------------------------------ element-wise
def gather_batch(x, index, shifts=None, *, out=None):
    """out[b] = x[index[b]] shifted by shifts[b] (see pyfast.reference.gather_batch): copies,
    exact in any precision, so the reference's."""
    return reference.gather_batch(x, index, shifts, out=out)


def relu(input, inplace=False, *, out=None):
    x, out = operands.relu(input, inplace, out, _F32)
    y, out = _target(out, x.shape, x)
    np.maximum(x, 0, out=y)
    return _deliver(y, out)


def relu_backward(dy, y, *, out=None):
    dy, y = operands.relu_backward(dy, y, _F32)
    dx, out = _target(out, dy.shape, dy, y)
    np.copyto(dx, dy)
    np.putmask(dx, y <= 0, 0)  # a NaN output passes its gradient, as in the kernel
    return _deliver(dx, out)


def add_bias(x, bias, *, out=None):
    x, bias = operands.add_bias(x, bias, _F32)
    y, out = _target(out, x.shape, x, bias)
    np.add(x, bias, out=y)
    return _deliver(y, out)


def bias_grad(dy, *, out=None):
    dy = operands.bias_grad(dy, _F32)
    return operands.finish(dy.sum(axis=(0,) + tuple(range(2, dy.ndim)), dtype=_F32), out)


# ------------------------------------------------------------------------------ losses
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *, out_grad=None):
    """(loss, dloss/dinput): loss = mean (or sum) of (input - target)^2, a 0-d float32 array."""
    pred, target, loss_scale, grad_scale, per_element = operands.mse_loss(input, target, size_average, reduce,
                                                                          reduction, weight, _F32)
    grad, out_grad = _target(out_grad, pred.shape, pred, target, name="out_grad")
    np.subtract(pred, target, out=grad)
    if per_element:
        loss = np.square(grad)
    else:
        flat = grad.reshape(-1)
        loss = _scalar(float(np.dot(flat.astype(np.float64), flat)) * loss_scale)
    grad *= _F32(2.0 * grad_scale)
    return loss, _deliver(grad, out_grad)


def _log_softmax(x, out, axis=1):
    """log softmax of x along `axis` into out (float32); returns out."""
    if x.size == 0:
        return out
    np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    log_sum = np.log(np.exp(out).sum(axis=axis, keepdims=True))
    out -= log_sum
    return out


def softmax_cross_entropy(logits, labels, *, reduction="mean", out_grad=None, validate=True):
    """(loss, dloss/dlogits) of softmax cross-entropy over (N, C) logits and (N,) class indices;
    labels outside [0, C) raise ValueError (``validate`` matters on the GPU)."""
    x, y, loss_scale, grad_scale = operands.softmax_cross_entropy(logits, labels, reduction, validate, _F32)
    grad, out_grad = _target(out_grad, x.shape, x, name="out_grad")
    rows = np.arange(len(x))
    with np.errstate(invalid="ignore", over="ignore"):
        log_p = _log_softmax(x, grad)
        loss = -float(log_p[rows, y].astype(np.float64).sum()) * loss_scale  # the mean of no rows is NaN
        np.exp(log_p, out=grad)
    grad[rows, y] -= 1
    grad *= _F32(grad_scale)
    return _scalar(loss), _deliver(grad, out_grad)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0, *, out_grad=None, validate=True):
    """(loss, grad) of torch.nn.functional.cross_entropy, as pyfast.reference.cross_entropy, in
    float32 (the formulas are reference's, run on float32 arrays)."""
    x, target, weight, ignore_index, reduction, smoothing, probabilities = operands.cross_entropy(
        input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing, validate, _F32)
    loss, grad = reference.cross_entropy_values(x, target, weight, ignore_index, reduction, smoothing, probabilities)
    return loss, operands.finish(grad, out_grad)


def softmax(input, dim=None, dtype=None, *, out=None):
    x, axis = operands.softmax(input, dim, dtype, _F32)
    y, out = _target(out, x.shape, x)
    with np.errstate(invalid="ignore", over="ignore"):
        np.exp(_log_softmax(x, y, axis), out=y)
    return _deliver(y, out)


def log_softmax(input, dim=None, dtype=None, *, out=None):
    x, axis = operands.softmax(input, dim, dtype, _F32)
    y, out = _target(out, x.shape, x)
    with np.errstate(invalid="ignore", over="ignore"):
        _log_softmax(x, y, axis)
    return _deliver(y, out)


def softmax_backward(dy, y, dim=None, *, out=None):
    dy, y, axis = operands.softmax_backward(dy, y, dim, _F32)
    with np.errstate(invalid="ignore", over="ignore"):
        return operands.finish(reference.softmax_backward_values(dy, y, axis, False), out)


def log_softmax_backward(dy, y, dim=None, *, out=None):
    dy, y, axis = operands.softmax_backward(dy, y, dim, _F32)
    with np.errstate(invalid="ignore", over="ignore"):
        return operands.finish(reference.softmax_backward_values(dy, y, axis, True), out)


def accuracy(logits, labels):
    """Number of rows whose first maximal logit is at the label (NaN counting as -inf), as a
    0-d int64 array."""
    x, labels = operands.accuracy(logits, labels, _F32)
    predicted = np.argmax(np.where(np.isnan(x), -np.inf, x), axis=1)
    return np.array(np.count_nonzero(predicted == labels), dtype=np.int64)


# -------------------------------------------------------------------------- optimizers
def sgd_step(params, grads, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False, velocity=None):
    """In-place SGD as torch.optim.SGD (dampening 0), in float32."""
    operands.sgd_step(params, grads, lr, momentum, weight_decay, nesterov, velocity)
    for i, (p, g) in enumerate(zip(params, grads)):
        d = g + _F32(weight_decay) * p if weight_decay else g
        if momentum:
            buf = velocity[i]
            buf *= _F32(momentum)
            buf += d
            d = d + _F32(momentum) * buf if nesterov else buf
        p -= _F32(lr) * d


def linear_mse_sgd_fit(x, y, weight, bias, *, lr, epochs, out_losses=None):
    """``epochs`` full-batch SGD steps of a linear layer on the mean squared error, in float32
    (the GPU's one-launch run); ``weight`` and ``bias`` are updated in place; returns the loss
    before each step."""
    x, y, n, o = operands.linear_mse_sgd_fit(x, y, weight, bias, lr, epochs, _F32)
    losses = np.empty(epochs, _F32)
    scale, lr = _F32(2.0 / (n * o)), _F32(lr)
    for epoch in range(epochs):
        residual = x @ weight.T + bias - y
        losses[epoch] = np.mean(residual * residual, dtype=np.float64)
        residual *= scale
        weight -= lr * (residual.T @ x)
        bias -= lr * residual.sum(axis=0)
    return operands.finish(losses, out_losses)


def adam_step(params, grads, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
              weight_decay=0.0, decoupled=True):
    """In-place Adam (decoupled=False) or AdamW (decoupled=True) as torch.optim.Adam / AdamW, in
    float32; ``step`` counts updates from 1, or is a 0-d int64 counter this call increments."""
    beta1, beta2, step_size, bias_correction2_sqrt = operands.adam_step(params, grads, exp_avg, exp_avg_sq, step, lr,
                                                                        betas, eps, weight_decay, decoupled)
    for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
        if weight_decay:
            if decoupled:
                p *= _F32(1 - lr * weight_decay)
            else:
                g = g + _F32(weight_decay) * p
        m *= _F32(beta1)
        m += _F32(1 - beta1) * g
        v *= _F32(beta2)
        v += _F32(1 - beta2) * g * g
        denominator = _scratch("adam", p.shape)
        np.sqrt(v, out=denominator)
        denominator *= _F32(1 / bias_correction2_sqrt)
        denominator += _F32(eps)
        np.divide(m, denominator, out=denominator)
        denominator *= _F32(step_size)
        p -= denominator


# --------------------------------------------------------------- convolution and pooling
def _taps(rows, cols, step=(1, 1)):
    """(tap number, row, column, row offset, column offset) of each element of a rows x cols
    window whose elements lie `step` apart (the dilation)."""
    return [(i * cols + j, i, j, i * step[0], j * step[1]) for i in range(rows) for j in range(cols)]


def _tap_view(planes, row, col, g):
    """planes[..., row + p * stride_h, col + q * stride_w] for every output (p, q): a view."""
    (sh, sw), p, q = g["stride"], g["p"], g["q"]
    return planes[:, :, row: row + sh * (p - 1) + 1: sh, col: col + sw * (q - 1) + 1: sw]


def _padded(name, x, padding, value):
    """x with `padding` rows / columns of `value` around each plane ((ph, pw) on both sides, or
    ((top, bottom), (left, right))): x itself when there is none, else a scratch array whose
    border holds `value` (never written) and whose inside is x."""
    (top, bottom), (left, right) = ((p, p) if isinstance(p, int) else p for p in padding)
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    planes = _scratch(name, (n, c, top + h + bottom, left + w + right), fill=value)
    planes[:, :, top: top + h, left: left + w] = x
    return planes


def _columns(x, g):
    """im2col: (N, C * R * S, P * Q), column (p, q) of sample n holding the C x R x S window its
    output reads (a view of x itself for a 1x1 stride-1 convolution without padding). Any
    stride; each tap is a strided copy of P x Q elements per plane."""
    n, c, r, s = g["n"], g["c"], g["r"], g["s"]
    if r == s == 1 and g["stride"] == (1, 1) and operands.conv_padding(g) == ((0, 0), (0, 0)):
        return x.reshape(n, c, g["p"] * g["q"])
    planes = _padded("conv_input", x, operands.conv_padding(g), 0.0)
    columns = _scratch("columns", (n, c, r, s, g["p"], g["q"]))
    for _, i, j, row, col in _taps(r, s, g["dilation"]):
        columns[:, :, i, j] = _tap_view(planes, row, col, g)
    return columns.reshape(n, c * r * s, g["p"] * g["q"])


def _convolve(x, w, g, out=None):
    """conv2d(x, w) without bias, (N, K, P, Q): w (K, C*R*S) @ the columns of each sample, into
    `out` (C-contiguous) or scratch memory valid until the next op."""
    n, k, p, q = g["y_shape"]
    result = out if out is not None else _scratch("conv_output", (n, k, p, q))
    np.matmul(w.reshape(k, w[0].size), _columns(x, g), out=result.reshape(n, k, p * q))
    return result


def _conv_forward(x, w, bias, g, relu, y):
    """y (N, K, P, Q) = conv2d(x, w) (+ bias) (then ReLU)."""
    _convolve(x, w, g, y)
    if bias is not None:
        y += bias[:, None, None]
    if relu:
        np.maximum(y, 0, out=y)
    return y


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, out=None,
           version=None, config=None):
    """2D cross-correlation, NCHW x OIHW -> NCHW, as torch.nn.functional.conv2d (groups=1), then
    max(y, 0) with ``activation="relu"``: im2col and one float32 product per sample. ``version``
    and ``config`` are checked as on the GPU and otherwise ignored."""
    x, w, bias, g, relu = operands.conv2d(input, weight, bias, stride, padding, dilation, groups, activation, version,
                                          config, _F32)
    y, out = _target(out, g["y_shape"], x, w, bias)
    if g["groups"] > 1:
        return _deliver(_groups.forward(conv2d, np, x, w, bias, g["groups"], y, stride=stride, padding=padding,
                                        dilation=dilation, activation=activation), out)
    return _deliver(_conv_forward(x, w, bias, g, relu, y), out)


def conv2d_max_pool2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
                      out=None, out_indices=None, version=None, config=None):
    """(y, indices) = max_pool2d(conv2d(input, weight, bias, ..., activation=...), 2,
    return_indices=True), the convolution's output kept in scratch memory."""
    x, w, bias, g, relu = operands.conv2d_max_pool2d(input, weight, bias, stride, padding, dilation, groups,
                                                     activation, version, config, _F32)
    if g["groups"] > 1:
        conv = conv2d(x, w, bias, stride, padding, dilation, groups)
    else:
        conv = _convolve(x, w, g)
        if bias is not None:
            conv += bias[:, None, None]  # scratch: rounded to float32 as the kernel's epilogue rounds it
    pool = _checks.pool2d_dims(conv.shape, 2, 2, 0)
    y, out = _target(out, pool["y_shape"], x, w, bias)
    indices = operands.indices_output(out_indices, pool["y_shape"])
    y, indices = _max_pool(conv, pool, relu, y, indices)
    return _deliver(y, out), indices


def conv2d_backward_input(dy, w, x_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, version=None,
                          config=None):
    """Gradient of conv2d with respect to x: the columns' gradient w.T @ dy per sample, each
    tap's share added where it came from (col2im)."""
    dy, w, g = operands.conv2d_backward_input(dy, w, x_shape, stride, padding, dilation, groups, version, config,
                                              _F32)
    n, c, h, width, r, s = g["n"], g["c"], g["h"], g["w"], g["r"], g["s"]
    (ph, bottom), (pw, right) = operands.conv_padding(g)
    dx, out = _target(out, (n, c, h, width), dy, w)
    if g["groups"] > 1:
        return _deliver(_groups.backward_input(conv2d_backward_input, np, dy, w, dx.shape, g["groups"], dx,
                                               stride=stride, padding=padding, dilation=dilation), out)
    columns = _scratch("columns_grad", (n, c, r, s, g["p"], g["q"]))
    positions = g["p"] * g["q"]
    np.matmul(w.reshape(g["k"], c * r * s).T, dy.reshape(n, g["k"], positions),
              out=columns.reshape(n, c * r * s, positions))
    planes = _scratch("conv_input_grad", (n, c, ph + h + bottom, pw + width + right))
    planes.fill(0)
    for _, i, j, row, col in _taps(r, s, g["dilation"]):
        _tap_view(planes, row, col, g)[...] += columns[:, :, i, j]
    dx[...] = planes[:, :, ph: ph + h, pw: pw + width]
    return _deliver(dx, out)


def conv2d_backward_weight(dy, x, w_shape, *, stride=1, padding=0, dilation=1, groups=1, bias=False, out=None,
                           out_bias=None, version=None, config=None):
    """Gradient of conv2d with respect to w: dy @ columns.T per sample, summed over the batch;
    with ``bias=True`` also the bias gradient, as ``(dw, db)``."""
    dy, x, g = operands.conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups, bias, out_bias,
                                               version, config, _F32)
    if g["groups"] > 1:
        dw = np.empty(tuple(w_shape), _F32)
        db = np.empty(g["k"], _F32) if bias else None
        _groups.backward_weight(conv2d_backward_weight, np, dy, x, dw.shape, g["groups"], dw, db, stride=stride,
                                padding=padding, dilation=dilation)
        return operands.finish(dw, out) if not bias else (operands.finish(dw, out), operands.finish(db, out_bias))
    n, k = g["n"], g["k"]
    dy3 = dy.reshape(n, k, g["p"] * g["q"])
    columns = _columns(x, g)
    per_sample = _scratch("weight_grad", (n, k, columns.shape[1]))
    np.matmul(dy3, columns.transpose(0, 2, 1), out=per_sample)
    dw = operands.finish(per_sample.sum(axis=0).reshape(k, g["c"], g["r"], g["s"]), out)
    if not bias:
        return dw
    return dw, operands.finish(dy3.sum(axis=(0, 2), dtype=_F32), out_bias)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               bias=None, activation=None, out=None, out_indices=None):
    """The maximum of each window (and with ``return_indices=True`` its flat index h * W + w in
    the input plane), as pyfast.reference.max_pool2d (padding never wins, the last NaN of a
    window wins, ties go to the first maximum). The window's taps are gathered into contiguous
    rows first, so the maximum is one reduction and the winner a few passes of arithmetic."""
    x, bias, g, relu = operands.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                                           bias, activation, out_indices, _F32)
    y, out = _target(out, g["y_shape"], x, bias)
    indices = operands.indices_output(out_indices, g["y_shape"])
    if bias is not None:
        x = x + bias[None, :, None, None]  # rounded to float32, as the kernel rounds the sum
    y, indices = _max_pool(x, g, relu, y, indices)
    return (_deliver(y, out), indices) if return_indices else _deliver(y, out)


def _max_pool(x, g, relu, y, indices):
    """The pooling of max_pool2d into y and indices (any layout of x), returning (y, indices)."""
    shape = g["y_shape"]
    if indices is None:
        indices = np.empty(shape, np.int64)
    taps = _taps(*g["kernel"], g["dilation"])
    planes = _padded("pool_input", x, operands.pool_padding(g), -np.inf)  # -inf never wins against a real element
    gathered = _scratch("pool_taps", (len(taps), *shape))
    for tap, _, _, row, col in taps:
        gathered[tap] = _tap_view(planes, row, col, g)
    gathered.max(axis=0, out=y)  # NaN wins, as in the kernel
    if relu:
        np.maximum(y, 0, out=y)
    # The winner: the first tap equal to the maximum, by arithmetic on booleans (a masked copy or
    # a `where=` per tap costs ten times as much in NumPy).
    small = len(taps) <= 256
    winner_dtype = np.uint8 if small else np.int32
    winner = _scratch("pool_winner", shape, winner_dtype)
    found, equal = _scratch("pool_found", shape, np.bool_), _scratch("pool_equal", shape, np.bool_)
    winner.fill(0)
    np.equal(gathered[0], y, out=found)
    for tap in range(1, len(taps)):
        np.equal(gathered[tap], y, out=equal)
        np.greater(equal, found, out=equal)  # equal here and at no tap before
        winner += (equal.view(np.uint8) if small else equal) * winner_dtype(tap)
        found |= equal
    # Windows no tap equals, or not the right one: a NaN maximum is won by the window's last NaN;
    # a maximum of -inf (every element -inf or padding) and a ReLU's 0 (every element <= 0, all
    # made 0 by the ReLU, the first wins the tie) by the first element inside the plane.
    if np.isnan(y).any():
        for tap in range(len(taps)):
            np.putmask(winner, np.isnan(gathered[tap]), tap)
    if operands.pool_padding(g) != ((0, 0), (0, 0)):
        np.copyto(winner, _first_tap_inside(g, taps), where=np.isneginf(y) | (y == 0) if relu else np.isneginf(y),
                  casting="unsafe")  # tap numbers fit the winner's type
    elif relu:
        winner *= y != 0  # the first tap is inside
    # The flat index: the window's top-left corner in the plane plus the winning tap's offset.
    row0, col0 = operands.window_origin(g)
    plane_w = g["w"]
    offsets = np.array([row * plane_w + col for _, _, _, row, col in taps], np.int64)
    np.take(offsets, winner, out=indices, mode="clip")  # "clip": no buffered copy; every winner is a tap
    indices += (row0 - g["padding"][0]) * plane_w + (col0 - g["padding"][1])
    return y, indices


def _first_tap_inside(g, taps):
    """(P, Q): the first tap of each window that lies inside the plane (not in its padding)."""
    (ph, pw), (row0, col0) = g["padding"], operands.window_origin(g)
    first = np.zeros((g["p"], g["q"]), np.int32)
    for tap, _, _, row, col in reversed(taps):
        inside = ((row0 + row >= ph) & (row0 + row < ph + g["h"]) & (col0 + col >= pw) & (col0 + col < pw + g["w"]))
        first[inside] = tap
    return first


def max_pool2d_backward(dy, indices, x_shape, kernel_size=None, stride=None, padding=0, dilation=1, ceil_mode=False,
                        *, relu_output=None, out=None):
    """Gradient of max_pool2d: each dy added at its window's argmax (overlapping windows add);
    ``relu_output`` (the pooled y of a ReLU's output) zeroes the windows whose maximum is <= 0."""
    dy, indices, relu_output, (n, c, h, w), g = operands.max_pool2d_backward(dy, indices, x_shape, kernel_size, stride,
                                                                             padding, dilation, ceil_mode,
                                                                             relu_output, _F32)
    dx, out = _target(out, (n, c, h, w), dy, indices, relu_output)
    if relu_output is not None:
        dy = np.where(relu_output <= 0, _F32(0), dy)  # NaN passes, as in relu_backward
    per_plane = dy.shape[2] * dy.shape[3]
    planes, dx_planes = dy.reshape(n * c, per_plane), dx.reshape(n * c, h * w)
    indices = indices.reshape(n * c, per_plane)
    if g is not None and all(s >= (k - 1) * d + 1 for s, k, d in zip(g["stride"], g["kernel"], g["dilation"])):
        dx_planes.fill(0)  # windows apart: each element is some window's winner at most once
        flat = _scratch("pool_grad_index", indices.shape, np.int64)
        np.add(indices, (np.arange(n * c) * (h * w))[:, None], out=flat)
        dx_planes.reshape(-1)[flat.reshape(-1)] = planes.reshape(-1)
    else:  # windows that overlap (or unknown): an element may win several times, and sums
        flat = (indices + (np.arange(n * c) * (h * w))[:, None]).reshape(-1)
        dx_planes[...] = np.bincount(flat, weights=planes.reshape(-1), minlength=n * c * h * w).reshape(n * c, h * w)
    return _deliver(dx, out)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """Mean of each window, as torch's avg_pool2d: a sum per window tap, then the divisor."""
    x, g, divisor = operands.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                        divisor_override, _F32)
    y, out = _target(out, g["y_shape"], x)
    planes = _padded("pool_input", x, operands.pool_padding(g), 0.0)
    y.fill(0)
    for _, _, _, row, col in _taps(*g["kernel"]):
        y += _tap_view(planes, row, col, g)
    y /= operands.avg_divisor(g, count_include_pad, divisor).astype(_F32)
    return _deliver(y, out)


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None, *, out=None):
    """Gradient of avg_pool2d: dy / divisor spread over each window (overlaps add)."""
    dy, g, divisor = operands.avg_pool2d_backward(dy, x_shape, kernel_size, stride, padding, ceil_mode,
                                                  count_include_pad, divisor_override, _F32)
    ((top, bottom), (left, right)), h, w = operands.pool_padding(g), g["h"], g["w"]
    dx, out = _target(out, (g["n"], g["c"], h, w), dy)
    share = dy / operands.avg_divisor(g, count_include_pad, divisor).astype(_F32)
    planes = _scratch("pool_input_grad", (g["n"], g["c"], top + h + bottom, left + w + right))
    planes.fill(0)
    for _, _, _, row, col in _taps(*g["kernel"]):
        _tap_view(planes, row, col, g)[...] += share
    dx[...] = planes[:, :, top: top + h, left: left + w]
    return _deliver(dx, out)


__all__ = reference.__all__
