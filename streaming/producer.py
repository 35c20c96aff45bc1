"""Sending secondary spectra to the worker(s).

:class:`SpectrumPusher` is the plain producer of the spec: a full queue blocks it, nothing
is dropped (replays, benchmarks). :class:`LiveProducer` is for acquisition, which must
never wait for the stream: ``submit()`` hands a spectrum to a bounded queue drained by a
sender thread, and drops (and counts) when the queue is full or no worker is there. Given
the workers' output addresses it also watches the results and reports, by input seq,
every message that never got one (see :mod:`streaming.delivery`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from . import protocol
from .delivery import DeliveryReport, DeliveryTracker, ranges
from .security import ClientKeys

log = logging.getLogger(__name__)

__all__ = ["DeliveryReport", "LiveProducer", "SendTimeout", "SpectrumPusher"]


class SendTimeout(TimeoutError):
    """No worker took a message within the pusher's ``send_timeout_s``."""


def _push_socket(context: zmq.Context, inputs: list[str], keys: ClientKeys | None, sndhwm: int,
                 immediate: bool) -> zmq.Socket:
    sock = context.socket(zmq.PUSH)
    sock.sndhwm = sndhwm
    # immediate: queue only to workers whose connection is up, so "no worker" shows as not writable
    sock.immediate = immediate
    if keys is not None:
        keys.apply(sock)
    for address in inputs:  # several workers: ZeroMQ deals messages round-robin among them
        sock.connect(address)
    return sock


class SpectrumPusher:
    """Blocking PUSH to one or more workers' input addresses.

    Large messages are sent zero-copy, so the pusher owns its ZeroMQ context and
    :meth:`close` terminates it: that waits until ZeroMQ has let go of every buffer.
    """

    def __init__(self, inputs: str | list[str], *, keys: ClientKeys | None = None, context: zmq.Context | None = None,
                 system: str | None = None, source: str | None = None, sndhwm: int = 1000,
                 send_timeout_s: float | None = None):
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        self.socket = _push_socket(self.context, self.inputs, keys, sndhwm, immediate=False)
        self.send_timeout_s = send_timeout_s
        if send_timeout_s is not None:
            self.socket.sndtimeo = int(send_timeout_s * 1000)
        self.system = system
        self.source = source
        self.seq = 0

    def send(self, spectra: np.ndarray, *, shot=None, iy=None, ix=None, t: float | None = None) -> int:
        """Send [n] or [k, n] spectra as one message; returns its seq.

        Blocks while the workers' queues are full (the spec's back-pressure); with a
        ``send_timeout_s``, raises SendTimeout when that lasts longer.
        """
        seq = self.seq
        frames = protocol.encode_spectra(spectra, seq, shot=shot, iy=iy, ix=ix, t=time.time() if t is None else t,
                                         system=self.system, source=self.source)
        try:
            self.socket.send_multipart(frames, copy=False)
        except zmq.Again:
            raise SendTimeout(f"no worker took message {seq} within {self.send_timeout_s:g} s at "
                              f"{', '.join(self.inputs)}") from None
        self.seq += 1
        return seq

    def close(self, linger_s: float | None = None) -> None:
        """Deliver what is queued (for ever by default: the spec's producer never drops), then close."""
        self.socket.close(linger=-1 if linger_s is None else int(linger_s * 1000))
        if self._own_context:
            self.context.term()


