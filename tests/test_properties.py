"""Property-based tests (hypothesis): random shapes including 1, primes and non-multiples of
every tile size, random geometry within the valid ranges, random transposes.

CPU: the reference against itself (each gradient is the adjoint of its forward op; softmax
identities). GPU: every op against the float64 reference on the same random cases."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pyfast import _checks, ops, reference
from pyfast.testing import assert_close, reduction_atol

# Sizes that hit tile edges: 1, primes, one off the 4/8/16/32/64/128 multiples.
SIZES = st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31, 33, 63, 65, 97, 127, 129])
SMALL = st.integers(1, 9)


def arrays(rng_seed, *shape, scale=1.0):
    return (np.random.default_rng(rng_seed).standard_normal(shape) * scale).astype(np.float32)


@st.composite
def conv_cases(draw):
    """A valid convolution: the dilated kernel fits the padded input."""
    n, c, k = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    r, s = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = max(1, dilation[0] * (r - 1) + 1 - 2 * padding[0]) + draw(st.integers(0, 8))
    w = max(1, dilation[1] * (s - 1) + 1 - 2 * padding[1]) + draw(st.integers(0, 8))
    return (n, c, h, w), (k, c, r, s), dict(stride=stride, padding=padding, dilation=dilation), draw(st.integers(0, 99))


@st.composite
def pool_cases(draw):
    """A valid pooling window: padding at most half the window, output at least 1x1."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    h = max(1, kernel[0] - 2 * padding[0]) + draw(st.integers(0, 8))
    w = max(1, kernel[1] - 2 * padding[1]) + draw(st.integers(0, 8))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w)
    return shape, kernel, stride, padding, draw(st.integers(0, 99))


def inner(a, b):
    return float(np.vdot(np.asarray(a, np.float64), np.asarray(b, np.float64)))


# ======================================================================= CPU
@given(conv_cases())
def test_conv_gradients_are_adjoints(case):
    x_shape, w_shape, geometry, seed = case
    x, w = arrays(seed, *x_shape), arrays(seed + 1, *w_shape)
    y = reference.conv2d(x, w, **geometry)
    dy = arrays(seed + 2, *y.shape)
    forward = inner(y, dy)
    tolerance = 1e-4 * (1 + abs(forward)) + 1e-5 * y.size
    assert abs(inner(x, reference.conv2d_backward_input(dy, w, x_shape, **geometry)) - forward) <= tolerance
    assert abs(inner(w, reference.conv2d_backward_weight(dy, x, w_shape, **geometry)) - forward) <= tolerance


@given(pool_cases())
def test_pool_gradients_are_adjoints(case):
    shape, kernel, stride, padding, seed = case
    x = arrays(seed, *shape)
    for ceil_mode in (False, True):
        y, indices = reference.max_pool2d(x, kernel, stride, padding, 1, ceil_mode, True)
        dy = arrays(seed + 1, *y.shape)
        # Max pooling is linear in x once the winners are fixed.
        assert_close(inner(x, reference.max_pool2d_backward(dy, indices, shape)), inner(y, dy), atol=1e-4, rtol=1e-5)
        for include in (True, False):
            avg = reference.avg_pool2d(x, kernel, stride, padding, ceil_mode, include)
            back = reference.avg_pool2d_backward(dy, shape, kernel, stride, padding, ceil_mode, include)
            assert_close(inner(x, back), inner(avg, dy), atol=1e-4, rtol=1e-5)


@given(SIZES, SIZES, SIZES, st.booleans(), st.booleans(), st.integers(0, 99))
def test_matmul_transposes_are_the_same_product(m, n, k, trans_a, trans_b, seed):
    a, b = arrays(seed, m, k), arrays(seed + 1, k, n)
    stored_a = np.ascontiguousarray(a.T) if trans_a else a
    stored_b = np.ascontiguousarray(b.T) if trans_b else b
    assert_close(reference.matmul(stored_a, stored_b, trans_a=trans_a, trans_b=trans_b), reference.matmul(a, b),
                 atol=1e-6)


