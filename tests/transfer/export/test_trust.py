"""The trust output of the exported model, its metadata, `predict`'s flag and `calibrate`."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import onnx
import pytest

from tests.transfer.export.conftest import raw_primary, raw_secondary, run
from transfer.bundle import load_bundle, save_state_tree, write_manifest
from transfer.cli import main
from transfer.pipeline import _manifest_entry
from transfer.predict import Transferer, predict_map
from transfer.trust import META_KEYS, relative_error


def _reference(bundle, raw):
    """expected_rel_error of the numpy/torch path (transfer.trust on Transferer's primary)."""
    system = bundle.secondary()
    primary = Transferer(bundle).transfer(raw)["primary"]
    return system.trust.expected_relative_error(system.preprocess.correct(raw), primary)


def test_onnx_runtime_equals_the_numpy_reference(session, bundle, maps):
    raw = raw_secondary(maps["test"])
    got = run(session, raw)["expected_rel_error"]
    assert got.shape == (raw.shape[0],) and got.dtype == np.float32
    assert np.allclose(got, _reference(bundle, raw), rtol=1e-3, atol=1e-6)
    assert np.all(got > 0)


def test_calibration_metadata_round_trips_through_the_export(exported, bundle):
    meta = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    trust = bundle.secondary().trust
    assert float(meta[META_KEYS["threshold"]]) == trust.threshold_
    assert meta[META_KEYS["output"]] == "expected_rel_error"
    calibration = json.loads(meta[META_KEYS["calibration"]])
    assert calibration["knots"] == pytest.approx(list(trust.knots_))
    assert calibration["values"] == pytest.approx(list(trust.values_))
    assert calibration["weights"] == pytest.approx(list(trust.weights_))
    assert calibration["held_out"]["n_spectra"] == trust.report_["n_spectra"]
    assert json.loads(meta["twinplume.provenance"])["trust"]["threshold"] == trust.threshold_


def test_score_and_error_rise_on_another_day(session, bundle, maps):
    """Truth from the simulator: the day-1 map (another day and region) is transferred worse than
    the day-0 validation map, and the expected relative error says so."""
    errors, expected = {}, {}
    for name in ("val", "test"):
        out = run(session, raw_secondary(maps[name]))
        truth = bundle.primary_preprocess.correct(raw_primary(maps[name]))
        errors[name] = np.median(relative_error(out["primary"], truth))
        expected[name] = np.median(out["expected_rel_error"])
    assert errors["test"] > errors["val"]
    assert expected["test"] > expected["val"]


def test_predict_writes_the_score_and_the_flag(bundle, maps, session, tmp_path):
    target = tmp_path / "test.h5"
    shutil.copy(maps["test"], target)
    # the graph's parity on the spectra as stored (a drifted map is aligned first: tests/transfer/test_data.py)
    n = predict_map(bundle, target, progress=False, align=False).n_transferred
    live = run(session, raw_secondary(maps["test"]))["expected_rel_error"]
    threshold = bundle.secondary().trust.threshold_
    with h5py.File(target, "r") as f:
        group = f["entry/transferred"]
        acquired = f["entry/scan/acquired"][...].astype(bool)
        error = group["expected_rel_error"][...]
        flag = group["untrusted"][...]
        assert group["untrusted"].attrs["threshold"] == pytest.approx(threshold)
        assert np.isfinite(group["novelty"][...]).sum() == n
    assert error.shape == flag.shape and np.isfinite(error).sum() == n
    assert set(np.unique(flag)) <= {0, 1}
    assert np.array_equal(flag == 1, error > np.float32(threshold))
    # the file holds what the live graph computes, spot for spot
    assert np.allclose(np.sort(error[np.isfinite(error)]), np.sort(live), rtol=1e-3)
    assert np.array_equal(np.isfinite(error), acquired)
    assert np.all(flag[~acquired] == -1)


def test_calibrate_command_rewrites_the_trust_of_a_bundle(bundle, maps, tmp_path, capsys):
    copy = tmp_path / "model"
    shutil.copytree(bundle.path, copy)
    assert main(["calibrate", str(copy), str(maps["test"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    again = load_bundle(copy)
    trust = again.secondary().trust
    assert report["threshold"] == trust.threshold_
    assert trust.report_["map"] == str(maps["test"].resolve())
    assert trust.report_["n_spectra"] == raw_secondary(maps["test"]).shape[0]
    assert again.secondary().model_id != bundle.secondary().model_id   # the graph it exports differs
    # the second model, fitted on the training pairs, stays
    assert np.array_equal(trust.into_, bundle.secondary().trust.into_)
    assert np.array_equal(trust.out_, bundle.secondary().trust.out_)


def test_calibrate_under_a_simulated_day_change_sees_changed_inputs(bundle, maps, tmp_path, capsys):
    copy = tmp_path / "model"
    shutil.copytree(bundle.path, copy)
    assert main(["calibrate", str(copy), str(maps["val"]), "--json"]) == 0
    as_measured = json.loads(capsys.readouterr().out)["held_out"]
    assert main(["calibrate", str(copy), str(maps["val"]), "--day-change", "0.2", "--json"]) == 0
    changed = json.loads(capsys.readouterr().out)["held_out"]
    assert as_measured["day_change"] == 0.0 and changed["day_change"] == 0.2
    # the model saw other inputs (whether it errs more depends on the model: the networks train against
    # the change; tests/transfer/test_day_change.py measures a linear model against the simulator's truth)
    assert changed["median_relative_error"] != pytest.approx(as_measured["median_relative_error"], rel=1e-4)
    assert load_bundle(copy).secondary().trust.report_["day_change"] == 0.2
    assert main(["calibrate", str(copy), str(maps["val"]), "--day-change", "1.5"]) == 2
    assert "--day-change 1.5" in capsys.readouterr().err


def test_a_trust_state_of_the_earlier_method_is_refitted_by_calibrate(bundle, maps, tmp_path, caplog):
    """A bundle written before the disagreement score: the model loads without a trust score (a
    warning names the fix) and `calibrate` refits it from the training map in the provenance."""
    copy = tmp_path / "model"
    shutil.copytree(bundle.path, copy)
    name = bundle.secondary().name
    n = bundle.secondary().trust.n_secondary
    save_state_tree(copy / "secondary" / name / "trust.safetensors", {
        "method": "shape-residual-head", "shape_mean": np.full(n, 1.0 / n), "shape_axes": np.eye(4, n),
        "weights": np.array([0.1, 0.5, -0.1]), "intercept": -2.0, "knots": np.array([-3.0, -2.0]),
        "values": np.array([0.05, 0.15]), "threshold": 0.2, "report": "{}", "seed": 0})
    write_manifest(copy, n_primary=bundle.n_primary, latent=bundle.config["vae"]["latent"],
                   secondaries={other: _manifest_entry(bundle, other) for other in bundle.secondaries},
                   default_secondary=bundle.default_secondary)
    with caplog.at_level("WARNING"):
        old = load_bundle(copy)
    assert old.secondary().trust is None
    assert "libs-transfer calibrate" in caplog.text and "shape-residual-head" in caplog.text
    assert main(["calibrate", str(copy), str(maps["val"])]) == 0
    trust = load_bundle(copy).secondary().trust
    assert trust.describe()["method"] == "disagreement-head"
    assert trust.n_secondary == n and trust.report_["map"] == str(maps["val"].resolve())


def test_calibrate_command_bad_input_is_a_clear_error(bundle, tmp_path, capsys):
    assert main(["calibrate", str(bundle.path), str(tmp_path / "missing.h5")]) == 2
    assert "missing.h5" in capsys.readouterr().err


def test_the_worker_publishes_expected_rel_error_with_each_result(exported, session, maps, tmp_path):
    from tests.streaming.conftest import PlainClient, WorkerProcess
    x = raw_secondary(maps["test"])[:5]
    expected = run(session, x)["expected_rel_error"]
    worker = WorkerProcess(exported.path, tmp_path)
    client = PlainClient(worker.input, worker.output, worker.control)
    try:
        client.wait_joined()
        model = client.control({"cmd": "model"})
        client.send({"v": 1, "seq": 0, "dtype": "<f4", "shape": list(x.shape)}, x.tobytes())
        client.send({"v": 1, "seq": 1, "dtype": "<f4", "shape": [x.shape[1]]}, x[0].tobytes())
        (_, batch, _), (_, single, _) = client.receive({b"transfer"}, 2)
    finally:
        client.close()
        worker.stop()
    assert np.allclose(batch["expected_rel_error"], expected, rtol=1e-5)
    assert single["expected_rel_error"] == pytest.approx(float(expected[0]), rel=1e-5)
    # the threshold a live view marks spots with, from the control socket
    assert model["ok"] and model["trust_threshold"] == pytest.approx(
        float({p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}[META_KEYS["threshold"]]))
    assert "expected_rel_error" in {o["name"] for o in model["outputs"]}
