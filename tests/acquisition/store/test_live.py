"""A reader in this process follows a map that a writer in another process is writing (SWMR)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from acquisition.store import PairedMapReader

from .mapdata import layout, spot_spectra

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(60)
def test_live_reader_sees_spots_while_they_are_written(tmp_path):
    path = tmp_path / "live.h5"
    proc = subprocess.Popen([sys.executable, "-m", "tests.acquisition.store.writer_script", "live", str(path), "5", "6"],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(command: str) -> str:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        assert proc.stdout.readline().strip() == "ok 0"
        order = [tuple(int(v) for v in s) for s in layout(5, 6).visit_order()]
        with PairedMapReader(path, live=True) as reader:
            assert reader.n_acquired == 0
            seen = []
            for total in (4, 11, 30):
                assert ask(f"write {total - reader.n_acquired}") == f"ok {total}"
                reader.refresh()
                seen.append(reader.n_acquired)
                assert reader.end_time is None
                mask = np.zeros((5, 6), bool)
                for iy, ix in order[:total]:
                    mask[iy, ix] = True
                np.testing.assert_array_equal(reader.acquired, mask)
                for iy, ix in order[total - 3:total]:
                    np.testing.assert_array_equal(reader.spot(iy, ix)["secondary"], spot_spectra(iy, ix)["secondary"])
                chunk = reader.read_all(systems=["primary"])
                assert len(chunk) == total
            assert seen == [4, 11, 30]
            assert ask("finish") == "done"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with PairedMapReader(path) as reader:
        assert reader.n_acquired == 30 and reader.end_time is not None


@pytest.mark.timeout(60)
def test_finish_with_a_plain_swmr_reader_open_writes_end_time(tmp_path):
    import h5py

    path = tmp_path / "read-while-finishing.h5"
    proc = subprocess.Popen([sys.executable, "-m", "tests.acquisition.store.writer_script", "live", str(path), "5", "6"],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

    def ask(command: str) -> str:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        assert proc.stdout.readline().strip() == "ok 0"
        assert ask("write 30") == "ok 30"
        # The recipe of docs/store.md, held open across finish().
        with h5py.File(path, "r", swmr=True) as held:
            acquired = held["entry/scan/acquired"]
            acquired.refresh()
            assert acquired[()].sum() == 30
            assert ask("finish") == "done", proc.stderr.read()
            assert proc.wait(timeout=30) == 0
            acquired.refresh()
            assert acquired[()].sum() == 30
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with PairedMapReader(path) as reader:
        assert reader.n_acquired == 30 and reader.end_time is not None
