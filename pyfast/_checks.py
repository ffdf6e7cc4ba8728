"""Argument checks shared by pyfast.ops (GPU) and pyfast.reference (NumPy).

They look only at shapes, dtypes and flags, so both backends raise the same NumPy-style
errors: TypeError for a wrong type or dtype, ValueError naming the argument with the
expected and actual shape for a wrong shape.
"""

import numpy as np

MATMUL_VERSIONS = ("simple", "tiled")  # index = the kernel's version number
DEFAULT_MATMUL_VERSION = "tiled"
ACTIVATIONS = {None: 0, "relu": 1}
INT32_MAX = 2**31 - 1


def expect_float32(name, dtype):
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"{name}: expected dtype float32, got {np.dtype(dtype)}; convert with {name}.astype('float32')")


def expect_shape(name, shape, expected):
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(shape)}")


def expect_ndim(name, shape, ndim, what=""):
    if len(shape) != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array{what}, got shape {tuple(shape)}")


def expect_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")


def matmul_dims(a_shape, b_shape, trans_a, trans_b):
    """(M, N, K) of op(a) @ op(b); raises for ranks or inner sizes that do not match."""
    expect_bool("trans_a", trans_a)
    expect_bool("trans_b", trans_b)
    expect_ndim("a", a_shape, 2, " (a matrix)")
    expect_ndim("b", b_shape, 2, " (a matrix)")
    m, k = (a_shape[1], a_shape[0]) if trans_a else tuple(a_shape)
    k_b, n = (b_shape[1], b_shape[0]) if trans_b else tuple(b_shape)
    if k != k_b:
        raise ValueError(
            f"matmul: inner dimensions differ: op(a) is {m}x{k} (a.shape={tuple(a_shape)}, trans_a={trans_a}) "
            f"but op(b) is {k_b}x{n} (b.shape={tuple(b_shape)}, trans_b={trans_b})"
        )
    for dim_name, dim in (("M", m), ("N", n), ("K", k)):
        if dim > INT32_MAX:
            raise ValueError(f"matmul: {dim_name}={dim} exceeds the kernels' limit of 2^31-1 per dimension")
    return m, n, k


def activation_code(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {list(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def matmul_version_code(version):
    if version is None:
        version = DEFAULT_MATMUL_VERSION
    if version not in MATMUL_VERSIONS:
        raise ValueError(f"version: expected one of {list(MATMUL_VERSIONS)} or None, got {version!r}")
    return MATMUL_VERSIONS.index(version)


def channel_view(name, shape):
    """(outer, channels, inner) of an (N, C) matrix or an (N, C, *spatial) image batch."""
    if len(shape) < 2:
        raise ValueError(f"{name}: expected at least 2 dimensions (N, C, ...), got shape {tuple(shape)}")
    inner = 1
    for dim in shape[2:]:
        inner *= dim
    return shape[0], shape[1], inner


# ------------------------------------------------------------------ losses
REDUCTIONS = ("mean", "sum")
LABEL_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def reduction_scales(reduction, count):
    """(loss scale, gradient scale) of a summed loss over `count` terms. The mean of nothing
    is NaN, as in NumPy and PyTorch."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(REDUCTIONS)}, got {reduction!r}")
    if reduction == "sum":
        return 1.0, 1.0
    return (1.0 / count, 1.0 / count) if count else (float("nan"), float("nan"))


def expect_labels(name, dtype):
    if np.dtype(dtype) not in LABEL_DTYPES:
        raise TypeError(f"{name}: expected dtype int32 or int64, got {np.dtype(dtype)}")


def classifier_dims(logits_shape, labels_shape=None):
    """(rows, classes) of (N, C) logits, with (N,) labels when given."""
    expect_ndim("logits", logits_shape, 2, " (N, C)")
    rows, classes = logits_shape
    if classes < 1:
        raise ValueError(f"logits: expected at least one class, got shape {tuple(logits_shape)}")
    if labels_shape is not None:
        expect_shape("labels", labels_shape, (rows,))
    return rows, classes


def invalid_labels_error(count, classes):
    return ValueError(f"labels: {count} label(s) outside [0, {classes}) (the number of classes)")


# --------------------------------------------------------------- optimizers
def expect_nonnegative(name, value):
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name}: expected a value >= 0, got {value!r}")


def sgd_hyperparameters(lr, momentum, weight_decay, nesterov):
    expect_nonnegative("lr", lr)
    expect_nonnegative("momentum", momentum)
    expect_nonnegative("weight_decay", weight_decay)
    expect_bool("nesterov", nesterov)
    if nesterov and momentum == 0:
        raise ValueError("nesterov: Nesterov momentum needs momentum > 0")


def adam_hyperparameters(step, lr, betas, eps, weight_decay, decoupled):
    """(beta1, beta2, step size, sqrt of the second bias correction), as PyTorch's Adam."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step: expected an int >= 1 (the update's 1-based count), got {step!r}")
    expect_nonnegative("lr", lr)
    expect_nonnegative("eps", eps)
    expect_nonnegative("weight_decay", weight_decay)
    expect_bool("decoupled", decoupled)
    try:
        beta1, beta2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise ValueError(f"betas: expected a pair of floats, got {betas!r}") from None
    for name, beta in (("betas[0]", beta1), ("betas[1]", beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name}: expected a value in [0, 1), got {beta!r}")
    step_size = lr / (1.0 - beta1**step)
    return beta1, beta2, step_size, float(np.sqrt(1.0 - beta2**step))


def param_lists(**lists):
    """Checks parallel lists of tensors (None entries skipped); returns their common length."""
    length = None
    for name, values in lists.items():
        if values is None:
            continue
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"{name}: expected a list of arrays, got {type(values).__name__}")
        if length is None:
            length = len(values)
        elif len(values) != length:
            raise ValueError(f"{name}: expected {length} arrays (one per parameter), got {len(values)}")
    return length or 0
