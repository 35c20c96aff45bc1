"""`libs-sim generate` and generate_map: contract-conforming paired maps with ground truth."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from acquisition.store import PairedMapReader, validate
from sim.cli import main
from sim.generate import PRESETS, generate_map
from sim.sample import PHASE_NAMES, PegmatiteSample
from tests.waiting import StderrLines

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_map(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "map.h5"
    code = main(["generate", "--shape", "6x9", "--step-um", "40", "--day", "0", "--seed", "1", "--origin-um", "0,0",
                 "--out", str(path), "--chunk-spots", "20", "--no-progress"])
    assert code == 0
    return path


def test_cli_writes_a_valid_complete_paired_map(small_map):
    validate(small_map)
    with PairedMapReader(small_map) as reader:
        assert reader.shape == (6, 9)
        assert reader.systems == ("primary", "secondary")
        assert reader.acquired.all() and reader.n_acquired == 54
        assert reader.wavelengths("primary").size == 4062 and reader.wavelengths("secondary").size == 3872
        chunk = reader.read_all()
        for system, spectra in chunk.spectra.items():
            assert np.isfinite(spectra).all() and spectra.min() >= 0 and spectra.max() <= 65535
            assert (spectra == np.rint(spectra)).all()
            assert spectra.max() > 3000, f"{system}: no lines"
        assert reader.instrument["primary"]["gate_delay_s"] == pytest.approx(1e-6)


def test_map_carries_ground_truth_that_matches_the_sample(small_map):
    with PairedMapReader(small_map) as reader:
        truth = reader.sample_truth
        layout = reader.layout
    assert list(truth["phase_names"]) == list(PHASE_NAMES)
    assert truth["phase_map"].shape == (6, 9) and truth["phase_map"].dtype == np.int16
    x, y = np.meshgrid(layout.x_um, layout.y_um)
    np.testing.assert_array_equal(truth["phase_map"], PegmatiteSample(seed=1).phase_at(x, y))
    assert truth["attrs"]["seed"] == 1 and truth["attrs"]["day"] == 0


def test_true_positions_are_where_the_spectra_were_simulated(small_map):
    with PairedMapReader(small_map) as reader:
        true_position = reader.true_positions()
        position = reader.scan_values("position")
        layout = reader.layout
    assert true_position.shape == (6, 9, 2) and true_position.dtype == np.float64
    np.testing.assert_array_equal(true_position[..., 0], np.broadcast_to(layout.x_um, (6, 9)))
    np.testing.assert_array_equal(true_position[..., 1], np.broadcast_to(layout.y_um[:, None], (6, 9)))
    np.testing.assert_array_equal(true_position, position)


def test_shot_ids_follow_the_snake_visiting_order(small_map):
    with h5py.File(small_map, "r") as f:
        shot_id = f["entry/scan/shot_id"][()]
        timestamp = f["entry/scan/timestamp"][()]
        position = f["entry/scan/position"][()]
    assert shot_id[0, 0] == 0 and shot_id[0, -1] == 8 and shot_id[1, -1] == 9 and shot_id[1, 0] == 17
    assert sorted(shot_id.ravel()) == list(range(54))
    order = np.argsort(shot_id.ravel())
    assert (np.diff(timestamp.ravel()[order]) > 0).all()
    np.testing.assert_allclose(position[2, 3], [3 * 40.0, 2 * 40.0])


def test_same_seed_gives_the_same_map_and_another_seed_does_not(tmp_path, small_map):
    again = generate_map(tmp_path / "again.h5", shape=(6, 9), step_um=40, seed=1, progress=False, chunk_spots=20)
    other = generate_map(tmp_path / "other.h5", shape=(6, 9), step_um=40, seed=2, progress=False, chunk_spots=20)
    with PairedMapReader(small_map) as a, PairedMapReader(again) as b, PairedMapReader(other) as c:
        for system in ("primary", "secondary"):
            np.testing.assert_array_equal(a.read_all().spectra[system], b.read_all().spectra[system])
            assert not np.array_equal(a.read_all().spectra[system], c.read_all().spectra[system])


def test_another_origin_is_another_region_of_the_same_sample(tmp_path):
    first = generate_map(tmp_path / "a.h5", shape=(5, 5), step_um=40, seed=4, progress=False)
    shifted = generate_map(tmp_path / "b.h5", shape=(5, 5), step_um=40, seed=4, origin_um=(80.0, 120.0),
                           progress=False)
    with PairedMapReader(first) as a, PairedMapReader(shifted) as b:
        # spot (iy, ix) of the shifted map sits at (iy + 3, ix + 2) of the first
        np.testing.assert_array_equal(b.sample_truth["phase_map"][:2, :3], a.sample_truth["phase_map"][3:, 2:])
        np.testing.assert_allclose(b.layout.x_um[0], 80.0)


def test_preset_settings_with_a_small_shape(tmp_path):
    assert PRESETS["paper-train"]["shape"] == (560, 560) and PRESETS["paper-train"]["step_um"] == 40
    assert PRESETS["paper-val"]["shape"] == (266, 500) and PRESETS["paper-val"]["step_um"] == 40
    assert PRESETS["paper-test"]["shape"] == (500, 500) and PRESETS["paper-test"]["step_um"] == 20
    assert PRESETS["paper-test"]["day"] != PRESETS["paper-train"]["day"]
    assert PRESETS["paper-test"]["origin_um"] != PRESETS["paper-train"]["origin_um"]
    path = tmp_path / "test-like.h5"
    assert main(["generate", "--preset", "paper-test", "--shape", "3x4", "--out", str(path), "--no-progress"]) == 0
    with PairedMapReader(path) as reader:
        assert reader.layout.step_um == (20.0, 20.0)
        assert reader.layout.origin_um == PRESETS["paper-test"]["origin_um"]
        assert reader.sample_truth["attrs"]["day"] == 1


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    assert "libs-sim generate --shape 100x100" in capsys.readouterr().out


def exit_code(argv) -> int:
    """main's exit code, also where argparse refuses the command line (it raises SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, message", [
    (["--shape", "0x5", "--step-um", "40"], "both sizes must be >= 1"),
    (["--shape", "5by5", "--step-um", "40"], "expected NYxNX (rows x columns)"),
    (["--shape", "5x5"], "--step-um"),
    (["--shape", "5x5", "--step-um", "-3"], "must be positive"),
])
def test_bad_arguments_are_named_and_exit_2(tmp_path, capsys, argv, message):
    path = tmp_path / "x.h5"
    assert exit_code(["generate", *argv, "--out", str(path), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not path.exists()


def test_an_existing_file_is_not_overwritten_without_asking(small_map, capsys):
    before = small_map.read_bytes()
    assert main(["generate", "--shape", "2x2", "--step-um", "40", "--out", str(small_map), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert small_map.read_bytes() == before


def test_an_interrupted_map_resumes_to_the_same_map(tmp_path, small_map, monkeypatch):
    from sim import scene as scene_module
    path = tmp_path / "interrupted.h5"
    real_shots = scene_module.PairedScene.shots
    calls = {"n": 0}

    def failing_shots(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_shots(self, *args, **kwargs)

    monkeypatch.setattr(scene_module.PairedScene, "shots", failing_shots)
    with pytest.raises(KeyboardInterrupt):
        generate_map(path, shape=(6, 9), step_um=40, seed=1, progress=False, chunk_spots=20)
    monkeypatch.setattr(scene_module.PairedScene, "shots", real_shots)
    with PairedMapReader(path) as partial:
        assert 0 < partial.n_acquired < 54               # what was simulated before the stop is kept

    with pytest.raises(ValueError, match="seed"):
        generate_map(path, shape=(6, 9), step_um=40, seed=2, progress=False, chunk_spots=20, resume=True)
    assert main(["generate", "--shape", "6x9", "--step-um", "40", "--seed", "1", "--chunk-spots", "20",
                 "--origin-um", "0,0", "--out", str(path), "--resume", "--no-progress"]) == 0
    with PairedMapReader(path) as resumed, PairedMapReader(small_map) as complete:
        assert resumed.n_acquired == 54
        for system in ("primary", "secondary"):
            np.testing.assert_array_equal(resumed.read_all().spectra[system], complete.read_all().spectra[system])


def test_generation_log_names_the_origin_and_the_step(tmp_path, caplog):
    with caplog.at_level("INFO", logger="sim.generate"):
        generate_map(tmp_path / "logged.h5", shape=(1, 2), step_um=(30.0, 40.0), origin_um=(1250.0, 780.0),
                     progress=False)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("generating"))
    assert "origin (x, y) (1250.0, 780.0) um" in line
    assert "step (x, y) (30.0, 40.0) um" in line


def _start_generate(out, *, sigint_ignored: bool):
    """`libs-sim generate --preset paper-test` in its own process, logging its progress every step.

    A shell script starts background jobs with SIGINT ignored, which is how Ctrl-C
    (``kill -INT``) used to be lost; ``sigint_ignored`` starts it that way."""
    env = dict(os.environ, TWINPLUME_PROGRESS_EVERY_S="0", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "generate", "--preset", "paper-test", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None)


@pytest.mark.slow
@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["sigint-default", "started-with-sigint-ignored"])
def test_generate_stops_on_the_first_sigint_and_keeps_a_resumable_map(tmp_path, sigint_ignored):
    out = tmp_path / "test.h5"
    process = _start_generate(out, sigint_ignored=sigint_ignored)
    stderr = StderrLines(process)
    try:
        stderr.wait_for("progress: generate test.h5: 2000/250000", timeout_s=120)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)                   # a chunk is ~2000 spots: seconds, not the whole map
    except (AssertionError, subprocess.TimeoutExpired):
        process.kill()
        raise
    err = stderr.finish()
    assert process.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    with PairedMapReader(out) as partial:         # stopped early, and what was written can be resumed
        assert 0 < partial.n_acquired < 250_000


def test_json_names_the_map_written_and_nothing_else_on_stdout(tmp_path, capsys):
    out = tmp_path / "small.h5"
    assert main(["generate", "--shape", "3x4", "--step-um", "25", "--day", "1", "--out", str(out), "--no-progress",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["map"] == str(out) and result["shape"] == [3, 4] and result["day"] == 1
    with PairedMapReader(out) as written:
        assert written.shape == (3, 4) and written.n_acquired == 12
