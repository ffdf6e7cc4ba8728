"""NumPy twins of every op in pyfast.ops: same names, same signatures, same argument checks.

Inputs are float32 NumPy arrays, C-contiguous as pyfast.ops wants them (matmul also reads
transposed views); the math runs in float64 and the result is rounded once to float32 (written
into ``out=`` when given). This is the oracle the GPU kernels and pyfast.cpu (the trainer's
float32 CPU backend) are tested against. The argument checks are pyfast._numpy_operands.
"""

import numpy as np

from pyfast import _groups
from pyfast import _numpy_operands as operands
from pyfast._numpy_operands import round_bf16, round_tf32, window_origin  # noqa: F401  (public: round_*)


_F64 = np.float64
_finish = operands.finish


def _relu(x):
    return np.where(x < 0, 0.0, x)  # keeps NaN, as the kernels and torch.relu do


# ------------------------------------------------------------------------------- matmul
def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, activation=None, out=None, version=None,
           precision=None, plan=None):
    """op(a) @ op(b) (+ bias) (then ReLU). With precision "tf32" / "bf16" the operands are
    rounded to that format first (what the tensor-core kernel multiplies), then multiplied in
    float64. ``version`` and ``plan`` are checked and otherwise ignored (one NumPy product)."""
    a64, b64, bias64, m, n, relu = operands.matmul(a, b, trans_a, trans_b, bias, activation, version, precision, plan,
                                                   _F64)
    c = (a64.T if trans_a else a64) @ (b64.T if trans_b else b64)
    if bias64 is not None:
        c = c + bias64
    if relu:
        c = _relu(c)
    return _finish(c.reshape(m, n), out)


# ------------------------------------------------------------------------ element-wise
def gather_batch(x, index, shifts=None, *, out=None):
    """out[b] = x[index[b]], each image shifted by shifts[b] = (rows, columns) with zeros
    filling in (the last two axes; shifts int32 (B, 2) or None); an index outside [0, N) gives
    zeros. The trainer's batches from a data set kept on the device."""
    x64, rows = operands.gather_batch(x, index, shifts, _F64)
    result = np.zeros((len(index), *x64.shape[1:]))
    for b in range(len(index)):
        source = int(index[b])
        if not 0 <= source < rows:
            continue
        if shifts is None:
            result[b] = x64[source]
        else:
            shift_image_into(result[b], x64[source], *shifts[b])
    return _finish(result, out)


def shift_image_into(dst, src, dy, dx):
    """dst[..., i, j] = src[..., i - dy, j - dx] where that lies inside the image (the last two
    axes); the rest of dst is left as it is (zeros, for the callers)."""
    h, w = src.shape[-2:]
    dy, dx = int(dy), int(dx)
    # Source rows / columns that stay in the frame (none when the shift is the image's size or more).
    top, bottom, left, right = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
    if top < bottom and left < right:
        dst[..., top + dy: bottom + dy, left + dx: right + dx] = src[..., top:bottom, left:right]


def relu(input, inplace=False, *, out=None):
    x64, out = operands.relu(input, inplace, out, _F64)
    return _finish(_relu(x64), out)


def relu_backward(dy, y, *, out=None):
    dy64, y64 = operands.relu_backward(dy, y, _F64)
    return _finish(np.where(y64 <= 0, 0.0, dy64), out)


def add_bias(x, bias, *, out=None):
    x64, bias64 = operands.add_bias(x, bias, _F64)
    return _finish(x64 + bias64, out)


def bias_grad(dy, *, out=None):
    dy64 = operands.bias_grad(dy, _F64)
    return _finish(dy64.sum(axis=(0,) + tuple(range(2, dy64.ndim))), out)


# ------------------------------------------------------------------------------ losses
def _scalar(value):
    return np.array(value, dtype=np.float32)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None, *, out_grad=None):
    """(loss, dloss/dinput): loss = mean (or sum) of (input - target)^2, a 0-d float32 array,
    with torch.nn.functional.mse_loss's arguments (``weight`` None only)."""
    p64, t64, loss_scale, grad_scale, per_element = operands.mse_loss(input, target, size_average, reduce,
                                                                      reduction, weight, _F64)
    d = p64 - t64
    loss = _finish(d * d, None) if per_element else _scalar(np.sum(d * d) * loss_scale)
    return loss, _finish(2.0 * grad_scale * d, out_grad)


