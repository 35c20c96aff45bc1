"""The documents a map run emits, and the router that hands them to subscribers.

Modelled on Bluesky's document model, kept small: one ``RunStart`` once the map
file is ready (what the run is: grid, systems and wavelength axes, settings,
instrument settings), a ``SpotBatch`` for every group of spots recorded (only
after the store holds them, so a subscriber never sees a spot a crash could
lose), and one ``RunStop`` on every exit path once the file is closed (the
summary, and why the run ended). Subscribers are plain callables; one that
raises is logged and counted, never allowed to stop the run or to keep the
others from their documents.

    def show(doc):
        if isinstance(doc, SpotBatch):
            print(len(doc), "spots, first shot", doc.shot_id[0])
    acquire_map("map.h5", settings, config, subscribers=[show])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np

from acquisition.store import MapLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStart:
    path: str
    layout: MapLayout
    systems: tuple[str, ...]
    wavelengths: dict[str, np.ndarray]       # nm, per system
    settings: dict[str, Any]                 # AcquisitionSettings as stored in the map
    instrument: dict[str, dict]              # as written under /entry/instrument (new maps)
    resumed: bool


@dataclass(frozen=True)
class SpotBatch:
    """Spots recorded together (a fly run, a step-mode spot), every array in the same order."""

    iy: np.ndarray                           # int64 [k]
    ix: np.ndarray                           # int64 [k]
    shot_id: np.ndarray                      # int64 [k]
    timestamp: np.ndarray                    # float64 [k], s (the trigger of the shot)
    position_um: np.ndarray                  # float64 [k, 2], (x, y)
    spectra: dict[str, np.ndarray]           # float32 [k, n_pixels] per system

    def __len__(self) -> int:
        return int(self.iy.size)


@dataclass(frozen=True)
class RunStop:
    summary: dict                            # MapSummary.as_dict()
    exit_status: str                         # "complete", "gaps", "aborted" or "failed"
    reason: str = ""                         # what stopped it, when it did not run to its end


Document = Union[RunStart, SpotBatch, RunStop]
Subscriber = Callable[[Document], None]


@dataclass
class DocumentRouter:
    subscribers: list[Subscriber] = field(default_factory=list)
    failures: int = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def emit(self, document: Document) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber(document)
            except Exception:  # a subscriber's bug must not stop the laser's map
                self.failures += 1
                log.exception("document subscriber %r failed on %s", subscriber, type(document).__name__)


__all__ = ["Document", "DocumentRouter", "RunStart", "RunStop", "SpotBatch", "Subscriber"]
