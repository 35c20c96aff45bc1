"""Do the novelty and trust outputs of the exported model track the relative transfer error?

Makes novelty.png and novelty.json in --out (docs/figures holds the ones that
docs/novelty.md shows and quotes) from simulated maps:

- a model trained on day 0 on spots without garnet or beryl (those spots are
  left unacquired in the training and validation maps, so both phases are new
  to the model);
- its trust score calibrated once on the validation map (what training does) and
  once on a held-out map of another day, region and sample realisation
  (`libs-transfer calibrate`), then exported (`libs-transfer export`);
- run with ONNX Runtime on six test scenarios: another region of day 0, days 1 to 4 at
  other regions, two of them on other realisations of the simulated pegmatite (sample
  seeds 1 and 2); every test map but one holds garnet or beryl grains;
- the same trust score (transfer.trust, numpy) for PLS and DS fitted on the
  training map, calibrated on the same held-out map;
- the other candidates of docs/novelty.md for the VAE+MLP: the novelty output, the
  shape residual alone, the latent Mahalanobis distance, and the disagreement between
  the MLP's latent and the VAE encoder's latent of the transferred spectrum.

The error of each spectrum is measured against its own primary spectrum (baseline
corrected): relative error ||transferred - measured|| / ||measured|| and absolute
(Euclidean) error in counts.

Example:
    .venv/bin/python docs/make_novelty_figure.py --workdir /tmp/novelty --out novelty-figures
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
#: name -> (day, sample seed, origin in µm); 30 x 30 maps at 80 µm
CALIBRATION = ("calibration: day 5, sample 3", 5, 3, (15000.0, 15000.0))
SCENARIOS = {
    "day 0, region C": (0, 0, (2000.0, 8000.0)),
    "day 1, region A": (1, 0, (6000.0, 6000.0)),
    "day 3, region A": (3, 0, (6000.0, 6000.0)),
    "day 2, region B": (2, 0, (12000.0, 2000.0)),
    "day 1, sample 1": (1, 1, (3000.0, 9000.0)),
    "day 4, sample 2": (4, 2, (9000.0, 12000.0)),
}
MODELS = ("vae_mlp", "pls", "ds")
COLOURS = ["#4f9dde", "#b33f40", "#f2a541", "#5a9e6f", "#8e6bb8", "#444444"]


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


def _file_name(name: str) -> str:
    return name.split(":")[0].replace(", ", "_").replace(" ", "") + ".h5"


def make_maps(workdir: Path) -> dict[str, Path]:
    maps = {"train": workdir / "train.h5", "val": workdir / "val.h5"}
    if not maps["train"].exists():
        write_map_without(maps["train"], shape=(48, 48), origin_um=(0.0, 0.0), day=0)
    if not maps["val"].exists():
        write_map_without(maps["val"], shape=(16, 48), origin_um=(0.0, 4000.0), day=0)
    name, *settings = CALIBRATION
    for key, (day, seed, origin) in [("calibration", settings), *SCENARIOS.items()]:
        path = workdir / _file_name(key)
        if not path.exists():
            generate_map(path, shape=(30, 30), step_um=STEP_UM, day=day, seed=seed, origin_um=origin)
        maps[key] = path
    return maps


def read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with PairedMapReader(path) as reader:
        chunk = reader.read_all()
    return (np.asarray(chunk.spectra["secondary"], np.float32), np.asarray(chunk.spectra["primary"], np.float32))


class Candidates:
    """The VAE+MLP-only alternatives to the trust score, computed in numpy/torch."""

    def __init__(self, bundle, transferer, train_raw: np.ndarray):
        latents = transferer.transfer(train_raw)["latent"].astype(np.float64)
        self.mean = latents.mean(axis=0)
        self.inverse_covariance = np.linalg.inv(np.cov(latents.T) + 1e-6 * np.eye(latents.shape[1]))
        self.vae = bundle.vae.eval()
        self.primary = bundle.primary_preprocess
        # the earlier trust score's shape feature: 16 principal axes of the intensity-normalised
        # corrected training spectra
        from sklearn.utils.extmath import randomized_svd
        unit = self._unit(bundle.secondary().preprocess.correct(train_raw))
        self.shape_mean = unit.mean(axis=0)
        self.shape_axes = randomized_svd(unit - self.shape_mean, 16, n_iter=7, random_state=0)[2]

    @staticmethod
    def _unit(corrected: np.ndarray) -> np.ndarray:
        corrected = np.asarray(corrected, np.float64)
        return corrected / np.maximum(np.linalg.norm(corrected, axis=1, keepdims=True), 1e-6)

    def shape_residual(self, corrected: np.ndarray) -> np.ndarray:
        d = self._unit(corrected) - self.shape_mean
        return np.linalg.norm(d - (d @ self.shape_axes.T) @ self.shape_axes, axis=1)

    def latent_mahalanobis(self, latent: np.ndarray) -> np.ndarray:
        d = latent.astype(np.float64) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", d, self.inverse_covariance, d))

    def encoder_disagreement(self, latent: np.ndarray, primary_counts: np.ndarray) -> np.ndarray:
        import torch
        with torch.no_grad():
            mu, _ = self.vae.encode(torch.from_numpy(np.asarray(self.primary.transform(primary_counts), np.float32)))
        return np.linalg.norm(mu.numpy() - latent, axis=1)


def linear_baselines(bundle, train: Path) -> dict:
    """PLS and DS fitted on the training map (scaled with the bundle's statistics)."""
    from transfer.baselines import DSTransfer, PLSTransfer
    secondary_raw, primary_raw = read_pairs(train)
    system = bundle.secondary()
    xs = system.preprocess.transform(secondary_raw)
    xp = bundle.primary_preprocess.transform(primary_raw)
    return {"pls": PLSTransfer(16).fit(xs, xp), "ds": DSTransfer(alpha=1e-2).fit(xs, xp)}


def statistics(score, expected, relative, absolute, intensity) -> dict:
    """The figures of docs/novelty.md for one score on one scenario."""
    rho = lambda a, b: round(float(spearmanr(a, b)[0]), 3)  # noqa: E731
    deciles = np.quantile(intensity, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(deciles, intensity, side="right") - 1, 0, 9)
    within = [float(spearmanr(score[which == d], relative[which == d])[0]) for d in range(10)]
    top = score >= np.quantile(score, 0.95)
    out = {"rho_relative": rho(score, relative), "rho_absolute": rho(score, absolute),
           "rho_intensity": rho(score, intensity),
           "rho_relative_within_intensity_deciles": [round(v, 2) for v in within],
           "rho_within_deciles_median": round(float(np.median(within)), 3),
           "top5_mean_relative_error": round(float(np.mean(relative[top])), 4),
           "median_relative_error": round(float(np.median(relative)), 4),
           "top5_over_median": round(float(np.mean(relative[top]) / np.median(relative)), 2)}
    if expected is not None:
        edges = np.quantile(score, np.linspace(0, 1, 11))
        bins = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, 9)
        predicted = [float(np.mean(expected[bins == d])) for d in range(10)]
        observed = [float(np.mean(relative[bins == d])) for d in range(10)]
        out["reliability"] = {"predicted": [round(v, 4) for v in predicted], "observed": [round(v, 4) for v in observed]}
        ratios = np.array(predicted) / np.array(observed)
        out["deciles_within_30_percent"] = int(np.sum(np.abs(ratios - 1) <= 0.3))
        out["mean_predicted_over_observed"] = round(float(np.mean(expected) / np.mean(relative)), 3)
    return out