def _log_softmax64(x, axis=1):
    if x.size == 0:
        return x.copy()
    row_max = x.max(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = x - row_max
        return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax_cross_entropy(logits, labels, *, reduction="mean", out_grad=None, validate=True):
    """(loss, dloss/dlogits) of softmax cross-entropy over (N, C) logits and (N,) class
    indices. Labels outside [0, C) always raise ValueError here (``validate`` matters on the GPU)."""
    x, y, loss_scale, grad_scale = operands.softmax_cross_entropy(logits, labels, reduction, validate, _F64)
    rows = len(x)
    log_p = _log_softmax64(x)
    picked = log_p[np.arange(rows), y]
    loss = -picked.sum() * loss_scale  # the mean of no rows is NaN (0 * NaN)
    grad = np.exp(log_p)
    grad[np.arange(rows), y] -= 1.0
    return _scalar(loss), _finish(grad * grad_scale, out_grad)


def cross_entropy_values(x, target, weight, ignore_index, reduction, label_smoothing, probabilities):
    """(loss, grad) of cross_entropy in the precision of x (float64 here, float32 in pyfast.cpu):
    the formulas of kernels/loss/loss.cuh's CrossEntropyParams, written once for both. (N, C,
    d1, ...) input is taken as (N * d1 * ..., C) rows with the classes moved last."""
    if x.ndim > 2:
        def rows_of(a):
            return np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
        loss, grad = cross_entropy_values(rows_of(x), rows_of(target) if probabilities else target.reshape(-1),
                                          weight, ignore_index, reduction, label_smoothing, probabilities)
        moved = (x.shape[0], *x.shape[2:], x.shape[1])
        grad = np.moveaxis(grad.reshape(moved), -1, 1)
        return (loss.reshape(target.shape if not probabilities else moved[:-1]) if reduction == "none" else loss), grad
    rows, classes = x.shape
    w = np.ones(classes, x.dtype) if weight is None else weight.astype(x.dtype, copy=False)
    eps = x.dtype.type(label_smoothing)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_p = _log_softmax64(x)
        p = np.exp(log_p)
        if probabilities:
            t = w * ((1 - eps) * target + eps / classes)
            losses = -(t * log_p).sum(axis=1)
            grad = p * t.sum(axis=1, keepdims=True) - t
            divisor = x.dtype.type(rows)
        else:
            ignored = target == ignore_index
            y = np.where(ignored, 0, target)
            w_y = np.where(ignored, 0, w[y]).astype(x.dtype)
            onehot = np.zeros_like(x)
            onehot[np.arange(rows), y] = 1
            nll = -w_y * log_p[np.arange(rows), y]
            smooth = np.where(ignored, 0, -(w * log_p).sum(axis=1))
            losses = (1 - eps) * nll + eps / classes * smooth
            grad = (1 - eps) * w_y[:, None] * (p - onehot) + eps / classes * (p * w.sum() - w)
            grad[ignored] = 0
            divisor = w_y.sum()
        if reduction == "none":
            return losses.astype(x.dtype), grad
        scale = 1 / divisor if reduction == "mean" else x.dtype.type(1)  # all rows ignored: NaN loss
        grad = grad * scale if reduction == "sum" or divisor != 0 else grad * 0  # PyTorch's zero gradient
        return np.asarray(losses.sum() * scale, x.dtype), grad


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0, *, out_grad=None, validate=True):
    """(loss, grad) of torch.nn.functional.cross_entropy (same arguments) over (N, C) or
    (N, C, d1, ...) logits: class indices (``ignore_index`` positions skipped) or probabilities,
    ``weight``, ``label_smoothing``, ``reduction`` ("none": the (N, d1, ...) losses and the
    gradient of their sum). Labels neither in [0, C) nor ignore_index raise ValueError here."""
    x64, target, weight, ignore_index, reduction, smoothing, probabilities = operands.cross_entropy(
        input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing, validate, _F64)
    if probabilities:
        target = target.astype(np.float64)
    loss, grad = cross_entropy_values(x64, target, None if weight is None else weight.astype(np.float64),
                                      ignore_index, reduction, smoothing, probabilities)
    return loss.astype(np.float32), _finish(grad, out_grad)


