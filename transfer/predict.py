"""Applying a bundle: transfer of raw secondary spectra, `predict` on a map, `evaluate`.

`Transferer` runs the whole path of one secondary system on raw counts:
baseline correction -> scaling -> MLP -> latent -> decoder -> inverse scaling,
plus the k-means label and the novelty score (`transfer.novelty`), what the
exported live model computes. `predict_map` writes its results into /entry/transferred of
a map; `evaluate_map` compares every model of the bundle on a test map.
k-means labels are computed on baseline-corrected primary counts.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from acquisition.shared.systems import SYSTEM_NAMES
from acquisition.store import PairedMapReader, write_transferred, write_transferred_trust
from transfer.bundle import TransferBundle, load_bundle
from transfer.data import check_axis, inspect_map, iter_raw_chunks
from transfer.metrics import compression_ratio
from transfer.models import count_parameters
from transfer.preprocess import SpectrumPreprocessor
from transfer.report import Evaluation

log = logging.getLogger(__name__)

MODEL_NAMES = ("vae_mlp", "one_step_mlp", "pls", "knn", "ds", "pds")
PROTOCOLS = ("causal", "paper")


def _run(module: torch.nn.Module, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out.append(module(torch.from_numpy(np.ascontiguousarray(x[start:start + batch]))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class Transferer:
    """Every model of a bundle applied to one secondary system's raw spectra (CPU)."""

    def __init__(self, bundle: TransferBundle, secondary: str | None = None, *,
                 primary_preprocess: SpectrumPreprocessor | None = None,
                 secondary_preprocess: SpectrumPreprocessor | None = None):
        self.bundle = bundle
        self.system = bundle.secondary(secondary)
        # Other scalers than the training ones only under the paper's protocol (protocol_preprocessors).
        self.primary = primary_preprocess or bundle.primary_preprocess
        self.secondary = secondary_preprocess or self.system.preprocess
        self.composed = self.system.composed().cpu()

    def scaled_input(self, raw_secondary: np.ndarray) -> np.ndarray:
        return np.asarray(self.secondary.transform(raw_secondary), dtype=np.float32)

    def transfer(self, raw_secondary: np.ndarray) -> dict[str, np.ndarray]:
        """{"primary": counts [k, n_primary], "scaled", "latent", "label" int64, "novelty" float32,
        and "expected_rel_error" float32 when the bundle has a trust score (transfer.trust)}."""
        scaled = self.scaled_input(raw_secondary)
        latent = _run(self.system.mlp, scaled)
        predicted = _run(self.system.decoder, latent)
        counts = np.asarray(self.primary.inverse_transform(predicted), dtype=np.float32)
        out = {"primary": counts, "scaled": predicted, "latent": latent,
               "label": self.bundle.kmeans.predict(counts.astype(np.float64)).astype(np.int64),
               "novelty": self.system.novelty.score(scaled)}
        if self.system.trust is not None:
            corrected = self.secondary.inverse_transform(scaled)
            out["expected_rel_error"] = self.system.trust.expected_relative_error(corrected, counts)
        return out

    def available_models(self) -> list[str]:
        names = ["vae_mlp"] + (["one_step_mlp"] if self.system.one_step is not None else [])
        return names + [m for m in MODEL_NAMES[2:] if m in self.system.baselines]

    def predict_all(self, raw_secondary: np.ndarray) -> dict[str, np.ndarray]:
        """Every available model's prediction in baseline-corrected primary counts."""
        scaled = self.scaled_input(raw_secondary)
        out = {"vae_mlp": _run(self.composed, scaled)}
        if self.system.one_step is not None:
            out["one_step_mlp"] = _run(self.system.one_step, scaled)
        for name in MODEL_NAMES[2:]:
            if name in self.system.baselines:
                out[name] = np.asarray(self.system.baselines[name].predict(scaled), dtype=np.float32)
        return {k: np.asarray(self.primary.inverse_transform(v), dtype=np.float32) for k, v in out.items()}


# -- predict ----------------------------------------------------------------------------

