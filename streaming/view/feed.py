"""The view's side of the stream: one thread reads the worker's output, another asks its control socket.

The receiving thread does the per-result work (decode, total emission, keep the spectrum)
and hands compact per-spot values to the web server in batches through :meth:`ResultFeed.take`,
so the cost per result does not depend on how many spots are already shown or how many
pages are open.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .. import control
from ..security import ClientKeys
from ..stats import RateWindow
from ..subscriber import ResultSubscriber
from .state import SpectrumStore

log = logging.getLogger(__name__)

# the worker publishes a status about once a second: three missed ones mean it is gone
WORKER_SILENT_S = 3.0
# results that stop for this long while the worker is alive and the map unfinished are worth a banner
RESULTS_SILENT_S = 5.0
# the model's expected relative transfer error per spectrum (optional in a transfer header)
TRUST_KEY = "expected_rel_error"
# docs/novelty.md: above about 3, look at the transferred spectrum with suspicion
DOCUMENTED_NOVELTY_THRESHOLD = 3.0


def _positive_number(value) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
        return float(value)
    return None


def trust_threshold(model_info: dict | None) -> dict | None:
    """The calibrated threshold on the expected relative error, from the model's metadata
    (`trust_threshold` in the control ``model`` reply or its provenance); None without one."""
    places = []
    if isinstance(model_info, dict):
        places.append(("model metadata", model_info))
        if isinstance(model_info.get("provenance"), dict):
            places.append(("model provenance", model_info["provenance"]))
    for where, obj in places:
        value = _positive_number(obj.get("trust_threshold"))
        if value is not None:
            return {"value": value, "calibrated": True, "source": f"calibrated ({where}: trust_threshold)"}
    return None


def novelty_threshold(model_info: dict | None) -> dict:
    """The novelty mark: a `novelty_threshold` in the model's metadata, else docs/novelty.md's guide value."""
    for obj in (model_info, (model_info or {}).get("provenance") if isinstance(model_info, dict) else None):
        if isinstance(obj, dict):
            value = _positive_number(obj.get("novelty_threshold"))
            if value is not None:
                return {"value": value, "calibrated": True, "source": "model metadata: novelty_threshold"}
    return {"value": DOCUMENTED_NOVELTY_THRESHOLD, "calibrated": False,
            "source": "guide value of docs/novelty.md (the model carries no novelty threshold)"}


@dataclass
class Batch:
    """Results received since the last take: per spot (iy, ix), label, total emission, novelty, trust.

    One-spectrum messages (the acquisition's) are kept as plain tuples, batches as arrays:
    no small numpy arrays per result.
    """

    singles: list = field(default_factory=list)     # (iy, ix, label, emission, novelty, trust)
    blocks: list = field(default_factory=list)      # (iy, ix, label, emission, novelty, trust) arrays
    oldest_t: float | None = None      # the earliest producer time `t` among them (Unix s)
    spectra: int = 0

    def arrays(self) -> tuple[np.ndarray, ...]:
        """iy, ix (int64), label (int16), emission, novelty, trust (float32), all [k]."""
        dtypes = (np.int64, np.int64, np.int64, np.float32, np.float32, np.float32)
        parts = [[] for _ in dtypes]
        if self.singles:
            columns = list(zip(*self.singles))
            for part, column, dtype in zip(parts, columns, dtypes):
                part.append(np.array(column, dtype=dtype))
        for block in self.blocks:
            for part, column in zip(parts, block):
                part.append(column)
        iy, ix, label, *values = (np.concatenate(part).astype(dtype, copy=False) if part else np.empty(0, dtype)
                                  for part, dtype in zip(parts, dtypes))
        # a label the page cannot draw (outside int16) shows as "no label" rather than wrapping around
        label = np.where((label >= 0) & (label <= np.iinfo(np.int16).max), label, -1).astype(np.int16)
        return (iy, ix, label, *values)


def _per_spectrum(value, k: int, dtype) -> np.ndarray:
    if isinstance(value, list):
        try:   # null (a non-finite value on the wire) becomes NaN
            out = np.asarray([np.nan if v is None else v for v in value], dtype=dtype)
        except (TypeError, ValueError):
            out = None
        return out if out is not None and out.shape == (k,) else np.full(k, np.nan if dtype is np.float64 else -1,
                                                                          dtype)
    if value is None:
        return np.full(k, np.nan if dtype is np.float64 else -1, dtype)
    return np.full(k, value, dtype)


class ResultFeed:
    """Subscribes to the workers' output and keeps what the view shows, without any web part."""

    def __init__(self, results: list[str], controls: list[str] | None = None, *, keys: ClientKeys | None = None,
                 spectra_budget_bytes: int, n_spots_hint: int, on_results=None):
        self.results = results
        self.controls = controls or []
        self.keys = keys
        self.store = SpectrumStore(n_spots_hint, spectra_budget_bytes)
        self.on_results = on_results          # called in this thread with (iy, ix, spectra) per message
        self._batch = Batch()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.rate = RateWindow(window_s=2.0)
        self.worker_latency = RateWindow(window_s=5.0)
        self.end_to_end = RateWindow(window_s=5.0)
        self.counts = {"spectra": 0, "messages": 0, "errors": 0, "without_position": 0, "negative_index": 0,
                       "unusable": 0}
        self.last_errors: list[dict] = []
        self.status: dict[str, dict] = {}
        self.status_seen: dict[str, float] = {}
        self.first_contact: float | None = None
        self.last_result: float | None = None
        self.model_info: dict | None = None
        self.model_problem: str | None = None
        self._asked_model_for: str | None = None
        self.missing = 0
        self._thread = threading.Thread(target=self._run, name="view-feed", daemon=True)

    # -- life cycle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def take(self) -> Batch:
        """Everything received since the last call (the web server's flush)."""
        with self._lock:
            batch, self._batch = self._batch, Batch()
        return batch

    # -- the receiving thread

    def _run(self) -> None:
        with ResultSubscriber(self.results, topics=("transfer", "error", "status"), keys=self.keys) as sub:
            try:
                sub.wait_ready(self.controls or None, timeout_s=2.0)
            except (TimeoutError, control.ControlError) as exc:
                log.info("no worker yet (%s); showing whatever arrives", exc)
            while not self._stop.is_set():
                message = sub.recv(timeout_s=0)
                self.missing = sub.missing
                if message is None:
                    # drain what queued, then nap: one wake-up per ~50 results at 1 kHz instead of one per result
                    # halves the receiving cost; 50 ms is nothing next to the page's few-Hz updates
                    self._stop.wait(0.05)
                    continue
                now = time.monotonic()
                self.first_contact = self.first_contact or now
                if message.topic == "transfer":
                    try:
                        self._on_transfer(message.header, message.array, now)
                    except (TypeError, ValueError, OverflowError) as exc:
                        # a header the decoder let through but the view cannot place: count it, keep going
                        self.counts["unusable"] += 1
                        if self.counts["unusable"] == 1:
                            log.warning("ignoring a transfer message the view cannot use: %s", exc)
                elif message.topic == "error":
                    self.counts["errors"] += 1
                    self.last_errors = (self.last_errors + [{"code": message.header.get("code"),
                                                             "reason": str(message.header.get("reason"))[:200]}])[-5:]
                elif message.topic == "status":
                    worker = str(message.header.get("worker", ""))
                    self.status[worker] = message.header
                    self.status_seen[worker] = now
                    self._ask_model(message.header.get("model"))

    def _on_transfer(self, header: dict, array: np.ndarray, now: float) -> None:
        spectra = array.reshape(1, -1) if array.ndim == 1 else array
        k = spectra.shape[0]
        self.counts["messages"] += 1
        self.counts["spectra"] += k
        self.last_result = now
        latency = header.get("latency_s")
        t = header.get("t")
        t = float(t) if isinstance(t, (int, float)) else None
        with self._lock:   # the web server reads these windows for the health panel
            self.rate.add(k, now=now)
            if isinstance(latency, (int, float)):
                self.worker_latency.add(0, latency, now=now)
            if t is not None:
                self.end_to_end.add(0, time.time() - t, now=now)
        if header.get("model") != self._asked_model_for:
            self._ask_model(header.get("model"))
        iy, ix = header.get("iy"), header.get("ix")
        if iy is None or ix is None:
            self.counts["without_position"] += k
            return
        if k == 1 and isinstance(iy, int) and isinstance(ix, int):
            # the common case (one spectrum per message at acquisition rate): no small arrays
            if iy < 0 or ix < 0:
                self.counts["negative_index"] += 1
                return
            label, novelty, trust = header.get("label"), header.get("novelty"), header.get(TRUST_KEY)
            record = (iy, ix, label if isinstance(label, int) and 0 <= label < 1 << 62 else -1, float(spectra[0].sum()),
                      novelty if isinstance(novelty, (int, float)) else np.nan,
                      trust if isinstance(trust, (int, float)) else np.nan)
            self.store.put_one(iy, ix, spectra[0])
            if self.on_results is not None:
                self.on_results(np.array([iy]), np.array([ix]), spectra)
            with self._lock:
                b = self._batch
                b.singles.append(record)
                b.spectra += 1
                if t is not None and (b.oldest_t is None or t < b.oldest_t):
                    b.oldest_t = t
            return
        iy = _per_spectrum(iy, k, np.int64)
        ix = _per_spectrum(ix, k, np.int64)
        label = _per_spectrum(header.get("label"), k, np.int64)
        novelty = _per_spectrum(header.get("novelty"), k, np.float64)
        trust = _per_spectrum(header.get(TRUST_KEY), k, np.float64)
        keep = (iy >= 0) & (ix >= 0)
        if not keep.all():
            self.counts["negative_index"] += int(np.count_nonzero(~keep))
            iy, ix, spectra = iy[keep], ix[keep], spectra[keep]
            label, novelty, trust = label[keep], novelty[keep], trust[keep]
        emission = spectra.sum(axis=1)
        self.store.put(iy, ix, spectra)
        if self.on_results is not None:
            self.on_results(iy, ix, spectra)
        with self._lock:
            b = self._batch
            b.blocks.append((iy, ix, label, emission, novelty, trust))
            b.spectra += len(iy)
            if t is not None and (b.oldest_t is None or t < b.oldest_t):
                b.oldest_t = t

    def _ask_model(self, model_id) -> None:
        """Ask the control socket for the model's description once per model id (precision, axes, threshold)."""
        if not self.controls or not model_id or model_id == self._asked_model_for:
            return
        self._asked_model_for = model_id
        try:
            self.model_info = control.request(self.controls[0], {"cmd": "model"}, timeout_s=1.0, keys=self.keys)
            self.model_problem = None
        except control.ControlError as exc:
            self.model_problem = str(exc)
            self._asked_model_for = None   # ask again with the next message

    # -- health

    def health(self, *, complete: bool) -> dict:
        now = time.monotonic()
        with self._lock:
            worker_lat, e2e = self.worker_latency.latency(now), self.end_to_end.latency(now)
            rate = self.rate.rate(now)
        seen = list(self.status_seen.items())      # copies: the receiving thread adds workers
        statuses = list(self.status.values())
        last_contact = max([t for _, t in seen] + [self.last_result or 0.0])
        latest = max(statuses, key=lambda h: dict(seen).get(str(h.get("worker")), 0), default=None)
        banner = None
        if self.first_contact is None:
            banner = {"level": "warn", "text": f"waiting for the worker at {', '.join(self.results)}"}
        elif now - last_contact > WORKER_SILENT_S:
            banner = {"level": "error", "text": f"worker gone: nothing from {', '.join(self.results)} for "
                                                f"{now - last_contact:.0f} s"}
        elif complete:
            banner = {"level": "ok", "text": "map complete"}
        elif self.last_result is not None and now - self.last_result > RESULTS_SILENT_S:
            banner = {"level": "warn", "text": f"results stopped {now - self.last_result:.0f} s ago "
                                               f"(the worker is alive)"}
        info = self.model_info or {}
        model_id = info.get("model") or (latest or {}).get("model")
        return {
            "spectra": self.counts["spectra"], "rate": round(rate, 1),
            "worker_latency_ms": _ms(worker_lat), "end_to_end_ms": _ms(e2e),
            "lost": self.missing, "rejected": self.counts["errors"], "last_errors": self.last_errors,
            "without_position": self.counts["without_position"], "negative_index": self.counts["negative_index"],
            "unusable": self.counts["unusable"],
            "model": model_id, "precision": info.get("precision") if info else None,
            "model_problem": self.model_problem,
            "worker": None if latest is None else {
                k: latest.get(k) for k in ("worker", "received", "published_spectra", "rejected",
                                           "throughput_spectra_s", "batch_mean", "uptime_s")},
            "banner": banner,
        }


def _ms(p: dict) -> dict:
    return {k: None if p[k] is None else round(1000 * p[k], 2) for k in ("p50", "p99")}
