"""Max and average pooling: the NumPy reference by hand, by finite differences and against
torch.nn.functional (CPU, NaN and overlapping windows included); argument checks."""

import numpy as np
import pytest

from conftest import fake, numeric_gradient, randn
from pyfast import ops, reference
from pyfast.testing import assert_close

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

# (x shape, kernel, stride, padding): the CNN's 2x2, overlapping 3x3 stride 1 and 2,
# padding, non-square windows, odd sizes.
CONFIGS = [
    ((2, 3, 28, 28), 2, None, 0),
    ((1, 2, 7, 9), 3, 1, 1),
    ((2, 2, 9, 7), 3, 2, 1),
    ((1, 3, 5, 6), (2, 3), (1, 2), (1, 1)),
    ((1, 1, 4, 4), 4, None, 0),
    ((3, 1, 6, 5), (3, 1), (2, 1), (1, 0)),
]


def test_max_pool_by_hand():
    x = np.array([[[[1, 5, 2, 0], [3, 4, 7, 8], [0, 0, 1, 1], [9, 0, 1, 2]]]], np.float32)
    y, indices = reference.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[5, 8], [9, 2]])
    np.testing.assert_array_equal(indices[0, 0], [[1, 7], [12, 15]])
    dx = reference.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), indices, x.shape)
    np.testing.assert_array_equal(dx[0, 0], [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 1]])


def test_avg_pool_by_hand():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(reference.avg_pool2d(x, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    # Corner window of a 3x3 pool with padding 1 sees 4 real values: /9 or /4.
    assert_close(reference.avg_pool2d(x, 3, 1, 1)[0, 0, 0, 0], (0 + 1 + 4 + 5) / 9, atol=1e-6)
    assert_close(reference.avg_pool2d(x, 3, 1, 1, count_include_pad=False)[0, 0, 0, 0], 2.5, atol=1e-6)


@pytest.mark.parametrize("x_shape,kernel,stride,padding", CONFIGS)
def test_pool_gradients_by_finite_differences(rng, x_shape, kernel, stride, padding):
    x = randn(rng, *x_shape)
    x_small = x[:1, :1, :6, :6].copy()
    for count_include_pad in (True, False):
        y = reference.avg_pool2d(x_small, kernel, stride, padding, count_include_pad=count_include_pad)
        dy = randn(rng, *y.shape)

        def loss():
            return float(np.sum(reference.avg_pool2d(x_small, kernel, stride, padding,
                                                     count_include_pad=count_include_pad)
                                .astype(np.float64) * dy))

        got = reference.avg_pool2d_backward(dy, x_small.shape, kernel, stride, padding,
                                            count_include_pad=count_include_pad)
        assert_close(got, numeric_gradient(loss, x_small), atol=2e-3, rtol=2e-3)
    y, indices = reference.max_pool2d(x_small, kernel, stride, padding, return_indices=True)
    dy = randn(rng, *y.shape)

    def max_loss():
        return float(np.sum(reference.max_pool2d(x_small, kernel, stride, padding,
                                                 return_indices=True)[0].astype(np.float64) * dy))

    # Random normal values: no two within the step of each other in a window, so no kink.
    assert_close(reference.max_pool2d_backward(dy, indices, x_small.shape), numeric_gradient(max_loss, x_small, h=1e-4),
                 atol=5e-3, rtol=5e-3)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("x_shape,kernel,stride,padding", CONFIGS)
def test_reference_matches_torch(rng, x_shape, kernel, stride, padding):
    x = randn(rng, *x_shape)
    x[0, 0, 0, :3] = np.nan  # NaN propagates through max (PyTorch picks the last NaN of a window)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt, it = F.max_pool2d(xt, kernel, stride, padding, return_indices=True)
    y, indices = reference.max_pool2d(x, kernel, stride, padding, return_indices=True)
    assert_close(y, yt.detach().numpy(), atol=0, rtol=0)
    np.testing.assert_array_equal(indices, it.numpy())
    dy = randn(rng, *y.shape)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    assert_close(reference.max_pool2d_backward(dy, indices, x_shape), xt.grad.numpy(), atol=1e-6)
    x = randn(rng, *x_shape)
    for count_include_pad in (True, False):
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        yt = F.avg_pool2d(xt, kernel, stride, padding, count_include_pad=count_include_pad)
        assert_close(reference.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad),
                     yt.detach().numpy(),
                     atol=1e-6)
        yt.backward(torch.tensor(dy, dtype=torch.float64))
        assert_close(reference.avg_pool2d_backward(dy, x_shape, kernel, stride, padding,
                                                   count_include_pad=count_include_pad),
                     xt.grad.numpy(), atol=1e-6)


def test_pool_argument_errors():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"padding: expected at most half the kernel size \(3, 3\), got \(2, 2\)"):
        reference.max_pool2d(x, 3, 1, 2, return_indices=True)
    with pytest.raises(ValueError, match=r"input: input 4x4 with padding \(0, 0\) is smaller than the window \(5, 5\)"):
        reference.avg_pool2d(x, 5)
    with pytest.raises(ValueError, match=r"kernel_size: expected values >= 1"):
        reference.max_pool2d(x, 0, return_indices=True)
    with pytest.raises(ValueError, match=r"indices: expected flat indices in \[0, 16\)"):
        reference.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), np.full((1, 1, 2, 2), 16), x.shape)
    with pytest.raises(TypeError, match=r"indices: expected dtype int64"):
        reference.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.float32), x.shape)


