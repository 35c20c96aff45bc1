"""The model bundle: a directory holding everything a transfer needs, without pickle.

```
MODEL_DIR/
  bundle.json                 format, model id, sizes, secondaries, sha256 of every file
  config.json                 resolved hyper-parameters
  provenance.json             data files + sha256, package versions, seed, date (per part)
  history.json                loss history per network and epoch
  primary/wavelength.npy      float64 [n_primary]
  primary/preprocess.safetensors   baseline-correction parameters + scaler statistics
  primary/vae.safetensors     encoder, to_mu, to_logvar, decoder
  primary/kmeans.safetensors  centroids (in baseline-corrected primary counts)
  secondary/<name>/wavelength.npy
  secondary/<name>/preprocess.safetensors
  secondary/<name>/mlp.safetensors
  secondary/<name>/decoder.safetensors     only when fine-tuned end to end
  secondary/<name>/one_step.safetensors    the one-step MLP baseline
  secondary/<name>/novelty.safetensors     PCA-residual novelty statistics (transfer.novelty)
  secondary/<name>/trust.safetensors       trust score and its calibration (transfer.trust); optional,
                                           bundles written before it have none
  secondary/<name>/baselines/<pls|knn|ds|pds>.safetensors
```

`load_bundle()` checks every field of bundle.json (MANIFEST_FIELDS, SECONDARY_FIELDS:
types, finite values, sane sizes), that every name stays inside the bundle's directory and
every file it reads is listed with its hash, then every file's hash and every array's shape,
all before anything is allocated from those numbers; it fails with `BundleError` naming the
file and the field or part that is wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file as load_numpy, save_file as save_numpy
from safetensors.torch import load_file as load_torch, save_file as save_torch
from torch import nn

from transfer.baselines import DSTransfer, KNNTransfer, PDSTransfer, PLSTransfer
from transfer.clustering import SpectralClusters
from transfer.config import TransferConfig, config_from_json
from transfer.models import ComposedTransfer, Decoder, LatentMLP, VAE, build_mlp, build_one_step, build_vae
from transfer.novelty import NoveltyModel
from transfer.preprocess import SpectrumPreprocessor
from transfer.trust import OutdatedTrust, TrustScore

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "twinplume.transfer-bundle"
BUNDLE_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
WEIGHT_SUFFIX = ".safetensors"
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
#: JSON parts (bundle.json, config.json, provenance.json, history.json) are small; a larger
#: one is refused before it is read
MAX_JSON_BYTES = 64 << 20
MAX_PIXELS = 1_000_000
MAX_LAYER_WIDTH = 16_384
MAX_SECONDARIES = 256


class BundleError(Exception):
    """A model bundle is missing, incomplete or corrupt; the message names the part."""


# -- file helpers ------------------------------------------------------------

def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".tmp")


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    path = Path(path)
    tmp = _atomic(path)
    save_numpy({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    os.replace(tmp, path)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise BundleError(f"missing part: {path}")
    try:
        return load_numpy(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"corrupt part {path}: {exc}") from None


SCALARS_KEY = "twinplume.scalars"


def save_state_tree(path: str | Path, tree: Mapping[str, Any]) -> None:
    """A nested dict of arrays and scalars (a `get_state()`) as one safetensors file.

    Arrays become tensors named by their dotted path; strings, numbers and
    booleans go as JSON into the file's metadata.
    """
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if "." in str(key):
                    raise BundleError(f"state key {key!r} must not contain '.'")
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, np.ndarray) and node.ndim > 0:
            arrays[prefix] = np.ascontiguousarray(node)
        elif isinstance(node, (np.generic, np.ndarray)):
            scalars[prefix] = node.item()
        elif node is None or isinstance(node, (str, int, float, bool)):
            scalars[prefix] = node
        elif isinstance(node, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in node):
            scalars[prefix] = list(node)
        else:
            raise BundleError(f"state entry {prefix!r} of type {type(node).__name__} cannot be stored")

    walk("", tree)
    path = Path(path)
    tmp = _atomic(path)
    save_numpy(arrays, str(tmp), metadata={SCALARS_KEY: json.dumps(scalars)})
    os.replace(tmp, path)


def load_state_tree(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise BundleError(f"missing part: {path}")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            flat: dict[str, Any] = {key: handle.get_tensor(key) for key in handle.keys()}
        flat.update(json.loads(metadata.get(SCALARS_KEY, "{}")))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"corrupt part {path}: {exc}") from None
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def save_module(path: str | Path, module: nn.Module) -> None:
    path = Path(path)
    tmp = _atomic(path)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_torch(state, str(tmp))
    os.replace(tmp, path)


def load_module(path: str | Path, module: nn.Module) -> nn.Module:
    path = Path(path)
    if not path.exists():
        raise BundleError(f"missing part: {path}")
    try:
        state = load_torch(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"corrupt part {path}: {exc}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"part {path} does not fit the configured network: {exc}") from None
    return module


def save_npy(path: str | Path, array: np.ndarray) -> None:
    path = Path(path)
    tmp = _atomic(path)
    with open(tmp, "wb") as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)
    os.replace(tmp, path)


def load_npy(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise BundleError(f"missing part: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"corrupt part {path}: {exc}") from None


def write_json(path: str | Path, value: Any) -> None:
    path = Path(path)
    tmp = _atomic(path)
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=_json_default), "utf-8")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise BundleError(f"missing part: {path}")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise BundleError(f"corrupt part {path}: {size} bytes, more than the {MAX_JSON_BYTES} a JSON part may have")
    try:
        return json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"corrupt part {path}: {str(exc)[:200]}") from None


def read_json_text(path: Path) -> str:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise BundleError(f"more than {MAX_JSON_BYTES} bytes")
    return path.read_text("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise BundleError(f"invalid secondary name {name!r}: use letters, digits, '_', '-', '.' (max 64)")
    return name


# -- bundle.json, field by field ---------------------------------------------------

BASELINE_CLASSES = {"pls": PLSTransfer, "knn": KNNTransfer, "ds": DSTransfer, "pds": PDSTransfer}
# Each check returns None or what is wrong. A new field is one line in a table below.

class Field(NamedTuple):
    name: str
    check: Callable[[Any], str | None]
    required: bool = True


def integer(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"expected an integer in {low}..{high}, got {_show(value)}"
        return None
    return check


def equal_to(expected: Any) -> Callable[[Any], str | None]:
    return lambda value: None if value == expected and type(value) is type(expected) else \
        f"expected {expected!r}, got {_show(value)}"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {_show(value)}"


def matching(pattern: re.Pattern, what: str) -> Callable[[Any], str | None]:
    return lambda value: None if isinstance(value, str) and pattern.match(value) else \
        f"expected {what}, got {_show(value)}"


def list_of(item: Callable[[Any], str | None], max_items: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) > max_items:
            return f"expected a list of at most {max_items} items, got {_show(value)}"
        for index, element in enumerate(value):
            problem = item(element)
            if problem:
                return f"item {index}: {problem}"
        return None
    return check


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else f"a {type(value).__name__} of {len(value)}"
    return text if len(text) <= 60 else text[:60] + "..."


secondary_name = matching(NAME_PATTERN, "a name of letters, digits, '_', '-', '.' (at most 64)")
model_id = matching(re.compile(r"^[0-9a-f]{8,64}$"), "a hexadecimal model id")


#: every model train ranks (transfer.pipeline.rank_models)
TRANSFER_MODEL_NAMES = ("vae_mlp", "one_step_mlp", *BASELINE_CLASSES, "blend")


def transfer_model_name(value: Any) -> str | None:
    return None if isinstance(value, str) and value in TRANSFER_MODEL_NAMES else \
        f"expected one of {', '.join(TRANSFER_MODEL_NAMES)}, got {_show(value)}"


def validation_scores(value: Any) -> str | None:
    """{model: validation RSE}: known names, finite non-negative numbers (or null: not finite)."""
    if not isinstance(value, dict) or len(value) > len(TRANSFER_MODEL_NAMES):
        return f"expected an object of at most {len(TRANSFER_MODEL_NAMES)} scores, got {_show(value)}"
    for key, score in value.items():
        problem = transfer_model_name(key)
        if problem:
            return f"key {_show(key)}: {problem}"
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                                  or not np.isfinite(score) or score < 0):
            return f"{key}: expected a finite RSE >= 0, got {_show(score)}"
    return None


def baseline_name(value: Any) -> str | None:
    return None if isinstance(value, str) and value in BASELINE_CLASSES else \
        f"expected one of {', '.join(BASELINE_CLASSES)}, got {_show(value)}"


SECONDARY_FIELDS = (
    Field("n_pixels", integer(1, MAX_PIXELS)),
    Field("mlp_hidden", list_of(integer(1, MAX_LAYER_WIDTH), 16), required=False),
    Field("fine_tuned", boolean),
    Field("one_step", boolean),
    Field("baselines", list_of(baseline_name, len(BASELINE_CLASSES))),
    Field("model_id", model_id),
    Field("trust", boolean, required=False),
    Field("trust_model", transfer_model_name, required=False),
    Field("recommended", transfer_model_name, required=False),
    Field("validation_rse", validation_scores, required=False),
    Field("day_change_rse", validation_scores, required=False),
    Field("blend_weight", lambda value: None if isinstance(value, (int, float)) and not isinstance(value, bool)
          and 0.0 < value < 1.0 else f"expected a weight strictly between 0 and 1, got {_show(value)}",
          required=False),
)


def _relative_part(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > 300:
        return f"expected a file name inside the bundle, got {_show(value)}"
    parts = value.split("/")
    if value.startswith(("/", "\\")) or "\\" in value or ":" in value or any(p in ("", ".", "..") for p in parts):
        return f"{_show(value)} is not a plain relative path inside the bundle"
    return None


def _secondaries(value: Any) -> str | None:
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_SECONDARIES:
        return f"expected an object of 1..{MAX_SECONDARIES} secondary systems, got {_show(value)}"
    for name, entry in value.items():
        problem = secondary_name(name)
        if problem:
            return f"secondary name: {problem}"
        if not isinstance(entry, dict):
            return f"'{name}': expected an object, got {_show(entry)}"
        problem = _fields(entry, SECONDARY_FIELDS)
        if problem:
            return f"'{name}'.{problem}"
    return None


def _hashes(value: Any) -> str | None:
    if not isinstance(value, dict) or len(value) > 100_000:
        return f"expected an object of file name -> sha256, got {_show(value)}"
    for rel, digest in value.items():
        problem = _relative_part(rel) or matching(HASH_PATTERN, "64 hexadecimal digits")(digest)
        if problem:
            return f"{_show(rel)}: {problem}"
    return None


MANIFEST_FIELDS = (
    Field("format", equal_to(BUNDLE_FORMAT)),
    Field("format_version", equal_to(BUNDLE_VERSION)),
    Field("model_id", model_id),
    Field("n_primary", integer(1, MAX_PIXELS)),
    Field("latent", integer(1, MAX_LAYER_WIDTH)),
    Field("secondaries", _secondaries),
    Field("default_secondary", secondary_name),
    Field("sha256", _hashes),
)


def _fields(values: Mapping[str, Any], fields: tuple[Field, ...]) -> str | None:
    """'field: what is wrong' for the first bad field, or None. Unknown fields are left to newer readers."""
    for field_ in fields:
        if field_.name not in values:
            if field_.required:
                return f"{field_.name}: missing"
            continue
        problem = field_.check(values[field_.name])
        if problem:
            return f"{field_.name}: {problem}"
    return None


def validate_manifest(model_dir: Path, manifest: Any) -> dict:
    """bundle.json checked field by field and against the directory, before anything is loaded."""
    where = model_dir / "bundle.json"
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: not a transfer bundle")
    if manifest.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{model_dir}: bundle format version {_show(manifest.get('format_version'))} "
                          f"is not supported (this program reads {BUNDLE_VERSION})")
    problem = _fields(manifest, MANIFEST_FIELDS)
    if problem:
        raise BundleError(f"{where}: field {problem}")
    if manifest["default_secondary"] not in manifest["secondaries"]:
        raise BundleError(f"{where}: field default_secondary: {manifest['default_secondary']!r} is not one of "
                          f"the secondaries ({', '.join(sorted(manifest['secondaries']))})")
    root = model_dir.resolve()
    for rel in manifest["sha256"]:
        if not (model_dir / rel).resolve().is_relative_to(root):
            raise BundleError(f"{where}: field sha256: {rel!r} leads outside the bundle's directory")
    # every file the loader reads must be hash-checked: none may be swapped unnoticed
    needed = primary_files() + ["config.json", "provenance.json", "history.json"]
    for name, info in manifest["secondaries"].items():
        needed += secondary_files(name, fine_tuned=info["fine_tuned"], one_step=info["one_step"],
                                  baselines=list(info["baselines"]))
    unlisted = [rel for rel in needed if rel not in manifest["sha256"]]
    if unlisted:
        raise BundleError(f"{where}: field sha256: no hash for {', '.join(unlisted[:5])}"
                          f"{' and more' if len(unlisted) > 5 else ''}")
    return manifest


# -- the loaded bundle ---------------------------------------------------------



@dataclass
class SecondaryModel:
    """One secondary system's part of the bundle."""

    name: str
    wavelengths: np.ndarray
    preprocess: SpectrumPreprocessor
    mlp: LatentMLP
    decoder: Decoder                 # the VAE's decoder, or this system's fine-tuned copy
    fine_tuned: bool
    one_step: ComposedTransfer | None
    baselines: dict[str, Any]        # name -> fitted transfer baseline (transfer.baselines)
    novelty: NoveltyModel            # PCA-residual novelty of scaled secondary spectra
    model_id: str                    # hash of the weights and statistics this system's transfer uses
    trust: TrustScore | None = None  # calibrated expected relative error (None: bundle without one)
    blend_weight: float | None = None  # w of the blend w * VAE + MLP + (1 - w) * DS (None: no blend)

    @property
    def n_pixels(self) -> int:
        return int(self.wavelengths.shape[0])

    def composed(self) -> ComposedTransfer:
        return ComposedTransfer(self.mlp, self.decoder).eval()


