"""The live-transfer worker: PULL secondary spectra, run the model, PUB results (spec/stream-protocol.md).

One thread owns all sockets. Each turn it drains whatever is queued on the input (up to
``max_batch`` spectra, never waiting for more), runs one inference over it and publishes
one message per input message in input order. At low rates a batch is one message, so
latency is one inference; under load batches grow and the per-call cost is shared.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from . import protocol
from .control import parse_request
from .model import TransferModel, as_model_input
from .security import ServerKeys, require_keys_for
from .stats import RateWindow

log = logging.getLogger(__name__)

DEFAULT_INPUT = "tcp://127.0.0.1:5557"
DEFAULT_OUTPUT = "tcp://127.0.0.1:5558"
DEFAULT_CONTROL = "tcp://127.0.0.1:5559"


@dataclass
class WorkerConfig:
    model: str | os.PathLike
    input: str = DEFAULT_INPUT
    output: str = DEFAULT_OUTPUT
    control: str = DEFAULT_CONTROL
    threads: int | None = None          # ONNX Runtime intra-op threads; None: one per core
    spin: bool = False                  # let ONNX Runtime's pool threads spin (a machine to itself)
    max_batch: int = 256                # spectra per inference
    status_interval_s: float = 1.0
    output_hwm: int = 20_000            # messages queued per slow subscriber before it misses some
    keys: ServerKeys | None = None
    ready_file: str | os.PathLike | None = None   # JSON with the bound endpoints, once ready
    max_message_bytes: int = 1 << 30


class TransferWorker:
    """Load the model, bind the sockets, serve until :meth:`stop`."""

    def __init__(self, config: WorkerConfig, *, context: zmq.Context | None = None):
        require_keys_for([config.input, config.output, config.control], config.keys is not None)
        self.config = config
        self.model = TransferModel(config.model, threads=config.threads, spin=config.spin)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
        self.context = context or zmq.Context()
        self._own_context = context is None
        self._stop = threading.Event()
        self._auth = None
        self.endpoints: dict[str, str] = {}
        self.counters = {"received": 0, "accepted_spectra": 0, "published": 0, "published_spectra": 0,
                         "rejected": 0, "batches": 0}
        self._seq = {"transfer": 0, "error": 0, "status": 0}
        self._window = RateWindow(window_s=max(1.0, config.status_interval_s * 2))
        self._batch_sizes = RateWindow(window_s=max(1.0, config.status_interval_s * 2))
        self._started = time.monotonic()
        self._bind()

    # ------------------------------------------------------------------ setup

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self.context.socket(kind)
        if self.config.keys is not None:
            self.config.keys.apply(sock)
        return sock

    def _bind(self) -> None:
        cfg = self.config
        if cfg.keys is not None:
            self._auth = cfg.keys.start_authenticator(self.context)
        try:
            self.output = self._socket(zmq.PUB)
            self.output.sndhwm = cfg.output_hwm
            self.output.linger = 2000
            self.endpoints["output"] = self._bind_one(self.output, cfg.output)
            self.input = self._socket(zmq.PULL)
            self.input.maxmsgsize = cfg.max_message_bytes
            self.input.linger = 0
            self.endpoints["input"] = self._bind_one(self.input, cfg.input)
            # control last: a ping answered means everything else is bound and the model loaded
            self.control = self._socket(zmq.REP)
            self.control.linger = 0
            self.endpoints["control"] = self._bind_one(self.control, cfg.control)
        except Exception:
            self.close()
            raise
        log.info("worker %s ready: input %s, output %s, control %s", self.worker_id, self.endpoints["input"],
                 self.endpoints["output"], self.endpoints["control"])
        if cfg.ready_file:
            tmp = Path(f"{cfg.ready_file}.tmp")
            tmp.write_text(json.dumps({**self.endpoints, "worker": self.worker_id, "model": self.model.model_id,
                                       "pid": os.getpid()}))
            tmp.replace(cfg.ready_file)

    @staticmethod
    def _bind_one(sock: zmq.Socket, address: str) -> str:
        if address.startswith("tcp://[") or address.startswith("tcp://::"):
            sock.ipv6 = True
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            raise OSError(f"cannot bind {address}: {exc}") from None
        return sock.last_endpoint.decode()

    # ------------------------------------------------------------------ serving

    def stop(self) -> None:
        """Ask the loop to finish its in-flight batch and return (safe from signal handlers)."""
        self._stop.set()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.input, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        next_status = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_status:
                    self._publish_status()
                    next_status = now + self.config.status_interval_s
                timeout_ms = max(0, min(100, int((next_status - now) * 1000) + 1))
                events = dict(poller.poll(timeout_ms))
                if self.control in events:
                    self._serve_control()
                if self.input in events:
                    self._process_queued()
        finally:
            self._publish_status()
            log.info("worker %s stopping: %s", self.worker_id, self.counters)
            self.close()

    def _process_queued(self) -> None:
        # (message or None, error or None, receipt time) in input order
        pending: list[tuple[protocol.SpectraMessage | None, protocol.ProtocolError | None, float]] = []
        n_spectra = 0
        # bounded in messages too, so a flood of bad messages cannot starve control and status
        while n_spectra < self.config.max_batch and len(pending) < self.config.max_batch:
            try:
                frames = self.input.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            received = time.perf_counter()
            self.counters["received"] += 1
            try:
                message = protocol.decode_spectra(frames, n_expected=self.model.n_secondary)
            except protocol.ProtocolError as exc:
                pending.append((None, exc, received))
                continue
            pending.append((message, None, received))
            n_spectra += message.k
        if not pending:
            return
        self.counters["accepted_spectra"] += n_spectra
        valid = [m for m, _, _ in pending if m is not None]
        outputs, failure = None, None
        if valid:
            try:
                outputs = self.model.run(as_model_input([m.spectra for m in valid]))
                self.counters["batches"] += 1
                self._batch_sizes.add(n_spectra)
            except Exception as exc:  # keep serving whatever one batch does to the runtime
                log.exception("inference failed on a batch of %d spectra", n_spectra)
                failure = f"inference failed: {exc}"
        row = 0
        for message, error, received in pending:
            if error is None and failure is not None:
                error = protocol.ProtocolError("inference", failure, in_seq=message.seq,
                                               source=message.echo.get("source"))
            if error is not None:
                self._publish_error(error)
                if message is not None:
                    row += message.k
                continue
            rows = slice(row, row + message.k)
            row += message.k
            latency = time.perf_counter() - received
            frames = protocol.encode_transfer(
                outputs["primary"][rows], seq=self._seq["transfer"], in_seq=message.seq, single=message.single,
                label=outputs["label"][rows], novelty=outputs["novelty"][rows], model=self.model.model_id,
                latency_s=latency, echo=message.echo, worker=self.worker_id,
                expected_rel_error=(outputs["expected_rel_error"][rows] if "expected_rel_error" in outputs else None))
            self.output.send_multipart(frames, copy=False)
            self._seq["transfer"] += 1
            self.counters["published"] += 1
            self.counters["published_spectra"] += message.k
            self._window.add(message.k, latency)

    def _publish_error(self, error: protocol.ProtocolError) -> None:
        self.counters["rejected"] += 1
        log.warning("rejected input: %s", error.reason)
        self.output.send_multipart(protocol.encode_error(
            error.reason, code=error.code, seq=self._seq["error"], in_seq=error.in_seq, source=error.source,
            worker=self.worker_id))
        self._seq["error"] += 1

    def stats(self) -> dict:
        batch_mean = self._batch_sizes.mean_count()
        return {
            **self.counters,
            "throughput_spectra_s": round(self._window.rate(), 3),
            "latency_s": self._window.latency(),
            "batch_mean": None if batch_mean is None else round(batch_mean, 2),
            "model": self.model.model_id,
            "worker": self.worker_id,
            "uptime_s": round(time.monotonic() - self._started, 3),
        }

    def _publish_status(self, **extra) -> None:
        if self.output.closed:
            return
        fields = {"seq": self._seq["status"], **self.stats(), "t": time.time(), **extra}
        self.output.send_multipart(protocol.encode_status(fields))
        self._seq["status"] += 1

    def _serve_control(self) -> None:
        try:
            frames = self.control.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        req, problem = parse_request(frames)
        if problem:
            reply = {"ok": False, "error": problem}
        elif req["cmd"] == "ping":
            reply = {"ok": True, "ready": True, "v": protocol.VERSION, "worker": self.worker_id,
                     "model": self.model.model_id, "n_secondary": self.model.n_secondary,
                     "n_primary": self.model.n_primary, "endpoints": self.endpoints}
        elif req["cmd"] == "stats":
            reply = {"ok": True, **self.stats()}
        elif req["cmd"] == "model":
            reply = {"ok": True, **self.model.describe()}
        else:  # hello
            self._publish_status(hello=str(req.get("token", "")))
            reply = {"ok": True, "worker": self.worker_id}
        self.control.send(json.dumps(reply).encode())

    def close(self) -> None:
        for name in ("control", "input", "output"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context and not self.context.closed:
            self.context.term()