def softmax(input, dim=None, dtype=None, *, out=None):
    """Softmax along ``dim`` (None: PyTorch's implicit axis), as torch.nn.functional.softmax."""
    return _finish(np.exp(_log_softmax64(*operands.softmax(input, dim, dtype, _F64))), out)


def log_softmax(input, dim=None, dtype=None, *, out=None):
    return _finish(_log_softmax64(*operands.softmax(input, dim, dtype, _F64)), out)


def softmax_backward_values(dy, y, axis, log):
    """dx of softmax (log_softmax when `log`) along `axis` from dy and the forward's output y
    (the arrays' own precision): y (dy - sum(dy y)), or dy - exp(y) sum(dy)."""
    if log:
        return dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def softmax_backward(dy, y, dim=None, *, out=None):
    """dL/dinput of softmax along ``dim`` from ``dy`` and the forward's output ``y``."""
    dy, y, axis = operands.softmax_backward(dy, y, dim, _F64)
    return _finish(softmax_backward_values(dy, y, axis, False), out)


def log_softmax_backward(dy, y, dim=None, *, out=None):
    """dL/dinput of log_softmax along ``dim`` from ``dy`` and the forward's output ``y``."""
    dy, y, axis = operands.softmax_backward(dy, y, dim, _F64)
    return _finish(softmax_backward_values(dy, y, axis, True), out)


def accuracy(logits, labels):
    """Number of rows whose first maximal logit is at the label (NaN counting as -inf), as a
    0-d int64 array."""
    x, labels = operands.accuracy(logits, labels, _F64)
    predicted = np.argmax(np.where(np.isnan(x), -np.inf, x), axis=1)
    return np.array(np.count_nonzero(predicted == labels), dtype=np.int64)


# -------------------------------------------------------------------------- optimizers
def sgd_step(params, grads, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False, velocity=None):
    """In-place SGD as torch.optim.SGD (dampening 0); ``velocity`` (zeros at the first step)
    is needed when momentum > 0 and is updated in place."""
    operands.sgd_step(params, grads, lr, momentum, weight_decay, nesterov, velocity)
    for i, (p, g) in enumerate(zip(params, grads)):
        p64, d = p.astype(np.float64), g.astype(np.float64)
        if weight_decay:
            d = d + weight_decay * p64
        if momentum:
            buf = velocity[i]
            b = momentum * buf.astype(np.float64) + d
            buf[...] = b
            d = d + momentum * b if nesterov else b
        p[...] = p64 - lr * d


def linear_mse_sgd_fit(x, y, weight, bias, *, lr, epochs, out_losses=None):
    """The fused linear-regression run of pyfast.ops: ``epochs`` full-batch SGD steps on the
    mean squared error, in float64 throughout; ``weight`` and ``bias`` (float32) are updated
    in place at the end; returns the loss before each step."""
    x64, y64, n, o = operands.linear_mse_sgd_fit(x, y, weight, bias, lr, epochs, _F64)
    w, b = weight.astype(np.float64), bias.astype(np.float64)
    losses = np.empty(epochs)
    for epoch in range(epochs):
        residual = x64 @ w.T + b - y64
        losses[epoch] = np.mean(residual**2)
        d = residual * (2.0 / (n * o))
        w -= lr * (d.T @ x64)
        b -= lr * d.sum(axis=0)
    weight[...], bias[...] = w, b
    return _finish(losses, out_losses)


