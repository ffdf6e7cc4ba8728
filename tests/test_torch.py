"""pyfast.torch: pyfast's kernels as PyTorch custom ops, layers and an optimizer. Every op through
torch.library.opcheck (schema, autograd registration, fake tensor, AOT dispatch with dynamic
shapes); forward and gradients against PyTorch in float64 with every output poisoned first; the
layers against torch.nn (state_dict keys, checkpoints both ways, swap_modules, whole-model
save / load); a small CNN on the shipped digits trained a few steps with pyfast layers and with
plain PyTorch from the same weights; torch.compile(fullgraph=True). On the CPU emulator in CI
(CPU tensors stand in for CUDA ones); the stream and CUDA-graph tests need a real GPU."""

import io
import warnings

import numpy as np
import pytest

import pyfast
import pyfast.data

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import pyfast.torch as pt  # noqa: E402
from pyfast.torch import _bridge  # noqa: E402

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(pyfast.emulator.enabled(), reason="needs a CUDA GPU (PyTorch streams and CUDA "
                                                                   "graphs; the emulator runs on CPU tensors)")


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every output pyfast.torch allocates starts as NaN (-1 for indices)."""
    monkeypatch.setattr(_bridge, "poison_outputs", True)


def device():
    return _bridge.device_type()


def tensor(rng, *shape, scale=1.0, grad=True):
    t = torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32)).to(device())
    return t.requires_grad_(grad)


def assert_matches(actual, expected, atol, rtol=1e-4, name="result"):
    """`actual` (float32, pyfast) against `expected` (float64, PyTorch), NaN nowhere."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: NaN (an unwritten output element?)"
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def check_against_torch(pyfast_fn, torch_fn, inputs, atol=1e-4, rtol=1e-4):
    """Forward and every input's gradient: pyfast in float32 against PyTorch in float64 on the
    same values, with a random upstream gradient."""
    out = pyfast_fn(*inputs)
    doubles = [x.detach().double().requires_grad_(x.requires_grad) if x.is_floating_point() else x for x in inputs]
    expected = torch_fn(*doubles)
    assert_matches(out, expected, atol, rtol, "forward")
    upstream = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    wanted = [i for i, x in enumerate(inputs) if x.requires_grad]
    grads = torch.autograd.grad(out, [inputs[i] for i in wanted], upstream.float().to(out.device))
    expected_grads = torch.autograd.grad(expected, [doubles[i] for i in wanted], upstream)
    for i, g, e in zip(wanted, grads, expected_grads):
        assert_matches(g, e, atol, rtol, f"gradient of input {i}")


# ---------------------------------------------------------------------- without a GPU
@pytest.mark.skipif(pyfast.is_available(), reason="checks the message where pyfast has no GPU and no emulator")
def test_without_a_gpu_the_ops_say_how_to_run_them():
    with pytest.raises(ValueError, match=r"input: expected a CUDA tensor .*PYFAST_EMULATE=1"):
        pt.relu(torch.ones(3))
    assert hasattr(torch.ops.pyfast, "conv2d")  # registered at import, GPU or not


