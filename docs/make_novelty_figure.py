"""Does the novelty output of the exported model track the real transfer error?

Makes novelty.png and novelty.json in --out (docs/figures holds the ones that
docs/novelty.md shows and quotes) from simulated maps:

- a model trained on day 0 on spots without garnet or beryl (those spots are
  left unacquired in the training and validation maps, so both phases are new
  to the model),
- exported with `libs-transfer export` (the bundle's novelty statistics, fitted
  on the training map),
- run with ONNX Runtime on a test map of day 1 at another region (with garnet and
  beryl grains) and on the same region measured on day 3 (another day's drift).

The transfer error of each spectrum is measured against its own primary
spectrum (baseline corrected): the mean squared error in the model's scaled
primary units (what the networks were trained to minimise) and the Euclidean
distance in counts (the paper's metric).

Example:
    .venv/bin/python docs/make_novelty_figure.py --out novelty-figures   # about 2 minutes on 2 CPU cores
    .venv/bin/python docs/make_novelty_figure.py --workdir /tmp/novelty --out docs/figures   # replace the documented ones
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.store import MapLayout, PairedMapReader, PairedMapWriter  # noqa: E402
from sim.generate import generate_map  # noqa: E402
from sim.sample import BERYL, GARNET, PHASE_NAMES  # noqa: E402
from acquisition.shared.systems import SYSTEM_NAMES  # noqa: E402
from sim.scene import PairedScene  # noqa: E402

log = logging.getLogger("make_novelty_figure")
STEP_UM = 80.0
ABSENT = (GARNET, BERYL)
CONFIG = {   # well below the paper's sizes and epochs, to run on a laptop CPU in minutes
    "vae": {"hidden": [256, 128], "latent": 64, "epochs": 30, "batch_size": 64, "learning_rate": 5e-4},
    "mlp": {"hidden": [128, 256], "epochs": 60, "batch_size": 64, "learning_rate": 1e-3, "patience": 8},
    "finetune": {"epochs": 0},
    "one_step": {"enabled": False},
    "baselines": {"models": []},
    "kmeans": {"k_candidates": [3, 4, 5, 6, 7, 8], "silhouette_spots": 600, "max_fit_spots": 3000},
}
GROUPS = {   # name -> (map, which spots), in drawing order
    "day 1, training phases": ("day1", "known"),
    "day 1, garnet or beryl in the crater": ("day1", "absent"),
    "day 3, same region": ("day3", "all"),
}
COLOURS = ["#4f9dde", "#b33f40", "#f2a541"]


def write_map_without(path: Path, *, shape, origin_um, day: int, absent=ABSENT, seed: int = 0) -> Path:
    """A simulated paired map in which spots whose crater touches an `absent` phase stay unacquired."""
    scene = PairedScene(seed=seed, day=day)
    layout = MapLayout(tuple(shape), (STEP_UM, STEP_UM), "snake", origin_um)
    order = layout.visit_order()
    x, y = layout.x_um[order[:, 1]], layout.y_um[order[:, 0]]
    keep = scene.sample.spot_composition(x, y).phase_weights[:, list(absent)].sum(axis=1) == 0
    truth = {"phase_map": scene.sample.phase_at(*np.meshgrid(layout.x_um, layout.y_um)),
             "phase_names": list(PHASE_NAMES), "attrs": {"left_out": [PHASE_NAMES[p] for p in absent]}}
    rng = np.random.default_rng([seed, day, 17])
    with PairedMapWriter.create(path, layout, {s: scene.wavelengths(s) for s in SYSTEM_NAMES}, title=path.stem,
                                sample_name=f"synthetic pegmatite (seed {seed})", sample_truth=truth) as writer:
        kept = np.flatnonzero(keep)
        for start in tqdm(range(0, kept.size, 512), desc=f"simulating {path.name}", unit="chunk"):
            index = kept[start:start + 512]
            spectra = scene.shots(x[index], y[index], rng=rng)
            writer.write_spots(order[index, 0], order[index, 1], spectra, index, 1.65e9 + index / 50.0,
                               np.stack([x[index], y[index]], axis=1))
        writer.finish()
    log.info("%s: %d of %d spots (the rest touch %s)", path.name, kept.size, keep.size,
             " or ".join(PHASE_NAMES[p] for p in absent))
    return path


def make_maps(workdir: Path) -> dict[str, Path]:
    maps = {"train": workdir / "train.h5", "val": workdir / "val.h5", "day1": workdir / "day1.h5",
            "day3": workdir / "day3.h5"}
    if not maps["train"].exists():
        write_map_without(maps["train"], shape=(48, 48), origin_um=(0.0, 0.0), day=0)
    if not maps["val"].exists():
        write_map_without(maps["val"], shape=(16, 48), origin_um=(0.0, 4000.0), day=0)
    for name, day in (("day1", 1), ("day3", 3)):
        if not maps[name].exists():
            generate_map(maps[name], shape=(30, 30), step_um=STEP_UM, day=day, seed=0, origin_um=(6000.0, 6000.0))
    return maps


class LatentZScore:
    """The alternative compared in docs/novelty.md: root-mean-square z-score of the MLP's
    latent against the training latents, 1.0 at the 99th percentile of the training spectra."""

    def __init__(self, training_latents: np.ndarray):
        self.mean = training_latents.mean(axis=0)
        self.std = training_latents.std(axis=0) + 1e-6
        self.reference = 1.0
        self.reference = float(np.quantile(self(training_latents), 0.99))

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        z = (latents - self.mean) / self.std
        return np.sqrt(np.mean(z * z, axis=1)) / self.reference


def evaluate(maps: dict[str, Path], bundle, model_path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per test map: novelty (ONNX), the latent z-score, errors, absent-phase flag."""
    import onnxruntime as ort
    from transfer.predict import Transferer
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    transferer = Transferer(bundle)
    latent_z = LatentZScore(transferer.transfer(_raw_secondary(maps["train"]))["latent"])
    primary = bundle.primary_preprocess
    scale = primary.scaler.scale_
    sample = PairedScene(seed=0, day=0).sample
    results = {"train": {"novelty": session.run(["novelty"], {"secondary": _raw_secondary(maps["train"])})[0]}}
    for name in ("day1", "day3"):
        with PairedMapReader(maps[name]) as reader:
            chunk = reader.read_all()
            x, y = reader.layout.x_um[chunk.ix], reader.layout.y_um[chunk.iy]
        raw_secondary = np.asarray(chunk.spectra["secondary"], dtype=np.float32)
        out = dict(zip(("primary", "novelty"), session.run(["primary", "novelty"], {"secondary": raw_secondary})))
        truth = primary.correct(np.asarray(chunk.spectra["primary"], dtype=np.float32))
        difference = out["primary"].astype(np.float64) - truth
        weights = sample.spot_composition(x, y).phase_weights
        results[name] = {
            "novelty": out["novelty"], "latent_z": latent_z(transferer.transfer(raw_secondary)["latent"]),
            "mse_scaled": np.mean((difference / scale) ** 2, axis=1),
            "euclid": np.linalg.norm(difference, axis=1),
            "absent": weights[:, list(ABSENT)].sum(axis=1) > 0,
        }
    return results