def adam_step(params, grads, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
              weight_decay=0.0, decoupled=True):
    """In-place Adam (decoupled=False) or AdamW (decoupled=True) as torch.optim.Adam / AdamW,
    with bias correction; ``step`` counts updates from 1, or is a 0-d int64 array of the
    updates done so far that this call increments first (pyfast.ops' device counter). States
    are updated in place."""
    beta1, beta2, step_size, bias_correction2_sqrt = operands.adam_step(params, grads, exp_avg, exp_avg_sq, step, lr,
                                                                        betas, eps, weight_decay, decoupled)
    for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
        p64, g64 = p.astype(np.float64), g.astype(np.float64)
        if weight_decay:
            if decoupled:
                p64 = p64 - lr * weight_decay * p64
            else:
                g64 = g64 + weight_decay * p64
        m64 = beta1 * m.astype(np.float64) + (1 - beta1) * g64
        v64 = beta2 * v.astype(np.float64) + (1 - beta2) * g64 * g64
        m[...], v[...] = m64, v64
        p[...] = p64 - step_size * m64 / (np.sqrt(v64) / bias_correction2_sqrt + eps)


# --------------------------------------------------------------- convolution and pooling
def _windows(x_padded, rows, cols, stride, step):
    """View (N, C, rows, cols, P, Q) of a padded batch: element [n, c, r, s, p, q] is
    x_padded[n, c, p * stride_h + r * step_h, q * stride_w + s * step_w] (no copy)."""
    n, c, height, width = x_padded.shape
    p = (height - step[0] * (rows - 1) - 1) // stride[0] + 1
    q = (width - step[1] * (cols - 1) - 1) // stride[1] + 1
    sn, sc, sh, sw = x_padded.strides
    return np.lib.stride_tricks.as_strided(
        x_padded, shape=(n, c, rows, cols, p, q),
        strides=(sn, sc, sh * step[0], sw * step[1], sh * stride[0], sw * stride[1]), writeable=False)


def _conv_pad(x, g):
    """x padded with zeros as convolution `g` pads it (PyTorch's "same" one more at the end)."""
    return np.pad(x, ((0, 0), (0, 0), *operands.conv_padding(g)))


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, out=None,
           version=None, config=None):
    """2D cross-correlation, NCHW x OIHW -> NCHW, as torch.nn.functional.conv2d:
    y[n,k,p,q] = sum_{c,r,s} x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k,c,r,s] (+ bias[k]),
    then max(y, 0) with ``activation="relu"`` (NaN kept); with ``groups`` one such convolution
    per group of channels. ``version`` and ``config`` are checked as on the GPU and otherwise
    ignored here."""
    x64, w64, bias64, g, relu = operands.conv2d(input, weight, bias, stride, padding, dilation, groups, activation,
                                                version, config, _F64)
    if g["groups"] > 1:
        y = np.empty(g["y_shape"], np.float32)
        _groups.forward(conv2d, np, input, weight, bias, g["groups"], y, stride=stride, padding=padding,
                        dilation=dilation, activation=activation)
        return _finish(y, out)
    patches = _windows(_conv_pad(x64, g), g["r"], g["s"], g["stride"], g["dilation"])
    y = np.tensordot(w64, patches, axes=([1, 2, 3], [1, 2, 3]))  # (K, N, P, Q)
    y = y.transpose(1, 0, 2, 3)
    if bias64 is not None:
        y = y + bias64[None, :, None, None]
    return _finish(_relu(y) if relu else y, out)


def conv2d_max_pool2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
                      out=None, out_indices=None, version=None, config=None):
    """(y, indices) = max_pool2d(conv2d(input, weight, bias, ..., activation=...), 2,
    return_indices=True): the convolution (rounded to float32, as the GPU's) and the 2x2
    stride-2 max-pool of its output."""
    operands.conv2d_max_pool2d(input, weight, bias, stride, padding, dilation, groups, activation, version, config,
                               _F64)
    conv = conv2d(input, weight, bias, stride, padding, dilation, groups)
    return max_pool2d(conv, 2, activation=activation, return_indices=True, out=out, out_indices=out_indices)


