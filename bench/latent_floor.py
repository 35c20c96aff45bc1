"""How much of a test map any k-dimensional bottleneck fitted on the training map can represent.

The VAE + MLP can only output spectra its decoder can produce, so its transfer error on a
test map cannot go much below what the best *linear* k-dimensional subspace of the training
primary spectra leaves of the test primary spectra. For each k this prints two figures
(RSE in baseline-corrected counts, as `libs-transfer evaluate` reports them):

- ``projection``: the orthogonal projection in per-pixel scaled units, what a model trained
  with per-pixel scaling minimises. It weighs a noise-only pixel as much as a line;
- ``best_in_counts``: the point of the same subspace closest in counts, the real floor.

On the training day the two are close; on another day they are not (docs/transfer.md,
"Per-pixel or global scaling"), which is why per-pixel scaling transfers badly there.
Next to them: direct standardisation (DS, a linear map secondary -> primary with no
bottleneck) fitted on the same training spectra. The training statistics scale the test
map (causal protocol).

Prints one JSON object on stdout. Needs only the maps (no trained model).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from transfer.baselines import DSTransfer
from transfer.data import iter_raw_chunks
from transfer.metrics import rse
from transfer.preprocess import baseline_correct

EPILOG = """example (the scaled-down maps of docs/transfer.md):
  python bench/latent_floor.py train.h5 test.h5 --max-train 6000 --dims 16 64 256
"""


def load(path: str, max_spots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline-corrected (primary, secondary) of a seeded random subset of a paired map."""
    primary, secondary = [], []
    for _, _, _, spectra in iter_raw_chunks([path], ["primary", "secondary"], 4096):
        primary.append(spectra["primary"])
        secondary.append(spectra["secondary"])
    primary, secondary = np.concatenate(primary), np.concatenate(secondary)
    if len(primary) > max_spots:
        keep = np.sort(np.random.default_rng(seed).choice(len(primary), max_spots, replace=False))
        primary, secondary = primary[keep], secondary[keep]
    return baseline_correct(primary), baseline_correct(secondary)


def pca_floor(train: np.ndarray, others: dict[str, np.ndarray], dims: list[int]) -> dict[str, dict[str, dict]]:
    """RSE of each set on the leading `k` axes of the per-pixel scaled training set."""
    mean, scale = train.mean(axis=0), train.std(axis=0) + 1e-6
    _, _, axes = np.linalg.svd((train - mean) / scale, full_matrices=False)
    floors: dict[str, dict[str, dict]] = {name: {} for name in others}
    for k in dims:
        basis = axes[:k]
        in_counts = (basis * scale).T                 # [n_pixels, k]: the subspace in counts
        for name, spectra in others.items():
            scaled = (spectra - mean) / scale
            projection = (scaled @ basis.T @ basis) * scale + mean
            coefficients, *_ = np.linalg.lstsq(in_counts, (spectra - mean).T, rcond=None)
            floors[name][str(k)] = {"projection": round(rse(spectra, projection), 4),
                                    "best_in_counts": round(rse(spectra, (in_counts @ coefficients).T + mean), 4)}
    return floors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", help="paired training map (day 0)")
    parser.add_argument("test", help="paired test map (another day)")
    parser.add_argument("--max-train", type=int, default=6000, help="training spectra used (default %(default)s)")
    parser.add_argument("--max-test", type=int, default=2000, help="test spectra used (default %(default)s)")
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--ds-alpha", type=float, default=None, help="DS ridge (default: DSTransfer's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train_p, train_s = load(args.train, args.max_train, args.seed)
    test_p, test_s = load(args.test, args.max_test, args.seed)
    if train_p.shape[0] <= max(args.dims):
        parser.error(f"{train_p.shape[0]} training spectra cannot give {max(args.dims)} dimensions")
    in_sample = train_p[: min(1500, len(train_p))]     # the training day's own floor, for comparison
    floors = pca_floor(train_p, {"test": test_p, "train_in_sample": in_sample}, args.dims)
    ds = DSTransfer() if args.ds_alpha is None else DSTransfer(alpha=args.ds_alpha)
    ds.fit(train_s, train_p)
    result = {"bench": "latent_floor", "train": args.train, "test": args.test,
              "n_train": int(train_p.shape[0]), "n_test": int(test_p.shape[0]),
              "pca_floor_rse": floors,
              "ds_rse": {"test": round(rse(test_p, ds.predict(test_s)), 4)}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
