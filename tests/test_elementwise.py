"""GPU tests of relu, relu_backward, add_bias and bias_grad against pyfast.reference."""

import numpy as np
import pytest

from conftest import randn
from pyfast import ops, reference
from pyfast.testing import assert_close, reduction_atol

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.gpu

SHAPES = [(1,), (3,), (5, 7), (1000, 17), (97, 3, 5), (64, 32, 28, 28), (2, 3, 7, 9), (1 << 20,), ((1 << 20) + 3,)]
IMAGE_SHAPES = [(1, 1), (7, 3), (1000, 10), (65536, 10), (64, 128), (3, 1000), (1, 1, 1, 1), (3, 17, 7, 9),
                (64, 32, 28, 28), (1, 64, 2, 2), (2, 3, 1, 1), (1024, 32, 14, 14), (5, 2, 3, 4, 5)]


def poisoned(shape):
    return cupy.full(shape, np.nan, dtype=cupy.float32)


def misaligned_copy(array):
    flat = cupy.empty(array.size + 1, cupy.float32)[1:]
    flat[...] = cupy.asarray(array).ravel()
    return flat.reshape(array.shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_and_its_gradient(rng, shape):
    x, dy = randn(rng, *shape), randn(rng, *shape)
    y = ops.relu(cupy.asarray(x), out=poisoned(shape))
    assert_close(y, reference.relu(x), atol=0, rtol=0)
    dx = ops.relu_backward(cupy.asarray(dy), y, out=poisoned(shape))
    assert_close(dx, reference.relu_backward(dy, reference.relu(x)), atol=0, rtol=0)


def test_relu_special_values_and_in_place():
    values = np.array([np.nan, -np.inf, np.inf, -1.0, -0.0, 0.0, 2.5, 1e-45], np.float32)
    x = cupy.asarray(values)
    assert ops.relu(x, out=x) is x
    # Bit for bit on the host (NaN at the same place, -0.0 kept, the denormal not flushed).
    np.testing.assert_array_equal(x.get().view(np.uint32), reference.relu(values).view(np.uint32))
    dy = cupy.arange(1, 9, dtype=cupy.float32)
    expected = reference.relu_backward(np.arange(1, 9, dtype=np.float32), reference.relu(values))
    np.testing.assert_array_equal(ops.relu_backward(dy, x, out=dy).get(), expected)


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_add_bias(rng, shape):
    x, bias = randn(rng, *shape), randn(rng, shape[1])
    got = ops.add_bias(cupy.asarray(x), cupy.asarray(bias), out=poisoned(shape))
    assert_close(got, reference.add_bias(x, bias), atol=0, rtol=1e-7)


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_bias_grad(rng, shape):
    dy = randn(rng, *shape)
    got = ops.bias_grad(cupy.asarray(dy), out=poisoned(shape[1]))
    count = dy.size // shape[1]
    assert_close(got, reference.bias_grad(dy), atol=reduction_atol(count, factor=1.0))


def test_in_place_bias_and_misaligned_views(rng):
    x, bias = randn(rng, 33, 5, 3, 3), randn(rng, 5)
    expected = reference.add_bias(x, bias)
    x_gpu = misaligned_copy(x)
    assert ops.add_bias(x_gpu, misaligned_copy(bias), out=x_gpu) is x_gpu
    assert_close(x_gpu, expected, atol=0, rtol=1e-7)
    y = misaligned_copy(randn(rng, 1001))
    out = misaligned_copy(np.full(1001, np.nan, np.float32))
    ops.relu(y, out=out)
    assert_close(out, reference.relu(y.get()), atol=0, rtol=0)
    assert_close(ops.bias_grad(misaligned_copy(x)), reference.bias_grad(x), atol=reduction_atol(99))


def test_empty_inputs(rng):
    assert ops.relu(cupy.empty((0, 4), cupy.float32)).shape == (0, 4)
    assert ops.add_bias(cupy.empty((0, 4), cupy.float32), cupy.ones(4, cupy.float32)).shape == (0, 4)
    # An empty batch has a zero bias gradient, not an unwritten one.
    got = ops.bias_grad(cupy.empty((0, 4, 5, 5), cupy.float32), out=poisoned(4))
    assert_close(got, np.zeros(4), atol=0)


def test_partial_overlap_is_rejected(rng):
    x = cupy.asarray(randn(rng, 10))
    with pytest.raises(ValueError, match="out: overlaps input input"):
        ops.relu(x[1:], out=x[:-1])
    with pytest.raises(ValueError, match="out: overlaps input y"):
        y = cupy.asarray(randn(rng, 10))
        ops.relu_backward(x, y, out=y)


def test_bias_grad_is_bitwise_deterministic(rng):
    dy = cupy.asarray(randn(rng, 256, 32, 14, 14))
    first = ops.bias_grad(dy).get()
    for _ in range(3):
        np.testing.assert_array_equal(ops.bias_grad(dy).get(), first)


@pytest.mark.slow
def test_large_tensor_grid_stride(rng):
    """More elements than one grid covers: every thread walks several strides."""
    n = (1 << 28) + 5
    x = cupy.random.default_rng(1).standard_normal(n, dtype=cupy.float32)
    y = ops.relu(x)
    assert bool(cupy.all(y == cupy.maximum(x, 0)))
    rows = n // 5
    dy = x[: rows * 5].reshape(rows, 5)
    assert_close(ops.bias_grad(dy), dy.astype(cupy.float64).sum(axis=0), atol=reduction_atol(rows, factor=1.0))
