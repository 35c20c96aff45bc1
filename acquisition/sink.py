"""The spot sink of ``acquire_map(on_spot=...)``: a user callback that can never stall the acquisition.

The map hands every recorded spot to ``offer()``, which only puts it on a
bounded queue; a worker thread calls the user's ``on_spot(iy, ix, shot_id,
spectra)``. When the consumer falls behind (a slow network, a stuck
subscriber) spots are dropped and counted, and an exception in the consumer is
logged and counted; neither reaches the acquisition loop.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Mapping

import numpy as np

log = logging.getLogger(__name__)

OnSpot = Callable[[int, int, int, Mapping[str, np.ndarray]], object]
_STOP = object()


class SpotSink:
    def __init__(self, on_spot: OnSpot, *, max_pending: int = 4096) -> None:
        self._on_spot = on_spot
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="spot-sink", daemon=True)
        self._thread.start()

    def offer(self, iy: int, ix: int, shot_id: int, spectra: Mapping[str, np.ndarray]) -> None:
        try:
            self._queue.put_nowait((iy, ix, shot_id, spectra))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._on_spot(*item)
                self.delivered += 1
            except Exception as exc:  # a consumer's failure must not reach the acquisition
                self.failed += 1
                if self.failed == 1 or self.failed % 1000 == 0:
                    log.warning("spot sink failed on spot (%d, %d) (%d failure(s) so far): %s",
                                item[0], item[1], self.failed, exc)

    def close(self, timeout_s: float = 2.0) -> None:
        """Let the consumer take what is queued (up to ``timeout_s``), then stop the worker."""
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("spot sink: consumer still busy; %d spot(s) not delivered", self._queue.qsize())
            return
        self._thread.join(timeout_s)
        if self.dropped:
            log.warning("spot sink: %d spot(s) dropped because the consumer fell behind", self.dropped)
