"""Injected faults give their documented behaviour: no pair is ever mismatched, nothing is lost."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.mapping import acquire_map
from tests.acquisition.conftest import (FrameTap, assert_matches_fired, assert_spectra_are_the_shots,
                                        scan, small_map)
from tests.fixtures.emulated import bench_config


def missed_shots(bench) -> set[int]:
    return {shot_id for shot_id, _ in bench.fault_log()["missed_triggers"]}


def test_fly_mode_leaves_missed_triggers_as_gaps_that_resume_fills(tmp_path, make_bench):
    out = tmp_path / "map.h5"
    settings = small_map(mode="fly")
    bench = make_bench(seed=11, faults="missed-trigger=0.15")
    tap = FrameTap(bench)

    first = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    missed = missed_shots(bench)
    assert missed, "the seed was chosen to miss some triggers"
    before = scan(out)
    gaps = before["acquired"] == 0
    by_id = {shot.shot_id: shot for shot in bench.fired}
    gap_spots = {(int(round((by_id[i].y_um - 2000) / 40)), int(round((by_id[i].x_um - 2000) / 40))) for i in missed}
    assert set(zip(*np.nonzero(gaps))) == gap_spots
    assert not first.complete and first.gaps == len(gap_spots) and first.missed_shots == len(missed)
    assert not set(before["shot_id"][~gaps].tolist()) & missed
    assert_matches_fired(out, bench.fired, settings)
    assert_spectra_are_the_shots(out, tap)

    again = make_bench(seed=12)
    tap_again = FrameTap(again)
    second = acquire_map(out, settings, bench_config(again), bench=again, resume=True, show_progress=False)

    after = scan(out)
    assert second.complete and second.acquired_this_run == len(gap_spots)
    assert len(again.fired) == len(gap_spots), "resume fired at spots that were already acquired"
    for name in ("shot_id", "timestamp", "position"):
        np.testing.assert_array_equal(after[name][~gaps], before[name][~gaps])
    offset = int(before["shot_id"].max()) + 1
    assert_matches_fired(out, again.fired, settings, spots=gaps, id_offset=offset)
    assert len(np.unique(after["shot_id"])) == 30
    assert_spectra_are_the_shots(out, tap, spots=~gaps)
    assert_spectra_are_the_shots(out, tap_again, spots=gaps)


def test_step_mode_shoots_missed_triggers_again(tmp_path, make_bench):
    out = tmp_path / "map.h5"
    settings = small_map(mode="step")
    bench = make_bench(seed=21, faults="missed-trigger=0.15")
    tap = FrameTap(bench)

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    missed = missed_shots(bench)
    assert missed and summary.complete
    assert summary.reshot == summary.missed_shots == len(missed)
    assert len(bench.fired) == 30 + len(missed)
    assert not set(scan(out)["shot_id"].ravel().tolist()) & missed
    assert_matches_fired(out, bench.fired, settings)
    assert_spectra_are_the_shots(out, tap)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fly", "step"])
def test_lost_and_garbled_replies_are_retried(tmp_path, make_bench, mode):
    out = tmp_path / "map.h5"
    settings = small_map(mode=mode)
    bench = make_bench(seed=31, faults="timeout=0.02,garbled=0.03")
    tap = FrameTap(bench)

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    links = bench.fault_log()["links"]
    assert sum(link["timeouts"] for link in links.values()) > 0
    assert sum(link["garbled"] for link in links.values()) > 0
    assert summary.complete
    assert_matches_fired(out, bench.fired, settings)
    assert_spectra_are_the_shots(out, tap)


def test_fly_mode_sweeps_a_stalled_row_again(tmp_path, make_bench):
    out = tmp_path / "map.h5"
    settings = small_map(mode="fly", shape=(4, 8))
    bench = make_bench(seed=46, faults="stall=0.25")
    tap = FrameTap(bench)

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    # Shots fired after a stall hit the point where the stage stopped, between grid spots.
    off_grid = [shot for shot in bench.fired if abs((shot.x_um - 2000) / 40 - round((shot.x_um - 2000) / 40)) > 0.025]
    assert off_grid, "the seed was chosen to stall the stage during a sweep"
    assert summary.complete and summary.reshot == len(off_grid)
    assert len(bench.fired) == 32 + len(off_grid)
    assert_matches_fired(out, bench.fired, settings)
    assert_spectra_are_the_shots(out, tap)


def test_single_system_fly_map_with_missed_triggers_never_shifts(tmp_path, make_bench):
    out = tmp_path / "map.h5"
    settings = small_map(mode="fly", systems=("secondary",), shape=(8, 5))
    bench = make_bench(seed=51, faults="missed-trigger=0.2")
    tap = FrameTap(bench, systems=("secondary",))

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    missed = missed_shots(bench)
    assert missed
    values = scan(out)
    assert not set(values["shot_id"][values["acquired"] == 1].tolist()) & missed
    assert summary.acquired + summary.gaps == 40
    assert_matches_fired(out, bench.fired, settings)
    assert_spectra_are_the_shots(out, tap)
