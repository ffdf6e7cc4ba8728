"""What a PyTorch user reaches for in pyfast.nn / pyfast.optim (CPU, NumPy backend): layers and
optimizers that refuse bad settings when built, named parameters, state dicts, a readable
repr, optimizers over model.parameters(), and per-epoch learning-rate schedules (against
PyTorch's when it is installed)."""

import math

import numpy as np
import pytest

from conftest import randn
from pyfast import nn, optim, reference, train

NUMPY = "numpy"


# ------------------------------------------------------------------ construction checks
@pytest.mark.parametrize("build, error, message", [
    (lambda: nn.Conv2d(1, 2, 0, backend=NUMPY), ValueError, r"kernel_size: expected values >= 1"),
    (lambda: nn.Conv2d(1, 2, (3, 0), backend=NUMPY), ValueError, r"kernel_size: expected values >= 1"),
    (lambda: nn.Conv2d(1, 2, 3.0, backend=NUMPY), TypeError, r"kernel_size: expected an int"),
    (lambda: nn.Conv2d(0, 2, 3, backend=NUMPY), ValueError, r"in_channels: expected an int >= 1"),
    (lambda: nn.Conv2d(1, 2, 3, stride=0, backend=NUMPY), ValueError, r"stride: expected values >= 1"),
    (lambda: nn.Conv2d(1, 2, 3, padding=-1, backend=NUMPY), ValueError, r"padding: expected values >= 0"),
    (lambda: nn.Conv2d(1, 2, 3, dilation="2", backend=NUMPY), TypeError, r"dilation: expected an int"),
    (lambda: nn.Conv2d(1, 2, 3, version="winograd", backend=NUMPY), ValueError, r"version: expected one of"),
    (lambda: nn.MaxPool2d(0, backend=NUMPY), ValueError, r"kernel_size: expected values >= 1"),
    (lambda: nn.MaxPool2d(2, stride=0, backend=NUMPY), ValueError, r"stride: expected values >= 1"),
    (lambda: nn.AvgPool2d(3, padding=2, backend=NUMPY), ValueError, r"padding: expected at most half"),
    (lambda: nn.AvgPool2d(2, count_include_pad="yes", backend=NUMPY), TypeError, r"count_include_pad"),
    (lambda: nn.Linear(2, 3, activation="tanh", backend=NUMPY), ValueError, r"activation: expected one of"),
    (lambda: nn.Linear(-1, 3, backend=NUMPY), ValueError, r"in_features: expected an int >= 1, got -1"),
    (lambda: nn.Linear(2, 2.5, backend=NUMPY), TypeError, r"out_features: expected an int"),
    (lambda: nn.Linear(2, 3, init="orthogonal", backend=NUMPY), ValueError, r"init: expected one of"),
    (lambda: nn.Sequential(nn.ReLU(backend=NUMPY), "relu"), TypeError, r"layers\[1\]: expected a pyfast.nn layer"),
    (lambda: optim.SGD(nn.Linear(2, 2, backend=NUMPY), lr=-1), ValueError, r"lr: expected a finite value >= 0"),
    (lambda: optim.SGD(nn.Linear(2, 2, backend=NUMPY), lr="0.1"), TypeError, r"lr: expected a number"),
    (lambda: optim.SGD(nn.Linear(2, 2, backend=NUMPY), lr=0.1, nesterov=True), ValueError, r"nesterov"),
    (lambda: optim.Adam(nn.Linear(2, 2, backend=NUMPY), lr=float("inf")), ValueError, r"lr: expected a finite"),
    (lambda: optim.Adam(nn.Linear(2, 2, backend=NUMPY), betas=(0.9, 1.5)), ValueError, r"betas\[1\]"),
    (lambda: optim.AdamW(nn.Linear(2, 2, backend=NUMPY), eps=-1e-8), ValueError, r"eps: expected"),
    (lambda: optim.Adam(nn.Linear(2, 2, backend=NUMPY), capturable=1), TypeError, r"capturable"),
])
def test_bad_settings_are_refused_at_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


