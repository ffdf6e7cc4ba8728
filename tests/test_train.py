"""The trainer: layers against finite differences, linear regression against least squares,
the CNN learning real digits, checkpoints, data loading and the CLI (NumPy backend, CPU);
then the same steps on the GPU against the NumPy backend and PyTorch."""

import gzip
import json
import re
import struct

import numpy as np
import pytest

import pyfast.errors
from conftest import numeric_gradient, randn
from pyfast import data as datasets
from pyfast import nn, optim, train
from pyfast.testing import assert_close

NUMPY = nn.Backend("numpy")


# ===================================================================== layers (CPU)
def check_layer_gradients(rng, layer, x):
    """backward(dy) and the parameter gradients against central differences of <forward(x), dy>."""
    dy = randn(rng, *layer.forward(x).shape)

    def loss():
        return float(np.sum(layer.forward(x).astype(np.float64) * dy))

    layer.forward(x)
    dx = np.array(layer.backward(dy), copy=True)
    grads = [np.array(g, copy=True) for g in layer.gradients()]
    assert_close(dx, numeric_gradient(loss, x), atol=3e-3, rtol=3e-3, name=f"{type(layer).__name__} dx")
    for i, (param, grad) in enumerate(zip(layer.parameters(), grads)):
        assert_close(grad, numeric_gradient(loss, param), atol=3e-3, rtol=3e-3, name=f"{type(layer).__name__} p{i}")


def test_linear_and_fused_relu_gradients(rng):
    check_layer_gradients(rng, nn.Linear(5, 3, rng=rng, backend=NUMPY), randn(rng, 4, 5))
    layer = nn.Linear(5, 3, activation="relu", rng=rng, backend=NUMPY)
    while True:  # draw until no pre-activation is within the difference step of ReLU's kink
        x = randn(rng, 4, 5)
        if np.min(np.abs(x.astype(np.float64) @ layer.weight.T + layer.bias)) > 0.05:
            break
    check_layer_gradients(rng, layer, x)


@pytest.mark.parametrize("make", [
    lambda rng: (nn.Conv2d(2, 3, 3, padding=1, rng=rng, backend=NUMPY), (2, 2, 5, 5)),
    lambda rng: (nn.Conv2d(2, 2, (2, 3), stride=2, dilation=(1, 2), rng=rng, backend=NUMPY), (1, 2, 6, 7)),
    lambda rng: (nn.AvgPool2d(3, 2, 1, backend=NUMPY), (1, 2, 6, 5)),
    lambda rng: (nn.MaxPool2d(2, backend=NUMPY), (2, 2, 4, 6)),
    lambda rng: (nn.Flatten(backend=NUMPY), (2, 3, 2, 2)),
])
def test_image_layer_gradients(rng, make):
    layer, shape = make(rng)
    check_layer_gradients(rng, layer, randn(rng, *shape))


def test_sequential_gradients_and_parameter_order(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, rng=rng, backend=NUMPY), nn.AvgPool2d(2, backend=NUMPY),
                          nn.Flatten(backend=NUMPY), nn.Linear(8, 3, rng=rng, backend=NUMPY), requires_input_grad=True)
    assert [p.shape for p in model.parameters()] == [(2, 1, 3, 3), (2,), (3, 8), (3,)]
    assert [g.shape for g in model.gradients()] == [p.shape for p in model.parameters()]
    check_layer_gradients(rng, model, randn(rng, 2, 1, 4, 4))


def test_buffers_are_reused_across_steps(rng):
    layer = nn.Linear(4, 3, rng=rng, backend=NUMPY)
    first = layer.forward(randn(rng, 8, 4))
    second = layer.forward(randn(rng, 8, 4))
    assert first is second  # same batch shape: the same output buffer
    assert layer.forward(randn(rng, 5, 4)).shape == (5, 3)


