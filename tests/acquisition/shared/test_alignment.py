"""Where a map's lines sit against the model's: the shift estimate on spectra of known shift."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.shared.alignment import (ALIGN_MIN_PX, SHIFT_WARNING_PX, ShiftCheck, apparent_shift_px, line_offset,
                                          shift_message)
from acquisition.shared.spectral import AxisResampler


def lines_at(centres, heights, width_px, n=800, shift_px=0.0, pattern=None):
    pixel = np.arange(n, dtype=np.float64)
    spectrum = sum(h * np.exp(-0.5 * ((pixel - c - shift_px) / width_px) ** 2) for c, h in zip(centres, heights))
    return spectrum + (0.0 if pattern is None else pattern)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift_px=st.floats(-3.0, 3.0), width_px=st.floats(0.8, 3.0))
def test_the_shift_of_lines_moved_by_a_known_amount_is_found(seed, shift_px, width_px):
    rng = np.random.default_rng(seed)
    # separate lines: blended ones whose ratio changes move their common centre, a real shift of the blend
    centres, heights = np.linspace(40, 760, 25) + rng.uniform(-5, 5, 25), rng.uniform(0.2, 1.0, 25)
    # a fixed pattern of the detector, the same on both days, must not pull the estimate to zero
    pattern = 0.01 * rng.standard_normal(800)
    reference = lines_at(centres, heights, width_px, pattern=pattern)
    moved = lines_at(centres, heights * rng.uniform(0.7, 1.3, 25), width_px, shift_px=shift_px, pattern=pattern)
    assert apparent_shift_px(reference, moved) == pytest.approx(shift_px, abs=0.05)


def test_no_structure_no_shift_and_the_message_names_the_side():
    assert np.isnan(apparent_shift_px(np.ones(100), np.ones(100)))
    with pytest.raises(ValueError, match="two spectra of one length"):
        apparent_shift_px(np.ones(100), np.ones(90))
    assert shift_message("m.h5", "primary", SHIFT_WARNING_PX / 2) is None
    assert "0.80 px to the blue" in shift_message("m.h5", "primary", -0.8)
    assert "to the red" in shift_message("m.h5", "secondary", 0.5)
    check = ShiftCheck(lines_at([200, 400], [1, 1], 2.0), max_spots=3)
    check.add(np.stack([lines_at([200, 400], [1, 1], 2.0, shift_px=1.0)] * 2))
    assert check.wants_more
    check.add(np.stack([lines_at([200, 400], [1, 1], 2.0, shift_px=1.0)] * 5))
    assert not check.wants_more and check.n == 3
    assert check.shift_px() == pytest.approx(1.0, abs=0.02)


def lines_drifted(centres, heights, width_px, shift_px, stretch_px, n, pattern):
    """Lines moved as a grating's drift moves them: shift_px at the centre, stretch_px more at the red end."""
    u = (np.asarray(centres) - 0.5 * (n - 1)) / (0.5 * n)
    return lines_at(np.asarray(centres) + shift_px + stretch_px * u, heights, width_px, n=n) + pattern


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift_px=st.floats(-2.0, 2.0), stretch_px=st.floats(-0.6, 0.6))
def test_a_shift_and_a_stretch_are_found_and_undone(seed, shift_px, stretch_px):
    rng = np.random.default_rng(seed)
    n = 2400
    centres, heights = np.linspace(30, n - 30, 90) + rng.uniform(-4, 4, 90), rng.uniform(0.2, 1.0, 90)
    pattern = 0.01 * rng.standard_normal(n)
    reference = lines_drifted(centres, heights, 1.5, 0.0, 0.0, n, pattern)
    moved = lines_drifted(centres, heights * rng.uniform(0.8, 1.2, 90), 1.5, shift_px, stretch_px, n, pattern)
    offset = line_offset(reference, moved)
    true_offset = shift_px + stretch_px * (np.arange(n) - 0.5 * (n - 1)) / (0.5 * n)
    # the shift to a few hundredths of a pixel; the stretch, extrapolated to the ends, to a tenth
    assert offset.at(0.5 * (n - 1)) == pytest.approx(shift_px, abs=0.05)
    assert np.abs(offset.at(np.arange(n)) - true_offset).max() < 0.1
    if np.abs(true_offset).max() > ALIGN_MIN_PX + 0.1:
        assert offset.worth_aligning
    # resampled from the axis the pixels saw onto the model's, the lines are back where the model saw them
    axis = 250.0 + 0.04 * np.arange(n)
    aligned = AxisResampler(offset.seen_axis(axis), axis)(moved - pattern)[0]
    back = lines_at(centres, heights, 1.5, n=n)
    assert apparent_shift_px(back, aligned) == pytest.approx(0.0, abs=0.05)


def test_a_stretch_without_lines_is_left_out_and_flat_spectra_give_none():
    rng = np.random.default_rng(1)
    n = 2400
    centres = np.linspace(400, n - 30, 60)            # the first sixth of the detector holds no line
    heights = rng.uniform(0.2, 1.0, 60)
    pattern = 0.01 * rng.standard_normal(n)
    reference = lines_drifted(centres, heights, 1.5, 0.0, 0.0, n, pattern)
    moved = lines_drifted(centres, heights, 1.5, 0.8, -0.3, n, pattern)
    offset = line_offset(reference, moved)
    assert offset.segments < 8
    assert offset.at(n / 2) == pytest.approx(0.8, abs=0.05)
    assert offset.stretch_px == pytest.approx(-0.3, abs=0.06)
    assert line_offset(np.ones(n), np.ones(n)) is None
    with pytest.raises(ValueError, match="an axis of 2400 pixels"):
        offset.seen_axis(np.arange(100.0))
    assert "aligned from the map's own lines" in shift_message("m.h5", "primary", 0.8, aligned=True)
    assert "calibrate the wavelength axis" in shift_message("m.h5", "primary", 0.8)
