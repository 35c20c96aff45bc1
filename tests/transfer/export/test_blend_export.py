"""The blend w * VAE + MLP + (1 - w) * DS: applied by `Transferer` and `predict`, exported as one
ONNX graph run by the real ONNX Runtime and the live worker's model loader.

The tiny bundle's VAE + MLP validates far behind DS, so its training keeps no blend; the blend is
given to a copy of it by its bundle.json entry, as `train` writes it where a blend validates best."""
import json
import shutil
from pathlib import Path

import h5py

import numpy as np
import onnxruntime as ort
import pytest

from acquisition.store import PairedMapReader
from streaming.model import PipelineSession
from tests.transfer.export.conftest import TINY, raw_secondary
from transfer.bundle import BundleError, load_bundle
from transfer.config import TransferConfig
from transfer.export import ExportError, export_model
from transfer.predict import Transferer, predict_map


@pytest.fixture(scope="module")
def trained(maps, tmp_path_factory):
    from transfer.pipeline import train_model
    config = dict(TINY, baselines={"models": ["ds"], "max_spots": 200})
    return train_model(maps["train"], maps["val"], tmp_path_factory.mktemp("blend") / "model",
                       config=TransferConfig(config), device="cpu", seed=0, progress=False)


def _with_blend(bundle, target, weight, **entry):
    shutil.copytree(bundle.path, target)
    manifest = json.loads((target / "bundle.json").read_text())
    manifest["secondaries"]["secondary"].update(blend_weight=weight, **entry)
    (target / "bundle.json").write_text(json.dumps(manifest))
    return load_bundle(target)


@pytest.fixture(scope="module")
def blended(trained, tmp_path_factory):
    return _with_blend(trained, tmp_path_factory.mktemp("blended") / "model", 0.25)


@pytest.fixture(scope="module")
def raw(maps):
    return raw_secondary(maps["test"])[:64]


def test_the_blend_is_the_weighted_sum_of_the_two_models(trained, blended, raw):
    assert "blend" not in Transferer(trained).available_models()
    assert Transferer(blended).available_models() == ["vae_mlp", "ds", "blend"]
    vae = Transferer(blended, model="vae_mlp").transfer(raw)
    ds = Transferer(blended, model="ds").transfer(raw)
    mixed = Transferer(blended, model="blend").transfer(raw)
    np.testing.assert_allclose(mixed["primary"], 0.25 * vae["primary"] + 0.75 * ds["primary"],
                               rtol=1e-4, atol=1e-3 * np.abs(ds["primary"]).max())
    np.testing.assert_array_equal(mixed["latent"], vae["latent"])
    np.testing.assert_array_equal(mixed["label"], blended.kmeans.predict(mixed["primary"].astype(np.float64)))


def test_the_exported_blend_runs_in_onnx_runtime_and_the_worker(blended, raw, tmp_path):
    result = export_model(blended, tmp_path / "blend.onnx", model_name="blend", progress=False)
    assert result.model == "blend"
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    primary, latent, label, novelty = session.run(["primary", "latent", "label", "novelty"], {"secondary": raw})
    vae = Transferer(blended, model="vae_mlp").transfer(raw)
    ds = Transferer(blended, model="ds").transfer(raw)
    expected = 0.25 * vae["primary"].astype(np.float64) + 0.75 * ds["primary"]
    scale = np.abs(expected).max(axis=1)
    assert np.max(np.abs(primary - expected).max(axis=1) / scale) < 1e-4
    np.testing.assert_array_equal(label, blended.kmeans.predict(expected))
    np.testing.assert_allclose(latent, vae["latent"], rtol=1e-4, atol=1e-4 * np.abs(vae["latent"]).max())
    np.testing.assert_allclose(novelty, vae["novelty"], rtol=1e-4)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["twinplume.provenance"])["transfer_model"]["blend_weight"] == 0.25
    live = PipelineSession(result.path, threads=1)
    np.testing.assert_allclose(live.run(raw[:4])["primary"], primary[:4], rtol=1e-5, atol=1e-3)
    # a model id of its own, which moves with the weight
    others = {export_model(blended, tmp_path / f"{m}.onnx", model_name=m, progress=False).model_id
              for m in ("vae_mlp", "ds")}
    assert result.model_id not in others
    reweighted = _with_blend(blended, tmp_path / "reweighted", 0.5)
    assert export_model(reweighted, tmp_path / "b2.onnx", model_name="blend", progress=False).model_id \
        != result.model_id


