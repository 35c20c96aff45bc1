"""Zaber ASCII-protocol motion controllers (a daisy chain of devices): state model and handler.

Protocol (see docs/drivers.md for sources): a command is
``/[device] [axis] [message id] command [args][:checksum]`` ended by CR, LF or
both; every addressed device answers ``@dd a [id] OK|RJ IDLE|BUSY FF data``
ended by CR LF, where FF is the highest-priority warning flag (``--`` for
none). Unknown commands are rejected ``RJ ... BADCOMMAND``, bad or
out-of-range data ``BADDATA``, a missing axis ``BADAXIS``. The checksum is
the two's complement of the byte sum (mod 256) of everything between ``/``
and ``:``; a message whose checksum does not match is ignored, and replies
carry a checksum when the device setting ``comm.checksum`` is 1. Flags
persist as the manual says: FS, FE and WS until ``warnings clear``, WR until
homing or ``set pos``, NI until the next move. Positions and
limits are in microsteps; speed data = microsteps/s x 1.6384.

Hook API (stable; used by ``sim/bench/``)
-------------------------------------------
``ZaberEmulator(clock=None, devices=2, axes_per_device=1, microstep_um=..., travel_um=...)``
``lock`` / ``handle(line)`` / ``reply_terminator`` — transport protocol.
``axes``  dict ``(device, axis) -> AxisModel``.
``position_at(t, axis=(1, 1)) -> float``  microsteps at clock time ``t``
    (moves run at ``maxspeed`` on the clock; no timers: evaluated lazily).
``position_um_at(t, axis=(1, 1)) -> float``  the same in micrometres.
``busy(axis, t=None) -> bool``  the axis is moving at ``t`` (default now).
``inject_stall(axis, fraction=0.5, recover=False)``  the next move on
    ``axis`` stalls after ``fraction`` of its length: it stops there with the
    fault flag ``FS``, or (``recover=True``) sets ``WS`` and completes.
``inject_stall_at(axis, position_um, recover=False)``  the first move on
    ``axis`` that passes ``position_um`` stalls there (moves that do not pass
    it are left alone): a stall at a known place, for tests.
``command_log``  :class:`CommandRecord` (t, command, replies) per message;
    ``on_command`` is called with each.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Callable

from sim.emulators.transports import Clock, WallClock

SPEED_UNITS_PER_USTEP_S = 1.6384
DEFAULT_MICROSTEP_UM = 0.047625      # lead-screw stage at resolution 64
DEFAULT_TRAVEL_UM = 101_600.0
_FLAG_ORDER = "FWN"                  # faults, then warnings, then notices


@dataclass(frozen=True)
class CommandRecord:
    t: float
    command: str
    replies: tuple[str, ...]


@dataclass
class PositionTrigger:
    """``trigger 1`` of a device: when an axis passes a position, pulse digital output 1.

    The subset the bench uses: ``trigger 1 when A pos >= N`` (or ``<=``),
    ``trigger 1 action a io set do 1 1``, ``trigger 1 enable 1`` (fire once),
    ``trigger 1 disable``. The output is wired to the delay generator's
    trigger input, so its edge comes at the instant the axis crosses N.
    """

    axis: int = 0
    above: bool = True            # condition pos >= N (else pos <= N)
    value: int = 0
    action: bool = False          # digital output 1 is set by the trigger
    remaining: int = 0            # firings left (enable 1: one)

    def crossing(self, model: "AxisModel", t: float) -> float | None:
        """When, from t on, the condition becomes true on the axis's current move; None if never."""
        if not (self.action and self.remaining and self.axis):
            return None

        def holds(position: float) -> bool:
            return position >= self.value if self.above else position <= self.value

        if holds(model.position_at(t)):
            return t
        if t >= model.t_end or not holds(model.target):
            return None
        fraction = (self.value - model.start_pos) / (model.target - model.start_pos)
        return max(t, model.t_start + fraction * (model.t_end - model.t_start))


