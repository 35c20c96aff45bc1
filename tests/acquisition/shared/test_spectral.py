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


# ------------------------------------------------------------------ a recalibrated spectrometer

def _severe_day_shots(system: str, drift_undone: bool):
    from dataclasses import replace

    from sim.scene import PairedScene
    scene = PairedScene(seed=1, day=1, day_change="severe", calibration="daily")
    if drift_undone:
        drift = scene.conditions.drift[system]
        scene = scene.with_drift(system, replace(drift, shift_px=0.0, stretch_px=0.0))
    x = np.linspace(0.0, 4000.0, 60)
    counts = scene.shots(x, np.full_like(x, 500.0), rng=np.random.default_rng(5))[system]
    return scene.wavelengths(system), scene.spectrograph(system).wavelengths, counts


@pytest.mark.parametrize("system", ["primary", "secondary"])
def test_resampling_a_recalibrated_spectrometer_gives_back_the_undrifted_spectra(system):
    from acquisition.shared.spectral import AxisResampler, baseline_correct, recalibrated_axis, resample
    calibrated, factory, drifted = _severe_day_shots(system, drift_undone=False)
    _, _, truth = _severe_day_shots(system, drift_undone=True)      # the same plasmas, the light not moved
    assert recalibrated_axis(calibrated, factory)

    def error(counts):
        corrected, expected = baseline_correct(counts), baseline_correct(truth)
        return np.linalg.norm(corrected - expected) / np.linalg.norm(expected)

    spline = AxisResampler(calibrated, factory)(drifted)
    assert spline.shape == drifted.shape and spline.dtype == np.float32
    # severe drift (0.6-1.5 px) left in place costs most of the spectrum; a spline takes most of it back,
    # and better than linear interpolation, which blurs the lines
    assert error(spline) < 0.2 * error(drifted), (error(spline), error(drifted))
    assert error(spline) < 0.8 * error(resample(drifted, calibrated, factory))


def test_an_axis_is_the_same_recalibrated_or_another():
    from acquisition.shared.spectral import AxisResampler, MAX_RECALIBRATION_PX, recalibrated_axis
    axis = np.linspace(260.0, 370.0, 500)
    step = axis[1] - axis[0]
    assert recalibrated_axis(axis + 0.05 * step, axis) is False
    assert recalibrated_axis(axis + 1.3 * step, axis) is True
    with pytest.raises(WavelengthMismatchError, match=r"differ by 6\.0 px"):
        recalibrated_axis(axis + (MAX_RECALIBRATION_PX + 1) * step, axis)
    with pytest.raises(WavelengthMismatchError, match="expected 500 pixels, got 400"):
        recalibrated_axis(axis[:400], axis)
    # a smooth spectrum shifted by a pixel and resampled is the spectrum on the model's axis
    line = lambda wl: np.exp(-0.5 * ((wl - 300.0) / (4 * step)) ** 2)
    moved = axis + 1.3 * step
    np.testing.assert_allclose(AxisResampler(moved, axis)(line(moved))[0, 5:-5], line(axis)[5:-5], atol=1e-3)
