"""A full trigger -> laser -> plasma -> two spectra cycle through the real drivers and transports."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.shared.systems import SYSTEM_NAMES
from drivers.dg645 import TriggerSource
from tests.fixtures.emulated import GOOD_GATE, arm_both, read_all



def find_spot(scene, phase: str, *, margin_um: float = 40.0) -> tuple[float, float]:
    """A stage position well inside a grain of ``phase``."""
    index = scene.sample.phase_names.index(phase)
    grid = np.arange(1000.0, 8000.0, 70.0)
    x, y = (a.ravel() for a in np.meshgrid(grid, grid))
    inside = scene.sample.phase_at(x, y) == index
    for dx, dy in ((margin_um, 0), (-margin_um, 0), (0, margin_um), (0, -margin_um)):
        inside &= scene.sample.phase_at(x + dx, y + dy) == index
    if not inside.any():
        pytest.skip(f"no {phase} grain found in the test area of this sample")
    i = int(np.flatnonzero(inside)[0])
    return float(x[i]), float(y[i])


def reference(scene, x, y, system):
    """Mean spectrum of a spot straight from the physics, dark level removed."""
    rng = np.random.default_rng(123)
    shots = scene.shots(np.full(16, x), np.full(16, y), gates=dict.fromkeys(SYSTEM_NAMES, GOOD_GATE), rng=rng)
    return shots[system].mean(axis=0) - np.median(scene.dark(system, 16, rng=rng))


def correlation(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_single_shot_gives_one_frame_per_system_at_the_fired_shot(bench, rig):
    rig.stage.move_to(4000.0, 6000.0)
    x_um, y_um = rig.stage.position_um
    primary, secondary = arm_both(bench, 1)
    rig.dg.trigger()
    frames = {name: spec.read(1.0) for name, spec in (("primary", primary), ("secondary", secondary))}

    fired = bench.fired
    assert len(fired) == 1
    shot = fired[0]
    assert shot.x_um == pytest.approx(x_um) and shot.y_um == pytest.approx(y_um)
    for name, frame in frames.items():
        assert frame.timestamp == shot.t
        assert frame.frame == 0
        assert frame.counts.shape == (bench.spectrometer(name).pixels,)
        assert frame.counts.dtype == np.float32
        dark = bench.scene.dark(name, 32, rng=np.random.default_rng(0))
        # Emission lines stand far above the detector's dark level and noise.
        assert frame.counts.max() - np.median(dark) > 30 * dark.std()
    assert rig.laser.shot_count == 1


@pytest.mark.parametrize("phase, other", [("quartz", "albite"), ("albite", "quartz")])
def test_spectra_show_the_phase_under_the_stage(bench, rig, scene, phase, other):
    here, there = find_spot(scene, phase), find_spot(scene, other)
    rig.stage.move_to(*here)
    rig.dg.burst_mode = True
    rig.dg.burst_count = 4
    rig.dg.burst_period_s = 1e-3
    primary, secondary = arm_both(bench, 4)
    rig.dg.trigger()
    for spec in (primary, secondary):
        measured = np.mean([f.counts for f in read_all(spec, 4)], axis=0)
        measured -= np.median(scene.dark(spec.name, 16, rng=np.random.default_rng(7)))
        own = correlation(measured, reference(scene, *here, spec.name))
        foreign = correlation(measured, reference(scene, *there, spec.name))
        assert own > 0.9, f"{spec.name}: {phase} spot does not look like {phase} (r={own:.3f})"
        assert own > foreign + 0.1, f"{spec.name}: {phase} spot looks as much like {other}"


def test_frames_from_two_systems_pair_by_timestamp_and_count_per_system(bench, rig):
    primary, secondary = arm_both(bench, 3)
    for _ in range(3):
        rig.dg.trigger()
    p, s = read_all(primary, 3), read_all(secondary, 3)
    assert [f.frame for f in p] == [0, 1, 2] and [f.frame for f in s] == [0, 1, 2]
    assert [f.timestamp for f in p] == [f.timestamp for f in s] == [shot.t for shot in bench.fired]
    assert [shot.shot_id for shot in bench.fired] == [0, 1, 2]
    assert np.all(np.diff([f.timestamp for f in p]) > 0)


def test_unarmed_spectrometer_takes_no_frame_while_the_other_does(bench, rig):
    primary = bench.spectrometer("primary")
    primary.arm(1)
    rig.dg.trigger()
    assert len(primary.read_batch(5, 0.5)) == 1
    from drivers.errors import InstrumentTimeout
    with pytest.raises(InstrumentTimeout, match="not armed"):
        bench.spectrometer("secondary").read(0.2)
    assert len(bench.fired) == 1


def test_internal_trigger_fires_the_laser_and_frames_follow_the_rate(bench, rig):
    primary, secondary = arm_both(bench, 10)
    rig.dg.trigger_rate_hz = 500.0
    rig.dg.trigger_source = TriggerSource.INTERNAL
    p, s = read_all(primary, 10), read_all(secondary, 10)
    rig.dg.trigger_source = TriggerSource.SINGLE_SHOT
    stamps = np.array([f.timestamp for f in p])
    assert np.allclose(np.diff(stamps), 1 / 500.0, atol=1e-6)
    assert [f.timestamp for f in s] == list(stamps)
    assert [shot.t for shot in bench.fired][:10] == list(stamps)
