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