def conv2d_backward_input(dy, w, x_shape, *, stride=1, padding=0, dilation=1, groups=1, out=None, version=None,
                          config=None):
    """Gradient of conv2d with respect to x: dx[n,c,i,j] = sum over (k, r, s) hitting (i, j)."""
    dy64, w64, g = operands.conv2d_backward_input(dy, w, x_shape, stride, padding, dilation, groups, version, config,
                                                  _F64)
    if g["groups"] > 1:
        dx = np.empty((g["n"], g["c"], g["h"], g["w"]), np.float32)
        _groups.backward_input(conv2d_backward_input, np, dy, w, dx.shape, g["groups"], dx, stride=stride,
                               padding=padding, dilation=dilation)
        return _finish(dx, out)
    (sh, sw), (ph, pw), (dh, dw) = g["stride"], g["padding"], g["dilation"]
    # Every tap's contribution in one product, (N, P, Q, C, R, S); then each tap's slice is
    # added where it lands in the padded input.
    taps = np.tensordot(dy64, w64, axes=([1], [0]))
    ((_, bottom), (_, right)) = operands.conv_padding(g)
    dx = np.zeros((g["n"], g["c"], ph + g["h"] + bottom, pw + g["w"] + right))
    for r in range(g["r"]):
        for s in range(g["s"]):
            dx[:, :, r * dh: r * dh + sh * (g["p"] - 1) + 1: sh, s * dw: s * dw + sw * (g["q"] - 1) + 1: sw] += \
                taps[:, :, :, :, r, s].transpose(0, 3, 1, 2)
    return _finish(dx[:, :, ph: ph + g["h"], pw: pw + g["w"]], out)


def conv2d_backward_weight(dy, x, w_shape, *, stride=1, padding=0, dilation=1, groups=1, bias=False, out=None,
                           out_bias=None, version=None, config=None):
    """Gradient of conv2d with respect to w: dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[window];
    with ``bias=True`` also the bias gradient (dy summed over N, P, Q), as ``(dw, db)``."""
    dy64, x64, g = operands.conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups, bias, out_bias,
                                                   version, config, _F64)
    if g["groups"] > 1:
        dw = np.empty(tuple(w_shape), np.float32)
        db = np.empty(g["k"], np.float32) if bias else None
        _groups.backward_weight(conv2d_backward_weight, np, dy, x, dw.shape, g["groups"], dw, db, stride=stride,
                                padding=padding, dilation=dilation)
        return _finish(dw, out) if not bias else (_finish(dw, out), _finish(db, out_bias))
    patches = _windows(_conv_pad(x64, g), g["r"], g["s"], g["stride"], g["dilation"])
    dw = _finish(np.tensordot(dy64, patches, axes=([0, 2, 3], [0, 4, 5])), out)
    if not bias:
        return dw
    return dw, _finish(dy64.sum(axis=(0, 2, 3)), out_bias)


def _pool_windows(x64, g, pad_value):
    """(N, C, P, Q, kh * kw) windows (taps `dilation` apart) of the padded input; ceil_mode's
    windows past the padded input see `pad_value` there too."""
    (top, bottom), (left, right) = operands.pool_padding(g)
    padded = np.pad(x64, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    windows = _windows(padded, *g["kernel"], g["stride"], g["dilation"])[..., :g["p"], :g["q"]]
    n, c, kh, kw, p, q = windows.shape
    return windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, c, p, q, kh * kw)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               bias=None, activation=None, out=None, out_indices=None):
    """The maximum of each window (padding counts as -inf), as torch's max_pool2d (same
    arguments); with ``return_indices=True`` ``(y, indices)``, each winner's flat index
    h * W + w in the input plane. A NaN in a window wins (the last NaN, as PyTorch's scan
    does); ties go to the first maximum. With ``bias`` and / or ``activation="relu"`` the
    pooled values are relu(input + bias[c]), the sum rounded to float32 as the kernel rounds it
    (so ties and winners match)."""
    x64, bias64, g, relu = operands.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode,
                                               return_indices, bias, activation, out_indices, _F64)
    if bias64 is not None:
        x64 = (x64 + bias64[None, :, None, None]).astype(np.float32).astype(np.float64)
    if relu:
        x64 = _relu(x64)
    windows = _pool_windows(x64, g, -np.inf)
    real = _pool_windows(np.ones((1, 1, g["h"], g["w"])), g, 0.0) > 0  # False at padded positions
    real = np.broadcast_to(real, windows.shape)
    nan = np.isnan(windows)
    last_nan = windows.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    first_max = np.argmax(np.where(nan, -np.inf, windows), axis=-1)
    # A window of nothing but -inf keeps its first real element, as PyTorch's scan does.
    first_max = np.where(np.take_along_axis(real, first_max[..., None], axis=-1)[..., 0], first_max,
                         np.argmax(real, axis=-1))
    choice = np.where(nan.any(axis=-1), last_nan, first_max)
    y = np.take_along_axis(windows, choice[..., None], axis=-1)[..., 0]
    if not return_indices:
        return _finish(y, out)
    kh, kw = g["kernel"]
    (dh, dw), (row0, col0) = g["dilation"], window_origin(g)
    rows = row0 + choice // kw * dh - g["padding"][0]
    cols = col0 + choice % kw * dw - g["padding"][1]
    indices = (rows * g["w"] + cols).astype(np.int64)
    if operands.indices_output(out_indices, indices.shape) is not None:
        out_indices[...] = indices
        indices = out_indices
    return _finish(y, out), indices


