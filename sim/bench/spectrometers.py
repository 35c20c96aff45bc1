"""Simulated spectrometers: the :class:`drivers.spectrometer.Spectrometer` interface, in process.

Real spectrometers are reached through vendor SDKs, not a wire protocol, so
the bench simulates them above the SDK: the acquisition code gets an object
with exactly the interface a real adapter has.

Triggering follows the bench wiring: in ``external-edge`` / ``external-level``
mode a spectrometer takes one frame per pulse of its delay-generator output
while armed, and its exposure is that pulse (so ``gate_delay_s`` and
``gate_width_s`` *report* the gate the delay generator makes, counted from
the laser pulse; setting them changes nothing, as on a detector gated
externally). In ``software`` mode a read exposes at once, unsynchronised with
the laser: a dark frame.

Frames carry the trigger (T0) time as timestamp, identical for both systems
of a shot, and a per-spectrometer frame counter that counts the frames this
spectrometer delivered since the bench started (a missed trigger makes no
frame, so counters of the two systems drift apart; pair by timestamp).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from itertools import groupby

import numpy as np

from drivers.errors import InstrumentError, InstrumentTimeout
from drivers.spectrometer import Frame, Spectrometer, check_trigger_mode
from sim.bench.render import ShotBatch, render_together

log = logging.getLogger(__name__)

SATURATION_COUNTS = 65535.0
# Virtual time: how long a read with nothing scheduled lets other threads trigger.
GRACE_S = 0.01
_CONTINUOUS = 2**62


class SimulatedSpectrometer(Spectrometer):
    def __init__(self, engine, system: str, *, serial: str) -> None:
        self._engine = engine
        self.name = system
        self.model = f"twinplume simulated {system} spectrograph"
        self.serial = serial
        self._wavelengths = np.asarray(engine.scene.wavelengths(system), dtype=np.float64)
        self._wavelengths.setflags(write=False)
        self._mode = "external-edge"
        self._remaining = 0
        self._queue: deque[tuple[ShotBatch, int, int]] = deque()
        self._frames_delivered = 0
        self._closed = False

    # ------------------------------------------------------------ identity
    @property
    def pixels(self) -> int:
        return len(self._wavelengths)

    def wavelengths(self) -> np.ndarray:
        return self._wavelengths

    @property
    def saturation_level(self) -> float:
        return SATURATION_COUNTS

    # --------------------------------------------------------------- gate
    def _gate(self) -> tuple[float, float]:
        gate = self._engine.timing.gate_after_pulse(self.name)
        return gate if gate is not None else (math.nan, math.nan)

    @property
    def gate_delay_s(self) -> float:
        """Gate opening after the laser pulse, as the delay generator makes it (NaN: no gate)."""
        return self._gate()[0]

    @gate_delay_s.setter
    def gate_delay_s(self, value: float) -> None:
        self._note_gate_setting("gate_delay_s", value, self._gate()[0])

    @property
    def gate_width_s(self) -> float:
        return self._gate()[1]

    @gate_width_s.setter
    def gate_width_s(self, value: float) -> None:
        self._note_gate_setting("gate_width_s", value, self._gate()[1])

    def _note_gate_setting(self, name: str, value: float, actual: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: {name} must be a finite number of seconds, got {value!r}")
        if not (abs(value - actual) <= 1e-9):
            output = self._engine.wiring.gates.get(self.name, "?")
            log.info("%s: %s=%g s requested, but the gate is delay-generator output %s "
                     "(now %g s); set the delay generator", self.name, name, value, output, actual)

    @property
    def trigger_mode(self) -> str:
        return self._mode

    @trigger_mode.setter
    def trigger_mode(self, mode: str) -> None:
        with self._engine.lock:
            self._check_open()
            self._mode = check_trigger_mode(mode)

    # ------------------------------------------------------- acquisition
    def arm(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not (n >= 1 or n == -1):
            raise ValueError(f"{self.name}: arm(n) needs n >= 1, or -1 for continuous, got {n!r}")
        with self._engine.lock:
            self._check_open()
            self._engine.catch_up()
            self._engine.note_activity("spectrometer")
            self._remaining = _CONTINUOUS if n == -1 else int(n)

    def abort(self) -> None:
        with self._engine.lock:
            self._engine.catch_up()
            self._remaining = 0
            self._queue.clear()

    def close(self) -> None:
        with self._engine.lock:
            self.abort()
            self._closed = True
            if self._engine.spectrometers.get(self.name) is self:
                del self._engine.spectrometers[self.name]

    def read(self, timeout_s: float) -> Frame:
        return self.read_batch(1, timeout_s)[0]

    def read_batch(self, max_frames: int, timeout_s: float) -> list[Frame]:
        """Between 1 and ``max_frames`` frames, or InstrumentTimeout if none came in time.

        Real time: waits up to ``timeout_s`` for the first frame, then takes what
        is there. Virtual time: waiting costs nothing, so the clock runs on until
        ``max_frames`` frames are ready, the timeout has passed, or no scheduled
        cycle can bring more; ask for the frames you want (e.g. the rest of a row).
        """
        if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
            raise ValueError(f"{self.name}: max_frames must be an integer >= 1, got {max_frames!r}")
        timeout_s = float(timeout_s)
        if not timeout_s >= 0:
            raise ValueError(f"{self.name}: timeout_s must be >= 0, got {timeout_s!r}")
        engine = self._engine
        with engine.lock:
            self._check_open()
            engine.catch_up()
            engine.note_activity("spectrometer")
            if self._mode == "software":
                self._expose_now(int(max_frames))
            else:
                engine.wait_for_frames(self, int(max_frames), timeout_s, GRACE_S)
            k = min(int(max_frames), len(self._queue))
            if k == 0:
                raise InstrumentTimeout(self._timeout_message(timeout_s))
            entries = [self._queue.popleft() for _ in range(k)]
        return self._frames(entries)

    # ------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise InstrumentError(f"{self.name}: the simulated spectrometer is closed")

    def _timeout_message(self, timeout_s: float) -> str:
        if self._remaining == 0:
            why = "it is not armed"
        elif self._engine.timing.gates.get(self.name) is None:
            why = f"its delay-generator output {self._engine.wiring.gates.get(self.name)} makes no gate pulse"
        else:
            why = "no delay-generator cycle triggered it"
        return f"{self.name}: no frame within {timeout_s:g} s ({why})"

    def _waiting_triggers(self) -> int:
        if self._closed or self._mode == "software":
            return 0
        return self._remaining

    def _ready(self) -> int:
        return len(self._queue)

    def _deliver(self, batch: ShotBatch, rows: np.ndarray, *, triggered: bool = True) -> None:
        for row in rows:
            self._queue.append((batch, int(row), self._frames_delivered))
            self._frames_delivered += 1
        if triggered and self._remaining != _CONTINUOUS:
            self._remaining -= len(rows)

    def _expose_now(self, n: int) -> None:
        engine = self._engine
        t = engine.clock.now()
        batch = ShotBatch(engine.scene, np.full(n, t), np.full(n, -1), np.zeros(n), np.zeros(n),
                          np.zeros(n, dtype=bool), {self.name: None},
                          rng_seed=(engine.seed, 4, self._frames_delivered))
        self._deliver(batch, np.arange(n), triggered=False)

    def _frames(self, entries: list[tuple[ShotBatch, int, int]]) -> list[Frame]:
        render_together([batch for batch, _, _ in entries])
        frames: list[Frame] = []
        for batch, run in groupby(entries, key=lambda entry: entry[0]):
            run = list(run)
            rows = np.fromiter((row for _, row, _ in run), dtype=np.intp, count=len(run))
            counts = batch.spectra[self.name][rows]
            saturated = counts.max(axis=1) >= SATURATION_COUNTS
            frames.extend(Frame(counts[i], number, float(batch.t[row]), bool(saturated[i]))
                          for i, (_, row, number) in enumerate(run))
        return frames
