"""`libs-transfer` end to end on tiny maps, through `main(argv)`."""

import argparse
import json
import shutil

import h5py
import pytest

from tests.transfer.conftest import tiny_config
from transfer.cli import SUBCOMMANDS, build_parser, main
from transfer.config import to_toml


def subcommand_names():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_every_subcommand_has_an_example_in_its_help(capsys):
    names = subcommand_names()
    assert {"train", "add-secondary", "evaluate", "predict", "search"} <= set(names)
    assert len(names) == len(SUBCOMMANDS)
    for name in names:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"libs-transfer {name}" in out
    assert "examples:" in build_parser().format_help()


@pytest.mark.slow
def test_train_evaluate_predict(sim_maps, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(to_toml(tiny_config(baselines={"models": ["pls"]}).to_dict()))
    model = tmp_path / "model"
    assert main(["train", str(sim_maps["train"]), "--val", str(sim_maps["val"]), "--out", str(model),
                 "--config", str(config), "--max-epochs", "2", "--device", "cpu", "--seed", "3"]) == 0
    assert "written to" in capsys.readouterr().out
    assert json.loads((model / "provenance.json").read_text())["primary"]["seed"] == 3

    report = tmp_path / "report"
    assert main(["evaluate", str(model), str(sim_maps["test"]), "--out", str(report), "--chunk-spots", "64",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["models"]) == {"vae_mlp", "one_step_mlp", "pls"}
    assert json.loads((report / "report.json").read_text())["n_spectra"] == 144

    target = tmp_path / "map.h5"
    shutil.copy(sim_maps["test"], target)
    assert main(["predict", str(model), str(target)]) == 0
    entry = json.loads((model / "bundle.json").read_text())["secondaries"]["secondary"]
    said = capsys.readouterr().out
    assert f"144 spectra transferred with {entry['trust_model']}" in said and "flagged untrusted" in said
    assert "the secondary's lines sit" in said and "px from the model's" in said
    with h5py.File(target, "r") as f:
        assert f["entry/transferred/spectra"].shape == (12, 12, 4062)
        assert (f["entry/transferred/label"][()] >= 0).all()
    other = "pls" if entry["trust_model"] != "pls" else "vae_mlp"
    assert main(["predict", str(model), str(target), "--model", other, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == other and printed["n_transferred"] == 144 and printed["untrusted"] is None
    assert printed["trust_model"] == entry["trust_model"]


def test_max_epochs_also_caps_the_minimum_steps(sim_maps, tmp_path):
    # 256 pairs in batches of 16: min_steps 1500 alone would ask 94 epochs of every phase
    config = tmp_path / "min-steps.toml"
    config.write_text(to_toml(tiny_config(vae={"min_steps": 1500}, mlp={"min_steps": 1500},
                                          baselines={"models": []}).to_dict()))
    model = tmp_path / "model"
    assert main(["train", str(sim_maps["train"]), "--val", str(sim_maps["val"]), "--out", str(model),
                 "--config", str(config), "--max-epochs", "2", "--device", "cpu"]) == 0
    history = json.loads((model / "history.json").read_text())
    epochs = {"vae": len(history["vae"])} | {k: len(v) for k, v in history["secondaries"]["secondary"].items()}
    assert epochs == {"vae": 2, "mlp": 2, "one_step": 2}


def test_bad_input_is_one_clear_line(sim_maps, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "no-model"), str(sim_maps["test"]), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "libs-transfer evaluate: error:" in err and "not a model directory" in err and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[vae]\nlatnt = 3\n")
    assert main(["train", str(sim_maps["train"]), "--val", str(sim_maps["val"]), "--out", str(tmp_path / "m"),
                 "--config", str(bad)]) == 2
    assert "unknown configuration key 'vae.latnt'" in capsys.readouterr().err