def _raw_secondary(path: Path) -> np.ndarray:
    with PairedMapReader(path) as reader:
        return np.asarray(reader.read_all(systems=["secondary"]).spectra["secondary"], dtype=np.float32)


def group_rows(results) -> dict[str, np.ndarray]:
    rows = {}
    for group, (name, which) in GROUPS.items():
        r = results[name]
        rows[group] = {"all": np.ones_like(r["absent"]), "known": ~r["absent"], "absent": r["absent"]}[which]
    return rows


def summary(results) -> dict:
    rho = lambda a, b: round(float(spearmanr(a, b)[0]), 3)  # noqa: E731
    out = {"groups": {}, "pooled": {}}
    for group, mask in group_rows(results).items():
        r = results[GROUPS[group][0]]
        out["groups"][group] = {
            "n": int(mask.sum()),
            "median_novelty": round(float(np.median(r["novelty"][mask])), 3),
            "fraction_novelty_above_1_5": round(float(np.mean(r["novelty"][mask] > 1.5)), 3),
            "fraction_novelty_above_3": round(float(np.mean(r["novelty"][mask] > 3)), 3),
            "novelty_p5_p95": [round(float(v), 2) for v in np.percentile(r["novelty"][mask], [5, 95])],
            "median_mse_scaled": round(float(np.median(r["mse_scaled"][mask])), 3),
            "median_euclid": round(float(np.median(r["euclid"][mask])), 1),
            "rho_novelty_mse": rho(r["novelty"][mask], r["mse_scaled"][mask]),
            "rho_novelty_euclid": rho(r["novelty"][mask], r["euclid"][mask]),
        }
    pooled = {key: np.concatenate([results[n][key] for n in ("day1", "day3")])
              for key in ("novelty", "latent_z", "mse_scaled", "euclid")}
    training = results["train"]["novelty"]
    out["training_spectra"] = {"n": int(training.size), "median_novelty": round(float(np.median(training)), 3),
                               "fraction_novelty_above_1_5": round(float(np.mean(training > 1.5)), 3),
                               "fraction_novelty_above_3": round(float(np.mean(training > 3)), 3),
                               "novelty_p5_p95": [round(float(v), 2) for v in np.percentile(training, [5, 95])]}
    out["pooled"] = {"n": int(pooled["novelty"].size),
                     "rho_novelty_mse": rho(pooled["novelty"], pooled["mse_scaled"]),
                     "rho_novelty_euclid": rho(pooled["novelty"], pooled["euclid"]),
                     "rho_latent_z_mse": rho(pooled["latent_z"], pooled["mse_scaled"]),
                     "rho_latent_z_euclid": rho(pooled["latent_z"], pooled["euclid"])}
    return out


