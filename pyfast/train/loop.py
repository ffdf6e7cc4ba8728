"""The training loop: fit (epochs of steps, validation, the per-epoch History), evaluate and
predict, and the checks a data set passes before any of them runs."""

import math
import sys
import time

import numpy as np

from pyfast import _checks, nn
from pyfast.errors import TrainingDiverged
from pyfast.train.batches import Batches, keep_on_device
from pyfast.train.steps import Steps, graph_usable


PER_EPOCH = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "samples_per_s")


class History(dict):
    """fit()'s record: one list per key of PER_EPOCH, an entry per epoch trained ("epoch" the
    epoch's number, "lr" the learning rate it trained with, None where a metric does not
    apply). Run facts that are not per epoch are attributes: ``graphs``, the CUDA graphs
    captured (one per batch shape, again after each learning-rate change)."""

    def __init__(self, lists=None):
        super().__init__({key: [] for key in PER_EPOCH})
        self.graphs = 0
        if lists is not None:
            if not isinstance(lists, dict) or set(lists) != set(PER_EPOCH) \
                    or not all(isinstance(v, list) for v in lists.values()) \
                    or len({len(v) for v in lists.values()}) != 1:
                raise ValueError(f"history: expected lists of equal length for {list(PER_EPOCH)}")
            for key in PER_EPOCH:
                self[key].extend(lists[key])

    @property
    def epochs(self):
        return len(self["epoch"])


def _is_classifier(loss):
    return isinstance(loss, nn.CrossEntropyLoss)


def _output_classes(model):
    """The class count of a model ending in a Linear layer (None when it cannot be told)."""
    last = model.layers[-1] if isinstance(model, nn.Sequential) and len(model) else model
    return getattr(last, "out_features", None)


def _dataset(name, data, classifier, classes=None):
    """(x, y) host arrays of data set `name` after the checks training and evaluation need."""
    if isinstance(data, (str, bytes)) or not hasattr(data, "__len__") or len(data) != 2:
        raise TypeError(f"{name}: expected a pair (x, y) of arrays, got {type(data).__name__}")
    x, y = (nn._host(f"{name}[{i}]", part) for i, part in enumerate(data))
    if x.ndim < 2:
        raise ValueError(f"{name}: x must hold samples along its first axis, (N, features...), got shape {x.shape}")
    if x.dtype.kind == "f" and len(x) and not np.isfinite(x).all():
        first = int(np.argmin(np.isfinite(x).reshape(len(x), -1).all(axis=1)))
        raise ValueError(f"{name}: x holds NaN or infinite values (sample {first} is the first)")
    if len(x) != len(y):
        raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)} (one target per sample)")
    if len(x) == 0:
        raise ValueError(f"{name}: no samples")
    if classifier:
        if y.dtype.kind not in "iu":
            raise TypeError(f"{name}: labels y must be integer class indices, got dtype {y.dtype} (float labels "
                            f"would be truncated); convert with y.astype(np.int64)")
        if y.ndim != 1:
            raise ValueError(f"{name}: labels y must be a 1-D array (N,), got shape {y.shape}")
        low, high = int(y.min()), int(y.max())
        if low < 0 or (classes is not None and high >= classes):
            bound = f"[0, {classes})" if classes is not None else "[0, classes)"
            raise ValueError(f"{name}: labels must lie in {bound}, got values from {low} to {high}")
    return x, y


def _progress(iterable, total, enabled, description):
    """The epoch's batches, with tqdm's bar on stderr when stderr is a terminal. Into a file or a
    pipe a bar would write a frame per update; there the epoch's own line is the progress."""
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:  # a dependency of pyfast; gone only from a broken environment
            return iterable
        return tqdm(iterable, total=total, desc=description, leave=False, file=sys.stderr)
    return iterable


def epoch_rng(seed, epoch):
    """The generator that shuffles (and augments) epoch `epoch` of a run seeded `seed`: a pure
    function of the two, so a resumed run draws the batches of an uninterrupted one."""
    return np.random.default_rng([seed, epoch])


