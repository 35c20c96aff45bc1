"""Applying a bundle: transfer of raw secondary spectra, `predict` on a map, `evaluate`.

`Transferer` runs the whole path of one secondary system on raw counts:
baseline correction -> scaling -> the transfer model (VAE + MLP: MLP -> latent ->
decoder; or any other model of the bundle) -> inverse scaling, plus the k-means
label, the novelty score (`transfer.novelty`) and the trust score where it was
calibrated on that model: what the exported live model computes. `predict_map`
writes the results of the model `export` writes by default into
/entry/transferred of a map; `evaluate_map` compares every model of the bundle on
a test map.
k-means labels are computed on baseline-corrected primary counts.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from acquisition.shared.systems import SYSTEM_NAMES
from acquisition.store import PairedMapReader, remove_transferred_trust, write_transferred, write_transferred_trust
from acquisition.shared.alignment import LineOffset, shift_message
from transfer.bundle import SecondaryModel, TransferBundle, load_bundle
from transfer.data import check_axis, inspect_map, iter_raw_chunks, line_offsets
from transfer.metrics import compression_ratio
from transfer.models import count_parameters
from transfer.preprocess import SpectrumPreprocessor
from transfer.report import Evaluation
from transfer.selection import MODEL_NAMES, VAE_LATENT, blend, exportable, live_model
from transfer.trust import TrustScore

log = logging.getLogger(__name__)

PROTOCOLS = ("causal", "paper")


def _run(module: torch.nn.Module, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out.append(module(torch.from_numpy(np.ascontiguousarray(x[start:start + batch]))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class PredictError(ValueError):
    """A model cannot be applied as asked; the message says why."""


def trust_model_name(bundle: TransferBundle, system: SecondaryModel) -> str:
    """The model whose errors the secondary's trust score describes (`trust_model` of bundle.json;
    VAE + MLP for bundles from before models were ranked)."""
    return bundle.manifest.get("secondaries", {}).get(system.name, {}).get("trust_model", "vae_mlp")


def trust_for(bundle: TransferBundle, system: SecondaryModel, model: str, *, quiet: bool = False
              ) -> TrustScore | None:
    """The secondary's trust score if it was calibrated on `model`'s errors, else None (with a
    warning unless `quiet`): a score calibrated on another model's errors would promise the
    wrong error."""
    if system.trust is None:
        return None
    calibrated_on = trust_model_name(bundle, system)
    if calibrated_on != model:
        if quiet:
            return None
        log.warning("the trust score of '%s' was calibrated on %s's errors, so %s's results carry no "
                    "expected_rel_error (retrain, or choose --model %s)", system.name, calibrated_on, model,
                    calibrated_on)
        return None
    return system.trust


class Transferer:
    """The models of a bundle applied to one secondary system's raw spectra (CPU).

    `transfer` runs one of them, `model` (default VAE + MLP), with its label, novelty and, where
    the trust score was calibrated on that model's errors, its expected relative error;
    `predict_all` runs every model."""

    def __init__(self, bundle: TransferBundle, secondary: str | None = None, *, model: str = "vae_mlp",
                 primary_preprocess: SpectrumPreprocessor | None = None,
                 secondary_preprocess: SpectrumPreprocessor | None = None):
        self.bundle = bundle
        self.system = bundle.secondary(secondary)
        # Other scalers than the training ones only under the paper's protocol (protocol_preprocessors).
        self.primary = primary_preprocess or bundle.primary_preprocess
        self.secondary = secondary_preprocess or self.system.preprocess
        self.composed = self.system.composed().cpu()
        if model not in self.available_models():
            raise PredictError(f"model {model!r}: secondary '{self.system.name}' of {bundle.path} has "
                               f"{', '.join(self.available_models())}")
        self.model = model
        self.trust = trust_for(bundle, self.system, model, quiet=True)

    @property
    def model_id(self) -> str:
        """The id of what `transfer` computes: the bundle's model id for VAE + MLP with its own
        trust score, else the id `export` gives the graph of the same model (float32, the
        bundle's novelty statistics)."""
        if self.model == "vae_mlp" and self.trust is self.system.trust:
            return self.system.model_id
        from transfer.export import exported_model_id
        return exported_model_id(self.system, self.system.novelty, "float32", self.model, self.trust)

    def scaled_input(self, raw_secondary: np.ndarray) -> np.ndarray:
        return np.asarray(self.secondary.transform(raw_secondary), dtype=np.float32)

    def transfer(self, raw_secondary: np.ndarray) -> dict[str, np.ndarray]:
        """{"primary": counts [k, n_primary], "scaled", "label" int64, "novelty" float32; "latent"
        for VAE + MLP; "expected_rel_error" float32 where the trust score fits the model}."""
        scaled = self.scaled_input(raw_secondary)
        out = {}
        if self.model in VAE_LATENT:
            out["latent"] = _run(self.system.mlp, scaled)
            predicted = _run(self.system.decoder, out["latent"])
            if self.model == "blend":
                predicted = blend(predicted, self.predict_scaled(scaled, "ds"), self.system.blend_weight)
        else:
            predicted = self.predict_scaled(scaled)
        counts = np.asarray(self.primary.inverse_transform(predicted), dtype=np.float32)
        out.update(primary=counts, scaled=predicted,
                   label=self.bundle.kmeans.predict(counts.astype(np.float64)).astype(np.int64),
                   novelty=self.system.novelty.score(scaled))
        if self.trust is not None:
            corrected = self.secondary.inverse_transform(scaled)
            out["expected_rel_error"] = self.trust.expected_relative_error(corrected, counts)
        return out

    def predict_scaled(self, scaled: np.ndarray, model: str | None = None) -> np.ndarray:
        """Scaled secondary -> scaled primary of `model` (default: this transferer's)."""
        model = model or self.model
        if model == "vae_mlp":
            return _run(self.composed, scaled)
        if model == "one_step_mlp":
            return _run(self.system.one_step, scaled)
        if model == "blend":
            return blend(_run(self.composed, scaled), self.predict_scaled(scaled, "ds"), self.system.blend_weight)
        return np.asarray(self.system.baselines[model].predict(scaled), dtype=np.float32)

    def available_models(self) -> list[str]:
        held = {"vae_mlp", *self.system.baselines}
        if self.system.one_step is not None:
            held.add("one_step_mlp")
        if self.system.blend_weight is not None:
            held.add("blend")
        return [m for m in MODEL_NAMES if m in held]

    def predict_all(self, raw_secondary: np.ndarray) -> dict[str, np.ndarray]:
        """Every available model's prediction in baseline-corrected primary counts."""
        scaled = self.scaled_input(raw_secondary)
        return {name: np.asarray(self.primary.inverse_transform(self.predict_scaled(scaled, name)), dtype=np.float32)
                for name in self.available_models()}


# -- predict ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Prediction:
    """What `predict_map` wrote: how many spectra, with which model, and the trust flags
    (`untrusted` None where the model's results carry no trust score; `trust_model`: the model
    the bundle's trust score describes, None where it has none)."""
    n_transferred: int
    model: str
    model_id: str
    untrusted: int | None = None
    threshold: float | None = None
    trust_model: str | None = None
    #: how far the secondary's lines sit from the model's (acquisition.shared.alignment), pixels
    secondary_shift_px: float | None = None
    #: whether the secondary's spectra were aligned onto the model's lines before the transfer
    secondary_aligned: bool = False


def _shift_px(offset: LineOffset | None) -> float | None:
    return None if offset is None or not np.isfinite(offset.whole_px) else round(offset.whole_px, 3)


def _was_aligned(offset: LineOffset | None, align: bool) -> bool:
    """Whether the readers aligned a system's spectra (transfer.data.axis_resamplers' rule)."""
    return bool(align and offset is not None and offset.worth_aligning)


def _line_warnings(name: str, offsets: Mapping[str, LineOffset | None], align: bool) -> list[str]:
    """The warnings of `shift_message` for each system, logged; said once per command."""
    messages = []
    for system, offset in offsets.items():
        message = shift_message(name, system, np.nan if offset is None else offset.whole_px,
                                aligned=_was_aligned(offset, align))
        if message:
            log.warning(message)
            messages.append(message)
    return messages


def default_model(bundle: TransferBundle, system: SecondaryModel) -> str:
    """The model `predict` applies unless told otherwise: the one `export` writes by default
    (transfer.selection.live_model), so that a map transferred afterwards holds what the live
    stream would have sent."""
    return live_model(bundle.manifest.get("secondaries", {}).get(system.name, {}),
                      exportable(system.baselines, system.blend_weight))


def predict_map(model: str | Path | TransferBundle, map_path: str | Path, *, secondary: str | None = None,
                model_name: str | None = None, chunk_spots: int = 4096, progress: bool = True,
                align: bool = True) -> Prediction:
    """Transfers every acquired secondary spectrum of a map and writes /entry/transferred.

    `model_name` picks the transfer model (any of the bundle's); by default the one `export`
    writes (`default_model`). Results are gathered in a temporary file first, so the map is only
    opened for writing after it has been read; raw data is never touched. Where the bundle's trust
    score was calibrated on that model's errors, /entry/transferred/expected_rel_error and the
    flag /entry/transferred/untrusted (expected_rel_error above the bundle's threshold) are
    written too; otherwise a trust written by an earlier run is removed, as it would describe
    other spectra.
    """
    bundle = model if isinstance(model, TransferBundle) else load_bundle(model)
    system = bundle.secondary(secondary)
    chosen = model_name or default_model(bundle, system)
    transferer = Transferer(bundle, secondary, model=chosen)
    trust_for(bundle, system, chosen)       # says why, where the results carry no trust score
    log.info("transferring with %s%s", chosen, "" if model_name else " (the model export writes; --model to choose)")
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
        trust = transferer.trust
        expected = np.empty(n, np.float32)
        references = {"secondary": system.preprocess}
        offsets = line_offsets(map_path, references)
        done = 0
        for _, iy, ix, raw in iter_raw_chunks([map_path], ["secondary"], chunk_spots, progress, "transferring",
                                              axes={"secondary": transferer.system.wavelengths},
                                              align=references if align else None):
            result = transferer.transfer(raw["secondary"])
            k = len(iy)
            spectra[done:done + k] = result["primary"]
            index[done:done + k, 0], index[done:done + k, 1] = iy, ix
            labels[done:done + k], novelty[done:done + k] = result["label"], result["novelty"]
            if trust is not None:
                expected[done:done + k] = result["expected_rel_error"]
            done += k
        spectra.flush()
        model_id = transferer.model_id
        for start in range(0, done, chunk_spots):
            stop = min(start + chunk_spots, done)
            write_transferred(map_path, index[start:stop, 0], index[start:stop, 1], np.asarray(spectra[start:stop]),
                              labels[start:stop], novelty[start:stop], model_id=model_id,
                              model=chosen, wavelengths=axis)
        flagged = None
        if trust is None:
            remove_transferred_trust(map_path)
        else:
            write_transferred_trust(map_path, index[:done, 0], index[:done, 1], expected[:done], trust.threshold_)
            flagged = int(np.sum(expected[:done] > np.float32(trust.threshold_)))
            log.info("%d of %d spots flagged untrusted (expected relative error above %.3g)", flagged, done,
                     trust.threshold_)
        del spectra
    log.info("%d transferred spectra written to %s:/entry/transferred", done, map_path)
    _line_warnings(map_path.name, offsets, align)
    offset = offsets["secondary"]
    return Prediction(done, chosen, model_id, flagged, None if trust is None else float(trust.threshold_),
                      None if system.trust is None else trust_model_name(bundle, system), _shift_px(offset),
                      _was_aligned(offset, align))


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
                           test_path: str | Path, *, chunk_spots: int = 4096, progress: bool = False,
                           align: bool = True) -> tuple[SpectrumPreprocessor, SpectrumPreprocessor]:
    """The (primary, secondary) preprocessors that scale an evaluated map under `protocol`.

    - "causal": the training statistics, `primary` and `secondary` themselves. This is all a
      live system can know.
    - "paper": the evaluated map's own statistics (same axes, baseline and scaling), as
      Vrabel et al. scaled their test set; predictions are un-scaled with the map's own
      primary statistics. It peeks at the evaluated data: for reproducing the paper only."""
    _check_protocol(protocol)
    if protocol == "causal":
        return primary, secondary

    axes = {"primary": primary.wavelengths, "secondary": secondary.wavelengths}
    references = {"primary": primary, "secondary": secondary} if align else None

    def raw(system: str):
        for *_, spectra in iter_raw_chunks([test_path], [system], chunk_spots, progress, f"fitting {system} scaler",
                                           axes=axes, align=references):
            yield spectra[system]
    return primary.refitted(raw("primary")), secondary.refitted(raw("secondary"))


