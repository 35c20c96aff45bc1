"""MapRecorder: the map file's writer as the run's store subscriber.

During a run this is the only code that writes the map file. ``RunStart``
creates it (instrument settings, the simulated bench's truth, the derived
groups the live client asked for: nothing can be created once the file is in
SWMR mode) or resumes it (a missing derived group is created first, while no
writer holds the file). ``SpotBatch`` writes the spots, journal first, and
where the shots really hit on a simulated bench; a failed write raises
MapWriteError and, the recorder being the router's store, stops the run.
``SpotResults`` go into ``/entry/<group>`` while the file is open; they never
stop the run (raw data wins), and results the file could not take are saved
beside it (``MAP.h5.transferred.npz``) once it is closed. ``SpotErrors`` (the
drift monitor's per-spot errors) are kept until ``RunStop``. ``drain()``
commits; ``RunStop`` finishes the map (``/entry/end_time``, only when every
spot is acquired) or closes it resumable, then records the per-spot live errors
and the live summary (acquisition.live_record), which need new objects.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from acquisition.documents import RunStart, RunStop, SpotBatch, SpotErrors, SpotResults
from acquisition.live_record import ERROR_DATASETS, write_extras
from acquisition.store import (MapLayout, PairedMapError, PairedMapReader, PairedMapWriter, finite_threshold,
                               write_transferred, write_transferred_trust)
from acquisition.store.derived import TRANSFERRED
from acquisition.store.h5files import open_for_reading

log = logging.getLogger(__name__)


def recover_prior_run(path, layout: MapLayout, wavelengths) -> tuple[tuple[str, ...], int]:
    """Before a resumed run: write what a killed writer left in the journal into the file, and
    return the map's systems and its next free shot id (ids stay unique within a map across runs)."""
    PairedMapWriter.resume(path, layout=layout, wavelengths=wavelengths).close()
    with PairedMapReader(path) as reader:
        return tuple(reader.systems), int(reader.scan_values("shot_id").max()) + 1


