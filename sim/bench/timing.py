"""What the delay generator's settings mean for one shot, and when its cycles run.

:class:`BenchWiring` says which DG645 output drives which input on the bench.
:class:`CycleTiming` turns a DG645 state snapshot into per-cycle times relative
to T0: the flashlamp and Q-switch edges the laser sees, whether those make a
laser pulse, and each spectrometer's gate relative to that pulse.
:class:`TriggerSchedule` knows when cycles run: pulses started by ``*TRG``
(single shot or burst) and the free-running internal rate (optionally
bursting), and hands them out in time order with the delay generator's shot
count as shot id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

OUTPUT_CHANNELS = {"T0": ("T0", "T1"), "AB": ("A", "B"), "CD": ("C", "D"),
                   "EF": ("E", "F"), "GH": ("G", "H")}
# A TTL input sees an edge only if the output swings above this level.
LOGIC_THRESHOLD_V = 1.0
# The Q-switch must open while the flashlamp has pumped the rod; outside this
# window after the flashlamp edge no pulse leaves the head.
PUMP_WINDOW_S = (50e-6, 1e-3)
# The DG645's code (TSRC) for its internal rate generator.
INTERNAL = 0


@dataclass(frozen=True)
class BenchWiring:
    """Which delay-generator output is cabled to which input on the bench."""

    flashlamp: str = "AB"
    qswitch: str = "CD"
    gates: dict[str, str] = field(default_factory=lambda: {"primary": "EF", "secondary": "GH"})

    def __post_init__(self) -> None:
        used: dict[str, str] = {}
        for role, output in [("flashlamp", self.flashlamp), ("qswitch", self.qswitch),
                             *((f"gate of {s}", o) for s, o in self.gates.items())]:
            if output not in OUTPUT_CHANNELS or output == "T0":
                raise ValueError(f"BenchWiring {role}: unknown delay-generator output {output!r} "
                                 f"(outputs: AB, CD, EF, GH)")
            if output in used:
                raise ValueError(f"BenchWiring {role}: output {output} is already wired to {used[output]}")
            used[output] = role


@dataclass(frozen=True)
class Gate:
    """A spectrometer gate: when it opens relative to T0, and how long it stays open."""

    start_s: float
    width_s: float


@dataclass(frozen=True)
class CycleTiming:
    flashlamp_s: float | None       # edge time after T0, None if the laser sees no edge
    qswitch_s: float | None
    lasing: bool                    # the edges make a laser pulse (given a ready laser)
    gates: dict[str, Gate | None]   # None: no gate pulse reaches that spectrometer
    cycle_s: float                  # how long one delay cycle keeps the generator busy

    @classmethod
    def resolve(cls, state, wiring: BenchWiring) -> "CycleTiming":
        def window(output: str) -> tuple[float, float]:
            start, end = OUTPUT_CHANNELS[output]
            return state.times_s[start], state.times_s[end]

        def seen(output: str) -> bool:
            levels = state.outputs[output]
            return levels.offset_v + levels.amplitude_v >= LOGIC_THRESHOLD_V

        def rising_edge(output: str) -> float | None:
            if not seen(output):
                return None
            start, end = window(output)
            if end <= start:
                return None
            # An inverted output rests high and rises at the end of its pulse.
            return start if state.outputs[output].polarity else end

        flashlamp = rising_edge(wiring.flashlamp)
        qswitch = rising_edge(wiring.qswitch)
        lasing = (flashlamp is not None and qswitch is not None
                  and PUMP_WINDOW_S[0] <= qswitch - flashlamp <= PUMP_WINDOW_S[1])
        gates: dict[str, Gate | None] = {}
        for system, output in wiring.gates.items():
            start, end = window(output)
            edge = rising_edge(output)
            gates[system] = None if edge is None else Gate(edge, end - start)
        cycle = max(state.times_s[c] for c in "ABCDEFGH")
        return cls(flashlamp, qswitch, lasing, gates, cycle)

    def gate_after_pulse(self, system: str) -> tuple[float, float] | None:
        """(delay, width) of a system's gate counted from the laser pulse, as the scene wants it."""
        gate = self.gates.get(system)
        if gate is None or self.qswitch_s is None:
            return None
        return gate.start_s - self.qswitch_s, gate.width_s


def _burst_offsets(state) -> np.ndarray:
    if not state.burst_mode:
        return np.zeros(1)
    return state.burst_delay_s + state.burst_period_s * np.arange(state.burst_count)


