"""Terminal view of a live stream: the k-means label map as ANSI colour blocks, with rates and latency."""

from __future__ import annotations

import math
import shutil
import time

import numpy as np

from .protocol import MessageError, StreamMessage
from .results import TransferResult
from .stats import RateWindow

# xterm-256 background colours, chosen to stay distinguishable side by side
PALETTE = (196, 46, 21, 226, 201, 51, 208, 93, 118, 33, 214, 160, 40, 27, 220, 129)
EMPTY = 236
RESET = "\x1b[0m"
# redraw in place (home, draw, clear the rest) rather than clearing first, which flickers
HOME = "\x1b[H"
CLEAR_REST = "\x1b[K\n"
CLEAR_BELOW = "\x1b[J"
#: a map that grows as results arrive stops growing here: one stray index must not allocate
#: terabytes (results beyond it are counted as outside the map)
MAX_GROWN_SIDE = 4096


def frame(text: str) -> str:
    """One terminal redraw of ``text``."""
    return HOME + text.replace("\n", CLEAR_REST) + CLEAR_REST + CLEAR_BELOW


def cell(label: int) -> str:
    colour = EMPTY if label < 0 else PALETTE[label % len(PALETTE)]
    return f"\x1b[48;5;{colour}m  "


class LabelMapView:
    """Collects labels by (iy, ix) and renders them.

    With a ``shape`` the map is fixed and results outside it are counted, not drawn; without
    one it grows to the largest index seen, up to MAX_GROWN_SIDE on each side.
    """

    def __init__(self, shape: tuple[int, int] | None = None):
        self.labels = np.full(shape or (1, 1), -1, np.int32)
        self.fixed_shape = shape is not None
        self.spectra = 0
        self.without_position = 0
        self.outside = 0          # spectra whose (iy, ix) lies outside the map
        self.malformed = 0        # transfer messages that could not be read
        self.rate = RateWindow(window_s=2.0)
        self.worker_latency = RateWindow(window_s=5.0)
        self.end_to_end = RateWindow(window_s=5.0)
        self.model = ""
        self.errors = 0

    def add(self, message: StreamMessage) -> None:
        if message.topic == "error":
            self.errors += 1
            return
        if message.topic != "transfer":
            return
        try:
            result = TransferResult.from_message(message)
        except MessageError:
            self.malformed += 1
            return
        self.add_result(result)

    def add_result(self, result: TransferResult) -> None:
        k = result.k
        self.spectra += k
        self.model = result.model or self.model
        now = time.monotonic()
        self.rate.add(k, now=now)
        self.worker_latency.add(0, result.latency_s, now=now)
        if result.t is not None:
            self.end_to_end.add(0, time.time() - result.t, now=now)
        if not result.has_position:
            self.without_position += k
            return
        iy, ix = result.iy, result.ix
        if not self.fixed_shape:
            fits = (iy >= 0) & (ix >= 0) & (iy < MAX_GROWN_SIDE) & (ix < MAX_GROWN_SIDE)
            if fits.any():
                ny = max(self.labels.shape[0], int(iy[fits].max()) + 1)
                nx = max(self.labels.shape[1], int(ix[fits].max()) + 1)
                if (ny, nx) != self.labels.shape:
                    grown = np.full((ny, nx), -1, np.int32)
                    grown[: self.labels.shape[0], : self.labels.shape[1]] = self.labels
                    self.labels = grown
        inside = (iy >= 0) & (ix >= 0) & (iy < self.labels.shape[0]) & (ix < self.labels.shape[1])
        self.outside += int(k - inside.sum())
        self.labels[iy[inside], ix[inside]] = result.label[inside]

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
                f"end-to-end p50 {ms(e2e, 'p50')} p99 {ms(e2e, 'p99')} ms | gaps {gaps} errors {self.errors}"
                + (f" outside the map {self.outside}" if self.outside else "")
                + (f" unreadable {self.malformed}" if self.malformed else "")
                + f" | model {self.model or '-'}")

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