@dataclass
class TransferBundle:
    path: Path
    config: TransferConfig
    model_id: str
    primary_wavelengths: np.ndarray
    primary_preprocess: SpectrumPreprocessor
    vae: VAE
    kmeans: SpectralClusters         # centroids in baseline-corrected primary counts
    secondaries: dict[str, SecondaryModel]
    default_secondary: str
    provenance: dict
    history: dict
    manifest: dict = field(repr=False, default_factory=dict)

    @property
    def n_primary(self) -> int:
        return int(self.primary_wavelengths.shape[0])

    def secondary(self, name: str | None = None) -> SecondaryModel:
        name = name or self.default_secondary
        if name not in self.secondaries:
            raise BundleError(f"{self.path}: no secondary system named {name!r} "
                              f"(known: {', '.join(sorted(self.secondaries))})")
        return self.secondaries[name]

    def data_map(self, secondary: str, role: str) -> tuple[Path | None, str]:
        """(path, "") of the `role` map ("train" or "val") the provenance names for `secondary`,
        where it is still there and of the size recorded; else (None, why not)."""
        data = self.provenance.get("secondaries", {}).get(secondary, {}).get("data") or \
            self.provenance.get("primary", {}).get("data", {})
        record = data.get(role) or {}
        what = {"train": "training", "val": "validation"}.get(role, role)
        if "path" not in record:
            return None, f"{self.path}/provenance.json names no {what} map for secondary '{secondary}'"
        path = Path(record["path"])
        if not path.is_file():
            return None, f"the {what} map {path} named in {self.path}/provenance.json is not there"
        if "bytes" in record and path.stat().st_size != int(record["bytes"]):
            return None, (f"the {what} map {path} changed since the model was trained "
                          f"({path.stat().st_size} bytes, provenance says {record['bytes']})")
        return path, ""