def predict_map(model: str | Path | TransferBundle, map_path: str | Path, *, secondary: str | None = None,
                chunk_spots: int = 4096, progress: bool = True) -> int:
    """Transfers every acquired secondary spectrum of a map and writes /entry/transferred.

    Results are gathered in a temporary file first, so the map is only opened
    for writing after it has been read; raw data is never touched. With a trust score in
    the bundle, /entry/transferred/expected_rel_error and the flag /entry/transferred/untrusted
    (expected_rel_error above the bundle's threshold) are written too.
    """
    bundle = model if isinstance(model, TransferBundle) else load_bundle(model)
    transferer = Transferer(bundle, secondary)
    map_path = Path(map_path)
    info = inspect_map(map_path, ("secondary",))
    check_axis(map_path, "secondary", info.wavelengths["secondary"], transferer.system.wavelengths)
    n, n_primary = info.n_spots, bundle.n_primary
    with PairedMapReader(map_path) as reader:
        # The store links the map's primary axis when it is the model's; otherwise it stores the model's.
        same_axis = ("primary" in reader.systems and reader.wavelengths("primary").shape == (n_primary,)
                     and np.allclose(reader.wavelengths("primary"), bundle.primary_wavelengths, rtol=0, atol=1e-6))
    axis = None if same_axis else bundle.primary_wavelengths
    with tempfile.TemporaryDirectory(prefix="libs-predict-") as scratch:
        spectra = np.lib.format.open_memmap(Path(scratch) / "spectra.npy", "w+", np.float32, (n, n_primary))
        index = np.empty((n, 2), np.int64)
        labels = np.empty(n, np.int64)
        novelty = np.empty(n, np.float32)
        trust = transferer.system.trust
        expected = np.empty(n, np.float32)
        done = 0
        for _, iy, ix, raw in iter_raw_chunks([map_path], ["secondary"], chunk_spots, progress, "transferring"):
            result = transferer.transfer(raw["secondary"])
            k = len(iy)
            spectra[done:done + k] = result["primary"]
            index[done:done + k, 0], index[done:done + k, 1] = iy, ix
            labels[done:done + k], novelty[done:done + k] = result["label"], result["novelty"]
            if trust is not None:
                expected[done:done + k] = result["expected_rel_error"]
            done += k
        spectra.flush()
        for start in range(0, done, chunk_spots):
            stop = min(start + chunk_spots, done)
            write_transferred(map_path, index[start:stop, 0], index[start:stop, 1], np.asarray(spectra[start:stop]),
                              labels[start:stop], novelty[start:stop], model_id=transferer.system.model_id,
                              wavelengths=axis)
        if trust is not None:
            write_transferred_trust(map_path, index[:done, 0], index[:done, 1], expected[:done], trust.threshold_)
            log.info("%d of %d spots flagged untrusted (expected relative error above %.3g)",
                     int(np.sum(expected[:done] > np.float32(trust.threshold_))), done, trust.threshold_)
        del spectra
    log.info("%d transferred spectra written to %s:/entry/transferred", done, map_path)
    return done


# -- evaluate -----------------------------------------------------------------------------

def loss_curves(history: Mapping, secondary: str) -> dict[str, dict[str, list[float]]]:
    """Bundle history -> {stage: {curve: [per epoch]}} for the report's loss figure."""
    stages = {"vae": history.get("vae", [])}
    for phase, records in history.get("secondaries", {}).get(secondary, {}).items():
        stages[phase] = records
    curves = {}
    for stage, records in stages.items():
        if records:
            curves[stage] = {key: [r[key] for r in records] for key in ("loss", "val_loss") if key in records[0]}
    return curves


