"""The comparison helper must be able to fail: every way a result can be wrong is caught."""

import numpy as np
import pytest

from pyfast.testing import assert_close, reduction_atol


@pytest.mark.parametrize("actual,expected", [
    ([np.inf], [-np.inf]), ([np.inf], [1.0]), ([1.0], [np.inf]), ([np.nan], [1.0]), ([1.0], [np.nan]),
    ([1.0, 2.0], [1.0, 2.1]), ([0.0], [1e-3]),
])
def test_wrong_values_fail(actual, expected):
    with pytest.raises(AssertionError, match="1 of"):
        assert_close(np.array(actual), np.array(expected), atol=1e-4)


def test_equal_specials_and_close_values_pass():
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0])
    assert_close(values, values.copy(), atol=0, rtol=0)
    assert_close(np.array([1.0 + 1e-7]), np.array([1.0]), atol=0, rtol=1e-6)


def test_shape_mismatch_fails():
    with pytest.raises(AssertionError, match="shape"):
        assert_close(np.zeros(3), np.zeros((3, 1)), atol=1)


def test_reduction_tolerance_stays_below_one_missing_term():
    assert reduction_atol(4096) < 0.01
    assert reduction_atol(1) > 0
