"""A live map records the trust score the worker sent: the exported graph with its trust output
served by a real worker, a simulated map acquired through it (and one replayed to `libs-stream
watch --out`), the file checked against ONNX
Runtime on the stored secondary spectra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.streaming.conftest import WorkerProcess
from tests.transfer.export.conftest import run

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_a_live_map_records_the_expected_error_and_the_flag(bundle, exported, session, tmp_path):
    worker = WorkerProcess(exported.path, tmp_path)
    out = tmp_path / "live.h5"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "acquisition.cli", "map", "--sim", "--shape", "4x5", "--out", str(out),
             "--live", worker.input, "--live-results", worker.output, "--live-control", worker.control,
             "--no-progress", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    finally:
        worker.stop()
    assert result.returncode == 0, result.stderr
    live = json.loads(result.stdout.strip().splitlines()[-1])["live"]
    # the threshold the bundle publishes, as the worker reported it
    assert live["results"] == 20 and live["trust_threshold"] == pytest.approx(bundle.secondary().trust.threshold_)
    with h5py.File(out, "r") as f:
        group = f["entry/transferred"]
        secondary = f["entry/secondary/spectra"][()].reshape(20, -1)
        expected = group["expected_rel_error"][()].reshape(20)
        flag = group["untrusted"][()].reshape(20)
        assert group["untrusted"].attrs["threshold"] == pytest.approx(live["trust_threshold"])
    # what the graph makes of the spectra stored at each spot
    reference = run(session, secondary)["expected_rel_error"]
    np.testing.assert_allclose(expected, reference, rtol=1e-4)
    assert np.array_equal(flag == 1, expected > np.float32(live["trust_threshold"]))


def _watch_and_send(worker, target: Path, *, control: bool) -> subprocess.CompletedProcess:
    """`libs-stream watch --out TARGET` (asking the worker's control socket, or not) while
    `libs-stream send` replays TARGET's secondary spectra through the worker."""
    from tests.waiting import StreamLines
    command = [sys.executable, "-m", "streaming.cli", "watch", "--output", worker.output, "--duration", "8",
               "--out", str(target)] + (["--control", worker.control] if control else [])
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = StreamLines(proc.stdout), StreamLines(proc.stderr)
    try:
        stderr.wait_for("watching", timeout_s=30)
        sent = subprocess.run([sys.executable, "-m", "streaming.cli", "send", str(target), "--input", worker.input,
                               "--output", worker.output, "--rate", "2000"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        proc.wait(timeout=60)
        return subprocess.CompletedProcess(command, proc.returncode, stdout.finish(), stderr.finish())
    finally:
        proc.kill()


@pytest.mark.slow
def test_watch_records_the_expected_error_with_the_workers_threshold(bundle, exported, session, maps, tmp_path):
    import shutil
    target = tmp_path / "watched.h5"
    shutil.copy(maps["test"], target)
    threshold = bundle.secondary().trust.threshold_
    worker = WorkerProcess(exported.path, tmp_path)
    try:
        watched = _watch_and_send(worker, target, control=True)
        assert watched.returncode == 0, watched.stderr
        with h5py.File(target, "r") as f:
            group = f["entry/transferred"]
            secondary = f["entry/secondary/spectra"][()].reshape(-1, f["entry/secondary/spectra"].shape[-1])
            expected = group["expected_rel_error"][()].reshape(-1)
            flag = group["untrusted"][()].reshape(-1)
            assert group["untrusted"].attrs["threshold"] == pytest.approx(threshold)
        np.testing.assert_allclose(expected, run(session, secondary)["expected_rel_error"], rtol=1e-4)
        assert np.array_equal(flag == 1, expected > np.float32(threshold))
        assert f"{int((flag == 1).sum())} flagged untrusted" in watched.stdout
        # Without the control socket the threshold is unknown: the spectra are recorded, the trust is
        # not, and the first run's trust at the same spots is cleared: it described other results.
        unasked = _watch_and_send(worker, target, control=False)
    finally:
        worker.stop()
    assert unasked.returncode == 0, unasked.stderr
    assert "not recorded: the worker's trust threshold is unknown" in unasked.stderr
    with h5py.File(target, "r") as f:
        group = f["entry/transferred"]
        assert np.isnan(group["expected_rel_error"][()]).all()
        assert (group["untrusted"][()] == -1).all()
        assert np.isfinite(group["spectra"][()]).all()
