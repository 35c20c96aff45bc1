"""An ONNX Runtime session on the exported pipeline graph (docs/architecture.md, "Exported model").

This is not the trained transfer model (transfer.bundle holds that); it is the runtime the
worker calls, with the checks the exported-model contract needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ntpath
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

INPUT_NAME = "secondary"
OUTPUTS = {"primary": "tensor(float)", "latent": "tensor(float)", "label": "tensor(int64)",
           "novelty": "tensor(float)"}
META_PREFIX = "twinplume."
TRUST_OUTPUT = "expected_rel_error"


class ModelContractError(ValueError):
    """The ONNX file does not obey the exported-model contract."""


class PipelineSession:
    """An ONNX Runtime session on the CPU provider with dynamic batch size.

    ``run(batch)`` takes float32 [b, n_secondary] raw counts and returns ``primary``
    [b, n_primary], ``label`` int64 [b] and ``novelty`` float32 [b].
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, spin: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file {self.path} does not exist")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        # Spinning pool threads answer faster but keep cores busy between micro-batches; on a
        # small lab PC those cores are the ones acquisition, producer and subscribers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            raise ModelContractError(f"{self.path}: ONNX Runtime cannot load it: {exc}") from exc
        self.sha256 = _sha256(self.path)
        self._check_io()
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k[len(META_PREFIX):]: v for k, v in meta.items() if k.startswith(META_PREFIX)}
        for key in ("model_id", "n_primary", "n_secondary"):
            if key not in self.metadata:
                raise ModelContractError(f"{self.path}: metadata '{META_PREFIX}{key}' is missing")
        self.model_id = self.metadata["model_id"]
        try:
            self.n_secondary = int(self.metadata["n_secondary"])
            self.n_primary = int(self.metadata["n_primary"])
        except ValueError:
            raise ModelContractError(f"{self.path}: metadata n_primary/n_secondary are not integers: "
                                     f"{self.metadata['n_primary']!r}, {self.metadata['n_secondary']!r}") from None
        declared = self.session.get_inputs()[0].shape[1]
        if isinstance(declared, int) and declared != self.n_secondary:
            raise ModelContractError(f"{self.path}: input has {declared} pixels but metadata says "
                                     f"n_secondary={self.n_secondary}")
        self._outputs = ["primary", "label", "novelty"]
        # optional: the calibrated trust score of transfer/trust.py (docs/novelty.md)
        self.has_trust = any(o.name == TRUST_OUTPUT and o.type == "tensor(float)" for o in self.session.get_outputs())
        if self.has_trust:
            self._outputs.append(TRUST_OUTPUT)
        self.precision = self._precision()
        log.info("loaded model %s (%s) from %s: %d -> %d pixels", self.model_id, self.precision, self.path,
                 self.n_secondary, self.n_primary)

    def _precision(self) -> str:
        """"float32" or "int8" as the export recorded it (libs-transfer export --precision)."""
        try:
            return str(json.loads(self.metadata.get("provenance", "{}"))["precision"]["name"])
        except (ValueError, KeyError, TypeError):
            return "not recorded"

    def _check_io(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(float)" \
                or len(inputs[0].shape) != 2:
            got = [(i.name, i.type, i.shape) for i in inputs]
            raise ModelContractError(f"{self.path}: expected one input '{INPUT_NAME}' float32 [batch, n], got {got}")
        outputs = {o.name: o.type for o in self.session.get_outputs()}
        for name, kind in OUTPUTS.items():
            if outputs.get(name) != kind:
                raise ModelContractError(f"{self.path}: output '{name}' should be {kind}, "
                                         f"got {outputs.get(name, 'nothing')}")

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for float32 [b, n_secondary]; ``finite`` [b] says which rows came out finite."""
        primary, label, novelty, *trust = self.session.run(self._outputs, {INPUT_NAME: batch})
        if primary.shape != (batch.shape[0], self.n_primary):
            raise ModelContractError(f"{self.path}: 'primary' came out {primary.shape}, expected "
                                     f"({batch.shape[0]}, {self.n_primary})")
        finite = np.isfinite(primary).all(axis=1) & np.isfinite(novelty)
        result = {"primary": primary, "label": label, "novelty": novelty}
        if trust:
            result[TRUST_OUTPUT] = trust[0]
            finite &= np.isfinite(trust[0])
        result["finite"] = finite
        return result

    def describe(self) -> dict:
        """What the control socket answers to {"cmd": "model"}: names, ids and hashes, no local paths."""
        info = {"model": self.model_id, "file": self.path.name, "sha256": self.sha256, "n_secondary": self.n_secondary,
                "n_primary": self.n_primary, "precision": self.precision,
                "inputs": [{"name": i.name, "type": i.type, "shape": i.shape} for i in self.session.get_inputs()],
                "outputs": [{"name": o.name, "type": o.type, "shape": o.shape} for o in self.session.get_outputs()]}
        for key in ("primary_wavelengths", "secondary_wavelengths", "primary_baseline_windows",
                    "secondary_baseline_windows", "secondary_mean_spectrum", "provenance", "trust_threshold"):
            if key in self.metadata:
                try:
                    info[key] = json.loads(self.metadata[key])
                except ValueError:
                    info[key] = self.metadata[key]
        if "provenance" in info:
            info["provenance"] = without_paths(info["provenance"])
        if self.has_trust:
            # the "do not trust" level of expected_rel_error (docs/novelty.md); a live view marks spots above it
            try:
                info["trust_threshold"] = float(self.metadata.get("trust_threshold", "nan"))
            except ValueError:
                info["trust_threshold"] = None
        return info


def without_paths(value: Any) -> Any:
    """``value`` with every absolute path (POSIX or Windows) cut to its file name.

    The export records where the bundle and the training maps were; a control client has no
    business knowing this machine's directories, and the names and hashes identify them.
    """
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~", "\\\\")) or ntpath.isabs(value)):
        return ntpath.basename(value.rstrip("/\\").replace("/", "\\")) or "(path)"
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_model_input(spectra: list[np.ndarray]) -> np.ndarray:
    """One C-contiguous float32 [sum k, n] batch from per-message float32 [k, n] arrays."""
    if len(spectra) == 1:
        return np.ascontiguousarray(spectra[0], dtype=np.float32)
    return np.concatenate(spectra).astype(np.float32, copy=False)
