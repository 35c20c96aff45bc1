"""The model bundle: round trip without pickle, and clear errors on missing or corrupt parts."""

import json
import shutil

import numpy as np
import pytest
import torch

from transfer.baselines import KNNTransfer, PLSTransfer
from transfer.bundle import (BundleError, load_bundle, load_state_tree, save_state_tree, write_json,
                             write_manifest, write_primary, write_secondary)
from transfer.clustering import SpectralClusters
from transfer.config import TransferConfig
from transfer.novelty import NoveltyModel
from transfer.predict import Transferer
from transfer.preprocess import SpectrumPreprocessor

CONFIG = {"vae": {"hidden": [20, 10], "latent": 4}, "mlp": {"hidden": [12, 8]}}


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    """A bundle written part by part from random networks and synthetic spectra."""
    rng = np.random.default_rng(0)
    n_p, n_s = 300, 250
    wl_p, wl_s = np.linspace(245, 407, n_p), np.linspace(260, 370, n_s)
    raw_p = (1000 + 50 * rng.random((60, n_p))).astype(np.float32)
    raw_s = (800 + 50 * rng.random((60, n_s))).astype(np.float32)
    prep_p = SpectrumPreprocessor(wl_p, name="primary").fit(raw_p)
    prep_s = SpectrumPreprocessor(wl_s, name="secondary").fit(raw_s)
    config = TransferConfig(CONFIG)
    from transfer.models import build_mlp, build_one_step, build_vae
    torch.manual_seed(0)
    vae, mlp, one_step = build_vae(n_p, config["vae"]), build_mlp(n_s, config["mlp"], 4), build_one_step(n_s, n_p, config)
    xs, xp = prep_s.transform(raw_s), prep_p.transform(raw_p)
    baselines = {"pls": PLSTransfer(3).fit(xs, xp), "knn": KNNTransfer(5).fit(xs, xp)}
    clusters = SpectralClusters(k=3).fit(xp)
    model_dir = tmp_path_factory.mktemp("handmade") / "model"
    write_primary(model_dir, wavelengths=wl_p, preprocess=prep_p, vae=vae, kmeans=clusters)
    entry = write_secondary(model_dir, "spec-b", wavelengths=wl_s, preprocess=prep_s, mlp=mlp, decoder=None,
                            one_step=one_step, baselines=baselines,
                            novelty=NoveltyModel(5).fit(xs))
    for name, value in (("config.json", config.to_dict()), ("history.json", {}), ("provenance.json", {})):
        write_json(model_dir / name, value)
    write_manifest(model_dir, n_primary=n_p, latent=4, secondaries={"spec-b": entry}, default_secondary="spec-b")
    originals = {"novelty": NoveltyModel(5).fit(xs), "vae": vae, "mlp": mlp, "one_step": one_step, "baselines": baselines, "clusters": clusters,
                 "prep_p": prep_p, "prep_s": prep_s, "raw_s": raw_s}
    return model_dir, originals


def test_round_trip_gives_identical_predictions(hand_made):
    model_dir, original = hand_made
    bundle = load_bundle(model_dir)
    system = bundle.secondary("spec-b")
    xs = original["prep_s"].transform(original["raw_s"])
    x = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32))
    with torch.no_grad():
        assert torch.equal(system.mlp(x), original["mlp"].eval()(x))
        assert torch.equal(system.composed()(x), original["vae"].eval().decoder(original["mlp"](x)))
        assert torch.equal(system.one_step(x), original["one_step"].eval()(x))
    for name in ("pls", "knn"):
        np.testing.assert_array_equal(system.baselines[name].predict(xs), original["baselines"][name].predict(xs))
    np.testing.assert_array_equal(bundle.kmeans.centroids_, original["clusters"].centroids_)
    np.testing.assert_array_equal(system.preprocess.transform(original["raw_s"]), xs)
    np.testing.assert_array_equal(system.novelty.score(xs), original["novelty"].score(xs))
    assert len(bundle.model_id) == 16 and system.model_id


def test_no_pickle_anywhere(hand_made):
    model_dir, _ = hand_made
    suffixes = {p.suffix for p in model_dir.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".npy", ".safetensors"}
    np.load(model_dir / "primary/wavelength.npy", allow_pickle=False)


def test_trained_bundle_loads_again_with_the_same_transfer(trained_bundle, sim_maps):
    from acquisition.store import PairedMapReader
    with PairedMapReader(sim_maps["test"]) as reader:
        raw = reader.read_all(["secondary"], max_spots=20).spectra["secondary"]
    again = load_bundle(trained_bundle.path)
    first, second = Transferer(trained_bundle).transfer(raw), Transferer(again).transfer(raw)
    for key in ("primary", "latent", "label", "novelty"):
        np.testing.assert_array_equal(first[key], second[key])
    assert again.model_id == trained_bundle.model_id


@pytest.fixture
def copy_of(hand_made, tmp_path):
    model_dir, _ = hand_made
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def test_missing_part_is_named(copy_of):
    (copy_of / "primary/kmeans.safetensors").unlink()
    with pytest.raises(BundleError, match=r"missing part: .*primary/kmeans.safetensors"):
        load_bundle(copy_of)


def test_corrupt_part_is_named(copy_of):
    path = copy_of / "secondary/spec-b/mlp.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"corrupt part .*spec-b/mlp.safetensors"):
        load_bundle(copy_of)


def test_part_that_does_not_fit_the_network_is_named(copy_of):
    config = json.loads((copy_of / "config.json").read_text())
    config["vae"]["latent"] = 5
    (copy_of / "config.json").write_text(json.dumps(config))
    manifest = json.loads((copy_of / "bundle.json").read_text())
    from transfer.bundle import sha256_file
    manifest["sha256"]["config.json"] = sha256_file(copy_of / "config.json")
    (copy_of / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="does not fit the configured network"):
        load_bundle(copy_of)


def test_unfinished_training_is_explained(tmp_path):
    (tmp_path / "model/checkpoints").mkdir(parents=True)
    with pytest.raises(BundleError, match="training did not finish; resume it with --resume"):
        load_bundle(tmp_path / "model")


def test_state_tree_round_trip(tmp_path):
    tree = {"name": "primary", "window": 100, "scale": 0.5, "flag": True,
            "scaler": {"protocol": "causal", "mean": np.arange(4.0), "counts": np.arange(3, dtype=np.int64)}}
    save_state_tree(tmp_path / "s.safetensors", tree)
    back = load_state_tree(tmp_path / "s.safetensors")
    assert back["name"] == "primary" and back["window"] == 100 and back["flag"] is True
    assert back["scaler"]["protocol"] == "causal"
    np.testing.assert_array_equal(back["scaler"]["mean"], tree["scaler"]["mean"])
    assert back["scaler"]["counts"].dtype == np.int64
