"""Fault injection settings for one simulated-bench run.

``BenchFaults.from_string("missed-trigger=0.01,timeout=0.002,garbled=0.002,stall=0.001,interlock-at=500")``

=================  ==========================================================
``missed-trigger``  probability per delay-generator cycle that one armed
                    spectrometer (chosen at random) misses its trigger: it
                    delivers no frame for that shot while the other one does.
``timeout``         probability that an instrument's reply is lost on the wire
                    (the command still ran; the driver sees a timeout).
``garbled``         probability that a reply arrives corrupted (line noise).
``stall``           probability per axis move that the stage stalls part way
                    (20-80 % of the move) and stops there with fault flag FS.
``interlock-at``    laser shot number N (counted from 0 over the bench's life)
                    at which the external interlock opens: exactly N pulses
                    reach the sample, then the laser stops.
=================  ==========================================================

Random draws come from the bench's seed, so a run with the same seed and the
same commands injects the same faults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

_PROBABILITIES = {"missed-trigger": "missed_trigger", "timeout": "timeout",
                  "garbled": "garbled", "stall": "stall"}
_COUNTS = {"interlock-at": "interlock_at"}


class BenchFaultsError(ValueError):
    """A fault specification cannot be used; the message names the offending item."""


@dataclass(frozen=True)
class BenchFaults:
    missed_trigger: float = 0.0
    timeout: float = 0.0
    garbled: float = 0.0
    stall: float = 0.0
    interlock_at: int | None = None

    def __post_init__(self) -> None:
        for key, attr in _PROBABILITIES.items():
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise BenchFaultsError(f"fault {key}={value!r}: expected a probability between 0 and 1")
        if self.interlock_at is not None and (isinstance(self.interlock_at, bool)
                                              or not isinstance(self.interlock_at, int)
                                              or self.interlock_at < 0):
            raise BenchFaultsError(f"fault interlock-at={self.interlock_at!r}: "
                                   "expected a shot number >= 0")

    @classmethod
    def from_string(cls, text: str | None) -> "BenchFaults":
        """Parse ``key=value`` items separated by commas; an empty string means no faults."""
        values: dict[str, object] = {}
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = (part.strip() for part in item.partition("="))
            key = key.lower()
            if not sep or not raw:
                raise BenchFaultsError(f"fault item {item!r}: expected key=value, e.g. missed-trigger=0.01")
            if key in _PROBABILITIES:
                try:
                    value: object = float(raw)
                except ValueError:
                    raise BenchFaultsError(f"fault {key}={raw!r}: not a number") from None
                attr = _PROBABILITIES[key]
            elif key in _COUNTS:
                try:
                    value = int(raw)
                except ValueError:
                    raise BenchFaultsError(f"fault {key}={raw!r}: not a whole shot number") from None
                attr = _COUNTS[key]
            else:
                known = ", ".join([*_PROBABILITIES, *_COUNTS])
                raise BenchFaultsError(f"unknown fault {key!r} in {text!r} (known: {known})")
            if attr in values:
                raise BenchFaultsError(f"fault {key!r} is given twice in {text!r}")
            values[attr] = value
        return cls(**values)

    def to_string(self) -> str:
        """The inverse of :meth:`from_string` (only the faults that are switched on)."""
        names = {**{v: k for k, v in _PROBABILITIES.items()}, **{v: k for k, v in _COUNTS.items()}}
        items = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in (None, 0, 0.0):
                items.append(f"{names[f.name]}={value:g}" if isinstance(value, float)
                             else f"{names[f.name]}={value}")
        return ",".join(items)

    @property
    def any(self) -> bool:
        return bool(self.to_string())
