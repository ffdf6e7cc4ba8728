import os
import zlib
from collections import Counter

import numpy as np
import pytest
from hypothesis import settings

import pyfast

# Property tests: derandomized under CI (the same examples every run), no per-example deadline
# (the first GPU call compiles nothing but can be slow); PYFAST_HYPOTHESIS_EXAMPLES raises the
# count for a long fuzzing run on a GPU machine.
_examples = int(os.environ.get("PYFAST_HYPOTHESIS_EXAMPLES", "30"))
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=_examples, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=_examples, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_report_header(config):
    if pyfast.emulator.enabled():
        return f"pyfast GPU: {pyfast.emulator.describe()}"
    if pyfast.is_available():
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["name"].decode()
        return f"pyfast GPU: {name}"
    return f"pyfast GPU: none ({pyfast.unavailable_reason()}); GPU tests will be skipped"


def pytest_terminal_summary(terminalreporter):
    """One line per skip reason with its count (on a CPU machine: hundreds of GPU tests, one
    reason), instead of one line per skipped test."""
    reasons = Counter(report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                      for report in terminalreporter.stats.get("skipped", []))
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"skipped {count}: {reason.removeprefix('Skipped: ')}")


def pytest_configure(config):
    # Under compute-sanitizer, CuPy's pool would hide overruns inside its larger blocks.
    if os.environ.get("PYFAST_TEST_NO_POOL") == "1" and pyfast.is_available():
        import cupy

        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)


def pytest_collection_modifyitems(config, items):
    if pyfast.is_available():
        return
    if pyfast.emulator.loader.requested():
        # Asked for the emulator and did not get it: skipping every GPU test would pass vacuously.
        raise pytest.UsageError(f"PYFAST_EMULATE is set, but {pyfast.unavailable_reason()}")
    skip = pytest.mark.skip(reason=f"needs a GPU, or the CPU emulator (PYFAST_EMULATE=1, tests/emulated.sh): "
                                   f"{pyfast.unavailable_reason()}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fresh inputs per test, the same on every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def numeric_gradient(f, x, h=1e-2):
    """Central differences of the scalar function f at x (float32 array, perturbed in place)."""
    grad = np.zeros(x.shape)
    for index in np.ndindex(*x.shape):
        saved = x[index]
        x[index] = saved + h
        up = f()
        x[index] = saved - h
        down = f()
        x[index] = saved
        grad[index] = (up - down) / (2 * h)
    return grad


class FakeCudaArray:
    """Claims to be device memory; its pointer must never be dereferenced."""

    def __init__(self, shape, typestr="<f4", strides=None, data=(0x1000, False), **extra):
        self.__cuda_array_interface__ = dict(shape=shape, typestr=typestr, strides=strides, data=data,
                                             version=3, **extra)


def fake(*shape, **kwargs):
    return FakeCudaArray(shape, **kwargs)
