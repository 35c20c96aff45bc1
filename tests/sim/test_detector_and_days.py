"""Detector statistics, saturation, and what a change of day does."""

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from sim.scene import DayConditions, PairedScene
from sim.spectrograph import PRIMARY, SECONDARY, InstrumentDrift, Spectrograph
from tests.sim.conftest import measure_line


@pytest.mark.parametrize("design", [PRIMARY, SECONDARY], ids=lambda d: d.name)
def test_noise_variance_grows_with_counts_as_shot_noise(design):
    spectrograph = Spectrograph(design)
    levels = np.array([0.0, 300.0, 3000.0, 30000.0], dtype=np.float32)
    frames = 400
    signal = np.repeat(levels, frames)[:, None] * np.ones((1, design.pixels), np.float32)
    counts = spectrograph.detect(signal, np.random.default_rng(1)).reshape(len(levels), frames, -1)
    variance = (counts - spectrograph.dark_level).var(axis=1).mean(axis=1)
    assert (np.diff(variance) > 0).all()
    expected = levels / design.gain_e_per_count + (design.read_noise_e / design.gain_e_per_count) ** 2 + 1 / 12
    # PRNU is fixed per pixel and cancels in the variance over frames
    np.testing.assert_allclose(variance, expected, rtol=0.08)
    mean = (counts - spectrograph.dark_level).mean(axis=1).mean(axis=1)
    np.testing.assert_allclose(mean, levels, atol=0.5)


def test_counts_are_integers_clipped_to_16_bits():
    spectrograph = Spectrograph(PRIMARY)
    signal = np.full((3, PRIMARY.pixels), 1e6, np.float32)
    signal[1] = 0.0
    counts = spectrograph.detect(signal, np.random.default_rng(2))
    assert (counts[0] == 65535).all()
    assert counts.min() >= 0 and (counts == np.rint(counts)).all()
    assert counts.dtype == np.float32


def test_strong_lines_saturate_rarely(scene, pure_spots):
    x = np.concatenate([pure_spots[p][0] for p in pure_spots])
    y = np.concatenate([pure_spots[p][1] for p in pure_spots])
    counts = scene.shots(x, y, rng=np.random.default_rng(3))["primary"]
    saturated_spectra = (counts >= 65535).any(axis=1).mean()
    assert saturated_spectra < 0.05
    assert (counts >= 65535).mean() < 1e-4


def _background(counts):
    """Per-spot baseline: the 20th percentile of the spectrum (lines are sparse)."""
    return np.percentile(counts, 20, axis=1).mean()


def test_a_change_of_day_shifts_the_background(pure_spots):
    x = np.concatenate([pure_spots["quartz"][0], pure_spots["albite"][0]])
    y = np.concatenate([pure_spots["quartz"][1], pure_spots["albite"][1]])
    backgrounds = {}
    for day in (0, 1, 2):
        shots = PairedScene(seed=3, day=day).shots(x, y, rng=np.random.default_rng(4))
        backgrounds[day] = {s: (_background(v), _background(v[:, -400:])) for s, v in shots.items()}
    for system in ("primary", "secondary"):
        for day in (1, 2):
            blue_shift = backgrounds[day][system][0] - backgrounds[0][system][0]
            red_shift = backgrounds[day][system][1] - backgrounds[0][system][1]
            assert max(abs(blue_shift), abs(red_shift)) > 40, (system, day, blue_shift, red_shift)
    # the same day twice is the same bench
    again = PairedScene(seed=3, day=1).shots(x, y, rng=np.random.default_rng(4))
    assert _background(again["primary"]) == pytest.approx(backgrounds[1]["primary"][0])


def _shift_px(reference: np.ndarray, shifted: np.ndarray, pixel: int, half: int = 6) -> float:
    """Sub-pixel shift of `shifted` against `reference` near `pixel` (least squares over trial shifts)."""
    spline = CubicSpline(np.arange(reference.size), reference)
    p = np.arange(pixel - half, pixel + half + 1)
    target = shifted[p]
    best = (np.inf, 0.0)
    for s in np.linspace(-0.6, 0.6, 241):
        model = np.stack([spline(p - s), np.ones(p.size)], axis=1)
        coef, residual, *_ = np.linalg.lstsq(model, target, rcond=None)
        best = min(best, (float(residual[0]), s))
    return best[1]


def test_day_drift_moves_lines_slightly_on_a_fixed_wavelength_axis(pure_spots):
    x, y = pure_spots["quartz"]
    day0, day1 = PairedScene(seed=3, day=0), PairedScene(seed=3, day=1)
    np.testing.assert_array_equal(day0.wavelengths("primary"), day1.wavelengths("primary"))
    drift = day1.conditions.drift["primary"]
    wavelengths = day0.wavelengths("primary")
    mean0 = day0.shots(x, y, rng=np.random.default_rng(5))["primary"].mean(0)
    mean1 = day1.shots(x, y, rng=np.random.default_rng(5))["primary"].mean(0)
    pixel = int(round(np.interp(288.1579, wavelengths, np.arange(wavelengths.size))))
    u = (pixel - 0.5 * (PRIMARY.pixels - 1)) / (0.5 * PRIMARY.pixels)
    expected = -(drift.shift_px + drift.stretch_px * u)          # light moves against the drift of the axis
    assert 0.03 < abs(expected) < 0.5
    # interpolating an undersampled (~1 px FWHM) line biases the estimate by a few hundredths
    assert _shift_px(mean0, mean1, pixel) == pytest.approx(expected, abs=0.06)
    assert abs(measure_line(wavelengths, mean1, 288.1579)[0]) <= 0.5


def test_day_changes_resolution_intensity_and_plasma():
    nominal, other = DayConditions.for_day(0), DayConditions.for_day(1)
    assert other.intensity != nominal.intensity
    assert other.plasma.t_1us_ev != nominal.plasma.t_1us_ev
    assert other.drift["primary"].fwhm_scale != 1.0
    broadened = Spectrograph(PRIMARY, InstrumentDrift(fwhm_scale=1.05))
    assert broadened.instrument_fwhm_nm(300.0) == pytest.approx(1.05 * Spectrograph(PRIMARY).instrument_fwhm_nm(300.0))
    with pytest.raises(ValueError, match="day must be"):
        DayConditions.for_day(-1)


def test_same_seed_and_rng_give_the_same_shots_and_another_seed_does_not(pure_spots):
    x, y = pure_spots["garnet"]
    a = PairedScene(seed=3).shots(x, y, rng=np.random.default_rng(6))
    b = PairedScene(seed=3).shots(x, y, rng=np.random.default_rng(6))
    c = PairedScene(seed=3).shots(x, y, rng=np.random.default_rng(7))
    for system in a:
        np.testing.assert_array_equal(a[system], b[system])
        assert not np.array_equal(a[system], c[system])


def test_dark_frames_have_offset_and_read_noise_only(scene):
    dark = scene.dark("secondary", 300, rng=np.random.default_rng(8))
    design = SECONDARY
    assert dark.mean() == pytest.approx(design.dark_offset_counts, abs=3)
    read_noise_counts = design.read_noise_e / design.gain_e_per_count
    assert dark.std(axis=0).mean() == pytest.approx(np.sqrt(read_noise_counts ** 2 + 1 / 12), rel=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        scene.dark("secondary", -1)
