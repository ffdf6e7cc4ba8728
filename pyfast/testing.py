"""Comparison helpers shared by the tests and the benchmarks' correctness checks."""

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def to_numpy(x):
    """A NumPy copy of a NumPy / CuPy / PyTorch array (copies device data to the host)."""
    if hasattr(x, "get"):
        return x.get()
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def reduction_atol(length, scale=1.0, factor=4.0):
    """Absolute tolerance for float32 sums of `length` terms of magnitude about `scale`.

    A sequential float32 sum of k terms of size s carries a rounding error of about
    eps * s * k / sqrt(2) (partial sums grow like sqrt(k) for random signs, and each of the
    k additions rounds at that size); `factor` leaves room for other summation orders.
    A wrong or missing term (an error of about s) stays far above this for k < 10^6.
    """
    return factor * FLOAT32_EPS * scale * max(int(length), 1)


def _array_module(*arrays):
    """CuPy when any argument is a CuPy array (the comparison then stays on the GPU)."""
    for x in arrays:
        if type(x).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def assert_close(actual, expected, *, atol, rtol=1e-5, name="result"):
    """|actual - expected| <= atol + rtol * |expected| everywhere. NaN passes only against NaN,
    an infinity only against the same infinity. Compares on the GPU when given CuPy arrays;
    reports the count of bad elements and the worst one on failure."""
    xp = _array_module(actual, expected)
    if xp is np:
        actual, expected = to_numpy(actual), to_numpy(expected)
    actual, expected = xp.asarray(actual, dtype=xp.float64), xp.asarray(expected, dtype=xp.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    if actual.size == 0:
        return
    with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf: infinities must be equal instead
        error = xp.abs(actual - expected)
        bound = atol + rtol * xp.abs(expected)
        close = ((error <= bound) & xp.isfinite(expected)) | (actual == expected)
    bad = ~(close | (xp.isnan(actual) & xp.isnan(expected)))
    count = int(bad.sum())
    if count:
        with np.errstate(invalid="ignore"):
            excess = xp.where(bad, xp.nan_to_num(error - bound, nan=xp.inf), -xp.inf)
        worst = tuple(int(i) for i in np.unravel_index(int(excess.argmax()), bad.shape))
        raise AssertionError(
            f"{name}: {count} of {actual.size} elements differ; worst at {worst}: "
            f"got {float(actual[worst])!r}, expected {float(expected[worst])!r} (atol={atol:.3g}, rtol={rtol:.3g}); "
            f"{int(xp.isnan(actual).sum())} NaN in the result"
        )