def test_gpu_pool_argument_checks_without_touching_memory():
    with pytest.raises(ValueError, match="padding: expected at most half"):
        ops.max_pool2d(fake(1, 1, 4, 4), 2, 1, 2, return_indices=True)
    with pytest.raises(ValueError, match=r"dy: expected shape \(1, 1, 2, 2\)"):
        ops.avg_pool2d_backward(fake(1, 1, 3, 3), (1, 1, 4, 4), 2)
    with pytest.raises(ValueError, match=r"indices: expected shape \(1, 1, 2, 2\)"):
        ops.max_pool2d_backward(fake(1, 1, 2, 2), fake(1, 1, 3, 2, typestr="<i8"), (1, 1, 4, 4))


# ======================================================================= GPU
GPU_CONFIGS = [
    pytest.param((1, 32, 28, 28), 2, None, 0, id="cnn-b1"),
    pytest.param((64, 32, 28, 28), 2, None, 0, id="cnn-b64"),
    pytest.param((128, 64, 14, 14), 2, None, 0, id="cnn2-b128"),
    pytest.param((1024, 32, 28, 28), 2, None, 0, id="cnn-b1024", marks=pytest.mark.slow),
    pytest.param((2, 3, 7, 9), 3, 1, 1, id="overlap-s1"),
    pytest.param((2, 17, 9, 7), 3, 2, 1, id="overlap-s2"),
    pytest.param((1, 3, 5, 6), (2, 3), (1, 2), (1, 1), id="pairs"),
    pytest.param((3, 2, 6, 5), (3, 1), (2, 1), (1, 0), id="tall"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape,kernel,stride,padding", GPU_CONFIGS)
def test_gpu_pooling_against_reference(rng, x_shape, kernel, stride, padding):
    import cupy

    x = randn(rng, *x_shape)
    x.reshape(-1)[:: 97] = np.nan  # NaN propagates through max
    y, indices = ops.max_pool2d(cupy.asarray(x), kernel, stride, padding, return_indices=True)
    ref_y, ref_indices = reference.max_pool2d(x, kernel, stride, padding, return_indices=True)
    assert_close(y, ref_y, atol=0, rtol=0)
    np.testing.assert_array_equal(indices.get(), ref_indices)
    dy = randn(rng, *ref_y.shape)
    dx = ops.max_pool2d_backward(cupy.asarray(dy), indices, x_shape, out=cupy.full(x_shape, cupy.nan, cupy.float32))
    assert_close(dx, reference.max_pool2d_backward(dy, ref_indices, x_shape), atol=1e-6)
    x = randn(rng, *x_shape)
    for count_include_pad in (True, False):
        y = ops.avg_pool2d(cupy.asarray(x), kernel, stride, padding, count_include_pad=count_include_pad)
        assert_close(y, reference.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad),
                     atol=1e-6)
        dx = ops.avg_pool2d_backward(cupy.asarray(dy), x_shape, kernel, stride, padding,
                                     count_include_pad=count_include_pad,
                                     out=cupy.full(x_shape, cupy.nan, cupy.float32))
        assert_close(dx, reference.avg_pool2d_backward(dy, x_shape, kernel, stride, padding,
                                                       count_include_pad=count_include_pad),
                     atol=1e-6)


@pytest.mark.gpu
def test_gpu_pooling_is_deterministic_with_overlaps(rng):
    import cupy

    x = cupy.asarray(randn(rng, 16, 8, 15, 15))
    y, indices = ops.max_pool2d(x, 3, 1, 1, return_indices=True)
    dy = cupy.asarray(randn(rng, *y.shape))
    first = ops.max_pool2d_backward(dy, indices, x.shape).get()
    for _ in range(3):
        np.testing.assert_array_equal(ops.max_pool2d_backward(dy, indices, x.shape).get(), first)


# ---------------------------------------- max_pool2d_backward with the window (the gather path)
def emulate_gather_backward(dy, indices, relu_output, x_shape, kernel, stride, padding):
    """max_pool2d_backward_gather_kernel's index math in NumPy: per input element, the windows
    that hold it (windows_holding32), in the order p then q, summing dy where the window
    recorded this element (and its maximum is not <= 0 with relu_output)."""
    from pyfast import _checks

    g = _checks.pool2d_dims(x_shape, kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = g["kernel"], g["stride"], g["padding"]
    n, c, h, w = x_shape

    def holding(i, k, s, pad, outputs):
        padded = i + pad
        first = 0 if padded < k else (padded - k) // s + 1
        return first, min(padded // s, outputs - 1)

    dx = np.full((n, c, h, w), np.nan, np.float32)
    for plane in np.ndindex(n, c):
        for e in range(h * w):
            i, j = divmod(e, w)
            p0, p1 = holding(i, kh, sh, ph, g["p"])
            q0, q1 = holding(j, kw, sw, pw, g["q"])
            acc = np.float32(0)
            for p in range(p0, p1 + 1):
                for q in range(q0, q1 + 1):
                    if indices[plane][p, q] != e:
                        continue
                    if relu_output is not None and relu_output[plane][p, q] <= 0:
                        continue
                    acc = np.float32(acc + dy[plane][p, q])
            dx[plane][i, j] = acc
    return dx


@pytest.mark.parametrize("x_shape,kernel,stride,padding", CONFIGS)
def test_gather_backward_index_math_and_relu_fold_against_reference(rng, x_shape, kernel, stride, padding):
    x = randn(rng, *x_shape)
    relu_x = np.maximum(x, 0)  # a ReLU's output, so some windows' maxima are 0
    relu_x.reshape(-1)[::7] = 0
    y, indices = reference.max_pool2d(relu_x, kernel, stride, padding, return_indices=True)
    dy = randn(rng, *y.shape)
    plain = reference.max_pool2d_backward(dy, indices, x_shape)
    windowed = reference.max_pool2d_backward(dy, indices, x_shape, kernel, stride, padding)
    np.testing.assert_array_equal(windowed, plain)
    assert_close(emulate_gather_backward(dy, indices, None, x_shape, kernel, stride, padding), plain, atol=1e-6)
    # relu_output: the same as the pool's gradient followed by the ReLU's backward.
    folded = reference.max_pool2d_backward(dy, indices, x_shape, kernel, stride, padding, relu_output=y)
    np.testing.assert_array_equal(folded, reference.relu_backward(plain, relu_x))
    assert_close(emulate_gather_backward(dy, indices, y, x_shape, kernel, stride, padding), folded, atol=1e-6)


def test_windowed_backward_argument_errors():
    dy, indices = np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.int64)
    for module, make_dy, make_idx in ((reference, lambda *s: np.zeros(s, np.float32),
                                       lambda *s: np.zeros(s, np.int64)),
                                      (ops, fake, lambda *s: fake(*s, typestr="<i8"))):
        with pytest.raises(ValueError, match="kernel_size: stride, padding, dilation and ceil_mode describe a window"):
            module.max_pool2d_backward(make_dy(1, 1, 2, 2), make_idx(1, 1, 2, 2), (1, 1, 4, 4), stride=2)
        with pytest.raises(ValueError, match="relu_output: needs the window"):
            module.max_pool2d_backward(make_dy(1, 1, 2, 2), make_idx(1, 1, 2, 2), (1, 1, 4, 4),
                                       relu_output=make_dy(1, 1, 2, 2))
        with pytest.raises(ValueError, match=r"dy: expected shape \(1, 1, 1, 1\)"):
            module.max_pool2d_backward(make_dy(1, 1, 2, 2), make_idx(1, 1, 2, 2), (1, 1, 4, 4), 4)
        with pytest.raises(ValueError, match=r"relu_output: expected shape \(1, 1, 2, 2\)"):
            module.max_pool2d_backward(make_dy(1, 1, 2, 2), make_idx(1, 1, 2, 2), (1, 1, 4, 4), 2,
                                       relu_output=make_dy(1, 1, 2, 1))
    indices[0, 0, 1, 1] = 0  # window (1, 1) covers rows 2-3, columns 2-3: element 0 is not in it
    with pytest.raises(ValueError, match="inside its own window"):
        reference.max_pool2d_backward(dy, indices, (1, 1, 4, 4), 2)


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape,kernel,stride,padding", GPU_CONFIGS + [
    pytest.param((2, 3, 28, 27), 2, None, 0, id="2x2-odd-width"),
    pytest.param((1, 2, 1, 2), 2, (1, 2), (1, 1), id="tiny-padded")])
