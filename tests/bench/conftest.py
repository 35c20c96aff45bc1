"""Shared set-up for the simulated-bench tests: a bench, and the real drivers on its transports."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from drivers.bigsky import BigSkyLaser
from drivers.dg645 import DG645, TriggerSource
from drivers.zaber import ZaberXYStage
from sim.bench import SimulatedBench
from sim.scene import PairedScene

QSWITCH_DELAY_S = 150e-6
GOOD_GATE = (1e-6, 10e-6)     # after the laser pulse: lines well above the continuum


@pytest.fixture(scope="session")
def scene():
    # Building the scene (sample, line tables, spectrograph matrices) is the slow part; share it.
    return PairedScene(seed=1)


@pytest.fixture
def bench(scene):
    with SimulatedBench(seed=1, scene=scene) as bench:
        yield bench


@dataclass
class Instruments:
    dg: DG645
    laser: BigSkyLaser
    stage: ZaberXYStage


def open_instruments(bench: SimulatedBench, *, timeout_s: float = 1.0) -> Instruments:
    r = bench.resources
    return Instruments(DG645(r["delay_generator"], timeout_s=timeout_s),
                       BigSkyLaser(r["laser"], timeout_s=timeout_s),
                       ZaberXYStage(r["stage"], timeout_s=timeout_s, poll_interval_s=0.001))


@pytest.fixture
def rig(bench):
    """The three instruments through their real drivers, timed for gated LIBS, laser running."""
    rig = open_instruments(bench)
    set_timing(rig.dg)
    rig.dg.trigger_source = TriggerSource.SINGLE_SHOT
    start_laser(rig.laser)
    yield rig
    for instrument in (rig.laser, rig.stage, rig.dg):
        instrument.close()


def set_timing(dg: DG645, *, qswitch_s: float = QSWITCH_DELAY_S, primary=GOOD_GATE, secondary=GOOD_GATE,
               flashlamp_s: float = 0.0) -> None:
    """Flashlamp on AB at T0 + flashlamp_s, Q-switch on CD, gates on EF / GH counted from C."""
    dg.set_delay("A", "T0", flashlamp_s)
    dg.set_delay("B", "A", 10e-6)
    dg.set_delay("C", "T0", qswitch_s)
    dg.set_delay("D", "C", 10e-6)
    for start, end, (delay, width) in (("E", "F", primary), ("G", "H", secondary)):
        dg.set_delay(start, "C", delay)
        dg.set_delay(end, start, width)


def start_laser(laser: BigSkyLaser) -> None:
    laser.set_external_trigger(flashlamp=True, qswitch=True)
    laser.shutter_open = True
    laser.start()


def arm_both(bench: SimulatedBench, n: int):
    primary, secondary = bench.spectrometer("primary"), bench.spectrometer("secondary")
    primary.arm(n)
    secondary.arm(n)
    return primary, secondary


def read_all(spectrometer, n: int, timeout_s: float = 2.0):
    frames = []
    while len(frames) < n:
        frames += spectrometer.read_batch(n - len(frames), timeout_s)
    return frames
