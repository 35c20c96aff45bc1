"""Evaluation of transfer models on one map, and its report (JSON, Markdown, PNG).

Typical use, chunk by chunk over a map of any size::

    evaluation = Evaluation(reader.shape, wl_primary, ["vae_mlp", "pls", ...],
                            clusters=clusters, to_cluster_space=primary_prep.scaler.transform,
                            phase_map=truth["phase_map"] if truth else None,
                            phase_names=truth["phase_names"] if truth else None)
    for chunk in reader.iter_chunks():
        X_true = ...  # baseline-corrected primary counts [k, n_primary]
        evaluation.update(chunk.iy, chunk.ix, X_true, {"vae_mlp": pred_a, "pls": pred_b})
    summary = evaluation.write(out_dir, protocol="causal", loss_history=history)

``X_true`` and every prediction must be in the same unscaled units (baseline-corrected
counts): the report's numbers are in those units. Memory is per spot scalars (total
emission, distances, labels) plus a few example spectra per phase, so maps larger
than RAM are fine.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from transfer import figures
from transfer.clustering import SpectralClusters
from transfer.metrics import TransferMetrics
from transfer.preprocess import SpectraError, check_spectra
from transfer.selection import MODEL_NAMES, TIE_TOLERANCE

log = logging.getLogger(__name__)

MODEL_ORDER = MODEL_NAMES      # the order reports list models in
METRIC_KEYS = ("euclid", "cosine", "rse", "k_score")


class Evaluation:
    """Accumulates per-spot results of several models on one evaluated map.

    ``clusters`` (fitted on primary training spectra) gives the k-score and label maps;
    ``to_cluster_space`` maps unscaled spectra into the space it was fitted in (e.g.
    the training scaler's transform). Representative spectra are drawn per phase of
    ``phase_map`` (simulated files), else per k-means label of the original spectrum:
    a seeded uniform sample of ``examples_per_group`` spots per group is kept, and the
    one with the median error of the featured model is shown.
    """

    def __init__(self, shape: tuple[int, int], wavelengths, models: Sequence[str], *,
                 clusters: SpectralClusters | None = None,
                 to_cluster_space: Callable[[np.ndarray], np.ndarray] | None = None,
                 phase_map: np.ndarray | None = None, phase_names: Sequence[str] | None = None,
                 featured: str | None = None, examples_per_group: int = 8, seed: int = 0):
        self.shape = (int(shape[0]), int(shape[1]))
        self.wavelengths = np.asarray(wavelengths, dtype=np.float64)
        self.models = list(models)
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct names, got {self.models}")
        self.featured = featured or next((m for m in MODEL_ORDER if m in self.models), self.models[0])
        if self.featured not in self.models:
            raise ValueError(f"featured model {self.featured!r} is not among {self.models}")
        self.clusters, self.to_cluster_space = clusters, to_cluster_space
        if phase_map is not None and np.shape(phase_map) != self.shape:
            raise ValueError(f"phase map shape {np.shape(phase_map)} differs from map shape {self.shape}")
        self.phase_map = None if phase_map is None else np.asarray(phase_map)
        self.phase_names = None if phase_names is None else [str(p) for p in phase_names]
        self.examples_per_group = int(examples_per_group)
        self._rng = np.random.default_rng(seed)
        nan_map = lambda: np.full(self.shape, np.nan, dtype=np.float32)  # noqa: E731
        self.emissivity_true = nan_map()
        self.seen = np.zeros(self.shape, dtype=bool)
        self.labels_true = np.full(self.shape, -1, dtype=np.int32)
        self.maps = {m: {"emissivity": nan_map(), "euclid": nan_map(), "cosine": nan_map(),
                         "labels": np.full(self.shape, -1, dtype=np.int32)} for m in self.models}
        self.metrics = {m: TransferMetrics() for m in self.models}
        self._pool: dict[object, list] = {}   # group -> [(key, iy, ix, true, {model: pred})]

    @property
    def n_spectra(self) -> int:
        return int(self.seen.sum())

    def update(self, iy, ix, X_true, predictions: Mapping[str, np.ndarray]) -> None:
        """Add one chunk: spot indices [k], true spectra [k, n], predictions per model."""
        iy, ix = np.asarray(iy, dtype=np.int64).ravel(), np.asarray(ix, dtype=np.int64).ravel()
        X_true = check_spectra(X_true, self.wavelengths.size, name="true primary spectra")
        if iy.size != X_true.shape[0] or ix.size != X_true.shape[0]:
            raise SpectraError(f"{X_true.shape[0]} spectra but {iy.size}/{ix.size} spot indices")
        if iy.size and (iy.min() < 0 or ix.min() < 0 or iy.max() >= self.shape[0] or ix.max() >= self.shape[1]):
            raise ValueError(f"spot indices outside the map {self.shape}")
        if set(predictions) != set(self.models):
            raise ValueError(f"predictions for {sorted(predictions)}, expected {sorted(self.models)}")
        preds = {m: check_spectra(predictions[m], self.wavelengths.size, name=f"{m} predictions")
                 for m in self.models}
        for m, X_pred in preds.items():
            if X_pred.shape[0] != X_true.shape[0]:
                raise SpectraError(f"{m}: {X_pred.shape[0]} predictions for {X_true.shape[0]} spectra")
        if np.any(self.seen[iy, ix]) or np.unique(iy * self.shape[1] + ix).size != iy.size:
            raise ValueError("some spots were already evaluated; each spot counts once")
        self.seen[iy, ix] = True
        self.emissivity_true[iy, ix] = X_true.sum(axis=1, dtype=np.float64)
        if self.clusters is not None:
            self.labels_true[iy, ix] = self.clusters.predict(self._cluster_space(X_true))
        errors = {}
        for m, X_pred in preds.items():
            euclid, cosine = self.metrics[m].update(X_true, X_pred)
            maps = self.maps[m]
            maps["emissivity"][iy, ix] = X_pred.sum(axis=1, dtype=np.float64)
            maps["euclid"][iy, ix], maps["cosine"][iy, ix] = euclid, cosine
            if self.clusters is not None:
                maps["labels"][iy, ix] = self.clusters.predict(self._cluster_space(X_pred))
                self.metrics[m].update_labels(self.labels_true[iy, ix], maps["labels"][iy, ix])
            errors[m] = euclid
        self._keep_examples(iy, ix, X_true, preds, errors[self.featured])

    def _cluster_space(self, X):
        return X if self.to_cluster_space is None else self.to_cluster_space(X)

    def _group_of(self, iy, ix):
        if self.phase_map is not None:
            return self.phase_map[iy, ix].astype(np.int64)
        if self.clusters is not None:
            return self.labels_true[iy, ix].astype(np.int64)
        return np.zeros(iy.size, dtype=np.int64)

    def _keep_examples(self, iy, ix, X_true, preds, featured_error):
        # Smallest random keys per group = a uniform sample without replacement, kept
        # chunk by chunk without knowing the group sizes in advance.
        keys = self._rng.random(iy.size)
        groups = self._group_of(iy, ix)
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            rows = rows[np.argsort(keys[rows])[: self.examples_per_group]]
            pool = self._pool.setdefault(int(group), [])
            pool.extend((keys[r], int(iy[r]), int(ix[r]), float(featured_error[r]), X_true[r].copy(),
                         {m: preds[m][r].copy() for m in self.models}) for r in rows)
            pool.sort(key=lambda item: item[0])
            del pool[self.examples_per_group:]

    def _group_name(self, group: int) -> str:
        if self.phase_map is not None:
            if self.phase_names and 0 <= group < len(self.phase_names):
                return self.phase_names[group]
            return f"phase {group}"
        return f"cluster {group}" if self.clusters is not None else "all spots"

    def examples(self) -> list[dict]:
        """One representative spot per group (median featured error among the sample)."""
        chosen = []
        for group in sorted(self._pool):
            pool = sorted(self._pool[group], key=lambda item: item[3])
            _, iy, ix, _, true, predicted = pool[(len(pool) - 1) // 2]
            chosen.append({"group": self._group_name(group), "iy": iy, "ix": ix,
                           "true": true, "predicted": predicted})
        return chosen

    def results(self) -> dict:
        """{model: {"euclid", "cosine", "rse", "k_score", "n_spectra"}}."""
        return {m: self.metrics[m].result() for m in self.models}

    def write(self, out_dir, *, protocol: str, loss_history=None, notes: str = "",
              extra: Mapping | None = None) -> dict:
        maps = {"emissivity_true": self.emissivity_true, "models": self.maps,
                "labels_true": self.labels_true if self.clusters is not None else None}
        extra = dict(extra or {})
        if self.clusters is not None:
            extra.setdefault("clusters", {"k": int(self.clusters.k_),
                                          "silhouette": {str(k): v for k, v in
                                                         self.clusters.silhouette_scores_.items()}})
        return write_report(out_dir, protocol=protocol, n_spectra=self.n_spectra,
                            metrics=self.results(), wavelengths=self.wavelengths, maps=maps,
                            examples=self.examples(), loss_history=loss_history, notes=notes,
                            featured=self.featured, extra=extra)


def write_report(out_dir, *, protocol: str, n_spectra: int, metrics: Mapping[str, Mapping],
                 wavelengths=None, maps: Mapping | None = None, examples: Sequence[Mapping] = (),
                 loss_history: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                 notes: str = "", featured: str | None = None, extra: Mapping | None = None) -> dict:
    """Write report.json, report.md and the PNG figures; return the JSON content.

    ``metrics``: {model: {"euclid", "cosine", "rse", "k_score"}} in unscaled units.
    ``maps`` (optional): {"emissivity_true": [ny, nx], "labels_true": [ny, nx] int or
    None, "models": {model: {"emissivity", "euclid", "cosine", "labels"}}}, NaN / -1
    where a spot was not evaluated. ``examples``: [{"group", "iy", "ix", "true": [n],
    "predicted": {model: [n]}}]. ``loss_history``: {stage: {curve: [per epoch]}}.
    ``featured`` is the model whose maps and spectra are drawn (default: the first of
    vae_mlp, one_step_mlp, pls, knn, ds, pds, blend present).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not metrics:
        raise ValueError("no model metrics to report")
    for name, values in metrics.items():
        missing = [k for k in METRIC_KEYS if k not in values]
        if missing:
            raise ValueError(f"metrics of {name!r} lack {missing}")
    featured = featured or next((m for m in MODEL_ORDER if m in metrics), next(iter(metrics)))
    model_names = [m for m in MODEL_ORDER if m in metrics] + [m for m in metrics if m not in MODEL_ORDER]
    figure_paths = _write_figures(out_dir, featured, wavelengths, maps, examples, loss_history)
    report = {
        "protocol": protocol,
        "n_spectra": int(n_spectra),
        "units": "baseline-corrected primary counts (unscaled)",
        "featured_model": featured,
        "models": {m: {k: _json_number(metrics[m][k]) for k in METRIC_KEYS} for m in model_names},
        "figures": {k: p.name for k, p in figure_paths.items()},
        "examples": [{"group": e["group"], "iy": int(e["iy"]), "ix": int(e["ix"])} for e in examples],
        "notes": notes,
    }
    if extra:
        extra = dict(extra)
        # The model the live path should run, and the validation figures it was chosen on.
        for key in ("recommended", "live_model", "validation_rse", "day_change_rse", "apparent_shift_px",
                    "line_alignment"):
            if extra.get(key) is not None:
                report[key] = _json_clean(extra[key])
            extra.pop(key, None)
        report["details"] = _json_clean(extra)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(_markdown(report))
    log.info("report written to %s", out_dir)
    return report


def _write_figures(out_dir, featured, wavelengths, maps, examples, loss_history) -> dict:
    paths = {}
    if maps is not None:
        model_maps = maps["models"][featured]
        marks = [(e["group"], (e["iy"], e["ix"]), color) for e, color in
                 zip(examples, ("tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown",
                                "tab:pink", "tab:olive", "tab:cyan", "tab:red", "tab:gray"))]
        paths["emissivity"] = figures.emissivity_figure(
            out_dir / "emissivity.png", maps["emissivity_true"], model_maps["emissivity"],
            model=featured, marks=marks)
        paths["errors"] = figures.error_figure(out_dir / "errors.png", model_maps["euclid"],
                                               model_maps["cosine"], model=featured)
        labels_true = maps.get("labels_true")
        if labels_true is not None and np.any(labels_true >= 0):
            k = int(max(labels_true.max(), model_maps["labels"].max())) + 1
            paths["clusters"] = figures.cluster_figure(out_dir / "clusters.png", labels_true,
                                                       model_maps["labels"], model=featured, k=k)
    if examples and wavelengths is not None:
        paths["spectra"] = figures.spectra_figure(out_dir / "spectra.png", np.asarray(wavelengths),
                                                  examples, model=featured)
    if loss_history:
        paths["loss"] = figures.loss_figure(out_dir / "loss.png", loss_history)
    return paths


def _json_number(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_clean(value):
    """Make numpy values, NaN and nested containers JSON-safe (NaN becomes null)."""
    if isinstance(value, Mapping):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_number(value)
    return value if value is None or isinstance(value, str) else str(value)


def _markdown(report: dict) -> str:
    def cell(value, fmt):
        return "n/a" if value is None else format(value, fmt)

    lines = [
        "# Spectral transfer evaluation",
        "",
        f"- protocol: `{report['protocol']}`",
        f"- spectra evaluated: {report['n_spectra']}",
        f"- units: {report['units']}",
        "",
        "| model | ⟨Euclid⟩ | ⟨cosine⟩ | RSE | k-score |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {cell(m['euclid'], '.2f')} | {cell(m['cosine'], '.4f')} | "
                     f"{cell(m['rse'], '.4f')} | {cell(m['k_score'], '.4f')} |")
    if report.get("recommended"):
        ranking = report.get("validation_rse") or {}
        changed = report.get("day_change_rse") or {}
        lines += ["", f"Recommended model: **{report['recommended']}** (the lowest RSE on the validation map; "
                  f"linear baselines within {100 * TIE_TOLERANCE:g} % of each other told apart by their RSE on it "
                  "under a simulated day change)"]
        live = report.get("live_model")
        if live and live != report["recommended"]:
            lines += ["", f"`export` and `predict` run **{live}**: {report['recommended']} is not exportable, and "
                      f"{live} is the one the same rule picks among the exportable models."]
        if ranking:
            lines += ["", "| model | validation RSE | under the day change |", "|---|---:|---:|"]
            lines += [f"| {name} | {cell(value, '.4f')} | "
                      f"{'–' if changed.get(name) is None else format(changed[name], '.4f')} |"
                      for name, value in sorted(ranking.items(), key=lambda kv: kv[1] if kv[1] is not None else 1e300)]
    shifts = report.get("apparent_shift_px") or {}
    if shifts:
        lines += ["", "Lines against where the model saw them (pixels, + towards the red; from 0.25 px on, "
                  "the spectrometer's wavelength axis wants calibrating on the day): "
                  + ", ".join(f"{system} {cell(shift, '+.2f')}" for system, shift in shifts.items())]
        aligned = {system: done for system, done in (report.get("line_alignment") or {}).items()
                   if done and done.get("aligned")}
        if aligned:
            lines += ["", "Aligned from the map's own lines before every model was scored (shift at the centre, "
                      "and more at the red end): " + ", ".join(
                          f"{system} {done['shift_px']:+.2f} / {done['stretch_px']:+.2f} px"
                          for system, done in aligned.items())]
    lines += ["", "Euclid and cosine are averaged over all spectra; cosine is the negative "
              "cosine similarity (-1 best); RSE is relative to the mean spectrum of the "
              "evaluated set (1 = naive baseline).", ""]
    if report["notes"]:
        lines += ["## Notes", "", report["notes"], ""]
    if report["figures"]:
        lines += ["## Figures", "", f"Maps and spectra of **{report['featured_model']}**"
                  + (" (the model export and predict run)." if report.get("live_model") == report["featured_model"]
                     else "."), ""]
        captions = {"emissivity": "Total emissivity, original vs transferred",
                    "errors": "Euclidean and cosine error maps",
                    "clusters": "k-means labels with misclustered spots",
                    "spectra": "Representative spectra per group",
                    "loss": "Training loss curves"}
        for key, name in report["figures"].items():
            lines += [f"### {captions.get(key, key)}", "", f"![{key}]({name})", ""]
    return "\n".join(lines)