class LiveProducer:
    """Non-blocking producer for acquisition; see the module docstring.

    ``results`` / ``controls``: the workers' PUB and control addresses, in the same order as
    ``inputs``, for delivery confirmation; ``on_result(message)`` is called (on the watching
    thread) with each ``transfer`` result of this producer. Without ``results`` a sent message counts as
    delivered and only local drops are reported; without ``controls`` re-synchronising after
    a reconnection waits for the worker's next periodic status.
    """

    def __init__(self, inputs: str | list[str], *, results: str | list[str] | None = None,
                 controls: str | list[str] | None = None, keys: ClientKeys | None = None, queue_size: int = 1024,
                 ack_timeout_s: float = 5.0, system: str | None = None, source: str | None = None,
                 context: zmq.Context | None = None, sndhwm: int = 100, sync_timeout_s: float = 5.0,
                 on_result: Callable[[protocol.StreamMessage], None] | None = None):
        self.inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        self.source = source or f"producer-{os.getpid()}-{os.urandom(3).hex()}"
        self.system = system
        self.keys = keys
        self.context = context or zmq.Context.instance()
        self.sync_timeout_s = sync_timeout_s
        self._sndhwm = sndhwm
        results = [results] if isinstance(results, str) else list(results or [])
        controls = [controls] if isinstance(controls, str) else list(controls or [])
        self._tracker = DeliveryTracker(self.source, results, controls=controls, keys=keys,
                                        ack_timeout_s=ack_timeout_s, context=self.context,
                                        on_result=on_result) if results else None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._next_seq = 0
        self._sent = 0
        self._dropped: list[int] = []
        self._unsent: list[int] = []
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._sender: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self, *, ready_timeout_s: float = 5.0) -> "LiveProducer":
        if self._tracker is not None:
            self._tracker.start(ready_timeout_s)
        self._sender = threading.Thread(target=self._send_loop, name="live-sender", daemon=True)
        self._sender.start()
        return self

    def __enter__(self) -> "LiveProducer":
        return self.start() if self._sender is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, spectra: np.ndarray, *, shot=None, iy=None, ix=None) -> int:
        """Queue [n] or [k, n] spectra as one message and return its seq; never blocks."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        try:
            self._queue.put_nowait((seq, np.array(spectra, copy=True), shot, iy, ix, time.time()))
        except queue.Full:
            with self._lock:
                self._dropped.append(seq)
                n = len(self._dropped)
            if n == 1 or n % 1000 == 0:
                log.warning("live stream: worker away or not keeping up; %d message(s) dropped so far "
                            "(latest seq %d)", n, seq)
        return seq

    def close(self, timeout_s: float = 10.0) -> DeliveryReport:
        """Send what is queued and wait for its results (up to ``timeout_s``), then report."""
        if self._closing.is_set():
            return self.report()
        deadline = time.monotonic() + timeout_s
        self._closing.set()
        if self._sender is not None:
            self._sender.join(max(0.0, deadline - time.monotonic()))
            if self._sender.is_alive():
                self._abandon.set()
                self._sender.join()
        if self._tracker is not None:
            self._tracker.finish(deadline)
        report = self.report()
        if report.undelivered:
            log.warning("live stream: %d of %d messages got no result: %s", len(report.undelivered),
                        report.submitted, ranges(report.undelivered))
        return report

    # ------------------------------------------------------------------ state

    @property
    def dropped(self) -> int:
        with self._lock:
            return len(self._dropped)

    @property
    def undelivered(self) -> list[int]:
        """Input seqs known never to have produced a result (so far)."""
        return self.report().undelivered

    def report(self) -> DeliveryReport:
        with self._lock:
            submitted, sent, dropped, unsent = self._next_seq, self._sent, list(self._dropped), list(self._unsent)
        tracker = self._tracker
        if tracker is None:
            return DeliveryReport(submitted=submitted, sent=sent, delivered=sent, rejected={}, dropped=dropped,
                                  lost=[], unsent=unsent, confirmed=False)
        with tracker.lock:
            return DeliveryReport(submitted=submitted, sent=sent, delivered=tracker.delivered,
                                  rejected=dict(tracker.rejected), dropped=dropped, lost=sorted(tracker.lost),
                                  unsent=unsent, confirmed=True, late=tracker.late)

    # ------------------------------------------------------------------ sender thread

    def _links(self) -> list["_Link"]:
        if self._tracker is None:
            # nothing to confirm: one socket, ZeroMQ's own round-robin over the workers
            return [_Link(None, _push_socket(self.context, self.inputs, self.keys, self._sndhwm, True), None, True)]
        # one socket per worker, so a worker that (re)connects gets nothing before it is synced
        links = []
        for index, address in enumerate(self.inputs):
            sock = _push_socket(self.context, [], self.keys, self._sndhwm, True)
            # monitor before connecting, or the first handshake may go unseen
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            sock.connect(address)
            links.append(_Link(index, sock, monitor, False))
        return links

    def _send_loop(self) -> None:
        links = self._links()
        turn = 0
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    if self._closing.is_set():
                        return
                    continue
                seq, spectra, shot, iy, ix, t = item
                frames = protocol.encode_spectra(spectra, seq, shot=shot, iy=iy, ix=ix, t=t, system=self.system,
                                                 source=self.source)
                while not self._abandon.is_set():
                    for link in links:
                        self._follow_connection(link)
                    link = self._writable([link for link in links if link.ready], turn)
                    if link is None:
                        continue
                    if self._tracker is not None:
                        self._tracker.sending(seq)
                    try:
                        # copied: the sender may be closed with messages still queued in ZeroMQ
                        link.socket.send_multipart(frames, zmq.NOBLOCK)
                    except zmq.Again:
                        if self._tracker is not None:
                            self._tracker.not_sent(seq)
                        continue
                    with self._lock:
                        self._sent += 1
                    turn += 1
                    break
                else:
                    self._give_up(seq)
                    return
        finally:
            for link in links:
                if link.monitor is not None:
                    link.socket.disable_monitor()
                    link.monitor.close()
                link.socket.close(linger=0 if self._abandon.is_set() else 1000)

    @staticmethod
    def _writable(links: list["_Link"], turn: int) -> "_Link | None":
        if not links:
            time.sleep(0.02)
            return None
        poller = zmq.Poller()
        for link in links:
            poller.register(link.socket, zmq.POLLOUT)
        ready = dict(poller.poll(50))
        order = links[turn % len(links):] + links[: turn % len(links)]
        return next((link for link in order if link.socket in ready), None)

    def _follow_connection(self, link: "_Link") -> None:
        # A worker that (re)connected may publish results before our SUB has re-joined its
        # PUB; the hello round trip proves the SUB is there before anything is sent to it.
        while link.monitor is not None and link.monitor.poll(0):
            event = recv_monitor_message(link.monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                link.ready = False
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if not self._tracker.sync(link.index, self.sync_timeout_s, self._abandon):
                    log.warning("live stream: could not confirm the result subscription for %s within %.1f s; "
                                "some results may be reported lost", self.inputs[link.index], self.sync_timeout_s)
                link.ready = True

    def _give_up(self, current: int) -> None:
        unsent = [current]
        while True:
            try:
                unsent.append(self._queue.get_nowait()[0])
            except queue.Empty:
                break
        with self._lock:
            self._unsent.extend(unsent)


@dataclass
class _Link:
    """A PUSH socket to one worker (or to all, when results are not tracked) and its state."""

    index: int | None
    socket: zmq.Socket
    monitor: zmq.Socket | None
    ready: bool
