"""Zaber XY stage over the Zaber ASCII protocol (two axes, each a (device, axis) pair).

Positions are in micrometres at the API and microsteps on the wire
(``microstep_um`` per microstep). Rejections (``RJ``) raise
:class:`StageRejected` with the device's reason; fault flags (``F*``, e.g. FS
stalled and stopped) raise :class:`StageFault` while waiting for a move.

Example::

    with ZaberXYStage("ASRL/dev/ttyUSB1::INSTR", x_axis=(1, 1), y_axis=(2, 1)) as stage:
        stage.home()
        stage.set_speed(5000)                  # um/s
        stage.move_to(12_500.0, 40_000.0)      # waits until both axes are idle
        x_um, y_um = stage.position_um
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from drivers.errors import InstrumentError, InstrumentTimeout, ProtocolError, StageFault, StageRejected
from drivers.visa_instrument import VisaInstrument

BAUD_RATE = 115200
DEFAULT_MICROSTEP_UM = 0.047625   # lead-screw stages at the default resolution (64)
SPEED_UNITS_PER_USTEP_S = 1.6384  # maxspeed data units per microstep/s

_REPLY = re.compile(r"^@(\d+) (\d+)(?: (\d+))? (OK|RJ) (IDLE|BUSY) (\S\S) ?(.*?)(?::([0-9A-Fa-f]{2}))?$")


def checksum(body: str) -> int:
    """Two's complement of the byte sum (mod 256) of the text between '/' or '@' and ':'."""
    return (-sum(body.encode("ascii"))) & 0xFF


@dataclass(frozen=True)
class Reply:
    device: int
    axis: int
    busy: bool
    flag: str        # highest-priority warning flag, "--" for none
    data: str