# -- writing ---------------------------------------------------------------------

def primary_files() -> list[str]:
    return ["primary/wavelength.npy", "primary/preprocess.safetensors", "primary/vae.safetensors",
            "primary/kmeans.safetensors"]


def secondary_files(name: str, *, fine_tuned: bool, one_step: bool, baselines: list[str],
                    trust: bool = False) -> list[str]:
    base = f"secondary/{name}"
    files = [f"{base}/wavelength.npy", f"{base}/preprocess.safetensors", f"{base}/mlp.safetensors",
             f"{base}/novelty.safetensors"]
    if trust:
        files.append(f"{base}/trust.safetensors")
    if fine_tuned:
        files.append(f"{base}/decoder.safetensors")
    if one_step:
        files.append(f"{base}/one_step.safetensors")
    files += [f"{base}/baselines/{b}.safetensors" for b in baselines]
    return files


def write_primary(model_dir: str | Path, *, wavelengths: np.ndarray, preprocess: SpectrumPreprocessor,
                  vae: VAE, kmeans: SpectralClusters) -> None:
    model_dir = Path(model_dir)
    save_npy(model_dir / "primary/wavelength.npy", np.asarray(wavelengths, dtype=np.float64))
    save_state_tree(model_dir / "primary/preprocess.safetensors", preprocess.get_state())
    save_module(model_dir / "primary/vae.safetensors", vae)
    save_state_tree(model_dir / "primary/kmeans.safetensors", kmeans.get_state())


