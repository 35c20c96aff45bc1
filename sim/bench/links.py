"""What sits between a transport and an emulator on the bench.

A :class:`BenchLink` is what the transport serves instead of the bare
emulator (same duck-typed protocol: ``handle``, ``reply_terminator``,
``lock``). It makes every command go through the bench engine's lock, so
that cycles due before the command are processed first (the command cannot
change the past), and it tells the engine what happened afterwards:

* delay generator: its settings may have changed, so the engine re-reads them;
* stage, in virtual time: a client that keeps asking a moving stage -- every
  axis once and then again, with no other command or spectrometer call in
  between -- is waiting for it, so the clock jumps to the end of the move
  (processing the cycles on the way). Asking once (a position read-back
  while shooting on the fly) does not move time;
* stage, with a stall fault: each move that starts may be made to stall.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# Where along its length a stalled move stops.
STALL_FRACTION = (0.2, 0.8)


class BenchLink:
    def __init__(self, emulator, engine, *, role: str) -> None:
        self.emulator = emulator
        self.engine = engine
        self.role = role
        self.reply_terminator = emulator.reply_terminator
        self.lock = engine.lock

    def handle(self, line: str) -> list[str]:
        with self.engine.lock:
            self.engine.catch_up()
            self.engine.note_activity(self.role)
            replies = self.emulator.handle(line)
            if self.role == "delay_generator":
                self.engine.reconfigure()
            return replies


class StageLink(BenchLink):
    def __init__(self, emulator, engine, *, axes, stall_probability: float, rng) -> None:
        super().__init__(emulator, engine, role="stage")
        self.axes = axes
        self.stall_probability = stall_probability
        self.rng = rng
        self.stalls: list[tuple[float, tuple[int, int]]] = []   # (move start, axis)

    def handle(self, line: str) -> list[str]:
        engine = self.engine
        with engine.lock:
            engine.catch_up()
            if engine.clock.virtual and engine.stage_polls >= len(self.axes):
                end = engine.stage_move_end()
                if end is not None:
                    engine.advance_to(end)
            moving = engine.stage_move_end() is not None
            before = {a: self._move_of(a) for a in self.axes}
            armed = self._arm_stalls()
            engine.settle_stage_edge()
            replies = self.emulator.handle(line)
            self._settle_stalls(before, armed)
            engine.schedule_stage_edge()
            motion_changed = any(self._move_of(a) != before[a] for a in self.axes)
            # Only questions to a moving stage count as polling; a command that
            # starts or stops motion, or an idle stage, starts the count afresh.
            engine.stage_polls = engine.stage_polls + 1 if moving and not motion_changed else 0
            return replies

    def _move_of(self, axis) -> tuple:
        model = self.emulator.axes[axis]
        return (model.t_start, model.t_end, model.start_pos, model.target)

    def _arm_stalls(self) -> list[tuple[int, int]]:
        if not self.stall_probability:
            return []
        armed = []
        for axis in self.axes:
            if self.emulator.axes[axis].pending_stall is None and self.rng.random() < self.stall_probability:
                fraction = float(self.rng.uniform(*STALL_FRACTION))
                self.emulator.inject_stall(axis, fraction=fraction)
                armed.append(axis)
        return armed

    def _settle_stalls(self, before: dict, armed: list) -> None:
        for axis in armed:
            model = self.emulator.axes[axis]
            if self._move_of(axis) != before[axis] and model.pending_stall is None:
                self.stalls.append((model.t_start, axis))
                log.warning("fault injected: stage axis %s stalls during the move started at %.6f",
                            axis, model.t_start)
            else:
                # The command started no move: the stall was meant for this command only.
                model.pending_stall = None


def link_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, 3, stream])
