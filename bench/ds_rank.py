"""How far DS's map can be reduced in rank before it transfers worse: prints ONE JSON object.

DS maps a scaled secondary spectrum to a scaled primary one through one 3872 x 4062 matrix
C (at the paper's sizes); read whole for every batch, it made single spectra cost 4-9 ms
through DS's live graph. `train` therefore fits DS of rank 64 by default (baselines.ds_rank;
transfer.baselines.DSTransfer: C V V^T, V the leading principal axes of the training fit,
kept as two factors), which costs k (n_secondary + n_primary) multiply-adds instead of
n_secondary n_primary. This fits DS as `train` and the suite do (its ridge chosen on the
validation map under the simulated day change, at the configured rank), then refits it with
that ridge at every rank below and whole, and scores each on the suite scenario's other-day
test map against the whole DS of the same run. `--truncate` also scores the plain truncated
SVD of the whole matrix at each rank (what was measured before the reduced rank was built).

Run: nice python bench/ds_rank.py --work /tmp/suite-maps --scenario basalt [--scenario ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.transfer_suite import SCENARIOS, prepare_maps, suite_config  # noqa: E402
from transfer.config import TransferConfig  # noqa: E402
from transfer.metrics import rse  # noqa: E402
from transfer.selection import choose_on_validation, selection_inputs, validation_grid  # noqa: E402
from transfer.suite import load_maps, models_from_config  # noqa: E402

RANKS = (16, 32, 64, 128)


@dataclass
class QuickScenario:
    """A suite scenario's quick maps, preprocessed, with DS fitted as `train` fits it."""
    config: TransferConfig
    maps: dict
    unscale: Callable
    zero: np.ndarray
    train: tuple
    val: tuple
    prototypes: dict
    ds: object
    paths: dict


def quick_scenario(name: str, work: Path, seed: int = 0) -> QuickScenario:
    config = suite_config(None, quick=True, max_epochs=None)
    paths = SCENARIOS[name](work, True)
    maps = load_maps(paths["train"], paths["val"], paths["test"], config, seed=seed)
    arrays, prep = maps["arrays"], maps["preprocessors"]
    unscale, zero = prep["primary"].inverse_transform, prep["secondary"].scaled_zero()
    train = (arrays["train"]["secondary"], arrays["train"]["primary"])
    val = (arrays["val"]["secondary"], arrays["val"]["primary"])
    prototypes = models_from_config(config, maps["wavelengths"], seed=seed)
    ds = choose_on_validation(prototypes["ds"], validation_grid("ds", config["baselines"]), train, val,
                              unscale=unscale,
                              selection_inputs=selection_inputs(config["baselines"], val[0], zero)).estimator
    return QuickScenario(config, maps, unscale, zero, train, val, prototypes, ds, paths)


def ranks(name: str, work: Path, seed: int = 0, truncate: bool = False) -> dict:
    q = quick_scenario(name, work, seed)
    unscale, train = q.unscale, q.train
    test = q.maps["arrays"]["test"]["secondary"].astype(np.float64)
    truth = unscale(q.maps["arrays"]["test"]["primary"]).astype(np.float64)

    def score(predicted: np.ndarray) -> float:
        return round(rse(truth, unscale(predicted.astype(np.float32)).astype(np.float64)), 5)

    whole = clone(q.ds).set_params(rank=None).fit(*train)
    full = score(whole.predict(test))
    by_rank = {k: score(clone(q.ds).set_params(rank=k).fit(*train).predict(test)) for k in RANKS}
    n_secondary, n_primary = whole.n_secondary_, whole.n_primary_
    result = {"n_train": int(len(train[0])), "alpha": float(q.ds.alpha), "configured_rank": q.ds.rank,
              "full_rse": full, "rank_rse": by_rank, "rank_over_full": {k: round(v / full, 4) for k, v in by_rank.items()},
              "multiply_adds_over_full": {k: round(k * (n_secondary + n_primary) / (n_secondary * n_primary), 4)
                                          for k in by_rank}}
    if truncate:
        coef, intercept = whole.coef_, whole.intercept_
        u, s, vt = np.linalg.svd(coef, full_matrices=False)
        result["truncated_svd_over_full"] = {
            k: round(score(test @ ((u[:, :k] * s[:k]) @ vt[:k]) + intercept) / full, 4) for k in RANKS}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the suite's map directory (maps written if missing)")
    parser.add_argument("--scenario", action="append", required=True, choices=sorted(SCENARIOS), metavar="NAME")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncate", action="store_true",
                        help="also score the truncated SVD of the whole matrix at each rank (slow: a full SVD)")
    args = parser.parse_args(argv)
    _, stale = prepare_maps(args.scenario, args.work, quick=True)
    if stale:
        print(f"ds_rank: {stale}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = {name: ranks(name, args.work, args.seed, args.truncate) for name in args.scenario}
    print(json.dumps({"bench": "ds_rank", "seconds": round(time.perf_counter() - started, 1), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
