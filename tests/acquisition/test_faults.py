"""Injected faults give their documented behaviour: no pair is ever mismatched, nothing is lost."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.documents import SpotBatch
from acquisition.flyscan import readout_chunk_spots
from acquisition.mapping import acquire_map
from sim.bench.bench import X_AXIS
from tests.acquisition.conftest import (ORIGIN_UM, FrameTap, assert_matches_fired, assert_spectra_are_the_shots,
                                        open_map, scan, small_map)
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


@pytest.mark.parametrize("realtime", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_stall_in_a_later_chunk_of_a_long_row_leaves_every_spot_where_its_shot_hit(tmp_path, make_bench,
                                                                                    realtime):
    """Row 0 is recorded in chunks as it is read out; the stage stalls between spots 24 and 25, in the
    third chunk, after two chunks are recorded: the shots after it hit the stall point."""
    out = tmp_path / "map.h5"
    rate_hz, step_um = 100.0, 40.0
    settings = small_map(mode="fly", shape=(2, 40), rate_hz=rate_hz, step_um=(step_um, step_um), realtime=realtime)
    chunk = readout_chunk_spots(rate_hz)
    assert chunk == 10, "four chunks a row"
    bench = make_bench(seed=47, realtime=realtime)
    x_stall = ORIGIN_UM[0] + 24.5 * step_um
    bench.stage_emulator.inject_stall_at(X_AXIS, x_stall)
    tap = FrameTap(bench)
    documents = []

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False,
                          subscribers=[documents.append])

    stalled = [shot for shot in bench.fired if abs(shot.x_um - x_stall) < 0.5]
    assert len(stalled) == 40 - 25, "the burst's shots after the stall hit the stall point"
    t_stall = stalled[0].t
    batches = [doc for doc in documents if isinstance(doc, SpotBatch)]
    before = [doc for doc in batches if doc.timestamp.max() < t_stall]
    # in chunks of at most `chunk` spots (in real time the first may be cut short by its 100 ms)
    assert len(before) >= 3 and sum(len(doc) for doc in before[:2]) >= chunk + 1
    assert {int(ix) for doc in before for ix in doc.ix} == set(range(25)), "row 0 up to the stall point"
    # no spot recorded twice (a spot recorded from a shot past the stall would be, when shot again)
    spots = [(int(iy), int(ix)) for doc in batches for iy, ix in zip(doc.iy, doc.ix)]
    assert len(spots) == len(set(spots)) == 80
    assert summary.complete and summary.acquired == summary.acquired_this_run == 80
    assert summary.reshot == len(stalled) and len(bench.fired) == 80 + len(stalled)
    # every spot where its shot hit: the bench's record, a quarter step from the grid point
    with open_map(out) as f:
        truth = f["entry/sample/true_position"][()]
        stored = {name: f["entry/scan"][name][()] for name in ("shot_id", "timestamp", "position")}
        spectra = {system: f[f"entry/{system}/spectra"][()] for system in ("primary", "secondary")}
    grid = np.stack(np.meshgrid(ORIGIN_UM[0] + step_um * np.arange(40), ORIGIN_UM[1] + step_um * np.arange(2)), -1)
    assert np.abs(truth - grid).max() <= step_um / 4
    assert np.abs(stored["position"] - truth).max() < 5.0
    assert_matches_fired(out, bench.fired, settings)
    assert_spectra_are_the_shots(out, tap)
    # the chunks recorded before the stall are what the map holds in the end
    for doc in before:
        np.testing.assert_array_equal(stored["shot_id"][doc.iy, doc.ix], doc.shot_id)
        np.testing.assert_array_equal(stored["timestamp"][doc.iy, doc.ix], doc.timestamp)
        np.testing.assert_array_equal(stored["position"][doc.iy, doc.ix], doc.position_um)
        for system, values in doc.spectra.items():
            np.testing.assert_array_equal(spectra[system][doc.iy, doc.ix], values)


def test_a_row_whose_first_shot_every_system_missed_is_shot_again_and_counted_once(tmp_path, make_bench):
    """No system saw row 0's first shot: its chunks are recorded one cycle off until the end of the
    burst puts the offset in doubt; the row is then shot again at rest, replacing them."""
    out = tmp_path / "map.h5"
    step_um = 40.0
    settings = small_map(mode="fly", shape=(2, 40), rate_hz=100.0, step_um=(step_um, step_um))
    bench = make_bench(seed=48)
    bench.miss_triggers([0])
    tap = FrameTap(bench)
    documents = []

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False,
                          subscribers=[documents.append])

    swept = [doc for doc in documents if isinstance(doc, SpotBatch) and len(doc) > 1 and doc.iy[0] == 0]
    assert swept, "row 0 was recorded in chunks during its sweep"
    off_by = np.concatenate([doc.true_position_um[:, 0] - (ORIGIN_UM[0] + step_um * doc.ix) for doc in swept])
    np.testing.assert_allclose(off_by, step_um, atol=0.5)    # the documented window: one column off
    assert summary.reshot == 40, "the whole row is shot again at rest"
    assert summary.complete and summary.acquired == summary.acquired_this_run == 80, "each spot counted once"
    with open_map(out) as f:
        truth = f["entry/sample/true_position"][()]
    grid = np.stack(np.meshgrid(ORIGIN_UM[0] + step_um * np.arange(40), ORIGIN_UM[1] + step_um * np.arange(2)), -1)
    assert np.abs(truth - grid).max() <= step_um / 4
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
