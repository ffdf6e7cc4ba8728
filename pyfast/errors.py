"""Exceptions raised by pyfast."""


class CudaError(RuntimeError):
    """A CUDA call made by a pyfast op failed.

    Attributes: ``op`` (the pyfast op, e.g. ``"matmul"``), ``name`` (the CUDA error name,
    e.g. ``"cudaErrorInvalidValue"``), ``code`` (its numeric value) and ``description``.
    Launch failures surface at the op that launched; faults inside a running kernel surface
    at the next synchronizing call, unless ``PYFAST_SYNC=1`` makes every op synchronize.
    """

    def __init__(self, op, name, code, description):
        super().__init__(f"{op}: CUDA error {name} ({code}): {description}")
        self.op = op
        self.name = name
        self.code = code
        self.description = description

    def __reduce__(self):
        return (type(self), (self.op, self.name, self.code, self.description))


class TrainingDiverged(FloatingPointError):
    """Training stopped at a loss that is not finite (NaN or infinite): the run diverged, most
    often from a learning rate too large for the problem. Attributes: ``epoch``, ``loss`` and
    ``lr``. (Keras' TerminateOnNaN stops the same way.)"""

    def __init__(self, epoch, loss, lr):
        super().__init__(f"the training loss is {loss} at epoch {epoch}: training diverged; try a smaller learning "
                         f"rate (it is {lr:g})")
        self.epoch, self.loss, self.lr = epoch, loss, lr

    def __reduce__(self):
        return (type(self), (self.epoch, self.loss, self.lr))
