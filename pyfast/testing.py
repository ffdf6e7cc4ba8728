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


def assert_close(actual, expected, *, atol, rtol=1e-5, name="result"):
    """|actual - expected| <= atol + rtol * |expected| everywhere, NaN never passes (unless
    expected is NaN at the same place). Reports the worst element on failure."""
    actual = to_numpy(actual).astype(np.float64)
    expected = to_numpy(expected).astype(np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    if actual.size == 0:
        return
    both_nan = np.isnan(actual) & np.isnan(expected)
    error = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    bad = ~((error <= bound) | both_nan)
    if bad.any():
        count = int(bad.sum())
        worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(error, nan=np.inf) - bound, -np.inf)), bad.shape)
        raise AssertionError(
            f"{name}: {count} of {actual.size} elements differ; worst at {tuple(int(i) for i in worst)}: "
            f"got {actual[worst]!r}, expected {expected[worst]!r} (atol={atol:.3g}, rtol={rtol:.3g}); "
            f"{int(np.isnan(actual).sum())} NaN in the result"
        )
