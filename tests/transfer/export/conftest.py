"""Shared fixtures: small simulated maps, one tiny trained bundle and its ONNX export.

The bundle is trained once per session with a configuration shrunk far below
the paper's (sizes of the networks, epochs, baselines) so that the export
tests stay fast on two cores; the export code sees the same structure as for
a full-size model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transfer.config import TransferConfig

TINY = {
    "vae": {"hidden": [48, 24], "latent": 8, "epochs": 6, "batch_size": 32, "learning_rate": 2e-3, "min_steps": 0},
    "mlp": {"hidden": [32, 32], "epochs": 8, "batch_size": 32, "learning_rate": 2e-3, "patience": 3,
            "min_steps": 0},
    "finetune": {"epochs": 0},
    "one_step": {"enabled": False},
    "data": {"chunk_spots": 64, "shuffle_buffer_chunks": 2},
    "baselines": {"models": []},
    "kmeans": {"k_candidates": [2, 3, 4], "silhouette_spots": 150, "max_fit_spots": 300},
}


def simulated_map(path: Path, *, shape, day=0, origin_um=(0.0, 0.0)) -> Path:
    from sim.generate import generate_map
    return Path(generate_map(path, shape=shape, step_um=(80.0, 80.0), day=day, seed=0, origin_um=origin_um,
                             progress=False))


def raw_secondary(path: Path) -> np.ndarray:
    """Every acquired secondary spectrum of a map, in the store's chunk order."""
    from acquisition.store import PairedMapReader
    with PairedMapReader(path) as reader:
        return np.asarray(reader.read_all(systems=["secondary"]).spectra["secondary"], dtype=np.float32)


def raw_primary(path: Path) -> np.ndarray:
    """Every acquired primary spectrum of a map, in the store's chunk order."""
    from acquisition.store import PairedMapReader
    with PairedMapReader(path) as reader:
        return np.asarray(reader.read_all(systems=["primary"]).spectra["primary"], dtype=np.float32)


@pytest.fixture(scope="session")
def maps(tmp_path_factory) -> dict[str, Path]:
    """train and val on day 0 (two regions), test on day 1 at a third region."""
    root = tmp_path_factory.mktemp("export-maps")
    return {
        "train": simulated_map(root / "train.h5", shape=(16, 16)),
        "val": simulated_map(root / "val.h5", shape=(8, 16), origin_um=(0.0, 1400.0)),
        "test": simulated_map(root / "test.h5", shape=(12, 12), day=1, origin_um=(2000.0, 2000.0)),
    }


@pytest.fixture(scope="session")
def bundle(maps, tmp_path_factory):
    from transfer.pipeline import train_model
    out = tmp_path_factory.mktemp("export-bundle") / "model"
    return train_model(maps["train"], maps["val"], out, config=TransferConfig(TINY), device="cpu", seed=0,
                       progress=False)


@pytest.fixture(scope="session")
def exported(bundle, tmp_path_factory):
    """The bundle exported with its defaults (novelty statistics from the training map)."""
    from transfer.export import export_model
    return export_model(bundle, tmp_path_factory.mktemp("export-onnx") / "model.onnx", model_name="vae_mlp",
                        progress=False)


@pytest.fixture(scope="session")
def session(exported):
    import onnxruntime as ort
    return ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])


def run(session, spectra: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"secondary": np.ascontiguousarray(spectra, dtype=np.float32)})))
