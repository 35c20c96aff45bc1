"""Every fault kind can be switched on per run, is seeded, and is observable through the drivers."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from drivers.dg645 import TriggerSource
from drivers.errors import InstrumentTimeout, LaserInterlockError, ProtocolError, StageFault
from sim.bench import BenchFaults, BenchFaultsError, SimulatedBench
from tests.fixtures.emulated import arm_both, open_instruments, set_timing, start_laser


@contextmanager
def faulty_rig(scene, faults: str, *, seed: int = 3, timeout_s: float = 1.0):
    with SimulatedBench(seed=seed, scene=scene, faults=faults) as bench:
        rig = open_instruments(bench, timeout_s=timeout_s)
        try:
            yield bench, rig
        finally:
            for instrument in (rig.laser, rig.stage, rig.dg):
                try:
                    instrument.close()
                except Exception:  # a lost reply on the way out must not hide the test's result
                    pass


def prepare_for_shots(rig) -> None:
    set_timing(rig.dg)
    rig.dg.trigger_source = TriggerSource.SINGLE_SHOT
    start_laser(rig.laser)


def burst(rig, n: int) -> None:
    rig.dg.burst_mode = True
    rig.dg.burst_count = n
    rig.dg.burst_period_s = 1e-3
    rig.dg.trigger()


# ------------------------------------------------------------------ parsing
def test_fault_string_parses_every_kind():
    faults = BenchFaults.from_string("missed-trigger=0.01,timeout=0.002,garbled=0.002,stall=0.001,interlock-at=500")
    assert faults == BenchFaults(missed_trigger=0.01, timeout=0.002, garbled=0.002, stall=0.001, interlock_at=500)
    assert BenchFaults.from_string(faults.to_string()) == faults
    assert BenchFaults.from_string("") == BenchFaults()
    assert not BenchFaults.from_string(" ").any


@pytest.mark.parametrize("text, complaint", [
    ("missed=0.1", "unknown fault 'missed'"),
    ("timeout=1.5", "probability"),
    ("garbled=lots", "not a number"),
    ("interlock-at=2.5", "whole shot number"),
    ("interlock-at=-1", ">= 0"),
    ("stall", "key=value"),
    ("timeout=0.1,timeout=0.2", "given twice"),
])
def test_bad_fault_strings_are_named(text, complaint):
    with pytest.raises(BenchFaultsError, match=complaint):
        BenchFaults.from_string(text)


# ------------------------------------------------------------------ effects
def test_missed_trigger_drops_one_systems_frame_and_keeps_the_other(scene):
    n = 40
    with faulty_rig(scene, "missed-trigger=0.3") as (bench, rig):
        prepare_for_shots(rig)
        primary, secondary = arm_both(bench, n)
        burst(rig, n)
        got = {spec.name: spec.read_batch(n, 1.0) for spec in (primary, secondary)}
        missed = bench.fault_log()["missed_triggers"]
        fired = {shot.shot_id: shot.t for shot in bench.fired}

    assert len(fired) == n and missed, "at p=0.3 some of 40 triggers must be missed"
    stamps = {name: {f.timestamp for f in frames} for name, frames in got.items()}
    assert len(got["primary"]) + len(got["secondary"]) == 2 * n - len(missed)
    for shot_id, system in missed:
        other = "secondary" if system == "primary" else "primary"
        assert fired[shot_id] not in stamps[system]
        assert fired[shot_id] in stamps[other]
    for name, frames in got.items():
        assert [f.frame for f in frames] == list(range(len(frames))), "counters count delivered frames"


def test_missed_triggers_are_reproducible_from_the_seed(scene):
    def run():
        with faulty_rig(scene, "missed-trigger=0.2", seed=11) as (bench, rig):
            prepare_for_shots(rig)
            specs = arm_both(bench, 30)
            burst(rig, 30)
            for spec in specs:
                spec.read_batch(30, 1.0)    # virtual time runs only while someone waits
            return bench.fault_log()["missed_triggers"]
    first = run()
    assert first and run() == first


def test_lost_replies_time_out_in_the_driver(scene):
    with faulty_rig(scene, "timeout=0.3", timeout_s=0.05) as (bench, rig):
        timeouts = 0
        for _ in range(30):
            try:
                rig.dg.idn
            except InstrumentTimeout:
                timeouts += 1
        injected = bench.fault_log()["links"]["delay_generator"]["timeouts"]
    assert timeouts > 0
    assert timeouts == injected


def test_garbled_replies_raise_protocol_errors(scene):
    with faulty_rig(scene, "garbled=0.3") as (bench, rig):
        errors = 0
        for _ in range(30):
            try:
                rig.stage.position_um
            except ProtocolError:
                errors += 1
        injected = bench.fault_log()["links"]["stage"]["garbled"]
    assert errors > 0
    assert errors == injected


def test_stage_stall_stops_the_move_short_with_a_fault(scene):
    with faulty_rig(scene, "stall=1") as (bench, rig):
        with pytest.raises(StageFault) as caught:
            rig.stage.move_to(5000.0, 0.0)
        x_um, _ = rig.stage.position_um
        stalls = bench.fault_log()["stalls"]
    assert "FS" in caught.value.flags
    assert 0.15 * 5000 < x_um < 0.85 * 5000
    assert len(stalls) == 1


def test_interlock_opens_at_the_given_shot(scene):
    n, at = 10, 4
    with faulty_rig(scene, f"interlock-at={at}") as (bench, rig):
        prepare_for_shots(rig)
        primary, secondary = arm_both(bench, n)
        burst(rig, n)
        frames = primary.read_batch(n, 1.0)
        assert len(secondary.read_batch(n, 1.0)) == n
        assert len(bench.fired) == at
        assert bench.fault_log()["interlock_opened_at_shot"] == at
        with pytest.raises(LaserInterlockError, match="external_interlock"):
            rig.laser.check_interlocks()
    assert len(frames) == n
    dark = scene.dark("primary", 32, rng=np.random.default_rng(0))
    after = np.array([f.counts for f in frames[at:]])
    before = np.array([f.counts for f in frames[:at]])
    assert abs(after.mean() - np.median(dark)) < dark.std()
    assert before.max() > np.median(dark) + 30 * dark.std()
