"""Named errors raised by the instrument drivers.

Every driver error derives from :class:`InstrumentError`, so callers that only
need to know "the instrument failed" catch that; callers that react to a
specific condition (an interlock, a rejected move) catch the subclass.
"""

from __future__ import annotations


class InstrumentError(Exception):
    """An instrument or its link failed, or refused what it was asked."""


class InstrumentConnectionError(InstrumentError):
    """The transport could not be opened or broke down (not a timeout)."""


class InstrumentTimeout(InstrumentError):
    """No (complete) reply arrived within the timeout."""


class ProtocolError(InstrumentError):
    """A reply arrived but is garbled or cannot be parsed."""


class DG645Error(InstrumentError):
    """The DG645 reported an error code in its LERR? queue."""

    def __init__(self, code: int, meaning: str, command: str | None = None) -> None:
        where = f" after {command!r}" if command else ""
        super().__init__(f"DG645 error {code} ({meaning}){where}")
        self.code = code
        self.meaning = meaning
        self.command = command


class LaserInterlockError(InstrumentError):
    """The laser refused to run: one or more interlocks are open."""

    def __init__(self, flags: set[str] | frozenset[str], detail: str = "") -> None:
        names = ", ".join(sorted(flags)) or "unknown interlock"
        super().__init__(f"laser interlock open: {names}" + (f" ({detail})" if detail else ""))
        self.flags = frozenset(flags)


class LaserSafetyError(InstrumentError):
    """make_safe() could not complete every step; ``failures`` says which."""

    def __init__(self, failures: list[tuple[str, Exception]]) -> None:
        summary = "; ".join(f"{step}: {exc}" for step, exc in failures)
        super().__init__(f"laser make_safe incomplete, {len(failures)} step(s) failed: {summary}")
        self.failures = failures


class StageRejected(InstrumentError):
    """The stage answered RJ (rejected) with a reason such as BADDATA."""

    def __init__(self, reason: str, command: str = "") -> None:
        super().__init__(f"stage rejected {command!r}: {reason}" if command
                         else f"stage rejected command: {reason}")
        self.reason = reason
        self.command = command


class StageFault(InstrumentError):
    """The stage reports fault flags (FS stalled, FE limit error, ...)."""

    def __init__(self, flags: set[str] | frozenset[str], axis: str = "") -> None:
        where = f" on axis {axis}" if axis else ""
        super().__init__(f"stage fault{where}: {', '.join(sorted(flags))}")
        self.flags = frozenset(flags)
        self.axis = axis
