"""NumPy twins of every op in pyfast.ops: same names, same signatures, same argument checks.

Inputs are float32 NumPy arrays; the math runs in float64 and the result is rounded once to
float32 (written into ``out=`` when given). This is the oracle the GPU kernels are tested
against and the CPU backend of the trainer. Any strides are accepted here.
"""

import numpy as np

from pyfast import _checks


def _input(name, x, *, optional=False):
    if x is None and optional:
        return None
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__module__}.{type(x).__name__}")
    _checks.expect_float32(name, x.dtype)
    return x.astype(np.float64)


def _finish(result, out):
    """Rounds the float64 result to float32, into `out` when given."""
    if out is None:
        return result.astype(np.float32)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a NumPy array, got {type(out).__module__}.{type(out).__name__}")
    _checks.expect_float32("out", out.dtype)
    _checks.expect_shape("out", out.shape, result.shape)
    out[...] = result
    return out


def _relu(x):
    return np.where(x < 0, 0.0, x)  # keeps NaN, as the kernels and torch.relu do


# ------------------------------------------------------------------------------- matmul
def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, activation=None, out=None, version=None):
    """op(a) @ op(b) (+ bias) (then ReLU). ``version`` is checked and otherwise ignored
    (there is one NumPy implementation)."""
    a64, b64 = _input("a", a), _input("b", b)
    bias64 = _input("bias", bias, optional=True)
    m, n, _ = _checks.matmul_dims(a64.shape, b64.shape, trans_a, trans_b)
    if bias64 is not None:
        _checks.expect_shape("bias", bias64.shape, (n,))
    activation_code = _checks.activation_code(activation)
    _checks.matmul_version_code(version)
    c = (a64.T if trans_a else a64) @ (b64.T if trans_b else b64)
    if bias64 is not None:
        c = c + bias64
    if activation_code == _checks.ACTIVATIONS["relu"]:
        c = _relu(c)
    return _finish(c.reshape(m, n), out)


# ------------------------------------------------------------------------ element-wise
def relu(x, *, out=None):
    return _finish(_relu(_input("x", x)), out)


def relu_backward(dy, y, *, out=None):
    dy64, y64 = _input("dy", dy), _input("y", y)
    _checks.expect_shape("y", y64.shape, dy64.shape)
    return _finish(np.where(y64 <= 0, 0.0, dy64), out)


def add_bias(x, bias, *, out=None):
    x64, bias64 = _input("x", x), _input("bias", bias)
    _, channels, _ = _checks.channel_view("x", x64.shape)
    _checks.expect_shape("bias", bias64.shape, (channels,))
    return _finish(x64 + bias64.reshape((channels,) + (1,) * (x64.ndim - 2)), out)


def bias_grad(dy, *, out=None):
    dy64 = _input("dy", dy)
    _checks.channel_view("dy", dy64.shape)
    return _finish(dy64.sum(axis=(0,) + tuple(range(2, dy64.ndim))), out)


# ------------------------------------------------------------------------------ losses
def _labels(labels, rows, classes):
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels: expected a NumPy array, got {type(labels).__module__}.{type(labels).__name__}")
    _checks.expect_labels("labels", labels.dtype)
    _checks.classifier_dims((rows, classes), labels.shape)
    invalid = int(np.count_nonzero((labels < 0) | (labels >= classes)))
    if invalid:
        raise _checks.invalid_labels_error(invalid, classes)
    return labels.astype(np.int64)


def _scalar(value):
    return np.array(value, dtype=np.float32)


def mse_loss(pred, target, *, reduction="mean", out_grad=None):
    """(loss, dloss/dpred): loss = mean (or sum) of (pred - target)^2, a 0-d float32 array."""
    p64, t64 = _input("pred", pred), _input("target", target)
    _checks.expect_shape("target", t64.shape, p64.shape)
    loss_scale, grad_scale = _checks.reduction_scales(reduction, p64.size)
    d = p64 - t64
    return _scalar(np.sum(d * d) * loss_scale), _finish(2.0 * grad_scale * d, out_grad)


