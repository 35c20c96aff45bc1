"""Spectra for processed shots, rendered late and in batches.

The engine records what each shot needs (plasma position, whether the laser
fired, each system's gate relative to the pulse) as a :class:`ShotBatch`;
the plasma is only computed when a spectrometer hands frames out, and then
for as many shots at once as are waiting, because the scene is vectorised
and per-shot calls would cap the bench far below a kHz laser.

Both systems of a shot are rendered in one scene call, so they see the same
plasma (its fluctuations are common to both; only detector noise differs).
"""

from __future__ import annotations

import threading
import time
from itertools import groupby

import numpy as np


class ShotBatch:
    def __init__(self, scene, t, shot_ids, x_um, y_um, emitted, gates, *, rng_seed) -> None:
        self.scene = scene
        self.t = t
        self.shot_ids = shot_ids
        self.x_um, self.y_um = x_um, y_um
        self.emitted = emitted
        self.gates = gates                   # system -> (delay after the pulse, width) in s
        self.rng_seed = rng_seed
        self.spectra: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.t)

    @property
    def key(self) -> tuple:
        return tuple(sorted(self.gates.items()))


def plasma_gate(delay_s: float, width_s: float) -> tuple[float, float] | None:
    """The part of a gate that can see plasma (from the pulse on), or None if none of it can."""
    start, end = max(delay_s, 0.0), delay_s + width_s
    if width_s <= 0 or end <= 0:
        return None
    return start, end - start


def render(scene, x_um, y_um, emitted, gates, rng) -> dict[str, np.ndarray]:
    k = len(x_um)
    visible = {}
    for system, after_pulse in gates.items():
        gate = None if after_pulse is None else plasma_gate(*after_pulse)
        if gate is not None:
            visible[system] = gate
    out: dict[str, np.ndarray] = {}
    if visible and emitted.any():
        spectra = scene.shots(x_um, y_um, gates=visible, fired=emitted, rng=rng)
        out = {system: np.asarray(spectra[system], dtype=np.float32) for system in visible}
    for system in gates:
        if system not in out:
            # A gate that closes before the pulse (or a shot with no pulse) sees only the detector.
            out[system] = np.asarray(scene.dark(system, k, rng=rng), dtype=np.float32)
    return out


_render_lock = threading.Lock()
# Time spent in the scene and shots rendered, for the speed report (bench/sim_bench.py).
render_stats = {"seconds": 0.0, "shots": 0, "calls": 0}


def render_together(batches: list[ShotBatch]) -> None:
    """Render every batch that has not been rendered yet, merging neighbours with equal gates."""
    with _render_lock:
        todo = [b for b in dict.fromkeys(batches) if b.spectra is None]
        for _, group in groupby(todo, key=lambda b: b.key):
            group = list(group)
            first = group[0]
            rng = np.random.default_rng(list(first.rng_seed))
            started = time.perf_counter()
            spectra = render(first.scene,
                             np.concatenate([b.x_um for b in group]),
                             np.concatenate([b.y_um for b in group]),
                             np.concatenate([b.emitted for b in group]),
                             first.gates, rng)
            render_stats["seconds"] += time.perf_counter() - started
            render_stats["shots"] += sum(len(b) for b in group)
            render_stats["calls"] += 1
            start = 0
            for b in group:
                b.spectra = {s: a[start:start + len(b)] for s, a in spectra.items()}
                start += len(b)
