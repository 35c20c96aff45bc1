"""Bad configs and settings fail before any laser command, with a message naming the problem."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest

from acquisition.config import AcquisitionSettings, ConfigError, load_config, parse_config, parse_shape
from acquisition.instruments import RigError
from acquisition.mapping import acquire_map
from tests.acquisition.conftest import small_map
from tests.fixtures.emulated import bench_config


def bench_document(bench) -> dict:
    return tomllib.loads(bench.config_toml())


def assert_nothing_reached_the_laser(bench) -> None:
    assert bench.laser_emulator.command_log == []
    assert bench.fired == []


@pytest.mark.parametrize("section, key, value, message", [
    ("delay_generator", "driver", "dg999", r"\[delay_generator\]\.driver: unknown instrument driver 'dg999'"),
    ("systems.primary", "driver", "andor", r"\[systems\.primary\]\.driver: unknown instrument driver 'andor'"),
    ("systems.secondary", "gate_delay_s", -2e-6, r"\[systems\.secondary\]\.gate_delay_s = -2e-06 s: the gate "
                                                 r"opens before the laser fires"),
    ("systems.primary", "gate_output", "CD", r"output CD is already wired to \[timing\]\.qswitch_output"),
    ("timing", "rate_hz", 0, r"\[timing\]\.rate_hz: must be > 0"),
    ("stage", "speed", 3, r"\[stage\]: unknown key\(s\) 'speed'"),
])
def test_bad_config_is_refused_before_anything_opens(make_bench, section, key, value, message):
    bench = make_bench(seed=0)
    document = bench_document(bench)
    table = document
    for part in section.split("."):
        table = table[part]
    table[key] = value

    with pytest.raises(ConfigError, match=message):
        parse_config(document)
    assert_nothing_reached_the_laser(bench)


def test_unknown_system_is_refused(make_bench, tmp_path):
    bench = make_bench(seed=0)
    document = bench_document(bench)
    del document["systems"]["secondary"]
    config = parse_config(document)

    with pytest.raises(ConfigError, match="system 'secondary' is not configured"):
        acquire_map(tmp_path / "map.h5", small_map(), config, bench=bench, show_progress=False)
    with pytest.raises(ConfigError, match="unknown system 'tertiary'"):
        acquire_map(tmp_path / "map.h5", small_map(systems=("tertiary",)), config, bench=bench, show_progress=False)
    document["systems"]["tertiary"] = document["systems"]["primary"]
    with pytest.raises(ConfigError, match=r"\[systems\.tertiary\]: unknown system 'tertiary'"):
        parse_config(document)
    assert_nothing_reached_the_laser(bench)
    assert not (tmp_path / "map.h5").exists()


def test_unreachable_resource_is_named(make_bench, tmp_path):
    bench = make_bench(seed=0)
    document = bench_document(bench)
    document["delay_generator"]["resource"] = "TCPIP::127.0.0.1::1::SOCKET"
    document["delay_generator"]["timeout_s"] = 0.3

    with pytest.raises(RigError, match=r"\[delay_generator\]\.resource 'TCPIP::127.0.0.1::1::SOCKET': "
                                       r"the delay generator is unreachable"):
        acquire_map(tmp_path / "map.h5", small_map(), parse_config(document), bench=bench, show_progress=False)
    assert_nothing_reached_the_laser(bench)


def test_map_larger_than_the_stage_travel_is_refused(make_bench, tmp_path):
    bench = make_bench(seed=0)
    with pytest.raises(ConfigError, match=r"map larger than the stage travel: x from 1200 to 122760 µm including "
                                          r"800 µm run-up each side is outside the stage's x travel"):
        acquire_map(tmp_path / "map.h5", small_map(shape=(2, 3000)), bench_config(bench), bench=bench,
                    show_progress=False)
    # The config may claim more travel than the stage has: the stage's own limits are checked too.
    document = bench_document(bench)
    document["stage"]["travel_um"] = [[0, 500_000], [0, 500_000]]
    with pytest.raises(ConfigError, match=r"y from 2000 to 201960 µm is outside the stage's y travel \[0, 101600\]"):
        acquire_map(tmp_path / "map.h5", small_map(shape=(5000, 2), mode="step"), parse_config(document),
                    bench=bench, show_progress=False)
    assert_nothing_reached_the_laser(bench)


def test_timing_that_does_not_fit_the_shot_period_is_refused(make_bench, tmp_path):
    bench = make_bench(seed=0)
    with pytest.raises(ConfigError, match=r"rate = 20000 Hz: the gate of primary ends"):
        acquire_map(tmp_path / "map.h5", small_map(rate_hz=20_000.0), bench_config(bench), bench=bench,
                    show_progress=False)
    assert_nothing_reached_the_laser(bench)


def test_config_file_and_settings_round_trip(tmp_path, make_bench):
    bench = make_bench(seed=0)
    path = tmp_path / "bench.toml"
    path.write_text(bench.config_toml())
    config = load_config(path)
    assert parse_config(config.to_dict()) == replace(config, source="config")
    settings = small_map(mode="step", shots=3, systems=("secondary",))
    assert AcquisitionSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ConfigError, match="not valid TOML"):
        path.write_text("[laser\n")
        load_config(path)
    with pytest.raises(ConfigError, match="--shots > 1 needs --mode step"):
        acquire_map(tmp_path / "m.h5", small_map(shots=2), config, bench=bench, show_progress=False)
    assert parse_shape("30x40") == (30, 40)
    with pytest.raises(ConfigError, match="expected NYxNX"):
        parse_shape("40")
