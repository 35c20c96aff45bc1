"""Tables of the commands each instrument's manual defines, with their legal
arguments, written from the manuals independently of the emulators. Tests
check every command a driver put on the wire against them."""

from __future__ import annotations

import re

_F = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def _in(lo, hi):
    return lambda *values: all(lo <= float(v) <= hi for v in values)


def _dlay(channel, reference, delay):
    c, d = int(channel), int(reference)
    return 2 <= c <= 9 and 0 <= d <= 9 and d not in (1, c) and abs(float(delay)) <= 2000


# DG645 remote commands (manual, "Remote Programming" / command list).
DG645 = [
    (r"\*IDN\?", None), (r"\*RST", None), (r"\*CLS", None), (r"\*TRG", None),
    (r"\*ESR\?", None), (r"\*STB\?", None), (r"LERR\?", None), (r"INSR\?", None),
    (r"TSRC ([0-6])", None), (r"TSRC\?", None),
    (rf"TRAT ({_F})", _in(1e-3, 1e6)), (r"TRAT\?", None),
    (rf"TLVL ({_F})", _in(-3.5, 3.5)), (r"TLVL\?", None),
    (r"BURM ([01])", None), (r"BURM\?", None),
    (r"BURC (\d+)", _in(1, 2**31 - 1)), (r"BURC\?", None),
    (rf"BURP ({_F})", _in(100e-9, 2000)), (r"BURP\?", None),
    (rf"BURD ({_F})", _in(0, 2000)), (r"BURD\?", None),
    (r"BURT ([01])", None), (r"BURT\?", None),
    (rf"DLAY (\d),(\d),({_F})", _dlay), (r"DLAY\?\s?[0-9]", None),
    (rf"LAMP ([0-4]),({_F})", lambda b, v: 0.5 <= float(v) <= 5.0), (r"LAMP\?\s?[0-4]", None),
    (rf"LOFF ([0-4]),({_F})", lambda b, v: abs(float(v)) <= 3.0), (r"LOFF\?\s?[0-4]", None),
    (r"LPOL ([0-4]),([01])", None), (r"LPOL\?\s?[0-4]", None),
]

# Big Sky / CFR serial commands (public drivers' command tables; see docs/drivers.md).
BIGSKY = [
    (r">A", None), (r">S", None), (r">M", None), (r">PQ", None), (r">SQ", None),
    (r">R", None), (r">R[01]", None), (r">WOR", None), (r">IF1", None), (r">IF2", None),
    (r">IQ", None), (r">C", None), (r">CQ", None), (r">SN", None),
    (r">LPM[01]?", None), (r">QSM[012]?", None),
    (r">F(\d+)", _in(100, 9999)), (r">F", None),
    (r">W(\d+)", _in(100, 999)), (r">W", None),
]

# Zaber ASCII protocol: "/<device> <axis> <command>" with an optional ":CC" checksum.
_Z = r"/(\d+) (\d+)"
ZABER = [
    (rf"{_Z}", None), (rf"{_Z} home", None), (rf"{_Z} stop", None),
    (rf"{_Z} move abs (-?\d+)", lambda d, a, n: -(2**31) <= int(n) < 2**31),
    (rf"{_Z} get (pos|limit\.min|limit\.max|maxspeed)", None),
    (rf"{_Z} set maxspeed (\d+)", lambda d, a, n: 1 <= int(n) <= 12_000_000),
    (rf"{_Z} warnings", None), (rf"{_Z} warnings clear", None),
    (rf"{_Z} set comm\.checksum [01]", None),
]


def illegal(commands, table) -> list[str]:
    """The commands that no entry of ``table`` accepts."""
    bad = []
    for command in commands:
        command = re.sub(r":[0-9A-F]{2}$", "", command.strip())
        for pattern, check in table:
            match = re.fullmatch(pattern, command)
            if match and (check is None or check(*match.groups())):
                break
        else:
            bad.append(command)
    return bad
