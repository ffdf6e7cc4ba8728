"""What a PyTorch user writes, pyfast computes: every op with a torch.nn.functional twin (and
every layer with a torch.nn twin) takes PyTorch's positional order, names and defaults, read
from the installed PyTorch; pyfast's own options are keyword-only. Then the pooling options
(dilation, ceil_mode, divisor_override) and cross_entropy's (weight, ignore_index,
label_smoothing, reduction, probability targets) against PyTorch in float64 on both NumPy
backends and the GPU (emulated in CI), gradients included, and the convolution's padding
strings."""

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
    "cross_entropy": "cross_entropy",
}
LAYER_TWINS = ("Conv2d", "MaxPool2d", "AvgPool2d", "MSELoss", "CrossEntropyLoss")
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
# Kernels whose dilated extent is odd (both sides padded alike) and even (PyTorch's "same" pads
# the bottom / right one more).
PADDING_KERNELS = [((4, 3, 3, 3), 1), ((4, 3, 3, 5), (2, 1)), ((2, 3, 1, 1), 1), ((4, 3, 2, 2), 2),
                   ((4, 3, 2, 2), 1), ((3, 3, 4, 3), 1), ((2, 3, 2, 3), (3, 2))]


@needs_torch
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # PyTorch's own note
@pytest.mark.parametrize("w_shape,dilation", PADDING_KERNELS)
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_padding_strings_match_torch(rng, w_shape, dilation, padding):
    x, w, b = randn(rng, 2, 3, 7, 8), randn(rng, *w_shape), randn(rng, w_shape[0])
    xt, wt = _torch64(x), _torch64(w)
    yt = F.conv2d(xt, wt, torch.tensor(b, dtype=torch.float64), 1, padding, dilation)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    for module in (reference, cpu):
        assert_close(module.conv2d(x, w, b, 1, padding, dilation), yt.detach().numpy(), atol=1e-5)
        assert_close(module.conv2d_backward_input(dy, w, x.shape, padding=padding, dilation=dilation),
                     xt.grad.numpy(), atol=1e-5)
        assert_close(module.conv2d_backward_weight(dy, x, w.shape, padding=padding, dilation=dilation),
                     wt.grad.numpy(), atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("w_shape,dilation", PADDING_KERNELS)
@pytest.mark.parametrize("version", ["direct", "gemm", "implicit", "tiled", None])
def test_gpu_conv_same_padding_every_version_and_pass(rng, w_shape, dilation, version):
    import cupy

    x, w, b = randn(rng, 2, 3, 7, 8), randn(rng, *w_shape), randn(rng, w_shape[0])
    kwargs = dict(padding="same", dilation=dilation, version=version)
    try:
        y = ops.conv2d(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b), **kwargs)
    except ValueError as error:  # the tiled version's class (3x3 / 5x5, dilation 1) refuses the others
        assert version == "tiled" and "version" in str(error)
        return
    assert_close(y, reference.conv2d(x, w, b, 1, "same", dilation), atol=1e-5)
    dy = randn(rng, *y.shape)
    dx = ops.conv2d_backward_input(cupy.asarray(dy), cupy.asarray(w), x.shape, **kwargs)
    assert_close(dx, reference.conv2d_backward_input(dy, w, x.shape, padding="same", dilation=dilation), atol=1e-5)
    dw = ops.conv2d_backward_weight(cupy.asarray(dy), cupy.asarray(x), w.shape, **kwargs)
    assert_close(dw, reference.conv2d_backward_weight(dy, x, w.shape, padding="same", dilation=dilation),
                 atol=1e-4)


