"""The bench's ready config, custom wiring, and the ``libs-sim bench`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from acquisition.config import parse_config
from drivers.dg645 import DG645
from sim.bench import BenchWiring, SimulatedBench
from sim.bench_cli import main
from tests.fixtures.emulated import arm_both, open_instruments, start_laser

REPO = Path(__file__).resolve().parents[3]


def test_config_names_the_running_instruments_and_passes_the_config_checks(bench):
    text = bench.config_toml(rate_hz=500.0)
    config = parse_config(tomllib.loads(text), source="bench config")
    assert config.delay_generator.resource == bench.resources["delay_generator"]
    assert config.laser.resource == bench.resources["laser"]
    assert config.stage.resource == bench.resources["stage"]
    assert config.timing.rate_hz == 500.0
    assert {s.name: s.gate_output for s in config.systems} == {"primary": "EF", "secondary": "GH"}
    with DG645(config.delay_generator.resource) as dg:
        assert "DG645" in dg.idn


def test_custom_wiring_is_what_gates_each_spectrometer(scene):
    wiring = BenchWiring(flashlamp="GH", qswitch="EF", gates={"primary": "AB", "secondary": "CD"})
    with SimulatedBench(seed=4, scene=scene, wiring=wiring) as bench:
        config = parse_config(tomllib.loads(bench.config_toml()))
        assert (config.timing.flashlamp_output, config.timing.qswitch_output) == ("GH", "EF")
        rig = open_instruments(bench)
        try:
            rig.dg.set_delay("G", "T0", 0.0)
            rig.dg.set_delay("H", "G", 10e-6)
            rig.dg.set_delay("E", "T0", 150e-6)
            rig.dg.set_delay("F", "E", 10e-6)
            rig.dg.set_delay("A", "E", 1e-6)          # primary: gate after the pulse
            rig.dg.set_delay("B", "A", 10e-6)
            rig.dg.set_delay("C", "E", -30e-6)        # secondary: gate closes before the pulse
            rig.dg.set_delay("D", "C", 10e-6)
            start_laser(rig.laser)
            primary, secondary = arm_both(bench, 1)
            rig.dg.trigger()
            p, s = primary.read(1.0), secondary.read(1.0)
        finally:
            for instrument in (rig.laser, rig.stage, rig.dg):
                instrument.close()
    assert len(bench.fired) == 1
    dark = scene.dark("secondary", 32, rng=np.random.default_rng(2))
    assert abs(s.counts.mean() - np.median(dark)) < dark.std()
    assert p.counts.max() > np.median(scene.dark("primary", 8)) + 1000


@pytest.mark.parametrize("wiring", [dict(flashlamp="XY"), dict(qswitch="AB"),
                                    dict(gates={"primary": "EF", "secondary": "EF"})])
def test_bad_wiring_is_refused_by_name(wiring):
    with pytest.raises(ValueError, match="output"):
        BenchWiring(**wiring)


def test_help_shows_the_rehearsal_of_a_bench_config(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "libs-sim bench --seed 1 --realtime --write-config bench.toml" in text
    assert "libs-acquire map --config bench.toml" in text


def test_libs_sim_offers_the_bench_subcommand(capsys):
    from sim.cli import main as libs_sim
    with pytest.raises(SystemExit) as done:
        libs_sim(["bench", "--help"])
    assert done.value.code == 0
    assert "--write-config" in capsys.readouterr().out


def test_bad_faults_fail_with_a_message(capsys):
    assert main(["--faults", "stall=2"]) == 2
    assert "stall=2" in capsys.readouterr().err


def test_command_serves_writes_a_config_and_stops_cleanly_on_sigterm(tmp_path):
    config_path = tmp_path / "bench.toml"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.bench_cli", "--seed", "1", "--realtime", "--write-config", str(config_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("serving"):
                break
        resources = dict(line.split(None, 1) for line in lines[:3])
        config = parse_config(tomllib.loads(config_path.read_text()))
        with DG645(config.delay_generator.resource) as dg:
            assert dg.idn.startswith("Stanford Research Systems,DG645")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert resources["delay_generator"].strip() == config.delay_generator.resource
    assert resources["stage"].strip() == config.stage.resource
    assert "stopped:" in out


@pytest.mark.parametrize("kwargs, complaint", [(dict(seed=-1), "seed"), (dict(day=-2), "day"),
                                               (dict(faults="stall=often"), "stall")])
def test_bad_bench_arguments_are_named(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        SimulatedBench(**kwargs)


def test_a_bench_calibrated_on_its_day_reports_that_axis_through_the_spectrometer_driver(tmp_path):
    from drivers.sim_spectrometer import BenchSpectrometer
    from sim.scene import PairedScene

    config_path = tmp_path / "bench.toml"
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.bench_cli", "--seed", "1", "--day", "1", "--calibration", "daily",
         "--write-config", str(config_path)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.startswith("serving"):
                break
        config = parse_config(tomllib.loads(config_path.read_text()))
        reported = {}
        for system in ("primary", "secondary"):
            spectrometer = BenchSpectrometer(system, config.system(system).resource)
            try:
                reported[system] = spectrometer.wavelengths()
            finally:
                spectrometer.close()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    for system, axis in reported.items():
        calibrated = PairedScene(seed=1, day=1, calibration="daily").wavelengths(system)
        factory = PairedScene(seed=1, day=1).wavelengths(system)
        np.testing.assert_array_equal(axis, calibrated)
        assert not np.allclose(axis, factory, rtol=0, atol=1e-6), system    # the day's drift moved it