@given(SMALL, st.integers(1, 40), st.integers(0, 99), st.floats(0.1, 30.0))
def test_softmax_identities(rows, classes, seed, scale):
    logits = arrays(seed, rows, classes, scale=scale)
    p = reference.softmax(logits)
    assert_close(p.sum(axis=1), np.ones(rows), atol=1e-5)
    # exp(log_softmax) = softmax (this direction: a float32 softmax underflows where its log does not)
    assert_close(np.exp(reference.log_softmax(logits).astype(np.float64)), p, atol=1e-6, rtol=1e-5)
    labels = np.random.default_rng(seed).integers(0, classes, rows)
    loss, grad = reference.softmax_cross_entropy(logits, labels, reduction="sum")
    assert_close(grad.sum(axis=1), np.zeros(rows), atol=1e-5)  # softmax - onehot sums to 0
    assert float(loss) >= -1e-6


# ======================================================================= GPU
gpu = pytest.mark.gpu


def _cupy():
    import cupy

    return cupy


@gpu
@given(SIZES, SIZES, SIZES, st.booleans(), st.booleans(), st.booleans(), st.sampled_from(ops.MATMUL_VERSIONS),
       st.integers(0, 99))
def test_gpu_matmul_fuzz(m, n, k, trans_a, trans_b, relu, version, seed):
    cupy = _cupy()
    a = arrays(seed, *((k, m) if trans_a else (m, k)))
    b = arrays(seed + 1, *((n, k) if trans_b else (k, n)))
    bias = arrays(seed + 2, n)
    activation = "relu" if relu else None
    got = ops.matmul(cupy.asarray(a), cupy.asarray(b), trans_a=trans_a, trans_b=trans_b, bias=cupy.asarray(bias),
                     activation=activation, version=version, out=cupy.full((m, n), cupy.nan, cupy.float32))
    expected = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, activation=activation)
    assert_close(got, expected, atol=reduction_atol(k))


@gpu
@given(SIZES, SIZES, SIZES, st.booleans(), st.booleans(), st.sampled_from(["tf32", "bf16"]),
       st.sampled_from([1, 2, 5]), st.integers(0, 99))
def test_gpu_matmul_precision_and_split_fuzz(m, n, k, trans_a, trans_b, precision, splits, seed):
    # Tensor-core products of the rounded operands, split K or not, against the reference
    # that rounds the same way (float32-sum tolerance, 8x for the tensor cores' order).
    cupy = _cupy()
    a = arrays(seed, *((k, m) if trans_a else (m, k)))
    b = arrays(seed + 1, *((n, k) if trans_b else (k, n)))
    got = ops.matmul(cupy.asarray(a), cupy.asarray(b), trans_a=trans_a, trans_b=trans_b, precision=precision,
                     plan=(-1, splits), out=cupy.full((m, n), cupy.nan, cupy.float32))
    expected = reference.matmul(a, b, trans_a=trans_a, trans_b=trans_b, precision=precision)
    assert_close(got, expected, atol=reduction_atol(k, factor=8.0))


@gpu
@given(conv_cases(), st.sampled_from(ops.CONV2D_VERSIONS))
def test_gpu_conv_fuzz(case, version):
    cupy = _cupy()
    x_shape, w_shape, geometry, seed = case
    geometry = dict(geometry, version=version)
    x, w = arrays(seed, *x_shape), arrays(seed + 1, *w_shape)
    g = _checks.conv2d_dims(x_shape, w_shape, geometry["stride"], geometry["padding"], geometry["dilation"])
    if not _checks.conv2d_fits(g, ops.CONV2D_VERSIONS.index(version)):
        # A geometry outside the version's class (most draws, for 'tiled') is refused on both backends.
        dy = arrays(seed + 2, g["n"], g["k"], g["p"], g["q"])
        for backend, to in ((reference, np.asarray), (ops, cupy.asarray)):
            for call in (lambda: backend.conv2d(to(x), to(w), **geometry),
                         lambda: backend.conv2d_backward_input(to(dy), to(w), x_shape, **geometry),
                         lambda: backend.conv2d_backward_weight(to(dy), to(x), w_shape, **geometry)):
                with pytest.raises(ValueError, match=f"version: '{version}'"):
                    call()
        return
    y = reference.conv2d(x, w, **geometry)
    dy = arrays(seed + 2, *y.shape)
    length = w_shape[1] * w_shape[2] * w_shape[3]
    assert_close(ops.conv2d(cupy.asarray(x), cupy.asarray(w), **geometry), y, atol=reduction_atol(length))
    assert_close(ops.conv2d_backward_input(cupy.asarray(dy), cupy.asarray(w), x_shape, **geometry),
                 reference.conv2d_backward_input(dy, w, x_shape, **geometry),
                 atol=reduction_atol(w_shape[0] * w_shape[2] * w_shape[3]))
    assert_close(ops.conv2d_backward_weight(cupy.asarray(dy), cupy.asarray(x), w_shape, **geometry),
                 reference.conv2d_backward_weight(dy, x, w_shape, **geometry),
                 atol=reduction_atol(y.shape[0] * y.shape[2] * y.shape[3]))