def _log_softmax64(x):
    row_max = x.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = x - row_max
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits, labels, *, reduction="mean", out_grad=None, validate=True):
    """(loss, dloss/dlogits) of softmax cross-entropy over (N, C) logits and (N,) class
    indices. Labels outside [0, C) always raise ValueError here (``validate`` matters on the GPU)."""
    x = _input("logits", logits)
    rows, classes = _checks.classifier_dims(x.shape)
    y = _labels(labels, rows, classes)
    _checks.expect_bool("validate", validate)
    loss_scale, grad_scale = _checks.reduction_scales(reduction, rows)
    log_p = _log_softmax64(x)
    picked = log_p[np.arange(rows), y]
    loss = -picked.sum() * loss_scale  # the mean of no rows is NaN (0 * NaN)
    grad = np.exp(log_p)
    grad[np.arange(rows), y] -= 1.0
    return _scalar(loss), _finish(grad * grad_scale, out_grad)


def softmax(logits, *, out=None):
    x = _input("logits", logits)
    _checks.classifier_dims(x.shape)
    return _finish(np.exp(_log_softmax64(x)), out)


def log_softmax(logits, *, out=None):
    x = _input("logits", logits)
    _checks.classifier_dims(x.shape)
    return _finish(_log_softmax64(x), out)


def accuracy(logits, labels):
    """Number of rows whose first maximal logit is at the label (NaN counting as -inf), as a
    0-d int64 array."""
    x = _input("logits", logits)
    rows, classes = _checks.classifier_dims(x.shape)
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels: expected a NumPy array, got {type(labels).__module__}.{type(labels).__name__}")
    _checks.expect_labels("labels", labels.dtype)
    _checks.expect_shape("labels", labels.shape, (rows,))
    predicted = np.argmax(np.where(np.isnan(x), -np.inf, x), axis=1)
    return np.array(np.count_nonzero(predicted == labels), dtype=np.int64)


# -------------------------------------------------------------------------- optimizers
def _state(name, arrays, params):
    for i, (array, param) in enumerate(zip(arrays, params)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name}[{i}]: expected a NumPy array, got {type(array).__name__}")
        _checks.expect_float32(f"{name}[{i}]", array.dtype)
        _checks.expect_shape(f"{name}[{i}]", array.shape, param.shape)
    return arrays


def sgd_step(params, grads, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False, velocity=None):
    """In-place SGD as torch.optim.SGD (dampening 0); ``velocity`` (zeros at the first step)
    is needed when momentum > 0 and is updated in place."""
    _checks.param_lists(params=params, grads=grads, velocity=velocity)
    _checks.sgd_hyperparameters(lr, momentum, weight_decay, nesterov)
    if momentum and velocity is None:
        raise ValueError("velocity: momentum > 0 needs a list of buffers (zeros before the first step)")
    _state("params", params, params)
    _state("grads", grads, params)
    for i, (p, g) in enumerate(zip(params, grads)):
        p64, d = p.astype(np.float64), g.astype(np.float64)
        if weight_decay:
            d = d + weight_decay * p64
        if momentum:
            buf = _state("velocity", velocity, params)[i]
            b = momentum * buf.astype(np.float64) + d
            buf[...] = b
            d = d + momentum * b if nesterov else b
        p[...] = p64 - lr * d


def adam_step(params, grads, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
              weight_decay=0.0, decoupled=True):
    """In-place Adam (decoupled=False) or AdamW (decoupled=True) as torch.optim.Adam / AdamW,
    with bias correction; ``step`` counts updates from 1. States are updated in place."""
    _checks.param_lists(params=params, grads=grads, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    beta1, beta2, step_size, bias_correction2_sqrt = _checks.adam_hyperparameters(
        step, lr, betas, eps, weight_decay, decoupled)
    for name, arrays in (("params", params), ("grads", grads), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        _state(name, arrays, params)
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


# Keep the two backends in step: every public op of one exists in the other.
__all__ = ["matmul", "relu", "relu_backward", "add_bias", "bias_grad", "mse_loss", "softmax_cross_entropy",
           "softmax", "log_softmax", "accuracy", "sgd_step", "adam_step"]