class MapRecorder:
    def __init__(self, path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.writer: PairedMapWriter | None = None
        self._shape: tuple[int, int] | None = None
        self._errors: dict[str, np.ndarray] = {}     # per-spot live errors of this run, NaN: none
        self._trust: np.ndarray | None = None        # per-spot expected_rel_error of this run, NaN: none
        self._model_id = ""
        self._unwritten: list[SpotResults] = []
        self.results_written = 0

    # ------------------------------------------------------------------ state the run reads

    @property
    def n_acquired(self) -> int:
        return self.writer.n_acquired if self.writer is not None else 0

    @property
    def n_in_file(self) -> int:
        return self.writer.n_in_file if self.writer is not None else 0

    @property
    def failure(self) -> str | None:
        return self.writer.failure if self.writer is not None else None

    def missing(self) -> np.ndarray:
        return self.writer.missing()

    # ------------------------------------------------------------------ documents

    def __call__(self, document) -> None:
        if isinstance(document, SpotBatch):
            self._spots(document)
        elif isinstance(document, SpotResults):
            self._results(document)
        elif isinstance(document, SpotErrors):
            self._spot_errors(document)
        elif isinstance(document, RunStart):
            self._start(document)
        elif isinstance(document, RunStop):
            self._stop(document)

    def _start(self, start: RunStart) -> None:
        layout, wavelengths = start.layout, start.wavelengths
        self._shape = layout.shape
        if start.resumed:
            self._create_missing_groups(start.derived or {})
            self.writer = PairedMapWriter.resume(self.path, layout=layout, wavelengths=wavelengths)
            return
        self.writer = PairedMapWriter.create(
            self.path, layout, wavelengths, title=start.settings.get("title", ""),
            sample_name=start.settings.get("sample_name", ""), instrument=start.instrument,
            overwrite=self.overwrite, derived=start.derived,
            sample_truth={"true_position": None} if start.true_positions else None)

    def _create_missing_groups(self, derived: dict) -> None:
        f, _ = open_for_reading(self.path, live=False)
        with f:
            missing = {name: spec for name, spec in derived.items() if name not in f["entry"]}
        for name, spec in missing.items():
            if name != TRANSFERRED:    # the store creates groups after the fact for live transfer only
                raise ValueError(f"{self.path}: derived group {name!r} cannot be added to a resumed map")
            n = int(np.size(spec) if np.ndim(spec) else spec)
            # zero spots: the group with its fill values, on the primary's axis or its own
            write_transferred(self.path, [], [], np.zeros((0, n), np.float32), [], [],
                              wavelengths=None if np.ndim(spec) == 0 else spec)

    def _spots(self, batch: SpotBatch) -> None:
        self.writer.write_spots(batch.iy, batch.ix, batch.spectra, batch.shot_id, batch.timestamp,
                                batch.position_um)
        if batch.true_position_um is not None and self.writer.has_true_positions:
            self.writer.write_true_positions(batch.iy, batch.ix, batch.true_position_um)

    def _spot_errors(self, errors: SpotErrors) -> None:
        if self._shape is None or errors.group != TRANSFERRED:
            return
        for name in ERROR_DATASETS:
            values = self._errors.setdefault(name, np.full(self._shape, np.nan, np.float32))
            values[errors.iy, errors.ix] = getattr(errors, name.removeprefix("live_"))

    def _results(self, results: SpotResults) -> None:
        self._model_id = results.model_id or self._model_id
        if results.expected_rel_error is not None and self._shape is not None and results.group == TRANSFERRED:
            if self._trust is None:
                self._trust = np.full(self._shape, np.nan, np.float32)
            self._trust[results.iy, results.ix] = results.expected_rel_error
        if self.writer is None or self.writer.failure is not None:
            self._unwritten.append(results)
            return
        try:
            self.writer.write_derived(results.group, results.iy, results.ix, spectra=results.spectra,
                                      label=results.label, novelty=results.novelty)
            self.results_written += len(results)
        except Exception as exc:  # raw data wins: the next spot write says what failed, if it did
            log.error("%s: live results not written into the map: %s", self.path, exc)
            self._unwritten.append(results)

    def drain(self) -> None:
        """Commit what is written so far (after a failed write, nothing more is written)."""
        if self.writer is not None and self.writer.failure is None:
            self.writer.flush()

    def _stop(self, stop: RunStop) -> None:
        if self.writer is None:
            return
        writer = self.writer
        # Only a map with every spot acquired is finished; one with gaps stays resumable.
        if writer.failure is None and writer.n_acquired == writer.layout.shape[0] * writer.layout.shape[1]:
            writer.finish()
        else:
            writer.close()
        self._save_unwritten()
        live = stop.summary.get("live") or {}
        if live and writer.failure is None:
            write_extras(self.path, model_id=self._model_id or live.get("model"), errors=self._errors,
                         drift=live.get("drift"), report=live)
            self._write_trust(live.get("trust_threshold"))

    def _write_trust(self, threshold) -> None:
        """The live expected_rel_error and the untrusted flag (above the model's threshold) of this
        run's spots, once the writer has closed; nothing without a trust score or a threshold."""
        if self._trust is None:
            return
        threshold = finite_threshold(threshold)
        if threshold is None:
            log.warning("%s: the live results carry expected_rel_error but the model names no trust threshold; "
                        "not recorded (libs-transfer predict writes it afterwards)", self.path)
            return
        iy, ix = np.nonzero(np.isfinite(self._trust))
        try:
            write_transferred_trust(self.path, iy, ix, self._trust[iy, ix], threshold)
        except (OSError, PairedMapError) as exc:    # the map itself is closed and safe
            log.error("%s: the live expected_rel_error was not recorded: %s", self.path, exc)

    def _save_unwritten(self) -> None:
        if not self._unwritten:
            return
        parts, self._unwritten = self._unwritten, []
        fallback = self.path.with_name(self.path.name + ".transferred.npz")
        try:
            np.savez(fallback, iy=np.concatenate([p.iy for p in parts]), ix=np.concatenate([p.ix for p in parts]),
                     spectra=np.concatenate([p.spectra for p in parts]),
                     label=np.concatenate([p.label for p in parts]),
                     novelty=np.concatenate([p.novelty for p in parts]), model_id=self._model_id)
            log.error("%s: %d live result(s) the map could not take are saved in %s", self.path,
                      sum(len(p) for p in parts), fallback)
        except OSError as exc:
            log.error("%s: %d live result(s) the map could not take are lost: %s", self.path,
                      sum(len(p) for p in parts), exc)


__all__ = ["MapRecorder", "recover_prior_run"]