def write_secondary(model_dir: str | Path, name: str, *, wavelengths: np.ndarray,
                    preprocess: SpectrumPreprocessor, mlp: LatentMLP, decoder: Decoder | None,
                    one_step: ComposedTransfer | None, baselines: Mapping[str, Any],
                    novelty: NoveltyModel, trust: TrustScore | None = None) -> dict:
    """Writes one secondary's parts; `decoder` only when fine-tuned. Returns its manifest entry."""
    base = Path(model_dir) / "secondary" / check_name(name)
    if base.exists():
        shutil.rmtree(base)
    save_npy(base / "wavelength.npy", np.asarray(wavelengths, dtype=np.float64))
    save_state_tree(base / "preprocess.safetensors", preprocess.get_state())
    save_module(base / "mlp.safetensors", mlp)
    if decoder is not None:
        save_module(base / "decoder.safetensors", decoder)
    if one_step is not None:
        save_module(base / "one_step.safetensors", one_step)
    save_state_tree(base / "novelty.safetensors", novelty.get_state())
    if trust is not None:
        save_state_tree(base / "trust.safetensors", trust.get_state())
    for baseline_name, model in baselines.items():
        save_state_tree(base / "baselines" / f"{baseline_name}.safetensors", model.get_state())
    return {"n_pixels": int(len(wavelengths)), "mlp_hidden": [int(m.out_features) for m in mlp
                                                              if isinstance(m, nn.Linear)][:-1],
            "fine_tuned": decoder is not None, "one_step": one_step is not None, "baselines": sorted(baselines),
            "trust": trust is not None}