# ---------------------------------------------------------------------------- ops
def _opcheck_cases(rng):
    x, w, b = tensor(rng, 2, 3, 7, 9), tensor(rng, 4, 3, 3, 3), tensor(rng, 4)
    logits, labels = tensor(rng, 5, 7), torch.from_numpy(rng.integers(0, 7, 5)).to(device())
    labels[1] = -100
    big = tensor(rng, 2, 3, 8, 8)
    return {
        "conv2d": (x, w, b, [1, 2], [1, 0], "", [1, 1], 1, False),
        "conv2d relu same": (x, w, None, [1, 1], [0, 0], "same", [2, 1], 1, True),
        "conv2d groups": (tensor(rng, 2, 4, 6, 6), tensor(rng, 4, 2, 3, 3), b, [1, 1], [1, 1], "", [1, 1], 2, False),
        "conv2d_max_pool2d": (big, w, b, [1, 1], [1, 1], "", [1, 1], 1, True),
        "linear": (tensor(rng, 2, 3, 5), tensor(rng, 6, 5), tensor(rng, 6), True),
        "matmul": (tensor(rng, 3, 5), tensor(rng, 6, 5), False, True),
        "matmul trans_a": (tensor(rng, 5, 3), tensor(rng, 5, 6), True, False),
        "max_pool2d": (x, [3, 2], [2, 2], [1, 1], [1, 1], True),
        "avg_pool2d": (x, [3, 3], [2, 2], [1, 1], False, False, None),
        "avg_pool2d divisor": (x, [2, 2], [1, 1], [0, 0], True, True, 3),
        "relu": (tensor(rng, 4, 5),),
        "softmax": (tensor(rng, 3, 4, 5), 1, False),
        "log_softmax": (tensor(rng, 3, 5), -1, True),
        "cross_entropy": (logits, labels, None, -100, "mean", 0.0, True),
        "cross_entropy options": (logits, labels.clamp(min=0), tensor(rng, 7, grad=False).abs(), -100, "none", 0.1,
                                  True),
        "mse_loss": (tensor(rng, 4, 5), tensor(rng, 4, 5), "sum"),
        # the backward ops (their inputs need no gradient: they have no backward of their own)
        "conv2d_backward": (tensor(rng, 2, 4, 7, 4, grad=False), x.detach(), w.detach(), None, [1, 2], [1, 0], "",
                            [1, 1], 1, [True, True, True]),
        "conv2d_backward relu input only": (tensor(rng, 2, 4, 7, 9, grad=False), x.detach(), w.detach(),
                                            tensor(rng, 2, 4, 7, 9, grad=False), [1, 1], [0, 0], "same", [1, 1], 1,
                                            [True, False, False]),
        "linear_backward": (tensor(rng, 6, 4, grad=False), tensor(rng, 6, 5, grad=False),
                            tensor(rng, 4, 5, grad=False), tensor(rng, 6, 4, grad=False), [True, True, True]),
        "max_pool2d_backward": (tensor(rng, 2, 3, 3, 4, grad=False), torch.zeros(2, 3, 3, 4, dtype=torch.int64,
                                                                                  device=device()),
                                [2, 3, 7, 9], [2, 2], [2, 2], [0, 0], [1, 1], False, None),
        "avg_pool2d_backward": (tensor(rng, 2, 3, 4, 5, grad=False), [2, 3, 7, 9], [3, 3], [2, 2], [1, 1], False,
                                True, None),
        "relu_backward": (tensor(rng, 4, 5, grad=False), tensor(rng, 4, 5, grad=False)),
        "softmax_backward": (tensor(rng, 3, 5, grad=False), torch.softmax(tensor(rng, 3, 5, grad=False), 1), 1,
                             False),
    }


OPCHECK_CASES = ["conv2d", "conv2d relu same", "conv2d groups", "conv2d_max_pool2d", "linear", "matmul",
                 "matmul trans_a", "max_pool2d", "avg_pool2d", "avg_pool2d divisor", "relu", "softmax", "log_softmax",
                 "cross_entropy", "cross_entropy options", "mse_loss", "conv2d_backward",
                 "conv2d_backward relu input only", "linear_backward", "max_pool2d_backward", "avg_pool2d_backward",
                 "relu_backward", "softmax_backward"]


@gpu
@pytest.mark.parametrize("case", OPCHECK_CASES)
def test_opcheck(case, rng):
    """torch.library.opcheck: the schema is honest (no aliasing or mutation it does not declare),
    the autograd registration, the fake tensor implementation against the real one, and AOT
    autograd with dynamic shapes."""
    cases = _opcheck_cases(rng)
    assert list(cases) == OPCHECK_CASES
    args = cases[case]
    op = getattr(torch.ops.pyfast, case.split()[0].replace("log_softmax", "softmax"))
    results = torch.library.opcheck(op.default, args)
    assert set(results.values()) == {"SUCCESS"}, results


@gpu
@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), ((1, 2), (2, 0), (2, 1), 1), (1, "same", 1, 1), (1, "valid", 1, 1), (1, 1, 1, 2),
    (1, 1, 1, 6)])
