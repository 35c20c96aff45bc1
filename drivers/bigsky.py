"""Quantel/Lumibird Big Sky (CFR / Ultra) flashlamp-pumped Nd:YAG laser over its serial line.

The supply answers every command with exactly 15 characters and CR LF (the
driver reads 17 bytes), so a missing or short reply is a timeout and a reply
with line noise is a :class:`ProtocolError`. Setting commands echo the value
in force, which the driver compares with what it asked for.

Example::

    with BigSkyLaser("ASRL/dev/ttyUSB0::INSTR") as laser:
        laser.set_external_trigger(flashlamp=True, qswitch=True)
        laser.shutter_open = True
        laser.start()              # flashlamp, then Q-switch; raises LaserInterlockError
        ...
    # leaving the block runs make_safe(): Q-switch stop, flashlamp stop, shutter closed
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import IntEnum

from drivers.errors import (InstrumentError, LaserInterlockError, LaserSafetyError,
                            ProtocolError)
from drivers.visa_instrument import Setting, VisaInstrument, in_range

log = logging.getLogger(__name__)

REPLY_WIDTH = 15
BAUD_RATE = 9600
UNKNOWN_REPLY = "unknown command"

INTERLOCK_BITS: dict[str, dict[int, str]] = {
    "IF": {0: "water_flow", 2: "water_level", 3: "lamp_head_connector",
           4: "aux_connector", 5: "external_interlock", 6: "cover_open"},
    "IF2": {2: "capacitor_load", 3: "simmer_fail", 5: "water_temperature"},
    "IQ": {1: "emission_inhibited", 2: "qswitch_water_temperature", 6: "shutter_closed"},
}


class PumpState(IntEnum):
    STOP = 0
    SINGLE = 1
    START = 2


@dataclass(frozen=True)
class LaserStatus:
    interlock_ok: bool
    flashlamp: PumpState
    flashlamp_external: bool
    simmer: bool
    qswitch: PumpState
    qswitch_external: bool

    @property
    def emitting(self) -> bool:
        return self.flashlamp == PumpState.START and self.qswitch == PumpState.START


def _last_int(reply: str) -> int:
    match = re.search(r"(-?\d+)\s*$", reply)
    if match is None:
        raise ValueError(f"no number at the end of {reply!r}")
    return int(match.group(1))


def _number_in(reply: str) -> float:
    match = re.search(r"-?\d+(?:\.\d+)?", reply)
    if match is None:
        raise ValueError(f"no number in {reply!r}")
    return float(match.group(0))


def _bit_field(reply: str) -> int:
    """Interlock words read as a label then bits, bit 0 first (``if1    00100000``)."""
    tokens = reply.split()
    bits = "".join(tokens[1:])
    if not bits or set(bits) - {"0", "1"}:
        raise ValueError(f"not a bit field: {reply!r}")
    return int(bits[::-1], 2)


class BigSkyLaser(VisaInstrument):
    name = "Big Sky laser"

    def __init__(self, resource: str, *, timeout_s: float = 1.0, resource_manager=None,
                 address: int | None = None, **open_kwargs) -> None:
        if resource.upper().startswith("ASRL"):
            open_kwargs.setdefault("baud_rate", BAUD_RATE)
        super().__init__(resource, timeout_s=timeout_s, resource_manager=resource_manager,
                         read_termination=None, write_termination="\r\n", **open_kwargs)
        # ">" addresses whichever supply is on the line; "$<serial>" one of several.
        self._prefix = ">" if address is None else f"${int(address)}"

    # ------------------------------------------------------------ protocol
    def ask(self, command: str) -> str:
        """Send one command and return its 15-character reply (trailing blanks removed)."""
        with self._lock:
            self.write(self._prefix + command)
            raw = self.read_bytes(REPLY_WIDTH + 2, repr(command))
        if not raw.endswith(b"\r\n"):
            raise ProtocolError(f"{self.name}: reply to {command!r} is not framed: {raw!r}")
        reply = self._decode(raw[:-2], repr(command))
        log.debug("%s %r -> %r", self.name, command, reply)
        if reply.strip() == UNKNOWN_REPLY:
            raise InstrumentError(f"{self.name}: command {command!r} not recognised")
        return reply.rstrip()

    def configure(self, command: str) -> str:
        """Send a setting and check the echoed value equals the requested one."""
        reply = self.ask(command)
        requested = re.search(r"(-?\d+)$", command)
        if requested is not None:
            try:
                echoed = _number_in(reply)
            except ValueError:
                raise ProtocolError(f"{self.name}: cannot parse reply {reply!r} to {command!r}") from None
            scale = {"F": 100.0, "ENE": 10.0}.get(command.rstrip("-0123456789"), 1.0)
            if abs(echoed * scale - int(requested.group(1))) > 0.5:
                raise InstrumentError(f"{self.name}: {command!r} refused, the supply keeps "
                                      f"{reply.strip()!r}")
        return reply

    # ---------------------------------------------------------- settings
    serial_number = Setting("SN", parse=lambda r: r.split()[-1], doc="Supply serial number.")
    flashlamp_rate_hz = Setting("F", "F{:d}", parse=_number_in,
                                encode=lambda hz: int(round(float(hz) * 100)),
                                validate=in_range(1.0, 99.99, "Hz"),
                                doc="Internal flashlamp rate, Hz (used in internal mode).")
    qswitch_delay_s = Setting("W", "W{:d}", parse=lambda r: _number_in(r) * 1e-6,
                              encode=lambda s: int(round(float(s) * 1e6)),
                              validate=in_range(100e-6, 999e-6, "s"),
                              doc="Internal flashlamp-to-Q-switch delay, s.")
    shot_count = Setting("CQ", parse=_last_int, doc="Q-switch (laser pulse) counter.")
    flashlamp_count = Setting("C", parse=_last_int, doc="Flashlamp shot counter.")

    @property
    def shutter_open(self) -> bool:
        reply = self.ask("R")
        return self._parse_shutter(reply, "R")

    @shutter_open.setter
    def shutter_open(self, value: bool) -> None:
        command = "R1" if value else "R0"
        now_open = self._parse_shutter(self.ask(command), command)
        if now_open != bool(value):
            if value:
                raise LaserInterlockError(self.interlocks(), "the shutter did not open")
            raise InstrumentError(f"{self.name}: the shutter did not close")

    @staticmethod
    def _parse_shutter(reply: str, command: str) -> bool:
        words = reply.lower().split()
        if words[:1] != ["shutter"] or words[-1:] not in (["open"], ["closed"]):
            raise ProtocolError(f"Big Sky laser: cannot parse shutter reply {reply!r} to {command!r}")
        return words[-1] == "open"

    def set_external_trigger(self, flashlamp: bool = True, qswitch: bool = True) -> None:
        """Flashlamp (``LPM``) and Q-switch (``QSM``) triggered by external TTL pulses."""
        self.configure(f"LPM{int(bool(flashlamp))}")
        self.configure(f"QSM{2 if qswitch else 0}")

    # ------------------------------------------------------------- status
    @property
    def status(self) -> LaserStatus:
        reply = self.ask("WOR")
        values = [int(v) for v in re.findall(r"-?\d+", reply)]
        if len(values) != 4:
            raise ProtocolError(f"{self.name}: cannot parse status word {reply!r}")
        interlock, lamp, simmer, qswitch = values
        try:
            return LaserStatus(interlock == 0, PumpState(lamp % 4), lamp >= 4, bool(simmer),
                               PumpState(qswitch % 4), qswitch >= 4)
        except ValueError:
            raise ProtocolError(f"{self.name}: status word {reply!r} out of range") from None

    def interlocks(self) -> frozenset[str]:
        """Names of the open interlocks (IF, IF2 and IQ words); empty when all are closed."""
        flags = set()
        for register, query in (("IF", "IF1"), ("IF2", "IF2"), ("IQ", "IQ")):
            reply = self.ask(query)
            try:
                word = _bit_field(reply)
            except ValueError:
                raise ProtocolError(f"{self.name}: cannot parse {query} reply {reply!r}") from None
            flags |= {name for bit, name in INTERLOCK_BITS[register].items() if word >> bit & 1}
        return frozenset(flags)

    def check_interlocks(self, *, ignore_shutter: bool = True) -> None:
        """Raise :class:`LaserInterlockError` naming every open interlock."""
        flags = set(self.interlocks())
        if ignore_shutter:
            flags.discard("shutter_closed")
        if flags:
            raise LaserInterlockError(flags)

    # ----------------------------------------------------------- running
    def start(self) -> None:
        """Start the flashlamp (``A``), then the Q-switch (``PQ``); verify both run.

        Open the shutter first: the Q-switch is interlocked by a closed shutter.
        """
        self.check_interlocks()
        self.ask("A")
        self.ask("PQ")
        status = self.status
        if status.flashlamp != PumpState.START or status.qswitch != PumpState.START:
            flags = set(self.interlocks())
            detail = f"flashlamp {status.flashlamp.name.lower()}, Q-switch {status.qswitch.name.lower()}"
            self._stop_quietly()
            raise LaserInterlockError(flags or {"unknown"}, detail)

    def _stop_quietly(self) -> None:
        try:
            self.stop()
        except InstrumentError as exc:
            log.error("%s: stopping after a failed start failed too: %s", self.name, exc)

    def stop(self) -> None:
        """Stop the Q-switch (``SQ``), then the flashlamp (``S``)."""
        self.ask("SQ")
        self.ask("S")

    def make_safe(self) -> None:
        """Q-switch stop, flashlamp stop, shutter closed; idempotent.

        Every step is tried even if an earlier one fails (a dead link, a
        garbled reply); if any failed, one :class:`LaserSafetyError` lists them.
        """
        failures: list[tuple[str, Exception]] = []
        for step, command, check in (("Q-switch stop", "SQ", None),
                                     ("flashlamp stop", "S", None),
                                     ("shutter close", "R0", "shutter")):
            try:
                reply = self.ask(command)
                if check == "shutter" and self._parse_shutter(reply, command):
                    raise InstrumentError("the shutter still reports open")
            except Exception as exc:  # every step must be attempted whatever failed
                log.error("%s: make_safe step %r failed: %s", self.name, step, exc)
                failures.append((step, exc))
        if failures:
            raise LaserSafetyError(failures)

    def close(self) -> None:
        """make_safe(), then close the port (also when make_safe fails, which is re-raised)."""
        if self._closed:
            return
        try:
            self.make_safe()
        finally:
            self.close_transport()
