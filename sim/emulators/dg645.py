"""SRS DG645 digital delay generator: state model and remote-command handler.

Follows the DG645 remote command set (commands, argument ranges, the ``LERR?``
error codes, the status registers) as SRS documents it; the per-command
handlers are in :mod:`sim.emulators.dg645_commands`. See docs/drivers.md for
what was checked against which source.

Hook API (stable; used by ``sim/bench/``)
-------------------------------------------
``DG645Emulator(clock=None, serial="s/n008011", on_trigger=None)``
``lock`` / ``handle(line)`` / ``reply_terminator``  — the transport protocol
    (see :mod:`sim.emulators.transports`).
``on_trigger``  — callable ``(t: float) -> None`` invoked (with the lock held)
    when ``*TRG`` fires a delay cycle or burst (``TSRC 5``) at clock time ``t``;
    ``*TRG`` in ``TSRC 3/4`` only arms the external single shot.
``state() -> DG645State``  — a snapshot: trigger source, rate, level, burst
    settings, channel links, channel times resolved relative to T0, and the
    five outputs' levels.
``pulse_times(t_trigger) -> list[float]``  — T0 times of the delay cycles that
    one trigger at ``t_trigger`` starts (one, or a burst).
``output_window(output) -> (start_s, end_s)``  — when an output (T0, AB, CD,
    EF, GH) is asserted, relative to T0; ``AB`` runs from A to B.
``register_trigger(t)``  — tell the emulator a cycle ran (e.g. internal rate
    or external input driven by the bench), so ``INSR?`` reports it.
``command_log``  — list of :class:`CommandRecord` (t, command, error code),
    one per command received, in order; ``on_command`` is called with each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from sim.emulators.dg645_commands import (CHANNELS, COMMANDS, ERROR_MEANINGS, OUTPUTS,
                                          TOKEN, CommandError, Settings)
from drivers.dg645 import TriggerSource
from sim.emulators.transports import Clock, WallClock

IDN_PREFIX = "Stanford Research Systems,DG645"
__all__ = ["CHANNELS", "OUTPUTS", "ERROR_MEANINGS", "DG645Emulator", "DG645State",
           "OutputLevels", "TriggerSource", "CommandRecord"]

_QUEUE_DEPTH = 20


@dataclass(frozen=True)
class OutputLevels:
    amplitude_v: float
    offset_v: float
    polarity: int  # 1 positive, 0 negative


@dataclass(frozen=True)
class DG645State:
    trigger_source: TriggerSource
    trigger_rate_hz: float
    trigger_level_v: float
    burst_mode: bool
    burst_count: int
    burst_period_s: float
    burst_delay_s: float
    burst_t0_first_only: bool
    links: dict[str, tuple[str, float]]   # channel -> (reference channel, offset s)
    times_s: dict[str, float]             # channel -> time after T0, s
    outputs: dict[str, OutputLevels]


@dataclass(frozen=True)
class CommandRecord:
    t: float
    command: str
    error: int


class DG645Emulator:
    reply_terminator = "\r\n"

    def __init__(self, *, clock: Clock | None = None, serial: str = "s/n008011",
                 firmware: str = "ver1.19.118",
                 on_trigger: Callable[[float], None] | None = None,
                 on_command: Callable[[CommandRecord], None] | None = None) -> None:
        self.clock = clock or WallClock()
        self.idn = f"{IDN_PREFIX},{serial},{firmware}"
        self.on_trigger = on_trigger
        self.on_command = on_command
        self.lock = threading.RLock()
        self.command_log: list[CommandRecord] = []
        self.settings = Settings()
        self.errors: list[int] = []
        self.esr = 1 << 7  # PON
        self.ese = 0
        self.sre = 0
        self.insr = 0
        self.inse = 0
        self.armed = False
        self._burst_until = -1.0
        self._saved: dict[int, Settings] = {}

    # ----------------------------------------------------------------- hooks
    def state(self) -> DG645State:
        with self.lock:
            s = self.settings
            return DG645State(
                trigger_source=TriggerSource(s.trigger_source),
                trigger_rate_hz=s.trigger_rate_hz, trigger_level_v=s.trigger_level_v,
                burst_mode=bool(s.burst_mode), burst_count=s.burst_count,
                burst_period_s=s.burst_period_s, burst_delay_s=s.burst_delay_s,
                burst_t0_first_only=bool(s.burst_t0),
                links={CHANNELS[c]: (CHANNELS[ref], off) for c, (ref, off) in enumerate(s.links)},
                times_s={name: self._absolute(c) for c, name in enumerate(CHANNELS)},
                outputs={name: OutputLevels(s.amplitude_v[b], s.offset_v[b], s.polarity[b])
                         for b, name in enumerate(OUTPUTS)})

    def pulse_times(self, t_trigger: float) -> list[float]:
        with self.lock:
            s = self.settings
            if not s.burst_mode:
                return [t_trigger]
            start = t_trigger + s.burst_delay_s
            return [start + k * s.burst_period_s for k in range(s.burst_count)]

    def output_window(self, output: str) -> tuple[float, float]:
        with self.lock:
            b = OUTPUTS.index(output)
            if b == 0:
                return (0.0, self._absolute(1))
            return (self._absolute(2 * b), self._absolute(2 * b + 1))

    def register_trigger(self, t: float) -> None:
        with self.lock:
            self.insr |= 0b101  # TRIG, END_OF_DELAY
            if self.settings.burst_mode:
                times = self.pulse_times(t)
                self._burst_until = times[-1]
                self.insr |= 1 << 3  # END_OF_BURST (reported once the burst has run)

    # ------------------------------------------------------------- protocol
    def handle(self, line: str) -> list[str]:
        replies: list[str] = []
        for command in line.split(";"):
            if not command.strip():
                continue
            reply, error = self._execute(command.strip())
            record = CommandRecord(self.clock.now(), command.strip(), error)
            self.command_log.append(record)
            if self.on_command is not None:
                self.on_command(record)
            if reply is not None:
                replies.append(reply)
        return replies

    def _push_error(self, code: int) -> None:
        if len(self.errors) >= _QUEUE_DEPTH - 1:
            if not self.errors or self.errors[-1] != 254:
                self.errors.append(254)
            return
        self.errors.append(code)

    def _execute(self, command: str) -> tuple[str | None, int]:
        match = TOKEN.match(command)
        if match is None:
            self._push_error(110)
            self.esr |= 1 << 5  # CME
            return None, 110
        mnemonic, query, rest = match.group(1).upper(), bool(match.group(2)), match.group(3)
        args = [a.strip() for a in rest.split(",")] if rest else []
        handler = COMMANDS.get(mnemonic)
        try:
            if handler is None:
                raise CommandError(111)
            reply = handler(self, query, args)
            return reply, 0
        except CommandError as exc:
            self._push_error(exc.code)
            self.esr |= (1 << 5) if exc.code >= 110 else (1 << 4)  # CME / EXE
            return None, exc.code

    # --------------------------------------------------------------- helpers
    def _absolute(self, channel: int, seen: tuple[int, ...] = ()) -> float:
        if channel == 0:
            return 0.0
        if channel in seen:  # guarded against by DLAY/LINK, kept finite anyway
            return 0.0
        ref, offset = self.settings.links[channel]
        return self._absolute(ref, seen + (channel,)) + offset

    def _references(self, channel: int, target: int) -> bool:
        seen = set()
        while channel not in (0, 1) and channel not in seen:
            if channel == target:
                return True
            seen.add(channel)
            channel = self.settings.links[channel][0]
        return channel == target
