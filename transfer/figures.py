"""PNG figures of an evaluation report (matplotlib, Agg canvas, no pyplot state).

Each function writes one file and returns its path. Maps are [ny, nx] arrays with
NaN where no spot was evaluated; colour limits are the Q0.01-Q0.99 quantiles and
values beyond them take the end colours, as in Vrábel et al. 2023 (Figs 7-8).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

QUANTILES = (0.01, 0.99)


def quantile_limits(*maps: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.quantile(values, QUANTILES)
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def _map_axes(ax, image, *, cmap, limits, title, marks=None):
    shown = ax.imshow(image, origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1],
                      interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x index")
    ax.set_ylabel("y index")
    for label, (iy, ix), color in marks or ():
        ax.plot(ix, iy, marker="o", markersize=7, markerfacecolor="none", markeredgecolor=color,
                markeredgewidth=1.5)
        ax.annotate(label, (ix, iy), xytext=(4, 4), textcoords="offset points", color=color, fontsize=7)
    return shown


def emissivity_figure(path: Path, original: np.ndarray, transferred: np.ndarray, *,
                      model: str, marks=None) -> Path:
    """Total emission maps, original vs transferred, on one shared clipped scale."""
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    limits = quantile_limits(original, transferred)
    axes = fig.subplots(1, 2)
    for ax, image, title in ((axes[0], original, "original primary"),
                             (axes[1], transferred, f"transferred ({model})")):
        shown = _map_axes(ax, image, cmap="viridis", limits=limits, title=title, marks=marks)
    fig.colorbar(shown, ax=axes, label="total emission (counts)", extend="both")
    fig.suptitle("Total emissivity, Q0.01-Q0.99 clipped")
    return _save(fig, path)


def error_figure(path: Path, euclid: np.ndarray, cosine: np.ndarray, *, model: str) -> Path:
    """Spatial distribution of the Euclidean and cosine distances."""
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, image, title, cmap in ((axes[0], euclid, "Euclidean distance", "magma"),
                                   (axes[1], cosine, "cosine distance (-1 best)", "magma")):
        shown = _map_axes(ax, image, cmap=cmap, limits=quantile_limits(image), title=title)
        fig.colorbar(shown, ax=ax, extend="both", shrink=0.85)
    fig.suptitle(f"Transfer error of {model}, Q0.01-Q0.99 clipped")
    return _save(fig, path)


def cluster_figure(path: Path, labels_true: np.ndarray, labels_pred: np.ndarray, *,
                   model: str, k: int) -> Path:
    """k-means labels of the original spectra, misclustered transferred spots in red."""
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    labels = np.where(labels_true >= 0, labels_true, np.nan)
    palette = ListedColormap(np.array([[0.55, 0.63, 0.80], [0.99, 0.80, 0.43], [0.40, 0.76, 0.65],
                                       [0.91, 0.54, 0.76], [0.65, 0.85, 0.33], [0.90, 0.77, 0.58],
                                       [0.70, 0.70, 0.70], [0.55, 0.83, 0.78], [0.75, 0.73, 0.85],
                                       [0.99, 0.71, 0.38]])[np.arange(max(k, 1)) % 10])
    shown = ax.imshow(labels, origin="lower", cmap=palette, vmin=-0.5, vmax=max(k, 1) - 0.5,
                      interpolation="nearest")
    wrong = (labels_true >= 0) & (labels_pred >= 0) & (labels_true != labels_pred)
    overlay = np.zeros(wrong.shape + (4,))
    overlay[wrong] = (0.85, 0.0, 0.0, 1.0)
    ax.imshow(overlay, origin="lower", interpolation="nearest")
    fig.colorbar(shown, ax=ax, ticks=range(k), label="k-means label (original)")
    ax.set_title(f"k-means labels (k={k}); red: changed by {model} ({int(wrong.sum())} spots)", fontsize=9)
    ax.set_xlabel("x index")
    ax.set_ylabel("y index")
    return _save(fig, path)


def spectra_figure(path: Path, wavelengths: np.ndarray, examples: Sequence[Mapping], *,
                   model: str) -> Path:
    """One panel per group: original and transferred spectrum of a representative spot."""
    n = max(len(examples), 1)
    fig = Figure(figsize=(10, 2.4 * n + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True))
    for ax, example in zip(axes, examples):
        ax.plot(wavelengths, example["true"], lw=0.7, color="black", label="original")
        ax.plot(wavelengths, example["predicted"][model], lw=0.7, color="tab:red", alpha=0.8,
                label=f"transferred ({model})")
        ax.set_title(f"{example['group']} - spot (iy={example['iy']}, ix={example['ix']})", fontsize=9)
        ax.set_ylabel("counts")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("wavelength (nm)")
    return _save(fig, path)


def loss_figure(path: Path, loss_history: Mapping[str, Mapping[str, Sequence[float]]]) -> Path:
    """One panel per training stage, one line per curve (e.g. train / val)."""
    stages = list(loss_history)
    fig = Figure(figsize=(5 * max(len(stages), 1), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(stages), 1)))
    for ax, stage in zip(axes, stages):
        positive = True
        for name, values in loss_history[stage].items():
            values = np.asarray(values, dtype=np.float64)
            ax.plot(np.arange(1, values.size + 1), values, label=name)
            positive &= bool(np.all(values[np.isfinite(values)] > 0))
        if positive:
            ax.set_yscale("log")
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    return _save(fig, path)
