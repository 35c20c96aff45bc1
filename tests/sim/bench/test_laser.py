"""The laser fires only when it can: armed, shutter open, no interlock."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.errors import LaserInterlockError
from tests.fixtures.emulated import arm_both, read_all


def shoot_and_read(bench, rig, n: int = 3):
    specs = arm_both(bench, n)
    for _ in range(n):
        rig.dg.trigger()
    return {spec.name: np.array([f.counts for f in read_all(spec, n)]) for spec in specs}


def assert_dark(bench, spectra):
    for system, counts in spectra.items():
        dark = bench.scene.dark(system, 64, rng=np.random.default_rng(3))
        assert abs(counts.mean() - np.median(dark)) < dark.std(), f"{system} saw light"


def test_closed_shutter_means_no_plasma_but_frames_still_come(bench, rig):
    rig.laser.shutter_open = False
    spectra = shoot_and_read(bench, rig)
    assert bench.fired == []
    assert_dark(bench, spectra)
    assert rig.laser.flashlamp_count == 3, "the flashlamp still fires behind the shutter"
    assert rig.laser.shot_count == 3


def test_stopped_laser_ignores_triggers(bench, rig):
    rig.laser.stop()
    spectra = shoot_and_read(bench, rig)
    assert bench.fired == []
    assert_dark(bench, spectra)
    assert rig.laser.flashlamp_count == 0


def test_open_interlock_stops_the_laser_and_the_driver_names_it(bench, rig):
    bench.laser_emulator.set_interlock("cover_open")
    spectra = shoot_and_read(bench, rig)
    assert bench.fired == []
    assert_dark(bench, spectra)
    with pytest.raises(LaserInterlockError, match="cover_open"):
        rig.laser.check_interlocks()


def test_laser_in_internal_trigger_mode_is_not_fired_by_the_delay_generator(bench, rig):
    rig.laser.set_external_trigger(flashlamp=False, qswitch=False)
    shoot_and_read(bench, rig, n=1)
    assert bench.fired == []


def test_make_safe_is_counted(bench, rig):
    before = bench.laser_safe_count
    rig.laser.make_safe()
    rig.laser.make_safe()
    assert bench.laser_safe_count == before + 2
    spectra = shoot_and_read(bench, rig, n=1)
    assert bench.fired == []
    assert_dark(bench, spectra)
