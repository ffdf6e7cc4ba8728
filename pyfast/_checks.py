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