# ------------------------------------------------------------------ names, state, repr
def test_named_parameters_follow_pytorch_names():
    model = train.cnn_model(NUMPY)
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "8.weight", "8.bias"]
    assert all(a is b for a, b in zip(model.parameters(), dict(model.named_parameters()).values()))
    assert list(model.state_dict()) == names
    # Each parameter's gradient array (what PyTorch keeps in param.grad), found from the array.
    assert all(nn.gradient_of(p) is g for p, g in zip(model.parameters(), model.gradients()))
    assert nn.gradient_of(model[7].weight.copy()) is None


def test_load_state_dict_copies_in_place_and_checks_everything():
    source, target = train.cnn_model(NUMPY, seed=1), train.cnn_model(NUMPY, seed=2)
    arrays = target.parameters()
    target.load_state_dict(source.state_dict())
    for a, b, same in zip(source.parameters(), target.parameters(), arrays):
        np.testing.assert_array_equal(a, b)
        assert b is same  # in place: an optimizer (or a captured graph) keeps training these arrays
    state = {name: value.copy() for name, value in source.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing \['8.bias'\], unexpected \['9.bias'\]"):
        target.load_state_dict({**{k: v for k, v in state.items() if k != "8.bias"}, "9.bias": state["8.bias"]})
    target.load_state_dict({k: v for k, v in state.items() if k != "8.bias"}, strict=False)
    before = [p.copy() for p in target.parameters()]
    bad = dict(state, **{"0.weight": state["0.weight"] + 1, "7.weight": state["7.weight"][:5]})
    with pytest.raises(ValueError, match=r"state\['7.weight'\]: expected shape \(128, 3136\), got \(5, 3136\)"):
        target.load_state_dict(bad)
    for a, b in zip(before, target.parameters()):  # nothing written, not even the entries that fitted
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match=r"state\['0.bias'\]: expected a numeric array"):
        target.load_state_dict(dict(state, **{"0.bias": np.array(["x"] * 32)}))


def test_repr_reads_like_pytorch():
    assert repr(train.cnn_model(NUMPY)) == """Sequential(
  (0): Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
  (1): ReLU()
  (2): MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
  (3): Conv2d(32, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
  (4): ReLU()
  (5): MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
  (6): Flatten()
  (7): Linear(in_features=3136, out_features=128, activation='relu')
  (8): Linear(in_features=128, out_features=10)
)"""
    assert repr(nn.AvgPool2d(3, 2, 1, count_include_pad=False, backend=NUMPY)) == \
        "AvgPool2d(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), count_include_pad=False)"
    assert repr(nn.Conv2d(2, 4, (2, 3), dilation=2, version="gemm", backend=NUMPY)) == \
        "Conv2d(2, 4, kernel_size=(2, 3), stride=(1, 1), dilation=(2, 2), version='gemm')"
    nested = repr(nn.Sequential(nn.Sequential(nn.ReLU(backend=NUMPY)), nn.Flatten(backend=NUMPY)))
    assert nested == "Sequential(\n  (0): Sequential(\n    (0): ReLU()\n  )\n  (1): Flatten()\n)"


