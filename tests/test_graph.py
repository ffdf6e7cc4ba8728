"""Training steps replayed as CUDA graphs (pyfast.graph, fit(graph=...)) and what they rely on:
Adam's device-side step count, per-shape layer buffers that stay put, and the ops keeping
what they allocate during a capture. CPU: the pieces that run on the NumPy backend. GPU: graph
replay against eager steps (bit for bit: the same kernels on the same buffers), the pool not
reusing a graph's memory, the fallbacks, and the CLI with and without graphs."""

import numpy as np
import pytest
from conftest import randn

from pyfast import data as datasets
from pyfast import nn, optim, reference, train

NUMPY = "numpy"


# ------------------------------------------------------------------ CPU
def test_capturable_adam_matches_the_host_step_count(rng):
    models = [nn.Linear(5, 3, rng=np.random.default_rng(1), backend=NUMPY) for _ in range(2)]
    opts = [optim.Adam(models[0], lr=0.05), optim.Adam(models[1], lr=0.05, capturable=True)]
    x = randn(rng, 8, 5)
    for _ in range(4):
        dy = randn(rng, 8, 3)
        for model, opt in zip(models, opts):
            model.forward(x)
            model.backward(dy)
            opt.step()
    assert opts[0].steps == opts[1].steps == 4
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_array_equal(a, b)


def test_reference_adam_counter_is_incremented_and_checked(rng):
    p, g = randn(rng, 4), randn(rng, 4)
    m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
    counter = np.zeros((), np.int64)
    reference.adam_step([p], [g], [m], [v], step=counter)
    assert counter == 1
    with pytest.raises(ValueError, match="step: a step counter must be a 0-d int64"):
        reference.adam_step([p], [g], [m], [v], step=np.zeros(1, np.int64))


def test_layer_buffers_stay_put_across_batch_shapes(rng):
    model = nn.Linear(3, 2, rng=rng, backend=NUMPY)
    first = model.forward(randn(rng, 8, 3))
    model.forward(randn(rng, 4, 3))  # another shape gets its own buffer ...
    assert model.forward(randn(rng, 8, 3)) is first  # ... and the first one is still there
    loss = nn.MSELoss(backend=NUMPY)
    _, grad = loss(randn(rng, 8, 2), randn(rng, 8, 2))
    loss(randn(rng, 4, 2), randn(rng, 4, 2))
    assert loss(randn(rng, 8, 2), randn(rng, 8, 2))[1] is grad


def test_numpy_backend_never_uses_graphs(rng):
    x, y = randn(rng, 20, 3), randn(rng, 20, 1)
    model = nn.Linear(3, 1, rng=rng, backend=NUMPY)
    history = train.fit(model, nn.MSELoss(backend=NUMPY), optim.SGD(model, lr=0.1), (x, y), epochs=2, batch_size=8,
                        progress=False, log=None, graph=True)
    assert history.graphs == 0 and len(history["loss"]) == 2


# ------------------------------------------------------------------ GPU
cupy = pytest.importorskip("cupy")
gpu = pytest.mark.gpu


def _cnn_fit(graph, epochs=2, capturable=True, seed=0, schedule=False):
    (x, y), _, _, _ = train.load_image_data("digits", seed=seed)
    x, y = x[:200], y[:200]  # 3 batches of 64 and a partial batch of 8 per epoch
    model = train.cnn_model("cuda", seed=seed)
    opt = optim.Adam(model, lr=1e-3, capturable=capturable)
    scheduler = optim.StepLR(opt, step_size=1, gamma=0.5) if schedule else None
    lines = []
    history = train.fit(model, nn.CrossEntropyLoss(backend="cuda"), opt, (x, y), epochs=epochs, batch_size=64,
                        progress=False, log=lines.append, graph=graph, seed=seed, scheduler=scheduler)
    return history, [p.get() for p in model.parameters()], lines


@gpu
@pytest.mark.trains
@pytest.mark.parametrize("epochs, schedule, captures", [
    (2, False, 2),  # the full batch and the last partial batch, once each
    # A graph replays the learning rate it was captured with: each epoch of a schedule drops the
    # graphs and captures them anew (epoch 1: the full batch; epochs 2 and 3: both shapes again).
    (3, True, 5),
])
def test_graph_replay_gives_the_eager_numbers_bit_for_bit(epochs, schedule, captures):
    eager, eager_params, _ = _cnn_fit(graph=False, epochs=epochs, schedule=schedule)
    graphed, graphed_params, lines = _cnn_fit(graph=True, epochs=epochs, schedule=schedule)
    assert graphed.graphs == captures, lines
    assert graphed["lr"] == eager["lr"] == [1e-3 * (0.5 ** e if schedule else 1) for e in range(epochs)]
    assert graphed["loss"] == eager["loss"] and graphed["accuracy"] == eager["accuracy"]
    for a, b in zip(graphed_params, eager_params):
        np.testing.assert_array_equal(a, b)


