"""Terminal view of a live stream: the k-means label map as ANSI colour blocks, with rates and latency."""

from __future__ import annotations

import math
import shutil
import time

import numpy as np

from .protocol import StreamMessage
from .stats import RateWindow

# xterm-256 background colours, chosen to stay distinguishable side by side
PALETTE = (196, 46, 21, 226, 201, 51, 208, 93, 118, 33, 214, 160, 40, 27, 220, 129)
EMPTY = 236
RESET = "\x1b[0m"
# redraw in place (home, draw, clear the rest) rather than clearing first, which flickers
HOME = "\x1b[H"
CLEAR_REST = "\x1b[K\n"
CLEAR_BELOW = "\x1b[J"


def frame(text: str) -> str:
    """One terminal redraw of ``text``."""
    return HOME + text.replace("\n", CLEAR_REST) + CLEAR_REST + CLEAR_BELOW


def cell(label: int) -> str:
    colour = EMPTY if label < 0 else PALETTE[label % len(PALETTE)]
    return f"\x1b[48;5;{colour}m  "


def _as_list(value, k: int) -> list:
    return value if isinstance(value, list) else [value] * k


class LabelMapView:
    """Collects labels by (iy, ix) and renders them; the map grows to the largest index seen."""

    def __init__(self, shape: tuple[int, int] | None = None):
        self.labels = np.full(shape or (1, 1), -1, np.int32)
        self.fixed_shape = shape is not None
        self.spectra = 0
        self.without_position = 0
        self.rate = RateWindow(window_s=2.0)
        self.worker_latency = RateWindow(window_s=5.0)
        self.end_to_end = RateWindow(window_s=5.0)
        self.model = ""
        self.errors = 0

    def add(self, message: StreamMessage) -> None:
        if message.topic == "error":
            self.errors += 1
            return
        header = message.header
        k = 1 if len(header["shape"]) == 1 else header["shape"][0]
        self.spectra += k
        self.model = header.get("model", self.model)
        now = time.monotonic()
        self.rate.add(k, now=now)
        self.worker_latency.add(0, header.get("latency_s"), now=now)
        if isinstance(header.get("t"), (int, float)):
            self.end_to_end.add(0, time.time() - header["t"], now=now)
        if "iy" not in header or "ix" not in header:
            self.without_position += k
            return
        iy = np.asarray(_as_list(header["iy"], k))
        ix = np.asarray(_as_list(header["ix"], k))
        labels = np.asarray(_as_list(header["label"], k))
        if not self.fixed_shape:
            ny, nx = max(self.labels.shape[0], iy.max() + 1), max(self.labels.shape[1], ix.max() + 1)
            if (ny, nx) != self.labels.shape:
                grown = np.full((ny, nx), -1, np.int32)
                grown[: self.labels.shape[0], : self.labels.shape[1]] = self.labels
                self.labels = grown
        inside = (iy < self.labels.shape[0]) & (ix < self.labels.shape[1])
        self.labels[iy[inside], ix[inside]] = labels[inside]

    def render(self, *, width: int | None = None, height: int | None = None, gaps: int = 0) -> str:
        size = shutil.get_terminal_size((120, 40))
        width, height = width or size.columns, height or size.lines
        ny, nx = self.labels.shape
        step = max(1, math.ceil(max(2 * nx / max(width, 2), ny / max(height - 4, 1))))
        shown = self.labels if step == 1 else _block_mode(self.labels, step)
        rows = ["".join(cell(int(v)) for v in row) + RESET for row in shown]
        rows.append(self.summary(gaps=gaps) + (f"  (1 block = {step}x{step} spots)" if step > 1 else ""))
        return "\n".join(rows)

    def summary(self, *, gaps: int = 0) -> str:
        def ms(p: dict, key: str) -> str:
            return "-" if p[key] is None else f"{1000 * p[key]:.2f}"

        worker = self.worker_latency.latency()
        e2e = self.end_to_end.latency()
        filled = int((self.labels >= 0).sum())
        return (f"{self.spectra} spectra, {filled}/{self.labels.size} spots, {self.rate.rate():.0f} spectra/s | "
                f"worker latency p50 {ms(worker, 'p50')} p99 {ms(worker, 'p99')} ms | "
                f"end-to-end p50 {ms(e2e, 'p50')} p99 {ms(e2e, 'p99')} ms | gaps {gaps} errors {self.errors} | "
                f"model {self.model or '-'}")

    def label_counts(self) -> dict[int, int]:
        values, counts = np.unique(self.labels[self.labels >= 0], return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


def _block_mode(labels: np.ndarray, step: int) -> np.ndarray:
    """The most common label of each step x step block (-1 where none is labelled yet)."""
    ny, nx = -(-labels.shape[0] // step), -(-labels.shape[1] // step)
    out = np.full((ny, nx), -1, np.int32)
    for by in range(ny):
        for bx in range(nx):
            block = labels[by * step:(by + 1) * step, bx * step:(bx + 1) * step]
            found = block[block >= 0]
            if found.size:
                out[by, bx] = np.bincount(found).argmax()
    return out