def test_gpu_windowed_backward_and_relu_fold(rng, x_shape, kernel, stride, padding):
    import cupy

    x = np.maximum(randn(rng, *x_shape), 0)
    x.reshape(-1)[::53] = np.nan
    y, indices = ops.max_pool2d(cupy.asarray(x), kernel, stride, padding, return_indices=True)
    ref_y, ref_indices = reference.max_pool2d(x, kernel, stride, padding, return_indices=True)
    np.testing.assert_array_equal(indices.get(), ref_indices)
    dy = randn(rng, *ref_y.shape)
    poisoned = cupy.full(x_shape, cupy.nan, cupy.float32)
    dx = ops.max_pool2d_backward(cupy.asarray(dy), indices, x_shape, kernel, stride, padding, out=poisoned)
    scatter = ops.max_pool2d_backward(cupy.asarray(dy), indices, x_shape)
    np.testing.assert_array_equal(dx.get(), scatter.get())  # the same sums in the same order
    assert_close(dx, reference.max_pool2d_backward(dy, ref_indices, x_shape), atol=1e-6)
    folded = ops.max_pool2d_backward(cupy.asarray(dy), indices, x_shape, kernel, stride, padding, relu_output=y,
                                     out=cupy.full(x_shape, cupy.nan, cupy.float32))
    np.testing.assert_array_equal(folded.get(), ops.relu_backward(scatter, cupy.asarray(x)).get())