# ------------------------------------------------------------------ optimizers
def _steps(rng_seed, make_optimizer, steps=4):
    """Parameters of a small model after `steps` updates from fixed data."""
    rng = np.random.default_rng(rng_seed)
    model = nn.Sequential(nn.Linear(5, 4, activation="relu", rng=rng, backend=NUMPY),
                          nn.Linear(4, 3, rng=rng, backend=NUMPY))
    optimizer = make_optimizer(model)
    x, dy = randn(rng, 8, 5), randn(rng, 8, 3)
    for _ in range(steps):
        model.forward(x)
        model.backward(dy)
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("make", [
    lambda params: optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda params: optim.Adam(params, lr=0.05, weight_decay=0.1),
    lambda params: optim.AdamW(params, lr=0.05),
])
def test_optimizers_take_model_parameters_as_well_as_the_model(make):
    by_model, _ = _steps(3, make)
    by_parameters, _ = _steps(3, lambda model: make(model.parameters()))
    by_generator, _ = _steps(3, lambda model: make(p for p in model.parameters()))
    for a, b, c in zip(by_model.parameters(), by_parameters.parameters(), by_generator.parameters()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_an_optimizer_over_some_parameters_trains_only_those():
    untouched = _steps(3, lambda model: optim.SGD(model, lr=0.0))[0].parameters()
    model, optimizer = _steps(3, lambda model: optim.SGD(model[1].parameters(), lr=0.1))
    assert len(optimizer.params) == 2
    np.testing.assert_array_equal(model.parameters()[0], untouched[0])  # the first layer stays
    assert np.abs(model.parameters()[2] - untouched[2]).max() > 0


def test_optimizer_parameter_lists_are_checked():
    model = nn.Linear(3, 2, backend=NUMPY)
    with pytest.raises(TypeError, match=r"params\[1\]: not a parameter of a pyfast layer"):
        optim.SGD([model.weight, np.zeros(2, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[1\]: listed twice"):
        optim.SGD([model.weight, model.weight], lr=0.1)
    with pytest.raises(ValueError, match=r"params: an empty list"):
        optim.Adam([])
    with pytest.raises(TypeError, match=r"params: expected a model or an iterable"):
        optim.Adam(model.weight)
    with pytest.raises(TypeError, match=r"params\[0\]: parameter groups"):
        optim.Adam([{"params": model.parameters()}])
    replaced = model.weight
    model.weight = model.weight.copy()  # no longer the trained array
    with pytest.raises(TypeError, match=r"params\[0\]: not a parameter"):
        optim.SGD([replaced], lr=0.1)


@pytest.mark.parametrize("make", [
    lambda model: optim.SGD(model, lr=0.1, momentum=0.9),
    lambda model: optim.Adam(model, lr=0.05, betas=(0.8, 0.99)),
    lambda model: optim.Adam(model, lr=0.05, capturable=True),
])
def test_optimizer_state_dict_continues_the_run_exactly(make):
    """An optimizer restored from state_dict() (NumPy copies, as a checkpoint holds them) takes
    the same next steps as the one that kept running."""
    running, optimizer = _steps(5, make, steps=3)
    saved_state = optimizer.state_dict()
    saved = {k: v for k, v in saved_state.items() if k != "state"}
    saved["state"] = {name: [np.array(a, copy=True) for a in arrays] for name, arrays in saved_state["state"].items()}
    weights = {name: p.copy() for name, p in running.state_dict().items()}
    continued, _ = _steps(5, make, steps=0)
    continued.load_state_dict(weights)
    restored = make(continued)
    restored.load_state_dict(saved)
    assert restored.hyperparameters() == optimizer.hyperparameters()
    rng = np.random.default_rng(9)
    x, dy = randn(rng, 8, 5), randn(rng, 8, 3)
    for model, opt in ((running, optimizer), (continued, restored)):
        for _ in range(2):
            model.forward(x)
            model.backward(dy)
            opt.step()
    for a, b in zip(running.parameters(), continued.parameters()):
        np.testing.assert_array_equal(a, b)


def test_optimizer_load_state_dict_refuses_what_does_not_fit():
    _, adam = _steps(1, lambda model: optim.Adam(model, lr=0.05), steps=2)
    _, sgd = _steps(1, lambda model: optim.SGD(model, lr=0.1, momentum=0.5), steps=2)
    with pytest.raises(ValueError, match=r"state: saved from a SGD optimizer, this one is Adam"):
        adam.load_state_dict(sgd.state_dict())
    state = adam.state_dict()
    bad = dict(state, hyperparameters=dict(state["hyperparameters"], lr=0.5),
               state=dict(state["state"], exp_avg=state["state"]["exp_avg"][:3]))
    before = adam.hyperparameters()
    with pytest.raises(ValueError, match=r"state\['state'\]\['exp_avg'\]: expected 4 arrays"):
        adam.load_state_dict(bad)
    assert adam.hyperparameters() == before  # nothing changed
    with pytest.raises(ValueError, match=r"lr: expected a finite value"):
        adam.load_state_dict(dict(state, hyperparameters=dict(state["hyperparameters"], lr=-1)))
    with pytest.raises(ValueError, match=r"state\['steps'\]"):
        adam.load_state_dict(dict(state, steps=-3))


# ------------------------------------------------------------------ schedules
def _lrs(scheduler, epochs):
    rates = []
    for _ in range(epochs):
        rates.append(scheduler.optimizer.lr)
        scheduler.step()
    return rates


def test_step_and_cosine_schedules():
    model = nn.Linear(2, 2, backend=NUMPY)
    step = optim.StepLR(optim.SGD(model, lr=0.1), step_size=3, gamma=0.5)
    assert _lrs(step, 7) == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025], rel=1e-15)
    cosine = optim.CosineAnnealingLR(optim.Adam(model, lr=0.01), T_max=4, eta_min=0.001)
    rates = _lrs(cosine, 5)
    assert rates[0] == 0.01  # exactly the optimizer's lr to start with
    expected = [0.001 + 0.009 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert rates == pytest.approx(expected, rel=1e-14)
    assert cosine.get_last_lr() == [cosine.optimizer.lr]


def test_schedules_match_pytorch():
    torch = pytest.importorskip("torch")
    for ours, theirs in [
        (lambda o: optim.StepLR(o, 2, 0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.3)),
        (lambda o: optim.CosineAnnealingLR(o, 7, 1e-4), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, 1e-4)),
    ]:
        torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.02)
        schedule = theirs(torch_optimizer)
        expected = []
        for _ in range(10):
            expected.append(torch_optimizer.param_groups[0]["lr"])
            torch_optimizer.step()
            schedule.step()
        assert _lrs(ours(optim.SGD(nn.Linear(2, 2, backend=NUMPY), lr=0.02)), 10) == pytest.approx(expected, rel=1e-9)


def test_schedule_state_round_trip_and_checks():
    model = nn.Linear(2, 2, backend=NUMPY)
    cosine = optim.CosineAnnealingLR(optim.SGD(model, lr=0.1), T_max=10)
    _lrs(cosine, 4)
    resumed = optim.CosineAnnealingLR(optim.SGD(model, lr=0.1), T_max=10)
    resumed.load_state_dict(cosine.state_dict())
    assert resumed.optimizer.lr == cosine.optimizer.lr and _lrs(resumed, 3) == _lrs(cosine, 3)
    with pytest.raises(ValueError, match=r"expected the state_dict\(\) of a CosineAnnealingLR"):
        resumed.load_state_dict(optim.StepLR(optim.SGD(model, lr=0.1), 2).state_dict())
    with pytest.raises(ValueError, match=r"T_max: expected an int >= 1"):
        resumed.load_state_dict(dict(cosine.state_dict(), T_max=0))
    with pytest.raises(ValueError, match=r"step_size: expected an int >= 1"):
        optim.StepLR(optim.SGD(model, lr=0.1), 0)
    with pytest.raises(ValueError, match=r"gamma: expected a finite value >= 0"):
        optim.StepLR(optim.SGD(model, lr=0.1), 2, gamma=-0.5)
    with pytest.raises(TypeError, match=r"optimizer: expected a pyfast optimizer"):
        optim.StepLR(model, 2)


def _train_step_gradients(model, rng):
    x = randn(rng, 3, 1, 28, 28)
    labels = rng.integers(0, 10, 3)
    output = model.forward(x)
    _, grad = reference.softmax_cross_entropy(output, labels)
    returned = model.backward(grad)
    return returned, [np.array(g, copy=True) for g in model.gradients()]


def test_first_layer_input_gradient_is_skipped_and_parameter_gradients_stay_identical():
    model = train.cnn_model(NUMPY, seed=3)
    assert not model.requires_input_grad
    assert [layer.requires_input_grad for layer in model] == [False] + [True] * (len(model) - 1)
    returned, skipped = _train_step_gradients(model, np.random.default_rng(0))
    assert returned is None
    assert not any(key[0] == "dx" for key in model[0]._buffers)  # the first conv never made a dx
    model.requires_input_grad = True
    assert all(layer.requires_input_grad for layer in model)
    returned, full = _train_step_gradients(model, np.random.default_rng(0))
    assert returned.shape == (3, 1, 28, 28)
    for a, b in zip(skipped, full):
        assert np.array_equal(a, b)  # bit for bit


def test_requires_input_grad_through_nested_and_parameter_free_layers():
    relu, inner_linear, outer_linear = nn.ReLU(backend=NUMPY), nn.Linear(4, 3, backend=NUMPY), nn.Linear(3, 2,
                                                                                                          backend=NUMPY)
    inner = nn.Sequential(relu, inner_linear)
    model = nn.Sequential(nn.Flatten(backend=NUMPY), inner, outer_linear)
    # Everything up to and including the first layer with parameters (inner, through its Linear) skips dx.
    assert [model[0].requires_input_grad, relu.requires_input_grad, inner_linear.requires_input_grad,
            outer_linear.requires_input_grad] == [False, False, False, True]
    middle = nn.Sequential(nn.Linear(4, 4, backend=NUMPY), nn.Sequential(nn.ReLU(backend=NUMPY),
                                                                         nn.Linear(4, 2, backend=NUMPY)))
    assert middle[1].requires_input_grad and all(layer.requires_input_grad for layer in middle[1])
    rng = np.random.default_rng(1)
    x = randn(rng, 5, 4)
    middle.forward(x)
    assert middle.backward(randn(rng, 5, 2)) is None
    with pytest.raises(TypeError, match="requires_input_grad"):
        nn.Sequential(nn.ReLU(backend=NUMPY), requires_input_grad=1)
    rebuilt = nn.from_config(nn.Sequential(nn.Linear(2, 2, backend=NUMPY), requires_input_grad=True).config(), NUMPY)
    assert rebuilt.requires_input_grad and rebuilt[0].requires_input_grad


def _unfused_forward(model, x):
    for layer in model:
        x = layer.forward(x)
    return x


def _unfused_backward(model, dy):
    for layer in reversed(model.layers):
        dy = layer.backward(dy)
    return dy


def test_sequential_fuses_conv_relu_and_relu_pool_with_the_same_numbers():
    """Forward, a Conv2d followed by a ReLU runs as one conv with the ReLU in its epilogue;
    backward, a ReLU followed by a MaxPool2d runs as one pool gradient that skips windows whose
    maximum is <= 0. Outputs and every gradient are bit for bit those of the layers run one
    after the other."""
    rng = np.random.default_rng(2)
    x = randn(rng, 3, 1, 28, 28)
    labels = rng.integers(0, 10, 3)
    results = []
    for fused in (True, False):
        model = train.cnn_model(NUMPY, seed=6)
        model.requires_input_grad = True  # the unfused loop computes every input gradient too
        output = model.forward(x) if fused else _unfused_forward(model, x)
        _, grad = reference.softmax_cross_entropy(output, labels)
        dx = model.backward(grad) if fused else _unfused_backward(model, grad)
        results.append([np.array(output, copy=True), np.array(dx, copy=True)]
                       + [np.array(g, copy=True) for g in model.gradients()])
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)


def test_conv2d_with_a_fused_relu_matches_conv_then_relu():
    rng = np.random.default_rng(3)
    x, dy = randn(rng, 2, 3, 6, 6), randn(rng, 2, 4, 6, 6)
    fused = nn.Conv2d(3, 4, 3, padding=1, rng=np.random.default_rng(0), backend=NUMPY, activation="relu")
    plain = nn.Conv2d(3, 4, 3, padding=1, rng=np.random.default_rng(0), backend=NUMPY)
    relu = nn.ReLU(backend=NUMPY)
    assert np.array_equal(fused.forward(x), relu.forward(plain.forward(x)))
    assert np.array_equal(fused.backward(dy), plain.backward(relu.backward(dy)))
    assert np.array_equal(fused.grad_weight, plain.grad_weight) and np.array_equal(fused.grad_bias, plain.grad_bias)
    assert repr(fused).endswith("activation='relu')")
    assert nn.from_config(fused.config(), NUMPY).activation == "relu"
    with pytest.raises(ValueError, match="activation"):
        nn.Conv2d(3, 4, 3, activation="tanh", backend=NUMPY)