@gpu
@given(pool_cases())
def test_gpu_pool_fuzz(case):
    cupy = _cupy()
    shape, kernel, stride, padding, seed = case
    x = arrays(seed, *shape)
    for ceil_mode in (False, True):
        window = (kernel, stride, padding, 1, ceil_mode)
        y, indices = ops.max_pool2d(cupy.asarray(x), *window, True)
        ref_y, ref_indices = reference.max_pool2d(x, *window, True)
        assert_close(y, ref_y, atol=0, rtol=0)
        np.testing.assert_array_equal(indices.get(), ref_indices)
        dy = arrays(seed + 1, *ref_y.shape)
        expected = reference.max_pool2d_backward(dy, ref_indices, shape)
        assert_close(ops.max_pool2d_backward(cupy.asarray(dy), indices, shape), expected, atol=1e-5)
        assert_close(ops.max_pool2d_backward(cupy.asarray(dy), indices, shape, *window), expected, atol=1e-5)
        for include in (True, False):
            args = (kernel, stride, padding, ceil_mode, include)
            assert_close(ops.avg_pool2d(cupy.asarray(x), *args), reference.avg_pool2d(x, *args), atol=1e-6)
            assert_close(ops.avg_pool2d_backward(cupy.asarray(dy), shape, *args),
                         reference.avg_pool2d_backward(dy, shape, *args), atol=1e-6)


@gpu
@given(st.integers(1, 300), st.integers(1, 3000), st.sampled_from([np.int32, np.int64]), st.integers(0, 99))
def test_gpu_losses_fuzz(rows, classes, label_dtype, seed):
    cupy = _cupy()
    assume(rows * classes <= 1 << 20)
    logits = arrays(seed, rows, classes, scale=3.0)
    labels = np.random.default_rng(seed).integers(0, classes, rows).astype(label_dtype)
    loss, grad = ops.softmax_cross_entropy(cupy.asarray(logits), cupy.asarray(labels))
    ref_loss, ref_grad = reference.softmax_cross_entropy(logits, labels)
    assert_close(grad, ref_grad, atol=1e-6 / rows, rtol=1e-5)
    assert_close(loss, ref_loss, atol=2e-5 * (1 + np.log(classes)), rtol=1e-5)
    assert int(ops.accuracy(cupy.asarray(logits), cupy.asarray(labels))) == int(reference.accuracy(logits, labels))
    pred, target = arrays(seed, rows, 3), arrays(seed + 1, rows, 3)
    loss, grad = ops.mse_loss(cupy.asarray(pred), cupy.asarray(target))
    ref_loss, ref_grad = reference.mse_loss(pred, target)
    assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    assert_close(grad, ref_grad, atol=0, rtol=1e-6)


@gpu
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=60), st.integers(0, 99))
def test_gpu_optimizer_fuzz(sizes, seed):
    cupy = _cupy()
    params = [arrays(seed + i, size) for i, size in enumerate(sizes)]
    grads = [arrays(seed + 100 + i, size, scale=0.1) for i, size in enumerate(sizes)]
    states = [[np.zeros(size, np.float32) for size in sizes] for _ in range(2)]
    gpu_params = [cupy.asarray(p) for p in params]
    ops.adam_step(gpu_params, [cupy.asarray(g) for g in grads], *[[cupy.asarray(s) for s in ss] for ss in states],
                  step=3, lr=1e-2, weight_decay=1e-2)
    reference.adam_step(params, grads, *states, step=3, lr=1e-2, weight_decay=1e-2)
    for got, expected in zip(gpu_params, params):
        assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_strategies_only_draw_valid_geometry():
    """The generators above never produce a case the checks reject (else the fuzz tests would
    test error paths instead of kernels)."""

    @given(conv_cases())
    def conv_ok(case):
        x_shape, w_shape, geometry, _ = case
        _checks.conv2d_dims(x_shape, w_shape, **geometry)

    @given(pool_cases())
    def pool_ok(case):
        shape, kernel, stride, padding, _ = case
        _checks.pool2d_dims(shape, kernel, stride, padding)

    conv_ok()
    pool_ok()
