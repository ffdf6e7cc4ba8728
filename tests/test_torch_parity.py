"""What a PyTorch user writes, pyfast computes: every op with a torch.nn.functional twin (and
every layer with a torch.nn twin) takes PyTorch's positional order, names and defaults, read
from the installed PyTorch; pyfast's own options are keyword-only. Then the pooling options
(dilation, ceil_mode, divisor_override) against PyTorch in float64 on both NumPy backends and
the GPU (emulated in CI), gradients included, and the convolution's padding strings."""

import inspect
import re

import numpy as np
import pytest

from conftest import randn
from pyfast import cpu, nn, ops, reference
from pyfast.testing import assert_close

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

# pyfast op -> the torch.nn.functional function whose signature it takes.
FUNCTIONAL_TWINS = {
    "conv2d": "conv2d",
    "max_pool2d": "_max_pool2d",  # F.max_pool2d dispatches on return_indices to this signature
    "avg_pool2d": "avg_pool2d",
    "relu": "relu",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "mse_loss": "mse_loss",
}
LAYER_TWINS = ("Conv2d", "MaxPool2d", "AvgPool2d")
# Parameters of PyTorch's that pyfast leaves out, each with why. Only the trailing ones may be
# left out (a missing parameter in the middle would shift every positional argument after it)
# except PyTorch's private `_stacklevel`.
LEFT_OUT = {
    ("softmax", "_stacklevel"): "private to PyTorch (its deprecation warning's stack level)",
    ("log_softmax", "_stacklevel"): "private to PyTorch (its deprecation warning's stack level)",
    ("Conv2d", "bias"): "pyfast's layers always have a bias",
    ("Conv2d", "padding_mode"): "zero padding only",
    ("Conv2d", "device"): "the layer's backend decides (backend=)",
    ("Conv2d", "dtype"): "float32 only",
}


def _torch_parameters(function):
    """[(name, default or inspect.Parameter.empty)] of a PyTorch function's positional
    parameters, from its signature or, for a builtin, the first line of its docstring."""
    try:
        parameters = inspect.signature(function).parameters.values()
        if not any(p.kind == p.VAR_POSITIONAL for p in parameters):
            return [(p.name, p.default) for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]
    except (TypeError, ValueError):
        pass
    line = function.__doc__.strip().splitlines()[0]
    match = re.match(r"\w+\((.*)\)", line.split(" -> ")[0])
    found = []
    for item in match.group(1).split(", "):
        name, _, default = item.partition("=")
        found.append((name.strip(), eval(default) if default else inspect.Parameter.empty))  # noqa: S307
    return found


