"""`libs-acquire map --live ADDR --view`: the acquisition starts the browser view on its worker and map file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from urllib.error import URLError
from urllib.request import urlopen

import onnx
import pytest

from sim.scene import PairedScene
from streaming.testing import make_test_model
from tests.streaming.conftest import WorkerProcess
from tests.streaming.viewtools import wait_for


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
    onnx.save(model, path)
    return path


def get_json(url: str) -> dict:
    with urlopen(url, timeout=30) as reply:   # generous: a loaded machine, the view reading the map
        return json.loads(reply.read())


def test_map_with_view_prints_the_url_of_a_view_showing_this_map(bench_model, tmp_path):
    worker = WorkerProcess(bench_model, tmp_path)
    out = tmp_path / "live.h5"
    acquire = subprocess.Popen(
        [sys.executable, "-m", "acquisition.cli", "map", "--sim", "--shape", "8x8", "--realtime", "--rate", "8",
         "--out", str(out), "--live", worker.input, "--live-results", worker.output, "--live-control",
         worker.control, "--view", "--view-port", "0", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(acquire.stdout), daemon=True)
    try:
        first = acquire.stdout.readline()
        assert first.startswith("live view: http://127.0.0.1:"), first + acquire.stderr.read()
        url = first.split()[2]
        reader.start()
        # the view follows the map being written: spots appear, with the error against the measured primary
        wait_for(lambda: get_json(url + "api/stats")["shown"] >= 3, 60, "spots on the view")
        spot = wait_for(lambda: (lambda s: s if s["error"] is not None else None)(get_json(url + "api/spot?iy=0&ix=0")),
                        30, "spot (0, 0) with its transfer error")
        assert set(spot["curves"]) == {"transferred", "measured primary", "secondary"}
        assert acquire.wait(120) == 0, acquire.stderr.read()
    finally:
        if acquire.poll() is None:
            acquire.kill()
            acquire.wait()
        worker.stop()
    reader.join(5)
    assert any("64/64 spots acquired" in line for line in lines), lines
    with pytest.raises(URLError):          # the view stops with the map command
        urlopen(url, timeout=2)


def test_view_without_live_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "acquisition.cli", "map", "--sim", "--shape", "2x2", "--out",
                          str(tmp_path / "m.h5"), "--view"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--view needs --live" in out.stderr
    assert not (tmp_path / "m.h5").exists()


def _view_answers(url: str) -> bool:
    try:
        with urlopen(url, timeout=2):
            return True
    except (URLError, OSError):
        return False


def test_view_does_not_outlive_a_killed_map_command(bench_model, tmp_path):
    """kill -9 of the map command (no chance to clean up): its view still stops by itself."""
    worker = WorkerProcess(bench_model, tmp_path)
    acquire = subprocess.Popen(
        [sys.executable, "-m", "acquisition.cli", "map", "--sim", "--shape", "20x20", "--realtime", "--rate", "4",
         "--out", str(tmp_path / "live.h5"), "--live", worker.input, "--live-results", worker.output,
         "--live-control", worker.control, "--view", "--view-port", "0", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = acquire.stdout.readline()
        assert first.startswith("live view: http://127.0.0.1:"), first
        url = first.split()[2]
        wait_for(lambda: get_json(url + "api/stats")["shown"] >= 1, 60, "a spot on the view")
        acquire.kill()
        acquire.wait()
        wait_for(lambda: not _view_answers(url), 30, "the view to stop after its map command was killed")
    finally:
        if acquire.poll() is None:
            acquire.kill()
            acquire.wait()
        worker.stop()
