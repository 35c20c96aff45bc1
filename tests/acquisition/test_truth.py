"""Every acquired spot is where its shot hit: fly mode on the real-time bench, against the bench's truth.

The bench records where each laser pulse reached the sample; the map stores that as
/entry/sample/true_position. A CPU-hogging process runs beside the map, so that
software timing on this computer is as unreliable as it gets on a busy lab PC.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from acquisition.mapping import acquire_map
from acquisition.store import PairedMapReader, validate
from tests.acquisition.conftest import small_map
from tests.fixtures.emulated import bench_config

STORED_TOLERANCE_UM = 5.0


@pytest.fixture
def cpu_hog():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield hog
    hog.kill()
    hog.wait()


@pytest.mark.parametrize("rate_hz", [200.0, 1000.0])
def test_fly_mode_records_every_spot_where_its_shot_hit(tmp_path, make_bench, cpu_hog, rate_hz):
    bench = make_bench(seed=11, realtime=True)
    settings = small_map(mode="fly", shape=(6, 30), rate_hz=rate_hz, realtime=True)
    out = tmp_path / "map.h5"

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False)

    validate(out)
    with PairedMapReader(out) as reader:
        acquired = reader.acquired
        truth = reader.true_positions()
        stored = reader.scan_values("position")
        layout = reader.layout
    assert summary.acquired == acquired.sum() > 0
    assert np.isfinite(truth[acquired]).all(), "an acquired spot has no shot the bench fired"
    assert np.isnan(truth[~acquired]).all()
    grid = np.stack(np.meshgrid(layout.x_um, layout.y_um), axis=-1)
    off_grid = np.abs(truth - grid).max(axis=-1)
    quarter = min(layout.step_um) / 4
    misplaced = np.argwhere(acquired & ~(off_grid <= quarter))
    assert not len(misplaced), (f"{len(misplaced)} of {acquired.sum()} spots recorded more than a quarter step "
                                f"from where their shot hit, worst {np.nanmax(off_grid[acquired]):.1f} µm, "
                                f"first at {misplaced[:5].tolist()}")
    stored_error = np.abs(stored - truth).max(axis=-1)[acquired]
    assert stored_error.max() <= STORED_TOLERANCE_UM, \
        f"stored position up to {stored_error.max():.1f} µm from the truth"
