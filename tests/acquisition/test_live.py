"""Live transfer during acquisition: `libs-acquire map --live`, against a real worker on real sockets."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import zmq

from acquisition.config import ConfigError
from acquisition.documents import SpotBatch
from acquisition.shared.drift import DriftMonitor
from acquisition.shared.spectral import AxisResampler
from acquisition.live import LiveOptions, LiveTransfer
from acquisition.live_record import spot_runs
from acquisition.mapping import acquire_map
from acquisition.store import validate
from drivers.errors import LaserInterlockError
from sim.scene import PairedScene
from streaming.security import ServerKeys, make_keys
from streaming.testing import make_test_model
from streaming.worker import WorkerConfig
from tests.acquisition.conftest import open_map, small_map
from tests.fixtures.emulated import bench_config
from tests.streaming.conftest import ThreadWorker, WorkerProcess
from transfer.preprocess import baseline_correct

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (20, 20)
SPOTS = SHAPE[0] * SHAPE[1]
PRIMARY_WINDOWS = [60, 30]     # the model's primary baseline windows: neither the secondary's nor the paper's


@pytest.fixture(scope="module")
def bench_model(tmp_path_factory):
    """A random-weight model in the exported format, sized for the simulated bench's spectrometers."""
    path = tmp_path_factory.mktemp("model") / "bench_model.onnx"
    scene = PairedScene()
    primary, secondary = scene.wavelengths("primary"), scene.wavelengths("secondary")
    make_test_model(path, n_secondary=secondary.size, n_primary=primary.size, n_latent=6, n_clusters=5,
                    baseline_window=5, seed=3)
    model = onnx.load(path)
    axes = {"twinplume.primary_wavelengths": primary, "twinplume.secondary_wavelengths": secondary}
    for prop in model.metadata_props:
        if prop.key in axes:
            prop.value = json.dumps(axes[prop.key].tolist())
    # the baseline windows of each system (the test graph corrects the secondary with 5, 5), and where
    # the training day's secondary lines sit (as export writes it: the mean corrected training spectrum)
    x = np.linspace(1000.0, 3000.0, 200)
    training = scene.shots(x, x[::-1], rng=np.random.default_rng(0))["secondary"]
    windows = {"twinplume.primary_baseline_windows": PRIMARY_WINDOWS, "twinplume.secondary_baseline_windows": [5, 5],
               "twinplume.secondary_mean_spectrum": baseline_correct(training, 5, 5).mean(axis=0).tolist()}
    for key, value in windows.items():
        prop = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def worker(bench_model, tmp_path_factory):
    proc = WorkerProcess(bench_model, tmp_path_factory.mktemp("worker"))
    yield proc
    proc.stop()


