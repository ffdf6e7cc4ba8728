import os
import zlib

import numpy as np
import pytest

import pyfast


def pytest_report_header(config):
    if pyfast.is_available():
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["name"].decode()
        return f"pyfast GPU: {name}"
    return f"pyfast GPU: none ({pyfast.unavailable_reason()}); GPU tests will be skipped"


def pytest_configure(config):
    # Under compute-sanitizer, CuPy's pool would hide overruns inside its larger blocks.
    if os.environ.get("PYFAST_TEST_NO_POOL") == "1" and pyfast.is_available():
        import cupy

        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)


def pytest_collection_modifyitems(config, items):
    if pyfast.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a GPU: {pyfast.unavailable_reason()}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fresh inputs per test, the same on every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)