def test_initialisers():
    rng = np.random.default_rng(0)
    w = nn.init_uniform_default(rng, (1000, 100), 100)
    assert np.abs(w).max() <= 0.1 and np.abs(w).max() > 0.099
    w = nn.init_xavier_uniform(rng, (200, 300), 300, 200)
    assert np.abs(w).max() <= np.sqrt(6 / 500)
    w = nn.init_he_normal(rng, (500, 400), 400)
    assert abs(w.std() - np.sqrt(2 / 400)) < 0.002
    with pytest.raises(ValueError, match="init: expected one of"):
        nn.Linear(2, 2, init="orthogonal", backend=NUMPY)


def test_optimizer_classes_call_the_fused_updates(rng):
    model = nn.Linear(3, 2, rng=rng, backend=NUMPY)
    before = [p.copy() for p in model.parameters()]
    model.forward(randn(rng, 4, 3))
    model.backward(randn(rng, 4, 2))
    opt = optim.Adam(model, lr=0.1)
    opt.step()
    opt.step()
    assert opt.steps == 2
    for p, b in zip(model.parameters(), before):
        assert np.abs(p - b).max() > 0.05  # two Adam steps of lr 0.1 move every weight
    with pytest.raises(ValueError, match="velocity"):
        optim.SGD(model, lr=0.1).backend.ops.sgd_step(model.parameters(), model.gradients(), lr=0.1, momentum=0.5)
    assert optim.AdamW(model).decoupled and optim.AdamW(model).weight_decay == 1e-2


# ==================================================================== workloads (CPU)
def test_linreg_matches_least_squares(capsys):
    model, test_loss = train.run_linreg(train.parser().parse_args(["linreg", "--backend", "numpy"]))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Epoch 100, loss=") and out[9].startswith("Epoch 1000, loss=")
    assert out[10].startswith("Test loss: ")
    losses = [float(line.split("=")[1]) for line in out[:10]]
    assert losses == sorted(losses, reverse=True)  # falls (then flattens)
    x, y = datasets.synthetic_regression(100, 2, seed=0)
    design = np.hstack([x, np.ones((100, 1))]).astype(np.float64)
    solution, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    best = np.mean((design @ solution - y) ** 2)
    assert_close(losses[-1], best, atol=0, rtol=1e-5)
    assert_close(np.concatenate([model.weight.ravel(), model.bias]), solution.ravel(), atol=1e-4)


def test_cnn_learns_real_digits_on_numpy(tmp_path, capsys):
    args = train.parser().parse_args(["cnn", "--data", "digits8", "--epochs", "3", "--batch-size", "32",
                                      "--backend", "numpy", "--no-progress", "--save", str(tmp_path / "m.npz"),
                                      "--plot", str(tmp_path / "c.png")])
    model, history, metrics = train.run_cnn(args)
    out = capsys.readouterr().out
    assert "epoch 3/3" in out and "test accuracy" in out
    assert history["loss"][-1] < history["loss"][0]
    assert metrics["accuracy"] > 0.8, f"10 classes: chance is 0.1, got {metrics['accuracy']}"
    # Reload for inference: the same predictions, bit for bit.
    loaded, stats = train.load(tmp_path / "m.npz", backend="numpy")
    _, _, test, _ = train.load_image_data("digits8")
    np.testing.assert_array_equal(train.predict(loaded, test[0]), train.predict(model, test[0]))
    assert {"mean", "std"} <= set(stats)  # the normalisation, for inference on new images