def _check_signature(label, ours, theirs, twin):
    """ours (a callable) takes theirs' positional parameters in order with their defaults
    (but LEFT_OUT), and only keyword-only ones besides."""
    params = inspect.signature(ours).parameters
    positional = [(p.name, p.default) for p in params.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    expected = [(n, d) for n, d in theirs if (twin, n) not in LEFT_OUT]
    assert positional == expected, f"{label}: positional parameters {positional}, PyTorch's {expected}"
    extra = [p.name for p in params.values() if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    assert not extra, f"{label}: *args / **kwargs {extra}"
    # What pyfast leaves out comes at the end of PyTorch's list (or is private).
    names = [n for n, _ in theirs]
    for (name_twin, name), _ in LEFT_OUT.items():
        if name_twin == twin and not name.startswith("_"):
            assert all((twin, later) in LEFT_OUT for later in names[names.index(name):]), (twin, name)


@needs_torch
@pytest.mark.parametrize("module", [ops, reference, cpu], ids=["ops", "reference", "cpu"])
@pytest.mark.parametrize("name", sorted(FUNCTIONAL_TWINS))
def test_functional_signatures_are_pytorchs(module, name):
    theirs = _torch_parameters(getattr(F, FUNCTIONAL_TWINS[name]))
    _check_signature(f"{module.__name__}.{name}", getattr(module, name), theirs, name)


@needs_torch
@pytest.mark.parametrize("name", LAYER_TWINS)
def test_layer_signatures_are_pytorchs(name):
    theirs = _torch_parameters(getattr(torch.nn, name).__init__)
    _check_signature(f"nn.{name}", getattr(nn, name).__init__, [("self", inspect.Parameter.empty)] + theirs[1:]
                     if theirs[0][0] == "self" else theirs, name)


def test_signature_check_fails_on_a_mismatch():
    def swapped(input, kernel_size, stride=None, padding=0, count_include_pad=True, ceil_mode=False):
        pass

    theirs = [("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None),
              ("padding", 0), ("ceil_mode", False), ("count_include_pad", True)]
    with pytest.raises(AssertionError, match="positional parameters"):
        _check_signature("swapped", swapped, theirs, "avg_pool2d")

    def extra_positional(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, out=None):
        pass

    with pytest.raises(AssertionError, match="positional parameters"):
        _check_signature("extra", extra_positional, theirs, "avg_pool2d")


def test_avg_pool2d_fifth_positional_is_ceil_mode():
    """The trap PyTorch users fell into: avg_pool2d(x, 3, 1, 1, False) meant count_include_pad=False."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    for module in (reference, cpu):
        assert_close(module.avg_pool2d(x, 3, 1, 1, False), module.avg_pool2d(x, 3, 1, 1, ceil_mode=False), atol=0)
        assert not np.allclose(module.avg_pool2d(x, 3, 1, 1, False),
                               module.avg_pool2d(x, 3, 1, 1, count_include_pad=False))


# ------------------------------------------------------------------------------ pooling
# (x shape, kernel, stride, padding, dilation, ceil_mode): dilated windows, ceil_mode where it
# adds a window (a last window past the padded input, or starting in the right padding, which
# PyTorch drops), both, non-square, odd sizes.
MAX_CASES = [
    pytest.param((2, 3, 9, 9), 3, 2, 1, 2, False, id="dilated"),
    pytest.param((1, 2, 10, 7), (2, 3), (1, 2), (1, 1), (3, 2), False, id="dilated-rect"),
    pytest.param((2, 2, 7, 7), 2, 2, 0, 1, True, id="ceil-2x2"),
    pytest.param((1, 3, 8, 6), 3, 2, 1, 1, True, id="ceil-padded"),
    pytest.param((1, 2, 5, 5), 2, 2, 1, 1, True, id="ceil-drops-window-in-padding"),
    pytest.param((2, 1, 11, 8), 3, 3, 1, 2, True, id="ceil-dilated"),
    pytest.param((1, 2, 6, 9), (3, 2), (2, 3), (0, 1), (1, 2), True, id="ceil-dilated-rect"),
]
AVG_CASES = [
    pytest.param((2, 2, 7, 7), 2, 2, 0, True, None, id="ceil-2x2"),
    pytest.param((1, 3, 8, 6), 3, 2, 1, True, None, id="ceil-padded"),
    pytest.param((1, 2, 5, 5), 2, 2, 1, True, None, id="ceil-drops-window-in-padding"),
    pytest.param((2, 2, 9, 7), 3, 2, 1, False, 5, id="divisor"),
    pytest.param((1, 2, 8, 9), (3, 2), (2, 3), (1, 1), True, -3, id="ceil-divisor-negative"),
]


def _torch64(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


@needs_torch
@pytest.mark.parametrize("x_shape,kernel,stride,padding,dilation,ceil_mode", MAX_CASES)
def test_max_pool_options_match_torch(rng, x_shape, kernel, stride, padding, dilation, ceil_mode):
    x = randn(rng, *x_shape)
    x[0, 0, 1, :3] = np.nan
    xt = _torch64(x)
    yt, it = F.max_pool2d(xt, kernel, stride, padding, dilation, ceil_mode, True)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    window = (kernel, stride, padding, dilation, ceil_mode)
    for module in (reference, cpu):
        y, indices = module.max_pool2d(x, *window, True)
        assert_close(y, yt.detach().numpy(), atol=0, rtol=0)
        np.testing.assert_array_equal(indices, it.numpy())
        assert_close(module.max_pool2d(x, *window), y, atol=0, rtol=0)  # return_indices=False: y alone
        assert_close(module.max_pool2d_backward(dy, indices, x_shape, *window), xt.grad.numpy(), atol=1e-6)
        assert_close(module.max_pool2d_backward(dy, indices, x_shape), xt.grad.numpy(), atol=1e-6)


@needs_torch
@pytest.mark.parametrize("x_shape,kernel,stride,padding,ceil_mode,divisor", AVG_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_options_match_torch(rng, x_shape, kernel, stride, padding, ceil_mode, divisor, count_include_pad):
    x = randn(rng, *x_shape)
    xt = _torch64(x)
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    yt = F.avg_pool2d(xt, *args)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    for module in (reference, cpu):
        assert_close(module.avg_pool2d(x, *args), yt.detach().numpy(), atol=1e-6)
        assert_close(module.avg_pool2d_backward(dy, x_shape, *args), xt.grad.numpy(), atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape,kernel,stride,padding,dilation,ceil_mode", MAX_CASES)
def test_gpu_max_pool_options_against_reference(rng, x_shape, kernel, stride, padding, dilation, ceil_mode):
    import cupy

    x = randn(rng, *x_shape)
    x.reshape(-1)[::13] = np.nan
    window = (kernel, stride, padding, dilation, ceil_mode)
    ref_y, ref_indices = reference.max_pool2d(x, *window, True)
    out = cupy.full(ref_y.shape, cupy.nan, cupy.float32)
    y, indices = ops.max_pool2d(cupy.asarray(x), *window, True, out=out)
    assert_close(y, ref_y, atol=0, rtol=0)
    np.testing.assert_array_equal(indices.get(), ref_indices)
    dy = randn(rng, *ref_y.shape)
    expected = reference.max_pool2d_backward(dy, ref_indices, x_shape, *window)
    for given_window in (window, ()):  # the gather from the window, the scatter from the indices
        dx = ops.max_pool2d_backward(cupy.asarray(dy), indices, x_shape, *given_window,
                                     out=cupy.full(x_shape, cupy.nan, cupy.float32))
        assert_close(dx, expected, atol=1e-6)
    # The fused bias + ReLU pooling and the ReLU backward folded in, with these windows.
    bias = randn(rng, x_shape[1])
    y, indices = ops.max_pool2d(cupy.asarray(x), *window, True, bias=cupy.asarray(bias), activation="relu")
    ref_y, ref_indices = reference.max_pool2d(x, *window, True, bias=bias, activation="relu")
    assert_close(y, ref_y, atol=0, rtol=0)
    np.testing.assert_array_equal(indices.get(), ref_indices)
    dx = ops.max_pool2d_backward(cupy.asarray(dy), indices, x_shape, *window, relu_output=y)
    assert_close(dx, reference.max_pool2d_backward(dy, ref_indices, x_shape, *window, relu_output=ref_y), atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape,kernel,stride,padding,ceil_mode,divisor", AVG_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_gpu_avg_pool_options_against_reference(rng, x_shape, kernel, stride, padding, ceil_mode, divisor,
                                                count_include_pad):
    import cupy

    x = randn(rng, *x_shape)
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    expected = reference.avg_pool2d(x, *args)
    y = ops.avg_pool2d(cupy.asarray(x), *args, out=cupy.full(expected.shape, cupy.nan, cupy.float32))
    assert_close(y, expected, atol=1e-6)
    dy = randn(rng, *expected.shape)
    dx = ops.avg_pool2d_backward(cupy.asarray(dy), x_shape, *args, out=cupy.full(x_shape, cupy.nan, cupy.float32))
    assert_close(dx, reference.avg_pool2d_backward(dy, x_shape, *args), atol=1e-6)


POOL_ERRORS = [
    (lambda m, a: m.max_pool2d(a(1, 1, 5, 5), 2, dilation=0), ValueError, "dilation: expected values >= 1"),
    (lambda m, a: m.max_pool2d(a(1, 1, 5, 5), 2, ceil_mode=1), TypeError, "ceil_mode: expected True or False"),
    (lambda m, a: m.max_pool2d(a(1, 1, 5, 5), 2, return_indices="yes"), TypeError, "return_indices"),
    (lambda m, a: m.max_pool2d(a(1, 1, 5, 5), 3, dilation=3), ValueError, "input: input 5x5 .* dilated by"),
    (lambda m, a: m.max_pool2d(a(1, 1, 5, 5), 2, out_indices=np.zeros((1, 1, 2, 2), np.int64)), ValueError,
     "out_indices: given with return_indices=False"),
    (lambda m, a: m.avg_pool2d(a(1, 1, 5, 5), 2, divisor_override=0), ValueError, "divisor_override: expected a "
     "non-zero"),
    (lambda m, a: m.avg_pool2d(a(1, 1, 5, 5), 2, divisor_override=1.5), TypeError, "divisor_override"),
    (lambda m, a: m.avg_pool2d_backward(a(1, 1, 3, 3), (1, 1, 5, 5), 2), ValueError, "dy: expected shape"),
    (lambda m, a: m.avg_pool2d_backward(a(1, 1, 3, 3), (1, 1, 5, 5), 2, ceil_mode=True, divisor_override=0),
     ValueError, "divisor_override"),
    (lambda m, a: m.max_pool2d_backward(a(1, 1, 2, 2), np.zeros((1, 1, 2, 2), np.int64), (1, 1, 5, 5),
                                        ceil_mode=True), ValueError, "kernel_size: stride, padding, dilation"),
]


@pytest.mark.parametrize("make_call,error,message", POOL_ERRORS)
@pytest.mark.parametrize("module", [reference, cpu], ids=["reference", "cpu"])
def test_pool_option_errors_name_the_argument(module, make_call, error, message):
    with pytest.raises(error, match=message):
        make_call(module, lambda *shape: np.zeros(shape, np.float32))


# ------------------------------------------------------------------------ convolution
@needs_torch
@pytest.mark.parametrize("w_shape,dilation", [((4, 3, 3, 3), 1), ((4, 3, 3, 5), (2, 1)), ((2, 3, 1, 1), 1),
                                              ((4, 3, 2, 2), 2)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_padding_strings_match_torch(rng, w_shape, dilation, padding):
    x, w, b = randn(rng, 2, 3, 7, 8), randn(rng, *w_shape), randn(rng, w_shape[0])
    expected = F.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                        torch.tensor(b, dtype=torch.float64), 1, padding, dilation).numpy()
    for module in (reference, cpu):
        assert_close(module.conv2d(x, w, b, 1, padding, dilation), expected, atol=1e-5)


def test_conv_same_padding_refusals_name_the_argument():
    x = np.zeros((1, 3, 7, 7), np.float32)
    for module in (reference, cpu):
        with pytest.raises(ValueError, match="padding: 'same' is not supported for strided"):
            module.conv2d(x, np.zeros((2, 3, 3, 3), np.float32), None, 2, "same")
        with pytest.raises(ValueError, match="padding: 'same' for a dilated kernel of even size 2x2"):
            module.conv2d(x, np.zeros((2, 3, 2, 2), np.float32), None, 1, "same")
        with pytest.raises(ValueError, match="padding: expected an int, a pair of ints, 'valid' or 'same'"):
            module.conv2d(x, np.zeros((2, 3, 3, 3), np.float32), None, 1, "full")
        with pytest.raises(ValueError, match=r"groups: grouped and depthwise convolutions \(groups=3\)"):
            module.conv2d(x, np.zeros((3, 1, 3, 3), np.float32), None, 1, 0, 1, 3)
        with pytest.raises(TypeError, match="groups: expected an int"):
            module.conv2d(x, np.zeros((2, 3, 3, 3), np.float32), groups=1.0)


@pytest.mark.gpu
def test_gpu_conv_takes_pytorch_positional_order(rng):
    import cupy

    x, w, b = randn(rng, 2, 3, 9, 8), randn(rng, 4, 3, 3, 3), randn(rng, 4)
    expected = reference.conv2d(x, w, b, 2, 1, 2)
    got = ops.conv2d(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b), 2, 1, 2, 1)
    assert_close(got, expected, atol=1e-5)
    assert_close(ops.conv2d(cupy.asarray(x), cupy.asarray(w), None, 1, "same"),
                 reference.conv2d(x, w, None, 1, 1), atol=1e-5)


# ------------------------------------------------------------- softmax, relu, mse_loss
@needs_torch
def test_softmax_dim_relu_inplace_and_mse_loss_options_match_torch(rng):
    x, t = randn(rng, 5, 7), randn(rng, 5, 7)
    xt = torch.tensor(x, dtype=torch.float64)
    for module in (reference, cpu):
        for dim in (None, 1, -1):
            assert_close(module.softmax(x, dim), F.softmax(xt, 1).numpy(), atol=1e-6)
            assert_close(module.log_softmax(x, dim, np.float32), F.log_softmax(xt, 1).numpy(), atol=1e-6)
        with pytest.raises(ValueError, match="dim: pyfast's softmax runs over the class axis"):
            module.softmax(x, 0)
        with pytest.raises(ValueError, match="dtype: pyfast's softmax computes in float32 only"):
            module.softmax(x, 1, np.float64)
        y = x.copy()
        assert module.relu(y, True) is y
        assert_close(y, F.relu(xt).numpy(), atol=0)
        with pytest.raises(ValueError, match="out: given with inplace=True"):
            module.relu(x, True, out=np.empty_like(x))
        loss, _ = module.mse_loss(x, t, None, None, "sum")
        assert_close(loss, F.mse_loss(xt, torch.tensor(t, dtype=torch.float64), reduction="sum").numpy(), atol=1e-5, rtol=1e-6)
        with pytest.raises(ValueError, match="size_average: deprecated in PyTorch"):
            module.mse_loss(x, t, False)
        with pytest.raises(ValueError, match="reduce: deprecated in PyTorch"):
            module.mse_loss(x, t, None, True)
        with pytest.raises(ValueError, match="weight: a loss weight is not supported"):
            module.mse_loss(x, t, weight=np.ones(7, np.float32))


# ------------------------------------------------------------------------------ layers
@pytest.mark.parametrize("backend", ["numpy"])
def test_pool_layers_keep_their_options_through_a_checkpoint(rng, backend):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, 1, "same", backend=backend),
                          nn.MaxPool2d(3, 2, 1, 2, False, True, backend=backend),
                          nn.AvgPool2d(2, 1, 1, True, False, 3, backend=backend), backend=backend)
    rebuilt = nn.from_config(model.config(), backend=backend)
    assert rebuilt.config() == model.config()
    assert repr(rebuilt) == repr(model)
    rebuilt.load_state_dict(model.state_dict())
    x = randn(rng, 2, 2, 11, 10)
    y = model(x)
    assert_close(rebuilt(x), y, atol=0)
    conv = reference.conv2d(x, model.layers[0].weight, model.layers[0].bias, 1, 1)
    pooled = reference.max_pool2d(conv, 3, 2, 1, 2, True)
    assert_close(y, reference.avg_pool2d(pooled, 2, 1, 1, True, False, 3), atol=1e-5)
    with pytest.raises(ValueError, match="return_indices: a layer returns the pooled output only"):
        nn.MaxPool2d(2, return_indices=True, backend=backend)
