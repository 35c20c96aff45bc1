"""Receiving the worker's output: a SUB socket with the readiness handshake and gap detection."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass

import zmq

from . import control, protocol
from .protocol import StreamMessage
from .security import ClientKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gap:
    """Transfer messages ``first``..``last`` (worker seq) of ``worker`` never reached this subscriber."""

    worker: str
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class ResultSubscriber:
    """Subscribe to one or more workers' PUB sockets.

    ``recv()`` returns decoded messages of the requested ``topics``; ``status`` is always
    subscribed (it carries the handshake) and the latest one per worker is kept in
    ``status``. Gaps in each worker's ``transfer`` seq are recorded in ``gaps``.
    """

    def __init__(self, outputs: str | list[str], *, topics=("transfer", "error"), keys: ClientKeys | None = None,
                 context: zmq.Context | None = None, rcvhwm: int = 100_000, reconnect_ivl_ms: int = 100):
        self.outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        self.topics = set(topics)
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.rcvhwm = rcvhwm
        self.socket.reconnect_ivl = reconnect_ivl_ms
        self.socket.linger = 0
        if keys is not None:
            keys.apply(self.socket)
        for topic in self.topics | {"status"}:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for address in self.outputs:
            self.socket.connect(address)
        self.keys = keys
        self.status: dict[str, dict] = {}
        self.gaps: list[Gap] = []
        self._last_seq: dict[str, int] = {}
        self._held: deque[StreamMessage] = deque()
        # workers seen before the handshake completed; one that appears later was (re)started
        # while we listened, so its transfer seq should start at 0 here
        self._present_at_join: set[str] | None = None

    @property
    def missing(self) -> int:
        """How many transfer messages were lost on the way to this subscriber."""
        return sum(g.count for g in self.gaps)

    def wait_ready(self, controls: str | list[str] | None = None, *, timeout_s: float = 10.0) -> None:
        """Return once this SUB socket is connected to every worker, so nothing published after is missed.

        With control addresses: ask each worker to publish a ``status`` carrying a token
        ({"cmd": "hello"}) and wait for it to arrive here; otherwise wait for one periodic
        ``status`` from each output address (about a second).
        """
        try:
            self._handshake(controls, timeout_s)
        finally:
            self._present_at_join = set(self.status) | set(self._last_seq)

    def _handshake(self, controls: str | list[str] | None, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        if controls:
            for address in [controls] if isinstance(controls, str) else controls:
                token = os.urandom(8).hex()
                while True:
                    try:
                        if self._await_status(lambda h: h.get("hello") == token,
                                              min(deadline, time.monotonic() + 0.25), ask=(address, token)):
                            break
                    except control.ControlError:
                        pass   # not up yet: ask again
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"no hello from the worker at {address} on {self.outputs} "
                                           f"within {timeout_s} s")
        else:
            seen: set[str] = set()

            def all_seen(header: dict) -> bool:
                seen.add(header.get("worker"))
                return len(seen) >= len(self.outputs)

            if not self._await_status(all_seen, deadline):
                raise TimeoutError(f"status seen from {len(seen)} of {len(self.outputs)} workers "
                                   f"({self.outputs}) within {timeout_s} s")

    def _await_status(self, accept, deadline: float, ask: tuple[str, str] | None = None) -> bool:
        if ask is not None:
            control.request(ask[0], {"cmd": "hello", "token": ask[1]}, timeout_s=max(0.1, deadline - time.monotonic()),
                            keys=self.keys, context=self.context)
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self.socket.poll(left_ms):
                return False
            message = self._receive()
            if message is None:
                continue
            if message.topic in self.topics:
                self._held.append(message)
            if message.topic == "status" and accept(message.header):
                return True

    def _receive(self) -> StreamMessage | None:
        frames = self.socket.recv_multipart(copy=False)
        try:
            message = protocol.decode_output(frames)
        except protocol.MessageError as exc:
            log.warning("ignoring a malformed output message: %s", exc.reason)
            return None
        worker = message.header.get("worker", "")
        if message.topic == "status":
            self.status[worker] = message.header
        elif message.topic == "transfer":
            seq = message.seq
            last = self._last_seq.get(worker)
            if last is None and self._present_at_join is not None and worker not in self._present_at_join:
                last = -1
            if last is not None and isinstance(seq, int) and seq > last + 1:
                gap = Gap(worker, last + 1, seq - 1)
                self.gaps.append(gap)
                log.warning("missed %d transfer message(s) from worker %s (seq %d-%d)", gap.count, worker,
                            gap.first, gap.last)
            if isinstance(seq, int):
                self._last_seq[worker] = seq
        return message

    def recv(self, timeout_s: float | None = None) -> StreamMessage | None:
        """The next message of the subscribed topics, or None after ``timeout_s``."""
        if self._held:
            return self._held.popleft()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left_ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self.socket.poll(left_ms):
                return None
            message = self._receive()
            if message is not None and message.topic in self.topics:
                return message

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> "ResultSubscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
