"""`libs-acquire map` as a user runs it: in its own process, killed, resumed, refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from acquisition.store import PairedMapError, PairedMapReader, validate
from tests.acquisition.conftest import open_map, scan

COMMAND = [sys.executable, "-m", "acquisition.cli", "map"]
ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, *args, "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args, "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def wait_for_acquired(path: Path, at_least: int, process: subprocess.Popen, timeout: float = 120.0) -> int:
    """Follow the map live (SWMR) until it shows enough acquired spots."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if path.exists():
            try:
                with PairedMapReader(path, live=True) as reader:
                    if reader.n_acquired >= at_least:
                        return reader.n_acquired
            except (PairedMapError, OSError):
                pass  # the writer is still laying the file out
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {at_least} spots acquired after {timeout} s")


@pytest.mark.slow
def test_kill_9_then_resume_acquires_every_spot_exactly_once(tmp_path):
    out = tmp_path / "map.h5"
    process = start("--sim", "--realtime", "--rate", "50", "--shape", "8x10", "--step-um", "40", "--seed", "7",
                    "--out", str(out))
    try:
        wait_for_acquired(out, 10, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL
    seen_live = int(scan(out)["acquired"].sum())

    recovered = subprocess.run([sys.executable, "-m", "acquisition.cli", "recover", str(out), "--json"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)

    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["finished"] is False
    import h5py
    with h5py.File(out, "r") as f:          # any HDF5 tool opens it now
        interrupted = int(f["entry/scan/acquired"][()].sum())
    assert 10 <= seen_live <= interrupted < 80
    before = scan(out)

    resumed = run("--resume", str(out), "--no-realtime", "--json")

    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["complete"] and summary["acquired"] == 80
    validate(out)
    after = scan(out)
    assert after["acquired"].all()
    done_before = before["acquired"] == 1
    assert summary["acquired_this_run"] == 80 - int(done_before.sum())
    for name in ("shot_id", "timestamp"):
        np.testing.assert_array_equal(after[name][done_before], before[name][done_before])
    assert len(np.unique(after["shot_id"])) == 80 and len(np.unique(after["timestamp"])) == 80
    with open_map(out) as f:
        assert "end_time" in f["entry"]
        nominal = np.stack(np.meshgrid(f["entry/primary/x"][()], f["entry/primary/y"][()]), axis=-1)
    assert np.abs(after["position"] - nominal).max() <= 20.0, "a spot holds a shot from elsewhere"
    with PairedMapReader(out) as reader:
        truth = reader.true_positions()
    # Truth goes with the spots into the file; spots still in the journal at the kill have none.
    known = np.isfinite(truth[..., 0])
    assert known.sum() >= summary["acquired_this_run"]
    assert np.abs(after["position"] - truth)[known].max() <= 5.0
    finished = run("--resume", str(out))
    assert finished.returncode == 2 and "nothing to resume" in finished.stderr


@pytest.mark.slow
def test_sigterm_exits_143_with_a_resumable_file_and_its_json_summary(tmp_path):
    out = tmp_path / "map.h5"
    process = start("--sim", "--realtime", "--rate", "50", "--shape", "8x10", "--out", str(out), "--json")
    wait_for_acquired(out, 1, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr
    validate(out)
    acquired = int(scan(out)["acquired"].sum())
    assert 1 <= acquired < 80
    summary = json.loads(stdout)
    assert summary["acquired"] == acquired and summary["complete"] is False and summary["gaps"] == 80 - acquired


def test_existing_out_file_is_refused_naming_the_flag(tmp_path):
    out = tmp_path / "map.h5"
    out.write_bytes(b"precious")
    result = run("--sim", "--shape", "2x2", "--out", str(out))
    assert result.returncode == 2
    assert "pass --overwrite to replace it" in result.stderr and "overwrite=True" not in result.stderr
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("args, message", [
    (["--sim", "--systems", "primary,tertiary"], "unknown system 'tertiary'"),
    (["--sim", "--shape", "40"], "--shape '40': expected NYxNX"),
    (["--sim", "--sim-faults", "lightning=0.1"], "unknown fault 'lightning'"),
    (["--sim", "--shape", "3x4000"], "map larger than the stage travel"),
    (["--shape", "3x4"], "give either --config FILE"),
])
def test_bad_input_exits_2_with_the_problem_named(tmp_path, args, message):
    result = run(*args, "--out", str(tmp_path / "map.h5"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "map.h5").exists()


def test_bad_config_file_exits_2(tmp_path):
    config = tmp_path / "bench.toml"
    config.write_text('[delay_generator]\ndriver = "dg645"\nresource = "TCPIP::127.0.0.1::1::SOCKET"\n'
                      '[laser]\ndriver = "bigsky"\nresource = "ASRL/dev/null::INSTR"\n'
                      '[stage]\ndriver = "zaber"\nresource = "ASRL/dev/null::INSTR"\n'
                      '[timing]\nrate_hz = 10\n'
                      '[systems.primary]\ndriver = "sim"\ngate_output = "EF"\ngate_delay_s = 1e-6\n'
                      'gate_width_s = 1e-5\n')
    result = run("--config", str(config), "--systems", "primary", "--out", str(tmp_path / "map.h5"))
    assert result.returncode == 2
    assert "[delay_generator].resource 'TCPIP::127.0.0.1::1::SOCKET': the delay generator is unreachable" \
        in result.stderr


def test_help_has_an_example():
    result = run("--help")
    assert result.returncode == 0
    assert "libs-acquire map --sim --shape 40x40 --step-um 40 --out map.h5" in result.stdout
    assert "--resume" in result.stdout


@pytest.mark.parametrize("clock", [["--realtime"], []])
def test_a_bench_config_rehearses_on_a_running_simulated_bench(tmp_path, clock):
    """libs-sim bench --write-config bench.toml, then libs-acquire map --config bench.toml: every
    instrument through its real driver and transport, spectrometers over the bench's socket."""
    config, out = tmp_path / "bench.toml", tmp_path / "map.h5"
    bench = subprocess.Popen([sys.executable, "-m", "sim.cli", "bench", "--seed", "1", *clock, "--write-config",
                              str(config)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in bench.stdout:
            if line.startswith("serving"):
                break
        assert config.exists(), "the bench wrote no config"

        result = run("--config", str(config), "--shape", "4x6", "--out", str(out), "--json")

        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["complete"] and summary["acquired"] == 24 and summary["missed_shots"] == 0
        validate(out)
    finally:
        bench.send_signal(signal.SIGINT)
        rest, _ = bench.communicate(timeout=30)
    assert bench.returncode == 0
    assert "stopped: 24 laser shots reached the sample" in rest, rest
    with PairedMapReader(out) as reader:
        assert reader.instrument["primary"]["driver"] == "sim"
        x = reader.scan_values("position")[..., 0]
        np.testing.assert_allclose(x, np.broadcast_to(reader.layout.x_um, (4, 6)), atol=1.0)
