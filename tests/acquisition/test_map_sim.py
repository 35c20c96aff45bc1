"""End-to-end paired maps on the simulated bench, through the real drivers and transports."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.mapping import acquire_map, stored_settings
from acquisition.store import PairedMapReader, validate
from tests.acquisition.conftest import (FrameTap, assert_matches_fired, assert_spectra_are_the_shots,
                                        open_map, scan, small_map)
from tests.fixtures.emulated import bench_config


@pytest.mark.parametrize("mode", ["fly", "step"])
@pytest.mark.parametrize("order", ["snake", "raster"])
def test_map_pairs_every_spot_with_the_shot_fired_there(tmp_path, make_bench, mode, order):
    bench = make_bench(seed=3)
    tap = FrameTap(bench)
    settings = small_map(mode=mode, order=order)
    out = tmp_path / "map.h5"

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    assert summary.complete and summary.acquired == 30 and summary.missed_shots == 0
    validate(out)
    assert assert_matches_fired(out, bench.fired, settings) == 30
    assert len(bench.fired) == 30, "a shot was fired that no spot records"
    assert_spectra_are_the_shots(out, tap)
    values = scan(out)
    visit = np.argsort(values["shot_id"], axis=None)
    rows, cols = np.unravel_index(visit, values["shot_id"].shape)
    assert rows.tolist() == sorted(rows.tolist())
    second_row = cols[5:10].tolist()
    assert second_row == ([4, 3, 2, 1, 0] if order == "snake" else [0, 1, 2, 3, 4])
    with open_map(out) as f:
        assert "end_time" in f["entry"]
        delay_generator = dict(f["entry/instrument/delay_generator"].attrs)
        assert delay_generator["gate_output_primary"] == "EF"
        assert float(f["entry/instrument/secondary"].attrs["gate_width_s"]) == pytest.approx(10e-6)
    assert stored_settings(out)[0] == settings


def test_a_non_square_step_puts_every_shot_at_its_spot(tmp_path, make_bench):
    bench = make_bench(seed=6)
    settings = small_map(mode="fly", shape=(3, 4), step_um=(40.0, 70.0))
    out = tmp_path / "map.h5"

    acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    assert assert_matches_fired(out, bench.fired, settings) == 12
    with PairedMapReader(out) as reader:
        assert reader.layout.step_um == (40.0, 70.0)
        np.testing.assert_allclose(np.diff(reader.layout.y_um), 70.0)


def test_step_mode_averages_the_shots_of_a_spot(tmp_path, make_bench):
    bench = make_bench(seed=5)
    tap = FrameTap(bench)
    settings = small_map(mode="step", shape=(2, 3), shots=3)
    out = tmp_path / "map.h5"

    acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    assert len(bench.fired) == 18
    values = scan(out)
    by_id = {shot.shot_id: shot for shot in bench.fired}
    for iy, ix in np.ndindex(2, 3):
        first = by_id[values["shot_id"][iy, ix]]
        assert values["timestamp"][iy, ix] == pytest.approx(first.t, abs=1e-6)
        shots = [by_id[values["shot_id"][iy, ix] + k] for k in range(3)]
        assert {shot.x_um for shot in shots} == {first.x_um}
        with open_map(out) as f:
            for system in ("primary", "secondary"):
                mean = np.mean([tap.counts(system, shot.t) for shot in shots], axis=0)
                np.testing.assert_allclose(f[f"entry/{system}/spectra"][iy, ix], mean, rtol=1e-6)


def test_single_system_map_is_valid_per_the_contract(tmp_path, make_bench):
    bench = make_bench(seed=4)
    tap = FrameTap(bench, systems=("secondary",))
    settings = small_map(systems=("secondary",))
    out = tmp_path / "deployed.h5"

    acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    validate(out)
    with open_map(out) as f:
        assert set(f["entry"]) >= {"secondary", "scan", "instrument", "sample", "end_time"}
        assert "primary" not in f["entry"]
        assert f["entry"].attrs["default"] == "secondary"
        spectra = f["entry/secondary/spectra"]
        assert spectra.dtype == np.float32 and spectra.shape == (6, 5, f["entry/secondary/wavelength"].shape[0])
        assert np.isfinite(spectra[()]).all()
        assert f["entry/scan/acquired"][()].all()
    with PairedMapReader(out) as reader:
        assert reader.systems == ("secondary",)
    assert_matches_fired(out, bench.fired, settings)
    assert_spectra_are_the_shots(out, tap)


def test_live_sink_sees_every_spot_and_cannot_stall_the_map(tmp_path, make_bench):
    bench = make_bench(seed=1)
    seen = []

    def slow_consumer(iy, ix, shot_id, spectra):
        seen.append((iy, ix, shot_id, sorted(spectra)))
        if len(seen) == 3:
            raise RuntimeError("consumer hiccup")

    summary = acquire_map(tmp_path / "map.h5", small_map(), bench_config(bench), bench=bench,
                          on_spot=slow_consumer, show_progress=False)

    assert summary.complete
    assert len(seen) == 30 and summary.sink == {"delivered": 29, "dropped": 0, "failed": 1}
    values = scan(tmp_path / "map.h5")
    assert all(values["shot_id"][iy, ix] == shot_id for iy, ix, shot_id, _ in seen)
    assert seen[0][3] == ["primary", "secondary"]