def evaluate(maps, bundle, sessions: dict, trusts: dict) -> dict:
    """Per scenario and model: every score against the errors of every spectrum."""
    from transfer.predict import Transferer
    from transfer.trust import relative_error
    transferer = Transferer(bundle)
    system = bundle.secondary()
    primary = bundle.primary_preprocess
    candidates = Candidates(bundle, transferer, read_pairs(maps["train"])[0])
    baselines = linear_baselines(bundle, maps["train"])
    results = {}
    for name in SCENARIOS:
        secondary_raw, primary_raw = read_pairs(maps[name])
        truth = primary.correct(primary_raw)
        corrected = system.preprocess.correct(secondary_raw)
        intensity = np.linalg.norm(corrected, axis=1)
        outputs = {}
        for calibration, session in sessions.items():
            names = [o.name for o in session.get_outputs()]
            outputs[calibration] = dict(zip(names, session.run(names, {"secondary": secondary_raw})))
        live = outputs["held-out day"]
        scaled = transferer.scaled_input(secondary_raw)
        predictions = {"vae_mlp": live["primary"]}
        for model, baseline in baselines.items():
            predictions[model] = np.asarray(primary.inverse_transform(baseline.predict(scaled)), np.float32)
        per_model = {}
        for model, predicted in predictions.items():
            relative = relative_error(predicted, truth)
            absolute = np.linalg.norm(predicted.astype(np.float64) - truth, axis=1)
            scores = {}
            if model == "vae_mlp":
                for calibration, out in outputs.items():
                    expected = out["expected_rel_error"]
                    scores[f"trust ({calibration} calibration)"] = (expected, expected)
                scores["novelty (pca residual, scaled input)"] = (live["novelty"], None)
                scores["shape residual alone"] = (candidates.shape_residual(corrected), None)
                scores["latent Mahalanobis distance"] = (candidates.latent_mahalanobis(live["latent"]), None)
                scores["encoder latent of the transfer vs MLP latent"] = (
                    candidates.encoder_disagreement(live["latent"], predicted), None)
            else:
                for calibration, per in trusts.items():
                    expected = per[model].expected_relative_error(corrected, predicted)
                    scores[f"trust ({calibration} calibration)"] = (expected, expected)
            per_model[model] = {"n": int(len(relative)),
                                "scores": {key: statistics(s, e, relative, absolute, intensity)
                                           for key, (s, e) in scores.items()},
                                "flagged": round(float(np.mean(scores["trust (held-out day calibration)"][0]
                                                               > trusts["held-out day"][model].threshold_)), 3)}
            if model == "vae_mlp":
                per_model[model]["points"] = {"expected": live["expected_rel_error"], "relative": relative}
        results[name] = per_model
    return results