class ZaberXYStage(VisaInstrument):
    name = "Zaber stage"

    def __init__(self, resource: str, *, x_axis: tuple[int, int] = (1, 1),
                 y_axis: tuple[int, int] = (2, 1), timeout_s: float = 1.0,
                 microstep_um: float = DEFAULT_MICROSTEP_UM, move_timeout_s: float = 60.0,
                 poll_interval_s: float = 0.01, checksums: bool = False,
                 resource_manager=None, **open_kwargs) -> None:
        if microstep_um <= 0:
            raise ValueError(f"microstep_um must be positive, got {microstep_um!r}")
        if tuple(x_axis) == tuple(y_axis):
            raise ValueError(f"x_axis and y_axis are the same axis {tuple(x_axis)}")
        if resource.upper().startswith("ASRL"):
            open_kwargs.setdefault("baud_rate", BAUD_RATE)
        super().__init__(resource, timeout_s=timeout_s, resource_manager=resource_manager,
                         read_termination="\r\n", write_termination="\r\n", **open_kwargs)
        self.axes = {"x": tuple(x_axis), "y": tuple(y_axis)}
        self.microstep_um = microstep_um
        self.move_timeout_s = move_timeout_s
        self.poll_interval_s = poll_interval_s
        self.checksums = checksums
        self._travel: tuple[tuple[float, float], tuple[float, float]] | None = None
        self.last_flags: dict[str, str] = {"x": "--", "y": "--"}
        if checksums:
            # Devices append checksums to their replies only with comm.checksum = 1.
            self._each_axis("set comm.checksum 1")

    # ------------------------------------------------------------ protocol
    def command(self, axis: str, text: str) -> Reply:
        """Send ``text`` to one axis ("x" or "y") and return its parsed reply."""
        device, number = self.axes[axis]
        return self._send(axis, device, number, text)

    def _send(self, axis: str, device: int, number: int, text: str) -> Reply:
        body = f"{device} {number} {text}".rstrip()
        message = f"/{body}:{checksum(body):02X}" if self.checksums else f"/{body}"
        with self._lock:
            self.write(message)
            reply = self._read_reply(device, message)
        self.last_flags[axis] = reply.flag
        return reply

    def _read_reply(self, device: int, message: str) -> Reply:
        deadline = time.monotonic() + self.timeout_s
        while True:
            line = self.read(repr(message)).strip()
            if line.startswith(("#", "!")):
                # Info continuations and alerts are not the reply; keep reading.
                if time.monotonic() > deadline:
                    raise InstrumentTimeout(f"{self.name}: no reply to {message!r}")
                continue
            match = _REPLY.match(line)
            if match is None:
                raise ProtocolError(f"{self.name}: cannot parse reply {line!r} to {message!r}")
            if match.group(8) is not None:
                if checksum(line[1:line.rindex(":")]) != int(match.group(8), 16):
                    raise ProtocolError(f"{self.name}: bad checksum in reply {line!r}")
            if int(match.group(1)) != device:
                raise ProtocolError(f"{self.name}: reply {line!r} from device {match.group(1)}, "
                                    f"expected device {device}")
            if match.group(4) == "RJ":
                raise StageRejected(match.group(7) or "unknown reason", message)
            return Reply(int(match.group(1)), int(match.group(2)), match.group(5) == "BUSY",
                         match.group(6), match.group(7))

    def _int_data(self, axis: str, text: str) -> int:
        reply = self.command(axis, text)
        try:
            return int(reply.data.split()[0])
        except (ValueError, IndexError):
            raise ProtocolError(f"{self.name}: reply data {reply.data!r} to {text!r} "
                                f"is not an integer") from None

    def _each_axis(self, text: str) -> None:
        """Send one command to both axes; try both even if the first fails."""
        failure: InstrumentError | None = None
        for axis in self.axes:
            try:
                self.command(axis, text)
            except InstrumentError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    # ---------------------------------------------------------- positions
    def _to_microsteps(self, um: float) -> int:
        return int(round(float(um) / self.microstep_um))

    @property
    def position_um(self) -> tuple[float, float]:
        return tuple(self._int_data(axis, "get pos") * self.microstep_um for axis in self.axes)

    @property
    def travel_um(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x_min, x_max), (y_min, y_max)) in um, from the devices' limit.min/limit.max."""
        if self._travel is None:
            self._travel = tuple(
                (self._int_data(axis, "get limit.min") * self.microstep_um,
                 self._int_data(axis, "get limit.max") * self.microstep_um)
                for axis in self.axes)
        return self._travel

    def move_to(self, x_um: float, y_um: float, wait: bool = True) -> None:
        """Move both axes to an absolute position (um); by default wait until both are idle."""
        targets = {"x": x_um, "y": y_um}
        for (axis, target), (lo, hi) in zip(targets.items(), self.travel_um):
            if not lo <= float(target) <= hi:
                raise ValueError(f"{axis} target {target!r} um is outside the travel "
                                 f"[{lo:g}, {hi:g}] um")
        for axis, target in targets.items():
            self.command(axis, f"move abs {self._to_microsteps(target)}")
        if wait:
            self.wait_idle()

    def home(self, wait: bool = True) -> None:
        self._each_axis("home")
        if wait:
            self.wait_idle()

    def stop(self) -> None:
        """Decelerate both axes to a stop."""
        self._each_axis("stop")

    def set_speed(self, um_per_s: float) -> None:
        """Maximum speed of both axes, um/s."""
        if not um_per_s > 0:
            raise ValueError(f"speed must be positive, got {um_per_s!r} um/s")
        data = int(round(float(um_per_s) / self.microstep_um * SPEED_UNITS_PER_USTEP_S))
        self._each_axis(f"set maxspeed {max(data, 1)}")

    def arm_position_trigger(self, x_um: float, increasing: bool) -> float:
        """Pulse digital output 1 once, the instant the x axis passes ``x_um`` (moving towards
        larger x if ``increasing``, else smaller); returns the position it was set to (µm, on the
        microstep grid). The output is wired to the delay generator's trigger input, so the
        stage itself starts a burst at a known position, whatever the computer is doing."""
        device, number = self.axes["x"]
        steps = self._to_microsteps(x_um)
        for text in (f"trigger 1 when {number} pos {'>=' if increasing else '<='} {steps}",
                     "trigger 1 action a io set do 1 1", "trigger 1 enable 1"):
            self._send("x", device, 0, text)
        return steps * self.microstep_um

    def disarm_position_trigger(self) -> None:
        device, _ = self.axes["x"]
        self._send("x", device, 0, "trigger 1 disable")

    # ------------------------------------------------------------- status
    @property
    def busy(self) -> bool:
        return any(self.command(axis, "").busy for axis in self.axes)

    @property
    def warnings(self) -> frozenset[str]:
        """Every warning flag the two axes report now (``warnings``), e.g. {"WR", "FS"}."""
        flags = set()
        for axis in self.axes:
            flags |= set(self.command(axis, "warnings").data.split()[1:])
        return frozenset(flags)

    def clear_warnings(self) -> None:
        self._each_axis("warnings clear")

    def wait_idle(self, timeout_s: float | None = None) -> None:
        """Poll until both axes are idle; raise StageFault on a fault flag, InstrumentTimeout
        (after stopping the stage) if they are still moving after ``timeout_s``."""
        timeout_s = self.move_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            moving = False
            for axis in self.axes:
                reply = self.command(axis, "")
                if reply.flag.startswith("F"):
                    faults = {f for f in self.command(axis, "warnings").data.split()[1:]
                              if f.startswith("F")} or {reply.flag}
                    raise StageFault(faults, axis)
                moving |= reply.busy
            if not moving:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise InstrumentTimeout(f"{self.name}: still moving after {timeout_s:g} s; stopped")
            time.sleep(self.poll_interval_s)

    def close(self) -> None:
        """stop(), then close the port (also when stop fails, which is re-raised)."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self.close_transport()
