"""Shared fixtures: tiny simulated paired maps and a tiny model configuration.

Maps come from the simulator (sim.generate when present, else the scene
written through the store's writer); models are shrunk through config
overrides so that the whole area's tests stay fast on two cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from acquisition.store import MapLayout, PairedMapWriter
from transfer.config import TransferConfig

# The machine is shared: one thread per process avoids oversubscribing its two cores.
torch.set_num_threads(1)

TINY = {
    "vae": {"hidden": [48, 24], "latent": 8, "epochs": 20, "batch_size": 16, "learning_rate": 3e-3,
            "min_steps": 0},
    "mlp": {"hidden": [32, 32], "epochs": 15, "batch_size": 16, "learning_rate": 3e-3, "patience": 3,
            "min_steps": 0},
    "finetune": {"epochs": 0},
    "one_step": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3, "patience": 2},
    "data": {"chunk_spots": 64, "shuffle_buffer_chunks": 2},
    "baselines": {"models": ["pls", "knn", "ds", "pds"], "max_spots": 200, "pls_components": 4,
                  "pls_components_candidates": [2, 4], "knn_neighbors": 5},
    "kmeans": {"k_candidates": [2, 3, 4], "silhouette_spots": 150, "max_fit_spots": 300},
}


def tiny_config(**sections) -> TransferConfig:
    merged = {k: dict(v) for k, v in TINY.items()}
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    return TransferConfig(merged)


def write_sim_map(path: Path, *, shape=(12, 12), step_um=150.0, day=0, seed=0, origin_um=(0.0, 0.0)) -> Path:
    """A small simulated paired map (day `day`, sample `seed`) at `path`."""
    try:
        from sim.generate import generate_map
    except ImportError:
        generate_map = None
    if generate_map is not None:
        return Path(generate_map(path, shape=shape, step_um=(step_um, step_um), day=day, seed=seed,
                                 origin_um=origin_um, progress=False))
    from acquisition.shared.systems import SYSTEM_NAMES
    from sim.scene import PairedScene
    scene = PairedScene(seed=seed, day=day)
    layout = MapLayout(shape=shape, step_um=(step_um, step_um), order="snake", origin_um=origin_um)
    order = layout.visit_order()
    x = layout.x_um[order[:, 1]]
    y = layout.y_um[order[:, 0]]
    spectra = scene.shots(x, y, rng=np.random.default_rng([seed, day, 1]))
    with PairedMapWriter.create(path, layout, {s: scene.wavelengths(s) for s in SYSTEM_NAMES},
                                title="test map") as writer:
        writer.write_spots(order[:, 0], order[:, 1], spectra, np.arange(len(order)), 1.7e9 + np.arange(len(order)),
                           np.stack([x, y], axis=1))
        writer.finish()
    return Path(path)


@pytest.fixture(scope="session")
def sim_maps(tmp_path_factory) -> dict[str, Path]:
    """train and val on day 0 (different regions), test on day 1 at a third region."""
    root = tmp_path_factory.mktemp("maps")
    return {
        "train": write_sim_map(root / "train.h5", shape=(16, 16), origin_um=(0.0, 0.0)),
        "val": write_sim_map(root / "val.h5", shape=(8, 16), origin_um=(0.0, 2500.0)),
        "test": write_sim_map(root / "test.h5", shape=(12, 12), day=1, origin_um=(2500.0, 2500.0)),
    }


@pytest.fixture(scope="session")
def trained_bundle(sim_maps, tmp_path_factory):
    """One tiny model trained on the simulated train/val maps, shared by the read-only tests."""
    from transfer.pipeline import train_model
    out = tmp_path_factory.mktemp("bundle") / "model"
    return train_model(sim_maps["train"], sim_maps["val"], out, config=tiny_config(), device="cpu", seed=0,
                       progress=False)
