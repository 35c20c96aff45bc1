"""Figures for docs/simulation.md, written to docs/figures/.

Example:
    .venv/bin/python docs/make_simulation_figures.py            # about half a minute
    .venv/bin/python docs/make_simulation_figures.py --out /tmp/figs
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.store import PairedMapReader  # noqa: E402
from sim.generate import generate_map  # noqa: E402
from sim.sample import PHASE_NAMES  # noqa: E402
from acquisition.shared.systems import SYSTEM_NAMES  # noqa: E402
from sim.samples import RECIPES, make_sample  # noqa: E402
from sim.scene import PairedScene  # noqa: E402
from sim.spectrograph import SECONDARY_VARIANTS  # noqa: E402

log = logging.getLogger("make_simulation_figures")
PHASE_COLOURS = ["#c9c9c9", "#f2c14e", "#7fb069", "#b33f40", "#4f9dde", "#3d3b30", "#e07a5f"]
LABELLED_LINES = {
    "quartz": [("Si I", 288.16), ("Si I", 251.61)],
    "albite": [("Al I", 309.27), ("Na I", 330.24), ("Ca II", 393.37)],
    "muscovite": [("Al I", 396.15), ("Al I", 308.22), ("K I", 404.41)],
    "garnet": [("Mn II", 257.61), ("Mn I", 403.08), ("Fe II", 259.94), ("Ca II", 393.37)],
    "beryl": [("Be II", 313.04), ("Be I", 332.13)],
    "columbite": [("Nb II", 309.42), ("Nb II", 316.34), ("Mn II", 294.92)],
    "microlite": [("Ca II", 393.37), ("Ta II", 268.52), ("Ca II", 317.93)],
}


def pure_spots(scene: PairedScene, per_phase: int = 120):
    y, x = np.mgrid[0:400, 0:400] * 15.0
    x, y = x.ravel(), y.ravel()
    phase = scene.sample.phase_at(x, y)
    spots = {}
    for p, name in enumerate(PHASE_NAMES):
        idx = np.flatnonzero(phase == p)[::3][:3000]
        weights = scene.sample.spot_composition(x[idx], y[idx]).phase_weights[:, p]
        idx = idx[weights > 0.999][:per_phase]
        spots[name] = (x[idx], y[idx])
    return spots


def mean_spectra_figure(scene, spots, out: Path):
    fig, axes = plt.subplots(len(PHASE_NAMES), 2, figsize=(14, 16), sharex="col")
    rng = np.random.default_rng(1)
    for row, name in enumerate(PHASE_NAMES):
        shots = scene.shots(*spots[name], rng=rng)
        for col, system in enumerate(SYSTEM_NAMES):
            ax = axes[row, col]
            wavelengths = scene.wavelengths(system)
            mean = shots[system].mean(axis=0)
            ax.plot(wavelengths, mean, lw=0.6, color=PHASE_COLOURS[row] if row else "0.35")
            for label, line in LABELLED_LINES[name]:
                if wavelengths[0] < line < wavelengths[-1]:
                    i = int(np.argmin(np.abs(wavelengths - line)))
                    peak = mean[max(i - 2, 0):i + 3].max()
                    ax.annotate(f"{label} {line:.2f}", (line, peak), xytext=(3, 2), textcoords="offset points",
                                fontsize=7)
            ax.set_ylabel("counts")
            ax.set_title(f"{name}: {system} (mean of {len(spots[name][0])} shots, day 0)", fontsize=9)
            if name == "muscovite" and system == "primary":
                inset = ax.inset_axes([0.6, 0.45, 0.25, 0.45])
                sel = (wavelengths > 403.5) & (wavelengths < 405.5)
                inset.plot(wavelengths[sel], mean[sel], lw=0.8, color=PHASE_COLOURS[row])
                inset.set_title("K I 404.41 / 404.72", fontsize=7)
                inset.tick_params(labelsize=6)
    for col in range(2):
        axes[-1, col].set_xlabel("wavelength (nm, air)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def maps_figure(path: Path, out: Path):
    with PairedMapReader(path) as reader:
        truth = reader.sample_truth
        layout = reader.layout
        total = np.zeros(layout.shape)
        si = np.zeros(layout.shape)
        wavelengths = reader.wavelengths("primary")
        si_pixel = int(np.argmin(np.abs(wavelengths - 288.158)))
        for chunk in reader.iter_chunks(systems=["primary"]):
            spectra = chunk.spectra["primary"]
            total[chunk.iy, chunk.ix] = spectra.sum(axis=1)
            si[chunk.iy, chunk.ix] = spectra[:, si_pixel - 2:si_pixel + 3].sum(axis=1) \
                - 5 * np.median(spectra[:, si_pixel - 40:si_pixel - 10], axis=1)
    extent = [layout.x_um[0] / 1000, layout.x_um[-1] / 1000, layout.y_um[-1] / 1000, layout.y_um[0] / 1000]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    cmap = matplotlib.colors.ListedColormap(PHASE_COLOURS)
    image = axes[0].imshow(truth["phase_map"], cmap=cmap, vmin=-0.5, vmax=6.5, extent=extent, interpolation="nearest")
    bar = fig.colorbar(image, ax=axes[0], ticks=range(7))
    bar.ax.set_yticklabels(truth["phase_names"], fontsize=8)
    axes[0].set_title("ground truth: /entry/sample/phase_map")
    for ax, values, title in ((axes[1], total, "total emissivity (sum of primary counts)"),
                              (axes[2], si, "Si I 288.16 nm net line area (primary)")):
        lo, hi = np.quantile(values, [0.01, 0.99])
        image = ax.imshow(np.clip(values, lo, hi), cmap="viridis", extent=extent, interpolation="nearest")
        fig.colorbar(image, ax=ax)
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("x (mm)")
    axes[0].set_ylabel("y (mm)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def days_figure(spots, out: Path):
    """Like the paper's Fig. 5: mean primary spectra of two days over the same kind of spots."""
    x = np.concatenate([spots[n][0] for n in PHASE_NAMES])
    y = np.concatenate([spots[n][1] for n in PHASE_NAMES])
    fig, axes = plt.subplots(2, 1, figsize=(12, 7))
    for day, colour in ((0, "C0"), (1, "C3")):
        scene = PairedScene(seed=3, day=day)
        shots = scene.shots(x, y, rng=np.random.default_rng(2))
        for ax, system in zip(axes, SYSTEM_NAMES):
            ax.plot(scene.wavelengths(system), shots[system].mean(axis=0), lw=0.6, color=colour,
                    label=f"day {day}")
    for ax, system in zip(axes, SYSTEM_NAMES):
        ax.set_ylim(0, 4000)
        ax.set_ylabel("counts")
        ax.set_title(f"{system}: mean raw spectra on two days (clipped at 4000 to show the baseline)")
        ax.legend()
    axes[-1].set_xlabel("wavelength (nm, air)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def gates_figure(scene, spots, out: Path):
    x, y = spots["albite"]
    gates = {"0-100 ns": (0.0, 100e-9), "0.3-10.3 us": (0.3e-6, 10e-6), "1-11 us (default)": (1e-6, 10e-6),
             "5-15 us": (5e-6, 10e-6), "-20 to -10 us (before the pulse)": (-20e-6, 10e-6)}
    fig, ax = plt.subplots(figsize=(12, 5))
    wavelengths = scene.wavelengths("primary")
    for i, (label, gate) in enumerate(gates.items()):
        counts = scene.shots(x, y, gates={"primary": gate}, rng=np.random.default_rng(3))["primary"]
        ax.plot(wavelengths, counts.mean(axis=0), lw=0.6, label=label, color=f"C{i}")
    ax.set_yscale("log")
    ax.set_xlabel("wavelength (nm, air)")
    ax.set_ylabel("counts (log)")
    ax.set_title("albite, primary: gate delay and width decide between continuum and lines")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def instrument_figure(scene, out: Path):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for system in SYSTEM_NAMES:
        spectrograph = scene.spectrograph(system)
        wavelengths = spectrograph.wavelengths
        pixels = np.arange(wavelengths.size)
        dispersion = spectrograph.grating.dispersion(pixels)
        axes[0].plot(pixels, dispersion, label=system)
        axes[1].plot(wavelengths, spectrograph.instrument_fwhm_nm(wavelengths) / dispersion, label=system)
        axes[2].plot(wavelengths, spectrograph.response(wavelengths), label=system)
    axes[0].set(xlabel="pixel", ylabel="nm / pixel", title="Czerny-Turner dispersion")
    axes[1].set(xlabel="wavelength (nm)", ylabel="FWHM (pixels)", title="instrument function")
    axes[2].set(xlabel="wavelength (nm)", ylabel="relative", title="optics x grating x detector QE")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


#: map step and pure-spot grid step per sample (fine against the grain size)
SAMPLE_STEPS_UM = {"basalt": (20.0, 8.0), "granite": (60.0, 40.0), "slag": (15.0, 4.0)}


def samples_figure(out: Path):
    """Phase map and mean primary spectrum of pure spots of each phase, for each new sample."""
    fig, axes = plt.subplots(len(RECIPES), 2, figsize=(15, 4.2 * len(RECIPES)),
                             gridspec_kw={"width_ratios": [1, 3]})
    rng = np.random.default_rng(2)
    for row, name in enumerate(RECIPES):
        sample = make_sample(name, seed=3)
        scene = PairedScene(seed=3, sample=sample)
        map_step, grid_step = SAMPLE_STEPS_UM[name]
        y, x = np.mgrid[0:150, 0:150] * map_step
        phase_map = sample.phase_at(x, y)
        cmap = matplotlib.colors.ListedColormap(PHASE_COLOURS[:len(sample.phase_names)])
        axes[row, 0].imshow(phase_map, cmap=cmap, vmin=-0.5, vmax=len(sample.phase_names) - 0.5,
                            extent=(0, 150 * map_step / 1000, 150 * map_step / 1000, 0), interpolation="nearest")
        axes[row, 0].set_title(f"{name}: 150x150 at {map_step:g} um", fontsize=9)
        axes[row, 0].set_xlabel("x (mm)")
        y, x = np.mgrid[0:300, 0:300] * grid_step
        x, y = x.ravel(), y.ravel()
        phase = sample.phase_at(x, y)
        wavelengths = scene.wavelengths("primary")
        offset = 0.0
        for p, phase_name in enumerate(sample.phase_names):
            idx = np.flatnonzero(phase == p)[::2][:2000]
            idx = idx[sample.spot_composition(x[idx], y[idx]).phase_weights[:, p] > 0.999][:60]
            mean = scene.shots(x[idx], y[idx], rng=rng)["primary"].mean(axis=0)
            mean = mean - np.percentile(mean, 5)
            axes[row, 1].plot(wavelengths, mean + offset, lw=0.5, color=PHASE_COLOURS[p],
                              label=f"{phase_name} ({sample.recipe.modal[phase_name]:.0%})")
            offset += 0.6 * mean.max()
        axes[row, 1].legend(fontsize=7, loc="upper left")
        axes[row, 1].set_title(f"{sample.description}: mean primary spectra of pure spots (offset)", fontsize=9)
        axes[row, 1].set_yticks([])
    axes[-1, 1].set_xlabel("wavelength (nm, air)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def variants_figure(spots, out: Path):
    """The same quartz and albite shots seen by the three secondary variants."""
    x = np.concatenate([spots["quartz"][0], spots["albite"][0]])
    y = np.concatenate([spots["quartz"][1], spots["albite"][1]])
    fig, axes = plt.subplots(2, 1, figsize=(13, 7))
    for variant in SECONDARY_VARIANTS:
        scene = PairedScene(seed=3, secondary=variant)
        shots = scene.shots(x, y, rng=np.random.default_rng(4))["secondary"]
        wavelengths = scene.wavelengths("secondary")
        mean = shots.mean(axis=0) - np.percentile(shots.mean(axis=0), 5)
        axes[0].plot(wavelengths, mean, lw=0.5, label=variant)
        zoom = (wavelengths > 307.5) & (wavelengths < 310)
        axes[1].plot(wavelengths[zoom], mean[zoom] / mean[zoom].max(), lw=0.9, label=variant, marker=".", ms=2)
    axes[0].set_title("secondary variants, mean of the same quartz and albite shots (day 0)", fontsize=9)
    axes[1].set_title("Al I 308.22 / 309.27+309.28 nm, peak-normalised", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=8)
        ax.set_xlabel("wavelength (nm, air)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Draw the figures of docs/simulation.md.",
                                     epilog="example:\n  .venv/bin/python docs/make_simulation_figures.py",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    scene = PairedScene(seed=3, day=0)
    spots = pure_spots(scene)
    log.info("mean spectra per phase")
    mean_spectra_figure(scene, spots, args.out / "sim_mean_spectra.png")
    log.info("phase and emissivity maps (150 x 150 spots at 20 um, through the store)")
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_map(Path(tmp) / "map.h5", shape=(150, 150), step_um=20.0, seed=3, progress=True)
        maps_figure(path, args.out / "sim_maps.png")
    log.info("days, gates, instrument")
    days_figure(spots, args.out / "sim_days.png")
    gates_figure(scene, spots, args.out / "sim_gates.png")
    instrument_figure(scene, args.out / "sim_instrument.png")
    log.info("other samples, secondary variants")
    samples_figure(args.out / "sim_samples.png")
    variants_figure(spots, args.out / "sim_variants.png")
    log.info("figures written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
