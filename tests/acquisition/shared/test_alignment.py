"""Where a map's lines sit against the model's: the shift estimate on spectra of known shift."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.shared.alignment import SHIFT_WARNING_PX, ShiftCheck, apparent_shift_px, shift_message


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
