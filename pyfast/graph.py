"""CUDA graphs for training steps: capture a step once its shapes are fixed, then replay it.

A training step of the CNN launches about thirty kernels; at small batches their host cost
(Python argument checks, launches) exceeds their GPU time. Captured once with CuPy's stream
capture, the whole step replays as one graph launch. What a captured step needs (all of it
arranged by ``pyfast.train.fit``):

- fixed memory: the step reads its batch from the same buffers every time (copy each batch
  into them) and writes into the layers' per-shape buffers and the optimizer's states;
- the same arguments every time: ``Adam(capturable=True)`` keeps its step count on the device;
- no host synchronization inside: ``CrossEntropyLoss`` checks labels on its first call only,
  so run the first step of each shape eagerly;
- a stream of its own: capture cannot start on CUDA's legacy default stream.

Every array the ops allocate while capturing (workspaces, loss scalars) belongs to the graph
from then on (``CapturedStep`` holds them), so CuPy's pool never hands that memory to anyone
else while the graph can still replay.
"""

from pyfast import _arrays


class CapturedStep:
    """fn() captured on `stream` (a cupy.cuda.Stream other than the null stream). Capturing
    runs nothing; call replay() to run the step (the first time included)."""

    def __init__(self, fn, stream):
        self.stream = stream
        self._keepalive = []
        _arrays.capture_keepalive = self._keepalive
        with stream:
            stream.begin_capture()
            try:
                self.result = fn()
            except BaseException:
                _arrays.capture_keepalive = None
                try:
                    stream.end_capture()  # leave capture mode; the partial graph is dropped
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
                raise
            finally:
                _arrays.capture_keepalive = None
            self.graph = stream.end_capture()

    def replay(self):
        self.graph.launch(stream=self.stream)
