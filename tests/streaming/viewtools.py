"""Helpers for the live-view tests and bench/view.py: a view process and a headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver", "chromium-driver")


def find_browser() -> tuple[str, str] | None:
    """(browser, driver) executables, or None where this machine has no Chromium + driver."""
    browser = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    driver = next((shutil.which(n) for n in DRIVER_NAMES if shutil.which(n)), None)
    return (browser, driver) if browser and driver else None


def start_browser(browser: str, driver: str, width: int = 1500, height: int = 1150, *, temp_dir: Path | None = None):
    """A headless Chromium under Selenium. ``temp_dir``: where its profile and temporary files
    go (the caller's temporary folder), so that nothing of it is left in /tmp."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding"):
        options.add_argument(arg)
    env = None
    if temp_dir is not None:
        options.add_argument(f"--user-data-dir={temp_dir / 'chromium-profile'}")
        env = {**os.environ, "TMPDIR": str(temp_dir)}
    options.binary_location = browser
    return webdriver.Chrome(options=options, service=Service(driver, env=env))


class ViewProcess:
    """`libs-stream view` in a subprocess on a free loopback port; ``url`` is the page it printed."""

    def __init__(self, workdir: Path, *args: str, timeout_s: float = 30):
        self.log_path = workdir / f"view-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "streaming.cli", "view", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline()
            if line.startswith("live view: "):
                break
        if not line.startswith("live view: "):
            self.stop()
            raise RuntimeError(f"the view did not start: {line!r} {self.log()}")
        self.url = line.split()[2]

    def wait_subscribed(self, timeout_s: float = 20) -> None:
        """Until the view has heard from a worker: from then on it misses nothing published."""
        wait_for(lambda: self.stats()["contact"], timeout_s, "the view's subscription to the worker")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stats(self) -> dict:
        from urllib.request import urlopen

        with urlopen(self.url.split("?")[0] + "api/stats", timeout=5) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    """predicate()'s first truthy value within ``timeout_s``; AssertionError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {value!r})")


def percentile(values, q: float) -> float | None:
    return None if len(values) == 0 else float(np.percentile(np.asarray(values, float), q))