@gpu
@pytest.mark.trains
def test_capturable_adam_matches_host_steps_on_the_gpu():
    host, host_params, _ = _cnn_fit(graph=False, capturable=False)
    device, device_params, _ = _cnn_fit(graph=False, capturable=True)
    np.testing.assert_allclose(device["loss"], host["loss"], rtol=1e-6)
    for a, b in zip(device_params, host_params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@gpu
def test_captured_memory_is_not_handed_out_again(rng):
    from pyfast import _arrays, graph

    # A step whose ops allocate temporaries (bias_grad and mse workspaces, the loss scalar).
    model = nn.Linear(64, 32, rng=rng, backend="cuda")
    loss, opt = nn.MSELoss(backend="cuda"), optim.SGD(model, lr=0.01)
    x, y = cupy.asarray(randn(rng, 256, 64)), cupy.asarray(randn(rng, 256, 32))

    def step():
        value, grad = loss(model.forward(x), y)
        model.backward(grad)
        opt.step()
        return value

    step()  # eager warm-up
    twin = [p.copy() for p in model.parameters()]
    stream = cupy.cuda.Stream(non_blocking=True)
    captured = graph.CapturedStep(step, stream)
    assert _arrays.capture_keepalive is None
    for _ in range(3):
        # Churn the pool: if a captured workspace had been freed, these would take it.
        junk = [cupy.full(n, cupy.nan, cupy.float32) for n in (1, 7, 64, 256, 4096, 8192)]
        captured.replay()
        stream.synchronize()
        del junk
    replayed = [p.copy() for p in model.parameters()]
    for p, t in zip(model.parameters(), twin):
        p[...] = t
    for _ in range(3):
        step()
    for a, b in zip(replayed, model.parameters()):
        assert (a == b).all()
    assert np.isfinite(float(captured.result))


@gpu
@pytest.mark.trains
def test_no_graphs_when_they_cannot_work(monkeypatch):
    from pyfast import _C

    _, _, lines = _cnn_fit(graph=True, epochs=1, capturable=False)
    assert any("capturable=True" in line for line in lines)
    monkeypatch.setattr(_C, "get_sync", lambda: True)
    history, _, lines = _cnn_fit(graph=True, epochs=1)
    assert history.graphs == 0 and any("PYFAST_SYNC" in line for line in lines)


@gpu
@pytest.mark.trains
def test_cnn_cli_with_and_without_graphs(capsys):
    common = ["cnn", "--backend", "cuda", "--epochs", "1", "--limit", "300", "--no-progress"]
    _, with_graph, metrics = train.run_cnn(train.parser().parse_args(common))
    _, without, metrics_eager = train.run_cnn(train.parser().parse_args([*common, "--no-graph"]))
    assert with_graph.graphs >= 1 and without.graphs == 0
    # --no-graph also takes Adam's step count from the host, whose float rounding of the bias
    # correction may differ in the last bit from the device's: close, not bitwise.
    np.testing.assert_allclose(with_graph["loss"], without["loss"], rtol=1e-5)
    assert metrics["loss"] == pytest.approx(metrics_eager["loss"], rel=1e-4)
    assert abs(metrics["accuracy"] - metrics_eager["accuracy"]) <= 0.02


@gpu
def test_linreg_data_through_fit_with_graphs():
    # SGD needs nothing special to be captured; MSE and Linear through fit().
    x, y = datasets.synthetic_regression(100, 2, seed=0)
    results = []
    for graph in (False, True):
        model = nn.Linear(2, 1, rng=np.random.default_rng(0), backend="cuda")
        history = train.fit(model, nn.MSELoss(backend="cuda"), optim.SGD(model, lr=0.01), (x, y), epochs=5, batch_size=32,
                            shuffle=False, progress=False, log=None, graph=graph)
        results.append((history["loss"], [p.get() for p in model.parameters()], history.graphs))
    assert results[1][2] == 2 and results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


@gpu
@pytest.mark.trains
def test_a_failed_capture_falls_back_to_eager_steps(monkeypatch):
    from pyfast import graph

    def refuse(*args, **kwargs):
        raise RuntimeError("capture refused (test)")

    eager, eager_params, _ = _cnn_fit(graph=False)
    monkeypatch.setattr(graph, "CapturedStep", refuse)
    fallback, fallback_params, lines = _cnn_fit(graph=True)
    assert fallback.graphs == 0 and any("capture refused (test)" in line for line in lines)
    assert fallback["loss"] == eager["loss"]
    for a, b in zip(fallback_params, eager_params):
        np.testing.assert_array_equal(a, b)


@gpu
def test_first_layer_skip_and_conv_relu_fusion_keep_gpu_gradients_identical():
    """On the GPU too: the skipped first-layer input gradient and the fused Conv2d + ReLU give
    the parameter gradients of the plain layer-by-layer backward, bit for bit."""
    rng = np.random.default_rng(4)
    x = cupy.asarray(rng.standard_normal((5, 1, 28, 28), dtype=np.float32))
    labels = cupy.asarray(rng.integers(0, 10, 5))
    results = []
    for optimised in (True, False):
        model = train.cnn_model("cuda", seed=2)
        model.requires_input_grad = not optimised
        if optimised:
            output = model.forward(x)
        else:
            output = x
            for layer in model:
                output = layer.forward(output)
        _, grad = nn.CrossEntropyLoss(backend="cuda")(output, labels)
        model.backward(grad)
        results.append([output.get()] + [g.get() for g in model.gradients()])
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)
