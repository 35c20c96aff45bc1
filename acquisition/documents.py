"""The documents a map run emits, and the router that hands them to subscribers.

Modelled on Bluesky's document model, kept small: one ``RunStart`` once every
instrument is ready and before anything fires (what the run is: grid, systems
and wavelength axes, settings, instrument settings, the derived groups the map
gets), a ``SpotBatch`` for every group of spots recorded, ``SpotResults`` for
results derived from spots (live transfer), ``SpotErrors`` for those results
measured against the spectra of the same shot (the drift monitor), and one
``RunStop`` on every exit path (the summary, and why the run ended).

The router has one *store*, the map file's writer (acquisition.recorder): it is
delivered every document first, so the file exists before any other subscriber
hears of the run and a spot is safe on disk before any subscriber sees it, and
its failures stop the run. On ``RunStop`` it closes the file before the others
are told. Other subscribers are plain callables; one that raises is logged and
counted, never allowed to stop the run or to keep the others from their
documents. Before ``RunStop`` the run calls :meth:`DocumentRouter.drain`: a
subscriber with a ``drain()`` method gives out what it still holds (the live
client's last results), then the store commits. A subscriber with a
``connect(emit)`` method is handed the router's ``emit`` to send documents of
its own (``SpotResults``, ``SpotErrors``); a document emitted while another is being delivered
is delivered right after it, on the same thread.

    def show(doc):
        if isinstance(doc, SpotBatch):
            print(len(doc), "spots, first shot", doc.shot_id[0])
    acquire_map("map.h5", settings, config, subscribers=[show])
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
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
    # Derived groups the map must hold before writing starts ({"transferred": n_pixels or an axis}):
    # nothing can be created in a file once it is in SWMR mode.
    derived: dict[str, Any] | None = None
    true_positions: bool = False             # the simulated bench knows where each shot hit
    # The model behind each derived group, as its worker describes it (the control "model" reply:
    # axes, baseline windows), where known before the run: how a derived result compares with the
    # measured spectra.
    models: dict[str, dict] | None = None


@dataclass(frozen=True)
class SpotBatch:
    """Spots recorded together (a fly run, a step-mode spot), every array in the same order."""

    iy: np.ndarray                           # int64 [k]
    ix: np.ndarray                           # int64 [k]
    shot_id: np.ndarray                      # int64 [k]
    timestamp: np.ndarray                    # float64 [k], s (the trigger of the shot)
    position_um: np.ndarray                  # float64 [k, 2], (x, y)
    spectra: dict[str, np.ndarray]           # float32 [k, n_pixels] per system
    # Simulated bench only: where each shot really hit, (x, y) µm [k, 2], NaN where unknown.
    true_position_um: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.iy.size)


@dataclass(frozen=True)
class SpotResults:
    """Results derived from spots already recorded (live transfer), for ``/entry/<group>``."""

    iy: np.ndarray                           # int64 [k]
    ix: np.ndarray                           # int64 [k]
    spectra: np.ndarray                      # float32 [k, n]: transferred primary spectra
    label: np.ndarray                        # int [k], k-means cluster
    novelty: np.ndarray                      # float32 [k]
    model_id: str = ""
    expected_rel_error: np.ndarray | None = None    # float32 [k], the model's own estimate
    group: str = "transferred"
    shot_id: np.ndarray | None = None               # int64 [k], the shot each result was made from, -1: unknown

    def __len__(self) -> int:
        return int(self.iy.size)


@dataclass(frozen=True)
class SpotErrors:
    """Derived results measured against the spectra measured at the same shot (the drift monitor),
    for ``/entry/<group>/live_relative_error`` and ``live_cosine_distance``."""

    iy: np.ndarray                           # int64 [k]
    ix: np.ndarray                           # int64 [k]
    relative_error: np.ndarray               # float32 [k], ||y_hat - y|| / ||y||, NaN: not compared
    cosine_distance: np.ndarray              # float32 [k], 1 - cos(y_hat, y)
    group: str = "transferred"
    # the monitor after these spots: mean relative error of the recent window, and drift (None: not yet)
    recent_relative_error: float | None = None
    drift: float | None = None

    def __len__(self) -> int:
        return int(self.iy.size)


@dataclass(frozen=True)
class RunStop:
    summary: dict                            # MapSummary.as_dict()
    exit_status: str                         # "complete", "gaps", "aborted" or "failed"
    reason: str = ""                         # what stopped it, when it did not run to its end


Document = Union[RunStart, SpotBatch, SpotResults, SpotErrors, RunStop]
Subscriber = Callable[[Document], None]


class DocumentRouter:
    """Delivers each document to the store first, then to every subscriber in turn."""

    def __init__(self, store: Subscriber | None = None, subscribers=()) -> None:
        self.store = store
        self.subscribers: list[Subscriber] = []
        self.failures = 0
        self._pending: deque = deque()
        self._delivering = False
        for subscriber in subscribers:
            self.subscribe(subscriber)

    def subscribe(self, subscriber: Subscriber) -> None:
        connect = getattr(subscriber, "connect", None)
        if callable(connect):
            connect(self.emit)
        self.subscribers.append(subscriber)

    def emit(self, document: Document) -> None:
        """Deliver ``document``; the store's failure propagates (the run stops), others' do not."""
        self._pending.append(document)
        if self._delivering:
            return      # emitted by a subscriber: delivered once the current document is
        self._delivering = True
        try:
            while self._pending:
                self._deliver(self._pending.popleft())
        except BaseException:
            self._pending.clear()
            raise
        finally:
            self._delivering = False

    def _deliver(self, document: Document) -> None:
        store_failure = None
        if self.store is not None:
            try:
                self.store(document)
            except BaseException as exc:
                if not isinstance(document, RunStop):
                    raise
                store_failure = exc      # the file did not close: everyone still hears the run ended
        for subscriber in self.subscribers:
            self._call(subscriber, document)
        if store_failure is not None:
            raise store_failure

    def _call(self, subscriber, document) -> None:
        try:
            subscriber(document)
        except Exception:  # a subscriber's bug must not stop the laser's map
            self.failures += 1
            log.exception("document subscriber %r failed on %s", subscriber, type(document).__name__)

    def drain(self) -> None:
        """Before RunStop: subscribers give out what they hold (their documents reach the store),
        then the store commits. Only the store's failure propagates."""
        for subscriber in list(self.subscribers):
            drain = getattr(subscriber, "drain", None)
            if callable(drain):
                try:
                    drain()
                except Exception:
                    self.failures += 1
                    log.exception("document subscriber %r failed to drain", subscriber)
        drain = getattr(self.store, "drain", None)
        if callable(drain):
            drain()


__all__ = ["Document", "DocumentRouter", "RunStart", "RunStop", "SpotBatch", "SpotErrors", "SpotResults",
           "Subscriber"]
