"""Scan plans and pairing by timestamp, on their own."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.config import ConfigError
from acquisition.pairing import StreamPairing, pair_burst
from acquisition.plan import check_travel, fly_segments
from acquisition.store import MapLayout
from drivers.spectrometer import Frame

PERIOD = 1e-3
T0 = 1_700_000_000.25


def frames(cycles, t0=T0):
    return [Frame(np.full(4, float(k), np.float32), i, t0 + k * PERIOD, False) for i, k in enumerate(cycles)]


def runs(segments):
    return [(s.iy, s.ix.tolist(), s.direction) for s in segments]


def test_snake_segments_follow_the_visiting_order_and_split_at_gaps():
    layout = MapLayout((3, 4), (40.0, 40.0), "snake", (1000.0, 2000.0))
    missing = layout.visit_order()
    keep = ~((missing[:, 0] == 1) & (missing[:, 1] == 1))
    segments = fly_segments(missing[keep], layout, run_up_um=100.0)
    assert runs(segments) == [(0, [0, 1, 2, 3], 1), (1, [3, 2], -1), (1, [0], -1), (2, [0, 1, 2, 3], 1)]
    assert segments[1].x_start_um == pytest.approx(1000 + 3 * 40 + 100)
    assert segments[1].x_stop_um == pytest.approx(1000 + 2 * 40 - 100)
    assert segments[1].y_um == pytest.approx(2040.0)


def test_raster_segments_all_run_left_to_right():
    layout = MapLayout((2, 3), (20.0, 10.0), "raster")
    assert runs(fly_segments(layout.visit_order(), layout, 0.0)) == [(0, [0, 1, 2], 1), (1, [0, 1, 2], 1)]


def test_travel_check_counts_the_run_up():
    layout = MapLayout((2, 10), (40.0, 40.0), "snake", (100.0, 0.0))
    check_travel(layout, ((0.0, 1000.0), (0.0, 100.0)), run_up_um=100.0)
    with pytest.raises(ConfigError, match=r"x from -20 to 580 µm including 120 µm run-up"):
        check_travel(layout, ((0.0, 1000.0), (0.0, 100.0)), run_up_um=120.0)


def test_frames_land_on_their_cycle_whatever_a_system_missed():
    pairing = pair_burst({"primary": frames([0, 1, 3, 4]), "secondary": frames([0, 2, 3, 4])}, 5, PERIOD)
    assert not pairing.ambiguous
    assert pairing.complete_cycles(("primary", "secondary")).tolist() == [0, 3, 4]
    assert pairing.missed(("primary", "secondary")) == 2
    for system in ("primary", "secondary"):
        for k, frame in pairing.frames[system].items():
            assert frame.counts[0] == k


def test_a_first_cycle_one_system_missed_is_anchored_by_the_other():
    pairing = pair_burst({"primary": frames([1, 2]), "secondary": frames([0, 2])}, 3, PERIOD)
    assert pairing.complete_cycles(("primary", "secondary")).tolist() == [2]
    assert sorted(pairing.frames["primary"]) == [1, 2]


def test_unknown_offset_assigns_nothing():
    pairing = pair_burst({"secondary": frames([1, 2, 3])}, 5, PERIOD)
    assert pairing.ambiguous
    assert pairing.complete_cycles(("secondary",)).size == 0
    assert pairing.missed(("secondary",)) == 2


def test_a_frame_off_the_schedule_is_dropped():
    odd = frames([0, 1, 2]) + [Frame(np.zeros(4, np.float32), 9, T0 + 1.5 * PERIOD, False)]
    pairing = pair_burst({"primary": odd, "secondary": frames([0, 1, 2])}, 3, PERIOD)
    assert pairing.stray == 1
    assert pairing.complete_cycles(("primary", "secondary")).tolist() == [0, 1, 2]


def test_a_burst_paired_chunk_by_chunk_settles_a_cycle_once_every_system_is_past_it():
    primary, secondary = frames([0, 1, 2, 4, 5]), frames([0, 2, 3, 4, 5])
    stream = StreamPairing(("primary", "secondary"), 6, PERIOD)
    stream.add({"primary": primary[:2], "secondary": secondary[:1]})
    assert stream.settled == 1                      # the secondary may still send cycle 1
    stream.add({"primary": primary[2:3], "secondary": secondary[1:3]})
    assert stream.settled == 3
    assert sorted(stream.pairing.frames["primary"]) == [0, 1, 2]
    stream.add({"primary": primary[3:], "secondary": []})
    assert stream.settled == 4
    stream.add({"primary": [], "secondary": secondary[3:]})
    pairing = stream.finish()
    whole = pair_burst({"primary": primary, "secondary": secondary}, 6, PERIOD)
    assert not pairing.ambiguous and stream.settled == 6
    assert pairing.complete_cycles(("primary", "secondary")).tolist() == \
        whole.complete_cycles(("primary", "secondary")).tolist() == [0, 2, 4, 5]
    assert pairing.missed(("primary", "secondary")) == whole.missed(("primary", "secondary")) == 2


def test_a_stream_whose_first_cycle_no_system_saw_turns_out_ambiguous_at_its_end():
    stream = StreamPairing(("secondary",), 5, PERIOD)
    stream.add({"secondary": frames([1, 2])})
    assert stream.settled == 2                      # placed as cycles 0 and 1 until the end says otherwise
    stream.add({"secondary": frames([3, 4])})
    pairing = stream.finish()
    assert pairing.ambiguous and pairing.complete_cycles(("secondary",)).size == 0
