"""CPU tests of pyfast.reference: the oracle itself, checked against explicit loops and
finite differences (so the GPU tests compare against something known to be right)."""

import inspect
import itertools

import numpy as np
import pytest

from conftest import numeric_gradient, randn
from pyfast import ops, reference
from pyfast.testing import assert_close


def loop_matmul(a, b, trans_a, trans_b, bias, activation):
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    m, k = a.shape
    n = b.shape[1]
    c = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            c[i, j] = sum(float(a[i, t]) * float(b[t, j]) for t in range(k))
            if bias is not None:
                c[i, j] += bias[j]
            if activation == "relu" and c[i, j] < 0:
                c[i, j] = 0.0
    return c


@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("with_bias,activation", [(False, None), (True, None), (True, "relu")])
def test_matmul_matches_loops(rng, trans_a, trans_b, with_bias, activation):
    m, n, k = 5, 3, 7
    a = randn(rng, *((k, m) if trans_a else (m, k)))
    b = randn(rng, *((n, k) if trans_b else (k, n)))
    bias = randn(rng, n) if with_bias else None
    got = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, activation=activation)
    assert got.dtype == np.float32 and got.shape == (m, n)
    assert_close(got, loop_matmul(a, b, trans_a, trans_b, bias, activation), atol=1e-6)


def test_matmul_k_zero_gives_bias_or_zeros(rng):
    a, b = np.zeros((4, 0), np.float32), np.zeros((0, 3), np.float32)
    assert_close(reference.matmul(a, b), np.zeros((4, 3)), atol=0)
    bias = np.array([1.0, -2.0, 3.0], np.float32)
    assert_close(reference.matmul(a, b, bias=bias, activation="relu"), np.tile([1.0, 0.0, 3.0], (4, 1)), atol=0)


def test_linear_layer_gradients_by_finite_differences(rng):
    """y = relu(x @ w + b): the documented gradient formulas, in terms of the ops themselves."""
    while True:  # draw until no pre-activation is within the step h of ReLU's kink
        x, w, b = randn(rng, 4, 6), randn(rng, 6, 3), randn(rng, 3)
        if np.min(np.abs(reference.matmul(x, w, bias=b))) > 5e-2:
            break
    dy = randn(rng, 4, 3)

    def loss():
        return float(np.sum(reference.matmul(x, w, bias=b, activation="relu").astype(np.float64) * dy))

    y = reference.matmul(x, w, bias=b, activation="relu")
    dz = reference.relu_backward(dy, y)
    dx = reference.matmul(dz, w, trans_b=True)
    dw = reference.matmul(x, dz, trans_a=True)
    db = reference.bias_grad(dz)
    assert_close(dx, numeric_gradient(loss, x), atol=2e-3, rtol=2e-3, name="dx")
    assert_close(dw, numeric_gradient(loss, w), atol=2e-3, rtol=2e-3, name="dw")
    assert_close(db, numeric_gradient(loss, b), atol=2e-3, rtol=2e-3, name="db")


def test_transposed_operands_gradients(rng):
    """C = a^T @ b^T: gradients of the stored a and b expressed with the trans flags."""
    a, b, dc = randn(rng, 5, 4), randn(rng, 3, 5), randn(rng, 4, 3)

    def loss():
        return float(np.sum(reference.matmul(a, b, trans_a=True, trans_b=True).astype(np.float64) * dc))

    # dC/d(a^T) = dc @ b, so da = (dc @ b)^T = b^T @ dc^T; likewise db = dc^T @ a^T.
    da = reference.matmul(b, dc, trans_a=True, trans_b=True)
    db = reference.matmul(dc, a, trans_a=True, trans_b=True)
    assert_close(da, numeric_gradient(loss, a), atol=2e-3, rtol=2e-3, name="da")
    assert_close(db, numeric_gradient(loss, b), atol=2e-3, rtol=2e-3, name="db")


def test_conv_style_bias_gradient_by_finite_differences(rng):
    x, bias, dy = randn(rng, 2, 3, 4, 5), randn(rng, 3), randn(rng, 2, 3, 4, 5)

    def loss():
        return float(np.sum(reference.add_bias(x, bias).astype(np.float64) * dy))

    assert_close(reference.bias_grad(dy), numeric_gradient(loss, bias), atol=2e-3, rtol=2e-3)


def test_relu_backward_by_finite_differences(rng):
    x = randn(rng, 3, 7)
    x[np.abs(x) < 0.05] = 0.5  # keep central differences off the kink
    dy = randn(rng, 3, 7)

    def loss():
        return float(np.sum(reference.relu(x).astype(np.float64) * dy))

    assert_close(reference.relu_backward(dy, reference.relu(x)), numeric_gradient(loss, x), atol=2e-3, rtol=2e-3)


def test_relu_special_values():
    x = np.array([np.nan, -np.inf, np.inf, -1.0, -0.0, 0.0, 2.5], np.float32)
    got = reference.relu(x)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], [0.0, np.inf, 0.0, 0.0, 0.0, 2.5])
    dy = np.arange(1, 8, dtype=np.float32)
    # torch's threshold_backward rule: zero where y <= 0, so NaN outputs pass the gradient.
    np.testing.assert_array_equal(reference.relu_backward(dy, got), [1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 7.0])


def test_add_bias_and_bias_grad_layouts(rng):
    x2, b2 = randn(rng, 5, 3), randn(rng, 3)
    assert_close(reference.add_bias(x2, b2), x2.astype(np.float64) + b2, atol=1e-6)
    x4, b4 = randn(rng, 2, 3, 4, 5), randn(rng, 3)
    expected = x4.astype(np.float64) + b4[None, :, None, None]
    assert_close(reference.add_bias(x4, b4), expected, atol=1e-6)
    assert_close(reference.bias_grad(x4), x4.astype(np.float64).sum(axis=(0, 2, 3)), atol=1e-5)
    assert_close(reference.bias_grad(x2), x2.astype(np.float64).sum(axis=0), atol=1e-6)
    assert_close(reference.bias_grad(np.zeros((0, 4), np.float32)), np.zeros(4), atol=0)


def test_out_is_written_and_returned(rng):
    a, b = randn(rng, 3, 4), randn(rng, 4, 2)
    out = np.full((3, 2), np.nan, np.float32)
    assert reference.matmul(a, b, out=out) is out
    assert_close(out, a.astype(np.float64) @ b, atol=1e-5)
    x = randn(rng, 6)
    assert reference.relu(x, out=x) is x  # in place
    assert (x >= 0).all()


@pytest.mark.parametrize("name", reference.__all__)
def test_backends_share_names_and_signatures(name):
    assert inspect.signature(getattr(ops, name)) == inspect.signature(getattr(reference, name))


def test_results_are_c_contiguous_like_the_gpu_ops(rng):
    # conv2d's result comes out of a transpose: it is still returned in C order.
    y = reference.conv2d(randn(rng, 2, 3, 6, 6), randn(rng, 4, 3, 3, 3), padding=1)
    assert y.flags.c_contiguous and y.dtype == np.float32
    assert reference.matmul(randn(rng, 3, 4), randn(rng, 5, 4), trans_b=True).flags.c_contiguous
