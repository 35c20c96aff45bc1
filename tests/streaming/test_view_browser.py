"""`libs-stream view` in a real headless Chromium: a worker, a replayed map and the page, end to end.

The truth is the map file and ONNX Runtime run directly on its secondary spectra: the page
must show for every spot the label the model gives that spectrum, and under the cursor the
spectrum the model transfers, the measured primary and the secondary from the file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.streaming.conftest import WorkerProcess
from tests.streaming.viewtools import ViewProcess, find_browser, start_browser, wait_for

SHAPE = (6, 8)
BROWSER = find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium + chromedriver on this machine "
                                   "(apt-get install chromium chromium-driver; .ci/run installs them)")


@pytest.fixture(scope="module")
def small_map(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("map") / "map.h5"
    subprocess.run([sys.executable, "-m", "sim.cli", "generate", "--shape", f"{SHAPE[0]}x{SHAPE[1]}",
                    "--step-um", "40", "--seed", "2", "--out", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def map_model(small_map, tmp_path_factory) -> Path:
    """A random-weight model in the exported format, sized and labelled with the map's wavelength axes."""
    import onnx

    from acquisition.store import PairedMapReader
    from streaming.testing import make_test_model

    with PairedMapReader(small_map) as reader:
        primary, secondary = reader.wavelengths("primary"), reader.wavelengths("secondary")
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    make_test_model(path, n_secondary=secondary.size, n_primary=primary.size, n_latent=6, n_clusters=5,
                    baseline_window=5, seed=3)
    model = onnx.load(path)
    axes = {"twinplume.primary_wavelengths": primary, "twinplume.secondary_wavelengths": secondary}
    for prop in model.metadata_props:
        if prop.key in axes:
            prop.value = json.dumps(axes[prop.key].tolist())
    onnx.save(model, path)
    return path


def truth(model: Path, small_map: Path) -> dict[str, np.ndarray]:
    """What the model makes of every spot's secondary spectrum, by ONNX Runtime directly, [ny, nx, ...]."""
    from acquisition.store import PairedMapReader

    with PairedMapReader(small_map) as reader:
        chunk = reader.read_all()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    primary, label = session.run(["primary", "label"], {"secondary": chunk.spectra["secondary"]})
    out = {"label": np.full(SHAPE, -1, np.int64), "primary": np.zeros((*SHAPE, primary.shape[1]), np.float32),
           "measured": np.zeros((*SHAPE, chunk.spectra["primary"].shape[1]), np.float32)}
    out["label"][chunk.iy, chunk.ix] = label
    out["primary"][chunk.iy, chunk.ix] = primary
    out["measured"][chunk.iy, chunk.ix] = chunk.spectra["primary"]
    return out


@needs_browser
def test_page_shows_the_live_map_the_spectra_and_the_worker_going_away(map_model, small_map, tmp_path):
    worker = WorkerProcess(map_model, tmp_path)
    view = ViewProcess(tmp_path, "--results", worker.output, "--control", worker.control, "--map", str(small_map))
    view.wait_subscribed()
    browser = start_browser(*BROWSER, temp_dir=tmp_path)
    try:
        browser.get(view.url)
        wait_for(lambda: browser.execute_script("return window.viewStats.snapshots") >= 1, 30, "the first snapshot")
        subprocess.run([sys.executable, "-m", "streaming.cli", "send", str(small_map), "--input", worker.input,
                        "--output", worker.output,
                        "--control", worker.control, "--rate", "200"], check=True, capture_output=True, timeout=60)
        n = SHAPE[0] * SHAPE[1]
        wait_for(lambda: browser.execute_script("return window.viewStats.shown") == n, 30, "every spot on the page")

        expected = truth(map_model, small_map)
        shown = np.array(browser.execute_script("return window.viewStats.labelMap()")).reshape(SHAPE)
        np.testing.assert_array_equal(shown, expected["label"])
        emission = np.array(browser.execute_script("return window.viewStats.emissionMap()"), float).reshape(SHAPE)
        np.testing.assert_allclose(emission, expected["primary"].sum(axis=2), rtol=1e-4)

        # hover one spot: its three curves, the transferred one as the model makes it
        from selenium.webdriver.common.action_chains import ActionChains
        canvas = browser.find_element("id", "map-label")
        width, height = canvas.size["width"], canvas.size["height"]
        iy, ix = 4, 5
        ActionChains(browser).move_to_element_with_offset(
            canvas, int((ix + 0.5) * width / SHAPE[1] - width / 2), int((iy + 0.5) * height / SHAPE[0] - height / 2)
        ).perform()
        spot = wait_for(lambda: browser.execute_script(
            "const s = window.viewStats; return s.spot && s.spot[0] === %d && s.spot[1] === %d && s.spotData"
            % (iy, ix)), 15, f"the spectra of spot ({iy}, {ix})")
        assert browser.execute_script("return window.viewStats.spotCurves") == [
            "transferred", "measured primary", "secondary"]
        assert spot["label"] == expected["label"][iy, ix]
        np.testing.assert_allclose(spot["curves"]["transferred"]["y"], expected["primary"][iy, ix], atol=0.01)
        assert len(spot["curves"]["measured primary"]["y"]) == expected["measured"].shape[2]
        # the transfer error against the measured primary, as the acquisition's drift monitor computes it
        from acquisition.shared.drift import DriftMonitor
        error = wait_for(lambda: browser.execute_script(
            "return fetch('api/spot?iy=%d&ix=%d').then(r => r.json()).then(s => s.error)" % (iy, ix)), 15,
            "the spot's transfer error")
        reference, _ = DriftMonitor().measure(expected["primary"][iy, ix][None], expected["measured"][iy, ix][None])
        assert error == pytest.approx(float(reference[0]), rel=1e-5)
        assert browser.find_elements("css selector", "#spectrum-plot .u-series")  # uPlot drew its series
        wait_for(lambda: browser.execute_script("return window.viewStats.banner") == "map complete", 10,
                 "the map-complete banner")
        browser.save_screenshot(str(tmp_path / "view-live.png"))
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors                               # no script error on the page

        # the worker goes away: the page says so
        worker.stop(signal.SIGTERM)
        banner = wait_for(lambda: browser.execute_script("return window.viewStats.banner").startswith("worker gone")
                          and browser.find_element("id", "banner").text, 20, "the worker-gone banner")
        assert worker.output in banner
        assert browser.find_element("id", "banner").get_attribute("class") == "banner error"
        browser.save_screenshot(str(tmp_path / "view-worker-gone.png"))
        assert (tmp_path / "view-worker-gone.png").stat().st_size > 10_000
    finally:
        browser.quit()
        view.stop()
        worker.stop()
