"""The autograd-free trainer: fit / evaluate / predict, save / load, loss curves, and the CLI.

    python -m pyfast.train linreg [--samples 100 --features 2 --epochs 1000 --lr 0.01 --seed 0]
    python -m pyfast.train cnn [--data digits|synthetic|mnist:PATH] [--epochs 10] [--batch-size 64]
                               [--save model.npz] [--plot curves.png] [--backend cuda|numpy] [--no-graph]

Both backends (``cuda``: pyfast.ops on the GPU, ``numpy``: pyfast.reference) share all of
this code; without a usable GPU the NumPy backend is used and one line says so.
"""

import argparse
import contextlib
import json
import sys
import time

import numpy as np

from pyfast import _checks, graph, nn
from pyfast import data as datasets
from pyfast.optim import SGD, Adam


# ------------------------------------------------------------------------------ training
def _is_classifier(loss):
    return isinstance(loss, nn.CrossEntropyLoss)


def _to_backend(backend, xb, yb, classifier):
    return backend.asarray(xb), backend.asarray(yb, dtype=np.int64 if classifier else np.float32)


def _progress(iterable, total, enabled, description):
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(iterable, total=total, desc=description, leave=False)
        except ImportError:
            pass
    return iterable


class _Steps:
    """Runs training steps and sums the epoch's loss (and correct predictions) on the device.

    Eagerly, or on the cuda backend with graphs: the first batch of each shape runs eagerly
    (buffers get allocated, labels checked), the second is captured into a CUDA graph
    (pyfast.graph), and every later batch of that shape is copied into the graph's input
    buffers and replayed. Both ways run the same kernels on the same buffers, so they give
    the same numbers."""

    def __init__(self, model, loss, optimizer, classifier, use_graph, log):
        self.model, self.loss, self.optimizer, self.classifier = model, loss, optimizer, classifier
        self.backend = model.backend
        self.use_graph, self.log = use_graph, log
        self.graphs, self.inputs, self.seen = {}, {}, set()
        self.stream = None
        if use_graph:
            import cupy

            cupy.cuda.get_current_stream().synchronize()  # order the caller's work before ours
            self.stream = cupy.cuda.Stream(non_blocking=True)
        # Allocated once: captured graphs add into these very arrays on every replay.
        self.loss_sum = self.backend.xp.zeros((), np.float64)
        self.correct = self.backend.xp.zeros((), np.int64)

    def reset(self):
        """Zeroes the epoch's sums in place (on the steps' stream, ordered before them)."""
        with self.stream if self.stream is not None else contextlib.nullcontext():
            self.loss_sum[...] = 0
            self.correct[...] = 0

    def _accumulate(self, value, n, correct):
        if self.backend.name == "numpy":
            self.loss_sum += float(value) * n
            if correct is not None:
                self.correct += int(correct)
            return
        _accumulate_kernels()[0](value, float(n), self.loss_sum)  # in place: nothing allocated
        if correct is not None:
            _accumulate_kernels()[1](correct, self.correct)

    def _step(self, xb, yb):
        output = self.model.forward(xb)
        value, grad = self.loss(output, yb)
        self.model.backward(grad)
        self.optimizer.step()
        self._accumulate(value, len(xb), self.backend.ops.accuracy(output, yb) if self.classifier else None)

    def __call__(self, xb, yb):
        """One step on host batch (xb, yb)."""
        if self.stream is None:
            self._step(*_to_backend(self.backend, xb, yb, self.classifier))
            return
        with self.stream:  # once on this stream, always on it: no ordering across streams
            if not self.use_graph:  # a capture failed: eager steps from then on
                self._step(*_to_backend(self.backend, xb, yb, self.classifier))
                return
            key = (xb.shape, yb.shape)
            if key not in self.inputs:  # the graph's input buffers for this shape, filled below
                xp = self.backend.xp
                self.inputs[key] = (xp.empty(xb.shape, np.float32),
                                    xp.empty(yb.shape, np.int64 if self.classifier else np.float32))
            xs, ys = self.inputs[key]
            xs.set(np.ascontiguousarray(xb, dtype=np.float32), stream=self.stream)
            ys.set(np.ascontiguousarray(yb, dtype=ys.dtype), stream=self.stream)
            if key in self.graphs:
                self.graphs[key].replay()
            elif key in self.seen:
                try:
                    self.graphs[key] = graph.CapturedStep(lambda: self._step(xs, ys), self.stream)
                except Exception as error:  # noqa: BLE001 - fall back to eager steps, say why
                    if self.log:
                        self.log(f"CUDA graph capture failed ({type(error).__name__}: {error}); running eagerly")
                    self.use_graph = False
                    self._step(xs, ys)
                    return
                self.graphs[key].replay()
            else:
                self._step(xs, ys)
                self.seen.add(key)

    def finish(self):
        if self.stream is not None:
            self.stream.synchronize()