def free_port_triple() -> int:
    """A port p with p, p+1 and p+2 free on loopback (the stream spec's default layout)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + 2 > 65535:
            continue
        try:
            held = []
            for port in (base, base + 1, base + 2):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no three consecutive free ports")


def live_for(worker, **options) -> LiveTransfer:
    return LiveTransfer(LiveOptions(worker.input, results=worker.output, control=worker.control, **options),
                        show_progress=False)


def onnx_reference(model_path, secondary: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    primary, label, novelty = session.run(["primary", "label", "novelty"], {"secondary": secondary})
    return {"primary": primary, "label": label, "novelty": novelty}


def stored(path) -> dict[str, np.ndarray]:
    with open_map(path) as f:
        group = f["entry/transferred"]
        out = {name: group[name][()] for name in group if isinstance(group[name], h5py.Dataset)}
        out["attrs"] = dict(group.attrs)
        for name in ("primary", "secondary"):
            if name in f["entry"]:
                out[name] = f[f"entry/{name}/spectra"][()]
        out["acquired"] = f["entry/scan/acquired"][()] == 1
    return out


def assert_results_are_the_models(path, model_path, mask) -> None:
    """Where `mask`, /entry/transferred holds what ONNX Runtime makes of the stored secondary spectrum."""
    data = stored(path)
    reference = onnx_reference(model_path, data["secondary"][mask])
    np.testing.assert_array_equal(data["label"][mask], reference["label"])
    np.testing.assert_allclose(data["spectra"][mask], reference["primary"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(data["novelty"][mask], reference["novelty"], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_cli_live_map_fills_transferred_for_every_spot_without_importing_torch(tmp_path, bench_model):
    base = free_port_triple()
    ports = {"input": f"tcp://127.0.0.1:{base}", "output": f"tcp://127.0.0.1:{base + 1}",
             "control": f"tcp://127.0.0.1:{base + 2}"}
    proc = WorkerProcess(bench_model, tmp_path, ports=ports)
    out = tmp_path / "map.h5"
    # only --live: the results and control addresses are the input's port + 1 and + 2
    script = ("import sys; from acquisition.cli import main; rc = main(sys.argv[1:]); "
              "print('TORCH', 'torch' in sys.modules); sys.exit(rc)")
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, "map", "--sim", "--shape", f"{SHAPE[0]}x{SHAPE[1]}", "--out", str(out),
             "--live", ports["input"], "--no-progress", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        proc.stop()
    assert result.returncode == 0, result.stderr
    summary_line, torch_line = result.stdout.strip().splitlines()[-2:]
    assert torch_line == "TORCH False", "acquisition with --live imported torch"
    summary = json.loads(summary_line)
    live = summary["live"]
    assert summary["complete"] and summary["acquired"] == SPOTS
    assert live["results"] == SPOTS and live["without_result"] == 0 and live["without_result_spots"] == []
    assert live["written"] == SPOTS, "the recorder did not take every result"
    validate(out)
    data = stored(out)
    assert (data["label"] >= 0).all(), "a spot has no live label"
    assert_results_are_the_models(out, bench_model, data["acquired"])
    model_id = {p.key: p.value for p in onnx.load(bench_model).metadata_props}["twinplume.model_id"]
    assert data["attrs"]["model_id"] == live["model"] == model_id
    # drift monitor: per-spot errors against the measured primary, corrected with the primary's windows
    truth = baseline_correct(data["primary"].reshape(SPOTS, -1), *PRIMARY_WINDOWS)
    transferred = data["spectra"].reshape(SPOTS, -1).astype(np.float64)
    expected = np.linalg.norm(transferred - truth, axis=1) / np.linalg.norm(truth, axis=1)
    np.testing.assert_allclose(data["live_relative_error"].ravel(), expected, rtol=1e-4)
    cosine = 1 - (transferred * truth).sum(1) / (np.linalg.norm(transferred, axis=1) * np.linalg.norm(truth, axis=1))
    np.testing.assert_allclose(data["live_cosine_distance"].ravel(), cosine, rtol=1e-4, atol=1e-6)
    drift = json.loads(data["attrs"]["live_drift_json"])
    assert drift["spots"] == SPOTS and drift["baseline_windows"] == PRIMARY_WINDOWS
    assert drift["reference_relative_error"] == pytest.approx(np.mean(expected[np.argsort(
        stored_shot_ids(out).ravel())][:100]), rel=1e-4)


def stored_shot_ids(path) -> np.ndarray:
    with open_map(path) as f:
        return f["entry/scan/shot_id"][()]


def test_cli_refuses_bad_live_options_before_anything_runs(tmp_path, capsys):
    from acquisition.cli import main

    out = tmp_path / "map.h5"
    cases = [
        (["--live-results", "tcp://127.0.0.1:5558"], "need --live"),
        (["--live", "tcp://10.1.2.3:5557"], "not a loopback address"),
        (["--live", "ipc:///tmp/worker-in"], "--live-results and --live-control"),
        (["--live", "tcp://127.0.0.1:5557", "--live-keys", str(tmp_path)], "worker.key"),
    ]
    for extra, message in cases:
        assert main(["map", "--sim", "--out", str(out), "--no-progress", *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not out.exists()


def test_default_addresses_follow_the_input_port():
    options = LiveOptions("tcp://127.0.0.1:6000").resolved()
    assert (options.results, options.control) == ("tcp://127.0.0.1:6001", "tcp://127.0.0.1:6002")
    given = LiveOptions("tcp://127.0.0.1:6000", results="tcp://127.0.0.1:7000").resolved()
    assert (given.results, given.control) == ("tcp://127.0.0.1:7000", "tcp://127.0.0.1:6002")


# ----------------------------------------------------------------------------- worker away or failing


def test_map_without_a_worker_completes_and_names_every_spot(tmp_path, make_bench):
    bench = make_bench(seed=2)
    base = free_port_triple()
    live = LiveTransfer(LiveOptions(f"tcp://127.0.0.1:{base}", timeout_s=0.3), show_progress=False)
    out = tmp_path / "map.h5"
    settings = small_map(shape=(6, 5))

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False, live=live)

    assert summary.complete and summary.acquired == 30
    report = summary.live
    assert report["results"] == 0 and report["without_result"] == 30 and report["submitted"] == 30
    gaps = np.zeros((6, 5), bool)
    for iy, first, last in report["without_result_spots"]:
        gaps[iy, first:last + 1] = True
    assert gaps.all(), "the gap report does not name every spot"
    assert sum(report["reasons"].values()) == 30
    validate(out)
    data = stored(out)
    assert data["acquired"].all() and (data["label"] == -1).all()
    assert report["map_spots_without_result"] == 30


@pytest.mark.slow
def test_worker_killed_mid_map_leaves_the_map_complete_and_every_gap_reported(tmp_path, make_bench, bench_model):
    proc = WorkerProcess(bench_model, tmp_path)
    bench = make_bench(seed=4)
    seen = ResultCounter(proc.output)
    killed = threading.Event()
    stored_spots = [0]
    streamed_before_kill = [0]

    def kill_worker_after_150_spots(document):
        # a subscriber: it sees a SpotBatch after the live client has queued the batch's spots,
        # so every spot streamed before the kill is counted here
        if isinstance(document, SpotBatch) and not killed.is_set():
            stored_spots[0] += len(document)
            if stored_spots[0] >= 150:
                seen.wait_for(60, timeout_s=30)
                proc.proc.send_signal(signal.SIGKILL)
                proc.proc.wait(10)
                streamed_before_kill[0] = stored_spots[0]
                killed.set()

    live = live_for(proc, timeout_s=1.0)
    out = tmp_path / "map.h5"
    try:
        summary = acquire_map(out, small_map(shape=SHAPE), bench_config(bench), bench=bench, show_progress=False,
                              live=live, subscribers=[kill_worker_after_150_spots])
    finally:
        seen.close()
        proc.stop()
    assert killed.is_set()
    assert summary.complete and summary.acquired == SPOTS
    report = summary.live
    data = stored(out)
    has_result = data["label"] >= 0
    assert report["results"] + report["without_result"] == SPOTS
    assert report["results"] == int(has_result.sum()) >= 60
    assert report["without_result"] >= SPOTS - streamed_before_kill[0], "spots streamed after the kill cannot have results"
    gaps = np.zeros(SHAPE, bool)
    for iy, first, last in report["without_result_spots"]:
        gaps[iy, first:last + 1] = True
    np.testing.assert_array_equal(gaps, data["acquired"] & ~has_result)
    assert sum(report["reasons"].values()) == report["without_result"]
    assert_results_are_the_models(out, bench_model, has_result)
    assert np.isnan(data["live_relative_error"][~has_result]).all()
    assert np.isfinite(data["live_relative_error"][has_result]).all()
    validate(out)


class ResultCounter:
    """A plain SUB socket on the worker's output, counting transfer messages."""

    def __init__(self, address: str):
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"transfer")
        self.sub.connect(address)
        self.count = 0

    def wait_for(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < n and time.monotonic() < deadline:
            if self.sub.poll(50):
                self.sub.recv_multipart()
                self.count += 1
        assert self.count >= n, f"only {self.count} results seen before the kill"

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def test_model_for_other_spectrometers_is_refused_before_the_laser_fires(tmp_path, make_bench):
    small = tmp_path / "small.onnx"
    make_test_model(small, n_secondary=48, n_primary=40)
    thread_worker = ThreadWorker(WorkerConfig(small, input="tcp://127.0.0.1:*", output="tcp://127.0.0.1:*",
                                              control="tcp://127.0.0.1:*", threads=1))
    bench = make_bench(seed=1)
    try:
        with pytest.raises(ConfigError, match="48-pixel secondary spectra.*3872 pixels"):
            acquire_map(tmp_path / "map.h5", small_map(), bench_config(bench), bench=bench, show_progress=False,
                        live=live_for(thread_worker))
    finally:
        thread_worker.stop()
    assert bench.fired == []


def test_live_keys_dir_gives_an_encrypted_authenticated_stream(tmp_path, make_bench, bench_model):
    keys = tmp_path / "keys"
    make_keys(keys, "worker")
    make_keys(keys / "clients", "acquisition")
    config = WorkerConfig(bench_model, input="tcp://127.0.0.1:*", output="tcp://127.0.0.1:*",
                          control="tcp://127.0.0.1:*", threads=1,
                          keys=ServerKeys.load(keys / "worker.key_secret", keys / "clients"))
    thread_worker = ThreadWorker(config)
    bench = make_bench(seed=9)
    out = tmp_path / "map.h5"
    try:
        summary = acquire_map(out, small_map(), bench_config(bench), bench=bench, show_progress=False,
                              live=live_for(thread_worker, keys_dir=keys))
    finally:
        thread_worker.stop()
    assert summary.live["results"] == 30 and summary.live["without_result"] == 0
    assert_results_are_the_models(out, bench_model, stored(out)["acquired"])


# ----------------------------------------------------------------------------- resume


def test_resume_continues_live_transfer_for_the_remaining_spots(tmp_path, make_bench, worker, bench_model):
    out = tmp_path / "map.h5"
    settings = small_map(shape=(8, 10))
    first = make_bench(seed=6, faults="interlock-at=37")
    live = live_for(worker)
    with pytest.raises(LaserInterlockError):
        acquire_map(out, settings, bench_config(first), bench=first, show_progress=False, live=live)
    before = stored(out)
    assert 0 < before["acquired"].sum() < 80
    np.testing.assert_array_equal(before["label"] >= 0, before["acquired"])
    assert live.summary()["without_result"] == 0

    again = make_bench(seed=6)
    resumed = live_for(worker)
    summary = acquire_map(out, settings, bench_config(again), bench=again, resume=True, show_progress=False,
                          live=resumed)

    assert summary.complete
    report = summary.live
    assert report["spots"] == 80 - before["acquired"].sum() == report["results"]
    assert report["map_spots_without_result"] == 0
    after = stored(out)
    assert (after["label"] >= 0).all()
    np.testing.assert_array_equal(after["label"][before["acquired"]], before["label"][before["acquired"]])
    assert_results_are_the_models(out, bench_model, after["acquired"])
    assert np.isfinite(after["live_relative_error"]).all()
    assert json.loads(after["attrs"]["live_drift_json"])["spots"] == 80
    validate(out)


def test_resume_with_live_of_a_map_started_without_it(tmp_path, make_bench, worker, bench_model):
    out = tmp_path / "map.h5"
    settings = small_map(shape=(6, 5))
    first = make_bench(seed=7, faults="interlock-at=12")
    with pytest.raises(LaserInterlockError):
        acquire_map(out, settings, bench_config(first), bench=first, show_progress=False)
    with open_map(out) as f:
        assert "transferred" not in f["entry"]
        earlier = f["entry/scan/acquired"][()] == 1

    again = make_bench(seed=7)
    summary = acquire_map(out, settings, bench_config(again), bench=again, resume=True, show_progress=False,
                          live=live_for(worker))

    assert summary.complete and summary.live["results"] == 30 - earlier.sum()
    assert summary.live["map_spots_without_result"] == earlier.sum()
    data = stored(out)
    np.testing.assert_array_equal(data["label"] >= 0, ~earlier)
    assert_results_are_the_models(out, bench_model, ~earlier)
    validate(out)


def test_a_drift_monitor_of_the_callers_is_the_maps_only_one(tmp_path, make_bench, worker):
    """A LiveDrift passed among the subscribers replaces the default: one SpotErrors per SpotResults,
    its own window in the file and the summary; two are refused before the laser fires."""
    from acquisition.documents import SpotErrors, SpotResults
    from acquisition.live_drift import LiveDrift
    out = tmp_path / "map.h5"
    mine, seen = LiveDrift(window=7, threshold=5.0), []
    bench = make_bench(seed=8)
    summary = acquire_map(out, small_map(shape=(6, 8)), bench_config(bench), bench=bench, show_progress=False,
                          live=live_for(worker), subscribers=[mine, seen.append])
    results = [d for d in seen if isinstance(d, SpotResults)]
    errors = [d for d in seen if isinstance(d, SpotErrors)]
    assert sum(len(d) for d in results) == 48
    assert sum(len(d) for d in errors) == 48                    # each result measured once
    assert summary.live["drift"] == mine.summary() and mine.summary()["window"] == 7
    assert json.loads(stored(out)["attrs"]["live_drift_json"])["window"] == 7
    again = make_bench(seed=8)
    with pytest.raises(ConfigError, match="2 LiveDrift subscribers"):
        acquire_map(tmp_path / "two.h5", small_map(shape=(6, 8)), bench_config(again), bench=again,
                    show_progress=False, live=live_for(worker), subscribers=[LiveDrift(), LiveDrift()])
    assert not (tmp_path / "two.h5").exists()


def test_secondary_only_map_gets_results_on_the_models_own_axis(tmp_path, make_bench, worker, bench_model):
    bench = make_bench(seed=8)
    out = tmp_path / "deployed.h5"

    summary = acquire_map(out, small_map(systems=("secondary",)), bench_config(bench), bench=bench,
                          show_progress=False, live=live_for(worker))

    assert summary.live["results"] == 30 and summary.live["drift"] is None
    validate(out)
    data = stored(out)
    assert "live_relative_error" not in data, "no primary was measured, so there is nothing to compare"
    axis = json.loads({p.key: p.value for p in onnx.load(bench_model).metadata_props}
                      ["twinplume.primary_wavelengths"])
    np.testing.assert_allclose(data["wavelength"], axis)
    assert_results_are_the_models(out, bench_model, data["label"] >= 0)
    assert (data["label"] >= 0).all()


def live_on_a_severe_day(tmp_path, make_bench, worker, caplog, shape, calibration="nominal"):
    """(scene, map path, summary) of a live map on the simulated bench's severe day 1."""
    scene = PairedScene(seed=9, day=1, day_change="severe", calibration=calibration)
    bench = make_bench(seed=9, scene=scene)
    out = tmp_path / f"severe-{calibration}.h5"
    with caplog.at_level(logging.INFO, logger="acquisition.live"):
        summary = acquire_map(out, small_map(shape=shape), bench_config(bench), bench=bench, show_progress=False,
                              live=live_for(worker))
    return scene, out, summary


def test_a_secondary_calibrated_on_the_day_is_resampled_onto_the_models_axis(tmp_path, make_bench, worker,
                                                                            bench_model, caplog):
    """The spectrometer's axis moved a pixel since the model was trained (a severe day, recalibrated):
    the worker gets the spectra on the model's axis; the map keeps them as measured."""
    scene, out, summary = live_on_a_severe_day(tmp_path, make_bench, worker, caplog, (5, 6), calibration="daily")
    assert summary.live["results"] == 30
    assert "resampled onto the model's axis" in caplog.text
    # resampled, the lines sit where the model saw them
    assert abs(summary.live["secondary_shift_px"]) < 0.1
    assert "was not recalibrated" not in caplog.text
    with open_map(out) as f:
        measured_axis = f["entry/secondary/wavelength"][()]
    model_axis = PairedScene().wavelengths("secondary")
    np.testing.assert_array_equal(measured_axis, scene.wavelengths("secondary"))     # stored as measured
    assert np.abs(measured_axis - model_axis).max() > 0.5 * np.diff(model_axis).min()
    data = stored(out)
    secondary = data["secondary"].reshape(30, -1)
    reference = onnx_reference(bench_model, AxisResampler(measured_axis, model_axis)(secondary))
    np.testing.assert_allclose(data["spectra"].reshape(30, -1), reference["primary"], rtol=1e-5, atol=1e-3)
    not_resampled = onnx_reference(bench_model, secondary)["primary"]
    assert not np.allclose(data["spectra"].reshape(30, -1), not_resampled, rtol=1e-5, atol=1e-3)


def test_a_drifted_secondary_on_its_factory_axis_is_named_during_the_map(tmp_path, make_bench, worker, caplog):
    scene, _, summary = live_on_a_severe_day(tmp_path, make_bench, worker, caplog, (5, 6))   # the light moved
    drift_px = scene.conditions.drift["secondary"].shift_px       # +d moves the lines d px to the blue
    assert abs(drift_px) > 0.5
    assert summary.live["secondary_shift_px"] == pytest.approx(-drift_px, abs=0.15)
    assert "the secondary lines sit" in caplog.text and "was not recalibrated" in caplog.text
    assert summary.live["results"] == 30                          # a check: the map and the stream go on


def test_a_drifted_secondary_is_aligned_from_its_own_lines_once_they_are_measured(tmp_path, make_bench, worker,
                                                                                   bench_model, caplog):
    """A severe day on factory axes, a map longer than the line check: the spots after the check
    reach the worker aligned onto the model's lines (shift and stretch as the simulator drifted
    them); those before it went out as measured. The map keeps every spectrum as measured."""
    from acquisition.live import SHIFT_CHECK_SPOTS
    from acquisition.shared.alignment import LineOffset

    scene, out, summary = live_on_a_severe_day(tmp_path, make_bench, worker, caplog, (24, 24))
    assert summary.live["results"] == 576
    assert "aligned from the map's own lines" in caplog.text
    alignment = summary.live["secondary_alignment"]
    drift = scene.conditions.drift["secondary"]            # +d moves the lines d px to the blue
    axis = scene.wavelengths("secondary")
    n = axis.size
    offset = LineOffset(n, alignment["shift_px"], alignment["stretch_px"], summary.live["secondary_shift_px"], 8)
    u = (np.arange(n) - 0.5 * (n - 1)) / (0.5 * n)
    np.testing.assert_allclose(offset.at(np.arange(n)), -(drift.shift_px + drift.stretch_px * u), atol=0.15)
    first = alignment["from_spot"]
    assert SHIFT_CHECK_SPOTS <= first < 576

    data = stored(out)
    order = np.argsort(stored_shot_ids(out).ravel())               # the order the spots were streamed in
    secondary = data["secondary"].reshape(576, -1)[order]
    results = data["spectra"].reshape(576, -1)[order]
    before, after = slice(0, first), slice(first, None)
    np.testing.assert_allclose(results[before], onnx_reference(bench_model, secondary[before])["primary"],
                               rtol=1e-5, atol=1e-3)
    # the summary's shift and stretch are rounded to a thousandth of a pixel: near, not equal
    aligned = onnx_reference(bench_model, AxisResampler(offset.seen_axis(axis), axis)(secondary[after]))["primary"]
    as_measured = onnx_reference(bench_model, secondary[after])["primary"]
    assert np.linalg.norm(results[after] - aligned) < 0.05 * np.linalg.norm(results[after] - as_measured)
    np.testing.assert_array_equal(stored_axis(out), axis)          # the map keeps the factory axis


def stored_axis(path) -> np.ndarray:
    with open_map(path) as f:
        return f["entry/secondary/wavelength"][()]


# ----------------------------------------------------------------------------- drift monitor


def synthetic_primary(k: int, n: int = 600, seed: int = 0) -> np.ndarray:
    """Raw primary-like spectra: a sloping continuum plus a few emission lines."""
    rng = np.random.default_rng(seed)
    x = np.arange(n)
    continuum = 200 + 0.3 * x
    lines = sum(a * np.exp(-0.5 * ((x - c) / 2.0) ** 2) for a, c in ((900, 120), (400, 300), (1500, 480)))
    return (continuum + lines * rng.uniform(0.7, 1.3, (k, 1)) + rng.normal(0, 5, (k, n))).astype(np.float32)


def test_drift_monitor_measures_against_the_baseline_corrected_primary_and_warns_on_drift(caplog):
    window = 20
    monitor = DriftMonitor(window=window, threshold=0.5)
    raw = synthetic_primary(120)
    truth = baseline_correct(raw)
    rng = np.random.default_rng(1)
    good = truth * (1 + 0.05 * rng.standard_normal(truth.shape)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="acquisition.shared.drift"):
        rel, cos = monitor.measure(good[:60], raw[:60])
        assert not monitor.drifting and "drifting" not in caplog.text
        bad = truth[60:] * (1 + 0.2 * rng.standard_normal(truth[60:].shape)).astype(np.float32)
        monitor.measure(bad, raw[60:])
    expected = np.linalg.norm(good[:60] - truth[:60], axis=1) / np.linalg.norm(truth[:60], axis=1)
    np.testing.assert_allclose(rel, expected, rtol=1e-4)
    assert (cos >= 0).all() and (cos < 0.05).all()
    summary = monitor.summary()
    assert summary["spots"] == 120 and summary["drifting"] and summary["warnings"] == 1
    assert summary["drift"] == pytest.approx(summary["recent_relative_error"] / summary["reference_relative_error"] - 1)
    assert summary["drift"] > 2
    assert "live transfer drifting" in caplog.text


def test_spot_runs_names_every_true_spot_once():
    mask = np.zeros((3, 6), bool)
    mask[0, [0, 1, 2, 5]] = True
    mask[2, :] = True
    assert spot_runs(mask) == [[0, 0, 2], [0, 5, 5], [2, 0, 5]]


def test_drift_hovering_at_the_threshold_warns_once(caplog):
    """Mean relative error alternating just above and just below the threshold: one warning, not one per crossing."""
    monitor = DriftMonitor(window=10, threshold=0.5)
    monitor.add(np.full(10, 0.10), np.zeros(10))                 # reference: 0.10
    with caplog.at_level(logging.WARNING, logger="acquisition.shared.drift"):
        for level in (0.152, 0.148) * 20:                       # drift +52 % / +48 %, around the 50 % threshold
            monitor.add(np.full(10, level), np.zeros(10))
        assert monitor.summary()["warnings"] == 1 and monitor.drifting
        monitor.add(np.full(10, 0.13), np.zeros(10))             # +30 %: well below, the warning clears
        assert not monitor.drifting
        monitor.add(np.full(10, 0.16), np.zeros(10))             # drifting again: a second warning
    assert monitor.summary()["warnings"] == 2
    assert caplog.text.count("live transfer drifting") == 2