def test_conv_same_padding_refusals_name_the_argument():
    x = np.zeros((1, 3, 7, 7), np.float32)
    for module in (reference, cpu):
        with pytest.raises(ValueError, match="padding: 'same' is not supported for strided"):
            module.conv2d(x, np.zeros((2, 3, 3, 3), np.float32), None, 2, "same")
        with pytest.raises(ValueError, match="padding: expected an int, a pair of ints, 'valid' or 'same'"):
            module.conv2d(x, np.zeros((2, 3, 3, 3), np.float32), None, 1, "full")
        with pytest.raises(ValueError, match=r"groups: 2 groups must divide both the 3 input and the 4 output"):
            module.conv2d(x, np.zeros((4, 1, 3, 3), np.float32), None, 1, 0, 1, 2)
        with pytest.raises(ValueError, match=r"weight: expected 1 input channels per group \(3 groups\)"):
            module.conv2d(x, np.zeros((3, 3, 3, 3), np.float32), None, 1, 0, 1, 3)
        with pytest.raises(ValueError, match=r"groups: expected an int >= 1"):
            module.conv2d(x, np.zeros((3, 3, 3, 3), np.float32), groups=0)
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
        with pytest.raises(ValueError, match=r"dim: expected a dimension in \[-2, 2\)"):
            module.softmax(x, 2)
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
    model = nn.Sequential(nn.Conv2d(2, 3, (2, 3), 1, "same", backend=backend),
                          nn.MaxPool2d(3, 2, 1, 2, False, True, backend=backend),
                          nn.AvgPool2d(2, 1, 1, True, False, 3, backend=backend), backend=backend)
    rebuilt = nn.from_config(model.config(), backend=backend)
    assert rebuilt.config() == model.config()
    assert repr(rebuilt) == repr(model)
    rebuilt.load_state_dict(model.state_dict())
    x = randn(rng, 2, 2, 11, 10)
    y = model(x)
    assert_close(rebuilt(x), y, atol=0)
    conv = reference.conv2d(x, model.layers[0].weight, model.layers[0].bias, 1, "same")
    assert conv.shape[2:] == x.shape[2:] and model.layers[0].padding == "same"
    pooled = reference.max_pool2d(conv, 3, 2, 1, 2, True)
    assert_close(y, reference.avg_pool2d(pooled, 2, 1, 1, True, False, 3), atol=1e-5)
    with pytest.raises(ValueError, match="return_indices: a layer returns the pooled output only"):
        nn.MaxPool2d(2, return_indices=True, backend=backend)


# ------------------------------------------------------------------------ cross_entropy
# (rows, classes, options): each option alone and together, ignored labels, every row ignored,
# a single class, many classes (several 32-lane steps per row).
CE_CASES = [
    pytest.param(7, 5, {}, id="plain"),
    pytest.param(9, 6, {"weight": True}, id="weight"),
    pytest.param(8, 4, {"ignore": 3}, id="ignore_index"),
    pytest.param(6, 7, {"label_smoothing": 0.2}, id="smoothing"),
    pytest.param(11, 9, {"weight": True, "ignore": 4, "label_smoothing": 0.1}, id="all"),
    pytest.param(5, 3, {"ignore": 5}, id="all-ignored"),
    pytest.param(4, 1, {"label_smoothing": 0.3}, id="one-class"),
    pytest.param(3, 70, {"weight": True, "label_smoothing": 0.05, "ignore": 1}, id="70-classes"),
]


def _ce_inputs(rng, rows, classes, options, probabilities):
    x = randn(rng, rows, classes, scale=3.0)
    weight = rng.uniform(0.2, 2.0, classes).astype(np.float32) if options.get("weight") else None
    if probabilities:
        target = rng.uniform(0.0, 1.0, (rows, classes)).astype(np.float32)
        target /= target.sum(axis=1, keepdims=True)
        return x, target, weight, -100
    ignore_index = -100 if "ignore" not in options else -7
    target = rng.integers(0, classes, rows)
    target[: options.get("ignore", 0)] = ignore_index
    return x, target, weight, ignore_index


