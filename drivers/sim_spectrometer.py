"""A spectrometer of the simulated bench, reached over its local socket from another process.

``libs-sim bench`` serves its simulated spectrometers on a loopback TCP port
(``sim.bench.spectrometer_server``); a bench config names it as
``driver = "sim"`` with ``resource = "tcp://127.0.0.1:PORT"``, and this driver
is what ``libs-acquire map --config`` opens for it, so a rehearsal runs the
real drivers and transports for every instrument. The protocol is described
in that module.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import numpy as np

from drivers.errors import InstrumentConnectionError, InstrumentError, InstrumentTimeout, ProtocolError
from drivers.spectrometer import Frame, Spectrometer, check_trigger_mode

# Beyond the timeout a read asks for, the answer may take this long to come back.
REPLY_MARGIN_S = 5.0


class BenchSpectrometer(Spectrometer):
    def __init__(self, system: str, resource: str, *, timeout_s: float = 5.0) -> None:
        where = urlparse(resource)
        if where.scheme != "tcp" or not where.hostname or not where.port:
            raise InstrumentConnectionError(f"{system}: resource {resource!r} is not tcp://HOST:PORT")
        self.name = system
        self.timeout_s = timeout_s
        try:
            self._socket = socket.create_connection((where.hostname, where.port), timeout=timeout_s)
        except OSError as exc:
            raise InstrumentConnectionError(f"{system}: no simulated bench at {resource} ({exc}); "
                                            "start one with `libs-sim bench --write-config FILE`") from exc
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._socket.makefile("rb")
        identity = self._value("open", system=system)
        self.model, self.serial, self._pixels = identity["model"], identity["serial"], int(identity["pixels"])
        self._wavelengths = np.asarray(self._value("wavelengths"), dtype=np.float64)

    def _ask(self, op: str, *, wait_s: float = 0.0, **args):
        try:
            self._socket.settimeout(self.timeout_s + wait_s)
            self._socket.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
            line = self._file.readline()
        except socket.timeout:
            raise InstrumentTimeout(f"{self.name}: no reply to {op!r} from the simulated bench") from None
        except OSError as exc:
            raise InstrumentConnectionError(f"{self.name}: the simulated bench went away ({exc})") from exc
        if not line:
            raise InstrumentConnectionError(f"{self.name}: the simulated bench closed the connection")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise ProtocolError(f"{self.name}: garbled reply {line[:80]!r}") from None
        if "error" in reply:
            kind, message = reply["error"], reply.get("message", "")
            if kind == "timeout":
                raise InstrumentTimeout(message)
            if kind == "value":
                raise ValueError(message)
            raise InstrumentError(message)
        return reply

    def _value(self, op: str, **args):
        return self._ask(op, **args)["ok"]

    @property
    def pixels(self) -> int:
        return self._pixels

    def wavelengths(self) -> np.ndarray:
        return self._wavelengths.copy()

    @property
    def saturation_level(self) -> float:
        return float(self._value("saturation_level"))

    @property
    def gate_delay_s(self) -> float:
        return float(self._value("gate_delay_s"))

    @gate_delay_s.setter
    def gate_delay_s(self, value: float) -> None:
        self._value("set_gate_delay_s", value=float(value))

    @property
    def gate_width_s(self) -> float:
        return float(self._value("gate_width_s"))

    @gate_width_s.setter
    def gate_width_s(self, value: float) -> None:
        self._value("set_gate_width_s", value=float(value))

    @property
    def trigger_mode(self) -> str:
        return str(self._value("trigger_mode"))

    @trigger_mode.setter
    def trigger_mode(self, mode: str) -> None:
        self._value("set_trigger_mode", value=check_trigger_mode(mode))

    def arm(self, n: int) -> None:
        self._value("arm", n=int(n))

    def abort(self) -> None:
        self._value("abort")

    def read(self, timeout_s: float) -> Frame:
        return self.read_batch(1, timeout_s)[0]

    def read_batch(self, max_frames: int, timeout_s: float) -> list[Frame]:
        reply = self._ask("read_batch", wait_s=float(timeout_s) + REPLY_MARGIN_S, max_frames=int(max_frames),
                          timeout_s=float(timeout_s))
        heads, pixels = reply["ok"], int(reply["pixels"])
        nbytes = 4 * pixels * len(heads)
        payload = self._file.read(nbytes)
        if len(payload) != nbytes:
            raise InstrumentConnectionError(f"{self.name}: frames cut short by the simulated bench")
        counts = np.frombuffer(payload, dtype="<f4").reshape(len(heads), pixels)
        return [Frame(counts[i].copy(), int(frame), float(t), bool(saturated))
                for i, (frame, t, saturated) in enumerate(heads)]

    def close(self) -> None:
        try:
            self._socket.close()
        except OSError:
            pass
