"""One training step (forward, loss, backward, optimizer step) with the epoch's loss and correct
count summed on the device: eagerly, or on the cuda backend replayed as a CUDA graph per batch
shape (pyfast.graph), captured anew when the optimizer's hyperparameters change."""

import contextlib
import math

import numpy as np

from pyfast import graph
from pyfast.errors import TrainingDiverged
from pyfast.optim import Adam
from pyfast.train.batches import HostPipeline


class Steps:
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
            self.pipeline = HostPipeline(self.stream)
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
        """One step on `batch` (a HostBatch or a DeviceBatch)."""
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


def graph_usable(backend, optimizer, graph_requested, log):
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
