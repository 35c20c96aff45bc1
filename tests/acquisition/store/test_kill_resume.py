"""kill -9 of a writing process, then resume: nothing that was written is lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from acquisition.store import (PairedMapError, PairedMapMismatchError, PairedMapReader, PairedMapWriter,
                               validate)

from .mapdata import WAVELENGTHS, layout, shot_of, spot_spectra, write_spot

REPO = Path(__file__).resolve().parents[3]
NY, NX = 30, 40


def run_and_kill(path: Path, after_spots: int, batch: int, mode: str = "run") -> tuple[int, list[tuple[int, int]]]:
    """Start a writer, SIGKILL it once it reported `after_spots` spots.

    Returns the spots the writer found acquired when it started, and every spot it reported written.
    """
    proc = subprocess.Popen([sys.executable, "-m", "tests.acquisition.store.writer_script", mode, str(path), str(NY), str(NX),
                             str(batch)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    reported: list[tuple[int, int]] = []
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("READY"), ready
        while len(reported) < after_spots:
            line = proc.stdout.readline()
            assert line.startswith("W"), f"writer stopped early: {line!r}"
            reported.append(tuple(int(v) for v in line.split()[1:]))
        os.kill(proc.pid, signal.SIGKILL)
        # What the writer printed before it died also counts: those write_spot calls had returned.
        for line in proc.stdout:
            if line.startswith("W"):
                reported.append(tuple(int(v) for v in line.split()[1:]))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return int(ready.split()[1]), reported


def check_acquired_spots(path: Path, nx: int = NX) -> np.ndarray:
    """Every acquired spot of the file holds its own pair and shot id; returns the mask."""
    with PairedMapReader(path) as reader:
        shots = reader.scan_values("shot_id")
        for chunk in reader.iter_chunks(chunk_spots=256):
            for k, (iy, ix) in enumerate(zip(chunk.iy, chunk.ix)):
                expected = spot_spectra(iy, ix)
                np.testing.assert_array_equal(chunk.spectra["primary"][k], expected["primary"])
                np.testing.assert_array_equal(chunk.spectra["secondary"][k], expected["secondary"])
                assert shots[iy, ix] == shot_of(iy, ix, nx)
        return reader.acquired.copy()


@pytest.mark.timeout(120)
def test_kill_nine_then_resume_loses_nothing(tmp_path):
    path = tmp_path / "killed.h5"
    # Batches larger than what gets written: everything is in the journal only when the kill comes.
    _, first = run_and_kill(path, after_spots=300, batch=100_000)
    # The killed writer leaves a file that opens; it holds committed batches only (none yet).
    assert check_acquired_spots(path).sum() == 0
    assert (tmp_path / "killed.h5.journal").exists()

    # The second writer resumes (replaying the journal), commits batches of 64, and is killed again.
    found, second = run_and_kill(path, after_spots=250, batch=64)
    assert found >= len(first)
    mask = check_acquired_spots(path)
    assert len(first) <= mask.sum() <= len(first) + len(second) + 1
    reported = first + second
    assert len(set(reported)) == len(reported), "a resumed writer wrote a spot twice"

    writer = PairedMapWriter.resume(path, layout=layout(NY, NX), wavelengths=WAVELENGTHS)
    with writer:
        assert writer.n_acquired >= len(reported)
        missing = {tuple(int(v) for v in s) for s in writer.missing()}
        assert not missing & set(reported), "a spot whose write_spot returned was lost"
        assert len(missing) + writer.n_acquired == NY * NX
        for iy, ix in writer.missing():
            write_spot(writer, iy, ix)
        writer.finish()
    validate(path)
    mask = check_acquired_spots(path)
    assert mask.all()
    with PairedMapReader(path) as reader:
        shots = reader.scan_values("shot_id")
        assert len(np.unique(shots)) == NY * NX
        assert reader.end_time is not None


@pytest.mark.timeout(120)
def test_blocks_survive_kill_nine_and_recover_closes_the_file_for_any_reader(tmp_path):
    import h5py

    path = tmp_path / "blocks.h5"
    _, reported = run_and_kill(path, after_spots=70, batch=100_000, mode="blocks")
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")     # what HDFView, silx or plain h5py meet after a kill

    result = subprocess.run([sys.executable, "-m", "acquisition.cli", "recover", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert f"libs-acquire map --resume {path}" in result.stdout
    assert not (tmp_path / "blocks.h5.journal").exists()
    with h5py.File(path, "r") as f:                      # a plain, non-SWMR open now works
        acquired = f["entry/scan/acquired"][()] == 1
        assert "end_time" not in f["entry"]
    assert all(acquired[iy, ix] for iy, ix in reported), "a spot whose write_spots call returned was lost"
    assert check_acquired_spots(path).sum() == acquired.sum()
    with PairedMapWriter.resume(path, layout=layout(NY, NX), wavelengths=WAVELENGTHS) as writer:
        for iy, ix in writer.missing():
            write_spot(writer, iy, ix)
        writer.finish()
    assert check_acquired_spots(path).all()


def test_resume_refuses_another_grid_or_other_wavelengths(tmp_path):
    path = tmp_path / "map.h5"
    with PairedMapWriter.create(path, layout(3, 4), WAVELENGTHS) as writer:
        write_spot(writer, 0, 0)
    with pytest.raises(PairedMapMismatchError, match="3x4"):
        PairedMapWriter.resume(path, layout=layout(4, 4))
    assert not (tmp_path / "map.h5.journal").exists()
    with pytest.raises(PairedMapMismatchError, match="order"):
        PairedMapWriter.resume(path, layout=layout(3, 4, order="raster"))
    with pytest.raises(PairedMapMismatchError, match="systems"):
        PairedMapWriter.resume(path, wavelengths={"primary": WAVELENGTHS["primary"]})
    shifted = {**WAVELENGTHS, "secondary": WAVELENGTHS["secondary"] + 0.01}
    with pytest.raises(PairedMapMismatchError, match="secondary wavelength axis differs"):
        PairedMapWriter.resume(path, wavelengths=shifted)
    with PairedMapWriter.resume(path, layout=layout(3, 4), wavelengths=WAVELENGTHS) as writer:
        assert writer.n_acquired == 1
        assert tuple(writer.missing()[0]) == (0, 1)


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "map.h5"
    with PairedMapWriter.create(path, layout(2, 2), WAVELENGTHS) as writer:
        write_spot(writer, 0, 0)
        with pytest.raises(PairedMapError, match="another process is writing"):
            PairedMapWriter.resume(path)
        with pytest.raises(FileExistsError):
            PairedMapWriter.create(path, layout(2, 2), WAVELENGTHS)


def test_bad_input_is_refused_and_keeps_what_was_written(tmp_path):
    path = tmp_path / "map.h5"
    with PairedMapWriter.create(path, layout(2, 3), WAVELENGTHS, batch_spots=2) as writer:
        write_spot(writer, 0, 0)
        write_spot(writer, 0, 1)
        good = spot_spectra(0, 2)
        with pytest.raises(ValueError, match="no spectrum for system 'secondary'"):
            writer.write_spot(0, 2, {"primary": good["primary"]}, 1, 0.0, (0, 0))
        with pytest.raises(ValueError, match=r"spectra\['primary'\] has shape \(39,\), expected \(40,\)"):
            writer.write_spot(0, 2, {**good, "primary": good["primary"][:-1]}, 1, 0.0, (0, 0))
        nan = good["secondary"].copy()
        nan[3] = np.nan
        with pytest.raises(ValueError, match="1 non-finite value"):
            writer.write_spot(0, 2, {**good, "secondary": nan}, 1, 0.0, (0, 0))
        with pytest.raises(IndexError, match=r"spot \(2, 0\) is outside the 2x3 map"):
            writer.write_spot(2, 0, good, 1, 0.0, (0, 0))
        with pytest.raises(ValueError, match="position_um"):
            writer.write_spot(0, 2, good, 1, 0.0, (0, 0, 0))
        with pytest.raises(ValueError, match=r"expected \(2, 40\)"):
            writer.write_spots([1, 1], [0, 1], {"primary": np.zeros((2, 39)), "secondary": np.zeros((2, 24))},
                               [1, 2], 0.0, np.zeros((2, 2)))
        assert writer.n_acquired == 2
        write_spot(writer, 0, 2)
    with PairedMapReader(path) as reader:
        assert reader.n_acquired == 3
        np.testing.assert_array_equal(reader.spot(0, 1)["primary"], spot_spectra(0, 1)["primary"])


def crashed_copies(tmp_path, n_spots: int, copies: int) -> list[Path]:
    """Maps frozen as a killed writer leaves them: n_spots written, all still in the journal only."""
    import shutil

    path = tmp_path / "live.h5"
    writer = PairedMapWriter.create(path, layout(3, 4), WAVELENGTHS, batch_spots=1000, commit_interval_s=3600)
    for iy, ix in layout(3, 4).visit_order()[:n_spots]:
        write_spot(writer, iy, ix)
    out = []
    for k in range(copies):
        copy = tmp_path / f"crashed{k}.h5"
        shutil.copy(path, copy)
        shutil.copy(tmp_path / "live.h5.journal", tmp_path / f"crashed{k}.h5.journal")
        out.append(copy)
    writer.close()
    return out


def test_a_torn_or_corrupt_journal_record_ends_the_replay(tmp_path):
    torn, corrupt, intact = crashed_copies(tmp_path, 5, 3)
    journal = Path(str(torn) + ".journal")
    record = journal.stat().st_size // 5
    with open(journal, "r+b") as f:
        f.truncate(journal.stat().st_size - 10)  # the spot in flight when the writer died
    with open(Path(str(corrupt) + ".journal"), "r+b") as f:
        f.seek(2 * record + 100)  # inside the spectra of the third spot
        byte = f.read(1)
        f.seek(2 * record + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    expected = [tuple(int(v) for v in s) for s in layout(3, 4).visit_order()]
    for path, recovered in ((torn, 4), (corrupt, 2), (intact, 5)):
        with PairedMapWriter.resume(path) as writer:
            assert writer.n_acquired == recovered, path.name
            assert [tuple(s) for s in writer.missing()] == expected[recovered:]
        check_acquired_spots(path, nx=4)


@pytest.mark.timeout(60)
def test_recover_leaves_a_map_alone_while_its_writer_runs_and_a_finished_one_as_it_is(tmp_path):
    path = tmp_path / "busy.h5"
    proc = subprocess.Popen([sys.executable, "-m", "tests.acquisition.store.writer_script", "live", str(path), "3", "4"],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ok 0"
        busy = subprocess.run([sys.executable, "-m", "acquisition.cli", "recover", str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and "a writer is still running on it" in busy.stderr
        proc.stdin.write("write 12\nfinish\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait(timeout=30)
    done = subprocess.run([sys.executable, "-m", "acquisition.cli", "recover", str(path), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["finished"] and result["acquired"] == 12 and result["recovered_from_journal"] == 0