class TriggerSchedule:
    """Delay-generator cycles in time order, each numbered with the generator's shot count.

    ``strict``: a ``*TRG`` that arrives while the previous cycle or burst still
    runs is ignored, as on the instrument (real time). Otherwise (virtual
    time) the trigger waits for the generator to be free, standing in for the
    time the command would have taken to arrive.
    """

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.next_shot_id = 0
        self.ignored_triggers = 0
        self._pending = np.empty(0)          # T0 times started by *TRG, sorted
        self._busy_until = -math.inf
        self._internal: tuple[float, float, np.ndarray] | None = None   # epoch, period, offsets
        self._internal_key: tuple | None = None
        self._next_k = 1
        self._cycle_s = 0.0

    # ------------------------------------------------------------ configure
    def configure(self, state, timing: CycleTiming, holdoff_s: float, t: float) -> None:
        """Take the generator's settings as they are from clock time ``t`` on."""
        self._cycle_s = timing.cycle_s + holdoff_s
        if state.trigger_source != INTERNAL:
            self._internal = self._internal_key = None
            return
        offsets = _burst_offsets(state)
        period = 1.0 / state.trigger_rate_hz
        # Internal triggers that come while a cycle or burst still runs are ignored by
        # the instrument, so the effective period is a whole multiple of the set one.
        busy = offsets[-1] + self._cycle_s
        effective = period * max(1, math.ceil(busy / period - 1e-9))
        key = (effective, tuple(offsets))
        if key == self._internal_key:
            return
        # A new rate (or a change from another source) restarts the rate generator now.
        self._internal = (t, effective, offsets)
        self._internal_key = key
        self._next_k = 1

    def software_trigger(self, t: float, offsets: np.ndarray) -> float | None:
        """Start a cycle (or burst) at ``t``; the trigger time used, or None if ignored."""
        if t < self._busy_until:
            if self.strict:
                self.ignored_triggers += 1
                return None
            t = self._busy_until
        times = t + np.asarray(offsets, dtype=float)
        self._busy_until = times[-1] + self._cycle_s
        self._pending = np.sort(np.concatenate([self._pending, times]))
        return t

    def cancel(self, times: np.ndarray, busy_until: float) -> None:
        """Withdraw cycles scheduled ahead (an external edge that will not come after all)."""
        self._pending = self._pending[~np.isin(self._pending, times)]
        self._busy_until = busy_until

    @property
    def busy_until(self) -> float:
        return self._busy_until

    # ---------------------------------------------------------------- query
    def _internal_triggers(self, count: int) -> np.ndarray:
        epoch, period, _ = self._internal
        return epoch + period * (self._next_k + np.arange(count))

    def upcoming(self, n: int) -> np.ndarray:
        """The next ``n`` (or fewer, if no more are scheduled) T0 times, without consuming them."""
        candidates = [self._pending[:n]]
        if self._internal is not None:
            offsets = self._internal[2]
            count = max(1, math.ceil(n / len(offsets)))
            candidates.append((self._internal_triggers(count)[:, None] + offsets[None, :]).ravel())
        times = np.sort(np.concatenate(candidates))
        return times[:n]

    def next_time(self) -> float | None:
        times = self.upcoming(1)
        return float(times[0]) if len(times) else None

    # -------------------------------------------------------------- consume
    def take_until(self, t_end: float, limit: int = 100_000) -> tuple[np.ndarray, np.ndarray, float | None]:
        """Consume the T0 times <= ``t_end`` (at most ``limit``).

        Returns (times, shot ids, last internal trigger time or None).
        """
        last_internal = None
        if self._internal is not None:
            epoch, period, offsets = self._internal
            k_last = math.floor((t_end - epoch) / period + 1e-9)
            count = min(max(0, k_last - self._next_k + 1), limit)
            if count:
                triggers = self._internal_triggers(count)
                self._next_k += count
                last_internal = float(triggers[-1])
                pulses = (triggers[:, None] + offsets[None, :]).ravel()
                self._pending = np.sort(np.concatenate([self._pending, pulses]))
                self._busy_until = max(self._busy_until, last_internal + offsets[-1] + self._cycle_s)
        n = int(np.searchsorted(self._pending, t_end, side="right"))
        n = min(n, limit)
        times, self._pending = self._pending[:n], self._pending[n:]
        ids = self.next_shot_id + np.arange(n, dtype=np.int64)
        self.next_shot_id += n
        return times, ids, last_internal
