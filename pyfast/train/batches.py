"""The batches a training run steps through: cut from the host arrays and sent through pinned
buffers on a copy stream (HostPipeline), or gathered on the device from a copy of the data
set made once (DeviceBatch, one gather_batch launch); both in the order and with the shifts of
pyfast.data.epoch_plan, so the two give the same batches."""

import numpy as np

from pyfast import data as datasets


def to_backend(backend, xb, yb, classifier):
    return backend.asarray(xb), backend.asarray(yb, dtype=np.int64 if classifier else np.float32)


# A training set is kept on the GPU when it takes at most this share of the free memory (the
# digits: 0.5 MB; MNIST: 190 MB).
DEVICE_DATA_SHARE = 0.25


def keep_on_device(backend, x, y, requested):
    """Whether the data set goes to the device once (True / False: as asked; None: on the cuda
    backend when it fits in DEVICE_DATA_SHARE of the free memory)."""
    if requested is not None:
        return bool(requested)
    if backend.name != "cuda":
        return False
    import cupy

    free, _ = cupy.cuda.runtime.memGetInfo()
    return x.size * 4 + y.size * 8 <= DEVICE_DATA_SHARE * free


class HostBatch:
    """A batch cut from the host arrays (copied to the device when the step runs there)."""

    def __init__(self, backend, xb, yb, classifier):
        self.backend, self.xb, self.yb, self.classifier = backend, xb, yb, classifier
        self.key = (xb.shape, yb.shape)

    def arrays(self):
        return to_backend(self.backend, self.xb, self.yb, self.classifier)

    def fill(self, xs, ys, pipeline):
        pipeline.send((self.xb, self.yb), (xs, ys))


class HostPipeline:
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


class DeviceBatch:
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


class Batches:
    """The batches of a data set, epoch by epoch, in the order and with the shifts of
    data.epoch_plan: cut on the host and copied per batch, or, with `on_device`, gathered on
    the device from a copy made once (the epoch's order and shifts go over once per epoch)."""

    def __init__(self, backend, x, y, classifier, batch_size, on_device):
        self.backend, self.classifier, self.batch_size, self.on_device = backend, classifier, batch_size, on_device
        self.host_x, self.host_y = x, y
        if on_device:
            self.x, self.y = to_backend(backend, x, y, classifier)

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
                yield DeviceBatch(self, index, part)
            else:
                xb = self.host_x[index]
                yield HostBatch(self.backend, datasets.shift_images(xb, part) if part is not None else xb,
                                 self.host_y[index], self.classifier)