# ------------------------------------------- bias + ReLU + max pool in one pass (the conv output)
@pytest.mark.parametrize("x_shape,kernel,stride,padding", CONFIGS)
def test_pooling_relu_of_biased_input_matches_the_three_steps(rng, x_shape, kernel, stride, padding):
    x, b = randn(rng, *x_shape), randn(rng, x_shape[1])
    x.reshape(-1)[::11] = np.nan
    biased = (x + b[None, :, None, None]).astype(np.float32)
    y, indices = reference.max_pool2d(x, kernel, stride, padding, bias=b, activation="relu", return_indices=True)
    y_ref, indices_ref = reference.max_pool2d(reference.relu(biased), kernel, stride, padding, return_indices=True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(indices, indices_ref)
    y, indices = reference.max_pool2d(x, kernel, stride, padding, activation="relu", return_indices=True)
    np.testing.assert_array_equal(indices, reference.max_pool2d(reference.relu(x), kernel, stride, padding,
                                                                return_indices=True)[1])


def test_pool_bias_and_activation_checks_on_both_backends():
    for module, make in ((reference, lambda *s: np.zeros(s, np.float32)), (ops, fake)):
        with pytest.raises(ValueError, match=r"bias: expected shape \(3,\)"):
            module.max_pool2d(make(1, 3, 4, 4), 2, bias=make(2), return_indices=True)
        with pytest.raises(ValueError, match="activation: expected None or 'relu'"):
            module.max_pool2d(make(1, 3, 4, 4), 2, activation="gelu", return_indices=True)


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape,kernel,stride,padding", GPU_CONFIGS)
def test_gpu_pooling_of_relu_biased_input(rng, x_shape, kernel, stride, padding):
    import cupy

    x, b = randn(rng, *x_shape), randn(rng, x_shape[1])
    x.reshape(-1)[::97] = np.nan
    out = cupy.full(reference.max_pool2d(x, kernel, stride, padding, return_indices=True)[0].shape, cupy.nan,
                    cupy.float32)
    y, indices = ops.max_pool2d(cupy.asarray(x), kernel, stride, padding, bias=cupy.asarray(b), activation="relu",
                                out=out, return_indices=True)
    y_ref, indices_ref = reference.max_pool2d(x, kernel, stride, padding, bias=b, activation="relu",
                                              return_indices=True)
    np.testing.assert_array_equal(y.get(), y_ref)
    np.testing.assert_array_equal(indices.get(), indices_ref)
    relu_x = ops.relu(ops.add_bias(cupy.asarray(x), cupy.asarray(b)))
    y_steps, indices_steps = ops.max_pool2d(relu_x, kernel, stride, padding, return_indices=True)
    np.testing.assert_array_equal(y.get(), y_steps.get())
    np.testing.assert_array_equal(indices.get(), indices_steps.get())
