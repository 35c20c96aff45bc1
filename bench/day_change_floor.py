"""How much of a suite scenario's test error comes from the day change itself: prints ONE JSON object.

A model fitted on the training day predicts the primary as the training day's instruments saw
it. When the test day moves each spectrometer differently (bench/transfer_suite.py's severe
day change: shift, resolution, stray light and dark counts per system), part of the test
primary cannot be seen from the secondary by any model of the training day. Three figures on
the test map separate that part from what the models could still learn (RSE in baseline-
corrected counts, 1 = the test map's mean spectrum, causal protocol as the suite uses):

- ``rse_training_day_mean``: predicting the training day's mean primary for every spot, the
  error of knowing nothing but the training day;
- ``rse_ds_training_day``: direct standardisation (DS) fitted on the training map, as in the
  suite;
- ``rse_ds_own_day``: the same DS fitted on the first half of the test map's own pairs and
  scored on the second half: what the secondary explains of the primary on the test day;
- ``spread_over_offset``: the test map's RMS spread around its mean over the distance between
  the test and training days' mean primaries. Below 1, the days differ by more than the
  test map's spots differ among themselves, and a model that keeps the training day's level
  lands above RSE 1.

Needs only the suite's maps (written by bench/transfer_suite.py into its --work folder).

Example:
    .venv/bin/python bench/day_change_floor.py --work /tmp/suite-new/maps --scenario basalt-few-severe --scenario basalt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer.baselines import DSTransfer  # noqa: E402
from transfer.config import default_config  # noqa: E402
from transfer.metrics import rse  # noqa: E402
from transfer.suite import load_maps  # noqa: E402


def figures(work: Path, name: str, alpha: float) -> dict:
    maps = load_maps(*(work / f"{name}-{role}.h5" for role in ("train", "val", "test")), default_config())
    arrays, unscale = maps["arrays"], maps["preprocessors"]["primary"].inverse_transform
    truth = unscale(arrays["test"]["primary"]).astype(np.float64)
    training_mean = unscale(arrays["train"]["primary"]).astype(np.float64).mean(axis=0)
    on_training_day = DSTransfer(alpha=alpha).fit(arrays["train"]["secondary"], arrays["train"]["primary"])
    predicted = unscale(on_training_day.predict(arrays["test"]["secondary"])).astype(np.float64)
    half = len(truth) // 2
    on_own_day = DSTransfer(alpha=alpha).fit(arrays["test"]["secondary"][:half], arrays["test"]["primary"][:half])
    predicted_own = unscale(on_own_day.predict(arrays["test"]["secondary"][half:])).astype(np.float64)
    spread = float(np.sqrt(((truth - truth.mean(axis=0)) ** 2).sum(axis=1).mean()))
    return {"training_pairs": int(len(arrays["train"]["primary"])), "test_spectra": int(len(truth)),
            "rse_training_day_mean": round(rse(truth, np.broadcast_to(training_mean, truth.shape)), 4),
            "rse_ds_training_day": round(rse(truth, predicted), 4),
            "rse_ds_own_day": round(rse(truth[half:], predicted_own), 4),
            "spread_over_offset": round(spread / float(np.linalg.norm(truth.mean(axis=0) - training_mean)), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the suite's maps folder (its --work)")
    parser.add_argument("--scenario", action="append", required=True, help="scenario name (repeatable)")
    parser.add_argument("--alpha", type=float, default=0.01, help="DS ridge strength (default 0.01)")
    args = parser.parse_args()
    missing = [n for n in args.scenario if not (args.work / f"{n}-test.h5").is_file()]
    if missing:
        parser.error(f"no maps for {', '.join(missing)} in {args.work}: run bench/transfer_suite.py "
                     f"--scenario NAME --work {args.work} first")
    print(json.dumps({"bench": "day_change_floor", "alpha": args.alpha,
                      "scenarios": {n: figures(args.work, n, args.alpha) for n in args.scenario}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
