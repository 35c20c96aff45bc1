"""Secondary spectrometer variants and day-change severities, measured on the spectra."""

import numpy as np
import pytest

from sim.scene import DAY_CHANGES, DayConditions, PairedScene
from sim.spectrograph import SECONDARY_VARIANTS
from tests.sim.conftest import measure_line

# variant -> (range nm, pixels, resolving power range)
EXPECTED = {"standard": ((260.0, 370.0), 3872, (10_000, 12_000)),
            "narrow-hires": ((278.0, 322.0), 3648, (20_000, 26_000)),
            "broad-lowres": ((240.0, 415.0), 2048, (1_200, 2_500))}


@pytest.mark.parametrize("variant", sorted(SECONDARY_VARIANTS))
def test_secondary_variant_axis_and_resolution(variant):
    (lo, hi), pixels, (r_lo, r_hi) = EXPECTED[variant]
    scene = PairedScene(seed=3, secondary=variant)
    wavelengths = scene.wavelengths("secondary")
    assert wavelengths.size == pixels
    assert wavelengths[0] == pytest.approx(lo, abs=1e-6) and wavelengths[-1] == pytest.approx(hi, abs=1e-6)
    assert np.all(np.diff(wavelengths) > 0)
    fwhm = scene.spectrograph("secondary").instrument_fwhm_nm(wavelengths)
    resolving = wavelengths / fwhm
    assert r_lo < resolving.min() and resolving.max() < r_hi


def _apparent_fwhm_nm(wavelengths, spectrum, line_nm):
    """Width at half height of a line in a mean spectrum, by linear interpolation."""
    pixel = int(round(np.interp(line_nm, wavelengths, np.arange(wavelengths.size))))
    window = spectrum[pixel - 30:pixel + 31].astype(np.float64)
    lam = wavelengths[pixel - 30:pixel + 31]
    base = np.percentile(window, 20)
    peak = int(np.argmax(window))
    half = base + 0.5 * (window[peak] - base)
    left = peak
    while window[left] > half:
        left -= 1
    right = peak
    while window[right] > half:
        right += 1
    x_left = np.interp(half, [window[left], window[left + 1]], [lam[left], lam[left + 1]])
    x_right = np.interp(half, [window[right], window[right - 1]], [lam[right], lam[right - 1]])
    return x_right - x_left


def test_variants_resolve_differently_and_leave_the_primary_alone(pure_spots):
    """Si I 288.16 nm in quartz: the measured width follows each variant's resolution, and
    the primary spectra of the same shots are identical whatever the secondary."""
    x, y = pure_spots["quartz"]
    widths, primaries = {}, {}
    for variant in SECONDARY_VARIANTS:
        scene = PairedScene(seed=3, secondary=variant)
        shots = scene.shots(x, y, rng=np.random.default_rng(5))
        primaries[variant] = shots["primary"]
        wavelengths = scene.wavelengths("secondary")
        widths[variant] = _apparent_fwhm_nm(wavelengths, shots["secondary"].mean(axis=0), 288.1579)
        error, _ = measure_line(wavelengths, shots["secondary"].mean(axis=0), 288.1579)
        assert abs(error) < 0.5, f"{variant}: Si I 288.16 off by {error:+.2f} px"
    assert widths["narrow-hires"] < 0.03 and 0.15 < widths["broad-lowres"] < 0.3, widths
    assert widths["narrow-hires"] < widths["standard"] < widths["broad-lowres"]
    for variant in SECONDARY_VARIANTS:
        np.testing.assert_array_equal(primaries[variant], primaries["standard"])


def test_unknown_variant_and_severity_are_named():
    with pytest.raises(ValueError, match="unknown secondary variant 'echelle'.*narrow-hires"):
        PairedScene(secondary="echelle")
    with pytest.raises(ValueError, match="unknown day-change severity 'extreme'.*severe"):
        PairedScene(day=1, day_change="extreme")


def test_mild_is_the_default_day_model():
    assert DayConditions.for_day(3) == DayConditions.for_day(3, "mild")
    assert DayConditions.for_day(0, "severe") == DayConditions.for_day(0)


@pytest.mark.parametrize("day", [1, 2, 3])
def test_severe_day_changes_more_than_mild_in_every_quantity(day):
    mild, severe = DayConditions.for_day(day, "mild"), DayConditions.for_day(day, "severe")

    def away(v):
        return abs(np.log(v))

    assert away(severe.intensity) > away(mild.intensity)
    assert away(severe.plasma.continuum_scale) > away(mild.plasma.continuum_scale)
    for system in ("primary", "secondary"):
        s, m = severe.drift[system], mild.drift[system]
        assert abs(s.shift_px) > abs(m.shift_px) and s.fwhm_scale > m.fwhm_scale
        assert abs(s.dark_shift_counts) > abs(m.dark_shift_counts)
    limits = DAY_CHANGES["severe"]
    assert limits.shift_px[0] <= abs(severe.drift["primary"].shift_px) <= limits.shift_px[1]


def day_change_figures(pure_spots, severity, day):
    """(relative RMS change of the mean primary spectrum above dark, Si I 288 line shift in px)
    between day 0 and ``day`` over the same quartz and albite spots."""
    x = np.concatenate([pure_spots["quartz"][0], pure_spots["albite"][0]])
    y = np.concatenate([pure_spots["quartz"][1], pure_spots["albite"][1]])
    means, shifts = [], []
    for d in (0, day):
        scene = PairedScene(seed=3, day=d, day_change=severity)
        spectra = scene.shots(x, y, rng=np.random.default_rng(9))["primary"]
        dark = scene.dark("primary", 50, rng=np.random.default_rng(10)).mean(axis=0)
        means.append(spectra.mean(axis=0) - dark)
        shifts.append(measure_line(scene.wavelengths("primary"), spectra.mean(axis=0), 288.1579)[0])
    change = np.sqrt(np.mean((means[1] - means[0]) ** 2)) / np.sqrt(np.mean(means[0] ** 2))
    return change, abs(shifts[1] - shifts[0])


@pytest.mark.parametrize("day", [1, 2])
def test_severe_change_is_measurably_bigger_than_mild(pure_spots, day):
    mild_change, mild_shift = day_change_figures(pure_spots, "mild", day)
    severe_change, severe_shift = day_change_figures(pure_spots, "severe", day)
    assert severe_change > 1.5 * mild_change, (mild_change, severe_change)
    assert severe_shift > 0.5 and severe_shift > 2 * mild_shift, (mild_shift, severe_shift)