def _combined_id(hashes: Mapping[str, str], files: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        if rel.endswith(WEIGHT_SUFFIX) or rel.endswith(".npy"):
            digest.update(rel.encode() + b"\0" + hashes[rel].encode())
    return digest.hexdigest()[:16]


def write_manifest(model_dir: str | Path, *, n_primary: int, latent: int,
                   secondaries: Mapping[str, Mapping[str, Any]], default_secondary: str) -> dict:
    """Hashes every part and writes bundle.json last: a bundle without it is incomplete.

    `secondaries` maps a name to the entry `write_secondary` returned.
    """
    model_dir = Path(model_dir)
    files = primary_files() + ["config.json", "provenance.json", "history.json"]
    entries = {}
    for name, info in secondaries.items():
        own = secondary_files(name, fine_tuned=info["fine_tuned"], one_step=info["one_step"],
                              baselines=list(info["baselines"]), trust=bool(info.get("trust", False)))
        files += own
        entries[name] = dict(info, files=own)
    hashes = {}
    for rel in files:
        if not (model_dir / rel).exists():
            raise BundleError(f"cannot finish bundle: {model_dir / rel} was not written")
        hashes[rel] = sha256_file(model_dir / rel)
    for entry in entries.values():
        entry["model_id"] = _combined_id(hashes, primary_files() + entry.pop("files"))
    manifest = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
        "model_id": _combined_id(hashes, files),
        "n_primary": n_primary, "latent": latent,
        "default_secondary": default_secondary, "secondaries": entries, "sha256": hashes,
    }
    write_json(model_dir / "bundle.json", manifest)
    return manifest