def max_pool2d_backward(dy, indices, x_shape, kernel_size=None, stride=None, padding=0, dilation=1, ceil_mode=False,
                        *, relu_output=None, out=None):
    """Gradient of max_pool2d: each dy added at its window's argmax (overlapping windows add).
    With the window given, each index must lie inside its own window, and ``relu_output`` (the
    pooled y of a ReLU's output) zeroes the windows whose maximum is <= 0 (the ReLU's backward)."""
    dy64, indices, relu64, (n, c, h, w), _ = operands.max_pool2d_backward(dy, indices, x_shape, kernel_size, stride,
                                                                          padding, dilation, ceil_mode, relu_output,
                                                                          _F64)
    if relu64 is not None:
        dy64 = np.where(relu64 <= 0, 0.0, dy64)  # NaN passes, as in relu_backward
    dx = np.zeros((n * c, h * w))
    planes = np.repeat(np.arange(n * c), dy64[0, 0].size if dy64.size else 0)
    np.add.at(dx, (planes, indices.reshape(-1)), dy64.reshape(-1))
    return _finish(dx.reshape(n, c, h, w), out)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
    """Mean of each window, as torch's avg_pool2d (same arguments): padding counts as zeros, and
    in the divisor unless count_include_pad=False (never the part of a ceil_mode window past the
    padded input); divisor_override divides every window by that number instead."""
    x64, g, divisor = operands.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                          divisor_override, _F64)
    return _finish(_pool_windows(x64, g, 0.0).sum(axis=-1) / operands.avg_divisor(g, count_include_pad, divisor), out)


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None, *, out=None):
    """Gradient of avg_pool2d: dy / divisor spread over each window (overlaps add)."""
    dy64, g, divisor = operands.avg_pool2d_backward(dy, x_shape, kernel_size, stride, padding, ceil_mode,
                                                    count_include_pad, divisor_override, _F64)
    (kh, kw), (sh, sw) = g["kernel"], g["stride"]
    (top, bottom), (left, right) = operands.pool_padding(g)
    share = dy64 / operands.avg_divisor(g, count_include_pad, divisor)
    dx = np.zeros((g["n"], g["c"], top + g["h"] + bottom, left + g["w"] + right))
    for r in range(kh):
        for s in range(kw):
            dx[:, :, r: r + sh * (g["p"] - 1) + 1: sh, s: s + sw * (g["q"] - 1) + 1: sw] += share
    return _finish(dx[:, :, top: top + g["h"], left: left + g["w"]], out)


# Keep the two backends in step: every public op of one exists in the other.
__all__ = ["linear_mse_sgd_fit", "gather_batch", "matmul", "relu", "relu_backward", "add_bias", "bias_grad", "mse_loss",
           "softmax_cross_entropy", "cross_entropy",
           "softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "accuracy", "sgd_step", "adam_step",
           "conv2d", "conv2d_backward_input",
           "conv2d_backward_weight", "conv2d_max_pool2d", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
           "avg_pool2d_backward"]
