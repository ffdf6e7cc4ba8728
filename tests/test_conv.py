"""2D convolution: the NumPy reference against loops, finite differences, its own adjoints and
torch.nn.functional (CPU); argument checks."""

import numpy as np
import pytest

from conftest import fake, numeric_gradient, randn
from pyfast import _checks, ops, reference
from pyfast.testing import assert_close, reduction_atol

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

# (x shape, w shape, stride, padding, dilation): the CNN's layers, 5x5, stride 2,
# dilation 2, odd sizes, 1x1, asymmetric pairs.
CONFIGS = [
    ((2, 1, 28, 28), (4, 1, 3, 3), 1, 1, 1),
    ((2, 3, 14, 14), (5, 3, 3, 3), 1, 1, 1),
    ((1, 3, 7, 9), (2, 3, 5, 5), 1, 2, 1),
    ((2, 3, 9, 7), (4, 3, 3, 3), 2, 0, 1),
    ((1, 2, 9, 9), (3, 2, 3, 3), 1, 2, 2),
    ((3, 4, 5, 6), (2, 4, 1, 1), 1, 0, 1),
    ((1, 2, 8, 11), (3, 2, 2, 3), (2, 1), (1, 0), (1, 2)),
]


def loop_conv2d(x, w, stride, padding, dilation):
    (sh, sw), (ph, pw), (dh, dw) = (pair if isinstance(pair, tuple) else (pair, pair)
                                    for pair in (stride, padding, dilation))
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    p = (h + 2 * ph - dh * (r - 1) - 1) // sh + 1
    q = (wd + 2 * pw - dw * (s - 1) - 1) // sw + 1
    y = np.zeros((n, k, p, q))
    for i in np.ndindex(n, k, p, q):
        for ci, ri, si in np.ndindex(c, r, s):
            hi, wi = i[2] * sh - ph + ri * dh, i[3] * sw - pw + si * dw
            if 0 <= hi < h and 0 <= wi < wd:
                y[i] += float(x[i[0], ci, hi, wi]) * float(w[i[1], ci, ri, si])
    return y


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation", CONFIGS[2:])
def test_conv2d_matches_loops(rng, x_shape, w_shape, stride, padding, dilation):
    x, w = randn(rng, *x_shape), randn(rng, *w_shape)
    got = reference.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    assert_close(got, loop_conv2d(x, w, stride, padding, dilation), atol=1e-5)


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation", CONFIGS)
def test_gradients_are_the_adjoints_of_forward(rng, x_shape, w_shape, stride, padding, dilation):
    """<conv(x, w), dy> = <x, conv_backward_input(dy, w)> = <w, conv_backward_weight(dy, x)>."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    x, w = randn(rng, *x_shape), randn(rng, *w_shape)
    y = reference.conv2d(x, w, **kwargs)
    dy = randn(rng, *y.shape)
    forward = np.vdot(y.astype(np.float64), dy)
    dx = reference.conv2d_backward_input(dy, w, x_shape, **kwargs)
    dw = reference.conv2d_backward_weight(dy, x, w_shape, **kwargs)
    assert dx.shape == x_shape and dw.shape == w_shape
    assert_close(np.vdot(x.astype(np.float64), dx), forward, atol=1e-3, rtol=1e-5)
    assert_close(np.vdot(w.astype(np.float64), dw), forward, atol=1e-3, rtol=1e-5)


def test_gradients_by_finite_differences(rng):
    kwargs = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    x, w, b = randn(rng, 1, 2, 5, 6), randn(rng, 3, 2, 2, 3), randn(rng, 3)
    dy = randn(rng, *reference.conv2d(x, w, b, **kwargs).shape)

    def loss():
        return float(np.sum(reference.conv2d(x, w, b, **kwargs).astype(np.float64) * dy))

    assert_close(reference.conv2d_backward_input(dy, w, x.shape, **kwargs), numeric_gradient(loss, x),
                 atol=2e-3, rtol=2e-3, name="dx")
    assert_close(reference.conv2d_backward_weight(dy, x, w.shape, **kwargs), numeric_gradient(loss, w),
                 atol=2e-3, rtol=2e-3, name="dw")
    assert_close(reference.bias_grad(dy), numeric_gradient(loss, b), atol=2e-3, rtol=2e-3, name="db")


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation", CONFIGS)
def test_reference_matches_torch(rng, x_shape, w_shape, stride, padding, dilation):
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    x, w, b = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    xt, wt = torch.tensor(x, dtype=torch.float64, requires_grad=True), torch.tensor(w, dtype=torch.float64,
                                                                                     requires_grad=True)
    yt = F.conv2d(xt, wt, torch.tensor(b, dtype=torch.float64), **kwargs)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    assert_close(reference.conv2d(x, w, b, **kwargs), yt.detach().numpy(), atol=1e-5)
    assert_close(reference.conv2d_backward_input(dy, w, x_shape, **kwargs), xt.grad.numpy(), atol=1e-5)
    assert_close(reference.conv2d_backward_weight(dy, x, w_shape, **kwargs), wt.grad.numpy(), atol=1e-4)


def test_conv_argument_errors():
    x, w = np.zeros((1, 2, 4, 4), np.float32), np.zeros((3, 2, 5, 5), np.float32)
    with pytest.raises(ValueError,
                       match=r"input: padded input size per channel 4x4 is smaller than the dilated kernel"):
        reference.conv2d(x, w)
    reference.conv2d(x, w, padding=1)  # 6x6 >= 5x5: fine
    with pytest.raises(ValueError, match=r"dilated kernel 9x9"):
        reference.conv2d(x, w, padding=1, dilation=2)
    with pytest.raises(ValueError, match=r"weight: expected 2 input channels"):
        reference.conv2d(x, np.zeros((3, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"stride: expected values >= 1, got \(0, 0\)"):
        reference.conv2d(x, w, stride=0, padding=1)
    with pytest.raises(ValueError, match=r"padding: expected values >= 0"):
        reference.conv2d(x, w, padding=(-1, 1))
    with pytest.raises(TypeError, match=r"dilation: expected an int or a pair of ints"):
        reference.conv2d(x, w, padding=1, dilation=1.5)
    with pytest.raises(ValueError, match=r"input: expected a 4-D array"):
        reference.conv2d(np.zeros((2, 4, 4), np.float32), w)
    with pytest.raises(ValueError, match=r"dy: expected shape \(1, 3, 2, 2\), got \(1, 3, 3, 3\)"):
        reference.conv2d_backward_input(np.zeros((1, 3, 3, 3), np.float32), w, (1, 2, 4, 4), padding=1)
    with pytest.raises(ValueError, match=r"x_shape: expected a tuple \(N, C, H, W\)"):
        reference.conv2d_backward_input(np.zeros((1, 3, 2, 2), np.float32), w, (2, 4, 4), padding=1)


def test_gpu_conv_argument_checks_without_touching_memory():
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        ops.conv2d(fake(1, 2, 4, 4), fake(3, 2, 5, 5))
    with pytest.raises(TypeError, match="weight: expected dtype float32"):
        ops.conv2d(fake(1, 2, 4, 4), fake(3, 2, 3, 3, typestr="<f8"))
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\)"):
        ops.conv2d(fake(1, 2, 4, 4), fake(3, 2, 3, 3), fake(2))
    with pytest.raises(ValueError, match=r"dy: expected shape \(1, 3, 2, 2\)"):
        ops.conv2d_backward_weight(fake(1, 3, 3, 3), fake(1, 2, 4, 4), (3, 2, 3, 3))


# ======================================================================= GPU
# The CNN's layers at several batch sizes, 5x5, stride 2, dilation 2, padding 0/1/2, odd sizes
# (7x9 images, 3 and 17 channels), 1x1 and ResNet-style 64/128-channel 3x3 layers.
GPU_CONFIGS = [
    pytest.param((1, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1, id="cnn1-b1"),
    pytest.param((64, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1, id="cnn1-b64"),
    pytest.param((128, 32, 14, 14), (64, 32, 3, 3), 1, 1, 1, id="cnn2-b128"),
    pytest.param((1024, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1, id="cnn1-b1024", marks=pytest.mark.slow),
    pytest.param((1024, 32, 14, 14), (64, 32, 3, 3), 1, 1, 1, id="cnn2-b1024", marks=pytest.mark.slow),
    pytest.param((2, 3, 7, 9), (17, 3, 5, 5), 1, 2, 1, id="5x5-odd"),
    pytest.param((3, 17, 9, 7), (3, 17, 3, 3), 2, 0, 1, id="stride2"),
    pytest.param((2, 3, 11, 13), (5, 3, 3, 3), 1, 2, 2, id="dilation2"),
    pytest.param((4, 17, 7, 9), (3, 17, 1, 1), 1, 0, 1, id="1x1"),
    pytest.param((2, 4, 8, 11), (3, 4, 2, 3), (2, 1), (1, 0), (1, 2), id="pairs"),
    pytest.param((8, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1, id="resnet64-32"),
    pytest.param((8, 128, 28, 28), (128, 128, 3, 3), 1, 1, 1, id="resnet128-28", marks=pytest.mark.slow),
]


def _covered(version, param):
    """The (version, geometry) pairs a version takes ('tiled' has its shape class), plus None."""
    x_shape, w_shape, stride, padding, dilation = param.values
    g = _checks.conv2d_dims(x_shape, w_shape, stride, padding, dilation)
    return version is None or _checks.conv2d_fits(g, ops.CONV2D_VERSIONS.index(version))


@pytest.mark.gpu
@pytest.mark.parametrize("version,x_shape,w_shape,stride,padding,dilation", [
    pytest.param(version, *param.values, id=f"{version}-{param.id}", marks=param.marks)
    for version in (*ops.CONV2D_VERSIONS, None) for param in GPU_CONFIGS if _covered(version, param)])
def test_gpu_conv2d_all_passes_against_reference(rng, version, x_shape, w_shape, stride, padding, dilation):
    import cupy

    kwargs = dict(stride=stride, padding=padding, dilation=dilation, version=version)
    x, w, b = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    expected = reference.conv2d(x, w, b, **kwargs)
    y = ops.conv2d(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b), out=cupy.full(expected.shape, cupy.nan,
                                                                                    cupy.float32), **kwargs)
    n, c, _, _ = x_shape
    k, _, r, s = w_shape
    assert_close(y, expected, atol=reduction_atol(c * r * s), name="y")
    dy = randn(rng, *expected.shape)
    dx = ops.conv2d_backward_input(cupy.asarray(dy), cupy.asarray(w), x_shape,
                                   out=cupy.full(x_shape, cupy.nan, cupy.float32), **kwargs)
    assert_close(dx, reference.conv2d_backward_input(dy, w, x_shape, **kwargs), atol=reduction_atol(k * r * s),
                 name="dx")
    dw = ops.conv2d_backward_weight(cupy.asarray(dy), cupy.asarray(x), w_shape,
                                    out=cupy.full(w_shape, cupy.nan, cupy.float32), **kwargs)
    assert_close(dw, reference.conv2d_backward_weight(dy, x, w_shape, **kwargs),
                 atol=reduction_atol(n * expected.shape[2] * expected.shape[3]), name="dw")


@pytest.mark.gpu
def test_gpu_conv2d_against_torch(rng):
    torch_cuda = pytest.importorskip("torch")
    if not torch_cuda.cuda.is_available():
        pytest.skip("PyTorch has no CUDA")
    import torch.nn.functional as tf

    torch_cuda.backends.cudnn.allow_tf32 = False
    x, w = randn(rng, 4, 3, 9, 7), randn(rng, 5, 3, 3, 3)
    xt = torch_cuda.tensor(x, device="cuda", requires_grad=True)
    wt = torch_cuda.tensor(w, device="cuda", requires_grad=True)
    yt = tf.conv2d(xt, wt, stride=2, padding=1, dilation=(1, 2))
    dy = torch_cuda.ones_like(yt)
    yt.backward(dy)
    kwargs = dict(stride=2, padding=1, dilation=(1, 2))
    assert_close(ops.conv2d(xt.detach(), wt.detach(), **kwargs), yt.detach().cpu().numpy(), atol=1e-4)
    assert_close(ops.conv2d_backward_input(dy, wt.detach(), x.shape, **kwargs), xt.grad.cpu().numpy(), atol=1e-4)
    assert_close(ops.conv2d_backward_weight(dy, xt.detach(), w.shape, **kwargs), wt.grad.cpu().numpy(), atol=1e-3)