def fit(model, loss, optimizer, train, val=None, *, epochs, batch_size, shuffle=True, seed=0, augment=0,
        progress=True, log=print, graph=None, scheduler=None, initial_epoch=0, history=None, on_epoch_end=None,
        data_on_device=None):
    """Trains `model` on train = (x, y) host arrays through epoch `epochs`, in batches (the last
    partial batch kept), shuffled with epoch_rng(seed, epoch). Returns a History: per-epoch
    loss, accuracy (classifiers), validation loss / accuracy (when `val` is given), learning
    rate and samples/s. The device is synchronized once per epoch, to read the metrics.

    ``scheduler``: an optim.LRScheduler, stepped after each epoch. To continue a run, pass
    ``initial_epoch`` (the epochs already trained: training starts at the next one), the
    restored optimizer / scheduler and the earlier ``history`` (extended in place).
    ``on_epoch_end(epoch, history)`` runs after each epoch (the CLI saves a checkpoint there).
    ``graph``: on the cuda backend, replay each batch shape's step as a CUDA graph (see
    pyfast.graph); None (default) uses graphs when they can work (Adam must be capturable,
    PYFAST_SYNC off), False never does, True also says why when they cannot.
    ``data_on_device``: copy the training and validation sets to the device once and gather each
    batch there (shuffle order and shifts drawn on the host per epoch, the same batches as
    from the host); None (default): on the cuda backend when they fit in DEVICE_DATA_SHARE of
    the free memory; False: each batch from the host, through pinned buffers and a copy stream
    (HostPipeline) so the copies overlap the steps."""
    backend = model.backend
    classifier = _is_classifier(loss)
    x, y = _dataset("train", train, classifier, _output_classes(model))
    if val is not None:
        val = _dataset("val", val, classifier, _output_classes(model))
    epochs = _checks.expect_int("epochs", epochs, 0)
    initial_epoch = _checks.expect_int("initial_epoch", initial_epoch, 0)
    if initial_epoch > epochs:
        raise ValueError(f"initial_epoch: {initial_epoch} epochs are already trained, more than epochs={epochs}")
    batch_size = _checks.expect_int("batch_size", batch_size, 1)
    seed = _checks.expect_int("seed", seed, 0)
    augment = _checks.expect_int("augment", augment, 0)
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise ValueError("scheduler: it schedules another optimizer than the one given")
    history = History() if history is None else history
    if not isinstance(history, History):
        raise TypeError(f"history: expected a History (from fit or a checkpoint), got {type(history).__name__}")
    if data_on_device is not None:
        _checks.expect_bool("data_on_device", data_on_device)
    runner = Steps(model, loss, optimizer, classifier, graph_usable(backend, optimizer, graph, log), log)
    with runner.on_stream():  # the copies to the device are ordered before the steps that read them
        on_device = keep_on_device(backend, x, y, data_on_device)
        train_batches = Batches(backend, x, y, classifier, batch_size, on_device)
        val_batches = Batches(backend, *val, classifier, batch_size, on_device) if val is not None else None
    for epoch in range(initial_epoch + 1, epochs + 1):
        model.train()
        lr = optimizer.lr
        start = time.perf_counter()
        runner.reset()
        runner.epoch = epoch
        with runner.on_stream():
            batches = train_batches.epoch(shuffle=shuffle, rng=epoch_rng(seed, epoch), augment=augment)
        # A diverging run overflows on the way to NaN: it is reported once, as TrainingDiverged.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for batch in _progress(batches, len(train_batches), progress, f"epoch {epoch}/{epochs}"):
                runner(batch)
        runner.finish()
        epoch_loss = float(runner.loss_sum) / len(x)
        if not math.isfinite(epoch_loss):  # on the GPU: read with the epoch's sums, no wait per step
            raise TrainingDiverged(epoch, epoch_loss, lr)
        history["epoch"].append(epoch)
        history["lr"].append(lr)
        history["loss"].append(epoch_loss)
        history["accuracy"].append(int(runner.correct) / len(x) if classifier else None)
        history["samples_per_s"].append(len(x) / (time.perf_counter() - start))
        line = f"epoch {epoch}/{epochs}: loss {epoch_loss:.4f}"
        if classifier:
            line += f", accuracy {history['accuracy'][-1]:.4f}"
        metrics = {}
        if val_batches is not None:
            with runner.on_stream():
                metrics = _evaluate(model, loss, val_batches, classifier)
            line += f", val loss {metrics['loss']:.4f}"
            if classifier:
                line += f", val accuracy {metrics['accuracy']:.4f}"
        history["val_loss"].append(metrics.get("loss"))
        history["val_accuracy"].append(metrics.get("accuracy"))
        if scheduler is not None:
            line += f", lr {lr:.3g}"
        line += f", {history['samples_per_s'][-1]:.0f} samples/s"
        if log:
            log(line)
        if scheduler is not None:
            scheduler.step()
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    history.graphs = runner.captures
    return history


def evaluate(model, loss, dataset, *, batch_size=256):
    """Mean loss (and accuracy for classifiers) over dataset = (x, y), in eval mode; the sums
    stay on the device until the end (one synchronisation)."""
    backend = model.backend
    classifier = _is_classifier(loss)
    x, y = _dataset("dataset", dataset, classifier, _output_classes(model))
    batch_size = _checks.expect_int("batch_size", batch_size, 1)
    return _evaluate(model, loss, Batches(backend, x, y, classifier, batch_size, False), classifier)


def _evaluate(model, loss, batches, classifier):
    backend = model.backend
    model.eval()
    loss_sum = backend.xp.zeros((), np.float64)
    correct = backend.xp.zeros((), np.int64)
    for batch in batches.epoch():
        xb, yb = batch.arrays()
        output = model.forward(xb)
        value, _ = loss(output, yb)
        loss_sum += value.astype(np.float64) * len(xb)
        if classifier:
            correct += backend.ops.accuracy(output, yb)
    model.train()
    metrics = {"loss": float(loss_sum) / len(batches.host_x)}
    if classifier:
        metrics["accuracy"] = int(correct) / len(batches.host_x)
    return metrics


def predict(model, x, *, batch_size=256):
    """The model's outputs for host array x (N, ...), as a NumPy array (copied out of the layer
    buffers); an empty x gives an empty (0, outputs) array."""
    x = nn._host("x", x)
    if x.ndim < 2:
        raise ValueError(f"x: expected samples along the first axis, (N, features...), got shape {x.shape}")
    batch_size = _checks.expect_int("batch_size", batch_size, 1)
    model.eval()
    backend = model.backend
    # An empty x still runs one (empty) batch: the output's shape comes from the model.
    starts = range(0, len(x), batch_size) if len(x) else [0]
    outputs = [np.array(backend.to_numpy(model.forward(backend.asarray(x[start: start + batch_size]))), copy=True)
               for start in starts]
    model.train()
    return np.concatenate(outputs)
