"""Timing on the delay generator decides what the spectrometers see, as on a real bench."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers.errors import InstrumentTimeout
from tests.fixtures.emulated import GOOD_GATE, arm_both, read_all, set_timing

N = 4


def shoot(bench, rig, n: int = N) -> dict[str, np.ndarray]:
    rig.stage.move_to(3000.0, 3000.0)
    specs = arm_both(bench, n)
    for _ in range(n):
        rig.dg.trigger()
    return {spec.name: np.array([f.counts for f in read_all(spec, n)]) for spec in specs}


def dark_level(bench, system):
    dark = bench.scene.dark(system, 64, rng=np.random.default_rng(5))
    return float(np.median(dark)), float(dark.std())


def continuum_share(bench, system, counts) -> float:
    """How much of a spectrum is smooth continuum: baseline over strongest peak, dark removed."""
    level, _ = dark_level(bench, system)
    return float(np.mean((np.median(counts, axis=1) - level) / (counts.max(axis=1) - level)))


def test_gate_closing_before_the_pulse_gives_dark_frames(bench, rig):
    set_timing(rig.dg, primary=(-20e-6, 10e-6), secondary=(-20e-6, 10e-6))
    spectra = shoot(bench, rig)
    assert len(bench.fired) == N, "the laser fired; only the gates missed the plasma"
    for system, counts in spectra.items():
        level, noise = dark_level(bench, system)
        assert abs(counts.mean() - level) < noise
        assert counts.max() < level + 10 * noise
    assert math.isclose(bench.spectrometer("primary").gate_delay_s, -20e-6, abs_tol=1e-12)


def test_gate_at_the_pulse_is_continuum_dominated_and_a_late_gate_is_not(bench, rig):
    set_timing(rig.dg, primary=(0.0, 0.2e-6), secondary=GOOD_GATE)
    spectra = shoot(bench, rig)
    early = continuum_share(bench, "primary", spectra["primary"])
    late = continuum_share(bench, "secondary", spectra["secondary"])
    assert early > 0.3, f"a gate at 0 delay should be mostly continuum (share {early:.2f})"
    assert late < 0.1, f"a gate 1 us after the pulse should be line-dominated (share {late:.2f})"


def test_gate_straddling_the_pulse_sees_the_early_plasma(bench, rig):
    set_timing(rig.dg, primary=(-5e-6, 5.2e-6), secondary=GOOD_GATE)
    spectra = shoot(bench, rig)
    assert continuum_share(bench, "primary", spectra["primary"]) > 0.3


def test_qswitch_outside_the_pump_window_makes_no_pulse(bench, rig):
    set_timing(rig.dg, qswitch_s=5e-6, flashlamp_s=100e-6)   # Q-switch before the flashlamp
    spectra = shoot(bench, rig)
    assert bench.fired == []
    for system, counts in spectra.items():
        level, noise = dark_level(bench, system)
        assert abs(counts.mean() - level) < noise


def test_gate_output_without_a_pulse_does_not_trigger_its_spectrometer(bench, rig):
    rig.dg.set_delay("F", "E", 0.0)        # EF: F = E, no pulse on the primary's gate line
    primary, secondary = arm_both(bench, 1)
    rig.dg.trigger()
    assert len(secondary.read_batch(1, 0.5)) == 1
    with pytest.raises(InstrumentTimeout, match="EF makes no gate pulse"):
        primary.read(0.2)
    assert math.isnan(primary.gate_width_s)


def test_spectrometer_reports_the_gate_the_delay_generator_makes(bench, rig):
    set_timing(rig.dg, primary=(2e-6, 5e-6), secondary=(3e-6, 7e-6))
    primary, secondary = bench.spectrometer("primary"), bench.spectrometer("secondary")
    assert primary.gate_delay_s == pytest.approx(2e-6, abs=1e-11)
    assert primary.gate_width_s == pytest.approx(5e-6, abs=1e-11)
    assert secondary.gate_delay_s == pytest.approx(3e-6, abs=1e-11)
    assert secondary.gate_width_s == pytest.approx(7e-6, abs=1e-11)
    primary.gate_delay_s = 9e-6             # an externally gated detector ignores its own setting
    assert primary.gate_delay_s == pytest.approx(2e-6, abs=1e-11)
    with pytest.raises(ValueError, match="finite"):
        primary.gate_width_s = float("nan")


def test_flashlamp_output_too_low_to_see_fires_nothing(bench, rig):
    rig.dg.set_output("AB", amplitude_v=0.5, offset_v=0.0)   # high level 0.5 V: below TTL
    spectra = shoot(bench, rig, n=2)
    assert bench.fired == []
    assert rig.laser.flashlamp_count == 0
    for system, counts in spectra.items():
        level, noise = dark_level(bench, system)
        assert abs(counts.mean() - level) < noise


def test_inverted_qswitch_output_fires_at_the_pulse_end_and_shifts_the_gates(bench, rig):
    rig.dg.set_output("CD", polarity="negative")             # the Q-switch now sees D = C + 10 us
    primary = bench.spectrometer("primary")
    assert primary.gate_delay_s == pytest.approx(GOOD_GATE[0] - 10e-6, abs=1e-11)
    spectra = shoot(bench, rig, n=2)
    assert len(bench.fired) == 2
    # gate from 9 us before to 1 us after the pulse: only the first microsecond, continuum
    # (~0.28 of the strongest peak; ~0.006 in the default 1-11 us gate)
    assert continuum_share(bench, "primary", spectra["primary"]) > 0.2
