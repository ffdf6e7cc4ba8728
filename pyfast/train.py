"""The autograd-free trainer: fit / evaluate / predict, save / load, loss curves, and the CLI.

    python -m pyfast.train linreg [--samples 100 --features 2 --epochs 1000 --lr 0.01 --seed 0]
    python -m pyfast.train cnn [--data digits|synthetic|mnist:PATH] [--epochs 10] [--batch-size 64]
                               [--save model.npz] [--plot curves.png] [--backend cuda|numpy] [--no-graph]

Both backends (``cuda``: pyfast.ops on the GPU, ``numpy``: pyfast.reference) share all of
this code; without a usable GPU the NumPy backend is used and one line says so.
"""

import argparse
import contextlib
import errno
import importlib.util
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

from pyfast import _checks, graph, nn
from pyfast import data as datasets
from pyfast.errors import TrainingDiverged
from pyfast.optim import SGD, Adam, CosineAnnealingLR, StepLR


# ------------------------------------------------------------------------------ training
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


def _to_backend(backend, xb, yb, classifier):
    return backend.asarray(xb), backend.asarray(yb, dtype=np.int64 if classifier else np.float32)


# A training set is kept on the GPU when it takes at most this share of the free memory (the
# digits: 0.5 MB; MNIST: 190 MB).
DEVICE_DATA_SHARE = 0.25


def _keep_on_device(backend, x, y, requested):
    """Whether the data set goes to the device once (True / False: as asked; None: on the cuda
    backend when it fits in DEVICE_DATA_SHARE of the free memory)."""
    if requested is not None:
        return bool(requested)
    if backend.name != "cuda":
        return False
    import cupy

    free, _ = cupy.cuda.runtime.memGetInfo()
    return x.size * 4 + y.size * 8 <= DEVICE_DATA_SHARE * free


class _HostBatch:
    """A batch cut from the host arrays (copied to the device when the step runs there)."""

    def __init__(self, backend, xb, yb, classifier):
        self.backend, self.xb, self.yb, self.classifier = backend, xb, yb, classifier
        self.key = (xb.shape, yb.shape)

    def arrays(self):
        return _to_backend(self.backend, self.xb, self.yb, self.classifier)

    def fill(self, xs, ys, pipeline):
        pipeline.send((self.xb, self.yb), (xs, ys))


class _HostPipeline:
    """Host batches to the device without stalling the steps: a batch is copied (on the host)
    into one of two pinned buffers, sent from there on a copy stream into one of two device
    staging buffers, and the steps' stream waits for that copy only to move the batch into its
    input buffers (a device-to-device copy of a few microseconds). Events say when a pinned or
    staging buffer may be reused, so the host prepares batch i + 1 while the GPU runs step i."""

    def __init__(self, stream):
        import cupy

        self.stream = stream
        self.copy_stream = cupy.cuda.Stream(non_blocking=True)
        self.slots, self.turns = {}, {}

    def _slot(self, targets):
        import cupy
        import cupyx

        return {"pinned": [cupyx.empty_pinned(t.shape, t.dtype) for t in targets],
                "staging": [cupy.empty(t.shape, t.dtype) for t in targets], "copied": None, "free": None}

    def send(self, arrays, targets):
        """Copies host `arrays` into the device arrays `targets`, ordered before later work on
        the steps' stream (call it with that stream current)."""
        import cupy

        key = tuple((t.shape, t.dtype.str) for t in targets)
        slots = self.slots.get(key)
        if slots is None:
            slots = self.slots[key] = [self._slot(targets), self._slot(targets)]
        turn = self.turns.get(key, 0)
        self.turns[key] = turn + 1
        slot = slots[turn % 2]
        if slot["copied"] is not None:
            slot["copied"].synchronize()  # the copy out of these pinned buffers (two batches ago) is done
        if slot["free"] is not None:
            self.copy_stream.wait_event(slot["free"])  # and the steps' stream has taken its staging copy
        for host, pinned, staging in zip(arrays, slot["pinned"], slot["staging"]):
            np.copyto(pinned, host, casting="same_kind")
            staging.set(pinned, stream=self.copy_stream)
        slot["copied"] = cupy.cuda.Event()
        slot["copied"].record(self.copy_stream)
        self.stream.wait_event(slot["copied"])
        for staging, target in zip(slot["staging"], targets):
            target[...] = staging  # on the steps' stream (current)
        slot["free"] = cupy.cuda.Event()
        slot["free"].record(self.stream)


