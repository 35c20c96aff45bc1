"""Progress of a map: spots done, rate, ETA, missed and re-shot counts."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from acquisition.documents import RunStop, SpotBatch
from acquisition.shared.progress import Progress


@dataclass(frozen=True)
class ProgressSnapshot:
    total: int
    done: int                 # spots acquired, including those found done on resume
    done_this_run: int
    missed: int               # shots a system did not see (each left a gap or caused a re-shot)
    reshot: int               # step mode: extra shots fired to fill a gap
    unfilled: int             # spots left with acquired = 0 at the end of their pass
    elapsed_s: float
    rate_spots_s: float
    eta_s: float | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class MapProgress:
    """Counts what happens to spots and shows it on a progress bar (stderr).

    A subscriber of the run's documents: each SpotBatch counts its spots done, RunStop closes
    the bar. Given the map's ``shape``, a spot recorded again in the same run (a fly run shot
    again at rest, which replaces what it recorded) counts once. Missed shots, re-shots and
    unfilled spots are counted by the scan that sees them.
    """

    def __init__(self, total: int, done: int = 0, *, show: bool = True, desc: str = "map",
                 shape: tuple[int, int] | None = None):
        self.total = total
        self._start_done = done
        self._recorded = np.zeros(shape, dtype=bool) if shape is not None else None   # this run
        self.done = done
        self.missed = 0
        self.reshot = 0
        self.unfilled = 0
        self._t0 = time.monotonic()
        self._bar = Progress(total, desc=desc, unit="spot", initial=done, enabled=show)

    def __call__(self, document) -> None:
        if isinstance(document, SpotBatch):
            self.spots_done(self._new_spots(document))
        elif isinstance(document, RunStop):
            self.close()

    def _new_spots(self, batch: SpotBatch) -> int:
        if self._recorded is None:
            return len(batch)
        fresh = ~self._recorded[batch.iy, batch.ix]
        self._recorded[batch.iy, batch.ix] = True
        if fresh.sum() <= 1:
            return int(fresh.sum())
        return len(set(zip(batch.iy[fresh].tolist(), batch.ix[fresh].tolist())))

    def spots_done(self, n: int = 1) -> None:
        self.done += n
        self._bar.update(n)

    def shots_missed(self, n: int = 1) -> None:
        self.missed += n
        self._refresh_postfix()

    def shots_reshot(self, n: int = 1) -> None:
        self.reshot += n
        self._refresh_postfix()

    def spots_unfilled(self, n: int = 1) -> None:
        self.unfilled += n
        self._refresh_postfix()

    def _refresh_postfix(self) -> None:
        self._bar.set_postfix(missed=self.missed, reshot=self.reshot, gaps=self.unfilled, refresh=False)

    def snapshot(self) -> ProgressSnapshot:
        elapsed = time.monotonic() - self._t0
        this_run = self.done - self._start_done
        rate = this_run / elapsed if elapsed > 0 else 0.0
        remaining = self.total - self.done
        eta = remaining / rate if rate > 0 else None
        return ProgressSnapshot(self.total, self.done, this_run, self.missed, self.reshot,
                                self.unfilled, elapsed, rate, eta)

    def close(self) -> None:
        self._bar.close()