@dataclass
class AxisModel:
    limit_min: int = 0
    limit_max: int = int(DEFAULT_TRAVEL_UM / DEFAULT_MICROSTEP_UM)
    maxspeed: int = 153_600
    accel: int = 2_000
    resolution: int = 64
    start_pos: float = 0.0
    target: float = 0.0
    t_start: float = 0.0
    t_end: float = 0.0
    stop_flag: str | None = None      # flag raised when the move ends (FS after a stall)
    flags: set[str] = field(default_factory=lambda: {"WR"})
    pending_stall: tuple[float, bool] | None = None
    pending_stall_at: tuple[float, bool] | None = None   # (microsteps, recover): the first move passing it
    recover_flag_at: float | None = None

    def speed_ustep_s(self) -> float:
        return max(self.maxspeed / SPEED_UNITS_PER_USTEP_S, 1e-9)

    def position_at(self, t: float) -> float:
        if t >= self.t_end or self.t_end <= self.t_start:
            return self.target
        if t <= self.t_start:
            return self.start_pos
        frac = (t - self.t_start) / (self.t_end - self.t_start)
        return self.start_pos + frac * (self.target - self.start_pos)

    def settle(self, t: float) -> None:
        """Fold a finished move's consequences (stall flags) into the state."""
        if self.stop_flag and t >= self.t_end:
            self.flags.add(self.stop_flag)
            self.stop_flag = None
        if self.recover_flag_at is not None and t >= self.recover_flag_at:
            self.flags.add("WS")
            self.recover_flag_at = None

    def start_move(self, target: float, t: float) -> None:
        here = self.position_at(t)
        self.settle(t)
        # Faults (FS, FE) and WS persist until "warnings clear"; NI until the next move from idle.
        self.flags -= {"NI", "NC"}
        if t < self.t_end:
            self.flags.add("NI")  # the previous move was interrupted
        self.start_pos, self.target, self.t_start = here, float(target), t
        self.t_end = t + abs(self.target - here) / self.speed_ustep_s()
        self.stop_flag = None
        self.recover_flag_at = None
        if self.pending_stall_at is not None and self.t_end > t and \
                min(here, self.target) < self.pending_stall_at[0] < max(here, self.target):
            at, recover = self.pending_stall_at
            self.pending_stall_at = None
            self.pending_stall = ((at - here) / (self.target - here), recover)
        if self.pending_stall is not None and self.t_end > t:
            fraction, recover = self.pending_stall
            self.pending_stall = None
            t_stall = t + fraction * (self.t_end - t)
            if recover:
                self.recover_flag_at = t_stall
            else:
                self.target = self.position_at(t_stall)
                self.t_end = t_stall
                self.stop_flag = "FS"

    def stop(self, t: float) -> bool:
        moving = t < self.t_end
        here = self.position_at(t)
        self.settle(t)
        self.start_pos = self.target = here
        self.t_start = self.t_end = t
        self.stop_flag = None
        return moving


_INT = re.compile(r"^[+-]?\d+$")
_AXIS_SETTINGS = ("pos", "maxspeed", "accel", "limit.min", "limit.max", "resolution")
_DEVICE_SETTINGS = {"comm.alert": 0, "system.access": 1, "comm.checksum": 0,
                    "system.axiscount": None, "deviceid": 30222, "version": "7.38"}
_READ_ONLY = {"system.axiscount", "deviceid", "version"}


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def checksum(body: str) -> int:
    """Zaber ASCII checksum of the text between '/' (or '@') and ':'."""
    return (-sum(body.encode("ascii"))) & 0xFF