_ACCUMULATE = []


def _accumulate_kernels():
    """CuPy kernels that add a step's loss * batch size and its correct count into device
    accumulators in place (no temporaries: safe inside a captured graph)."""
    if not _ACCUMULATE:
        import cupy

        _ACCUMULATE.append(cupy.ElementwiseKernel("float32 value, float64 n", "float64 total",
                                                  "total += (double)value * n", "pyfast_accumulate_loss"))
        _ACCUMULATE.append(cupy.ElementwiseKernel("int64 count", "int64 total", "total += count",
                                                  "pyfast_accumulate_count"))
    return _ACCUMULATE


def _graph_usable(backend, optimizer, graph_requested, log):
    if backend.name != "cuda" or graph_requested is False:
        return False
    from pyfast import _C

    if _C.get_sync():
        if graph_requested and log:
            log("CUDA graphs are off while PYFAST_SYNC=1 (each op synchronizes); running eagerly")
        return False
    if isinstance(optimizer, Adam) and not optimizer.capturable:
        if graph_requested and log:
            log("CUDA graphs need Adam(capturable=True) (the step count on the device); running eagerly")
        return False
    return True


def fit(model, loss, optimizer, train, val=None, *, epochs, batch_size, shuffle=True, seed=0, augment=0,
        progress=True, log=print, graph=None):
    """Trains `model` on train = (x, y) host arrays for `epochs`, in batches (the last partial
    batch kept), shuffled with a seeded generator. Returns the history: per-epoch loss,
    accuracy (classifiers), validation loss / accuracy (when `val` is given) and samples/s.
    The device is synchronized once per epoch, to read the metrics.

    ``graph``: on the cuda backend, replay each batch shape's step as a CUDA graph (see
    pyfast.graph); None (default) uses graphs when they can work (Adam must be capturable,
    PYFAST_SYNC off), False never does, True also says why when they cannot."""
    backend = model.backend
    classifier = _is_classifier(loss)
    rng = np.random.default_rng(seed)
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "samples_per_s": []}
    x, y = train
    steps = -(-len(x) // batch_size)
    runner = _Steps(model, loss, optimizer, classifier, _graph_usable(backend, optimizer, graph, log), log)
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        runner.reset()
        for xb, yb in _progress(datasets.batches(x, y, batch_size, shuffle=shuffle, rng=rng, augment=augment), steps,
                                progress, f"epoch {epoch}/{epochs}"):
            runner(xb, yb)
        runner.finish()
        epoch_loss = float(runner.loss_sum) / len(x)
        history["loss"].append(epoch_loss)
        history["accuracy"].append(int(runner.correct) / len(x) if classifier else None)
        history["samples_per_s"].append(len(x) / (time.perf_counter() - start))
        line = f"epoch {epoch}/{epochs}: loss {epoch_loss:.4f}"
        if classifier:
            line += f", accuracy {history['accuracy'][-1]:.4f}"
        if val is not None:
            with runner.stream if runner.stream is not None else contextlib.nullcontext():
                metrics = evaluate(model, loss, val, batch_size=batch_size)
            history["val_loss"].append(metrics["loss"])
            history["val_accuracy"].append(metrics.get("accuracy"))
            line += f", val loss {metrics['loss']:.4f}"
            if classifier:
                line += f", val accuracy {metrics['accuracy']:.4f}"
        line += f", {history['samples_per_s'][-1]:.0f} samples/s"
        if log:
            log(line)
    history["graphs"] = len(runner.graphs)
    return history


def evaluate(model, loss, dataset, *, batch_size=256):
    """Mean loss (and accuracy for classifiers) over dataset = (x, y), in eval mode."""
    backend = model.backend
    classifier = _is_classifier(loss)
    model.eval()
    x, y = dataset
    losses, correct = [], []
    for xb, yb in datasets.batches(x, y, batch_size):
        xb, yb = _to_backend(backend, xb, yb, classifier)
        output = model.forward(xb)
        value, _ = loss(output, yb)
        losses.append(float(value) * len(xb))
        if classifier:
            correct.append(int(backend.ops.accuracy(output, yb)))
    model.train()
    metrics = {"loss": sum(losses) / len(x)}
    if classifier:
        metrics["accuracy"] = sum(correct) / len(x)
    return metrics


def predict(model, x, *, batch_size=256):
    """The model's outputs for host array x, as a NumPy array (copied out of the layer buffers)."""
    model.eval()
    outputs = [np.array(model.backend.to_numpy(model.forward(model.backend.asarray(xb))), copy=True)
               for xb, _ in datasets.batches(x, np.zeros(len(x)), batch_size)]
    model.train()
    return np.concatenate(outputs) if outputs else np.zeros((0,))


# --------------------------------------------------------------------------- checkpoints
def save(model, path, **metadata):
    """Weights and architecture in one .npz (plus any JSON-able metadata, e.g. normalisation)."""
    arrays = {f"param_{i}": model.backend.to_numpy(p) for i, p in enumerate(model.parameters())}
    np.savez(path, config=json.dumps(model.config()), metadata=json.dumps(metadata), **arrays)


def load(path, backend=None):
    """(model, metadata) rebuilt from save()'s file, on `backend` (default: cuda if usable)."""
    with np.load(path) as f:
        model = nn.from_config(json.loads(str(f["config"])), backend=backend)
        metadata = json.loads(str(f["metadata"]))
        params = model.parameters()
        stored = sorted((k for k in f.files if k.startswith("param_")), key=lambda k: int(k.split("_")[1]))
        if len(stored) != len(params):
            raise ValueError(f"{path}: {len(stored)} stored arrays for a model of {len(params)} parameters")
        for param, key in zip(params, stored):
            if f[key].shape != param.shape:
                raise ValueError(f"{path}: {key} has shape {f[key].shape}, the model expects {param.shape}")
            param[...] = model.backend.asarray(f[key])
    return model, metadata


def plot_history(history, path):
    """Loss (and accuracy) per epoch as a PNG; returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = range(1, len(history["loss"]) + 1)
    has_accuracy = any(a is not None for a in history["accuracy"])
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(10 if has_accuracy else 5, 4), squeeze=False)
    axes[0][0].plot(epochs, history["loss"], label="train")
    if history["val_loss"]:
        axes[0][0].plot(epochs, history["val_loss"], label="validation")
    axes[0][0].set(xlabel="epoch", ylabel="loss", title="loss")
    axes[0][0].legend()
    if has_accuracy:
        axes[0][1].plot(epochs, history["accuracy"], label="train")
        if history["val_accuracy"]:
            axes[0][1].plot(epochs, history["val_accuracy"], label="validation")
        axes[0][1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        axes[0][1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# -------------------------------------------------------------------------------- models
def cnn_model(backend=None, seed=0, classes=10, image_size=28, conv_version=None):
    """conv(1->32, 3x3, pad 1) ReLU maxpool 2, conv(32->64, 3x3, pad 1) ReLU maxpool 2,
    Linear(64 * (size/4)^2 -> 128) ReLU, Linear(128 -> classes), PyTorch's default init.
    ``conv_version``: the conv kernels on the GPU (pyfast.ops.CONV2D_VERSIONS)."""
    backend = nn.get_backend(backend)
    rng = np.random.default_rng(seed)
    features = 64 * (image_size // 4) ** 2
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, rng=rng, backend=backend, version=conv_version), nn.ReLU(backend=backend),
        nn.MaxPool2d(2, backend=backend),
        nn.Conv2d(32, 64, 3, padding=1, rng=rng, backend=backend, version=conv_version), nn.ReLU(backend=backend),
        nn.MaxPool2d(2, backend=backend),
        nn.Flatten(backend=backend),
        nn.Linear(features, 128, activation="relu", rng=rng, backend=backend),
        nn.Linear(128, classes, rng=rng, backend=backend),
    )


# ------------------------------------------------------------------------------------ CLI
def _backend_from_args(name, out):
    if name is None and nn.default_backend_name() == "numpy":
        from pyfast._device import unavailable_reason

        print(f"pyfast: {unavailable_reason()}; using the NumPy backend", file=out)
    return nn.get_backend(name)


def run_linreg(args, out=None):
    out = out or sys.stdout
    backend = _backend_from_args(args.backend, out)
    x, y = datasets.synthetic_regression(args.samples, args.features, seed=args.seed)
    model = nn.Linear(args.features, 1, rng=np.random.default_rng(args.seed), backend=backend)
    loss = nn.MSELoss(backend)
    optimizer = SGD(model, lr=args.lr)
    x_dev, y_dev = backend.asarray(x), backend.asarray(y)
    report = lambda epoch, value: print(f"Epoch {epoch}, loss={value:.6f}", file=out)  # noqa: E731
    if backend.name == "cuda" and not args.eager:
        # The whole run in one launch, the same float32 math as the loop below (one read at the end).
        losses = backend.to_numpy(backend.ops.linear_mse_sgd_fit(x_dev, y_dev, model.weight, model.bias, lr=args.lr,
                                                                 epochs=args.epochs))
        for epoch in range(1, args.epochs + 1):
            if epoch % 100 == 0 or epoch == args.epochs:
                report(epoch, float(losses[epoch - 1]))
    else:
        for epoch in range(1, args.epochs + 1):
            value, grad = loss(model.forward(x_dev), y_dev)
            model.backward(grad)
            optimizer.step()
            if epoch % 100 == 0 or epoch == args.epochs:
                report(epoch, float(value))
    x_test, y_test = datasets.synthetic_regression(10, args.features, seed=args.seed + 1)
    test_loss, _ = loss(model.forward(backend.asarray(x_test)), backend.asarray(y_test))
    print(f"Test loss: {float(test_loss):.6f}", file=out)
    return model, float(test_loss)


def load_image_data(spec, seed=0):
    """(train, val, test) for --data: 'digits' (8x8 resized to 28x28), 'digits8', 'synthetic',
    or 'mnist:PATH'. Normalised with the training set's statistics."""
    if spec.startswith("mnist:"):
        (x_train, y_train), test = datasets.load_mnist(spec.split(":", 1)[1])
        train, val, _ = datasets.split(x_train, y_train, (0.9, 0.1, 0.0), seed=seed)
    else:
        if spec in ("digits", "digits8"):
            x, y = datasets.load_digits(28 if spec == "digits" else 8)
        elif spec == "synthetic":
            x, y = datasets.synthetic_images(seed=seed)
        else:
            raise ValueError(f"--data: expected digits, digits8, synthetic or mnist:PATH, got {spec!r}")
        train, val, test = datasets.split(x, y, (0.8, 0.1, 0.1), seed=seed)
    x_train, mean, std = datasets.normalize(train[0])
    normalise = lambda part: (datasets.normalize(part[0], mean, std)[0], part[1])  # noqa: E731
    return (x_train, train[1]), normalise(val), normalise(test), {"mean": mean, "std": std}


def run_cnn(args, out=None):
    out = out or sys.stdout
    backend = _backend_from_args(args.backend, out)
    train, val, test, stats = load_image_data(args.data, seed=args.seed)
    if args.limit:
        train = (train[0][: args.limit], train[1][: args.limit])
    print(f"data: {args.data}, {len(train[0])} train / {len(val[0])} validation / {len(test[0])} test images of "
          f"{train[0].shape[2]}x{train[0].shape[3]}; backend {backend.name}", file=out)
    model = cnn_model(backend, seed=args.seed, image_size=train[0].shape[2], conv_version=args.conv_version)
    loss = nn.CrossEntropyLoss(backend)
    optimizer = Adam(model, lr=args.lr, capturable=backend.name == "cuda" and not args.no_graph)
    history = fit(model, loss, optimizer, train, val, epochs=args.epochs, batch_size=args.batch_size,
                  seed=args.seed, augment=args.augment, progress=not args.no_progress,
                  log=lambda line: print(line, file=out), graph=False if args.no_graph else None)
    metrics = evaluate(model, loss, test, batch_size=args.batch_size)
    print(f"test accuracy {metrics['accuracy']:.4f} (loss {metrics['loss']:.4f})", file=out)
    if args.save:
        save(model, args.save, **stats)
        print(f"saved {args.save}", file=out)
    if args.plot:
        if plot_history(history, args.plot):
            print(f"plotted {args.plot}", file=out)
        else:
            print("--plot needs matplotlib (pip install 'pyfast[train]')", file=out)
    return model, history, metrics


def parser():
    root = argparse.ArgumentParser(prog="pyfast-train", description="Train the two starter workloads on pyfast.")
    commands = root.add_subparsers(dest="command", required=True)
    linreg = commands.add_parser("linreg", help="linear regression: Linear(features, 1), MSE, SGD")
    linreg.add_argument("--samples", type=int, default=100)
    linreg.add_argument("--features", type=int, default=2)
    linreg.add_argument("--epochs", type=int, default=1000)
    linreg.add_argument("--lr", type=float, default=0.01)
    linreg.add_argument("--seed", type=int, default=0)
    linreg.add_argument("--backend", choices=["cuda", "numpy"], help="default: cuda when a GPU is usable")
    linreg.add_argument("--eager", action="store_true",
                        help="on the GPU, one launch per op per step instead of the fused one-launch run")
    cnn = commands.add_parser("cnn", help="the small CNN on handwritten digits, cross-entropy, Adam")
    cnn.add_argument("--data", default="digits", help="digits (default, 28x28), digits8, synthetic, mnist:PATH")
    cnn.add_argument("--epochs", type=int, default=10)
    cnn.add_argument("--batch-size", type=int, default=64)
    cnn.add_argument("--lr", type=float, default=1e-3)
    cnn.add_argument("--seed", type=int, default=0)
    cnn.add_argument("--augment", type=int, default=0, help="random shifts of up to this many pixels")
    cnn.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    cnn.add_argument("--save", help="write the trained model (.npz) here")
    cnn.add_argument("--plot", help="write the loss / accuracy curves (.png) here")
    cnn.add_argument("--backend", choices=["cuda", "numpy"], help="default: cuda when a GPU is usable")
    cnn.add_argument("--no-progress", action="store_true", help="no progress bar")
    cnn.add_argument("--conv-version", choices=list(_checks.CONV2D_VERSIONS),
                     help=f"conv kernels on the GPU (default {_checks.DEFAULT_CONV2D_VERSION})")
    cnn.add_argument("--no-graph", action="store_true",
                     help="on the GPU, launch every op of every step instead of replaying a CUDA graph")
    return root


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "linreg":
        run_linreg(args)
    else:
        run_cnn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
