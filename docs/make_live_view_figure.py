"""docs/figures/live_view.png: the live view during a real live map on the simulated bench.

Starts `libs-stream serve` on an exported model, acquires a map on the simulated bench in
real time with `libs-acquire map --live ADDR --view`, opens the printed URL in headless
Chromium (the browser tests' tooling), hovers a spot once most of the map is in and saves
the page.

Run: .venv/bin/python docs/make_live_view_figure.py MODEL.onnx [--shape 40x40] [--rate 60]
(MODEL.onnx: e.g. demo-out/model.onnx from `make demo`). The figure in the README was taken with
a VAE + MLP model trained and exported on simulated maps of day 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.streaming.conftest import WorkerProcess  # noqa: E402
from tests.streaming.viewtools import find_browser, start_browser, wait_for  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--shape", default="40x40")
    parser.add_argument("--rate", type=float, default=60.0)
    parser.add_argument("--fraction", type=float, default=0.8, help="hover and shoot once this share is in")
    parser.add_argument("--spot", default="12,20", help="iy,ix to hover")
    parser.add_argument("--out", default=str(ROOT / "docs/figures/live_view.png"))
    args = parser.parse_args()
    found = find_browser()
    if found is None:
        raise SystemExit("needs chromium + chromedriver")
    ny, nx = (int(v) for v in args.shape.split("x"))
    iy, ix = (int(v) for v in args.spot.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        worker = WorkerProcess(Path(args.model), tmp)
        acquire = subprocess.Popen(
            [sys.executable, "-m", "acquisition.cli", "map", "--sim", "--day", "1", "--seed", "1", "--shape",
             args.shape, "--step-um", "20", "--origin-um", "7500,6500", "--realtime", "--rate", str(args.rate),
             "--out", str(tmp / "live.h5"), "--live", worker.input, "--live-results", worker.output,
             "--live-control", worker.control, "--view", "--view-port", "0", "--no-progress"],
            stdout=subprocess.PIPE, text=True)
        browser = start_browser(*found, width=1400, height=1400)
        try:
            url = acquire.stdout.readline().split()[2]
            browser.get(url)
            wait_for(lambda: browser.execute_script("return window.viewStats.shown") >= args.fraction * ny * nx,
                     600, "most of the map")
            from selenium.webdriver.common.action_chains import ActionChains
            canvas = browser.find_element("id", "map-label")
            w, h = canvas.size["width"], canvas.size["height"]
            ActionChains(browser).move_to_element_with_offset(
                canvas, int((ix + 0.5) * w / nx - w / 2), int((iy + 0.5) * h / ny - h / 2)).perform()
            wait_for(lambda: len(browser.execute_script("return window.viewStats.spotCurves")) == 3, 30, "spectra")
            time.sleep(1.5)   # one more health update on the page
            browser.save_screenshot(args.out)
            print(json.dumps({"figure": args.out, "url": url,
                              "shown": browser.execute_script("return window.viewStats.shown")}))
        finally:
            browser.quit()
            acquire.wait(600)
            worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