def test_conv2d(rng, stride, padding, dilation, groups):
    x, w, b = tensor(rng, 3, 6, 11, 9), tensor(rng, 6, 6 // groups, 3, 3), tensor(rng, 6)
    check_against_torch(lambda *a: pt.conv2d(*a, stride, padding, dilation, groups),
                        lambda *a: F.conv2d(*a, stride, padding, dilation, groups), [x, w, b], atol=1e-4)


@gpu
def test_conv2d_without_bias_and_gradient_of_input_only(rng):
    x, w = tensor(rng, 2, 3, 10, 10), tensor(rng, 5, 3, 5, 5, grad=False)
    check_against_torch(lambda *a: pt.conv2d(*a, padding=2), lambda *a: F.conv2d(*a, padding=2), [x, w])


@gpu
def test_fused_conv2d_relu_and_pool(rng):
    x, w, b = tensor(rng, 2, 3, 12, 10), tensor(rng, 8, 3, 3, 3), tensor(rng, 8)
    check_against_torch(lambda *a: pt.conv2d(*a, padding=1, activation="relu"),
                        lambda *a: F.relu(F.conv2d(*a, padding=1)), [x, w, b])
    check_against_torch(lambda *a: pt.conv2d_max_pool2d(*a, padding=1, activation="relu"),
                        lambda *a: F.max_pool2d(F.relu(F.conv2d(*a, padding=1)), 2), [x, w, b])
    check_against_torch(lambda *a: pt.conv2d_max_pool2d(*a), lambda *a: F.max_pool2d(F.conv2d(*a), 2), [x, w, b])


@gpu
@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_and_matmul(rng, activation):
    x, w, b = tensor(rng, 2, 7, 33), tensor(rng, 17, 33), tensor(rng, 17)
    relu = F.relu if activation else (lambda y: y)
    check_against_torch(lambda *a: pt.linear(*a, activation=activation), lambda *a: relu(F.linear(*a)), [x, w, b])
    check_against_torch(pt.linear, F.linear, [x, w])
    check_against_torch(pt.matmul, torch.matmul, [tensor(rng, 9, 33), tensor(rng, 33, 5)])


@gpu
@pytest.mark.parametrize("kernel_size,stride,padding,dilation,ceil_mode", [
    (2, None, 0, 1, False), (3, 2, 1, 1, True), ((3, 2), (1, 2), (1, 0), (2, 1), False)])
def test_pooling(rng, kernel_size, stride, padding, dilation, ceil_mode):
    x = tensor(rng, 2, 3, 11, 10)
    check_against_torch(lambda t: pt.max_pool2d(t, kernel_size, stride, padding, dilation, ceil_mode),
                        lambda t: F.max_pool2d(t, kernel_size, stride, padding, dilation, ceil_mode), [x])
    y, indices = pt.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    _, expected = F.max_pool2d(x.double(), kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    assert indices.dtype == torch.int64 and torch.equal(indices.cpu(), expected.cpu())
    if dilation == 1:
        for count_include_pad, divisor in ((True, None), (False, None), (True, 5)):
            check_against_torch(lambda t: pt.avg_pool2d(t, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                                        divisor),
                                lambda t: F.avg_pool2d(t, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                                       divisor), [x])


@gpu
def test_relu_and_softmax(rng):
    x = tensor(rng, 4, 6, 5)
    check_against_torch(pt.relu, F.relu, [x])
    for dim in (0, 1, -1):
        check_against_torch(lambda t: pt.softmax(t, dim), lambda t: F.softmax(t, dim), [x], atol=1e-6)
        check_against_torch(lambda t: pt.log_softmax(t, dim), lambda t: F.log_softmax(t, dim), [x], atol=1e-5)
    check_against_torch(lambda t: pt.softmax(t, -1), lambda t: F.softmax(t, -1), [tensor(rng, 3, 1500)], atol=1e-6)


@gpu
def test_relu_inplace_writes_the_input(rng):
    x = tensor(rng, 5, 4, grad=False)
    expected = F.relu(x)
    assert pt.relu(x, inplace=True) is x
    assert torch.equal(x, expected)


@gpu
@pytest.mark.parametrize("options", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.2},
                                     {"weight": True}, {"ignore_index": 2}, {"spatial": True},
                                     {"probabilities": True}])