# -- loading ---------------------------------------------------------------------

def _restore(path: Path, restore: Callable[[dict], Any]) -> Any:
    try:
        return restore(load_state_tree(path))
    except (BundleError, OutdatedTrust):
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise BundleError(f"corrupt part {path}: {exc}") from None


def load_bundle(model_dir: str | Path) -> TransferBundle:
    """Loads and checks a bundle; `BundleError` names the first missing or corrupt part."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BundleError(f"{model_dir}: not a model directory")
    if not (model_dir / "bundle.json").exists():
        hint = " (training did not finish; resume it with --resume)" if (model_dir / "checkpoints").exists() else ""
        raise BundleError(f"missing part: {model_dir / 'bundle.json'}{hint}")
    manifest = validate_manifest(model_dir, read_json(model_dir / "bundle.json"))
    for rel, expected in manifest["sha256"].items():
        path = model_dir / rel
        if not path.exists():
            raise BundleError(f"missing part: {path}")
        if sha256_file(path) != expected:
            raise BundleError(f"corrupt part {path}: its sha256 differs from the one in bundle.json")
    try:
        config = config_from_json(read_json_text(model_dir / "config.json"))
    except Exception as exc:  # a config that no longer validates is a corrupt part too
        raise BundleError(f"corrupt part {model_dir / 'config.json'}: {str(exc)[:300]}") from None

    wl_primary = load_npy(model_dir / "primary/wavelength.npy")
    n_primary = int(manifest["n_primary"])
    if wl_primary.shape != (n_primary,):
        raise BundleError(f"{model_dir / 'primary/wavelength.npy'}: {wl_primary.shape} does not match "
                          f"n_primary={n_primary}")
    vae = load_module(model_dir / "primary/vae.safetensors", build_vae(n_primary, config["vae"])).eval()
    secondaries = {name: _load_secondary(model_dir, name, info, config, vae, n_primary)
                   for name, info in manifest["secondaries"].items()}
    return TransferBundle(
        path=model_dir, config=config, model_id=manifest["model_id"], primary_wavelengths=wl_primary,
        primary_preprocess=_restore(model_dir / "primary/preprocess.safetensors", SpectrumPreprocessor.from_state),
        vae=vae, kmeans=_restore(model_dir / "primary/kmeans.safetensors", SpectralClusters.from_state),
        secondaries=secondaries, default_secondary=manifest["default_secondary"],
        provenance=read_json(model_dir / "provenance.json"), history=read_json(model_dir / "history.json"),
        manifest=manifest,
    )


def _load_secondary(model_dir: Path, name: str, info: Mapping[str, Any], config: TransferConfig,
                    vae: VAE, n_primary: int) -> SecondaryModel:
    base = model_dir / "secondary" / check_name(name)
    wavelengths = load_npy(base / "wavelength.npy")
    n = int(info["n_pixels"])
    if wavelengths.shape != (n,):
        raise BundleError(f"{base / 'wavelength.npy'}: {wavelengths.shape} does not match n_pixels={n}")
    latent = config["vae"]["latent"]
    # A secondary added later may have its own MLP sizes.
    config = config.with_overrides({"mlp": {"hidden": list(info.get("mlp_hidden", config["mlp"]["hidden"]))}})
    mlp = load_module(base / "mlp.safetensors", build_mlp(n, config["mlp"], latent)).eval()
    decoder = vae.decoder
    if info["fine_tuned"]:
        decoder = Decoder(latent, config["vae"]["hidden"], n_primary, config["vae"]["negative_slope"])
        load_module(base / "decoder.safetensors", decoder).eval()
    one_step = None
    if info["one_step"]:
        one_step = load_module(base / "one_step.safetensors", build_one_step(n, n_primary, config)).eval()
    baselines = {}
    for baseline_name in info["baselines"]:
        if baseline_name not in BASELINE_CLASSES:
            raise BundleError(f"{model_dir / 'bundle.json'}: unknown baseline {baseline_name!r}")
        baselines[baseline_name] = _restore(base / "baselines" / f"{baseline_name}.safetensors",
                                            BASELINE_CLASSES[baseline_name].from_state)
    novelty = _restore(base / "novelty.safetensors", NoveltyModel.from_state)
    if novelty.n_pixels != n:
        raise BundleError(f"{base / 'novelty.safetensors'}: statistics of {novelty.n_pixels}-pixel spectra, "
                          f"the system has {n}")
    trust = None
    if info.get("trust", False):
        try:
            trust = _restore(base / "trust.safetensors", TrustScore.from_state)
        except OutdatedTrust as exc:
            # the model itself is fine: it loads as a bundle from before the trust score
            log.warning("%s: %s; '%s' has no expected_rel_error until then", base / "trust.safetensors", exc, name)
            trust = None
        if trust is not None and trust.n_secondary != n:
            raise BundleError(f"{base / 'trust.safetensors'}: statistics of {trust.n_secondary}-pixel "
                              f"spectra, the system has {n}")
    return SecondaryModel(
        name=name, wavelengths=wavelengths, trust=trust,
        preprocess=_restore(base / "preprocess.safetensors", SpectrumPreprocessor.from_state),
        mlp=mlp, decoder=decoder, fine_tuned=bool(info["fine_tuned"]), one_step=one_step,
        baselines=baselines, novelty=novelty, model_id=info["model_id"],
        blend_weight=_blend_weight(model_dir, name, info, baselines),
    )


def _blend_weight(model_dir: Path, name: str, info: Mapping[str, Any], baselines: Mapping[str, Any]) -> float | None:
    """The blend's weight of VAE + MLP, where the entry has one; a blend needs the DS it blends with."""
    if "blend_weight" not in info:
        return None
    if "ds" not in baselines:
        raise BundleError(f"{Path(model_dir) / 'bundle.json'}: secondary {name!r} has a blend_weight but no DS "
                          "baseline to blend with")
    return float(info["blend_weight"])


# -- training checkpoints (same formats: safetensors + JSON, no pickle) --------

def save_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> dict:
    """Tensors of the optimizer state to safetensors; returns the JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{index}.{key}"] = value
    path = Path(path)
    tmp = _atomic(path)
    save_torch(tensors, str(tmp))
    os.replace(tmp, path)
    return {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer, meta: Mapping[str, Any]) -> None:
    tensors = load_torch(str(path))
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
