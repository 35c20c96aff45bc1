"""Transfer scenarios: the maps they write and the command line that writes them."""

import dataclasses

import h5py
import numpy as np
import pytest

from acquisition.store import PairedMapReader
from sim.cli import main
from sim.samples import SAMPLE_NAMES
from sim.scenarios import ROLES, SCENARIOS, MapSpec, Scenario, same_complete_map, scenario
from sim.scene import DAY_CHANGES
from sim.spectrograph import SECONDARY_VARIANTS

SMALL = 0.01     # 100x100 -> 10x10, 40x60 -> 4x6, 70x70 -> 7x7


def test_the_suite_has_the_scenarios_the_issue_names():
    assert {"pegmatite", "basalt", "granite", "slag", "pegmatite-narrow-hires", "pegmatite-broad-lowres",
            "pegmatite-severe", "pegmatite-few"} <= set(SCENARIOS)
    assert {s.sample for s in SCENARIOS.values()} == set(SAMPLE_NAMES)
    assert {s.secondary for s in SCENARIOS.values()} == set(SECONDARY_VARIANTS)
    assert {s.day_change for s in SCENARIOS.values()} == set(DAY_CHANGES)
    few, many = SCENARIOS["pegmatite-few"].train.spots, SCENARIOS["pegmatite"].train.spots
    assert few == 500 and many >= 10_000


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_trains_and_validates_on_day_0_and_tests_on_another_day_and_region(name):
    s = SCENARIOS[name]
    assert dataclasses.is_dataclass(s) and s.train.day == s.val.day == 0 and s.test.day > 0
    origins = {s.train.origin_um, s.val.origin_um, s.test.origin_um}
    assert len(origins) == 3
    # regions do not overlap
    for a, b in ((s.train, s.val), (s.train, s.test), (s.val, s.test)):
        extent = max(a.shape) * a.step_um + max(b.shape) * b.step_um
        assert max(abs(a.origin_um[0] - b.origin_um[0]), abs(a.origin_um[1] - b.origin_um[1])) > extent / 2


def test_scenarios_are_frozen_and_refuse_unknown_parts():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SCENARIOS["basalt"].sample = "granite"
    with pytest.raises(ValueError, match="unknown sample 'gabbro'"):
        Scenario("x", "x", sample="gabbro")
    with pytest.raises(ValueError, match="unknown scenario 'nope'.*basalt"):
        scenario("nope")
    with pytest.raises(ValueError, match="scale must be a positive number"):
        SCENARIOS["basalt"].maps(0)


def test_scale_multiplies_the_number_of_spots():
    spec = MapSpec((100, 100), 40.0, 0, (0.0, 0.0))
    assert spec.scaled(0.25).shape == (50, 50)
    assert spec.scaled(1e-6).shape == (4, 4)
    assert SCENARIOS["pegmatite"].maps(SMALL)["train"].shape == (10, 10)
    kept = SCENARIOS["pegmatite-few"].maps(SMALL, train_scale=1.0)
    assert kept["train"].spots == 500 and kept["test"].shape == (7, 7)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        SCENARIOS["basalt"].maps(1.0, train_scale=float("nan"))