def test_export_and_predict_run_a_recommended_blend(blended, maps, tmp_path):
    recommended = _with_blend(blended, tmp_path / "recommended", 0.25, recommended="blend")
    assert export_model(recommended, tmp_path / "live.onnx", progress=False).model == "blend"
    target = tmp_path / "test.h5"
    shutil.copy(maps["test"], target)
    # the graph's parity on the spectra as stored (a drifted map is aligned first: tests/transfer/test_data.py)
    done = predict_map(recommended, target, progress=False, align=False)
    assert done.model == "blend" and done.untrusted is None       # the trust score is DS's
    with h5py.File(target, "r") as f:
        assert f["entry/transferred"].attrs["model"] == "blend"
        assert f["entry/transferred"].attrs["model_id"] == done.model_id
        written = f["entry/transferred/spectra"][3, 7]
    with PairedMapReader(target) as reader:
        spot = reader.spot(3, 7)["secondary"]
    expected = Transferer(recommended, model="blend").transfer(spot[None, :])["primary"][0]
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-3)


def test_a_blend_is_float32_and_needs_its_ds(blended, trained, tmp_path):
    with pytest.raises(ExportError, match="float32"):
        export_model(blended, tmp_path / "x.onnx", model_name="blend", precision="int8", progress=False)
    with pytest.raises(ExportError, match="can export"):
        export_model(trained, tmp_path / "y.onnx", model_name="blend", progress=False)
    orphan = tmp_path / "orphan"
    shutil.copytree(blended.path, orphan)
    manifest = json.loads((orphan / "bundle.json").read_text())
    manifest["secondaries"]["secondary"]["baselines"] = []
    manifest["sha256"] = {k: v for k, v in manifest["sha256"].items() if "baselines/" not in k}
    (orphan / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no DS baseline to blend with"):
        load_bundle(orphan)


def test_a_ds_kept_as_its_full_matrix_exports_the_same_transfer(blended, raw, tmp_path):
    """Bundles written before DS's reduced rank (or with `ds_rank = 0`) hold DS's whole matrix:
    the same map, given whole, exports the same DS and the same blend as its two factors."""
    from transfer.bundle import save_state_tree, sha256_file
    left, right = blended.secondary().baselines["ds"].affine_factors()
    assert right is not None                     # the default: rank 64
    whole = blended.path.parent / "whole-ds"
    shutil.copytree(blended.path, whole)
    state = blended.secondary().baselines["ds"].get_state()
    state = {"coef": left @ right, **{k: v for k, v in state.items() if not k.startswith("coef_")}, "rank": None}
    part = Path("secondary") / "secondary" / "baselines" / "ds.safetensors"
    save_state_tree(whole / part, state)
    manifest = json.loads((whole / "bundle.json").read_text())
    manifest["sha256"][part.as_posix()] = sha256_file(whole / part)
    (whole / "bundle.json").write_text(json.dumps(manifest))
    restored = load_bundle(whole)
    assert restored.secondary().baselines["ds"].affine_factors()[1] is None
    for model in ("ds", "blend"):
        runs = [ort.InferenceSession(str(export_model(b, tmp_path / f"{model}-{i}.onnx", model_name=model,
                                                      progress=False).path),
                                     providers=["CPUExecutionProvider"]).run(["primary", "label"], {"secondary": raw})
                for i, b in enumerate((blended, restored))]
        (factored, factored_label), (full, full_label) = runs
        scale = np.abs(full).max(axis=1, keepdims=True)
        assert np.max(np.abs(factored - full) / scale) < 1e-4, model
        np.testing.assert_array_equal(factored_label, full_label)
