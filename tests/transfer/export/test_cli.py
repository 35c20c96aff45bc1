"""`libs-transfer export` on the command line."""

from __future__ import annotations

import json

import onnx
import pytest

from transfer.cli import main


@pytest.mark.slow
def test_export_command_writes_a_model_and_reports_it(bundle, tmp_path, capsys):
    out = tmp_path / "models" / "live.onnx"
    assert main(["export", str(bundle.path), "--out", str(out), "--novelty-components", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert report["model_id"] == meta["twinplume.model_id"]
    assert report["parity"]["labels_equal"] is True
    assert report["novelty"]["components"] == 8
    assert json.loads(meta["twinplume.provenance"])["novelty"]["components"] == 8


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as done:
        main(["export", "--help"])
    assert done.value.code == 0
    assert "examples:\n  libs-transfer export model/ --out model.onnx" in capsys.readouterr().out


@pytest.mark.slow
def test_moved_training_map(bundle, maps, tmp_path, capsys):
    """The bundle's own statistics need no data: the check falls back to synthetic spectra.
    New statistics need the training data, and the error says how to give it."""
    out = tmp_path / "model.onnx"
    moved = maps["train"].with_name("train-moved.h5")
    maps["train"].rename(moved)
    try:
        kept = main(["export", str(bundle.path), "--out", str(out), "--json"])
        kept_report = json.loads(capsys.readouterr().out)
        recomputed = main(["export", str(bundle.path), "--out", str(tmp_path / "new.onnx"),
                           "--novelty-components", "4"])
        error = capsys.readouterr().err
        given = main(["export", str(bundle.path), "--out", str(tmp_path / "given.onnx"),
                      "--novelty-components", "4", "--reference", str(moved)])
    finally:
        moved.rename(maps["train"])
    assert kept == 0 and kept_report["parity"]["labels_equal"] is True
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["twinplume.provenance"])["parity"]["spectra_from"].startswith("synthetic")
    assert recomputed == 2
    assert str(maps["train"]) in error and "is not there" in error and "--reference" in error
    assert not (tmp_path / "new.onnx").exists()
    assert given == 0 and (tmp_path / "given.onnx").exists()

    assert main(["export", str(bundle.path), "--out", str(out), "--reference", str(tmp_path / "nope.h5")]) == 2
    assert "nope.h5 does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_unknown_system_and_missing_bundle_are_clear_errors(bundle, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(bundle.path), "--out", str(out), "--system", "nosuch"]) == 2
    assert "no secondary system named 'nosuch'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nomodel"), "--out", str(out)]) == 2
    assert "not a model directory" in capsys.readouterr().err
    assert not out.exists()