def calibrated_trusts(bundle, maps, baselines) -> dict:
    """The numpy trust score per model, calibrated on the validation or the held-out map."""
    import dataclasses

    from transfer.predict import Transferer
    system = bundle.secondary()
    primary = bundle.primary_preprocess
    transferer = Transferer(bundle)
    out = {}
    for calibration, key in (("validation", "val"), ("held-out day", "calibration")):
        secondary_raw, primary_raw = read_pairs(maps[key])
        corrected = system.preprocess.correct(secondary_raw)
        truth = primary.correct(primary_raw)
        scaled = transferer.scaled_input(secondary_raw)
        out[calibration] = {}
        for model in MODELS:
            predicted = (transferer.transfer(secondary_raw)["primary"] if model == "vae_mlp"
                         else primary.inverse_transform(baselines[model].predict(scaled)))
            out[calibration][model] = dataclasses.replace(system.trust).calibrate(corrected, predicted, truth)
    return out


def figure(results, numbers: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
    key = "trust (held-out day calibration)"
    for (name, per_model), colour in zip(results.items(), COLOURS):
        points = per_model["vae_mlp"]["points"]
        stats = numbers["scenarios"][name]["vae_mlp"]["scores"][key]
        axes[0].scatter(points["expected"], points["relative"], s=6, alpha=0.45, color=colour, linewidths=0,
                        label=f"{name} (ρ={stats['rho_relative']:+.2f})")
        reliability = stats["reliability"]
        axes[1].plot(reliability["predicted"], reliability["observed"], "o-", color=colour, ms=4, lw=1,
                     label=f"{name} ({stats['deciles_within_30_percent']}/10 deciles within ±30 %)")
        novelty = numbers["scenarios"][name]["vae_mlp"]["scores"]["novelty (pca residual, scaled input)"]
        axes[2].scatter([novelty["rho_relative"]], [stats["rho_relative"]], color=colour, s=40, label=name)
    lo, hi = 0.03, 2.0
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
        ax.set_xlabel("expected relative error (exported model, calibrated on a held-out day)")
        ax.set_ylabel("observed relative error")
        ax.legend(fontsize=7, loc="upper left", markerscale=2)
    axes[1].fill_between([lo, hi], [lo / 1.3, hi / 1.3], [lo / 0.7, hi / 0.7], color="0.85", zorder=0)
    axes[0].set_title("every test spectrum (VAE+MLP)")
    axes[1].set_title("reliability: mean per decile of the score (band: ±30 %)")
    axes[2].axhline(0.5, color="0.5", ls=":", lw=0.8)
    axes[2].axvline(0, color="0.5", lw=0.5)
    axes[2].axhline(0, color="0.5", lw=0.5)
    axes[2].set_xlim(-1, 1)
    axes[2].set_ylim(-1, 1)
    axes[2].set_xlabel("Spearman ρ(novelty, relative error)")
    axes[2].set_ylabel("Spearman ρ(expected_rel_error, relative error)")
    axes[2].set_title("per scenario: trust score vs the old novelty")
    axes[2].legend(fontsize=7, loc="lower right")
    fig.suptitle("Trust score vs the actual relative transfer error; model trained on day 0 without garnet and beryl")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  .venv/bin/python docs/make_novelty_figure.py --workdir /tmp/novelty --out novelty-figures")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for novelty.png and novelty.json (created if missing); docs/figures, "
                             "which is tracked, only when you mean to replace the documented figures")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep maps and model here and reuse them on the next run (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import onnxruntime as ort

    from transfer.bundle import load_bundle
    from transfer.calibrate import calibrate_bundle
    from transfer.config import TransferConfig
    from transfer.export import export_model
    from transfer.pipeline import train_model
    with tempfile.TemporaryDirectory(prefix="novelty-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        maps = make_maps(workdir)
        model_dir = workdir / "model"
        if not (model_dir / "bundle.json").exists():
            train_model(maps["train"], maps["val"], model_dir, config=TransferConfig(CONFIG), device="cpu", seed=0)
        # as trained: calibrated on the validation map (recalibrated here, in case the bundle predates it)
        calibrate_bundle(model_dir, maps["val"], progress=False)
        exported = {"validation": export_model(load_bundle(model_dir), workdir / "model_validation.onnx")}
        calibrate_bundle(model_dir, maps["calibration"], progress=False)
        bundle = load_bundle(model_dir)
        exported["held-out day"] = export_model(bundle, workdir / "model.onnx")
        sessions = {key: ort.InferenceSession(str(e.path), providers=["CPUExecutionProvider"])
                    for key, e in exported.items()}
        baselines = linear_baselines(bundle, maps["train"])
        trusts = calibrated_trusts(bundle, maps, baselines)
        results = evaluate(maps, bundle, sessions, trusts)
    numbers = {"scenarios": {name: {model: {k: v for k, v in per.items() if k != "points"}
                                    for model, per in per_model.items()} for name, per_model in results.items()},
               "calibration_map": {"name": CALIBRATION[0], "day": CALIBRATION[1], "sample_seed": CALIBRATION[2]},
               "thresholds": {calibration: {model: round(t.threshold_, 4) for model, t in per.items()}
                              for calibration, per in trusts.items()},
               "model": {"model_id": exported["held-out day"].model_id, "config": CONFIG,
                         "trust": bundle.secondary().trust.describe()}}
    args.out.mkdir(parents=True, exist_ok=True)
    figure(results, numbers, args.out / "novelty.png")
    (args.out / "novelty.json").write_text(json.dumps(numbers, indent=2) + "\n", "utf-8")
    print(json.dumps(summary_lines(numbers), indent=1))
    return 0


def summary_lines(numbers) -> dict:
    """One line per scenario, model and score: the figures the targets are about."""
    out = {}
    for name, per_model in numbers["scenarios"].items():
        for model, per in per_model.items():
            for score, s in per["scores"].items():
                out[f"{name} | {model} | {score}"] = (
                    f"rho_rel {s['rho_relative']:+.2f} rho_abs {s['rho_absolute']:+.2f} "
                    f"rho_int {s['rho_intensity']:+.2f} within {s['rho_within_deciles_median']:+.2f} "
                    f"top5/median {s['top5_over_median']:.2f}"
                    + (f" deciles_ok {s['deciles_within_30_percent']}/10" if "reliability" in s else ""))
    return out


if __name__ == "__main__":
    sys.exit(main())
