"""The live-transfer worker: PULL secondary spectra, run the model, PUB results (spec/stream-protocol.md).

One thread owns all sockets. Each turn it drains whatever is queued on the input (up to
``max_batch`` spectra, never waiting for more), runs one inference over it and publishes
one message per input message in input order. At low rates a batch is one message, so
latency is one inference; under load batches grow and the per-call cost is shared.

Hostile or heavy input is bounded (spec/stream-protocol.md, "Limits"): every message is
decoded under limits derived from the model (protocol.Limits); ZeroMQ refuses frames larger
than the largest valid one and queues at most ``queue_bytes`` of them per producer, so a
producer that outruns the worker blocks on its PUSH; whatever one message does ends in one
error reply, never in the worker's end. A stop is only recorded by ``stop()`` (a plain
attribute write, safe in a signal handler however often it comes) and acted on by the loop.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from . import protocol
from .control import parse_request
from .model import PipelineSession, as_model_input
from .security import ServerKeys, require_keys_for
from .stats import RateWindow

log = logging.getLogger(__name__)

DEFAULT_INPUT = "tcp://127.0.0.1:5557"
DEFAULT_OUTPUT = "tcp://127.0.0.1:5558"
DEFAULT_CONTROL = "tcp://127.0.0.1:5559"
CONTROL_MAX_FRAME_BYTES = 1 << 20


@dataclass
class WorkerConfig:
    model: str | os.PathLike
    input: str = DEFAULT_INPUT
    output: str = DEFAULT_OUTPUT
    control: str = DEFAULT_CONTROL
    threads: int | None = None          # ONNX Runtime intra-op threads; None: one per core
    spin: bool = False                  # let ONNX Runtime's pool threads spin (a machine to itself)
    max_batch: int = 256                # spectra per inference
    max_message_spectra: int = protocol.MAX_SPECTRA_PER_MESSAGE   # spectra per input message
    queue_bytes: int = 256 << 20        # input queued per producer connection, in bytes
    status_interval_s: float = 1.0
    output_hwm: int = 20_000            # messages queued per slow subscriber before it misses some
    keys: ServerKeys | None = None
    ready_file: str | os.PathLike | None = None   # JSON with the bound endpoints, once ready


class TransferWorker:
    """Load the model, bind the sockets, serve until :meth:`stop`."""

    def __init__(self, config: WorkerConfig, *, context: zmq.Context | None = None):
        require_keys_for([config.input, config.output, config.control], config.keys is not None)
        self.config = config
        if config.max_batch < 1 or config.max_message_spectra < 1 or config.queue_bytes < 1:
            raise ValueError("max_batch, max_message_spectra and queue_bytes must be positive")
        self.model = PipelineSession(config.model, threads=config.threads, spin=config.spin)
        self.limits = protocol.Limits(spectra_per_message=config.max_message_spectra, n_pixels=self.model.n_secondary)
        self.max_frame_bytes = self.limits.frame_bytes()
        # ZeroMQ counts queued messages, not bytes: as many of the largest valid ones as fit the budget
        self.input_hwm = max(2, config.queue_bytes // self.limits.message_bytes())
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
        self.context = context or zmq.Context()
        self._own_context = context is None
        self._stop_requested = False
        self._auth = None
        self.endpoints: dict[str, str] = {}
        self.counters = {"received": 0, "accepted_spectra": 0, "published": 0, "published_spectra": 0,
                         "rejected": 0, "batches": 0, "internal_errors": 0}
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
            # a larger frame is dropped by ZeroMQ (and its connection closed) before it is buffered
            self.input.maxmsgsize = self.max_frame_bytes
            self.input.rcvhwm = self.input_hwm
            self.input.linger = 0
            self.endpoints["input"] = self._bind_one(self.input, cfg.input)
            # control last: a ping answered means everything else is bound and the model loaded
            self.control = self._socket(zmq.REP)
            self.control.linger = 0
            # requests are a few bytes of JSON; a huge one is dropped by ZeroMQ before it is buffered
            self.control.maxmsgsize = CONTROL_MAX_FRAME_BYTES
            self.control.rcvhwm = 16
            self.endpoints["control"] = self._bind_one(self.control, cfg.control)
        except Exception:
            self.close()
            raise
        log.info("worker %s ready: input %s, output %s, control %s", self.worker_id, self.endpoints["input"],
                 self.endpoints["output"], self.endpoints["control"])
        log.info("input limits: %d spectra per message, frames up to %.1f MB, %d messages (%.0f MB) queued "
                 "per producer", cfg.max_message_spectra, self.max_frame_bytes / 1e6, self.input_hwm,
                 self.input_hwm * self.limits.message_bytes() / 1e6)
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
        """Ask the loop to finish its in-flight batch and return.

        Only an attribute write: no lock, so a signal handler may call it at any moment, any
        number of times, even while an earlier call is still running.
        """
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.input, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        next_status = time.monotonic()
        try:
            while not self._stop_requested:
                now = time.monotonic()
                try:
                    if now >= next_status:
                        self._publish_status()
                        next_status = now + self.config.status_interval_s
                    timeout_ms = max(0, min(100, int((next_status - now) * 1000) + 1))
                    events = dict(poller.poll(timeout_ms))
                    if self.control in events:
                        self._serve_control()
                    if self.input in events:
                        self._process_queued()
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.ETERM:
                        raise
                    self._internal_error("socket", exc)
                except Exception as exc:  # whatever one turn does, the worker serves the next
                    self._internal_error("turn", exc)
        finally:
            try:
                self._publish_status()
            except Exception:
                log.exception("could not publish the final status")
            log.info("worker %s stopping: %s", self.worker_id, self.counters)
            self.close()

    def _internal_error(self, where: str, exc: BaseException) -> None:
        self.counters["internal_errors"] += 1
        log.exception("internal error (%s), serving on: %s", where, exc)

    def _decode(self, frames) -> protocol.SpectraMessage | protocol.MessageError:
        try:
            return protocol.decode_spectra(frames, limits=self.limits)
        except protocol.MessageError as exc:
            return exc
        except Exception as exc:  # a decoder bug must cost one message, not the worker
            self._internal_error("decode", exc)
            return protocol.MessageError("internal", f"the worker could not decode this message "
                                         f"({type(exc).__name__}); it is logged")

    def _process_queued(self) -> None:
        # (message or its error, receipt time) in input order
        pending: list[tuple[protocol.SpectraMessage | protocol.MessageError, float]] = []
        n_spectra = 0
        # bounded in messages too, so a flood of bad messages cannot starve control and status;
        # the spectra bound keeps what is held here under max_batch + one message's worth of bytes
        while n_spectra < self.config.max_batch and len(pending) < self.config.max_batch:
            try:
                frames = self.input.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            received = time.perf_counter()
            self.counters["received"] += 1
            message = self._decode(frames)
            del frames
            pending.append((message, received))
            if isinstance(message, protocol.SpectraMessage):
                n_spectra += message.k
        if not pending:
            return
        self.counters["accepted_spectra"] += n_spectra
        valid = [m for m, _ in pending if isinstance(m, protocol.SpectraMessage)]
        outputs, failure = None, None
        if valid:
            try:
                outputs = self.model.run(as_model_input([m.spectra for m in valid]))
                self.counters["batches"] += 1
                self._batch_sizes.add(n_spectra)
            except Exception as exc:  # keep serving whatever one batch does to the runtime
                log.exception("inference failed on a batch of %d spectra", n_spectra)
                failure = f"inference failed: {str(exc)[:200]}"
        row = 0
        for message, received in pending:
            if isinstance(message, protocol.MessageError):
                self._publish_error(message)
                continue
            rows = slice(row, row + message.k)
            row += message.k
            try:
                self._publish_result(message, outputs, rows, received, failure)
            except Exception as exc:  # e.g. a model output that cannot be encoded: one error reply
                self._internal_error("publish", exc)
                self._publish_error(self._message_error(message, "internal", "the worker could not publish this "
                                                        f"result ({type(exc).__name__}); it is logged"))

    @staticmethod
    def _message_error(message: protocol.SpectraMessage, code: str, reason: str) -> protocol.MessageError:
        return protocol.MessageError(code, f"message seq {message.seq}: {reason}", in_seq=message.seq,
                                     source=message.echo.get("source"))

    def _publish_result(self, message: protocol.SpectraMessage, outputs: dict | None, rows: slice, received: float,
                        failure: str | None) -> None:
        if failure is not None:
            self._publish_error(self._message_error(message, "inference", failure))
            return
        finite = outputs["finite"][rows]
        if not finite.all():
            bad = int(finite.argmin())
            self._publish_error(self._message_error(
                message, "non-finite", f"spectrum {bad} overflows in the model's preprocessing (its values are "
                f"too large for float32 arithmetic); no result"))
            return
        latency = time.perf_counter() - received
        frames = protocol.encode_transfer(
            outputs["primary"][rows], seq=self._seq["transfer"], in_seq=message.seq, single=message.single,
            label=outputs["label"][rows], novelty=outputs["novelty"][rows], model=self.model.model_id,
            latency_s=latency, echo=message.echo, worker=self.worker_id)
        self.output.send_multipart(frames, copy=False)
        self._seq["transfer"] += 1
        self.counters["published"] += 1
        self.counters["published_spectra"] += message.k
        self._window.add(message.k, latency)

    def _publish_error(self, error: protocol.MessageError) -> None:
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

    def _status_fields(self, **extra) -> dict:
        return {"seq": self._seq["status"], **self.stats(), "t": time.time(), **extra}

    def _publish_status(self, **extra) -> None:
        if self.output.closed:
            return
        self.output.send_multipart(protocol.encode_status(self._status_fields(**extra)))
        self._seq["status"] += 1

    def _serve_control(self) -> None:
        try:
            frames = self.control.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            reply = self._control_reply(frames)
            data = json.dumps(reply, allow_nan=False).encode()
        except Exception as exc:  # REP must answer every request, or the socket is stuck
            self._internal_error("control", exc)
            data = json.dumps({"ok": False, "error": f"internal error ({type(exc).__name__}); it is logged"}).encode()
        self.control.send(data)

    def _limits_reply(self) -> dict:
        return {"max_message_spectra": self.limits.spectra_per_message, "max_header_bytes": self.limits.header_bytes,
                "max_json_depth": self.limits.json_depth, "max_frame_bytes": self.max_frame_bytes,
                "max_message_bytes": self.limits.message_bytes(),
                "input_hwm_messages": self.input_hwm, "max_batch": self.config.max_batch}

    def _control_reply(self, frames) -> dict:
        req, problem = parse_request(frames)
        if problem:
            return {"ok": False, "error": problem}
        if req["cmd"] == "ping":
            return {"ok": True, "ready": True, "v": protocol.VERSION, "worker": self.worker_id,
                    "model": self.model.model_id, "n_secondary": self.model.n_secondary,
                    "n_primary": self.model.n_primary, "endpoints": self.endpoints, "limits": self._limits_reply()}
        if req["cmd"] == "stats":
            # the same fields as a status message (docs/streaming.md), "seq" the next status's
            return {"ok": True, **self._status_fields()}
        if req["cmd"] == "model":
            return {"ok": True, **self.model.describe(), "limits": self._limits_reply()}
        # hello: the token is bounded by parse_request
        self._publish_status(hello=req.get("token", ""))
        return {"ok": True, "worker": self.worker_id}

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
