"""Quantel/Lumibird Big Sky (CFR) laser power supply: state model and serial handler.

Protocol (see docs/drivers.md for sources): 9600 baud 8N1; a command is ``>``
(any laser) or ``$<serial>`` followed by a mnemonic and an optional number,
ended by CR LF (CR or LF alone is accepted); letters are case-insensitive.
Every command is answered with exactly 15 characters followed by CR LF; a
setting command answers with the value now in force (so a refused value shows
up as the old value). An unknown command is answered ``unknown command``.

Hook API (stable; used by ``sim/bench/``)
-------------------------------------------
``BigSkyEmulator(clock=None, serial_number=1234)``
``lock`` / ``handle(line)`` / ``reply_terminator`` — transport protocol.
``can_fire() -> bool``  flashlamp started in external mode, Q-switch started in
    external mode, shutter open, no interlock.
``fire(t, qswitch=True) -> bool``  the bench's trigger pair arrived at ``t``:
    counts a flashlamp shot (if the lamp runs in external mode, no interlock)
    and a Q-switch shot (if also the Q-switch runs in external mode and
    ``qswitch``); returns whether a laser pulse left the head (``can_fire()``).
``set_interlock(name_or_bit, active=True, register="IF")``  open/close an
    interlock (e.g. ``"cover_open"`` or bit 6 of IF); an open flashlamp
    interlock stops the flashlamp and Q-switch, as on the real supply.
``interlocks() -> set[str]``  names of the active interlock bits.
``safe_events``  number of make-safe sequences observed: a shutter-close
    command arriving with flashlamp and Q-switch already stopped.
``command_log``  every command received: :class:`CommandRecord` (t, text, reply);
    ``on_command`` is called with each.
``shots``  list of (t, emitted) for every ``fire`` call.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Callable

# Reply format and interlock registers (IF, IF2, IQ bit meanings) are defined once, in the driver.
from drivers.bigsky import INTERLOCK_BITS, REPLY_WIDTH, UNKNOWN_REPLY
from sim.emulators.transports import Clock, WallClock

_BY_NAME = {name: (reg, bit) for reg, bits in INTERLOCK_BITS.items() for bit, name in bits.items()}

STOP, SINGLE, START = 0, 1, 2
_STATE_NAMES = {STOP: "stop", SINGLE: "single", START: "start"}


@dataclass(frozen=True)
class CommandRecord:
    t: float
    command: str
    reply: str


@dataclass
class LaserState:
    flashlamp: int = STOP
    flashlamp_external: bool = False
    simmer: bool = True
    qswitch: int = STOP
    qswitch_mode: int = 0          # 0 auto, 1 burst, 2 external
    qswitch_enabled: bool = True
    shutter_open: bool = False
    pump: bool = True
    frequency_centi_hz: int = 1000
    voltage_v: int = 900
    energy_deci_j: int = 120
    qswitch_delay_us: int = 150
    burst_pulses: int = 10
    divider: int = 1
    flashlamp_count: int = 0
    qswitch_count: int = 0
    user_flashlamp_count: int = 0
    user_qswitch_count: int = 0
    registers: dict = field(default_factory=lambda: {"IF": 0, "IF2": 0, "IQ": 0})


_LINE = re.compile(r"^\s*(>|\$\d+)\s*([A-Za-z]+)\s*(-?\d*)\s*$")


class BigSkyEmulator:
    reply_terminator = "\r\n"

    def __init__(self, *, clock: Clock | None = None, serial_number: int = 1234,
                 on_command: Callable[[CommandRecord], None] | None = None) -> None:
        self.clock = clock or WallClock()
        self.serial_number = serial_number
        self.on_command = on_command
        self.lock = threading.RLock()
        self.state = LaserState()
        self.command_log: list[CommandRecord] = []
        self.shots: list[tuple[float, bool]] = []
        self.safe_events = 0

    # ----------------------------------------------------------------- hooks
    def interlocks(self) -> set[str]:
        with self.lock:
            return {name for name, (reg, bit) in _BY_NAME.items()
                    if self._register(reg) >> bit & 1}

    def _register(self, reg: str) -> int:
        value = self.state.registers[reg]
        if reg == "IQ" and not self.state.shutter_open:
            value |= 1 << 6
        return value

    def _flashlamp_interlocked(self) -> bool:
        return bool(self.state.registers["IF"] or self.state.registers["IF2"])

    def set_interlock(self, which: str | int, active: bool = True, register: str = "IF") -> None:
        with self.lock:
            if isinstance(which, str):
                if which not in _BY_NAME:
                    raise ValueError(f"unknown interlock {which!r}; known: {sorted(_BY_NAME)}")
                register, bit = _BY_NAME[which]
            else:
                bit = int(which)
                if register not in INTERLOCK_BITS or bit not in INTERLOCK_BITS[register]:
                    raise ValueError(f"no interlock bit {bit} in register {register!r}")
            if active:
                self.state.registers[register] |= 1 << bit
            else:
                self.state.registers[register] &= ~(1 << bit)
            if active and register in ("IF", "IF2"):
                self.state.flashlamp = STOP
                self.state.qswitch = STOP
            elif active and register == "IQ":
                self.state.qswitch = STOP

    def can_fire(self) -> bool:
        with self.lock:
            s = self.state
            return (s.flashlamp == START and s.flashlamp_external and s.qswitch == START
                    and s.qswitch_mode == 2 and s.shutter_open and not self.interlocks())

    def fire(self, t: float, qswitch: bool = True) -> bool:
        with self.lock:
            s = self.state
            emitted = False
            if s.flashlamp == START and s.flashlamp_external and not self._flashlamp_interlocked():
                s.flashlamp_count += 1
                s.user_flashlamp_count += 1
                if qswitch and s.qswitch == START and s.qswitch_mode == 2:
                    s.qswitch_count += 1
                    s.user_qswitch_count += 1
                    emitted = self.can_fire()
            self.shots.append((t, emitted))
            return emitted

    # ------------------------------------------------------------- protocol
    def handle(self, line: str) -> list[str]:
        match = _LINE.match(line)
        if match is None or (match.group(1).startswith("$")
                             and int(match.group(1)[1:]) != self.serial_number):
            # Not addressed to this laser (or not a framed command): stay silent.
            self._log(line.strip(), "")
            return []
        mnemonic, number = match.group(2).upper(), match.group(3)
        value = int(number) if number not in ("", "-") else None
        reply = self._execute(mnemonic, value)
        reply = reply[:REPLY_WIDTH].ljust(REPLY_WIDTH)
        self._log(line.strip(), reply)
        return [reply]

    def _log(self, command: str, reply: str) -> None:
        record = CommandRecord(self.clock.now(), command, reply)
        self.command_log.append(record)
        if self.on_command is not None:
            self.on_command(record)

    def _execute(self, mnemonic: str, value: int | None) -> str:
        s = self.state
        if mnemonic == "IF" and value in (1, 2):  # IF1 / IF2 are names, not IF + value
            mnemonic, value = f"IF{value}", None
        if mnemonic == "SAV" and value == 1:
            return "saved"
        if mnemonic in _ACTIONS and value is None:
            return _ACTIONS[mnemonic](self)
        if mnemonic in _SETTINGS:
            attr, lo, hi, fmt = _SETTINGS[mnemonic]
            if value is not None and lo <= value <= hi:
                setattr(s, attr, value)
            return fmt(getattr(s, attr))
        if mnemonic in _FLAGS:
            attr, fmt = _FLAGS[mnemonic]
            if value in (0, 1):
                self._set_flag(attr, bool(value))
            return fmt(getattr(s, attr))
        if mnemonic == "QSM":
            if value in (0, 1, 2):
                s.qswitch_mode = value
            return f"QS mode : {s.qswitch_mode}"
        if mnemonic in ("IF", "IF1", "IF2", "IQ") and value is None:
            reg = "IF" if mnemonic == "IF1" else mnemonic
            bits = "".join(str(self._register(reg) >> b & 1) for b in range(8))
            return f"{mnemonic.lower():<7}{bits}"
        if mnemonic in _COUNTERS:
            attr, label = _COUNTERS[mnemonic]
            if value == 0 and mnemonic in ("UC", "UCQ"):
                setattr(s, attr, 0)
            elif value is not None:
                return UNKNOWN_REPLY
            return f"{label} {getattr(s, attr):09d}"
        return UNKNOWN_REPLY

    def _set_flag(self, attr: str, on: bool) -> None:
        s = self.state
        if attr == "shutter_open":
            if not on and s.flashlamp == STOP and s.qswitch == STOP:
                self.safe_events += 1
            if on and self.interlocks() - {"shutter_closed"}:
                return  # the shutter stays closed while an interlock is open
        setattr(s, attr, on)

    # ---------------------------------------------------------------- actions
    def _activate(self) -> str:
        if not self._flashlamp_interlocked():
            self.state.flashlamp = START
        return self._flashlamp_reply()

    def _stop_lamp(self) -> str:
        self.state.flashlamp = STOP
        self.state.qswitch = STOP
        return self._flashlamp_reply()

    def _simmer(self) -> str:
        if not self._flashlamp_interlocked():
            self.state.simmer = True
        return f"simmer {int(self.state.simmer)}"

    def _flashlamp_reply(self) -> str:
        return f"LP {_STATE_NAMES[self.state.flashlamp]}"

    def _qswitch_reply(self) -> str:
        return f"QS {_STATE_NAMES[self.state.qswitch]}"

    def _qswitch_start(self) -> str:
        s = self.state
        if s.flashlamp == START and s.qswitch_enabled and not self._register("IQ"):
            s.qswitch = START
        return self._qswitch_reply()

    def _qswitch_stop(self) -> str:
        self.state.qswitch = STOP
        return self._qswitch_reply()

    def _qswitch_single(self) -> str:
        s = self.state
        if s.flashlamp == START and s.qswitch_enabled and not self._register("IQ"):
            s.qswitch_count += 1
            s.user_qswitch_count += 1
        return self._qswitch_reply()

    def _status_word(self) -> str:
        s = self.state
        interlock = 1 if self.interlocks() - {"shutter_closed"} else 0
        lamp = s.flashlamp + (4 if s.flashlamp_external else 0)
        qs = s.qswitch + (4 if s.qswitch_mode == 2 else 0)
        return f"I {interlock} F {lamp} S {int(s.simmer)} Q {qs}"

    def _serial(self) -> str:
        return f"s/number {self.serial_number}"


_ACTIONS: dict[str, Callable[[BigSkyEmulator], str]] = {
    "A": BigSkyEmulator._activate, "S": BigSkyEmulator._stop_lamp,
    "M": BigSkyEmulator._simmer, "PQ": BigSkyEmulator._qswitch_start,
    "SQ": BigSkyEmulator._qswitch_stop, "OQ": BigSkyEmulator._qswitch_single,
    "WOR": BigSkyEmulator._status_word, "SN": BigSkyEmulator._serial,
}
_SETTINGS = {  # mnemonic -> (attribute, min, max, reply format)
    "F": ("frequency_centi_hz", 100, 9999, lambda v: f"freq.  {v / 100:5.2f} Hz"),
    "V": ("voltage_v", 500, 1800, lambda v: f"voltage  {v:4d} V"),
    "ENE": ("energy_deci_j", 70, 230, lambda v: f"energy    {v / 10:4.1f}J"),
    "W": ("qswitch_delay_us", 100, 999, lambda v: f"delay    {v:3d} uS"),
    "QSP": ("burst_pulses", 1, 999, lambda v: f"burst QS    {v:3d}"),
    "QSF": ("divider", 1, 99, lambda v: f"cycle rate F/{v:2d}"),
}
_FLAGS = {  # mnemonic -> (attribute, reply format); value 0/1 sets it
    "R": ("shutter_open", lambda v: "shutter open" if v else "shutter closed"),
    "P": ("pump", lambda v: f"CG pump {int(v)}"),
    "LPM": ("flashlamp_external", lambda v: f"LP synch : {int(v)}"),
    "QOF": ("qswitch_enabled", lambda v: f"QS at run  {int(v)}"),
}
_COUNTERS = {
    "C": ("flashlamp_count", "ct LP"), "CQ": ("qswitch_count", "ct QS"),
    "UC": ("user_flashlamp_count", "cu LP"), "UCQ": ("user_qswitch_count", "cu QS"),
}
