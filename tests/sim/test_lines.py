"""The strongest lines sit at their tabulated wavelengths, in the right phases and systems."""

import numpy as np
import pytest

from sim.lines import load_lines
from tests.sim.conftest import covers, line_significance, measure_line

SILICATES = ("quartz", "albite", "muscovite", "beryl")
SI_FREE = ("columbite", "microlite")

# (element, ion stage, wavelength, phases that must show it, phases that must not)
EXPECTED = [
    ("Si", 1, 288.1579, SILICATES, SI_FREE),
    ("Al", 1, 308.2153, ("albite", "muscovite"), ("quartz", "columbite")),
    ("Al", 1, 309.2710, ("albite", "muscovite"), ("quartz", "columbite")),
    ("K", 1, 404.4136, ("muscovite",), ("quartz", "beryl")),
    ("K", 1, 404.7208, ("muscovite",), ("quartz", "beryl")),
    ("Ca", 2, 393.3663, ("microlite", "albite"), ("quartz", "beryl")),
    ("Ca", 2, 396.8469, ("microlite", "albite"), ("quartz", "beryl")),
    ("Be", 2, 313.0420, ("beryl",), ("quartz", "albite", "muscovite")),
    ("Be", 2, 313.1070, ("beryl",), ("quartz", "albite", "muscovite")),
    ("Mn", 2, 257.6105, ("garnet", "columbite"), ("quartz", "albite")),
    ("Mn", 2, 294.9205, ("garnet", "columbite"), ("quartz", "albite")),
    ("Mn", 1, 403.0760, ("garnet", "columbite"), ("quartz", "albite")),
    ("Fe", 2, 259.9396, ("garnet", "columbite"), ("quartz", "albite")),
    ("Fe", 2, 273.9548, ("garnet", "columbite"), ("quartz", "albite")),
    ("Fe", 1, 373.4860, ("garnet", "columbite"), ("quartz", "albite")),
]


def _significance(phase_shots, phase, system, line_nm, wavelengths):
    shots = phase_shots[phase][system]
    error, height = measure_line(wavelengths, shots.mean(axis=0), line_nm)
    return error, height, line_significance(wavelengths, shots, line_nm)


@pytest.mark.parametrize("element, stage, line_nm, present, absent", EXPECTED,
                         ids=[f"{e}{s}-{w}" for e, s, w, *_ in EXPECTED])
def test_line_at_tabulated_wavelength_in_the_right_phases(scene, phase_shots, element, stage, line_nm,
                                                          present, absent):
    load_lines().find(element, stage, line_nm)      # the line is in the project's table
    seen_by = [s for s in ("primary", "secondary") if covers(scene.wavelengths(s), line_nm)]
    assert seen_by, f"{element} {line_nm} nm is covered by no system"
    for system in seen_by:
        wavelengths = scene.wavelengths(system)
        heights = {}
        for phase in present:
            error, height, snr = _significance(phase_shots, phase, system, line_nm, wavelengths)
            assert snr > 10, f"{element} {line_nm} nm not visible in {phase} ({system}): S/N {snr:.1f}"
            assert abs(error) <= 0.5, f"{element} {line_nm} nm off by {error:+.2f} px in {phase} ({system})"
            heights[phase] = height
        for phase in absent:
            _, height, snr = _significance(phase_shots, phase, system, line_nm, wavelengths)
            assert snr < 5 or height < 0.05 * max(heights.values()), \
                f"{element} {line_nm} nm appears in {phase} ({system}): {height:.0f} counts, S/N {snr:.1f}"


@pytest.mark.parametrize("line_nm", [404.4136, 404.7208, 393.3663, 396.8469])
def test_lines_beyond_the_secondary_range_are_primary_only(scene, phase_shots, line_nm):
    assert covers(scene.wavelengths("primary"), line_nm)
    assert not covers(scene.wavelengths("secondary"), line_nm)
    phase = "muscovite" if line_nm > 400 else "microlite"
    _, _, snr = _significance(phase_shots, phase, "primary", line_nm, scene.wavelengths("primary"))
    assert snr > 10


def test_wavelength_axes_match_the_paper_systems(scene):
    primary, secondary = scene.wavelengths("primary"), scene.wavelengths("secondary")
    assert primary.size == 4062 and secondary.size == 3872
    assert primary[0] == pytest.approx(245.0, abs=1e-6) and primary[-1] == pytest.approx(407.0, abs=1e-6)
    assert secondary[0] == pytest.approx(260.0, abs=1e-6) and secondary[-1] == pytest.approx(370.0, abs=1e-6)
    for axis in (primary, secondary):
        step = np.diff(axis)
        assert (step > 0).all()
        # Czerny-Turner: the dispersion changes across the detector, so lambda(pixel) is not linear
        assert step.max() / step.min() > 1.005


def test_instrument_function_is_pixel_limited_and_varies_across_the_detector(scene):
    for system, (lo, hi) in {"primary": (0.035, 0.046), "secondary": (0.023, 0.032)}.items():
        spectrograph = scene.spectrograph(system)
        wavelengths = spectrograph.wavelengths
        fwhm = spectrograph.instrument_fwhm_nm(wavelengths)
        assert fwhm.min() == pytest.approx(lo, rel=1e-6) and fwhm.max() == pytest.approx(hi, rel=1e-6)
        in_pixels = fwhm / spectrograph.grating.dispersion(np.arange(wavelengths.size))
        assert 0.75 < in_pixels.min() and in_pixels.max() < 1.2


def test_phase_shots_have_paper_like_intensities(phase_shots):
    """Strong lines reach thousands to tens of thousands of counts (paper Fig. 4)."""
    peaks = {phase: spectra["primary"].mean(axis=0).max() for phase, spectra in phase_shots.items()}
    assert all(2_000 < peak < 65_535 for peak in peaks.values()), peaks
    assert max(peaks.values()) > 10_000