def test_cli_entry_point_runs(capsys):
    assert train.main(["linreg", "--epochs", "200", "--backend", "numpy", "--features", "3", "--samples", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Epoch 100, loss=") and lines[-1].startswith("Test loss:")


def test_load_rejects_mismatched_checkpoints(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2, backend=NUMPY))
    train.save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = dict(f)
    arrays["param.0.weight"] = np.zeros((5, 5), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"bad.npz: param.0.weight has shape \(5, 5\), the model expects \(2, 3\)"):
        train.load(tmp_path / "bad.npz", backend="numpy")


# ============================================================ fit / evaluate / predict (CPU)
def _tiny_classifier(seed=0):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Flatten(backend=NUMPY), nn.Linear(16, 5, activation="relu", rng=rng, backend=NUMPY),
                          nn.Linear(5, 3, rng=rng, backend=NUMPY))
    x = rng.standard_normal((40, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    return model, nn.CrossEntropyLoss(backend=NUMPY), optim.Adam(model, lr=0.01), x, y


@pytest.mark.parametrize("change, error, message", [
    (lambda x, y: (x, y + 0.9), TypeError, r"train: labels y must be integer class indices, got dtype float64"),
    (lambda x, y: (x, np.concatenate([y, y[:3]])), ValueError, r"train: x has 40 samples but y has 43"),
    (lambda x, y: (x, y[:-1]), ValueError, r"train: x has 40 samples but y has 39"),
    (lambda x, y: (x[:0], y[:0]), ValueError, r"train: no samples"),
    (lambda x, y: (x, y[:, None]), ValueError, r"train: labels y must be a 1-D array"),
    (lambda x, y: (x, y + 1), ValueError, r"train: labels must lie in \[0, 3\), got values from 1 to 3"),
    (lambda x, y: (x, y - 1), ValueError, r"train: labels must lie in \[0, 3\), got values from -1 to 1"),
    (lambda x, y: (x[:, 0, 0, 0], y), ValueError, r"train: x must hold samples along its first axis"),
    (lambda x, y: x, TypeError, r"train: expected a pair \(x, y\)"),
    (lambda x, y: (x.astype(str), y), TypeError, r"train\[0\]: expected a numeric array"),
])
def test_fit_refuses_bad_data_before_training(change, error, message):
    model, loss, optimizer, x, y = _tiny_classifier()
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(error, match=message):
        train.fit(model, loss, optimizer, change(x, y), epochs=1, batch_size=8, progress=False, log=None)
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, b)  # nothing trained
    with pytest.raises(error, match=message.replace("train", "dataset", 1)):
        train.evaluate(model, loss, change(x, y))


@pytest.mark.parametrize("options, error, message", [
    (dict(batch_size=0), ValueError, r"batch_size: expected an int >= 1, got 0"),
    (dict(batch_size=8.0), TypeError, r"batch_size: expected an int"),
    (dict(epochs=-1), ValueError, r"epochs: expected an int >= 0"),
    (dict(initial_epoch=3), ValueError, r"initial_epoch: 3 epochs are already trained, more than epochs=2"),
    (dict(seed=-1), ValueError, r"seed: expected an int >= 0"),
    (dict(augment=-2), ValueError, r"augment: expected an int >= 0"),
    (dict(history={"loss": []}), TypeError, r"history: expected a History"),
])
def test_fit_refuses_bad_settings(options, error, message):
    model, loss, optimizer, x, y = _tiny_classifier()
    with pytest.raises(error, match=message):
        train.fit(model, loss, optimizer, (x, y), **{"epochs": 2, "batch_size": 8, "progress": False, "log": None,
                                                     **options})
    with pytest.raises(ValueError, match=r"val: x has 40 samples but y has 2"):
        train.fit(model, loss, optimizer, (x, y), (x, y[:2]), epochs=1, batch_size=8, progress=False, log=None)
    with pytest.raises(ValueError, match=r"scheduler: it schedules another optimizer"):
        train.fit(model, loss, optimizer, (x, y), epochs=1, batch_size=8, progress=False, log=None,
                  scheduler=optim.StepLR(optim.SGD(model, lr=0.1), 1))


def test_history_holds_per_epoch_lists_and_run_facts_apart():
    model, loss, optimizer, x, y = _tiny_classifier()
    scheduler = optim.StepLR(optimizer, step_size=1, gamma=0.5)
    lines = []
    history = train.fit(model, loss, optimizer, (x, y), (x[:10], y[:10]), epochs=3, batch_size=16, progress=False,
                        log=lines.append, scheduler=scheduler)
    assert isinstance(history, train.History) and set(history) == set(train.PER_EPOCH)
    assert all(len(values) == 3 for values in history.values())
    assert history["epoch"] == [1, 2, 3] and history["lr"] == [0.01, 0.005, 0.0025]
    assert history.graphs == 0 and history.epochs == 3
    assert "lr 0.005" in lines[1] and "val accuracy" in lines[1]
    regression = nn.Linear(3, 1, backend=NUMPY)
    plain = train.fit(regression, nn.MSELoss(backend=NUMPY), optim.SGD(regression, lr=0.1),
                      (x[:, 0, 0, :3], y[:, None].astype(np.float32)), epochs=2, batch_size=16, progress=False,
                      log=None)
    assert plain["accuracy"] == plain["val_loss"] == plain["val_accuracy"] == [None, None]


def test_predict_of_an_empty_input_has_the_output_shape():
    model = train.cnn_model(NUMPY, image_size=8)
    assert train.predict(model, np.zeros((0, 1, 8, 8), np.float32)).shape == (0, 10)
    assert train.predict(model, np.zeros((3, 1, 8, 8), np.float32)).shape == (3, 10)
    with pytest.raises(ValueError, match=r"x: expected samples along the first axis"):
        train.predict(model, np.zeros(3, np.float32))


def test_plot_has_whole_epochs_on_its_axis(tmp_path):
    pytest.importorskip("matplotlib")
    model, loss, optimizer, x, y = _tiny_classifier()
    history = train.fit(model, loss, optimizer, (x, y), (x, y), epochs=3, batch_size=16, progress=False, log=None)
    figure = train.history_figure(history)
    for axis in figure.axes:
        low, high = axis.get_xlim()
        ticks = [t for t in axis.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert train.plot_history(history, tmp_path / "curves.png") and (tmp_path / "curves.png").stat().st_size > 0


# ========================================================================= checkpoints (CPU)
def _write(path, content):
    path.write_text(content) if isinstance(content, str) else np.save(path, content)
    return path


@pytest.mark.parametrize("make, what", [
    (lambda d: _write(d / "notes.txt", "epoch 1: loss 0.3\n"), r"not a NumPy .npz archive"),
    (lambda d: _write(d / "weights.npy", np.zeros(3)), r"a single NumPy array \(.npy\)"),
    (lambda d: np.savez(d / "data.npz", x=np.zeros(3)) or d / "data.npz", r"no 'config' entry; it holds \['x'\]"),
    (lambda d: np.savez(d / "json.npz", config="{not json") or d / "json.npz", r"its 'config' entry is not valid JSON"),
    (lambda d: np.savez(d / "model.npz", config='{"type": "Transformer"}') or d / "model.npz",
     r"its config does not describe a pyfast model"),
    (lambda d: np.savez(d / "layers.npz", config='{"type": "Linear", "in_features": -1}') or d / "layers.npz",
     r"its config does not describe a pyfast model"),
    (lambda d: np.savez(d / "future.npz", format="pyfast-checkpoint-9", config="{}") or d / "future.npz",
     r"format 'pyfast-checkpoint-9'; this pyfast reads 'pyfast-checkpoint-1'"),
    (lambda d: np.savez(d / "epoch.npz", config='{"type": "ReLU"}', training='{"epoch": "two"}') or d / "epoch.npz",
     r"its epoch 'two' is not a count of epochs"),
])
def test_load_says_clearly_what_is_not_a_checkpoint(tmp_path, make, what):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a pyfast checkpoint \({what}"):
        train.load(path, backend="numpy")
    with pytest.raises(FileNotFoundError):
        train.load(tmp_path / "missing.npz", backend="numpy")


def test_save_writes_npz_and_checkpoints_written_by_position_still_load(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2, backend=NUMPY), nn.ReLU(backend=NUMPY), nn.Linear(2, 1, backend=NUMPY))
    written = train.save(model, tmp_path / "m", mean=0.5)
    assert written == str(tmp_path / "m.npz") and not list(tmp_path.glob("*.partial"))
    loaded, metadata = train.load(written, backend="numpy")
    assert metadata == {"mean": 0.5}
    # The format before parameters were saved by name: param_0, param_1, ... in order.
    arrays = {f"param_{i}": p for i, p in enumerate(model.parameters())}
    np.savez(tmp_path / "old.npz", config=json.dumps(model.config()), metadata="{}", **arrays)
    old, _ = train.load(tmp_path / "old.npz", backend="numpy")
    for a, b in zip(old.parameters(), model.parameters()):
        np.testing.assert_array_equal(a, b)


def test_a_run_resumed_from_its_checkpoint_is_the_uninterrupted_run(tmp_path):
    """Train 4 epochs (cosine schedule, augmentation, validation) in one go, or 2, save, then
    load everything into fresh objects and train epochs 3-4: the same weights, bit for bit,
    and the same history."""
    (x, y), val, _, _ = train.load_image_data("digits8")
    x, y = x[:300], y[:300]

    def objects():
        model = train.cnn_model(NUMPY, seed=4, image_size=8)
        optimizer = optim.Adam(model, lr=3e-3)
        return model, optimizer, optim.CosineAnnealingLR(optimizer, T_max=4, eta_min=1e-4)

    common = dict(batch_size=32, seed=7, augment=1, progress=False, log=None)
    model, optimizer, scheduler = objects()
    whole = train.fit(model, nn.CrossEntropyLoss(backend=NUMPY), optimizer, (x, y), val, epochs=4, scheduler=scheduler,
                      **common)
    first, first_optimizer, first_scheduler = objects()
    half = train.fit(first, nn.CrossEntropyLoss(backend=NUMPY), first_optimizer, (x, y), val, epochs=2,
                     scheduler=first_scheduler, **common)
    train.save(first, tmp_path / "half.npz", optimizer=first_optimizer, scheduler=first_scheduler, epoch=2,
               history=half)
    checkpoint = train.load_checkpoint(tmp_path / "half.npz")
    assert checkpoint["epoch"] == 2 and checkpoint["history"]["epoch"] == [1, 2]
    second, second_optimizer, second_scheduler = objects()
    second.load_state_dict(checkpoint["model"])
    second_optimizer.load_state_dict(checkpoint["optimizer"])
    second_scheduler.load_state_dict(checkpoint["scheduler"])
    resumed = train.fit(second, nn.CrossEntropyLoss(backend=NUMPY), second_optimizer, (x, y), val, epochs=4,
                        scheduler=second_scheduler, initial_epoch=2, history=checkpoint["history"], **common)
    for a, b in zip(model.parameters(), second.parameters()):
        np.testing.assert_array_equal(a, b)
    for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert resumed[key] == whole[key], key


# ======================================================================== data (CPU)
def test_batches_keep_the_last_partial_batch_and_shuffle_with_a_seed():
    x, y = np.arange(10, dtype=np.float32)[:, None], np.arange(10)
    sizes = [len(xb) for xb, _ in datasets.batches(x, y, 4)]
    assert sizes == [4, 4, 2]
    first = [yb for _, yb in datasets.batches(x, y, 4, shuffle=True, rng=np.random.default_rng(1))]
    again = [yb for _, yb in datasets.batches(x, y, 4, shuffle=True, rng=np.random.default_rng(1))]
    assert all((a == b).all() for a, b in zip(first, again))
    assert sorted(np.concatenate(first)) == list(range(10))


def test_split_normalize_and_shift():
    x, y = datasets.synthetic_images(100, seed=0)
    train_part, val, test = datasets.split(x, y, (0.8, 0.1, 0.1))
    assert (len(train_part[0]), len(val[0]), len(test[0])) == (80, 10, 10)
    normalised, mean, std = datasets.normalize(train_part[0])
    assert abs(float(normalised.mean())) < 1e-4 and abs(float(normalised.std()) - 1) < 1e-3
    image = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) + 1
    shifted = datasets.random_shift(image, 1, np.random.default_rng(0))
    assert shifted.shape == image.shape and np.isin(shifted[shifted > 0], image).all()
    with pytest.raises(ValueError, match="fractions"):
        datasets.split(x, y, (0.5, 0.1, 0.1))


@pytest.mark.parametrize("max_shift", [1, 3, 7, 8, 20])
def test_random_shift_moves_each_image_and_fills_zeros(max_shift):
    images = np.arange(5 * 2 * 6 * 8, dtype=np.float32).reshape(5, 2, 6, 8) + 1
    shifts = np.random.default_rng(3).integers(-max_shift, max_shift + 1, size=(5, 2))  # what random_shift draws
    out = datasets.random_shift(images, max_shift, np.random.default_rng(3))
    for i, (dy, dx) in enumerate(shifts):
        expected = np.zeros((2, 6, 8), np.float32)
        for r in range(6):
            for c in range(8):
                if 0 <= r - dy < 6 and 0 <= c - dx < 8:
                    expected[:, r, c] = images[i, :, r - dy, c - dx]
        np.testing.assert_array_equal(out[i], expected, err_msg=f"shift {dy, dx}")


def test_digits_are_real_and_resized():
    x, y = datasets.load_digits()
    assert x.shape == (1797, 1, 28, 28) and y.shape == (1797,) and set(y) == set(range(10))
    assert 0 <= x.min() and x.max() <= 1
    x8, _ = datasets.load_digits(8)
    assert x8.shape == (1797, 1, 8, 8)
    assert np.array_equal(x8 * 16, np.round(x8 * 16))  # counts 0..16 of on pixels


@pytest.mark.parametrize("spec", ["digits", "digits8", "synthetic"])
def test_data_handed_to_users_is_c_contiguous_and_feeds_a_model_as_it_is(spec):
    """A hand-written loop over pyfast's own data: slices go to the model without a copy."""
    *splits, _ = train.load_image_data(spec)
    for x, y in splits:
        assert x.flags.c_contiguous and y.flags.c_contiguous and x.dtype == np.float32 and y.dtype == np.int64
    x = splits[0][0]
    for loaded in (datasets.load_digits(), datasets.load_digits(8), datasets.synthetic_images(50),
                   datasets.normalize(x.transpose(0, 1, 3, 2))[:1], datasets.split(x, splits[0][1])[0]):
        assert all(part.flags.c_contiguous for part in loaded)
    model = train.cnn_model(backend="numpy", image_size=x.shape[-1])
    assert model(x[:64]).shape == (min(64, len(x)), 10)


def test_shipped_digits_are_scikit_learns():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    expected = sklearn_datasets.load_digits()
    x8, y = datasets.load_digits(8)
    np.testing.assert_array_equal(x8[:, 0] * 16, expected.images)
    np.testing.assert_array_equal(y, expected.target)


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_files_are_read_not_downloaded(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    (x_train, y_train), (x_test, _) = datasets.load_mnist(str(tmp_path))
    assert x_train.shape == (6, 1, 28, 28) and x_test.shape == (6, 1, 28, 28)
    assert_close(x_train[:, 0] * 255, images, atol=1e-3)
    np.testing.assert_array_equal(y_train, labels)
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    (x_npz, _), _ = datasets.load_mnist(str(tmp_path / "mnist.npz"))
    np.testing.assert_array_equal(x_npz, x_train)
    assert x_npz.flags.c_contiguous and x_train.flags.c_contiguous
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        datasets.load_mnist(str(tmp_path / "missing"))


# ============================================================================== GPU
def _same_steps(backend_name, seed, steps=20):
    """Losses of `steps` Adam steps of a small CNN from fixed weights and batches."""
    backend = nn.get_backend(backend_name)
    model = train.cnn_model(backend, seed=seed, image_size=8)
    loss, opt = nn.CrossEntropyLoss(backend=backend), optim.Adam(model, lr=1e-3)
    x, y = datasets.load_digits(8)
    values = []
    for xb, yb in list(datasets.batches(x, y, 64))[:steps]:
        value, grad = loss(model.forward(backend.asarray(xb)), backend.asarray(yb, dtype=np.int64))
        model.backward(grad)
        opt.step()
        values.append(float(value))
    return values, [backend.to_numpy(p) for p in model.parameters()]


@pytest.mark.gpu
def test_cuda_and_numpy_backends_train_alike():
    cuda_losses, cuda_params = _same_steps("cuda", seed=3)
    numpy_losses, numpy_params = _same_steps("numpy", seed=3)
    assert_close(np.array(cuda_losses), np.array(numpy_losses), atol=1e-4, rtol=1e-4)
    for a, b in zip(cuda_params, numpy_params):
        assert_close(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.gpu
def test_cuda_linreg_matches_numpy(capsys):
    _, cuda_loss = train.run_linreg(train.parser().parse_args(["linreg", "--backend", "cuda"]))
    _, numpy_loss = train.run_linreg(train.parser().parse_args(["linreg", "--backend", "numpy"]))
    assert_close(cuda_loss, numpy_loss, atol=0, rtol=1e-5)


# ============================================================== against PyTorch
def _torch_twin(torch, model, device):
    """The CLI's CNN in PyTorch with our initial weights (same OIHW / (out, in) layouts)."""
    features = model.layers[7].in_features
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(features, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(device)
    with torch.no_grad():
        for ours, theirs in zip([model.layers[i] for i in (0, 3, 7, 8)], [net[i] for i in (0, 3, 7, 9)]):
            theirs.weight.copy_(torch.tensor(model.backend.to_numpy(ours.weight)))
            theirs.bias.copy_(torch.tensor(model.backend.to_numpy(ours.bias)))
    return net


def _twenty_steps_against_torch(backend_name, device):
    torch = pytest.importorskip("torch")
    model = train.cnn_model(backend_name, seed=11, image_size=8)
    net = _torch_twin(torch, model, device)
    loss, opt = nn.CrossEntropyLoss(backend=model.backend), optim.Adam(model, lr=1e-3)
    torch_opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = datasets.load_digits(8)
    for xb, yb in list(datasets.batches(x, y, 64, shuffle=True, rng=np.random.default_rng(2)))[:20]:
        value, grad = loss(model.forward(model.backend.asarray(xb)), model.backend.asarray(yb, dtype=np.int64))
        model.backward(grad)
        opt.step()
        torch_opt.zero_grad()
        expected = torch.nn.functional.cross_entropy(net(torch.tensor(xb, device=device)),
                                                     torch.tensor(yb, device=device))
        expected.backward()
        torch_opt.step()
        assert_close(float(value), expected.item(), atol=1e-4, rtol=1e-4)
    for ours, theirs in zip(model.parameters(), [p for p in net.parameters()]):
        assert_close(model.backend.to_numpy(ours), theirs.detach().cpu().numpy(), atol=1e-4, rtol=1e-3)


def test_numpy_backend_trains_like_pytorch():
    """20 Adam steps of the CLI's CNN from the same weights and batches: same losses and weights."""
    _twenty_steps_against_torch("numpy", "cpu")


@pytest.mark.gpu
def test_cuda_backend_trains_like_pytorch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # FP32, as pyfast
    try:
        _twenty_steps_against_torch("cuda", "cuda")
    finally:  # PyTorch's flags are global: later tests get them as they were
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_linreg_matches_the_pytorch_tutorial_from_the_same_weights(capsys):
    torch = pytest.importorskip("torch")
    model, _ = train.run_linreg(train.parser().parse_args(["linreg", "--backend", "numpy"]))
    final = float(capsys.readouterr().out.splitlines()[9].split("=")[1])
    x, y = (torch.tensor(a) for a in datasets.synthetic_regression(100, 2, seed=0))
    init = nn.Linear(2, 1, rng=np.random.default_rng(0), backend=NUMPY)
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(init.weight))
        net.bias.copy_(torch.tensor(init.bias))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(1000):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
    assert_close(final, loss.item(), atol=0, rtol=1e-5)
    assert_close(model.weight, net.weight.detach().numpy(), atol=1e-5)


def test_cnn_cli_reads_mnist_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 28, 28)), rng.integers(0, 10, 40)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    train.main(["cnn", "--data", f"mnist:{tmp_path}", "--epochs", "1", "--batch-size", "16", "--backend", "numpy",
                "--no-progress"])
    out = capsys.readouterr().out
    assert f"data: mnist:{tmp_path}, 36 train / 4 validation / 40 test images of 28x28" in out
    assert "test accuracy" in out


def test_conv_version_is_kept_and_checked(tmp_path):
    model = train.cnn_model(NUMPY, conv_version="implicit")
    assert model.layers[0].version == model.layers[3].version == "implicit"
    path = tmp_path / "m.npz"
    train.save(model, path)
    loaded, _ = train.load(path, backend=NUMPY)
    assert loaded.layers[0].version == "implicit"
    with pytest.raises(ValueError, match="version"):
        nn.Conv2d(1, 2, 3, version="winograd", backend=NUMPY)
    args = train.parser().parse_args(["cnn", "--conv-version", "gemm"])
    assert args.conv_version == "gemm"


# ------------------------------------------------------------------ what a new user runs into
def test_an_optimizer_of_a_model_nobody_holds_still_trains():
    import gc

    opt = optim.Adam(nn.Linear(2, 1, rng=np.random.default_rng(0), backend=NUMPY).parameters(), lr=0.1)
    gc.collect()  # the model is referenced by nothing but the list parameters() returned, kept by the optimizer
    layer = opt._layers[0]
    before = layer.weight.copy()
    layer.forward(np.ones((4, 2), np.float32))
    layer.backward(np.ones((4, 1), np.float32))
    opt.step()
    assert not np.array_equal(layer.weight, before)


def test_images_of_another_size_are_named_by_the_model():
    model = train.cnn_model(NUMPY)
    with pytest.raises(ValueError, match=r"x: this model takes inputs of shape \(N, 1, 28, 28\), got \(4, 1, 32, 32\) "
                                         r"\(it was built for 28x28 images of 1 channel\)"):
        model.forward(np.zeros((4, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="image_size: expected an int >= 4"):
        train.cnn_model(NUMPY, image_size=2)
    loaded = nn.from_config(model.config(), backend=NUMPY)  # checkpoints keep the shape
    assert loaded.input_shape == (1, 28, 28)


def test_fit_refuses_images_that_are_not_finite(rng):
    x, y = randn(rng, 20, 1, 8, 8), rng.integers(0, 10, 20)
    x[7, 0, 3, 3] = np.nan
    model = train.cnn_model(NUMPY, image_size=8)
    with pytest.raises(ValueError, match=r"train: x holds NaN or infinite values \(sample 7 is the first\)"):
        train.fit(model, nn.CrossEntropyLoss(backend=NUMPY), optim.Adam(model), (x, y), epochs=1, batch_size=8,
                  progress=False, log=None)


def test_a_diverging_fit_stops_at_the_first_non_finite_loss_without_warnings(rng):
    import warnings

    x, y = datasets.synthetic_regression(64, 3, seed=1)
    model = nn.Linear(3, 1, rng=np.random.default_rng(0), backend=NUMPY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy overflow warnings on the way to the NaN
        with pytest.raises(pyfast.errors.TrainingDiverged, match="training diverged; try a smaller learning rate") \
                as diverged:
            train.fit(model, nn.MSELoss(backend=NUMPY), optim.SGD(model, lr=1e12), (x, y), epochs=50, batch_size=8,
                      progress=False, log=None)
    assert diverged.value.epoch <= 2 and not np.isfinite(diverged.value.loss)


@pytest.mark.gpu
def test_a_diverging_fit_stops_after_the_epoch_on_the_gpu():
    x, y = datasets.synthetic_regression(64, 3, seed=1)
    model = nn.Linear(3, 1, rng=np.random.default_rng(0), backend="cuda")
    with pytest.raises(pyfast.errors.TrainingDiverged) as diverged:
        train.fit(model, nn.MSELoss(backend="cuda"), optim.SGD(model, lr=1e12), (x, y), epochs=50, batch_size=8,
                  progress=False, log=None)
    assert diverged.value.epoch <= 2


def test_save_and_load_say_what_is_wrong_with_a_path(tmp_path):
    model = nn.Linear(2, 1, backend=NUMPY)
    with pytest.raises(ValueError, match="path: a checkpoint is an .npz archive; give a name ending in .npz, not .txt"):
        train.save(model, tmp_path / "model.txt")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        train.save(model, tmp_path / "missing" / "model.npz")
    assert not list(tmp_path.rglob("*.partial"))
    with pytest.raises(IsADirectoryError, match=r"a folder, not a pyfast checkpoint \(.npz file\)"):
        train.load(tmp_path)
    with pytest.raises(ValueError, match=r"spec: expected one of digits, digits8, synthetic, mnist:PATH, got 'bogus'"):
        train.load_image_data("bogus")
