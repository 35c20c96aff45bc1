"""acquisition.shared.spectral.check_wavelength_axis: the one check of a wavelength axis that the
store (writing and validating files) and the preprocessing use."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from acquisition.shared.spectral import WavelengthMismatchError, check_wavelength_axis

steps = st.lists(st.floats(min_value=1e-3, max_value=10.0), min_size=1, max_size=50)


@given(start=st.floats(min_value=100.0, max_value=1000.0), steps=steps)
def test_an_increasing_axis_comes_back_as_float64(start, steps):
    axis = start + np.cumsum([0.0] + steps)
    checked = check_wavelength_axis(axis.astype(np.float32) if len(steps) % 2 else axis, name="axis")
    assert checked.dtype == np.float64 and checked.shape == axis.shape


@given(steps=steps, where=st.integers(min_value=0), back=st.floats(min_value=0.0, max_value=5.0))
def test_the_first_step_that_does_not_increase_is_named(steps, where, back):
    where %= len(steps)
    steps = list(steps)
    steps[where] = -back                    # pixel where+1 is not above pixel where
    axis = 300.0 + np.cumsum([0.0] + steps)
    first = int(np.flatnonzero(np.diff(axis) <= 0)[0])
    with pytest.raises(WavelengthMismatchError, match=rf"^axis: not strictly increasing \(index {first}: "):
        check_wavelength_axis(axis, name="axis")


@pytest.mark.parametrize("axis, message", [
    ([300.0], r"must be 1-D with at least 2 pixels, got shape \(1,\)"),
    ([[300.0, 301.0]], r"must be 1-D with at least 2 pixels, got shape \(1, 2\)"),
    ([300.0, np.nan, 302.0], "holds non-finite values"),
    ([300.0, np.inf], "holds non-finite values"),
])
def test_unusable_axes_are_refused_with_the_reason(axis, message):
    with pytest.raises(WavelengthMismatchError, match=message):
        check_wavelength_axis(axis, name="axis")