def test_cross_entropy(rng, options):
    options = dict(options)
    shape = (6, 5, 3, 2) if options.pop("spatial", False) else (9, 5)
    x = tensor(rng, *shape, scale=3.0)
    target_shape = (shape[0], *shape[2:])
    if options.pop("probabilities", False):
        target = torch.softmax(tensor(rng, *shape, grad=False), 1)
    else:
        target = torch.from_numpy(rng.integers(0, 5, target_shape)).to(device())
        target.view(-1)[0] = options.get("ignore_index", -100)
    if options.pop("weight", False):
        options["weight"] = tensor(rng, 5, grad=False).abs() + 0.5
    weight = options.pop("weight", None)
    check_against_torch(lambda t, w: pt.cross_entropy(t, target, w, **options),
                        lambda t, w: F.cross_entropy(t, target if target.dtype == torch.int64 else target.double(), w,
                                                     **options),
                        [x, weight if weight is not None else torch.ones(5, device=device())], atol=1e-5)


@gpu
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(rng, reduction):
    check_against_torch(lambda a, b: pt.mse_loss(a, b, reduction=reduction),
                        lambda a, b: F.mse_loss(a, b, reduction=reduction),
                        [tensor(rng, 7, 13), tensor(rng, 7, 13)], atol=1e-5)


@gpu
def test_non_contiguous_inputs_are_made_contiguous(rng):
    x = tensor(rng, 2, 9, 8, 3, grad=False).permute(0, 3, 1, 2)  # channels last
    w = tensor(rng, 4, 3, 3, 3, grad=False)
    assert not x.is_contiguous()
    assert_matches(pt.conv2d(x, w), F.conv2d(x.double(), w.double()), 1e-4)
    a, weight = tensor(rng, 6, 4, grad=False).t(), tensor(rng, 3, 6, grad=False)  # a: a transposed view
    assert not a.is_contiguous()
    assert_matches(pt.linear(a, weight), F.linear(a.double(), weight.double()), 1e-5)
    assert_matches(pt.relu(a), F.relu(a.double()), 0)


@gpu
def test_bad_arguments_are_named(rng):
    x = tensor(rng, 2, 3, 6, 6, grad=False)
    w = tensor(rng, 4, 3, 3, 3, grad=False)
    with pytest.raises(TypeError, match=r"conv2d: input: expected dtype torch.float32, got torch.float64"):
        pt.conv2d(x.double(), w)
    with pytest.raises(ValueError, match=r"weight"):
        pt.conv2d(x, tensor(rng, 4, 2, 3, 3, grad=False))
    with pytest.raises(ValueError, match=r"relu: input: expected a .*, got a tensor on meta"):
        pt.relu(torch.empty(3, device="meta"))
    with pytest.raises(ValueError, match=r"linear: weight: expected a .*, got a tensor on meta"):
        pt.linear(x.view(-1, 6), torch.empty(4, 6, device="meta"))
    with pytest.raises(TypeError, match=r"target: expected dtype"):
        pt.cross_entropy(tensor(rng, 3, 4), torch.zeros(3, dtype=torch.int16, device=device()))
    with pytest.raises(ValueError, match=r"target: requires grad"):
        pt.cross_entropy(tensor(rng, 3, 4), torch.softmax(tensor(rng, 3, 4), 1))
    with pytest.raises(ValueError, match=r"mse_loss: weight"):
        pt.mse_loss(x, x, weight=torch.ones_like(x))
    with pytest.raises(ValueError, match=r"reduction"):
        pt.mse_loss(x, x, reduction="average")
    with pytest.raises(ValueError, match=r"matmul: input: expected a 2-D tensor"):
        pt.matmul(x, w)
    with pytest.raises(ValueError, match=r"activation"):
        pt.linear(x, w.view(4, -1)[:, :6].contiguous(), activation="gelu")
    with pytest.raises(ValueError, match=r"padding_mode: only 'zeros'"):
        pt.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    with pytest.raises(TypeError, match=r"relu: input: expected a dense \(strided\) tensor, got layout "
                                        r"torch.sparse_coo"):
        pt.relu(torch.ones(3, 3, device=device()).to_sparse())
    with pytest.raises(TypeError, match=r"relu: input: expected a torch.Tensor, got builtins.list"):
        pt.relu([1.0, -1.0])
    with pytest.raises(TypeError, match=r"max_pool2d: kernel_size: expected an int or a pair of ints, got 2.5"):
        pt.max_pool2d(x, 2.5)
    with pytest.raises(ValueError, match=r"kernel_size: expected values >= 1"):
        pt.max_pool2d(x, 0)
    with pytest.raises(ValueError, match=r"labels|target"):  # a label neither in [0, C) nor ignore_index
        pt.cross_entropy(tensor(rng, 3, 4), torch.tensor([0, 4, 1], device=device()))


