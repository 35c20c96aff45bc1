"""How far DS's matrix can be reduced in rank before it transfers worse: prints ONE JSON object.

DS maps a scaled secondary spectrum to a scaled primary one through one 3872 x 4062 matrix
C (at the paper's sizes), and the live graph reads all of it for every batch: single
spectra cost 4-9 ms through DS's graph (docs/streaming.md, "DS and the blend live").
A rank-k C = (U_k S_k) V_k^T would cost k (n_secondary + n_primary) multiply-adds instead
of n_secondary n_primary. This fits DS as `train` and the suite do (its ridge chosen on
the validation map under the simulated day change), truncates its matrix by SVD and scores
every rank on the suite scenario's other-day test map, against the full DS of the same run.
The reduced DS is measured here, not built.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.transfer_suite import SCENARIOS, suite_config  # noqa: E402
from transfer.config import TransferConfig  # noqa: E402
from transfer.metrics import rse  # noqa: E402
from transfer.selection import choose_on_validation, selection_inputs, validation_grid  # noqa: E402
from transfer.suite import load_maps, models_from_config  # noqa: E402

RANKS = (16, 32, 64, 128, 256, 512)


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
    return QuickScenario(config, maps, unscale, zero, train, val, prototypes, ds)


def ranks(name: str, work: Path, seed: int = 0) -> dict:
    q = quick_scenario(name, work, seed)
    unscale, train, ds = q.unscale, q.train, q.ds
    test = q.maps["arrays"]["test"]["secondary"].astype(np.float64)
    truth = unscale(q.maps["arrays"]["test"]["primary"]).astype(np.float64)
    state = ds.get_state()
    coef, intercept = np.asarray(state["coef"], np.float64), np.asarray(state["intercept"], np.float64)
    u, s, vt = np.linalg.svd(coef, full_matrices=False)

    def score(matrix: np.ndarray) -> float:
        return round(rse(truth, unscale((test @ matrix + intercept).astype(np.float32)).astype(np.float64)), 5)

    full = score(coef)
    by_rank = {k: score((u[:, :k] * s[:k]) @ vt[:k]) for k in RANKS if k < len(s)}
    n_secondary, n_primary = coef.shape
    return {"n_train": int(len(train[0])), "alpha": float(ds.alpha), "full_rse": full,
            "rank_rse": by_rank, "rank_over_full": {k: round(v / full, 4) for k, v in by_rank.items()},
            "multiply_adds_over_full": {k: round(k * (n_secondary + n_primary) / (n_secondary * n_primary), 4)
                                        for k in by_rank},
            "singular_value_energy": {k: round(float((s[:k] ** 2).sum() / (s ** 2).sum()), 6) for k in by_rank}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the suite's map directory (maps written if missing)")
    parser.add_argument("--scenario", action="append", required=True, choices=sorted(SCENARIOS), metavar="NAME")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = {name: ranks(name, args.work, args.seed) for name in args.scenario}
    print(json.dumps({"bench": "ds_rank", "seconds": round(time.perf_counter() - started, 1), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