class ZaberEmulator:
    reply_terminator = "\r\n"

    def __init__(self, *, clock: Clock | None = None, devices: int = 2, axes_per_device: int = 1,
                 microstep_um: float = DEFAULT_MICROSTEP_UM,
                 travel_um: float = DEFAULT_TRAVEL_UM,
                 on_command: Callable[[CommandRecord], None] | None = None) -> None:
        self.clock = clock or WallClock()
        self.microstep_um = microstep_um
        self.on_command = on_command
        self.lock = threading.RLock()
        self.axes: dict[tuple[int, int], AxisModel] = {
            (d, a): AxisModel(limit_max=int(round(travel_um / microstep_um)))
            for d in range(1, devices + 1) for a in range(1, axes_per_device + 1)}
        self.device_settings = {d: dict(_DEVICE_SETTINGS, **{"system.axiscount": axes_per_device})
                                for d in range(1, devices + 1)}
        self.command_log: list[CommandRecord] = []
        self.triggers: dict[int, PositionTrigger] = {d: PositionTrigger() for d in range(1, devices + 1)}

    # ----------------------------------------------------------------- hooks
    def output_edge(self, t: float) -> tuple[int, float] | None:
        """(device, time >= t) of the next digital-output edge an enabled position trigger makes."""
        with self.lock:
            edges = [(self.triggers[d].crossing(self.axes[(d, trig.axis)], t), d)
                     for d, trig in self.triggers.items() if (d, trig.axis) in self.axes]
            edges = [(when, d) for when, d in edges if when is not None]
            if not edges:
                return None
            when, device = min(edges)
            return device, when

    def trigger_fired(self, device: int) -> None:
        """The bench saw this device's output edge: an ``enable 1`` trigger is used up."""
        with self.lock:
            trig = self.triggers[device]
            trig.remaining = max(trig.remaining - 1, 0)

    def position_at(self, t: float, axis: tuple[int, int] = (1, 1)) -> float:
        with self.lock:
            return self.axes[axis].position_at(t)

    def position_um_at(self, t: float, axis: tuple[int, int] = (1, 1)) -> float:
        return self.position_at(t, axis) * self.microstep_um

    def busy(self, axis: tuple[int, int], t: float | None = None) -> bool:
        with self.lock:
            t = self.clock.now() if t is None else t
            return t < self.axes[axis].t_end

    def inject_stall(self, axis: tuple[int, int], fraction: float = 0.5,
                     recover: bool = False) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"stall fraction must lie in [0, 1], got {fraction}")
        with self.lock:
            self.axes[axis].pending_stall = (fraction, recover)

    def inject_stall_at(self, axis: tuple[int, int], position_um: float, recover: bool = False) -> None:
        with self.lock:
            self.axes[axis].pending_stall_at = (position_um / self.microstep_um, recover)

    # ------------------------------------------------------------- protocol
    def handle(self, line: str) -> list[str]:
        replies = self._handle(line.strip())
        record = CommandRecord(self.clock.now(), line.strip(), tuple(replies))
        self.command_log.append(record)
        if self.on_command is not None:
            self.on_command(record)
        return replies

    def _handle(self, line: str) -> list[str]:
        if not line.startswith("/"):
            return []
        body = line[1:]
        if re.search(r":[0-9A-Fa-f]{2}$", body):
            body, given = body[:-3], int(body[-2:], 16)
            if checksum(body) != given:
                return []
        tokens = body.split()
        numbers: list[int] = []
        while tokens and _INT.match(tokens[0]) and len(numbers) < 3:
            numbers.append(int(tokens.pop(0)))
        device = numbers[0] if numbers else 0
        axis = numbers[1] if len(numbers) > 1 else 0
        message_id = numbers[2] if len(numbers) > 2 else None
        targets = sorted(self.device_settings) if device == 0 else [device]
        replies = []
        for dev in targets:
            if dev not in self.device_settings:
                continue
            reply = self._reply(dev, axis, message_id, tokens)
            if self.device_settings[dev]["comm.checksum"] == 1:
                reply = f"{reply}:{checksum(reply[1:]):02X}"
            replies.append(reply)
        return replies

    def _reply(self, device: int, axis: int, message_id: int | None, tokens: list[str]) -> str:
        t = self.clock.now()
        # What has happened by now (a move ended, a stall) is what the command sees, as on the
        # device: `warnings` must report a stall from the moment it happened.
        for a in self._axes_of(device, axis if (device, axis) in self.axes else 0):
            a.settle(t)
        try:
            if axis and (device, axis) not in self.axes:
                raise _Reject("BADAXIS")
            data = self._execute(device, axis, tokens, t)
            verdict = "OK"
        except _Reject as exc:
            data, verdict = exc.reason, "RJ"
        axes = self._axes_of(device, axis if (device, axis) in self.axes else 0)
        for a in axes:
            a.settle(t)
        busy = any(t < a.t_end for a in axes)
        flags = set().union(*(a.flags for a in axes)) if axes else set()
        if data is None:
            data = "0"
        ident = f" {message_id:02d}" if message_id is not None else ""
        return (f"@{device:02d} {axis}{ident} {verdict} {'BUSY' if busy else 'IDLE'} "
                f"{_top_flag(flags)} {data}")

    def _axes_of(self, device: int, axis: int) -> list[AxisModel]:
        if axis:
            return [self.axes[(device, axis)]]
        return [m for (d, _), m in sorted(self.axes.items()) if d == device]

    def _execute(self, device: int, axis: int, tokens: list[str], t: float) -> str | None:
        if not tokens:
            return None
        command, args = tokens[0].lower(), tokens[1:]
        axes = self._axes_of(device, axis)
        if command == "home":
            _no_args(args)
            for a in axes:
                a.start_move(a.limit_min, t)
                a.flags -= {"WR", "WH"}
            return None
        if command == "stop":
            _no_args(args)
            interrupted = [a.stop(t) for a in axes]
            for a, was_moving in zip(axes, interrupted):
                if was_moving:
                    a.flags.add("NI")
            return None
        if command == "move":
            return self._move(axes, args, t)
        if command == "get":
            if len(args) != 1:
                raise _Reject("BADDATA")
            return self._get(device, axes, args[0].lower(), t)
        if command == "set":
            if len(args) != 2:
                raise _Reject("BADDATA")
            return self._set(device, axes, args[0].lower(), args[1], t)
        if command == "trigger":
            return self._trigger(device, axis, args)
        if command == "warnings":
            flags = sorted(set().union(*(a.flags for a in axes)), key=_flag_rank)
            if args and args != ["clear"]:
                raise _Reject("BADDATA")
            if args == ["clear"]:
                for a in axes:
                    a.flags -= {"FS", "WS", "NI", "FE", "NC"}
            return " ".join([f"{len(flags):02d}", *flags])
        raise _Reject("BADCOMMAND")

    def _trigger(self, device: int, axis: int, args: list[str]) -> None:
        if axis or len(args) < 2 or args[0] != "1":
            raise _Reject("BADCOMMAND")
        trig, rest = self.triggers[device], [a.lower() for a in args[1:]]
        if rest[0] == "when" and len(rest) == 5 and rest[2] == "pos" and rest[3] in (">=", "<=") \
                and _INT.match(rest[1]) and _INT.match(rest[4]):
            if (device, int(rest[1])) not in self.axes:
                raise _Reject("BADDATA")
            trig.axis, trig.above, trig.value = int(rest[1]), rest[3] == ">=", int(rest[4])
            return None
        if rest[0] == "action" and rest[1:] == ["a", "io", "set", "do", "1", "1"]:
            trig.action = True
            return None
        if rest[0] == "enable" and len(rest) == 2 and _INT.match(rest[1]) and int(rest[1]) > 0:
            trig.remaining = int(rest[1])
            return None
        if rest == ["disable"]:
            trig.remaining = 0
            return None
        raise _Reject("BADDATA")

    def _move(self, axes: list[AxisModel], args: list[str], t: float) -> None:
        if not args:
            raise _Reject("BADCOMMAND")
        kind = args[0].lower()
        if kind in ("min", "max"):
            _no_args(args[1:])
            for a in axes:
                a.start_move(a.limit_min if kind == "min" else a.limit_max, t)
            return None
        if kind not in ("abs", "rel") or len(args) != 2 or not _INT.match(args[1]):
            raise _Reject("BADCOMMAND" if kind not in ("abs", "rel") else "BADDATA")
        value = int(args[1])
        for a in axes:
            target = value if kind == "abs" else round(a.position_at(t)) + value
            if not a.limit_min <= target <= a.limit_max:
                raise _Reject("BADDATA")
        for a in axes:
            a.start_move(value if kind == "abs" else round(a.position_at(t)) + value, t)
        return None

    def _get(self, device: int, axes: list[AxisModel], name: str, t: float) -> str:
        settings = self.device_settings[device]
        if name in settings:
            return str(settings[name])
        if name not in _AXIS_SETTINGS:
            raise _Reject("BADCOMMAND")
        values = []
        for a in axes:
            if name == "pos":
                values.append(str(int(round(a.position_at(t)))))
            else:
                values.append(str(getattr(a, name.replace(".", "_"))))
        return " ".join(values)

    def _set(self, device: int, axes: list[AxisModel], name: str, raw: str, t: float) -> None:
        settings = self.device_settings[device]
        if name in _READ_ONLY:
            raise _Reject("BADCOMMAND")
        if not _INT.match(raw):
            raise _Reject("BADDATA")
        value = int(raw)
        if name in settings:
            if name in ("comm.alert", "comm.checksum") and value not in (0, 1):
                raise _Reject("BADDATA")
            settings[name] = value
            return None
        if name not in _AXIS_SETTINGS:
            raise _Reject("BADCOMMAND")
        limits = {"maxspeed": (1, 12_000_000), "accel": (0, 32_767),
                  "resolution": (1, 256), "limit.min": (-2**31, 2**31 - 1),
                  "limit.max": (-2**31, 2**31 - 1), "pos": (-2**31, 2**31 - 1)}
        lo, hi = limits[name]
        if not lo <= value <= hi:
            raise _Reject("BADDATA")
        for a in axes:
            if name == "pos":
                a.stop(t)
                a.start_pos = a.target = float(value)
                a.flags.discard("WR")  # setting the position establishes a reference
            else:
                setattr(a, name.replace(".", "_"), value)
        return None


def _no_args(args: list[str]) -> None:
    if args:
        raise _Reject("BADDATA")


def _flag_rank(flag: str) -> tuple[int, str]:
    return (_FLAG_ORDER.index(flag[0]) if flag[0] in _FLAG_ORDER else 9, flag)


def _top_flag(flags: set[str]) -> str:
    return min(flags, key=_flag_rank) if flags else "--"