def _training_summary(bundle: TransferBundle, secondary: str) -> str:
    """Sizes of data and networks, so that a scaled-down run says how it was scaled."""
    config = bundle.config
    data = bundle.provenance.get("secondaries", {}).get(secondary, {}).get("data", {})
    maps = ", ".join(f"{key} {info.get('n_spots')} spectra ({'x'.join(map(str, info.get('shape', [])))})"
                     for key, info in data.items())
    epochs = {phase: len(records) for phase, records in bundle.history.get("secondaries", {})
              .get(secondary, {}).items()}
    return (f"Trained on {maps or 'unrecorded data'}; VAE {config['vae']['hidden']} latent {config['vae']['latent']} "
            f"({len(bundle.history.get('vae', []))} epochs), MLP {config['mlp']['hidden']} "
            f"(epochs run: {epochs}).")


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def protocol_preprocessors(protocol: str, primary: SpectrumPreprocessor, secondary: SpectrumPreprocessor,
                           test_path: str | Path, *, chunk_spots: int = 4096, progress: bool = False
                           ) -> tuple[SpectrumPreprocessor, SpectrumPreprocessor]:
    """The (primary, secondary) preprocessors that scale an evaluated map under `protocol`.

    - "causal": the training statistics, `primary` and `secondary` themselves. This is all a
      live system can know.
    - "paper": the evaluated map's own statistics (same axes, baseline and scaling), as
      Vrabel et al. scaled their test set; predictions are un-scaled with the map's own
      primary statistics. It peeks at the evaluated data: for reproducing the paper only."""
    _check_protocol(protocol)
    if protocol == "causal":
        return primary, secondary

    def raw(system: str):
        for *_, spectra in iter_raw_chunks([test_path], [system], chunk_spots, progress, f"fitting {system} scaler"):
            yield spectra[system]
    return primary.refitted(raw("primary")), secondary.refitted(raw("secondary"))


def evaluate_map(model: str | Path | TransferBundle, test_path: str | Path, out_dir: str | Path, *,
                 protocol: str = "causal", secondary: str | None = None, chunk_spots: int = 4096,
                 progress: bool = True) -> dict:
    """Evaluates every model of the bundle on a paired test map; writes report.json/.md and figures."""
    _check_protocol(protocol)
    bundle = model if isinstance(model, TransferBundle) else load_bundle(model)
    system = bundle.secondary(secondary)
    test_path = Path(test_path)
    info = inspect_map(test_path, SYSTEM_NAMES)
    check_axis(test_path, "primary", info.wavelengths["primary"], bundle.primary_wavelengths)
    check_axis(test_path, "secondary", info.wavelengths["secondary"], system.wavelengths)
    primary, secondary = protocol_preprocessors(protocol, bundle.primary_preprocess, system.preprocess, test_path,
                                                chunk_spots=chunk_spots, progress=progress)
    transferer = Transferer(bundle, system.name, primary_preprocess=primary, secondary_preprocess=secondary)
    with PairedMapReader(test_path) as reader:
        truth = reader.sample_truth or {}
    evaluation = Evaluation(info.shape, bundle.primary_wavelengths, transferer.available_models(),
                            clusters=bundle.kmeans, to_cluster_space=lambda x: np.asarray(x, dtype=np.float64),
                            phase_map=truth.get("phase_map"), phase_names=truth.get("phase_names"))
    for _, iy, ix, raw in iter_raw_chunks([test_path], SYSTEM_NAMES, chunk_spots, progress, "evaluating"):
        truth_counts = np.asarray(transferer.primary.correct(raw["primary"]), dtype=np.float32)
        evaluation.update(iy, ix, truth_counts, transferer.predict_all(raw["secondary"]))
    decoder_parameters = count_parameters(system.decoder)
    notes = (f"Model {system.model_id} (secondary system '{system.name}') evaluated on {test_path.name}. "
             + ("Scaling: training statistics only (causal, what a live system can do). "
                if protocol == "causal" else
                "Scaling: the test set's own statistics, as in the paper (not possible live). ")
             + _training_summary(bundle, system.name))
    entry = bundle.manifest.get("secondaries", {}).get(system.name, {})
    extra = {"recommended": entry.get("recommended"), "validation_rse": entry.get("validation_rse"),
             "day_change_rse": entry.get("day_change_rse"),
             "model_id": system.model_id, "bundle_model_id": bundle.model_id, "secondary": system.name,
             "test_file": str(test_path), "training": bundle.provenance.get("primary", {}).get("data", {}),
             "compression_ratio": compression_ratio(evaluation.n_spectra, bundle.n_primary,
                                                    bundle.config["vae"]["latent"], decoder_parameters)}
    return evaluation.write(out_dir, protocol=protocol, loss_history=loss_curves(bundle.history, system.name),
                            notes=notes, extra=extra)
