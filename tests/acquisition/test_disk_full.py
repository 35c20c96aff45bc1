"""A disk that fills up during a map: a clear message, the laser safe, nothing acquired lost, no crash.

Needs a small tmpfs (mounting one needs root); skipped with the reason where that is impossible.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from acquisition.mapping import acquire_map
from acquisition.store import MapWriteError, PairedMapReader
from tests.acquisition.conftest import small_map
from tests.fixtures.emulated import bench_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a directory on a tmpfs of that size; remount(size) grows it."""
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
        mounted.append(where)
        return where

    def remount(where: Path, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)

    yield mount, remount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def libs_acquire(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acquisition.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


# 14 MB: the journal is the first to find the disk full; 24 MB: the HDF5 commit of a batch is.
@pytest.mark.parametrize("size", ["14m", "24m"])
def test_a_full_disk_stops_the_map_with_the_way_to_resume_and_loses_nothing(small_disk, size):
    mount, remount = small_disk
    disk = mount(size)
    out = disk / "map.h5"

    result = libs_acquire("map", "--sim", "--shape", "20x20", "--out", str(out), "--no-progress", "--json")

    assert result.returncode == 5, result.stderr           # not 139: no crash of the interpreter
    assert "Traceback" not in result.stderr
    assert "No space left on device" in result.stderr
    assert f"libs-acquire map --resume {out}" in result.stderr
    summary = json.loads(result.stdout)
    assert 0 < summary["acquired"] < 400 and not summary["complete"]
    assert f"{summary['acquired']} spot(s) are safely stored" in result.stderr
    with h5py.File(out, "r") as f:                          # closed cleanly: a plain open works
        in_file = int(f["entry/scan/acquired"][()].sum())
    assert in_file == summary["acquired"] - summary["spots_in_journal"]

    remount(disk, "64m")
    recovered = libs_acquire("recover", str(out), "--json")
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["acquired"] == summary["acquired"], "the summary did not match the map"
    resumed = libs_acquire("map", "--resume", str(out), "--no-progress", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["complete"]
    with PairedMapReader(out) as reader:
        assert reader.n_acquired == 400 and reader.end_time is not None


def test_the_laser_is_made_safe_when_the_disk_fills(small_disk, make_bench):
    mount, _ = small_disk
    out = mount("14m") / "map.h5"
    bench = make_bench(seed=2)

    with pytest.raises(MapWriteError, match="No space left on device") as failure:
        acquire_map(out, small_map(shape=(20, 20)), bench_config(bench), bench=bench, show_progress=False)

    assert bench.laser_safe_count >= 1
    assert not bench.laser_emulator.can_fire()
    assert failure.value.in_file + failure.value.in_journal > 0