class _DeviceBatch:
    """A batch gathered on the device from the resident data set: one gather_batch launch
    (rows of the epoch's order, shifted) and one take for the targets; nothing crosses from
    the host."""

    def __init__(self, source, index, shifts):
        self.source, self.index, self.shifts = source, index, shifts
        self.key = ((len(index), *source.x.shape[1:]), (len(index), *source.y.shape[1:]))

    def arrays(self):
        xs = self.source.backend.xp.empty(self.key[0], np.float32)
        ys = self.source.backend.xp.empty(self.key[1], self.source.y.dtype)
        self.fill(xs, ys, None)
        return xs, ys

    def fill(self, xs, ys, pipeline):
        source = self.source
        source.backend.ops.gather_batch(source.x, self.index, self.shifts, out=xs)
        source.backend.xp.take(source.y, self.index, axis=0, out=ys)


class _Batches:
    """The batches of a data set, epoch by epoch, in the order and with the shifts of
    data.epoch_plan: cut on the host and copied per batch, or, with `on_device`, gathered on
    the device from a copy made once (the epoch's order and shifts go over once per epoch)."""

    def __init__(self, backend, x, y, classifier, batch_size, on_device):
        self.backend, self.classifier, self.batch_size, self.on_device = backend, classifier, batch_size, on_device
        self.host_x, self.host_y = x, y
        if on_device:
            self.x, self.y = _to_backend(backend, x, y, classifier)

    def __len__(self):
        return -(-len(self.host_x) // self.batch_size)

    def epoch(self, *, shuffle=False, rng=None, augment=0):
        """The epoch's batches (an iterator). The order and shifts are drawn, and with the data on
        the device copied there, when this is called: call it on the stream the steps run on."""
        order, shifts = datasets.epoch_plan(len(self.host_x), shuffle=shuffle, rng=rng, augment=augment)
        if self.on_device:
            order = self.backend.asarray(order, dtype=np.int64)
            shifts = self.backend.asarray(shifts, dtype=np.int32) if shifts is not None else None
        return self._batches(order, shifts)

    def _batches(self, order, shifts):
        for start in range(0, len(self.host_x), self.batch_size):
            index = order[start: start + self.batch_size]
            part = shifts[start: start + self.batch_size] if shifts is not None else None
            if self.on_device:
                yield _DeviceBatch(self, index, part)
            else:
                xb = self.host_x[index]
                yield _HostBatch(self.backend, datasets.shift_images(xb, part) if part is not None else xb,
                                 self.host_y[index], self.classifier)


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
    the same numbers. A graph replays the optimizer's hyperparameters it was captured with,
    so when they change (a learning-rate schedule) the graphs are dropped and captured anew."""

    def __init__(self, model, loss, optimizer, classifier, use_graph, log):
        self.model, self.loss, self.optimizer, self.classifier = model, loss, optimizer, classifier
        self.backend = model.backend
        self.use_graph, self.log = use_graph, log
        self.graphs, self.inputs, self.seen = {}, {}, set()
        self.captures = 0
        self.captured_with = None  # the optimizer's hyperparameters the graphs replay
        self.stream = None
        if use_graph:
            import cupy

            cupy.cuda.get_current_stream().synchronize()  # order the caller's work before ours
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.pipeline = _HostPipeline(self.stream)
        self.epoch = None  # the epoch running (for TrainingDiverged)
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
            value = float(value)  # on the host already: a diverged step is seen at once
            if not math.isfinite(value):
                raise TrainingDiverged(self.epoch, value, self.optimizer.lr)
            self.loss_sum += value * n
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

    def _drop_stale_graphs(self):
        hyperparameters = self.optimizer.hyperparameters()
        if hyperparameters != self.captured_with:
            if self.graphs:
                self.stream.synchronize()  # no replay of them is still running
                self.graphs.clear()
            self.captured_with = hyperparameters

    def __call__(self, batch):
        """One step on `batch` (a _HostBatch or a _DeviceBatch)."""
        if self.stream is None:
            self._step(*batch.arrays())
            return
        with self.stream:  # once on this stream, always on it: no ordering across streams
            if not self.use_graph:  # a capture failed: eager steps from then on
                self._step(*batch.arrays())
                return
            self._drop_stale_graphs()
            key = batch.key
            if key not in self.inputs:  # the graph's input buffers for this shape, filled below
                xp = self.backend.xp
                self.inputs[key] = (xp.empty(key[0], np.float32),
                                    xp.empty(key[1], np.int64 if self.classifier else np.float32))
            xs, ys = self.inputs[key]
            batch.fill(xs, ys, self.pipeline)
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
                self.captures += 1
                self.graphs[key].replay()
            else:
                self._step(xs, ys)
                self.seen.add(key)

    def on_stream(self):
        """The context that puts work on the steps' stream (nothing on the numpy backend)."""
        return self.stream if self.stream is not None else contextlib.nullcontext()

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
    (_HostPipeline) so the copies overlap the steps."""
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
    runner = _Steps(model, loss, optimizer, classifier, _graph_usable(backend, optimizer, graph, log), log)
    with runner.on_stream():  # the copies to the device are ordered before the steps that read them
        on_device = _keep_on_device(backend, x, y, data_on_device)
        train_batches = _Batches(backend, x, y, classifier, batch_size, on_device)
        val_batches = _Batches(backend, *val, classifier, batch_size, on_device) if val is not None else None
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
    return _evaluate(model, loss, _Batches(backend, x, y, classifier, batch_size, False), classifier)


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


# --------------------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "pyfast-checkpoint-1"  # older checkpoints have no format entry (and param_<i> arrays)


def save(model, path, *, optimizer=None, scheduler=None, epoch=None, history=None, **metadata):
    """Writes a checkpoint: the architecture and weights (enough for load() and inference),
    JSON-able ``metadata`` (e.g. the normalisation statistics), and, to continue training,
    the optimizer's and scheduler's states, the epochs trained and the history. Written to a
    temporary file and renamed, so an interrupted save never leaves a broken checkpoint.
    ".npz" is appended when `path` has no suffix (another suffix is a ValueError: a checkpoint
    is an .npz archive); returns the path written."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1]
    if not suffix:
        path += ".npz"
    elif suffix.lower() != ".npz":
        raise ValueError(f"path: a checkpoint is an .npz archive; give a name ending in .npz, not {suffix}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"cannot save a checkpoint into {folder}: no such folder", path)
    to_numpy = model.backend.to_numpy
    arrays = {f"param.{name}": to_numpy(param) for name, param in model.named_parameters()}
    training = {}
    if optimizer is not None:
        state = optimizer.state_dict()
        for name, values in state.pop("state").items():
            arrays.update({f"optimizer.{name}.{i}": to_numpy(value) for i, value in enumerate(values)})
        training["optimizer"] = state
    if scheduler is not None:
        training["scheduler"] = scheduler.state_dict()
    if epoch is not None:
        training["epoch"] = _checks.expect_int("epoch", epoch, 0)
    if history is not None:
        training["history"] = dict(history)
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        np.savez(f, format=CHECKPOINT_FORMAT, config=json.dumps(model.config()), metadata=json.dumps(metadata),
                 training=json.dumps(training), **arrays)
    os.replace(partial, path)
    return path


class _NotACheckpoint(ValueError):
    def __init__(self, path, what):
        super().__init__(f"{path}: not a pyfast checkpoint ({what})")


def load_checkpoint(path):
    """Everything save() wrote, checked, as a dict: "config" (the architecture), "model" ({name:
    NumPy array}, for Module.load_state_dict), "metadata", and "optimizer" (a state dict with
    NumPy arrays, for Optimizer.load_state_dict), "scheduler", "epoch", "history" (a History)
    where saved, else None. A file that is not one raises ValueError("PATH: not a pyfast
    checkpoint (what is wrong)"); a missing file FileNotFoundError."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "a folder, not a pyfast checkpoint (.npz file)", path)
    with open(path, "rb") as f:  # FileNotFoundError, PermissionError as they are
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise _NotACheckpoint(path, "a single NumPy array (.npy), not an .npz archive")
    if not magic.startswith(b"PK"):
        raise _NotACheckpoint(path, "not a NumPy .npz archive (a zip file)")
    try:
        stored = np.load(path)
    except Exception as error:  # noqa: BLE001 - a damaged archive
        raise _NotACheckpoint(path, f"not a readable NumPy .npz archive: {error}") from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise _NotACheckpoint(path, "not a NumPy .npz archive")
    with stored:
        entries = {}
        for key in stored.files:
            try:
                entries[key] = stored[key]
            except Exception as error:  # noqa: BLE001 - pickled objects, truncated members
                raise _NotACheckpoint(path, f"entry {key!r} cannot be read: {error}") from None

    def parse(key, required):
        if key not in entries:
            if required:
                raise _NotACheckpoint(path, f"no {key!r} entry; it holds {sorted(entries)}")
            return {}
        try:
            return json.loads(str(entries[key]))
        except ValueError as error:
            raise _NotACheckpoint(path, f"its {key!r} entry is not valid JSON: {error}") from None

    if "format" in entries and str(entries["format"]) != CHECKPOINT_FORMAT:
        raise _NotACheckpoint(path, f"format {str(entries['format'])!r}; this pyfast reads {CHECKPOINT_FORMAT!r}")
    config, metadata, training = parse("config", True), parse("metadata", False), parse("training", False)
    epoch = training.get("epoch")
    if epoch is not None and not (_checks.is_integer(epoch) and epoch >= 0):
        raise _NotACheckpoint(path, f"its epoch {epoch!r} is not a count of epochs")
    try:
        model = nn.from_config(config, backend="numpy")  # checks the architecture; gives the names and shapes
    except Exception as error:  # noqa: BLE001 - any failure to rebuild the model from its config
        raise _NotACheckpoint(path, f"its config does not describe a pyfast model: {type(error).__name__}: {error}") \
            from None
    names = [name for name, _ in model.named_parameters()]
    params = {key[len("param."):]: value for key, value in entries.items() if key.startswith("param.")}
    legacy = sorted((k for k in entries if k.startswith("param_") and k[6:].isdigit()), key=lambda k: int(k[6:]))
    if not params and legacy:  # written before parameters were saved by name: in order
        if len(legacy) != len(names):
            raise ValueError(f"{path}: {len(legacy)} stored arrays for a model of {len(names)} parameters")
        params = dict(zip(names, (entries[k] for k in legacy)))
    if sorted(params) != sorted(names):
        raise ValueError(f"{path}: stored parameters {sorted(params)} do not match its model's {names}")
    for name, param in model.named_parameters():
        if params[name].shape != param.shape:
            raise ValueError(f"{path}: param.{name} has shape {params[name].shape}, the model expects {param.shape}")
    optimizer = training.get("optimizer")
    if optimizer is not None:
        state = {}
        for key, value in entries.items():
            if key.startswith("optimizer."):
                name, _, index = key[len("optimizer."):].rpartition(".")
                if not name or not index.isdigit():
                    raise _NotACheckpoint(path, f"entry {key!r} names no optimizer state and index")
                state.setdefault(name, {})[int(index)] = value
        optimizer = dict(optimizer, state={name: [values[i] for i in sorted(values)] for name, values in state.items()})
    history = training.get("history")
    try:
        history = History(history) if history is not None else None
    except ValueError as error:
        raise _NotACheckpoint(path, str(error)) from None
    return {"config": config, "model": params, "metadata": metadata, "optimizer": optimizer,
            "scheduler": training.get("scheduler"), "epoch": epoch, "history": history}


def load(path, backend=None):
    """(model, metadata) rebuilt from save()'s file, on `backend` (default: cuda if usable)."""
    checkpoint = load_checkpoint(path)
    model = nn.from_config(checkpoint["config"], backend=backend)
    model.load_state_dict(checkpoint["model"])
    return model, checkpoint["metadata"]


def history_figure(history):
    """A matplotlib Figure of the loss (and accuracy) per epoch, train and validation (raises
    ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = history["epoch"]
    has_accuracy = any(a is not None for a in history["accuracy"])
    has_val = any(v is not None for v in history["val_loss"])
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(10 if has_accuracy else 5, 4), squeeze=False)
    panels = [("loss", "loss", "val_loss")] + ([("accuracy", "accuracy", "val_accuracy")] if has_accuracy else [])
    for ax, (title, train_key, val_key) in zip(axes[0], panels):
        ax.plot(epochs, history[train_key], marker="o", label="train")
        if has_val:
            ax.plot(epochs, history[val_key], marker="o", label="validation")
        ax.set(xlabel="epoch", ylabel=title, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.legend()
    fig.tight_layout()
    return fig


def plot_history(history, path):
    """Loss (and accuracy) per epoch as a PNG; returns False when matplotlib is missing."""
    try:
        fig = history_figure(history)
    except ImportError:
        return False
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# -------------------------------------------------------------------------------- models
def cnn_model(backend=None, seed=0, classes=10, image_size=28, conv_version=None):
    """conv(1->32, 3x3, pad 1) ReLU maxpool 2, conv(32->64, 3x3, pad 1) ReLU maxpool 2,
    Linear(64 * (size/4)^2 -> 128) ReLU, Linear(128 -> classes), PyTorch's default init.
    ``conv_version``: the conv kernels on the GPU (pyfast.ops.CONV2D_VERSIONS)."""
    backend = nn.get_backend(backend)
    image_size = _checks.expect_int("image_size", image_size, 4)  # two 2x2 poolings
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
        input_shape=(1, image_size, image_size),
    )


# ------------------------------------------------------------------------------------ CLI
# The CLI checks everything it can before training starts: argument values in argparse (one
# line and exit code 2, as argparse reports its own errors), then files, folders, data,
# backend and checkpoint in a preparation step whose errors are reported the same way.
def _backend_from_args(name, err):
    if name is None and nn.default_backend_name() == "numpy":
        from pyfast._device import unavailable_reason

        print(f"pyfast: {unavailable_reason()}; using the NumPy backend", file=err)
    return nn.get_backend(name)


def _output_path(option, path, suffixes):
    """`path` for an output file the run writes later, checked now so that a run never ends in a
    failed write: without a suffix it gets suffixes[0]; a suffix the writer cannot write is
    refused (never silently changed); its folder must exist and take a new file (tried)."""
    if os.path.isdir(path):
        raise ValueError(f"{option}: {path} is a folder; give a file name")
    suffix = os.path.splitext(path)[1]
    if not suffix:
        path += suffixes[0]
    elif suffix.lower() not in suffixes:
        raise ValueError(f"{option}: cannot write a {suffix} file; give a name ending in {', '.join(suffixes)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{option}: the folder {folder} does not exist")
    try:  # access() can say yes where creating a file fails (read-only mounts, /sys as root)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pyfast-write-check-"):
            pass
    except OSError as error:
        raise ValueError(f"{option}: cannot write in the folder {folder} ({error.strerror or error})") from None
    return path


def _plot_suffixes():
    """The file types matplotlib writes here, .png first (the default)."""
    from matplotlib.figure import Figure

    types = {f".{name}" for name in Figure().canvas.get_supported_filetypes()}
    return (".png", *sorted(types - {".png"}))


def _prepare_linreg(args, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    backend = _backend_from_args(args.backend, err)
    x, y = datasets.synthetic_regression(args.samples, args.features, seed=args.seed)
    model = nn.Linear(args.features, 1, rng=np.random.default_rng(args.seed), backend=backend)
    # The one-launch run holds the data in one block's shared memory: bigger runs go op by op.
    fits_one_launch = _checks.linear_fit_floats(args.samples, args.features, 1) <= _checks.LINEAR_FIT_MAX_FLOATS
    fused = backend.name == "cuda" and not args.eager and fits_one_launch
    return argparse.Namespace(args=args, out=out, backend=backend, data=(x, y), model=model, fused=fused)


def _train_linreg(plan):
    args, out, backend, model = plan.args, plan.out, plan.backend, plan.model
    loss = nn.MSELoss(backend)
    optimizer = SGD(model, lr=args.lr)
    x_dev, y_dev = (backend.asarray(part) for part in plan.data)
    report = lambda epoch, value: print(f"Epoch {epoch}, loss={value:.6f}", file=out)  # noqa: E731
    def check(epoch, value):  # a diverged run stops at its first non-finite loss it sees
        if not math.isfinite(value):
            raise TrainingDiverged(epoch, value, args.lr)

    if plan.fused:
        # The whole run in one launch, the same float32 math as the loop below (one read at the end).
        losses = backend.to_numpy(backend.ops.linear_mse_sgd_fit(x_dev, y_dev, model.weight, model.bias, lr=args.lr,
                                                                 epochs=args.epochs))
        for epoch in range(1, args.epochs + 1):
            check(epoch, float(losses[epoch - 1]))
            if epoch % 100 == 0 or epoch == args.epochs:
                report(epoch, float(losses[epoch - 1]))
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # reported once, as TrainingDiverged
            for epoch in range(1, args.epochs + 1):
                value, grad = loss(model.forward(x_dev), y_dev)
                model.backward(grad)
                optimizer.step()
                # Each epoch's loss on the host is free; on the GPU it is read where it is printed.
                if backend.name == "numpy" or epoch % 100 == 0 or epoch == args.epochs:
                    check(epoch, float(value))
                if epoch % 100 == 0 or epoch == args.epochs:
                    report(epoch, float(value))
    x_test, y_test = datasets.synthetic_regression(10, args.features, seed=args.seed + 1)
    test_loss, _ = loss(model.forward(backend.asarray(x_test)), backend.asarray(y_test))
    print(f"Test loss: {float(test_loss):.6f}", file=out)
    return model, float(test_loss)


def run_linreg(args, out=None, err=None):
    """The linreg command on parsed `args`: (model, test loss). Prints to `out` (stdout), notices
    to `err` (stderr)."""
    return _train_linreg(_prepare_linreg(args, out, err))


DATA_SPECS = ("digits", "digits8", "synthetic", "mnist:PATH")


def load_image_data(spec, seed=0):
    """(train, val, test, stats) for --data: 'digits' (8x8 resized to 28x28), 'digits8',
    'synthetic', or 'mnist:PATH'; stats = {"mean", "std"} of the training images, with which
    every split is normalised (pass them to save() so inference can normalise alike)."""
    if spec.startswith("mnist:"):
        (x_train, y_train), test = datasets.load_mnist(spec.split(":", 1)[1])
        train, val, _ = datasets.split(x_train, y_train, (0.9, 0.1, 0.0), seed=seed)
    else:
        if spec in ("digits", "digits8"):
            x, y = datasets.load_digits(28 if spec == "digits" else 8)
        elif spec == "synthetic":
            x, y = datasets.synthetic_images(seed=seed)
        else:
            raise ValueError(f"spec: expected one of {', '.join(DATA_SPECS)}, got {spec!r}")
        train, val, test = datasets.split(x, y, (0.8, 0.1, 0.1), seed=seed)
    x_train, mean, std = datasets.normalize(train[0])
    normalise = lambda part: (datasets.normalize(part[0], mean, std)[0], part[1])  # noqa: E731
    return (x_train, train[1]), normalise(val), normalise(test), {"mean": mean, "std": std}


# What a resumed run must share with the run that wrote the checkpoint for the two to be one
# run (--epochs may grow, except under the cosine schedule, whose horizon it is).
RUN_SETTINGS = ("data", "seed", "limit", "batch_size", "augment", "lr", "lr_schedule", "lr_step_size", "lr_gamma",
                "lr_min")


def _run_settings(args):
    settings = {name: getattr(args, name) for name in RUN_SETTINGS}
    if args.lr_schedule == "cosine":
        settings["epochs"] = args.epochs
    return settings


def _scheduler(args, optimizer):
    if args.lr_schedule == "step":
        return StepLR(optimizer, args.lr_step_size, args.lr_gamma)
    if args.lr_schedule == "cosine":
        return CosineAnnealingLR(optimizer, args.epochs, args.lr_min)
    return None


def _flag(name):
    return "--" + name.replace("_", "-")


def _prepare_cnn(args, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    save_path = _output_path("--save", args.save, (".npz",)) if args.save else None
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot: needs matplotlib (pip install 'pyfast[train]')")
    plot_path = _output_path("--plot", args.plot, _plot_suffixes()) if args.plot else None
    try:
        checkpoint = load_checkpoint(args.resume) if args.resume else None
    except OSError as error:  # missing, a folder, unreadable
        raise ValueError(f"--resume: cannot read {args.resume}: {error.strerror or error}") from None
    if checkpoint is not None:
        if checkpoint["epoch"] is None or checkpoint["optimizer"] is None or "run" not in checkpoint["metadata"]:
            raise ValueError(f"--resume: {args.resume} holds a model but not the state of a pyfast-train run (epoch, "
                             f"optimizer, settings): it was not written by 'pyfast-train cnn --save'")
        if checkpoint["epoch"] >= args.epochs:
            raise ValueError(f"--epochs: {args.resume} has already trained {checkpoint['epoch']} epochs; pass "
                             f"--epochs above {checkpoint['epoch']} to train more")
        saved = checkpoint["metadata"]["run"]
        differ = [f"{_flag(name)} {saved.get(name)!r} there, {value!r} here"
                  for name, value in _run_settings(args).items() if saved.get(name) != value]
        if differ:
            why = " (under --lr-schedule cosine, --epochs is where the schedule ends)" if "epochs" in saved and \
                saved["epochs"] != args.epochs else ""
            raise ValueError(f"--resume: {args.resume} comes from a run with other settings ({'; '.join(differ)}); "
                             f"resume with the settings it was trained with{why}")
    backend = _backend_from_args(args.backend, err)
    train, val, test, stats = load_image_data(args.data, seed=args.seed)
    if args.limit:
        train = (train[0][: args.limit], train[1][: args.limit])
    height, width = train[0].shape[2:]
    if height != width or height < 4:
        raise ValueError(f"--data: the CNN takes square images of at least 4x4 pixels (two 2x2 poolings); "
                         f"{args.data} holds {height}x{width} images")
    if args.augment >= min(height, width):
        raise ValueError(f"--augment: shifts of {args.augment} pixels would move a {height}x{width} image out of its "
                         f"frame; expected less than {min(height, width)}")
    model = cnn_model(backend, seed=args.seed, image_size=height, conv_version=args.conv_version)
    optimizer = Adam(model, lr=args.lr, capturable=backend.name == "cuda" and not args.no_graph)
    scheduler = _scheduler(args, optimizer)
    start, history = 0, None
    if checkpoint is not None:
        if checkpoint["metadata"].get("mean") != stats["mean"] or checkpoint["metadata"].get("std") != stats["std"]:
            raise ValueError(f"--resume: {args.resume} was trained on data normalised otherwise "
                             f"(mean {checkpoint['metadata'].get('mean')}, std {checkpoint['metadata'].get('std')})")
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(checkpoint["scheduler"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"--resume: {args.resume} does not fit this command's model and optimizer: {error}") \
                from None
        start, history = checkpoint["epoch"], checkpoint["history"] or History()
    return argparse.Namespace(args=args, out=out, backend=backend, data=(train, val, test), stats=stats, model=model,
                              optimizer=optimizer, scheduler=scheduler, start=start, history=history,
                              save_path=save_path, plot_path=plot_path)


def _train_cnn(plan):
    args, out, backend, model, optimizer = plan.args, plan.out, plan.backend, plan.model, plan.optimizer
    train, val, test = plan.data
    print(f"data: {args.data}, {len(train[0])} train / {len(val[0])} validation / {len(test[0])} test images of "
          f"{train[0].shape[2]}x{train[0].shape[3]}; backend {backend.name}", file=out)
    if plan.start:
        print(f"resuming {args.resume} after epoch {plan.start}", file=out)
    loss = nn.CrossEntropyLoss(backend)
    metadata = dict(plan.stats, run=_run_settings(args))

    def checkpoint(epoch, history):  # after every epoch: an interrupted run loses at most one
        if plan.save_path:
            save(model, plan.save_path, optimizer=optimizer, scheduler=plan.scheduler, epoch=epoch, history=history,
                 **metadata)
        plan.finished = epoch

    plan.finished = plan.start
    history = fit(model, loss, optimizer, train, val, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                  augment=args.augment, progress=not args.no_progress, log=lambda line: print(line, file=out),
                  graph=False if args.no_graph else None, scheduler=plan.scheduler, initial_epoch=plan.start,
                  history=plan.history, on_epoch_end=checkpoint)
    metrics = evaluate(model, loss, test, batch_size=args.batch_size)
    rates = history["samples_per_s"][plan.start:]  # the epochs this run trained
    if rates:
        seconds = sum(len(train[0]) / rate for rate in rates)
        print(f"trained {len(rates)} epochs in {seconds:.1f} s: {len(rates) * len(train[0]) / seconds:.0f} images/s, "
              f"{max(rates):.0f} in the fastest epoch", file=out)
    print(f"test accuracy {metrics['accuracy']:.4f} (loss {metrics['loss']:.4f})", file=out)
    if plan.save_path:
        print(f"saved {plan.save_path}", file=out)
    if plan.plot_path:
        plot_history(history, plan.plot_path)
        print(f"plotted {plan.plot_path}", file=out)
    return model, history, metrics


def run_cnn(args, out=None, err=None):
    """The cnn command on parsed `args`: (model, history, test metrics). Prints to `out`
    (stdout), notices to `err` (stderr)."""
    return _train_cnn(_prepare_cnn(args, out, err))


def _number(kind, minimum):
    """An argparse type: an int or a finite float, >= minimum; its error is argparse's one line
    ("argument --epochs: expected an integer >= 1, got '-1'")."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
                from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} >= {minimum}, "
                                             f"got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _data_spec(text):
    if text in DATA_SPECS[:3]:
        return text
    if text.startswith("mnist:"):
        location = text.split(":", 1)[1]
        if not location:
            raise argparse.ArgumentTypeError("mnist: needs a path, as mnist:PATH (a folder of IDX files or an .npz)")
        if not os.path.exists(location):
            raise argparse.ArgumentTypeError(f"mnist:{location}: no such file or folder (nothing is downloaded)")
        return text
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(DATA_SPECS)}, got {text!r}")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" where there is a default worth showing (not None / False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parser():
    root = argparse.ArgumentParser(prog="pyfast-train", description="Train the two starter workloads on pyfast.")
    commands = root.add_subparsers(dest="command", required=True)
    positive, count, rate = _number(int, 1), _number(int, 0), _number(float, 0)
    linreg = commands.add_parser("linreg", help="linear regression: Linear(features, 1), MSE, SGD",
                                 formatter_class=_HelpWithDefaults)
    linreg.add_argument("--samples", type=positive, default=100, help="training samples")
    linreg.add_argument("--features", type=positive, default=2, help="input features")
    linreg.add_argument("--epochs", type=positive, default=1000, help="full-batch SGD steps")
    linreg.add_argument("--lr", type=rate, default=0.01, help="learning rate")
    linreg.add_argument("--seed", type=count, default=0, help="seed of the data and the initial weights")
    linreg.add_argument("--backend", choices=["cuda", "numpy"], help="default: cuda when a GPU is usable")
    linreg.add_argument("--eager", action="store_true",
                        help="on the GPU, one launch per op per step instead of the fused one-launch run")
    cnn = commands.add_parser("cnn", help="the small CNN on handwritten digits, cross-entropy, Adam",
                              formatter_class=_HelpWithDefaults)
    cnn.add_argument("--data", type=_data_spec, default="digits",
                     help="digits (28x28), digits8 (8x8), synthetic, or mnist:PATH: a folder of the four MNIST IDX "
                          "files, or an .npz holding x_train, y_train, x_test, y_test (images (N, H, W), integer "
                          "labels 0-9); nothing is downloaded")
    cnn.add_argument("--epochs", type=positive, default=10, help="train through this epoch (with --resume too)")
    cnn.add_argument("--batch-size", type=positive, default=64, help="images per step")
    cnn.add_argument("--lr", type=rate, default=1e-3, help="Adam's learning rate (the schedule's start)")
    cnn.add_argument("--lr-schedule", choices=["constant", "step", "cosine"], default="constant",
                     help="per epoch: constant; step (times --lr-gamma every --lr-step-size epochs); cosine (to "
                          "--lr-min at --epochs)")
    cnn.add_argument("--lr-step-size", type=positive, default=5, help="epochs per step of the step schedule")
    cnn.add_argument("--lr-gamma", type=rate, default=0.1, help="the step schedule's factor")
    cnn.add_argument("--lr-min", type=rate, default=0.0, help="the cosine schedule's final learning rate")
    cnn.add_argument("--seed", type=count, default=0, help="seed of the split, the weights and the shuffling")
    cnn.add_argument("--augment", type=count, default=0, help="random shifts of up to this many pixels")
    cnn.add_argument("--limit", type=positive, help="use only the first N training images")
    cnn.add_argument("--save", metavar="PATH",
                     help="write a checkpoint (.npz: model, optimizer, epoch) here after every epoch")
    cnn.add_argument("--resume", metavar="PATH",
                     help="continue the run that --save wrote PATH with (same settings; --epochs may grow)")
    cnn.add_argument("--plot", metavar="PATH", help="write the loss / accuracy curves (.png) here")
    cnn.add_argument("--backend", choices=["cuda", "numpy"], help="default: cuda when a GPU is usable")
    cnn.add_argument("--no-progress", action="store_true", help="no progress bar")
    cnn.add_argument("--conv-version", choices=list(_checks.CONV2D_VERSIONS),
                     help="conv kernels on the GPU (default: chosen per pass and shape, see pyfast.ops.conv2d_plan)")
    cnn.add_argument("--no-graph", action="store_true",
                     help="on the GPU, launch every op of every step instead of replaying a CUDA graph")
    root.commands = {"linreg": linreg, "cnn": cnn}
    return root


def main(argv=None):
    """The CLI: 0 when done, 2 for a bad argument or setting (one line on stderr), 1 when the
    training diverged (a loss that is not finite; one line), 130 when interrupted (with how to
    resume)."""
    root = parser()
    args = root.parse_args(argv)
    prepare, run = (_prepare_linreg, _train_linreg) if args.command == "linreg" else (_prepare_cnn, _train_cnn)
    try:
        plan = prepare(args)
    except (ValueError, OSError, RuntimeError) as error:  # found before training: a usage error
        root.commands[args.command].error(str(error))
    try:
        run(plan)
    except TrainingDiverged as diverged:
        print(f"pyfast-train {args.command}: the training loss is {diverged.loss} at epoch {diverged.epoch}: training "
              f"diverged; try a smaller --lr (it is {diverged.lr:g})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        message = "pyfast-train: interrupted"
        if getattr(plan, "save_path", None) and plan.finished > plan.start:
            message += (f" after epoch {plan.finished}, which is saved in {plan.save_path}; to continue, run the same "
                        f"command with --resume {plan.save_path}")
        print(message, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
