"""The DG645 remote command set as the emulator executes it: argument parsing,
ranges, the error codes of the LERR? queue, and one handler per mnemonic.

Handlers take ``(emulator, is_query, args)`` and return the reply text or
None; a refused command raises :class:`CommandError` with its LERR? code.
Ranges follow SRS's own driver (see docs/drivers.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

# The manual's facts (channel and output names, error codes) are defined once, in the driver.
from drivers.dg645 import CHANNELS, ERROR_MEANINGS, MAX_DELAY_S, OUTPUTS

T0_WIDTH_S = 25e-9  # not settable: T1 (end of the T0 pulse) sits a fixed time after T0


class CommandError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(ERROR_MEANINGS[code])
        self.code = code


TOKEN = re.compile(r"^\s*(\*[A-Za-z]{3}|[A-Za-z]{4})(\?)?\s*(.*?)\s*$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INT = re.compile(r"^[+-]?\d+$")


def _integer(text: str, lo: int, hi: int) -> int:
    if text == "":
        raise CommandError(114)
    if not _INT.match(text):
        raise CommandError(120)
    value = int(text)
    if abs(value) > 2**32:
        raise CommandError(121)
    if not lo <= value <= hi:
        raise CommandError(10)
    return value


def _number(text: str) -> float:
    if text == "":
        raise CommandError(114)
    if not _FLOAT.match(text):
        raise CommandError(118)
    return float(text)


def _fmt_time(t: float) -> str:
    return f"{t:+.12f}"


def _fmt_float(v: float) -> str:
    return f"{v:+.2f}"


@dataclass
class Settings:
    trigger_source: int = 5
    trigger_rate_hz: float = 1000.0
    trigger_level_v: float = 1.0
    holdoff_s: float = 0.0
    inhibit: int = 1
    burst_mode: int = 0
    burst_count: int = 5
    burst_period_s: float = 100e-6
    burst_delay_s: float = 0.0
    burst_t0: int = 0
    links: list = field(default_factory=lambda: [
        (0, 0.0), (0, T0_WIDTH_S), (0, 0.0), (2, 10e-9), (0, 0.0), (4, 10e-9),
        (0, 0.0), (6, 10e-9), (0, 0.0), (8, 10e-9)])
    amplitude_v: list = field(default_factory=lambda: [2.5] * 5)
    offset_v: list = field(default_factory=lambda: [0.0] * 5)
    polarity: list = field(default_factory=lambda: [1] * 5)


def _expect(args: list[str], n: int) -> None:
    if len(args) < n:
        raise CommandError(116)
    if len(args) > n:
        raise CommandError(115)


def _settable_channel(dev: Any, text: str) -> int:
    channel = _integer(text, 0, 9)
    if channel in (0, 1):
        raise CommandError(13)  # T0 and T1 are not delay channels that can be set
    return channel


def _cmd_dlay(dev: Any, query: bool, args: list[str]) -> str | None:
    s = dev.settings
    if query:
        _expect(args, 1)
        channel = _integer(args[0], 0, 9)
        ref, offset = s.links[channel]
        return f"{ref},{_fmt_time(offset)}"
    _expect(args, 3)
    channel = _settable_channel(dev, args[0])
    ref = _integer(args[1], 0, 9)
    offset = _number(args[2])
    if ref == channel or ref == 1 or dev._references(ref, channel):
        raise CommandError(13)
    absolute = dev._absolute(ref) + offset
    if not 0.0 <= absolute <= MAX_DELAY_S:
        raise CommandError(12)
    s.links[channel] = (ref, round(offset / 5e-12) * 5e-12)
    return None


def _cmd_link(dev: Any, query: bool, args: list[str]) -> str | None:
    s = dev.settings
    if query:
        _expect(args, 1)
        return str(s.links[_integer(args[0], 0, 9)][0])
    _expect(args, 2)
    channel = _settable_channel(dev, args[0])
    ref = _integer(args[1], 0, 9)
    if ref == channel or ref == 1 or dev._references(ref, channel):
        raise CommandError(13)
    s.links[channel] = (ref, s.links[channel][1])
    return None


def _indexed_level(attr: str, lo: float, hi: float, fmt=_fmt_float, integer=False):
    def command(dev: Any, query: bool, args: list[str]) -> str | None:
        values = getattr(dev.settings, attr)
        if query:
            _expect(args, 1)
            value = values[_integer(args[0], 0, 4)]
            return str(value) if integer else fmt(value)
        _expect(args, 2)
        output = _integer(args[0], 0, 4)
        if integer:
            value = _integer(args[1], int(lo), int(hi))
        else:
            value = _number(args[1])
            if not lo <= value <= hi:
                raise CommandError(10)
        values[output] = value
        return None
    return command


def _scalar(attr: str, lo: float, hi: float, *, integer: bool = False, fmt=str):
    def command(dev: Any, query: bool, args: list[str]) -> str | None:
        if query:
            _expect(args, 0)
            return fmt(getattr(dev.settings, attr))
        _expect(args, 1)
        if integer:
            value = _integer(args[0], int(lo), int(hi))
        else:
            value = _number(args[0])
            if not lo <= value <= hi:
                raise CommandError(10)
        setattr(dev.settings, attr, value)
        return None
    return command


def _cmd_trat(dev: Any, query: bool, args: list[str]) -> str | None:
    if query:
        _expect(args, 0)
        return f"{dev.settings.trigger_rate_hz:+.6f}"
    _expect(args, 1)
    rate = _number(args[0])
    if rate <= 0:
        raise CommandError(10)
    # The instrument clamps rates slightly outside its range to the nearest limit.
    dev.settings.trigger_rate_hz = min(max(rate, 1e-3), 1e6)
    return None


def _query_only(fn):
    def command(dev: Any, query: bool, args: list[str]) -> str | None:
        if not query:
            raise CommandError(113)
        return fn(dev, args)
    return command


def _set_only(fn):
    def command(dev: Any, query: bool, args: list[str]) -> str | None:
        if query:
            raise CommandError(112)
        return fn(dev, args)
    return command


def _idn(dev, args):
    _expect(args, 0)
    return dev.idn


def _rst(dev, args):
    _expect(args, 0)
    dev.settings = Settings()
    dev.armed = False


def _cls(dev, args):
    _expect(args, 0)
    dev.errors.clear()
    dev.esr = 0
    dev.insr = 0


def _trg(dev, args):
    _expect(args, 0)
    source = dev.settings.trigger_source
    if source in (3, 4):
        dev.armed = True
        return None
    if source != 5:
        raise CommandError(11)
    t = dev.clock.now()
    dev.register_trigger(t)
    if dev.on_trigger is not None:
        dev.on_trigger(t)


def _lerr(dev, args):
    _expect(args, 0)
    return str(dev.errors.pop(0)) if dev.errors else "0"


def _esr(dev, args):
    _expect(args, 0)
    value, dev.esr = dev.esr, 0
    return str(value)


def _insr(dev, args):
    _expect(args, 0)
    value, dev.insr = dev.insr, 0
    return str(value)


def _stb(dev, args):
    _expect(args, 0)
    busy = dev.clock.now() < dev._burst_until
    stb = (1 if dev.insr & dev.inse else 0) | (int(busy) << 1) | (int(busy) << 2)
    stb |= (1 << 5) if dev.esr & dev.ese else 0
    if stb & dev.sre:
        stb |= 1 << 6
    return str(stb)


def _register(attr: str):
    def command(dev: Any, query: bool, args: list[str]) -> str | None:
        if query:
            _expect(args, 0)
            return str(getattr(dev, attr))
        _expect(args, 1)
        setattr(dev, attr, _integer(args[0], 0, 255))
        return None
    return command


def _sav(dev, args):
    _expect(args, 1)
    slot = _integer(args[0], 1, 9)
    dev._saved[slot] = Settings(**{k: (list(v) if isinstance(v, list) else v)
                                    for k, v in vars(dev.settings).items()})


def _rcl(dev, args):
    _expect(args, 1)
    slot = _integer(args[0], 0, 9)
    if slot == 0:
        dev.settings = Settings()
        return None
    if slot not in dev._saved:
        raise CommandError(14)
    saved = dev._saved[slot]
    dev.settings = Settings(**{k: (list(v) if isinstance(v, list) else v)
                                for k, v in vars(saved).items()})


def _opc(dev, query, args):
    _expect(args, 0)
    if query:
        return "1"
    dev.esr |= 1
    return None


def _noop(dev, args):
    _expect(args, 0)


COMMANDS: dict[str, Callable[[Any, bool, list[str]], str | None]] = {
    "*IDN": _query_only(_idn),
    "*RST": _set_only(_rst),
    "*CLS": _set_only(_cls),
    "*TRG": _set_only(_trg),
    "*WAI": _set_only(_noop),
    "*OPC": _opc,
    "*ESR": _query_only(_esr),
    "*ESE": _register("ese"),
    "*STB": _query_only(_stb),
    "*SRE": _register("sre"),
    "*SAV": _set_only(_sav),
    "*RCL": _set_only(_rcl),
    "LERR": _query_only(_lerr),
    "INSR": _query_only(_insr),
    "INSE": _register("inse"),
    "TSRC": _scalar("trigger_source", 0, 6, integer=True),
    "TRAT": _cmd_trat,
    "TLVL": _scalar("trigger_level_v", -3.5, 3.5, fmt=_fmt_float),
    "HOLD": _scalar("holdoff_s", 0.0, MAX_DELAY_S, fmt=_fmt_time),
    "INHB": _scalar("inhibit", 0, 5, integer=True),
    "BURM": _scalar("burst_mode", 0, 1, integer=True),
    "BURC": _scalar("burst_count", 1, 2**31 - 1, integer=True),
    "BURD": _scalar("burst_delay_s", 0.0, MAX_DELAY_S, fmt=_fmt_time),
    "BURP": _scalar("burst_period_s", 100e-9, MAX_DELAY_S, fmt=_fmt_time),
    "BURT": _scalar("burst_t0", 0, 1, integer=True),
    "DLAY": _cmd_dlay,
    "LINK": _cmd_link,
    "LAMP": _indexed_level("amplitude_v", 0.5, 5.0),
    "LOFF": _indexed_level("offset_v", -3.0, 3.0),
    "LPOL": _indexed_level("polarity", 0, 1, integer=True),
    "REMT": _set_only(_noop),
    "LCAL": _set_only(_noop),
}