def figure(results, numbers: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for (group, mask), colour in zip(group_rows(results).items(), COLOURS):
        r = results[GROUPS[group][0]]
        stats = numbers["groups"][group]
        for ax, key, rho_key in ((axes[0], "mse_scaled", "rho_novelty_mse"), (axes[1], "euclid", "rho_novelty_euclid")):
            ax.scatter(r["novelty"][mask], r[key][mask], s=9, alpha=0.6, color=colour, linewidths=0,
                       label=f"{group} (n={stats['n']}, ρ={stats[rho_key]:+.2f})")
    pooled = numbers["pooled"]
    axes[0].set_ylabel("transfer error: MSE in scaled primary units")
    axes[1].set_ylabel("transfer error: Euclidean distance (counts)")
    for ax, key in ((axes[0], "rho_novelty_mse"), (axes[1], "rho_novelty_euclid")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("novelty (exported model; 1 = typical training spectrum)")
        ax.set_title(f"all test spectra: Spearman ρ = {pooled[key]:+.2f}")
        ax.legend(fontsize=8, loc="upper left", markerscale=2)
    fig.suptitle("Novelty vs. actual transfer error; model trained on day 0 without garnet and beryl")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  .venv/bin/python docs/make_novelty_figure.py --workdir /tmp/novelty")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for novelty.png and novelty.json (created if missing); docs/figures, "
                             "which is tracked, only when you mean to replace the documented figures")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep maps and model here and reuse them on the next run (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from transfer.bundle import load_bundle
    from transfer.config import TransferConfig
    from transfer.export import export_model
    from transfer.pipeline import train_model
    with tempfile.TemporaryDirectory(prefix="novelty-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        maps = make_maps(workdir)
        model_dir = workdir / "model"
        if (model_dir / "bundle.json").exists():
            bundle = load_bundle(model_dir)
        else:
            bundle = train_model(maps["train"], maps["val"], model_dir, config=TransferConfig(CONFIG), device="cpu",
                                 seed=0)
        exported = export_model(bundle, workdir / "model.onnx")
        results = evaluate(maps, bundle, exported.path)
    numbers = summary(results)
    numbers["model"] = {"model_id": exported.model_id, "novelty": exported.novelty, "config": CONFIG}
    args.out.mkdir(parents=True, exist_ok=True)
    figure(results, numbers, args.out / "novelty.png")
    (args.out / "novelty.json").write_text(json.dumps(numbers, indent=2) + "\n", "utf-8")
    print(json.dumps({key: value for key, value in numbers.items() if key != "model"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