def evaluate_map(model: str | Path | TransferBundle, test_path: str | Path, out_dir: str | Path, *,
                 protocol: str = "causal", secondary: str | None = None, chunk_spots: int = 4096,
                 progress: bool = True, align: bool = True) -> dict:
    """Evaluates every model of the bundle on a paired test map; writes report.json/.md and figures.

    ``align``: where a system's lines sit away from the model's (a spectrometer not recalibrated
    since training), its spectra are aligned from the map's own lines, the measured primary
    as well as the secondary, so that every model is scored in the model's frame; the report's
    ``line_alignment`` says what was done."""
    _check_protocol(protocol)
    bundle = model if isinstance(model, TransferBundle) else load_bundle(model)
    system = bundle.secondary(secondary)
    test_path = Path(test_path)
    info = inspect_map(test_path, SYSTEM_NAMES)
    check_axis(test_path, "primary", info.wavelengths["primary"], bundle.primary_wavelengths)
    check_axis(test_path, "secondary", info.wavelengths["secondary"], system.wavelengths)
    primary, secondary = protocol_preprocessors(protocol, bundle.primary_preprocess, system.preprocess, test_path,
                                                chunk_spots=chunk_spots, progress=progress, align=align)
    transferer = Transferer(bundle, system.name, primary_preprocess=primary, secondary_preprocess=secondary)
    with PairedMapReader(test_path) as reader:
        truth = reader.sample_truth or {}
    entry = bundle.manifest.get("secondaries", {}).get(system.name, {})
    live = default_model(bundle, system) if entry else None
    # the figures show the model the user would run (VAE + MLP for bundles from before the ranking)
    evaluation = Evaluation(info.shape, bundle.primary_wavelengths, transferer.available_models(),
                            featured=live, clusters=bundle.kmeans, to_cluster_space=lambda x: np.asarray(x, dtype=np.float64),
                            phase_map=truth.get("phase_map"), phase_names=truth.get("phase_names"))
    axes = {"primary": bundle.primary_wavelengths, "secondary": system.wavelengths}
    references = {"primary": bundle.primary_preprocess, "secondary": system.preprocess}
    offsets = line_offsets(test_path, references)
    for _, iy, ix, raw in iter_raw_chunks([test_path], SYSTEM_NAMES, chunk_spots, progress, "evaluating", axes=axes,
                                          align=references if align else None):
        truth_counts = np.asarray(transferer.primary.correct(raw["primary"]), dtype=np.float32)
        evaluation.update(iy, ix, truth_counts, transferer.predict_all(raw["secondary"]))
    shifts = {name: _shift_px(offset) for name, offset in offsets.items()}
    alignment = {name: None if offset is None else
                 {"shift_px": round(offset.shift_px, 3), "stretch_px": round(offset.stretch_px, 3),
                  "aligned": _was_aligned(offset, align)}
                 for name, offset in offsets.items()}
    warnings = _line_warnings(test_path.name, offsets, align)
    decoder_parameters = count_parameters(system.decoder)
    notes = (f"Model {system.model_id} (secondary system '{system.name}') evaluated on {test_path.name}. "
             + ("Scaling: training statistics only (causal, what a live system can do). "
                if protocol == "causal" else
                "Scaling: the test set's own statistics, as in the paper (not possible live). ")
             + _training_summary(bundle, system.name)
             + "".join(f" Warning: {m}." for m in warnings))
    extra = {"apparent_shift_px": shifts, "line_alignment": alignment, "recommended": entry.get("recommended"), "live_model": live,
             "validation_rse": entry.get("validation_rse"),
             "day_change_rse": entry.get("day_change_rse"),
             "model_id": system.model_id, "bundle_model_id": bundle.model_id, "secondary": system.name,
             "test_file": str(test_path), "training": bundle.provenance.get("primary", {}).get("data", {}),
             "compression_ratio": compression_ratio(evaluation.n_spectra, bundle.n_primary,
                                                    bundle.config["vae"]["latent"], decoder_parameters)}
    return evaluation.write(out_dir, protocol=protocol, loss_history=loss_curves(bundle.history, system.name),
                            notes=notes, extra=extra)
