"""`libs-transfer export`: the whole live transfer pipeline of a bundle as one ONNX graph.

The graph obeys "Exported model" in docs/architecture.md and runs on ONNX
Runtime alone (the live worker has no torch)::

    secondary  float32 [batch, n_secondary]  raw counts
      -> baseline correction    a MaxPool (sliding minimum) and a banded MatMul (Gaussian
                                mean), exactly transfer.preprocess.baseline_correct
      -> causal scaling         the training statistics of the bundle
      -> MLP                    -> latent   float32 [batch, latent]
      -> decoder                -> scaled primary
      -> inverse scaling        -> primary  float32 [batch, n_primary]  (baseline-corrected counts)
      nearest k-means centroid of the primary counts, as transfer.clustering does
                                -> label    int64   [batch]
      PCA residual of the scaled secondary (transfer.novelty)
                                -> novelty  float32 [batch]
      calibrated trust score (transfer.trust), when the bundle has one
                                -> expected_rel_error  float32 [batch]

DS and PLS (`--model`) replace the MLP and decoder by one affine map; the blend
adds DS's affine map to the decoder's output, weighted w and 1 - w (the
secondary's blend weight), and takes the label from the blended primary.

The graph itself, and the exact rewrites that make it fast, are in
`transfer.onnx_graph`. The label is the nearest k-means centroid in the space
the bundle's k-means was fitted in (baseline-corrected primary counts), in
float64. The novelty
statistics are the bundle's (`transfer.novelty`, fitted at training), so the
live stream and `libs-transfer predict` report the same score; `--reference
MAP.h5` or `--novelty-components` recompute them.

Every export is checked before the file appears: `onnx.checker` (with shape
inference) and a parity run of ONNX Runtime against the PyTorch path
(`transfer.predict.Transferer`) on reference spectra, max relative error
<= 1e-4 (see :func:`relative_error`) and identical labels.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from torch import nn

from acquisition.shared import cli
from transfer.bundle import SecondaryModel, TransferBundle, load_bundle
from transfer.novelty import DEFAULT_COMPONENTS, DEFAULT_MAX_SPOTS, NoveltyModel, fit_from_maps
from transfer.onnx_graph import (INPUT, PRECISIONS, TRUST_OUTPUT, AffineArrays, BlendParts, DenseLayer,
                                 PipelineArrays, PipelineFrame, affine_graph, pipeline_graph)
from transfer.predict import trust_for
from transfer.selection import AFFINE_PART, EXPORTABLE, VAE_LATENT, exportable, live_model
from transfer.trust import TrustScore

log = logging.getLogger(__name__)

OPSET = 17
OUTPUTS = ("primary", "latent", "label", "novelty")
META = "twinplume."
PARITY_TOLERANCE = 1e-4
#: expected_rel_error against transfer.trust in float64; int8 moves |primary| a little
TRUST_TOLERANCE = {"float32": 1e-3, "int8": 2e-2}
#: the primary spectra of an int8 export (onnx_graph.int8_dense) carry 8-bit rounding;
#: everything upstream of the decoder's last layer, and so the label, keeps float parity
INT8_TOLERANCE = 5e-2


class ExportError(Exception):
    """The bundle cannot be exported, or the exported graph fails its checks; the message says why."""


# -- graph building ------------------------------------------------------------------

def dense_layers(module: nn.Sequential, prefix: str) -> list[DenseLayer]:
    """nn.Linear (each optionally followed by nn.LeakyReLU) as plain arrays."""
    layers: list[DenseLayer] = []
    for index, layer in enumerate(module):
        if isinstance(layer, nn.Linear):
            layers.append(DenseLayer(layer.weight.detach().cpu().numpy().astype(np.float32),
                                     layer.bias.detach().cpu().numpy().astype(np.float32)))
        elif isinstance(layer, nn.LeakyReLU) and layers and layers[-1].negative_slope is None:
            layers[-1] = DenseLayer(layers[-1].weight, layers[-1].bias, float(layer.negative_slope))
        else:
            raise ExportError(f"{prefix}: layer {index} is a {type(layer).__name__}, which the export does not know")
    if not layers:
        raise ExportError(f"{prefix} has no linear layer")
    return layers


def pipeline_arrays(bundle: TransferBundle, system: SecondaryModel, novelty: NoveltyModel,
                    trust: TrustScore | None = None, blended: bool = False) -> PipelineArrays:
    """The numbers of one secondary system's pipeline (transfer.onnx_graph builds the graph);
    `blended`: VAE + MLP blended with DS (the secondary's blend weight)."""
    secondary, primary = system.preprocess, bundle.primary_preprocess
    if novelty.n_pixels != system.n_pixels:
        raise ExportError(f"novelty statistics are for {novelty.n_pixels}-pixel spectra, the model "
                          f"takes {system.n_pixels}")
    centroids = np.asarray(bundle.kmeans.centroids_, dtype=np.float64)
    if centroids.shape[1] != bundle.n_primary:
        raise ExportError(f"k-means centroids have {centroids.shape[1]} pixels, the primary spectra {bundle.n_primary}")
    return PipelineArrays(
        min_window=secondary.min_window, smooth_window=secondary.smooth_window,
        secondary_mean=secondary.scaler.mean_, secondary_scale=secondary.scaler.scale_,
        mlp=dense_layers(system.mlp, "mlp"), decoder=dense_layers(system.decoder, "decoder"),
        primary_mean=primary.scaler.mean_, primary_scale=primary.scaler.scale_, centroids=centroids,
        novelty_mean=novelty.mean, novelty_axes=novelty.components, novelty_reference=novelty.reference,
        trust=trust.to_onnx_parts() if trust is not None else None,
        blend=_blend_parts(system) if blended else None)


def _blend_parts(system: SecondaryModel) -> BlendParts:
    if system.blend_weight is None or "ds" not in system.baselines:
        raise ExportError(f"secondary '{system.name}' has no blend of VAE + MLP and DS")
    left, right = system.baselines["ds"].affine_factors()
    return BlendParts(weight=float(system.blend_weight), coef=left, coef_right=right,
                      intercept=np.asarray(system.baselines["ds"].intercept_, np.float64))


def affine_arrays(bundle: TransferBundle, system: SecondaryModel, novelty: NoveltyModel, name: str,
                  trust: TrustScore | None = None) -> AffineArrays:
    """The numbers of a linear baseline's pipeline (DS or PLS: an affine map in scaled units)."""
    frame = pipeline_arrays(bundle, system, novelty, trust)
    left, right = system.baselines[name].affine_factors()
    return AffineArrays(coef=left, coef_right=right, intercept=np.asarray(system.baselines[name].intercept_, np.float64),
                        **{f.name: getattr(frame, f.name) for f in fields(PipelineFrame)})


def build_graph(bundle: TransferBundle, system: SecondaryModel, novelty: NoveltyModel,
                precision: str = "float32", model: str = "vae_mlp", trust: TrustScore | None = None
                ) -> onnx.GraphProto:
    """The pipeline of one secondary system as an ONNX graph (module docstring)."""
    if model not in VAE_LATENT:
        return affine_graph(affine_arrays(bundle, system, novelty, model, trust))
    return pipeline_graph(pipeline_arrays(bundle, system, novelty, trust, blended=model == "blend"),
                          precision=precision)


def choose_model(bundle: TransferBundle, system: SecondaryModel, requested: str | None = None) -> str:
    """`requested`, else the bundle's recommended model where it is exportable, else the one
    `transfer.selection.recommend` picks among the exportable (VAE + MLP for bundles trained
    before models were ranked)."""
    available = exportable(system.baselines, system.blend_weight)
    if requested is not None:
        if requested not in available:
            raise ExportError(f"--model {requested}: this bundle's secondary '{system.name}' can export "
                              f"{', '.join(available)} (exportable models: {', '.join(EXPORTABLE)})")
        return requested
    return live_model(bundle.manifest.get("secondaries", {}).get(system.name, {}), available)


# -- identity and metadata --------------------------------------------------------------

def exported_model_id(system: SecondaryModel, novelty: NoveltyModel, precision: str = "float32",
                      model: str = "vae_mlp", trust: TrustScore | None = None) -> str:
    """Hex hash of what the graph computes: the secondary system's weights and statistics
    (its bundle model id), the novelty statistics added at export, the precision and the model."""
    digest = hashlib.sha256(system.model_id.encode() + b"\0")
    for array in (novelty.mean, novelty.components, np.array([novelty.reference])):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    if precision != "float32":      # float32 ids stay what they were before there was a choice
        digest.update(b"\0precision=" + precision.encode())
    if model != "vae_mlp":          # ... and so do VAE + MLP ids
        digest.update(b"\0model=" + model.encode())
    if model == "blend":            # the weight lives in bundle.json, outside the system's id
        digest.update(f"\0weight={float(system.blend_weight)!r}".encode())
    if trust is None and system.trust is not None:    # the graph has no expected_rel_error output
        digest.update(b"\0trust=none")
    return digest.hexdigest()[:16]


def _versions() -> dict[str, str]:
    versions = {}
    for name in ("twinplume", "onnx", "onnxruntime", "numpy", "torch"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def model_metadata(bundle: TransferBundle, system: SecondaryModel, novelty: NoveltyModel, model_id: str,
                   provenance: dict, trust: TrustScore | None = None) -> dict[str, str]:
    """The metadata_props of spec/stream-protocol.md ("The model file"), exactly these keys."""
    return {
        **(trust.to_metadata() if trust is not None else {}),
        f"{META}model_id": model_id,
        f"{META}n_primary": str(bundle.n_primary),
        f"{META}n_secondary": str(system.n_pixels),
        f"{META}primary_wavelengths": json.dumps([float(v) for v in bundle.primary_wavelengths]),
        f"{META}secondary_wavelengths": json.dumps([float(v) for v in system.wavelengths]),
        f"{META}primary_baseline_windows": json.dumps(_windows(bundle.primary_preprocess)),
        f"{META}secondary_baseline_windows": json.dumps(_windows(system.preprocess)),
        # where the training day's lines sit: a live client measures its spectrometer's drift against it
        f"{META}secondary_mean_spectrum": json.dumps([float(f"{v:.5g}") for v in system.preprocess.scaler.mean_]),
        f"{META}provenance": json.dumps(provenance, sort_keys=True, default=str),
    }


def _windows(preprocess) -> list[int]:
    """[min_window, smooth_window] of one system's baseline correction."""
    return [int(preprocess.min_window), int(preprocess.smooth_window)]


def _precision_record(precision: str) -> dict:
    if precision == "float32":
        return {"name": "float32", "label": "float64"}
    return {"name": precision, "label": "float64",
            "decoder_output_layer": "int8 weights (+-63, one step per primary pixel) x 8-bit inputs "
                                    "(one step per spectrum), MatMulInteger",
            "everything_else": "float32"}


def _provenance(bundle: TransferBundle, system: SecondaryModel, novelty: NoveltyModel, source: dict,
                precision: str = "float32", trust: TrustScore | None = None) -> dict:
    training = {"primary": bundle.provenance.get("primary", {}),
                "secondary": bundle.provenance.get("secondaries", {}).get(system.name, {})}
    return {
        "format": "twinplume.exported-model", "format_version": 1,
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": {"path": str(Path(bundle.path).resolve()), "model_id": bundle.model_id},
        "secondary": {"name": system.name, "model_id": system.model_id, "fine_tuned": system.fine_tuned},
        "preprocess": {"baseline": {"min_window": system.preprocess.min_window,
                                    "smooth_window": system.preprocess.smooth_window},
                       "scaling": "causal: training statistics of the bundle"},
        "primary_units": "baseline-corrected counts",
        "kmeans": {"k": int(bundle.kmeans.centroids_.shape[0]), "space": "baseline-corrected primary counts"},
        "novelty": dict(novelty.describe(), **source),
        "trust": trust.describe() if trust is not None else None,
        "precision": _precision_record(precision),
        "training": training, "opset": OPSET, "versions": _versions(),
    }


def _file_record(path: Path) -> dict:
    return {"path": str(path.resolve()), "bytes": path.stat().st_size}


def _reference_path(bundle: TransferBundle, system: SecondaryModel, reference: str | Path | None) -> Path:
    """The map to recompute the novelty statistics from: `reference`, else the training map."""
    if reference is not None:
        path = Path(reference)
        if not path.is_file():
            raise ExportError(f"reference map {path} does not exist")
        return path
    path, why_not = bundle.data_map(system.name, "train")
    if path is None:
        raise ExportError(f"{why_not}; give the training data with --reference TRAIN.h5")
    return path


def _novelty(bundle: TransferBundle, system: SecondaryModel, reference: str | Path | None,
             n_components: int | None, max_spots: int | None, seed: int, progress: bool
             ) -> tuple[NoveltyModel, dict]:
    """The bundle's novelty statistics, or new ones when a reference map or other settings are given."""
    if reference is None and n_components is None and max_spots is None:
        return system.novelty, {"source": "bundle"}
    path = _reference_path(bundle, system, reference)
    n_components = DEFAULT_COMPONENTS if n_components is None else n_components
    max_spots = DEFAULT_MAX_SPOTS if max_spots is None else max_spots
    log.info("novelty statistics from %s (up to %d spectra, %d components)", path, max_spots, n_components)
    novelty = fit_from_maps([path], system.preprocess, n_components=n_components, max_spots=max_spots, seed=seed,
                            progress=progress)
    return novelty, {"source": "recomputed", "reference_data": _file_record(path)}


# -- checks ---------------------------------------------------------------------------------

def relative_error(result: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per spectrum: max |result - expected| / max |expected| (0/0 counts as 0)."""
    result = np.asarray(result, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.max(np.abs(expected), axis=1)
    diff = np.max(np.abs(result - expected), axis=1)
    return np.divide(diff, scale, out=np.where(diff > 0, np.inf, 0.0), where=scale > 0)


def latent_error(result: np.ndarray, expected: np.ndarray) -> float:
    """max |result - expected| over the largest |expected| of the batch. Latent coordinates
    are centred near 0, so a spectrum whose latent vector happens to be short would make a
    per-spectrum ratio (relative_error) measure float32 rounding, not the graph."""
    result = np.asarray(result, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    diff, scale = float(np.max(np.abs(result - expected), initial=0.0)), float(np.max(np.abs(expected), initial=0.0))
    return diff / scale if scale > 0 else (np.inf if diff > 0 else 0.0)


def parity(session, bundle: TransferBundle, system: SecondaryModel, novelty: NoveltyModel,
           raw_secondary: np.ndarray, model: str = "vae_mlp", trust: TrustScore | None = None) -> dict:
    """ONNX Runtime against the PyTorch path (a linear baseline: its numpy path) and the numpy
    novelty on raw spectra."""
    from transfer.predict import Transferer
    transferer = Transferer(bundle, system.name, model=model)
    scaled = transferer.scaled_input(raw_secondary)
    expected = transferer.transfer(raw_secondary)
    if model not in VAE_LATENT:     # a linear graph's latent: the novelty's principal coordinates
        expected["latent"] = ((scaled - novelty.mean) @ novelty.components.T).astype(np.float32)
    expected_novelty = novelty.score(scaled)
    outputs = list(OUTPUTS) + ([TRUST_OUTPUT] if trust is not None else [])
    primary, latent, label, score, *trust_out = session.run(
        outputs, {INPUT: np.ascontiguousarray(raw_secondary, dtype=np.float32)})
    from transfer.metrics import rse
    checked = {}
    if trust is not None:
        reference = trust.expected_relative_error(system.preprocess.correct(raw_secondary), expected["primary"])
        checked["trust_max_relative_error"] = float(np.max(np.abs(trust_out[0] - reference)
                                                           / np.maximum(np.abs(reference), 1e-12)))
    return {**checked,"n_spectra": int(raw_secondary.shape[0]),
            "primary_max_relative_error": float(relative_error(primary, expected["primary"]).max()),
            # Eq 4 of the paper with the PyTorch result as the truth: what the difference adds
            # to a transfer error (float32 ~1e-12; int8 see docs/streaming.md)
            "primary_rse_vs_pytorch": rse(expected["primary"], primary),
            "latent_max_relative_error": latent_error(latent, expected["latent"]),
            "labels_equal": bool(np.array_equal(label, expected["label"])),
            "novelty_max_relative_error": float(np.max(np.abs(score - expected_novelty)
                                                         / np.maximum(expected_novelty, 1e-12)))}


def _session(model_bytes: bytes):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _check_spectra(bundle: TransferBundle, system: SecondaryModel, reference: str | Path | None,
                   max_spots: int, seed: int) -> tuple[np.ndarray, str]:
    """Raw spectra for the parity check: the first of the reference or training map, or
    (neither at hand) synthetic spectra drawn from the training statistics."""
    from transfer.data import iter_raw_chunks
    path = Path(reference) if reference is not None else bundle.data_map(system.name, "train")[0]
    if path is not None:
        for _, _, _, spectra in iter_raw_chunks([path], ["secondary"], max_spots):
            return spectra["secondary"][:max_spots], str(path.resolve())
    scaler = system.preprocess.scaler
    noise = np.random.default_rng(seed).standard_normal((max_spots, system.n_pixels))
    log.info("no map of the training data at hand: checking the export on synthetic spectra")
    return (scaler.mean_ + scaler.scale_ * noise).astype(np.float32), "synthetic spectra from the training statistics"


# -- the export -------------------------------------------------------------------------------

@dataclass
class ExportResult:
    path: Path
    model_id: str
    secondary: str
    n_secondary: int
    n_primary: int
    parity: dict
    novelty: dict = field(default_factory=dict)
    precision: str = "float32"
    model: str = "vae_mlp"


def export_model(model: str | Path | TransferBundle, out: str | Path, *, secondary: str | None = None,
                 reference: str | Path | None = None, novelty_components: int | None = None,
                 novelty_spots: int | None = None, check_spots: int = 256, seed: int = 0,
                 precision: str = "float32", model_name: str | None = None, progress: bool = True) -> ExportResult:
    """Writes the ONNX model of one secondary system of a bundle to `out` (replaced atomically,
    and only after it passed onnx.checker and the parity check).

    The novelty statistics are the bundle's unless `reference` (a map of the training
    data), `novelty_components` or `novelty_spots` ask for new ones; new ones come from
    `reference`, else from the training map named in the bundle's provenance.

    ``precision="int8"`` computes the decoder's last layer in 8-bit integers
    (transfer.onnx_graph.int8_dense): about twice the live throughput on a small CPU, for
    primary spectra within INT8_TOLERANCE of the PyTorch ones instead of PARITY_TOLERANCE.

    ``model_name`` (one of EXPORTABLE) picks the transfer model; by default the bundle's
    recommended model when it is exportable, else the exportable one train's rule would
    recommend (`choose_model`).
    """
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    bundle = model if isinstance(model, TransferBundle) else load_bundle(model)
    system = bundle.secondary(secondary)
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name such as {out / 'model.onnx'}")
    # int8 applies to the VAE + MLP decoder: asking for it without a model means that model.
    chosen = choose_model(bundle, system, model_name if model_name or precision == "float32" else "vae_mlp")
    if chosen != "vae_mlp" and precision != "float32":
        raise ExportError(f"--precision {precision} applies to the VAE + MLP decoder; {chosen} exports in float32")
    novelty, source = _novelty(bundle, system, reference, novelty_components, novelty_spots, seed, progress)
    # With the bundle's own statistics the graph computes exactly what the bundle's id names.
    trust = trust_for(bundle, system, chosen)
    model_id = (system.model_id if novelty is system.novelty and precision == "float32" and chosen == "vae_mlp"
                and trust is system.trust else exported_model_id(system, novelty, precision, chosen, trust))
    proto = _model_proto(bundle, system, novelty, model_id, precision, chosen, trust)
    spectra, spectra_from = _check_spectra(bundle, system, reference, check_spots, seed)
    checked = parity(_session(proto.SerializeToString()), bundle, system, novelty, spectra, chosen, trust)
    tolerance = PARITY_TOLERANCE if precision == "float32" else INT8_TOLERANCE
    if not (checked["primary_max_relative_error"] <= tolerance and checked["labels_equal"]
            and checked["latent_max_relative_error"] <= PARITY_TOLERANCE
            and checked.get("trust_max_relative_error", 0.0) <= TRUST_TOLERANCE[precision]):
        raise ExportError(f"the exported graph does not reproduce the PyTorch pipeline on {spectra_from} "
                          f"(primary tolerance {tolerance:g} for {precision}): {checked}")
    provenance = _provenance(bundle, system, novelty, source, precision, trust)
    ranking = bundle.manifest.get("secondaries", {}).get(system.name, {}).get("validation_rse") or {}
    provenance["transfer_model"] = {"name": chosen, "validation_rse": ranking.get(chosen),
                                    "latent": "the VAE's latent space" if chosen in VAE_LATENT else
                                    "scores on the novelty's principal axes of the scaled secondary"}
    if chosen == "blend":
        provenance["transfer_model"]["blend_weight"] = float(system.blend_weight)
    linear = AFFINE_PART.get(chosen)
    if linear is not None:      # the rank of the affine map (DS's ds_rank, PLS's components); null: whole
        right = system.baselines[linear].affine_factors()[1]
        provenance["transfer_model"]["linear_map_rank"] = None if right is None else int(right.shape[0])
    provenance["parity"] = dict(checked, tolerance=tolerance, spectra_from=spectra_from)
    helper.set_model_props(proto, model_metadata(bundle, system, novelty, model_id, provenance, trust))
    _write_atomically(out, proto.SerializeToString())
    log.info("model %s (secondary '%s', %s) exported to %s", model_id, system.name, precision, out)
    return ExportResult(path=out, model_id=model_id, secondary=system.name, n_secondary=system.n_pixels,
                        n_primary=bundle.n_primary, parity=checked, novelty=dict(novelty.describe(), **source),
                        precision=precision, model=chosen)


def _model_proto(bundle: TransferBundle, system: SecondaryModel, novelty: NoveltyModel,
                 model_id: str, precision: str = "float32", model: str = "vae_mlp",
                 trust: TrustScore | None = None) -> onnx.ModelProto:
    """The model around the graph, checked by onnx.checker (with shape inference)."""
    proto = helper.make_model(build_graph(bundle, system, novelty, precision, model, trust), opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="twinplume", producer_version=_versions()["twinplume"],
                              doc_string=f"twinplume spectral transfer {model_id}: raw '{system.name}' secondary "
                                         f"counts -> primary counts ({model}, {precision}), latent, k-means label, novelty")
    proto.ir_version = min(proto.ir_version, 9)   # loadable by onnxruntime 1.17, the floor in pyproject.toml
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {exc}") from exc
    return proto


def _write_atomically(out: Path, payload: bytes) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        partial.write_bytes(payload)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# -- command line -------------------------------------------------------------------------------

def add_export(subparsers) -> None:
    help_text = "write the live transfer pipeline of a bundle as one ONNX model (for libs-stream serve)"
    p = cli.subcommand(
        subparsers, "export", run=_export, help=help_text,
        description=f"{help_text}.\nThe graph is checked (onnx.checker, parity with the PyTorch or numpy path) before the "
                    "file is written.\nThe novelty statistics are the bundle's unless --reference or the "
                    "--novelty-* options ask for new ones.",
        examples=["libs-transfer export model/ --out model.onnx",
                  "libs-transfer export model/ --out fast.onnx --precision int8     # ~1.3x the live throughput",
                  "libs-transfer export model/ --out ds.onnx --model ds             # a linear baseline instead",
                  "libs-transfer export model/ --out cheap.onnx --secondary cheap --novelty-components 32"])
    p.add_argument("model", type=Path, metavar="MODEL_DIR", help="bundle written by libs-transfer train")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL.onnx",
                   help="ONNX file to write (an existing one is replaced)")
    cli.add_secondary_option(p, help="which secondary system of the bundle (default: the bundle's default one)",
                             aliases=["--system"])
    p.add_argument("--reference", type=Path, default=None, metavar="TRAIN.h5",
                   help="recompute the novelty statistics from this map of the training data "
                        "(default: keep the bundle's)")
    p.add_argument("--novelty-components", type=int, default=None, metavar="K",
                   help=f"recompute the novelty statistics with K principal components (bundle default: "
                        f"{DEFAULT_COMPONENTS}); from --reference, else from the training map in the provenance")
    p.add_argument("--novelty-spots", type=int, default=None, metavar="N",
                   help=f"recompute the novelty statistics from N random training spectra (bundle default: "
                        f"{DEFAULT_MAX_SPOTS})")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="float32: primary spectra within 1e-4 of PyTorch. int8: the decoder's last layer (3/4 of "
                        "the arithmetic) in 8-bit integers, within 5e-2 (max error over max count; the RSE it adds is "
                        "printed, and with --json is parity.primary_rse_vs_pytorch); latent, label and novelty unchanged "
                        "(default: %(default)s)")
    p.add_argument("--model", default=None, choices=EXPORTABLE, dest="model_name",
                   help="which transfer model to export (default: the model train recommended if it is "
                        "exportable, else the exportable one its rule picks; VAE + MLP for bundles trained "
                        "before the ranking)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sample of recomputed statistics (default: %(default)s)")
    cli.add_json_flag(p, "what was written (model id, sizes, parity, novelty)")


def _export_summary(doc: dict) -> str:
    parity = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in (doc["parity"] or {}).items())
    return (f"model {doc['model_id']} ({doc['transfer_model']}, {doc['precision']}, secondary {doc['secondary']!r}: {doc['n_secondary']} -> "
            f"{doc['n_primary']} px) written to {doc['model']}\n  parity with the PyTorch/numpy path: {parity or 'not measured'}")


def _export(args) -> int:
    from transfer.novelty import NoveltyError
    try:
        result = export_model(args.model, args.out, secondary=args.secondary, reference=args.reference,
                              novelty_components=args.novelty_components, novelty_spots=args.novelty_spots,
                              seed=args.seed, precision=args.precision, model_name=args.model_name)
    except (ExportError, NoveltyError) as exc:
        print(f"libs-transfer export: error: {exc}", file=sys.stderr)
        return 2
    doc = {"model": str(result.path), "model_id": result.model_id, "transfer_model": result.model,
           "secondary": result.secondary, "n_secondary": result.n_secondary, "n_primary": result.n_primary,
           "precision": result.precision, "parity": result.parity, "novelty": result.novelty}
    cli.emit(args, _export_summary(doc), doc)
    return 0
