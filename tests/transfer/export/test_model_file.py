"""The ONNX file itself: structure, metadata, refusal of wrong input, a torch-free runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.transfer.export.conftest import raw_secondary, run
from transfer.predict import Transferer

METADATA_KEYS = {"twinplume.model_id", "twinplume.n_primary", "twinplume.n_secondary",
                 "twinplume.primary_wavelengths", "twinplume.secondary_wavelengths",
                 "twinplume.primary_baseline_windows", "twinplume.secondary_baseline_windows",
                 "twinplume.secondary_mean_spectrum", "twinplume.provenance",
                 # the bundle has a trust score (transfer.trust), so the graph publishes it
                 "twinplume.trust_threshold", "twinplume.trust_output", "twinplume.trust_calibration"}


@pytest.mark.slow
def test_graph_is_valid_and_has_the_contracted_interface(exported):
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (given,) = model.graph.input
    assert given.name == "secondary"
    assert given.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    batch, pixels = given.type.tensor_type.shape.dim
    assert batch.dim_param and not batch.HasField("dim_value")        # dynamic batch
    assert pixels.dim_value == exported.n_secondary
    types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert types == {"primary": onnx.TensorProto.FLOAT, "latent": onnx.TensorProto.FLOAT,
                     "label": onnx.TensorProto.INT64, "novelty": onnx.TensorProto.FLOAT,
                     "expected_rel_error": onnx.TensorProto.FLOAT}
    ops = {node.op_type for node in model.graph.node}
    assert {"MaxPool", "MatMul", "ArgMin"} <= ops      # baseline, Gaussian mean, nearest centroid


@pytest.mark.slow
def test_metadata_has_exactly_the_contracted_keys_and_values(exported, bundle, maps):
    model = onnx.load(str(exported.path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert set(meta) == METADATA_KEYS
    system = bundle.secondary()
    assert int(meta["twinplume.n_primary"]) == bundle.n_primary
    assert int(meta["twinplume.n_secondary"]) == system.n_pixels
    assert np.array_equal(json.loads(meta["twinplume.primary_wavelengths"]), bundle.primary_wavelengths)
    assert np.array_equal(json.loads(meta["twinplume.secondary_wavelengths"]), system.wavelengths)
    assert json.loads(meta["twinplume.primary_baseline_windows"]) == [bundle.primary_preprocess.min_window,
                                                                      bundle.primary_preprocess.smooth_window]
    assert json.loads(meta["twinplume.secondary_baseline_windows"]) == [system.preprocess.min_window,
                                                                        system.preprocess.smooth_window]
    # the bundle's own novelty statistics: the graph is what the secondary system's id names
    assert meta["twinplume.model_id"] == exported.model_id == system.model_id
    int(meta["twinplume.model_id"], 16)
    provenance = json.loads(meta["twinplume.provenance"])
    assert provenance["bundle"]["model_id"] == bundle.model_id
    assert provenance["secondary"] == {"name": system.name, "model_id": system.model_id,
                                       "fine_tuned": system.fine_tuned}
    assert provenance["training"]["secondary"]["data"]["train"]["path"] == str(maps["train"].resolve())
    assert provenance["novelty"]["source"] == "bundle"
    assert provenance["novelty"]["components"] == system.novelty.n_components
    assert provenance["parity"]["spectra_from"] == str(maps["train"].resolve())
    assert provenance["parity"]["primary_max_relative_error"] <= provenance["parity"]["tolerance"]


@pytest.mark.slow
def test_recomputed_novelty_statistics_get_their_own_model_id(bundle, exported, maps, tmp_path):
    from transfer.export import export_model
    other = export_model(bundle, tmp_path / "other.onnx", reference=maps["val"], progress=False)
    assert other.model_id != exported.model_id
    meta = {p.key: p.value for p in onnx.load(str(other.path)).metadata_props}
    novelty = json.loads(meta["twinplume.provenance"])["novelty"]
    assert novelty["source"] == "recomputed"
    assert novelty["reference_data"]["path"] == str(maps["val"].resolve())
    assert novelty["n_spectra"] == 8 * 16


@pytest.mark.slow
def test_spectra_with_the_wrong_pixel_count_are_refused(session, exported, maps):
    spectra = raw_secondary(maps["test"])[:4]
    with pytest.raises(Exception) as refused:
        session.run(None, {"secondary": np.ascontiguousarray(spectra[:, :-7])})
    message = str(refused.value)
    assert "secondary" in message and str(exported.n_secondary) in message


@pytest.mark.slow
def test_reference_map_with_other_pixel_count_is_refused(bundle, maps, tmp_path):
    from acquisition.store import MapLayout, PairedMapReader, PairedMapWriter
    from transfer.data import TransferDataError
    from transfer.export import export_model
    with PairedMapReader(maps["val"]) as reader:
        chunk = reader.read_all()
        wavelengths = {s: reader.wavelengths(s) for s in reader.systems}
        layout = reader.layout
    short = tmp_path / "short.h5"
    with PairedMapWriter.create(short, layout, {"primary": wavelengths["primary"],
                                                "secondary": wavelengths["secondary"][:-7]}) as writer:
        k = len(chunk.iy)
        writer.write_spots(chunk.iy, chunk.ix, {"primary": chunk.spectra["primary"],
                                                "secondary": chunk.spectra["secondary"][:, :-7]},
                           np.arange(k), 1.7e9 + np.arange(k), np.zeros((k, 2)))
        writer.finish()
    out = tmp_path / "model.onnx"
    n = bundle.secondary().n_pixels
    with pytest.raises(TransferDataError, match=f"{n - 7} pixels.*expects {n}"):
        export_model(bundle, out, reference=short, progress=False)
    assert not out.exists()


NO_TORCH_RUNNER = textwrap.dedent("""
    import importlib.abc, json, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is not available on the lab PC")
    sys.meta_path.insert(0, NoTorch())
    import numpy as np
    import onnxruntime as ort
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, {"secondary": np.load(sys.argv[2])})
    np.savez(sys.argv[3], **dict(zip(names, outputs)))
    meta = session.get_modelmeta().custom_metadata_map
    print(json.dumps({"torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules),
                      "model_id": meta["twinplume.model_id"]}))
""")


@pytest.mark.slow
def test_model_runs_in_a_process_without_torch(exported, bundle, maps, tmp_path):
    spectra = raw_secondary(maps["test"])[:20]
    np.save(tmp_path / "in.npy", spectra)
    done = subprocess.run([sys.executable, "-c", NO_TORCH_RUNNER, str(exported.path), str(tmp_path / "in.npy"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"torch_loaded": False, "model_id": exported.model_id}
    outputs = np.load(tmp_path / "out.npz")
    expected = Transferer(bundle).transfer(spectra)
    scale = np.abs(expected["primary"]).max(axis=1, keepdims=True)
    assert (np.abs(outputs["primary"] - expected["primary"]) / scale).max() <= 1e-4
    assert np.array_equal(outputs["label"], expected["label"])
