"""Live transfer during a map: `libs-acquire map ... --live ADDR`.

Every spot the map records reaches :meth:`LiveTransfer.on_spot` on the map's spot-sink
thread; its secondary spectrum goes to the transfer worker through a
:class:`streaming.producer.LiveProducer`, which never blocks (with the worker away or slow,
spectra are dropped, and accounted for). A results thread takes this producer's results,
compares each with the measured primary spectrum of the same shot (acquisition.shared.drift)
and queues it. The acquisition thread owns the map writer, so it is the one that moves
queued results into ``/entry/transferred``, between its own writes and at most a few times
a second. Raw data always wins: a failure anywhere on the live path is logged and
reported, never raised into the map, and results that could not be written while the map
was open are written after it is closed (acquisition.live_record).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from acquisition.config import ConfigError
from acquisition.shared.drift import DriftMonitor, primary_baseline_windows
from acquisition.live_record import (ERROR_DATASETS, GROUP, create_group, describe_runs, gap_report,
                                     read_earlier_run, write_extras, write_results_after)
from acquisition.store import MapLayout
from streaming import control
from streaming.producer import LiveProducer
from streaming.protocol import MessageError
from streaming.results import TransferResult
from streaming.security import ClientKeys, SecurityError, is_loopback
from streaming.subscriber import ResultSubscriber

log = logging.getLogger(__name__)

WORKER_PUBLIC_KEY = "worker.key"
CLIENT_SECRET_KEY = "acquisition.key_secret"
# Measured primaries waiting for their result; beyond this the oldest are forgotten.
MAX_WAITING_PRIMARIES = 2048
# Results kept in memory when they cannot go into the open map (no group, wrong size).
MAX_UNPLACED_RESULTS = 8192
WRITE_INTERVAL_S = 0.25


@dataclass(frozen=True)
class LiveOptions:
    input: str
    results: str | None = None          # default: the input's port + 1 (spec defaults 5557/5558/5559)
    control: str | None = None          # default: the input's port + 2
    keys_dir: Path | None = None        # worker.key + acquisition.key_secret (or clients/acquisition.key_secret)
    timeout_s: float = 5.0              # the worker's first answer; a result's deadline before it counts lost
    finish_timeout_s: float = 30.0      # the most the end of the map waits for outstanding results
    queue_size: int = 1024              # spectra buffered while the worker is away or slow
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
    """The live path of one map run; see the module docstring. Used by ``MapRun``:

    ``open_map()`` before the writer opens (returns ``derived`` for a new map), ``on_spot``
    as the spot sink's consumer, ``write_results(writer)`` after each write of spots,
    ``finish(writer)`` before the writer closes, ``after_close(path)`` once it is closed,
    ``summary()`` for the map summary. Only ``open_map()`` raises (ConfigError: a model that
    does not fit the spectrometers), and it does so before anything fires.
    """

    def __init__(self, options: LiveOptions, *, show_progress: bool = True):
        self.options = options.resolved()
        self.keys = load_client_keys(self.options.keys_dir) if self.options.keys_dir else None
        self.show_progress = show_progress
        self.model_info: dict | None = None
        self.drift: DriftMonitor | None = None
        self._producer: LiveProducer | None = None
        self._subscriber: ResultSubscriber | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ready: deque[tuple] = deque()        # results waiting for the acquisition thread to write them
        self._unplaced: list[tuple] = []            # results that could not go into the open map
        self._primaries: OrderedDict[int, np.ndarray] = OrderedDict()
        self._seq_spot = array("q")                 # input seq -> flat spot index (8 bytes a spot)
        self._group_pixels: int | None = None
        self._model_axis: np.ndarray | None = None
        self._bar = None
        self._last_write = 0.0
        self._last_log = time.monotonic()
        self._report: dict = {}
        self.errors: list[str] = []
        self.written = self.not_recorded = 0

    # ------------------------------------------------------------------ before the map

    def open_map(self, path, layout: MapLayout, wavelengths: Mapping[str, np.ndarray], *,
                 resume: bool = False) -> dict | None:
        """Ask the worker for its model, check it fits, start streaming; ``derived`` for a new map."""
        if "secondary" not in wavelengths:
            raise ConfigError("--live streams the secondary system's spectra; the map has no 'secondary'")
        shape = layout.shape
        self._received = np.zeros(shape, bool)
        self._submitted = np.zeros(shape, bool)
        self.errors_by_spot = {name: np.full(shape, np.nan, np.float32) for name in ERROR_DATASETS}
        self._acquired_before = np.zeros(shape, bool)
        self.model_info = info = self._ask_model(self.options.timeout_s)
        if info is not None:
            n_secondary = wavelengths["secondary"].size
            if int(info["n_secondary"]) != n_secondary:
                raise ConfigError(f"the worker's model {info.get('model')} takes {info['n_secondary']}-pixel "
                                  f"secondary spectra, but the secondary spectrometer has {n_secondary} pixels")
            self._check_secondary_axis(info, wavelengths["secondary"])
            if "primary_wavelengths" in info:
                self._model_axis = np.asarray(info["primary_wavelengths"], np.float64)
        spec = self._transferred_spec(wavelengths)
        earlier = self._open_resumed(Path(path), spec) if resume else None
        if not resume and spec is not None:
            self._group_pixels = int(np.size(spec) if np.ndim(spec) else spec)
        if "primary" in wavelengths:
            self.drift = DriftMonitor(self.options.drift_window, self.options.drift_threshold,
                                      baseline=primary_baseline_windows(info), measured_axis=wavelengths["primary"],
                                      model_axis=self._model_axis)
            if earlier is not None:   # the reference stays the map's first spots across runs
                order = np.argsort(np.where(earlier.acquired, earlier.shot_id, np.iinfo(np.int64).max), axis=None)
                self.drift.add(*(self.errors_by_spot[name].ravel()[order] for name in ERROR_DATASETS))
        self._start_stream(connected=info is not None)
        self._bar = tqdm(total=int((~self._acquired_before).sum()), desc="live", unit="result",
                         disable=not self.show_progress, dynamic_ncols=True, position=1, mininterval=0.25)
        return None if resume or spec is None else {GROUP: spec}

    def _ask_model(self, timeout_s: float) -> dict | None:
        try:
            return control.request(self.options.control, {"cmd": "model"}, timeout_s=timeout_s, keys=self.keys)
        except control.ControlError as exc:
            log.warning("live transfer: no worker answers at %s (%s); the map goes on and every spot without a "
                        "live result is reported", self.options.control, exc)
            return None

    @staticmethod
    def _check_secondary_axis(info: dict, axis: np.ndarray) -> None:
        model_axis = info.get("secondary_wavelengths")
        if model_axis is None or len(model_axis) != axis.size:
            return
        worst = float(np.max(np.abs(np.asarray(model_axis) - axis)))
        if worst > 0.1 * float(np.min(np.diff(axis))):
            log.warning("live transfer: the model was trained on a secondary axis up to %.3g nm away from this "
                        "spectrometer's; its results will be off", worst)

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

    def _open_resumed(self, path: Path, spec):
        """Spots already acquired keep what they have; /entry/transferred is created if an earlier
        run had none (possible only now, while no writer holds the file)."""
        earlier = read_earlier_run(path)
        model = self.model_info or {}
        if earlier.group_pixels is not None and model and earlier.group_pixels != int(model["n_primary"]):
            raise ConfigError(f"{path}: /entry/transferred holds {earlier.group_pixels}-pixel spectra, but the "
                              f"worker's model {model.get('model')} makes {model['n_primary']}-pixel ones")
        if earlier.model_id and model and earlier.model_id != model.get("model"):
            log.warning("live transfer: %s holds results of model %s; the worker runs model %s", path,
                        earlier.model_id, model.get("model"))
        self._acquired_before = earlier.acquired
        for name, values in earlier.errors.items():
            self.errors_by_spot[name][...] = values
        self._group_pixels = earlier.group_pixels
        if self._group_pixels is None and spec is not None:
            self._group_pixels = create_group(path, spec)
        return earlier

    def _start_stream(self, connected: bool) -> None:
        o = self.options
        self._subscriber = ResultSubscriber(o.results, topics=("transfer", "error"), keys=self.keys)
        if connected:
            try:
                self._subscriber.wait_ready(o.control, timeout_s=o.timeout_s)
            except (TimeoutError, control.ControlError) as exc:
                log.warning("live transfer: result subscription not confirmed (%s); results may be missed", exc)
        self._producer = LiveProducer(o.input, results=o.results, controls=o.control, keys=self.keys,
                                      queue_size=o.queue_size, ack_timeout_s=o.timeout_s, system="secondary")
        # without a worker there is nothing to wait for: a late one is synchronised when it connects
        self._producer.start(ready_timeout_s=o.timeout_s if connected else 0.1)
        self._thread = threading.Thread(target=self._receive_loop, name="live-results", daemon=True)
        self._thread.start()
        log.info("live transfer: streaming to %s, results from %s (model %s)", o.input, o.results,
                 (self.model_info or {}).get("model", "unknown yet"))

    # ------------------------------------------------------------------ during the map

    def on_spot(self, iy: int, ix: int, shot_id: int, spectra: Mapping[str, np.ndarray]) -> None:
        """Spot-sink thread: remember the measured primary, hand the secondary to the producer."""
        if self.drift is not None and "primary" in spectra:
            with self._lock:
                self._primaries[shot_id] = np.array(spectra["primary"], np.float32)
                while len(self._primaries) > MAX_WAITING_PRIMARIES:
                    self._primaries.popitem(last=False)
        seq = self._producer.submit(spectra["secondary"], shot=shot_id, iy=iy, ix=ix)
        # this thread is the producer's only caller, so seqs arrive in order
        self._seq_spot.extend([-1] * (seq - len(self._seq_spot)))
        self._seq_spot.append(iy * self._submitted.shape[1] + ix)
        self._submitted[iy, ix] = True

    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._subscriber.recv(timeout_s=0.05)
                batch = []
                while message is not None and len(batch) < 256:
                    batch.append(message)
                    message = self._subscriber.recv(timeout_s=0)
                if batch:
                    self._take(batch)
            except Exception as exc:  # the live path must not die quietly, nor take the map with it
                self._error(f"results thread stopped: {exc}")
                log.exception("live transfer: results thread failed")
                return

    def _take(self, messages) -> None:
        rows = []
        ny, nx = self._received.shape
        for message in messages:
            if message.topic != "transfer" or message.header.get("source") != self._producer.source:
                continue   # other producers' results; our errors are in the producer's delivery report
            try:
                result = TransferResult.from_message(message)
            except MessageError as exc:
                log.warning("live transfer: a result that cannot be used: %s", exc.reason)
                continue
            if not result.has_position:
                continue
            inside = (result.iy >= 0) & (result.iy < ny) & (result.ix >= 0) & (result.ix < nx)
            if not inside.all():
                log.warning("live transfer: %d result(s) outside the %dx%d map ignored", int((~inside).sum()), ny, nx)
            shot = result.shot if result.shot is not None else np.full(result.k, -1, np.int64)
            rows.append(tuple(a[inside] for a in (result.iy, result.ix, shot, result.label, result.spectra,
                                                  result.novelty)))
        if not rows:
            return
        iy, ix, shot, label, spectra, novelty = (np.concatenate(parts) for parts in zip(*rows))
        if self.model_info is None:
            self._late_model_info()
        if self.drift is not None:
            self._measure(iy, ix, shot, spectra)
        self._received[iy, ix] = True
        self._ready.append((iy, ix, spectra, label, novelty))

    def _late_model_info(self) -> None:
        """A worker that came after the map started: learn its model once results arrive."""
        self.model_info = self._ask_model(1.0) or {}
        if "primary_wavelengths" in self.model_info:
            self._model_axis = np.asarray(self.model_info["primary_wavelengths"], np.float64)

    def _measure(self, iy, ix, shot, spectra) -> None:
        with self._lock:
            measured = [self._primaries.pop(int(s), None) for s in shot]
        have = np.array([m is not None for m in measured])
        if not have.any():
            return
        try:
            rel, cos = self.drift.measure(spectra[have], np.stack([m for m in measured if m is not None]))
        except ValueError as exc:  # axes that cannot be compared: say so once and stop comparing
            self._error(f"drift monitor off: {exc}")
            log.warning("live transfer: drift monitor off: %s", exc)
            self.drift = None
            return
        self.errors_by_spot["live_relative_error"][iy[have], ix[have]] = rel
        self.errors_by_spot["live_cosine_distance"][iy[have], ix[have]] = cos

    def write_results(self, writer, *, force: bool = False) -> None:
        """Acquisition thread: move queued results into /entry/transferred (a few times a second)."""
        now = time.monotonic()
        if not self._ready or (not force and now - self._last_write < WRITE_INTERVAL_S):
            return
        self._last_write = now
        try:
            parts = []
            while self._ready:
                parts.append(self._ready.popleft())
            iy, ix, spectra, label, novelty = (np.concatenate(p) for p in zip(*parts))
            if writer is None or self._group_pixels != spectra.shape[1]:
                self._keep_unplaced(iy, ix, spectra, label, novelty)
            else:
                try:
                    writer.write_derived(GROUP, iy, ix, spectra=spectra, label=label, novelty=novelty)
                    self.written += len(iy)
                except Exception as exc:  # raw data wins: keep the results for after the map
                    self._error(f"writing live results into the open map: {exc}")
                    self._keep_unplaced(iy, ix, spectra, label, novelty)
            self._show_progress(len(iy), now)
        except Exception as exc:  # nothing on the live path may stop the map
            self._error(f"live results: {exc}")
            log.exception("live transfer: handling results failed")

    def _keep_unplaced(self, iy, ix, spectra, label, novelty) -> None:
        room = MAX_UNPLACED_RESULTS - sum(len(part[0]) for part in self._unplaced)
        if room < len(iy):
            self.not_recorded += len(iy) - max(room, 0)
        if room > 0:
            self._unplaced.append((iy[:room], ix[:room], spectra[:room], label[:room], novelty[:room]))

    def _show_progress(self, n: int, now: float) -> None:
        drift = self.drift.summary() if self.drift is not None else {}
        if self._bar is not None:
            postfix = {"waiting": int((self._submitted & ~self._received).sum())}
            if drift.get("recent_relative_error") is not None:
                postfix["err"] = f"{drift['recent_relative_error']:.3g}"
            if drift.get("drift") is not None:
                postfix["drift"] = f"{100 * drift['drift']:+.0f}%"
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        if now - self._last_log > 10.0:
            self._last_log = now
            log.info("live transfer: %d results, recent relative error %s, drift %s", self.written,
                     drift.get("recent_relative_error"), drift.get("drift"))

    def _error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)

    # ------------------------------------------------------------------ end of the map

    def finish(self, writer) -> None:
        """Before the writer closes: wait (bounded) for outstanding results, write them, account for gaps."""
        if self._producer is None:
            return
        try:
            self._await_outstanding()
            delivery = self._producer.close(timeout_s=0.2)
            self._await_receipts(delivery)
            self._stop_threads()
            if writer is not None:
                self.write_results(writer, force=True)
                acquired = np.ones(self._received.shape, bool)
                missing = writer.missing()
                acquired[missing[:, 0], missing[:, 1]] = False
                self._report = gap_report(acquired & ~self._acquired_before, self._received, self._submitted,
                                          self._seq_spot, delivery)
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

    def _await_receipts(self, delivery) -> None:
        # The producer's own watcher confirmed these; give the results thread a moment to see them too.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and int(self._received.sum()) < delivery.delivered:
            time.sleep(0.02)

    def _stop_threads(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def after_close(self, path) -> None:
        """Once the writer is closed: results it could not take, per-spot errors, the summaries."""
        path = Path(path)
        model = (self.model_info or {}).get("model")
        try:
            if self._unplaced:
                parts, self._unplaced = self._unplaced, []
                self.written += write_results_after(path, parts, model_id=model or "", axis=self._model_axis)
            without = write_extras(path, model_id=model, drift=None if self.drift is None else self.drift.summary(),
                                   errors=self.errors_by_spot if self.drift is not None else None,
                                   report=self.summary())
            if without is not None:
                self._report["map_spots_without_result"] = without
        except Exception as exc:  # the map itself is closed and complete; only the live extras are missing
            self._error(f"recording the live results after the map: {exc}")
            log.error("live transfer: could not record the live results in %s: %s", path, exc)

    def close(self) -> None:
        """Stop everything still running (idempotent; finish() does it)."""
        self._stop_threads()
        if self._producer is not None:
            self._producer.close(timeout_s=0.2)
        if self._subscriber is not None:
            self._subscriber.close()
        if self._bar is not None:
            self._bar.close()

    def summary(self) -> dict:
        o = self.options
        return {"input": o.input, "results_address": o.results, "control": o.control,
                "model": (self.model_info or {}).get("model"), **self._report, "written": self.written,
                "not_recorded": self.not_recorded,
                "drift": self.drift.summary() if self.drift is not None else None, "errors": list(self.errors)}
