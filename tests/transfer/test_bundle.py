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


@pytest.mark.slow
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


def _edit_manifest(model_dir, change) -> None:
    path = model_dir / "bundle.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _rename_secondary(new_name):
    def change(m):
        m["secondaries"] = {new_name: m["secondaries"]["spec-b"]}
        m["default_secondary"] = new_name
    return change


# broken bundle.json files: (what is changed, what the error must say)
BROKEN_MANIFESTS = [
    ("no sha256", lambda m: m.pop("sha256"), "field sha256: missing"),
    ("n_primary a string", lambda m: m.update(n_primary="300"), "field n_primary: expected an integer"),
    ("n_primary huge", lambda m: m.update(n_primary=10**12), "field n_primary: expected an integer in 1..1000000"),
    ("latent a float", lambda m: m.update(latent=4.0), "field latent: expected an integer"),
    ("secondaries a list", lambda m: m.update(secondaries=["spec-b"]), "field secondaries: expected an object"),
    ("no secondaries", lambda m: m.update(secondaries={}), "field secondaries: expected an object of 1.."),
    ("traversing secondary name", _rename_secondary("../../evilsec"), "field secondaries: secondary name"),
    ("absolute secondary name", _rename_secondary("/etc"), "field secondaries: secondary name"),
    ("n_pixels a string", lambda m: m["secondaries"]["spec-b"].update(n_pixels="250"),
     "field secondaries: 'spec-b'.n_pixels: expected an integer"),
    ("n_pixels missing", lambda m: m["secondaries"]["spec-b"].pop("n_pixels"), "'spec-b'.n_pixels: missing"),
    ("huge mlp layer", lambda m: m["secondaries"]["spec-b"].update(mlp_hidden=[100_000_000, 8]),
     "'spec-b'.mlp_hidden: item 0: expected an integer in 1..16384"),
    ("fine_tuned a string", lambda m: m["secondaries"]["spec-b"].update(fine_tuned="no"),
     "'spec-b'.fine_tuned: expected true or false"),
    ("unknown baseline", lambda m: m["secondaries"]["spec-b"].update(baselines=["pls", "../x"]),
     "'spec-b'.baselines: item 1: expected one of"),
    ("default not a secondary", lambda m: m.update(default_secondary="other"), "field default_secondary: 'other'"),
    ("hash path outside", lambda m: m["sha256"].update({"../../etc/passwd": "0" * 64}),
     "field sha256: '../../etc/passwd'"),
    ("hash not hex", lambda m: m["sha256"].update({"config.json": "xyz"}), "field sha256: 'config.json'"),
    ("a part without hash", lambda m: m["sha256"].pop("secondary/spec-b/mlp.safetensors"),
     "field sha256: no hash for secondary/spec-b/mlp.safetensors"),
    ("model id not hex", lambda m: m.update(model_id={"a": 1}), "field model_id: expected a hexadecimal"),
    ("blend weight 1", lambda m: m["secondaries"]["spec-b"].update(blend_weight=1.0),
     "'spec-b'.blend_weight: expected a weight strictly between 0 and 1"),
    ("blend weight a string", lambda m: m["secondaries"]["spec-b"].update(blend_weight="0.5"),
     "'spec-b'.blend_weight: expected a weight"),
    ("format version", lambda m: m.update(format_version=2), "format version 2 is not supported"),
    ("not a bundle", lambda m: m.update(format="zip"), "not a transfer bundle"),
]


@pytest.mark.parametrize("change, message", [b[1:] for b in BROKEN_MANIFESTS], ids=[b[0] for b in BROKEN_MANIFESTS])
def test_a_corpus_of_broken_manifests_gives_named_errors(copy_of, change, message):
    _edit_manifest(copy_of, change)
    with pytest.raises(BundleError) as info:
        load_bundle(copy_of)
    assert message in str(info.value)
    assert "bundle.json" in str(info.value) or str(copy_of) in str(info.value)


def test_a_secondary_outside_the_bundle_is_never_loaded(copy_of, tmp_path):
    # weights planted next to the bundle, and a manifest pointing there with their hashes
    evil = copy_of.parent / "evilsec"
    shutil.copytree(copy_of / "secondary/spec-b", evil)

    def change(m):
        _rename_secondary("../../evilsec")(m)
        for rel in list(m["sha256"]):
            if rel.startswith("secondary/spec-b/"):
                m["sha256"]["secondary/../../evilsec/" + rel.split("/", 2)[2]] = m["sha256"].pop(rel)
    _edit_manifest(copy_of, change)
    with pytest.raises(BundleError, match="secondary name"):
        load_bundle(copy_of)


@pytest.mark.parametrize("content", [b"[" * 100_000, b"\xff\xfe", b"", b"null", b'{"format": NaN}'])
def test_unreadable_manifests_are_named(copy_of, content):
    (copy_of / "bundle.json").write_bytes(content)
    with pytest.raises(BundleError, match="bundle.json"):
        load_bundle(copy_of)


def test_a_broken_config_json_in_a_bundle_is_named(copy_of):
    from transfer.bundle import sha256_file
    config = json.loads((copy_of / "config.json").read_text())
    config["vae"]["hidden"] = [100_000_000, 512]
    (copy_of / "config.json").write_text(json.dumps(config))
    _edit_manifest(copy_of, lambda m: m["sha256"].update({"config.json": sha256_file(copy_of / "config.json")}))
    with pytest.raises(BundleError, match=r"config.json: vae.hidden: 100000000 is outside the sane range"):
        load_bundle(copy_of)