def _torch_ce(x, target, weight, ignore_index, reduction, smoothing):
    xt = _torch64(x)
    tt = torch.tensor(target, dtype=torch.float64 if target.dtype == np.float32 else torch.int64)
    wt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    loss = F.cross_entropy(xt, tt, wt, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    (loss.sum() if reduction == "none" else loss).backward()
    return loss.detach().numpy(), xt.grad.numpy()


def _ce_case_args(rng, rows, classes, options, probabilities):
    x, target, weight, ignore_index = _ce_inputs(rng, rows, classes, options, probabilities)
    return x, target, weight, ignore_index, options.get("label_smoothing", 0.0)


@needs_torch
@pytest.mark.parametrize("rows,classes,options", CE_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("probabilities", [False, True], ids=["labels", "probabilities"])
def test_cross_entropy_matches_torch(rng, rows, classes, options, reduction, probabilities):
    x, target, weight, ignore_index, smoothing = _ce_case_args(rng, rows, classes, options, probabilities)
    expected_loss, expected_grad = _torch_ce(x, target, weight, ignore_index, reduction, smoothing)
    for module, tolerance in ((reference, 1e-6), (cpu, 1e-5)):
        out = np.full(x.shape, np.nan, np.float32)
        loss, grad = module.cross_entropy(x, target, weight, None, ignore_index, None, reduction, smoothing,
                                          out_grad=out)
        assert grad is out
        assert loss.shape == expected_loss.shape
        assert_close(loss, expected_loss, atol=tolerance, rtol=tolerance)
        assert_close(grad, expected_grad, atol=tolerance, rtol=tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize("rows,classes,options", CE_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("probabilities", [False, True], ids=["labels", "probabilities"])
def test_gpu_cross_entropy_against_reference(rng, rows, classes, options, reduction, probabilities):
    import cupy

    x, target, weight, ignore_index, smoothing = _ce_case_args(rng, rows, classes, options, probabilities)
    if not probabilities:
        target = target.astype(np.int32 if rows % 2 else np.int64)
    expected_loss, expected_grad = reference.cross_entropy(x, target, weight, None, ignore_index, None, reduction,
                                                           smoothing)
    out = cupy.full(x.shape, cupy.nan, cupy.float32)
    loss, grad = ops.cross_entropy(cupy.asarray(x), cupy.asarray(target), None if weight is None else
                                   cupy.asarray(weight), None, ignore_index, None, reduction, smoothing, out_grad=out)
    assert grad is out
    assert_close(loss, expected_loss, atol=2e-5, rtol=2e-5)
    assert_close(grad, expected_grad, atol=2e-6, rtol=2e-5)


@pytest.mark.gpu
def test_gpu_cross_entropy_invalid_labels_are_counted_and_nan(rng):
    import cupy

    x = cupy.asarray(randn(rng, 4, 3))
    labels = cupy.asarray(np.array([0, 3, -100, -1], np.int64))
    with pytest.raises(ValueError, match=r"target: 2 label\(s\) outside \[0, 3\) .* not ignore_index=-100"):
        ops.cross_entropy(x, labels)
    loss, grad = ops.cross_entropy(x, labels, validate=False, reduction="none")
    got = grad.get()
    assert np.isnan(loss.get()[[1, 3]]).all() and np.isnan(got[[1, 3]]).all()
    assert loss.get()[2] == 0 and (got[2] == 0).all() and np.isfinite(got[0]).all()


CE_ERRORS = [
    (lambda m, x, y: m.cross_entropy(x, y, reduction="max"), ValueError, "reduction: expected one of"),
    (lambda m, x, y: m.cross_entropy(x, y, label_smoothing=1.5), ValueError, "label_smoothing: expected a value"),
    (lambda m, x, y: m.cross_entropy(x, y, ignore_index=1.0), TypeError, "ignore_index: expected an int"),
    (lambda m, x, y: m.cross_entropy(x, y, np.ones(4, np.float32)), ValueError, r"weight: expected shape \(3,\)"),
    (lambda m, x, y: m.cross_entropy(x, y, size_average=True), ValueError, "size_average: deprecated"),
    (lambda m, x, y: m.cross_entropy(x.reshape(-1), y), ValueError, r"input: expected \(N, C\) or \(N, C, d1"),
    (lambda m, x, y: m.cross_entropy(x.reshape(4, 3, 1), y), ValueError, r"target: expected shape \(4, 1\)"),
    (lambda m, x, y: m.cross_entropy(x, y.astype(np.float64)), TypeError, "target: expected int32 / int64"),
    (lambda m, x, y: m.cross_entropy(x, x[:, :2].copy()), ValueError, r"target: expected shape \(4, 3\)"),
    (lambda m, x, y: m.cross_entropy(x, np.array([0, 1, 3, 0])), ValueError, r"target: 1 label\(s\) outside"),
]


@pytest.mark.parametrize("make_call,error,message", CE_ERRORS)
@pytest.mark.parametrize("module", [reference, cpu], ids=["reference", "cpu"])
def test_cross_entropy_errors_name_the_argument(module, make_call, error, message):
    with pytest.raises(error, match=message):
        make_call(module, np.zeros((4, 3), np.float32), np.array([0, 1, 2, 0]))


@needs_torch
@pytest.mark.parametrize("options", [{}, {"ignore_index": 2}, {"weight": [1.0, 2.0, 0.5], "label_smoothing": 0.1,
                                                                  "reduction": "sum"}])
def test_cross_entropy_layer_is_torchs(rng, options):
    x, labels = randn(rng, 6, 3), np.array([0, 2, 1, 2, 0, 1])
    layer = nn.CrossEntropyLoss(**options, backend="numpy")
    loss, grad = layer(x, labels)
    expected, expected_grad = _torch_ce(x, labels, None if "weight" not in options else
                                        np.array(options["weight"], np.float32), options.get("ignore_index", -100),
                                        options.get("reduction", "mean"), options.get("label_smoothing", 0.0))
    assert_close(loss, expected, atol=1e-5)
    assert_close(grad, expected_grad, atol=1e-5)
    assert layer.config()["reduction"] == options.get("reduction", "mean")


def _position_targets(rng, shape, probabilities, ignore_index, ignored):
    """Targets of (N, C, d1, ...) logits: probabilities of the logits' shape (normalized over
    the classes), or (N, d1, ...) class indices with the positions `ignored` (a slice of the
    flat array) set to ignore_index."""
    if probabilities:
        target = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        return target / target.sum(axis=1, keepdims=True)
    target = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    target.reshape(-1)[ignored] = ignore_index
    return target


@needs_torch
@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (3, 6, 7), (1, 3, 1, 1, 2)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("probabilities", [False, True], ids=["labels", "probabilities"])
def test_cross_entropy_over_positions_matches_torch(rng, shape, reduction, probabilities):
    """(N, C, d1, ...) logits: a loss per position, the classes along axis 1."""
    x = randn(rng, *shape, scale=2.0)
    weight = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    target = _position_targets(rng, shape, probabilities, -1, slice(None, None, 4))
    expected_loss, expected_grad = _torch_ce(x, target, weight, -1, reduction, 0.1)
    for module in (reference, cpu):
        loss, grad = module.cross_entropy(x, target, weight, None, -1, None, reduction, 0.1)
        assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
        assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (3, 40, 7), (1, 3, 1, 1, 2)])
@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("probabilities", [False, True], ids=["labels", "probabilities"])
def test_gpu_cross_entropy_over_positions_against_reference(rng, shape, reduction, probabilities):
    import cupy

    x = randn(rng, *shape, scale=2.0)
    target = _position_targets(rng, shape, probabilities, 5000, slice(1, None, 3))
    if not probabilities:
        target = target.astype(np.int32)
    expected_loss, expected_grad = reference.cross_entropy(x, target, None, None, 5000, None, reduction, 0.2)
    out = cupy.full(shape, cupy.nan, cupy.float32)
    loss, grad = ops.cross_entropy(cupy.asarray(x), cupy.asarray(target), None, None, 5000, None, reduction, 0.2,
                                   out_grad=out)
    assert loss.shape == expected_loss.shape
    assert_close(loss, expected_loss, atol=2e-5, rtol=2e-5)
    assert_close(grad, expected_grad, atol=2e-6, rtol=2e-5)


SOFTMAX_CASES = [((5,), None), ((2, 3, 4), None), ((2, 3, 4), 2), ((2, 3, 4), -3), ((2, 5, 3, 4), 1),
                 ((3, 4, 2, 2), 3), ((4, 0), 1), ((0, 3), 1), ((2, 0, 3), 1)]


@needs_torch
@pytest.mark.parametrize("shape,dim", SOFTMAX_CASES)
def test_softmax_over_any_axis_matches_torch(rng, shape, dim):
    x = randn(rng, *shape, scale=3.0)
    xt = torch.tensor(x, dtype=torch.float64)
    for module in (reference, cpu):
        for name in ("softmax", "log_softmax"):
            expected = getattr(F, name)(xt, dim if dim is not None else (0 if len(shape) in (1, 3) else 1)).numpy()
            out = np.full(shape, np.nan, np.float32)
            got = getattr(module, name)(x, dim, out=out)
            assert got is out and got.shape == expected.shape
            assert_close(got, expected, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("shape,dim", SOFTMAX_CASES)
def test_gpu_softmax_over_any_axis_against_reference(rng, shape, dim):
    import cupy

    x = randn(rng, *shape, scale=3.0)
    for name in ("softmax", "log_softmax"):
        out = cupy.full(shape, cupy.nan, cupy.float32)
        got = getattr(ops, name)(cupy.asarray(x), dim, out=out)
        assert got is out
        assert_close(got, getattr(reference, name)(x, dim), atol=1e-6)


def test_losses_say_the_backend_moved_to_a_keyword():
    for make in (lambda: nn.CrossEntropyLoss("numpy"), lambda: nn.MSELoss(nn.get_backend("numpy"))):
        with pytest.raises(TypeError, match="pass the backend as backend="):
            make()


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_reductions_match_torch(rng, reduction):
    x, t = randn(rng, 3, 5, 7), randn(rng, 3, 5, 7)
    xt = _torch64(x)
    expected = F.mse_loss(xt, torch.tensor(t, dtype=torch.float64), reduction=reduction)
    (expected.sum() if reduction == "none" else expected).backward()
    for module in (reference, cpu):
        loss, grad = module.mse_loss(x, t, reduction=reduction)
        assert loss.shape == expected.shape
        assert_close(loss, expected.detach().numpy(), atol=1e-5, rtol=1e-5)
        assert_close(grad, xt.grad.numpy(), atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 8), (1,)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gpu_mse_loss_reductions_against_reference(rng, shape, reduction):
    import cupy

    x, t = randn(rng, *shape), randn(rng, *shape)
    expected_loss, expected_grad = reference.mse_loss(x, t, reduction=reduction)
    out = cupy.full(shape, cupy.nan, cupy.float32)
    loss, grad = ops.mse_loss(cupy.asarray(x), cupy.asarray(t), reduction=reduction, out_grad=out)
    assert grad is out and loss.shape == expected_loss.shape
    assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert_close(grad, expected_grad, atol=1e-6)


# ---------------------------------------------------------------- grouped convolution
# (x shape, weight shape, groups, stride, padding, dilation): two groups, depthwise (groups = C)
# with a channel multiplier of 1 and 2, "same" padding, strides and dilations, 1x1 groups.
GROUPED = [
    pytest.param((2, 4, 7, 8), (6, 2, 3, 3), 2, 1, 1, 1, id="two-groups"),
    pytest.param((2, 6, 9, 7), (6, 1, 3, 3), 6, 1, "same", 1, id="depthwise"),
    pytest.param((1, 3, 8, 8), (6, 1, 5, 5), 3, 2, 2, 1, id="depthwise-x2-stride2"),
    pytest.param((2, 4, 9, 9), (4, 1, 3, 3), 4, 1, 2, 2, id="depthwise-dilated"),
    pytest.param((2, 8, 5, 6), (4, 2, 1, 1), 4, 1, 0, 1, id="grouped-1x1"),
    pytest.param((1, 4, 6, 7), (4, 2, 2, 3), 2, 1, "same", 1, id="grouped-same-even"),
]


@needs_torch
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # PyTorch's own note
@pytest.mark.parametrize("x_shape,w_shape,groups,stride,padding,dilation", GROUPED)
def test_grouped_conv_matches_torch(rng, x_shape, w_shape, groups, stride, padding, dilation):
    x, w, b = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    xt, wt, bt = _torch64(x), _torch64(w), _torch64(b)
    yt = F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    dy = randn(rng, *yt.shape)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    for module in (reference, cpu):
        out = np.full(yt.shape, np.nan, np.float32)
        assert module.conv2d(x, w, b, stride, padding, dilation, groups, out=out) is out
        assert_close(out, yt.detach().numpy(), atol=1e-5)
        assert_close(module.conv2d_backward_input(dy, w, x_shape, **geometry), xt.grad.numpy(), atol=1e-5)
        dw, db = module.conv2d_backward_weight(dy, x, w_shape, bias=True, **geometry)
        assert_close(dw, wt.grad.numpy(), atol=1e-4)
        assert_close(db, bt.grad.numpy(), atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("x_shape,w_shape,groups,stride,padding,dilation", GROUPED)
@pytest.mark.parametrize("version", ["direct", "implicit", None])
def test_gpu_grouped_conv_against_reference(rng, x_shape, w_shape, groups, stride, padding, dilation, version):
    import cupy

    x, w, b = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, w_shape[0])
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    expected = reference.conv2d(x, w, b, activation="relu", **geometry)
    out = cupy.full(expected.shape, cupy.nan, cupy.float32)
    y = ops.conv2d(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b), activation="relu", out=out, version=version,
                   **geometry)
    assert y is out
    assert_close(y, expected, atol=1e-5)
    dy = randn(rng, *expected.shape)
    dx = ops.conv2d_backward_input(cupy.asarray(dy), cupy.asarray(w), x_shape, version=version,
                                   out=cupy.full(x_shape, cupy.nan, cupy.float32), **geometry)
    assert_close(dx, reference.conv2d_backward_input(dy, w, x_shape, **geometry), atol=1e-5)
    dw, db = ops.conv2d_backward_weight(cupy.asarray(dy), cupy.asarray(x), w_shape, bias=True, version=version,
                                        out=cupy.full(w_shape, cupy.nan, cupy.float32), **geometry)
    expected_dw, expected_db = reference.conv2d_backward_weight(dy, x, w_shape, bias=True, **geometry)
    assert_close(dw, expected_dw, atol=1e-4)
    assert_close(db, expected_db, atol=1e-4)
    if expected.shape[2] >= 2 and expected.shape[3] >= 2:
        pooled, indices = ops.conv2d_max_pool2d(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b),
                                                activation="relu", version=version, **geometry)
        ref_pooled, ref_indices = reference.conv2d_max_pool2d(x, w, b, activation="relu", **geometry)
        assert_close(pooled, ref_pooled, atol=1e-5)


def test_grouped_conv_layer_computes_and_keeps_groups(rng):
    layer = nn.Conv2d(4, 6, 3, 1, 1, 1, 2, backend="numpy")
    assert layer.weight.shape == (6, 2, 3, 3) and "groups=2" in repr(layer)
    rebuilt = nn.from_config(layer.config(), backend="numpy")
    assert rebuilt.weight.shape == layer.weight.shape and rebuilt.groups == 2
    x = randn(rng, 2, 4, 5, 5)
    y = layer(x)
    assert_close(y, reference.conv2d(x, layer.weight, layer.bias, 1, 1, 1, 2), atol=1e-5)
    layer.requires_input_grad = True
    dx = layer.backward(np.ones_like(y))
    assert_close(dx, reference.conv2d_backward_input(np.ones_like(y), layer.weight, x.shape, padding=1, groups=2),
                 atol=1e-5)
