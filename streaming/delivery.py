"""Delivery accounting for a producer: which input seqs got a result, an error, or nothing.

A thread watches the workers' PUB sockets for ``transfer`` and ``error`` messages that carry
this producer's ``source``, and hands this producer's ``transfer`` messages to ``on_result``
(if given) before counting them delivered: the one SUB socket serves both the accounting and
the results. A message with no answer within ``ack_timeout_s`` is reported lost. Results published while the watcher's SUB socket is not connected cannot be seen, so
after every (re)connection of its PUSH socket the producer calls :meth:`sync` before it
sends again: a ``hello`` through the worker's control socket, answered on the PUB.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import zmq

from . import control
from .protocol import StreamMessage
from .security import ClientKeys
from .subscriber import ResultSubscriber

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    """What became of every message submitted to a LiveProducer."""

    submitted: int
    sent: int
    delivered: int                     # a transfer result came back (only when results are watched)
    rejected: dict[int, str]           # input seq -> the worker's error reason
    dropped: list[int]                 # never sent: queue full or no worker
    lost: list[int]                    # sent, but no result within ack_timeout_s
    unsent: list[int]                  # still queued when the producer closed
    confirmed: bool                    # results were watched; otherwise sent counts as delivered
    late: int = 0                      # results that came after their seq had been reported lost
    undelivered: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.undelivered = sorted({*self.dropped, *self.lost, *self.unsent})


class DeliveryTracker:
    """Pending / delivered / rejected / lost bookkeeping fed by a result-watching thread."""

    def __init__(self, source: str, results: list[str], *, controls: list[str] | None, keys: ClientKeys | None,
                 ack_timeout_s: float, context: zmq.Context,
                 on_result: Callable[[StreamMessage], None] | None = None):
        self.source = source
        self.on_result = on_result
        self.controls = controls or []
        self.keys = keys
        self.ack_timeout_s = ack_timeout_s
        self.context = context
        self.lock = threading.Lock()
        self.pending: dict[int, float] = {}      # seq -> monotonic send time, in send order
        self.lost: set[int] = set()
        self.rejected: dict[int, str] = {}
        self.delivered = 0
        self.late = 0
        self._statuses = 0
        self._tokens: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self.subscriber = ResultSubscriber(results, topics=("transfer", "error", "status"), keys=keys,
                                           context=context)
        self._thread: threading.Thread | None = None

    def start(self, ready_timeout_s: float) -> None:
        try:
            self.subscriber.wait_ready(self.controls or None, timeout_s=ready_timeout_s)
        except (TimeoutError, control.ControlError) as exc:  # acquisition goes on; losses get reported
            log.warning("live stream: worker not ready (%s); spectra will be queued or dropped and reported", exc)
        self._thread = threading.Thread(target=self._watch, name="live-acks", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ called by the sender

    def sending(self, seq: int) -> None:
        """Register before the send: the result can come back before send() returns."""
        with self.lock:
            self.pending[seq] = time.monotonic()

    def not_sent(self, seq: int) -> None:
        with self.lock:
            self.pending.pop(seq, None)

    def sync(self, endpoint_index: int | None, timeout_s: float, abandon: threading.Event) -> bool:
        """Block until this tracker's SUB provably receives what the (re)connected worker publishes."""
        deadline = time.monotonic() + timeout_s
        if endpoint_index is not None and endpoint_index < len(self.controls):
            address = self.controls[endpoint_index]
            token = os.urandom(8).hex()
            seen = self._tokens[token] = threading.Event()
            try:
                while time.monotonic() < deadline and not abandon.is_set():
                    try:
                        control.request(address, {"cmd": "hello", "token": token}, timeout_s=0.5, keys=self.keys,
                                        context=self.context)
                    except control.ControlError:
                        continue
                    if seen.wait(0.25):
                        return True
            finally:
                del self._tokens[token]
            return False
        # no control address: any status arriving from now on shows the SUB is connected
        start = self._statuses
        while time.monotonic() < deadline and not abandon.is_set():
            if self._statuses > start:
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ watching

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                message = self.subscriber.recv(timeout_s=0.05)
                if message is not None:
                    if message.topic == "status":
                        self._statuses += 1
                        event = self._tokens.get(message.header.get("hello", ""))
                        if event is not None:
                            event.set()
                    elif message.header.get("source") == self.source:
                        if message.topic == "transfer" and self.on_result is not None:
                            self._hand_over(message)
                        self._acknowledge(message)
                self._expire()
        finally:
            self.subscriber.close()

    def _hand_over(self, message: StreamMessage) -> None:
        try:
            self.on_result(message)
        except Exception:  # the consumer's bug must not end the accounting
            log.exception("live stream: the result consumer failed on result %s", message.in_seq)

    def _acknowledge(self, message: StreamMessage) -> None:
        in_seq = message.in_seq
        with self.lock:
            if in_seq in self.pending:
                del self.pending[in_seq]
            elif in_seq in self.lost:
                self.lost.discard(in_seq)
                self.late += 1
            else:
                return
            if message.topic == "error":
                self.rejected[in_seq] = message.header.get("reason", "")
            else:
                self.delivered += 1

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ack_timeout_s
        with self.lock:
            expired = []
            for seq, sent_at in self.pending.items():
                if sent_at > cutoff:
                    break
                expired.append(seq)
            for seq in expired:
                del self.pending[seq]
            self.lost.update(expired)
        if expired:
            log.warning("live stream: no result for %d message(s) within %.1f s: %s", len(expired),
                        self.ack_timeout_s, ranges(expired))

    def finish(self, deadline: float) -> None:
        """Wait for outstanding results until ``deadline``, then call the rest lost."""
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    break
            time.sleep(0.02)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self.lock:
            self.lost.update(self.pending)
            self.pending.clear()


def ranges(seqs) -> str:
    """'3-7, 12' for [3, 4, 5, 6, 7, 12]."""
    out: list[str] = []
    start = prev = None
    for s in sorted(seqs):
        if start is not None and s == prev + 1:
            prev = s
            continue
        if start is not None:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = s
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(out)