# -------------------------------------------------------------------------- layers
def make_cnn(layers):
    """The small CNN of the digits workload (8x8 images), from `layers` (torch.nn or pyfast.torch.nn)."""
    return torch.nn.Sequential(
        layers.Conv2d(1, 8, 3, padding=1), layers.ReLU(), layers.MaxPool2d(2),
        layers.Conv2d(8, 16, 3, padding=1), layers.ReLU(), layers.AvgPool2d(2),
        torch.nn.Flatten(), layers.Linear(64, 10)).to(device())


def digits(count=64):
    images, labels = pyfast.data.load_digits(size=8)
    return torch.from_numpy(images[:count]).to(device()), torch.from_numpy(labels[:count]).to(device())


@gpu
def test_layers_keep_torch_nn_state_dicts_both_ways(rng):
    torch.manual_seed(0)
    plain, fast = make_cnn(torch.nn), make_cnn(pt.nn)
    assert list(plain.state_dict()) == list(fast.state_dict())
    fast.load_state_dict(plain.state_dict())
    x, _ = digits(16)
    assert_matches(fast(x), plain.double()(x.double()), 1e-4)
    buffer = io.BytesIO()
    torch.save(fast.state_dict(), buffer)
    buffer.seek(0)
    restored = make_cnn(torch.nn)
    restored.load_state_dict(torch.load(buffer))
    assert_matches(fast(x), restored.double()(x.double()), 1e-4)


@gpu
def test_whole_model_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = make_cnn(pt.nn)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert isinstance(loaded[0], pt.nn.Conv2d)
    x, _ = digits(8)
    assert torch.equal(loaded(x), model(x))


