"""Shared plumbing of the message-based drivers: a pyvisa session with named
errors, and a small descriptor for settings declared as query/set command pairs.

The drivers open their resource through pyvisa's pure-Python backend
(``ResourceManager("@py")``; serial lines go through pyserial) unless a
resource manager is passed in, e.g. a pyvisa-sim one for tests.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import pyvisa
import pyvisa.constants
import pyvisa.errors

from drivers.errors import InstrumentConnectionError, InstrumentTimeout, ProtocolError

log = logging.getLogger(__name__)


def in_range(lo: float, hi: float, unit: str = "") -> Callable[[str, Any], Any]:
    """A validator that accepts numbers in [lo, hi] and names the setting otherwise."""

    def check(name: str, value: Any) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if not lo <= number <= hi:
            raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}]{' ' + unit if unit else ''}, "
                             f"got {value!r}")
        return value
    return check


class Setting:
    """A driver property read with one command and written with another.

    ``query`` is sent through the driver's ``ask`` and its reply given to
    ``parse``; on assignment the value is checked by ``validate(name, value)``,
    converted by ``encode`` and formatted into ``command`` for the driver's
    ``configure`` (which checks the instrument accepted it).
    """

    def __init__(self, query: str | None, command: str | None = None, *,
                 parse: Callable[[str], Any] = str, encode: Callable[[Any], Any] = lambda v: v,
                 validate: Callable[[str, Any], Any] | None = None, doc: str = "") -> None:
        self.query, self.command = query, command
        self.parse, self.encode, self.validate = parse, encode, validate
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        if self.query is None:
            raise AttributeError(f"{self.name} is write-only")
        reply = instance.ask(self.query)
        try:
            return self.parse(reply)
        except (ValueError, KeyError, IndexError) as exc:
            raise ProtocolError(f"{instance.name}: cannot parse reply {reply!r} to "
                                f"{self.query!r} as {self.name}: {exc}") from None

    def __set__(self, instance: Any, value: Any) -> None:
        if self.command is None:
            raise AttributeError(f"{self.name} is read-only")
        if self.validate is not None:
            value = self.validate(self.name, value)
        instance.configure(self.command.format(self.encode(value)))


class VisaInstrument:
    """A message-based instrument session with explicit timeouts and named errors."""

    name = "instrument"

    def __init__(self, resource: str, *, timeout_s: float, resource_manager=None,
                 read_termination: str | None = "\r\n", write_termination: str = "\r\n",
                 **open_kwargs: Any) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.resource_name = resource
        self.timeout_s = timeout_s
        self._lock = threading.RLock()
        self._closed = False
        try:
            self._rm = resource_manager or pyvisa.ResourceManager("@py")
            self._session = self._rm.open_resource(
                resource, timeout=int(round(timeout_s * 1000)),
                read_termination=read_termination, write_termination=write_termination,
                **open_kwargs)
        except (pyvisa.errors.Error, OSError, ValueError) as exc:
            raise InstrumentConnectionError(f"{self.name}: cannot open {resource!r}: {exc}") from exc
        self._read_termination = (read_termination or "").encode("ascii")

    # ------------------------------------------------------------ transport
    def _io(self, what: str, action: Callable[[], Any]) -> Any:
        if self._closed:
            raise InstrumentConnectionError(f"{self.name}: session to {self.resource_name!r} "
                                            f"is closed ({what})")
        try:
            return action()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise InstrumentTimeout(f"{self.name}: no reply to {what} within "
                                        f"{self.timeout_s:g} s") from None
            raise InstrumentConnectionError(f"{self.name} at {self.resource_name}: link error "
                                            f"on {what}: {exc}") from exc
        except (pyvisa.errors.Error, OSError) as exc:
            raise InstrumentConnectionError(f"{self.name} at {self.resource_name}: link error "
                                            f"on {what}: {exc}") from exc

    def write(self, command: str) -> None:
        log.debug("%s <- %r", self.name, command)
        with self._lock:
            self._io(repr(command), lambda: self._session.write(command))

    def read(self, what: str = "read") -> str:
        with self._lock:
            raw = self._io(what, self._session.read_raw)
        if self._read_termination and raw.endswith(self._read_termination):
            raw = raw[:-len(self._read_termination)]
        return self._decode(raw, what)

    def read_bytes(self, count: int, what: str = "read") -> bytes:
        with self._lock:
            return self._io(what, lambda: self._session.read_bytes(count))

    def query(self, command: str) -> str:
        with self._lock:
            self.write(command)
            reply = self.read(repr(command))
        log.debug("%s -> %r", self.name, reply)
        return reply

    def _decode(self, raw: bytes, what: str) -> str:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"{self.name}: garbled reply to {what}: {raw!r}") from None
        if any(not (c.isprintable() or c in "\r\n") for c in text):
            raise ProtocolError(f"{self.name}: garbled reply to {what}: {raw!r}")
        return text

    def close_transport(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._session.close()
            except (pyvisa.errors.Error, OSError) as exc:
                log.warning("%s: closing %s failed: %s", self.name, self.resource_name, exc)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # drivers override to make the instrument safe first
        self.close_transport()
