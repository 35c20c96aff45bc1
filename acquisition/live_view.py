"""`libs-acquire map --live ADDR --view`: start `libs-stream view` on the worker and the map being written.

The view runs in its own process (a busy page never slows the acquisition) and stops with
the map command, also when that command is killed (the view stops when its stdin closes). It reads the map through SWMR, so it waits for the file the acquisition
is about to create.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.request import urlopen

from acquisition.config import ConfigError
from acquisition.live import CLIENT_SECRET_KEY, WORKER_PUBLIC_KEY, LiveOptions

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
SUBSCRIBE_TIMEOUT_S = 5.0


class LiveViewProcess:
    """The view's process; ``url`` is the page to open."""

    def __init__(self, command: list[str]):
        # the view's stdin is a pipe only this process holds open: when this process ends, however it
        # ends (kill -9 included), the pipe closes and the view stops itself (--stop-with-stdin)
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.url = self._read_url()
        self._await_subscription()
        # keep draining its output so that a chatty view can never block on a full pipe
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()

    def _read_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("live view: "):
                return line.split()[2]
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        problem = self.proc.stderr.read().strip().splitlines()
        raise ConfigError(f"--view: the live view did not start: {problem[-1] if problem else 'no output'}")

    def _await_subscription(self) -> None:
        """Until the view has heard from the worker, so that it sees the map's first results too."""
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urlopen(self.url.split("?")[0] + "api/stats", timeout=1) as reply:
                    if json.loads(reply.read()).get("contact"):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        log.warning("the live view has not heard from the worker yet; it may miss the first results")

    @staticmethod
    def _drain(stream) -> None:
        for line in stream:
            log.debug("view: %s", line.rstrip())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def view_command(options: LiveOptions, map_path: Path, shape: tuple[int, int] | None, port: int) -> list[str]:
    options = options.resolved()
    command = [sys.executable, "-m", "streaming.cli", "view", "--results", options.results, "--control",
               options.control, "--map", str(map_path), "--wait-for-map", "--port", str(port), "--stop-with-stdin"]
    if shape is not None:
        command += ["--shape", f"{shape[0]}x{shape[1]}"]
    if options.keys_dir is not None:
        folder = Path(options.keys_dir)
        secret = next((p for p in (folder / CLIENT_SECRET_KEY, folder / "clients" / CLIENT_SECRET_KEY)
                       if p.is_file()), folder / CLIENT_SECRET_KEY)
        command += ["--curve-secret", str(secret), "--curve-server", str(folder / WORKER_PUBLIC_KEY)]
    return command


def start_live_view(options: LiveOptions, map_path: Path, shape: tuple[int, int] | None, *, port: int = 8050,
                    announce=print) -> LiveViewProcess:
    """Start the view on the worker's output and ``map_path``, print its URL; ConfigError if it cannot start."""
    view = LiveViewProcess(view_command(options, map_path, shape, port))
    announce(f"live view: {view.url}")
    return view
