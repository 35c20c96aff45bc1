"""As-fast-as-possible (virtual) time, and the same physics on the wall clock."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.dg645 import TriggerSource
from drivers.errors import InstrumentTimeout
from sim.bench import SimulatedBench
from tests.fixtures.emulated import arm_both, open_instruments, read_all, set_timing, start_laser


def set_burst(dg, n: int, period_s: float, delay_s: float = 0.0) -> None:
    dg.burst_mode = True
    dg.burst_count = n
    dg.burst_period_s = period_s
    dg.burst_delay_s = delay_s


def test_burst_of_n_gives_n_frames_per_system_with_matching_timestamps(bench, rig):
    n, period = 25, 2e-3
    set_burst(rig.dg, n, period, delay_s=1e-3)
    primary, secondary = arm_both(bench, n)
    t_trigger = bench.clock.now()
    rig.dg.trigger()
    p, s = primary.read_batch(n, 1.0), secondary.read_batch(n, 1.0)
    assert len(p) == len(s) == n
    stamps = np.array([f.timestamp for f in p])
    assert [f.timestamp for f in s] == list(stamps)
    assert np.allclose(stamps - t_trigger, 1e-3 + period * np.arange(n), atol=1e-6)
    assert [shot.shot_id for shot in bench.fired] == list(range(n))
    assert bench.clock.now() >= stamps[-1]


def test_trigger_while_a_burst_runs_waits_for_it_in_virtual_time(bench, rig):
    n, period = 5, 1e-3
    set_burst(rig.dg, n, period)
    primary, secondary = arm_both(bench, 2 * n)
    rig.dg.trigger()
    rig.dg.trigger()                       # the generator is still busy with the first burst
    stamps = np.array([f.timestamp for f in read_all(primary, 2 * n)])
    assert len(read_all(secondary, 2 * n)) == 2 * n
    assert np.all(np.diff(stamps) > 0)
    assert stamps[n] > stamps[n - 1] + 1e-6


def test_stage_move_completes_in_virtual_time(bench, rig):
    rig.stage.set_speed(1000.0)            # 1 mm/s
    start = bench.clock.now()
    rig.stage.move_to(20_000.0, 0.0)
    assert bench.clock.now() - start >= 20.0 - 1e-3
    assert rig.stage.position_um[0] == pytest.approx(20_000.0, abs=0.05)
    assert not rig.stage.busy


def test_reading_the_position_once_does_not_move_time(bench, rig):
    rig.stage.move_to(1000.0, 1000.0)
    rig.stage.move_to(9000.0, 1000.0, wait=False)
    now = bench.clock.now()
    x_um, _ = rig.stage.position_um
    assert bench.clock.now() == now
    assert x_um == pytest.approx(1000.0, abs=0.05)


def test_fly_row_shots_land_one_step_apart(bench, rig):
    step_um, rate_hz, n = 40.0, 1000.0, 50
    rig.stage.move_to(2000.0, 3000.0)
    rig.stage.set_speed(step_um * rate_hz)
    primary, secondary = arm_both(bench, n)
    rig.stage.move_to(2000.0 + step_um * (n + 5), 3000.0, wait=False)
    rig.dg.trigger_rate_hz = rate_hz
    rig.dg.trigger_source = TriggerSource.INTERNAL
    p, s = primary.read_batch(n, 1.0), secondary.read_batch(n, 1.0)
    rig.dg.trigger_source = TriggerSource.SINGLE_SHOT
    fired = bench.fired[:n]
    assert [f.timestamp for f in p] == [f.timestamp for f in s] == [shot.t for shot in fired]
    x = np.array([shot.x_um for shot in fired])
    # microstep rounding of the speed leaves a small error per step
    assert np.allclose(np.diff(x), step_um, atol=0.2)
    assert all(shot.y_um == pytest.approx(3000.0, abs=0.05) for shot in fired)


def test_continuous_acquisition_hands_out_consecutive_frames(bench, rig):
    primary = bench.spectrometer("primary")
    primary.arm(-1)
    rig.dg.trigger_rate_hz = 2000.0
    rig.dg.trigger_source = TriggerSource.INTERNAL
    first, second = primary.read_batch(30, 1.0), primary.read_batch(30, 1.0)
    primary.abort()
    stamps = np.array([f.timestamp for f in first + second])
    assert len(stamps) == 60
    assert np.allclose(np.diff(stamps), 1 / 2000.0, atol=1e-6)
    assert [f.frame for f in first + second] == list(range(60))


def test_read_with_nothing_scheduled_times_out_after_virtual_timeout(bench, rig):
    primary = bench.spectrometer("primary")
    primary.arm(1)
    start = bench.clock.now()
    with pytest.raises(InstrumentTimeout, match="no delay-generator cycle"):
        primary.read(5.0)
    assert bench.clock.now() - start == pytest.approx(5.0)


def test_software_trigger_exposes_at_once_without_plasma(bench, rig):
    primary = bench.spectrometer("primary")
    primary.trigger_mode = "software"
    frame = primary.read(0.1)
    dark = bench.scene.dark("primary", 32, rng=np.random.default_rng(1))
    assert frame.timestamp == bench.clock.now()
    assert abs(frame.counts.mean() - np.median(dark)) < dark.std()
    with pytest.raises(ValueError, match="trigger_mode"):
        primary.trigger_mode = "whenever"


def test_closed_spectrometer_refuses_and_a_new_one_can_be_had(bench):
    primary = bench.spectrometer("primary")
    primary.close()
    from drivers.errors import InstrumentError
    with pytest.raises(InstrumentError, match="closed"):
        primary.arm(1)
    assert bench.spectrometer("primary") is not primary
    with pytest.raises(ValueError, match="no spectrometer 'tertiary'"):
        bench.spectrometer("tertiary")
    with pytest.raises(ValueError, match="arm"):
        bench.spectrometer("primary").arm(0)


def test_realtime_burst_gives_matching_frames_on_the_wall_clock(scene):
    n = 20
    with SimulatedBench(seed=2, scene=scene, realtime=True) as bench:
        rig = open_instruments(bench)
        try:
            set_timing(rig.dg)
            start_laser(rig.laser)
            set_burst(rig.dg, n, 1e-3)
            primary, secondary = arm_both(bench, n)
            rig.dg.trigger()
            p, s = read_all(primary, n), read_all(secondary, n)
            fired = bench.fired
        finally:
            for instrument in (rig.laser, rig.stage, rig.dg):
                instrument.close()
    assert len(p) == len(s) == len(fired) == n
    stamps = np.array([f.timestamp for f in p])
    assert [f.timestamp for f in s] == list(stamps) == [shot.t for shot in fired]
    assert np.allclose(np.diff(stamps), 1e-3, atol=1e-6)


def test_realtime_internal_rate_runs_on_its_own(scene):
    with SimulatedBench(seed=2, scene=scene, realtime=True) as bench:
        rig = open_instruments(bench)
        try:
            set_timing(rig.dg)
            start_laser(rig.laser)
            primary = bench.spectrometer("primary")
            primary.arm(1)
            rig.dg.trigger()                      # single shot first
            single = primary.read(1.0)
            primary.arm(10)
            rig.dg.trigger_rate_hz = 200.0
            rig.dg.trigger_source = TriggerSource.INTERNAL
            frames = read_all(primary, 10)
            rig.dg.trigger_source = TriggerSource.SINGLE_SHOT
        finally:
            for instrument in (rig.laser, rig.stage, rig.dg):
                instrument.close()
    assert np.allclose(np.diff([f.timestamp for f in frames]), 1 / 200.0, atol=1e-6)
    assert single.frame == 0 and [f.frame for f in frames] == list(range(1, 11))
    assert frames[0].timestamp > single.timestamp


def test_two_threads_reading_the_two_systems_at_once_get_every_frame(bench, rig):
    import threading
    n = 30
    set_burst(rig.dg, n, 1e-3)
    specs = arm_both(bench, n)
    got = {}

    def reader(spec):
        got[spec.name] = read_all(spec, n)

    threads = [threading.Thread(target=reader, args=(spec,)) for spec in specs]
    rig.dg.trigger()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [f.timestamp for f in got["primary"]] == [f.timestamp for f in got["secondary"]]
    assert len(got["primary"]) == n


def test_realtime_trigger_during_a_burst_is_ignored_as_on_the_instrument(scene):
    n = 10
    with SimulatedBench(seed=2, scene=scene, realtime=True) as bench:
        rig = open_instruments(bench)
        try:
            set_timing(rig.dg)
            set_burst(rig.dg, n, 30e-3)      # 0.3 s: the second *TRG surely comes within it
            primary = bench.spectrometer("primary")
            primary.arm(2 * n)
            rig.dg.trigger()
            rig.dg.trigger()
            frames = read_all(primary, n)
            with pytest.raises(InstrumentTimeout):
                primary.read(0.1)
            ignored = bench.fault_log()["ignored_triggers"]
        finally:
            for instrument in (rig.laser, rig.stage, rig.dg):
                instrument.close()
    assert len(frames) == n
    assert ignored == 1
