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


# Keep the two backends in step: every public op of one exists in the other.
__all__ = ["matmul", "relu", "relu_backward", "add_bias", "bias_grad"]
