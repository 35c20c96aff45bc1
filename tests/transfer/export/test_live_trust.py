"""A live map records the trust score the worker sent: the exported graph with its trust output
served by a real worker, a simulated map acquired through it, the file checked against ONNX
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