@gpu
def test_swap_modules_in_place():
    torch.manual_seed(0)
    model = torch.nn.Sequential(make_cnn(torch.nn), torch.nn.BatchNorm1d(10),
                                torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))
    conv_weight = model[0][0].weight
    x, _ = digits(16)
    model.eval()
    expected = model[1](model[0](x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = pt.nn.swap_modules(model)
    assert report.swapped == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.7"]
    assert list(report.kept) == ["2"] and "padding_mode='reflect'" in report.kept["2"]
    assert any("kept 1 module" in str(w.message) for w in caught)
    assert type(model[0][0]) is pt.nn.Conv2d and model[0][0].weight is conv_weight
    assert type(model[1]) is torch.nn.BatchNorm1d
    assert_matches(model[1](model[0](x)), expected.double(), 1e-5)


@gpu
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_cnn_trains_as_plain_pytorch(optimizer):
    """A few steps of the digits CNN: pyfast layers (and pyfast's Adam) against plain PyTorch
    from the same weights; losses and weights agree to float32 tolerance."""
    torch.manual_seed(0)
    plain, fast = make_cnn(torch.nn), make_cnn(pt.nn)
    fast.load_state_dict(plain.state_dict())
    loss_plain, loss_fast = torch.nn.CrossEntropyLoss(), pt.nn.CrossEntropyLoss()
    make = {"sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),) * 2,
            "adam": (lambda p: torch.optim.Adam(p, lr=0.01), lambda p: pt.optim.Adam(p, lr=0.01)),
            "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01), lambda p: pt.optim.AdamW(p, lr=0.01))}[optimizer]
    opt_plain, opt_fast = make[0](plain.parameters()), make[1](fast.parameters())
    x, labels = digits(128)
    for step in range(4):
        batch = slice(32 * step, 32 * step + 32)
        losses = []
        for model, loss_fn, opt in ((plain, loss_plain, opt_plain), (fast, loss_fast, opt_fast)):
            opt.zero_grad()
            loss = loss_fn(model(x[batch]), labels[batch])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6), f"step {step}"
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert_matches(q, p.double(), 2e-5, 1e-4, name)
    if optimizer != "sgd":
        assert set(opt_fast.state_dict()["state"][0]) == set(opt_plain.state_dict()["state"][0])


@gpu
def test_adam_marks_its_parameters_modified_as_an_in_place_update_would():
    """A graph that saved a parameter before the step refuses to backpropagate through it after,
    as with torch.optim.Adam, instead of silently using the new values."""
    layer = pt.nn.Linear(4, 3).to(device())
    opt = pt.optim.Adam(layer.parameters())
    x = torch.ones(2, 4, device=device(), requires_grad=True)
    loss = layer(x).sum()
    loss.backward(retain_graph=True)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@gpu
def test_torch_compile_fullgraph():
    """torch.compile(fullgraph=True) on a model of pyfast layers: one graph (a break would
    raise), the pyfast ops in it as custom ops, and the same loss and gradients as eager."""
    torch.manual_seed(0)
    model = make_cnn(pt.nn)
    loss_fn = pt.nn.CrossEntropyLoss()
    x, labels = digits(32)
    seen = []

    def recording_backend(gm, example_inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    def forward_loss(x, labels):
        return loss_fn(model(x), labels)

    def step(f):
        loss = f(x, labels)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return loss.detach(), grads

    expected_loss, expected_grads = step(forward_loss)
    torch._dynamo.reset()
    step(torch.compile(forward_loss, fullgraph=True, backend=recording_backend))
    assert {"pyfast.conv2d", "pyfast.relu", "pyfast.max_pool2d", "pyfast.avg_pool2d", "pyfast.linear",
            "pyfast.cross_entropy"} <= set(seen), seen
    torch._dynamo.reset()
    loss, grads = step(torch.compile(forward_loss, fullgraph=True))  # inductor
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- a real GPU only
@gpu
@needs_cuda
def test_runs_on_pytorchs_current_stream_and_in_cuda_graphs(rng):
    x, w, b = (t.detach() for t in (tensor(rng, 8, 3, 16, 16), tensor(rng, 4, 3, 3, 3), tensor(rng, 4)))
    expected = F.conv2d(x, w, b, padding=1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        on_side = pt.conv2d(x, w, b, padding=1)
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(on_side, expected, atol=1e-4, rtol=1e-4)
    graph = torch.cuda.CUDAGraph()
    static_x = x.clone()
    with torch.cuda.stream(side):  # warm-up off the capture
        pt.conv2d(static_x, w, b, padding=1)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        static_y = pt.conv2d(static_x, w, b, padding=1)
    static_x.copy_(x * 2)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_y, F.conv2d(x * 2, w, b, padding=1), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- the benchmark case
@gpu
def test_the_benchmarks_pyfast_torch_step_trains_the_torch_model():
    """bench_train's "pyfast.torch layers in PyTorch" case, on a small batch: every layer of
    the PyTorch CNN swapped, the same first loss as PyTorch, and a step that lowers it."""
    from benchmarks.bench_train import pyfast_torch_step

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).to(device())
    x, labels = digits(32)
    expected = F.cross_entropy(net(x), labels).item()
    first, step = pyfast_torch_step(torch, net, x, labels)
    assert type(net[0]) is pt.nn.Conv2d and type(net[9]) is pt.nn.Linear
    assert first == pytest.approx(expected, rel=1e-5)
    for _ in range(3):
        step()
    assert F.cross_entropy(net(x), labels).item() < first


# ------------------------------------------------------------------ signatures
FUNCTIONAL = ["conv2d", "linear", "max_pool2d", "avg_pool2d", "relu", "softmax", "log_softmax", "cross_entropy",
              "mse_loss"]
LAYERS = ["Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "ReLU", "Softmax", "LogSoftmax", "CrossEntropyLoss", "MSELoss"]


@pytest.mark.parametrize("name", FUNCTIONAL)
def test_functional_signatures_are_pytorchs(name):
    """Positional order, names and defaults read from the installed PyTorch; pyfast's own
    options keyword-only after them."""
    import inspect

    from test_torch_parity import _torch_parameters

    twin = getattr(F, "_max_pool2d" if name == "max_pool2d" else name)
    ours = [(p.name, p.default) for p in inspect.signature(getattr(pt, name)).parameters.values()
            if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert ours == _torch_parameters(twin)


@pytest.mark.parametrize("name", LAYERS)
def test_layers_are_torch_nn_modules(name):
    layer = getattr(pt.nn, name)
    assert issubclass(layer, getattr(torch.nn, name)) and pt.nn.SWAPS[getattr(torch.nn, name)] is layer
