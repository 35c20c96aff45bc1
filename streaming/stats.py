"""Rolling throughput and latency figures, shared by the worker's status and the viewers."""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class RateWindow:
    """Counts and latencies over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 2.0, max_samples: int = 100_000):
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._latencies: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, count: int, latency_s: float | None = None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._events.append((now, count))
        if latency_s is not None:
            self._latencies.append((now, latency_s))

    def _trim(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._events and self._events[0][0] < cutoff:
            self._events.popleft()
        while self._latencies and self._latencies[0][0] < cutoff:
            self._latencies.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        return sum(c for _, c in self._events) / self.window_s

    def mean_count(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        self._trim(now)
        return sum(c for _, c in self._events) / len(self._events) if self._events else None

    def latency(self, now: float | None = None) -> dict[str, float | None]:
        now = time.monotonic() if now is None else now
        self._trim(now)
        return percentiles([lat for _, lat in self._latencies])


def percentiles(values) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=float), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(np.max(values))}
