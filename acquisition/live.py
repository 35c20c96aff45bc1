"""Live transfer during a map: `libs-acquire map ... --live ADDR`.

:class:`LiveTransfer` is a subscriber of the run's documents (acquisition.documents).
Each ``SpotBatch``'s secondary spectra go, one spot a message, into the one bounded queue
of a :class:`streaming.producer.LiveProducer`, whose one PUSH socket feeds the worker;
``submit()`` never blocks (with the worker away or slow, spectra are dropped, and
accounted for). The producer's one SUB socket on the worker's output confirms delivery
and hands this client its results, which are queued. The client emits them as
``SpotResults`` documents (with the shot each was made from) through the run's router,
from the acquisition thread (after a ``SpotBatch``, at most a few times a second, and when
the run drains before ``RunStop``), so the map's recorder is the one place results are
written. Comparing them with the measured primary is the drift monitor's, another
subscriber (acquisition.live_drift); this client's progress bar shows the figures of its
``SpotErrors``. Raw data always wins: a failure anywhere on the live path is logged and
reported, never raised into the map.

Without a map (a replay), drive it with the same documents:

    live = LiveTransfer(LiveOptions("tcp://127.0.0.1:5557"))
    router = DocumentRouter(subscribers=[live, results.append])
    router.emit(RunStart(...)); router.emit(SpotBatch(...)); router.drain(); router.emit(RunStop(...))
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from tqdm import tqdm

from acquisition.config import ConfigError
from acquisition.documents import RunStart, RunStop, SpotBatch, SpotErrors, SpotResults
from acquisition.live_record import GROUP, describe_runs, gap_report, read_earlier_run
from acquisition.shared.alignment import ShiftCheck, model_shift_check, shift_message
from acquisition.shared.drift import baseline_windows
from acquisition.shared.spectral import (DEFAULT_BASELINE_WINDOWS, AxisResampler, WavelengthMismatchError,
                                         baseline_correct, recalibration_resampler)
from acquisition.store import MapLayout
from streaming import control
from streaming.producer import LiveProducer
from streaming.protocol import MessageError, StreamMessage
from streaming.results import TransferResult
from streaming.security import ClientKeys, SecurityError, is_loopback

log = logging.getLogger(__name__)

WORKER_PUBLIC_KEY = "worker.key"
CLIENT_SECRET_KEY = "acquisition.key_secret"
WRITE_INTERVAL_S = 0.25
#: the secondary's lines are held against the model's over the first spots of a map (at most this
#: many; at least the second number, else no figure)
SHIFT_CHECK_SPOTS = 256
SHIFT_CHECK_MIN_SPOTS = 16


@dataclass(frozen=True)
class LiveOptions:
    input: str
    results: str | None = None          # default: the input's port + 1 (spec defaults 5557/5558/5559)
    control: str | None = None          # default: the input's port + 2
    keys_dir: Path | None = None        # worker.key + acquisition.key_secret (or clients/acquisition.key_secret)
    timeout_s: float = 5.0              # the worker's first answer; a result's deadline before it counts lost
    finish_timeout_s: float = 30.0      # the most the end of the map waits for outstanding results
    queue_size: int = 1024              # spectra buffered while the worker is away or slow
    # the map's drift monitor (acquisition.live_drift), which a map with --live gets:
    drift_window: int = 100             # spots in the reference (first) and recent (last) windows
    drift_threshold: float = 0.5        # warn when the recent error exceeds the reference by this fraction

    def resolved(self) -> "LiveOptions":
        """Defaults filled in and everything checked; ConfigError names the option at fault."""
        if self.results is None or self.control is None:
            match = re.fullmatch(r"tcp://(.+):(\d+)", self.input)
            if match is None:
                raise ConfigError(f"--live {self.input}: results and control addresses can only be derived from "
                                  "a tcp://HOST:PORT address; give --live-results and --live-control")
            host, port = match.group(1), int(match.group(2))
            options = replace(self, results=self.results or f"tcp://{host}:{port + 1}",
                              control=self.control or f"tcp://{host}:{port + 2}")
        else:
            options = self
        for name, value in (("--live-timeout", self.timeout_s), ("--live-drift-threshold", self.drift_threshold)):
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.drift_window < 1:
            raise ConfigError(f"--live-drift-window must be >= 1, got {self.drift_window}")
        exposed = [a for a in (options.input, options.results, options.control) if not is_loopback(a)]
        if exposed and self.keys_dir is None:
            raise ConfigError(f"{', '.join(exposed)} is not a loopback address: the stream must be encrypted; "
                              "give --keys DIR (make keys with `libs-stream keys`)")
        return options


def load_client_keys(keys_dir: str | os.PathLike) -> ClientKeys:
    """This client's CURVE keys from DIR: the worker's public ``worker.key`` and
    ``acquisition.key_secret`` (or ``clients/acquisition.key_secret``)."""
    folder = Path(keys_dir)
    server = folder / WORKER_PUBLIC_KEY
    secrets = [folder / CLIENT_SECRET_KEY, folder / "clients" / CLIENT_SECRET_KEY]
    secret = next((path for path in secrets if path.is_file()), None)
    if not server.is_file() or secret is None:
        raise ConfigError(f"--keys {folder}: needs the worker's public key {server} and this client's "
                          f"secret key {secrets[0]} or {secrets[1]} (make them with `libs-stream keys`)")
    try:
        return ClientKeys.load(secret, server)
    except SecurityError as exc:
        raise ConfigError(f"--keys {folder}: {exc}") from None



class LiveTransfer:
    """The live client of one map run; see the module docstring.

    ``prepare()`` while the run prepares, before anything fires: asks the worker for its
    model, checks it fits, and returns the derived groups the map must be created with
    (RunStart.derived). Then a subscriber: ``RunStart`` starts the stream, ``SpotBatch``
    streams its spots, ``drain()`` (before RunStop) waits, bounded, for outstanding results,
    emits them and accounts for every spot without one; ``summary()`` for the map summary.
    Only ``prepare()`` raises (ConfigError: a model that does not fit the spectrometers).
    """

    def __init__(self, options: LiveOptions, *, show_progress: bool = True):
        self.options = options.resolved()
        self.keys = load_client_keys(self.options.keys_dir) if self.options.keys_dir else None
        self.show_progress = show_progress
        self.model_info: dict | None = None
        self._emit: Callable | None = None
        self._producer: LiveProducer | None = None
        self._prepared = False
        self._ready: deque[tuple] = deque()        # results waiting to be emitted on the acquisition thread
        self._drift_figures: dict = {}              # the drift monitor's, from its latest SpotErrors
        self._seq_spot = array("q")                 # input seq -> flat spot index (8 bytes a spot)
        self._group_pixels: int | None = None
        self._model_axis: np.ndarray | None = None
        self._resample_secondary: AxisResampler | None = None
        self._lines: ShiftCheck | None = None          # where the secondary's lines sit against the model's
        self._shift_px: float | None = None
        self._secondary_axes: tuple[np.ndarray, np.ndarray] | None = None    # (the map's, the model's)
        self._alignment: dict | None = None             # the secondary aligned from its own lines, from a spot on
        self._alignment_ready: AxisResampler | None = None
        self._streamed = 0
        self._line_windows = DEFAULT_BASELINE_WINDOWS
        self._bar = None
        self._last_emit = 0.0
        self._last_log = time.monotonic()
        self._report: dict = {}
        self.errors: list[str] = []
        self.written = self.not_recorded = 0

    def connect(self, emit: Callable) -> None:
        """The run's router hands its emit() here: results go out as SpotResults through it."""
        self._emit = emit

    # ------------------------------------------------------------------ before the run

    def prepare(self, path, layout: MapLayout, wavelengths: Mapping[str, np.ndarray], *,
                resume: bool = False) -> dict | None:
        """Ask the worker for its model and check it fits; returns the derived groups the map needs
        (``{"transferred": n_pixels or axis}``), or None. On resume, reads what the map holds."""
        if "secondary" not in wavelengths:
            raise ConfigError("--live streams the secondary system's spectra; the map has no 'secondary'")
        shape = layout.shape
        self._received = np.zeros(shape, bool)
        self._submitted = np.zeros(shape, bool)
        self._acquired = np.zeros(shape, bool)            # spots recorded in this run
        self._acquired_before = np.zeros(shape, bool)
        self._had_result = np.zeros(shape, bool)
        self.model_info = info = self._ask_model(self.options.timeout_s)
        if info is not None:
            n_secondary = wavelengths["secondary"].size
            if int(info["n_secondary"]) != n_secondary:
                raise ConfigError(f"the worker's model {info.get('model')} takes {info['n_secondary']}-pixel "
                                  f"secondary spectra, but the secondary spectrometer has {n_secondary} pixels")
            self._check_secondary_axis(info, wavelengths["secondary"])
            self._lines = model_shift_check(info, SHIFT_CHECK_SPOTS)
            self._line_windows = baseline_windows(info, "secondary")
            if "primary_wavelengths" in info:
                self._model_axis = np.asarray(info["primary_wavelengths"], np.float64)
        spec = self._transferred_spec(wavelengths)
        if resume:
            self._read_resumed(Path(path))
        if self._group_pixels is None and spec is not None:
            self._group_pixels = int(np.size(spec) if np.ndim(spec) else spec)
        self._prepared = True
        return None if spec is None else {GROUP: spec}

    def _ask_model(self, timeout_s: float) -> dict | None:
        try:
            return control.request(self.options.control, {"cmd": "model"}, timeout_s=timeout_s, keys=self.keys)
        except control.ControlError as exc:
            log.warning("live transfer: no worker answers at %s (%s); the map goes on and every spot without a "
                        "live result is reported", self.options.control, exc)
            return None

    def _check_secondary_axis(self, info: dict, axis: np.ndarray) -> None:
        """The spectrometer recalibrated since the model was trained (its axis a few pixels from
        the model's): its spectra are resampled onto the model's axis before they are streamed."""
        model_axis = info.get("secondary_wavelengths")
        self._resample_secondary = None
        if model_axis is None or len(model_axis) != axis.size:
            return
        self._secondary_axes = (np.asarray(axis, np.float64), np.asarray(model_axis, np.float64))
        try:
            self._resample_secondary = recalibration_resampler(axis, np.asarray(model_axis, np.float64),
                                                               name="secondary wavelengths")
            if self._resample_secondary is not None:
                log.info("live transfer: the secondary's axis was calibrated away from the model's; its spectra "
                         "are resampled onto the model's axis")
        except (WavelengthMismatchError, TypeError, ValueError) as exc:
            log.warning("live transfer: the model was trained on another secondary axis; its results will be off "
                        "(%s)", exc)

    def _check_lines(self, secondary: np.ndarray | None) -> None:
        """The first spots' secondary against the model's training mean (None: the map ended):
        warn once when the spectrometer drifted since training under an axis that does not show it."""
        check = self._lines
        if check is None:
            return
        if secondary is not None and len(secondary) and check.wants_more:
            check.add(baseline_correct(np.asarray(secondary, np.float32), *self._line_windows))
        if check.wants_more and not (secondary is None and check.n >= SHIFT_CHECK_MIN_SPOTS):
            return
        offset = check.offset()
        shift = np.nan if offset is None else offset.whole_px
        self._lines = None                  # measured once
        self._shift_px = round(shift, 3) if np.isfinite(shift) else None
        aligning = secondary is not None and offset is not None and offset.worth_aligning \
            and self._secondary_axes is not None
        message = shift_message("live transfer", "secondary", shift, aligned=aligning)
        if message:
            log.warning(message + (f" (from the next spots on; the first {self._streamed} were streamed as "
                                   "measured)" if aligning else ""))
        if aligning:
            self._alignment = {"shift_px": round(offset.shift_px, 3), "stretch_px": round(offset.stretch_px, 3),
                               "from_spot": None}
            # building the spline operator takes tens of milliseconds (bench/resample.py), at 1 kHz
            # tens of spots: not on the acquisition thread
            threading.Thread(target=self._align_secondary, args=(offset,), name="live-line-alignment",
                             daemon=True).start()

    def _align_secondary(self, offset) -> None:
        """Worker thread: the resampler from the axis the secondary's pixels saw (its lines'
        shift and stretch) onto the model's; the acquisition thread uses it from its next batch."""
        try:
            stored, model = self._secondary_axes
            resampler = AxisResampler(offset.seen_axis(stored), model)
        except Exception:  # a correction, not the stream: the spots go on as measured
            log.exception("live transfer: building the secondary's line alignment failed")
            self._alignment = None
            return
        self._alignment_ready = resampler

    def _transferred_spec(self, wavelengths) -> int | np.ndarray | None:
        """What /entry/transferred is created with: the primary's pixel count when the model's output
        lies on the primary axis (the axis is then shared), else the model's own axis."""
        primary = wavelengths.get("primary")
        axis = self._model_axis
        if axis is not None:
            if primary is not None and primary.size == axis.size and \
                    np.max(np.abs(primary - axis)) <= 0.1 * np.min(np.diff(primary)):
                return int(primary.size)
            return axis
        n_primary = None if self.model_info is None else int(self.model_info["n_primary"])
        if primary is not None and n_primary in (None, primary.size):
            return int(primary.size)     # no worker yet: the likely size, checked against each result
        return None

    def _read_resumed(self, path: Path) -> None:
        """Spots already acquired keep what they have; a map whose results cannot be the model's is refused."""
        earlier = read_earlier_run(path)
        model = self.model_info or {}
        if earlier.group_pixels is not None and model and earlier.group_pixels != int(model["n_primary"]):
            raise ConfigError(f"{path}: /entry/transferred holds {earlier.group_pixels}-pixel spectra, but the "
                              f"worker's model {model.get('model')} makes {model['n_primary']}-pixel ones")
        if earlier.model_id and model and earlier.model_id != model.get("model"):
            log.warning("live transfer: %s holds results of model %s; the worker runs model %s", path,
                        earlier.model_id, model.get("model"))
        self._acquired_before = earlier.acquired
        self._had_result = earlier.has_result
        self._group_pixels = earlier.group_pixels

    # ------------------------------------------------------------------ documents

    def __call__(self, document) -> None:
        if isinstance(document, SpotBatch):
            self._stream(document)
            self._emit_results()
        elif isinstance(document, SpotErrors):
            self._drift_figures = {"err": document.recent_relative_error, "drift": document.drift}
        elif isinstance(document, RunStart):
            if not self._prepared:
                self.prepare(document.path, document.layout, document.wavelengths, resume=document.resumed)
            self._start_stream()
        elif isinstance(document, RunStop):
            self.close()

    def _start_stream(self) -> None:
        o = self.options
        connected = self.model_info is not None
        self._producer = LiveProducer(o.input, results=o.results, controls=o.control, keys=self.keys,
                                      queue_size=o.queue_size, ack_timeout_s=o.timeout_s, system="secondary",
                                      on_result=self._take)
        # without a worker there is nothing to wait for: a late one is synchronised when it connects
        self._producer.start(ready_timeout_s=o.timeout_s if connected else 0.1)
        self._bar = tqdm(total=int((~self._acquired_before).sum()), desc="live", unit="result",
                         disable=not self.show_progress, dynamic_ncols=True, position=1, mininterval=0.25)
        log.info("live transfer: streaming to %s, results from %s (model %s)", o.input, o.results,
                 (self.model_info or {}).get("model", "unknown yet"))

    def _stream(self, batch: SpotBatch) -> None:
        """Acquisition thread: queue each spot's secondary."""
        if self._producer is None or "secondary" not in batch.spectra:
            return
        secondary = batch.spectra["secondary"]
        nx = self._submitted.shape[1]
        try:
            ready = self._alignment_ready
            if ready is not None:                   # swapped in between batches, never within one
                self._resample_secondary, self._alignment_ready = ready, None
                self._alignment["from_spot"] = self._streamed
                log.info("live transfer: the secondary's spectra are aligned onto the model's lines from spot %d on",
                         self._streamed)
            if self._resample_secondary is not None:
                secondary = self._resample_secondary(secondary)
            for k in range(len(batch)):
                iy, ix, shot = int(batch.iy[k]), int(batch.ix[k]), int(batch.shot_id[k])
                self._acquired[iy, ix] = True
                seq = self._producer.submit(secondary[k], shot=shot, iy=iy, ix=ix)
                # this thread is the producer's only caller, so seqs arrive in order
                self._seq_spot.extend([-1] * (seq - len(self._seq_spot)))
                self._seq_spot.append(iy * nx + ix)
                self._submitted[iy, ix] = True
                self._streamed += 1
        except Exception as exc:  # nothing on the live path may stop the map
            self._error(f"streaming spots: {exc}")
            log.exception("live transfer: streaming spots failed")
        try:
            self._check_lines(secondary)
        except Exception:  # a check, not the stream: it stops, the spots went out
            self._lines = None
            log.exception("live transfer: measuring where the secondary's lines sit failed")

    def _take(self, message: StreamMessage) -> None:
        """The producer's watching thread: one result of ours, queued."""
        ny, nx = self._received.shape
        try:
            result = TransferResult.from_message(message)
        except MessageError as exc:
            log.warning("live transfer: a result that cannot be used: %s", exc.reason)
            return
        if not result.has_position:
            return
        inside = (result.iy >= 0) & (result.iy < ny) & (result.ix >= 0) & (result.ix < nx)
        if not inside.all():
            log.warning("live transfer: %d result(s) outside the %dx%d map ignored", int((~inside).sum()), ny, nx)
        iy, ix, label, spectra, novelty = (a[inside] for a in (result.iy, result.ix, result.label, result.spectra,
                                                               result.novelty))
        shot = result.shot[inside] if result.shot is not None else np.full(len(iy), -1, np.int64)
        expected = None if result.expected_rel_error is None else result.expected_rel_error[inside]
        if not len(iy):
            return
        if self.model_info is None:
            self._late_model_info()
        self._received[iy, ix] = True
        self._ready.append((iy, ix, spectra, label, novelty, shot, expected))

    def _late_model_info(self) -> None:
        """A worker that came after the map started: learn its model once results arrive."""
        self.model_info = self._ask_model(1.0) or {}
        if "primary_wavelengths" in self.model_info:
            self._model_axis = np.asarray(self.model_info["primary_wavelengths"], np.float64)

    def _emit_results(self, *, force: bool = False) -> None:
        """Acquisition thread: the queued results out as one SpotResults (a few times a second)."""
        now = time.monotonic()
        if not self._ready or (not force and now - self._last_emit < WRITE_INTERVAL_S):
            return
        self._last_emit = now
        try:
            parts = []
            while self._ready:
                parts.append(self._ready.popleft())
            iy, ix, spectra, label, novelty, shot = (np.concatenate([p[i] for p in parts]) for i in range(6))
            expected = None if any(p[6] is None for p in parts) else np.concatenate([p[6] for p in parts])
            if self._emit is None or self._group_pixels != spectra.shape[1]:
                self.not_recorded += len(iy)
                self._error(f"{len(iy)} result(s) of {spectra.shape[1]} pixels have no place in the map "
                            f"(its /entry/{GROUP} holds {self._group_pixels})")
            else:
                self._emit(SpotResults(iy, ix, spectra, label, novelty,
                                       model_id=str((self.model_info or {}).get("model") or ""),
                                       expected_rel_error=expected, shot_id=shot))
                self.written += len(iy)
            self._show_progress(len(iy), now)
        except Exception as exc:  # nothing on the live path may stop the map
            self._error(f"live results: {exc}")
            log.exception("live transfer: handling results failed")

    def _show_progress(self, n: int, now: float) -> None:
        if self._bar is not None:
            postfix = {"waiting": int((self._submitted & ~self._received).sum())}
            # the drift monitor's figures as of its latest SpotErrors (a batch of results behind)
            if self._drift_figures.get("err") is not None:
                postfix["err"] = f"{self._drift_figures['err']:.3g}"
            if self._drift_figures.get("drift") is not None:
                postfix["drift"] = f"{100 * self._drift_figures['drift']:+.0f}%"
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        if now - self._last_log > 10.0:
            self._last_log = now
            log.info("live transfer: %d results", self.written)

    def _error(self, text: str) -> None:
        if len(self.errors) < 20 and text not in self.errors:
            self.errors.append(text)

    # ------------------------------------------------------------------ end of the run

    def drain(self) -> None:
        """Before RunStop: wait (bounded) for outstanding results, emit them, account for gaps."""
        if self._producer is None:
            return
        try:
            self._await_outstanding()
            # closing joins the watching thread: every result it saw is queued by now
            delivery = self._producer.close(timeout_s=0.2)
            self._emit_results(force=True)
            try:
                self._check_lines(None)
            except Exception:
                log.exception("live transfer: measuring where the secondary's lines sit failed")
            self._report = gap_report(self._acquired, self._received, self._submitted, self._seq_spot, delivery)
            if self._group_pixels is not None:
                has_result = self._had_result | self._received
                self._report["map_spots_without_result"] = int(
                    ((self._acquired_before | self._acquired) & ~has_result).sum())
            if self._report["without_result"]:
                reasons = ", ".join(f"{k} {v}" for k, v in self._report["reasons"].items() if v)
                log.warning("live transfer: %d of %d spots got no live result (%s): %s",
                            self._report["without_result"], self._report["spots"], reasons,
                            describe_runs(self._report["without_result_spots"]))
        except Exception as exc:  # the map closes whatever happens here
            self._error(f"finishing the live stream: {exc}")
            log.exception("live transfer: finishing failed")
        finally:
            self.close()

    def _await_outstanding(self) -> None:
        """Until every sent spectrum has an answer (or counts lost), and nothing queued is moving."""
        deadline = time.monotonic() + self.options.finish_timeout_s
        last, changed = None, time.monotonic()
        while time.monotonic() < deadline:
            r = self._producer.report()
            queued = r.submitted - r.sent - len(r.dropped) - len(r.unsent)
            in_flight = r.sent - r.delivered - len(r.rejected) - len(r.lost)
            state = (r.sent, r.delivered, len(r.rejected), len(r.lost))
            if state != last:
                last, changed = state, time.monotonic()
            # queued spectra that have not moved for a while are waiting for a worker that is not there
            stalled = time.monotonic() - changed > (0.5 if r.sent else 0.1)
            if in_flight <= 0 and (queued <= 0 or stalled):
                return
            time.sleep(0.02)
        log.warning("live transfer: stopped waiting for results after %.0f s", self.options.finish_timeout_s)

    def close(self) -> None:
        """Stop everything still running (idempotent; drain() does it)."""
        if self._producer is not None:
            self._producer.close(timeout_s=0.2)
        if self._bar is not None:
            self._bar.close()

    def summary(self) -> dict:
        o = self.options
        return {"input": o.input, "results_address": o.results, "control": o.control,
                "model": (self.model_info or {}).get("model"),
                "trust_threshold": (self.model_info or {}).get("trust_threshold"), **self._report,
                "secondary_shift_px": self._shift_px, "secondary_alignment": self._alignment,
                "written": self.written,
                "not_recorded": self.not_recorded, "errors": list(self.errors)}
