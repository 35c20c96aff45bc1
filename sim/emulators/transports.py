"""Real transports for the line-protocol emulators, with link fault injection.

Hook API (stable; ``sim/bench/`` builds on it)
------------------------------------------------

Clock
    Every emulator takes ``clock=`` — any object with ``now() -> float`` in
    seconds. :class:`WallClock` (monotonic wall time) is the default. Emulators
    never run timers of their own: every state that depends on time (a stage
    moving, a burst in progress) is computed from ``clock.now()`` when it is
    asked for, so a bench clock that jumps ahead (as-fast-as-possible mode) or
    follows real time works the same.

Emulator protocol (duck-typed, what a transport needs)
    ``handle(line: str) -> list[str]``   one received line (terminator removed)
    in, the reply lines out (without terminator; empty list = no reply).
    ``reply_terminator: str``   appended to every reply line (``"\\r\\n"``).
    ``lock``   a ``threading.RLock`` held while a line is handled; bench code
    that reads or changes emulator state from another thread holds it too.

Transports
    ``TcpLineServer(emulator, faults=None, port=0)`` — loopback TCP server;
    ``resource`` is ``"TCPIP::127.0.0.1::<port>::SOCKET"``.
    ``PtyLineServer(emulator, faults=None)`` — pseudo-terminal;
    ``resource`` is ``"ASRL/dev/pts/N::INSTR"``, ``device_path`` the tty path.
    Both: ``start() -> self``, ``stop()``, context manager, serve in a daemon
    thread, one client at a time (as a serial line or a DG645 socket).

Link faults (:class:`LinkFaults`, attribute ``faults`` of a transport, may be
changed while serving)
    ``no_reply`` — probability that a reply is lost (the command was still
    executed; the client sees a timeout). ``garble`` — probability that a reply
    is corrupted on the wire (a burst of line noise: bytes >= 0x80 replace part
    of it; the terminator survives, so the client reads a framed but
    unparseable reply). ``dead`` — the link is cut: input is dropped and
    nothing is answered. ``rng`` — anything with ``random() -> float`` in
    [0, 1) (``numpy.random.Generator`` or ``random.Random``), seeded by the
    caller so runs are reproducible. ``lost`` / ``garbled`` count injections.
"""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

_POLL_S = 0.05


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    """Monotonic wall time in seconds."""

    def now(self) -> float:
        return time.monotonic()


class LineEmulator(Protocol):
    reply_terminator: str
    lock: Any

    def handle(self, line: str) -> list[str]: ...


@dataclass
class LinkFaults:
    """Faults injected on the wire between an emulator and its client."""

    no_reply: float = 0.0
    garble: float = 0.0
    dead: bool = False
    rng: Any = field(default_factory=lambda: random.Random(0))
    lost: int = 0
    garbled: int = 0

    def __post_init__(self) -> None:
        for name in ("no_reply", "garble"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"LinkFaults.{name} must be a probability in [0, 1], got {p!r}")

    def corrupt(self, payload: bytes, terminator: bytes) -> bytes | None:
        """The bytes that reach the client for one reply, or None if it is lost."""
        if self.no_reply and self.rng.random() < self.no_reply:
            self.lost += 1
            return None
        if self.garble and self.rng.random() < self.garble and payload:
            self.garbled += 1
            start = int(self.rng.random() * len(payload))
            length = 1 + int(self.rng.random() * min(4, len(payload) - start))
            noise = bytes(0x80 + int(self.rng.random() * 0x7F) for _ in range(length))
            payload = payload[:start] + noise + payload[start + length:]
        return payload + terminator


class _LineServer:
    """Splits a byte stream into lines, feeds the emulator, writes its replies."""

    def __init__(self, emulator: LineEmulator, faults: LinkFaults | None) -> None:
        self.emulator = emulator
        self.faults = faults if faults is not None else LinkFaults()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = b""

    def _feed(self, data: bytes, send) -> None:
        if self.faults.dead:
            self._pending = b""
            return
        self._pending += data
        while True:
            cut = [i for i in (self._pending.find(b"\r"), self._pending.find(b"\n")) if i >= 0]
            if not cut:
                return
            end = min(cut)
            raw, self._pending = self._pending[:end], self._pending[end + 1:]
            if not raw.strip():
                continue
            line = raw.decode("ascii", errors="replace")
            with self.emulator.lock:
                replies = self.emulator.handle(line)
            terminator = self.emulator.reply_terminator.encode("ascii")
            for reply in replies:
                wire = self.faults.corrupt(reply.encode("ascii"), terminator)
                if wire is not None:
                    send(wire)

    def start(self):
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._open()
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _open(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _serve(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _ack_at_once(conn: socket.socket) -> None:
    """Acknowledge the segment just received without the ~40 ms delayed ACK.

    A client that writes a setting and then its error query as two small
    segments (Nagle on its side) otherwise waits for our delayed ACK on every
    setting. Linux clears TCP_QUICKACK after each receive, so it is set again
    every time; elsewhere the option does not exist and nothing changes.
    """
    if _TCP_QUICKACK is None:
        return
    try:
        conn.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    except OSError:
        pass  # the peer has gone; the next recv reports it


class TcpLineServer(_LineServer):
    """Loopback TCP server (the DG645's raw-socket LAN interface)."""

    def __init__(self, emulator: LineEmulator, faults: LinkFaults | None = None, *,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(emulator, faults)
        self.host = host
        self._requested_port = port
        self._listener: socket.socket | None = None
        self.port: int | None = None

    @property
    def resource(self) -> str:
        if self.port is None:
            raise RuntimeError("TcpLineServer is not started")
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    def _open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(4)
        listener.settimeout(_POLL_S)
        self._listener = listener
        self.port = listener.getsockname()[1]

    def _close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(_POLL_S)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._pending = b""
                while not self._stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    _ack_at_once(conn)
                    try:
                        self._feed(data, conn.sendall)
                    except OSError:
                        break
                    except Exception:
                        log.exception("emulator failed on input %r", data)


class PtyLineServer(_LineServer):
    """Pseudo-terminal (a serial line: the laser's and the stage's RS-232)."""

    def __init__(self, emulator: LineEmulator, faults: LinkFaults | None = None) -> None:
        super().__init__(emulator, faults)
        self._master: int | None = None
        self._slave: int | None = None
        self.device_path: str | None = None

    @property
    def resource(self) -> str:
        if self.device_path is None:
            raise RuntimeError("PtyLineServer is not started")
        return f"ASRL{self.device_path}::INSTR"

    def _open(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw mode: no echo and no CR/LF translation, as on a real serial line.
        tty.setraw(self._slave)
        self.device_path = os.ttyname(self._slave)

    def _close(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._master, view)
            view = view[written:]

    def _serve(self) -> None:
        # The emulator keeps its own handle on the slave side open, so the
        # master never sees EIO while clients open and close the port.
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], _POLL_S)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                time.sleep(_POLL_S)
                continue
            try:
                self._feed(data, self._write)
            except Exception:
                log.exception("emulator failed on input %r", data)