@pytest.fixture(scope="module")
def basalt_maps(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenario")
    return out, SCENARIOS["basalt-few-severe"].write_maps(out, scale=SMALL)


def test_write_maps_writes_train_val_test_with_the_scenario_in_the_files(basalt_maps):
    _, paths = basalt_maps
    s = SCENARIOS["basalt-few-severe"]
    assert list(paths) == list(ROLES)
    for role, path in paths.items():
        spec = s.maps(SMALL)[role]
        with PairedMapReader(path) as reader:
            truth = reader.sample_truth
            attrs = truth["attrs"]
            assert reader.shape == spec.shape and reader.n_acquired == spec.spots
            assert np.allclose(reader.layout.origin_um, spec.origin_um)
            assert (attrs["sample"], attrs["secondary_variant"], attrs["day_change"]) == \
                ("basalt", "standard", "severe")
            assert int(attrs["day"]) == spec.day
            assert truth["phase_names"] == ["plagioclase", "clinopyroxene", "olivine", "magnetite", "glass"]
            assert reader.instrument["secondary"]["variant"] == "standard"
        with h5py.File(path, "r") as f:
            assert "basalt" in f["entry/sample/name"][()].decode()


def test_write_maps_keeps_complete_maps_and_refuses_foreign_files(basalt_maps, tmp_path):
    out, paths = basalt_maps
    stamp = {role: p.stat().st_mtime_ns for role, p in paths.items()}
    again = SCENARIOS["basalt-few-severe"].write_maps(out, scale=SMALL)
    assert again == paths and {r: p.stat().st_mtime_ns for r, p in again.items()} == stamp
    (tmp_path / "basalt-few-severe-train.h5").write_bytes(b"not a map")
    with pytest.raises(FileExistsError, match="basalt-few-severe-train.h5 exists"):
        SCENARIOS["basalt-few-severe"].write_maps(tmp_path, scale=SMALL)


def test_variant_scenario_writes_the_variant_secondary(tmp_path):
    paths = SCENARIOS["pegmatite-broad-lowres"].write_maps(tmp_path, scale=SMALL)
    with PairedMapReader(paths["test"]) as reader:
        wavelengths = reader.wavelengths("secondary")
        assert wavelengths.size == 2048 and wavelengths[0] == pytest.approx(240.0)
        assert reader.instrument["secondary"]["variant"] == "broad-lowres"


def test_cli_writes_a_scenario(tmp_path, capsys):
    assert main(["generate", "--scenario", "slag", "--scale", str(SMALL), "--out", str(tmp_path),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for role in ROLES:
        assert (tmp_path / f"slag-{role}.h5").exists() and f"{role}: " in printed


def test_cli_sample_variant_and_severity_options(tmp_path):
    out = tmp_path / "g.h5"
    assert main(["generate", "--sample", "granite", "--secondary", "narrow-hires", "--day-change", "severe",
                 "--day", "2", "--shape", "5x6", "--step-um", "60", "--out", str(out), "--no-progress"]) == 0
    with PairedMapReader(out) as reader:
        attrs = reader.sample_truth["attrs"]
        assert (attrs["sample"], attrs["secondary_variant"], attrs["day_change"]) == \
            ("granite", "narrow-hires", "severe")
        assert reader.wavelengths("secondary")[0] == pytest.approx(278.0)


@pytest.mark.parametrize("argv, message", [
    (["--scenario", "nope"], "unknown scenario 'nope'"),
    (["--scenario", "basalt", "--shape", "4x4"], "drop --shape"),
    (["--scenario", "basalt", "--sample", "granite"], "drop --sample"),
    (["--scenario", "basalt", "--scale", "-1"], "--scale must be positive"),
])
def test_cli_bad_scenario_arguments_are_named(tmp_path, capsys, argv, message):
    assert main(["generate", *argv, "--out", str(tmp_path), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--sample", "gabbro"), ("--secondary", "echelle"),
                                           ("--day-change", "extreme")])
def test_cli_unknown_choices_exit_2(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["generate", option, value, "--shape", "4x4", "--step-um", "40", "--out", str(tmp_path / "m.h5")])
    assert exc.value.code == 2 and value in capsys.readouterr().err


def test_help_shows_samples_variants_severities_and_scenario_examples(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for word in ("--scenario basalt", "--sample basalt", "--day-change severe", "broad-lowres", "slag"):
        assert word in text


def test_a_kept_map_must_be_what_this_simulator_writes(basalt_maps, tmp_path):
    """A map of an earlier simulator version (here: one spectrum of its first chunk changed) is
    refused, not silently measured on."""
    import shutil
    _, paths = basalt_maps
    for path in paths.values():
        shutil.copy(path, tmp_path / path.name)
    assert same_complete_map(tmp_path / paths["test"].name, SCENARIOS["basalt-few-severe"].settings("test", SMALL))
    with h5py.File(tmp_path / paths["test"].name, "r+") as f:
        f["entry/primary/spectra"][0, 0, 100] += 1.0
    assert not same_complete_map(tmp_path / paths["test"].name,
                                 SCENARIOS["basalt-few-severe"].settings("test", SMALL))
    with pytest.raises(FileExistsError, match="basalt-few-severe-test.h5 exists.*as this simulator writes it"):
        SCENARIOS["basalt-few-severe"].write_maps(tmp_path, scale=SMALL)
