"""How much of a suite scenario's test error comes from the day change itself: prints ONE JSON object.

A model fitted on the training day predicts the primary as the training day's instruments saw
it. The test day moves each spectrometer by its own drift (wavelength shift and stretch,
resolution, dark offset, scattered light; bench/transfer_suite.py's mild or severe day
change) and changes the plasma and the laser, which both see. The figures separate on the
test map what no model of the training day can know from what the models could still learn.
RSE in baseline-corrected counts (1 = the test map's mean spectrum), causal protocol, DS
fitted as `train` fits it on the suite's quick maps (ridge chosen on validation):

- ``rse_training_day_mean``: predicting the training day's mean primary for every spot, the
  error of knowing nothing but the training day;
- ``rse_ds_training_day``: DS fitted on the training map, as in the suite;
- ``rse_ds_own_day``: DS fitted on the first half of the test map's own pairs (ridge 0.01,
  the rank of `train`'s) and scored on the second half: what the secondary explains of the
  primary on the test day;
- ``spread_over_offset``: the test map's RMS spread around its mean over the distance between
  the test and training days' mean primaries. Below 1, the days differ by more than the
  test map's spots differ among themselves, and a model that keeps the training day's level
  lands above RSE 1.

The rest is the simulator's truth: the test map's shots simulated again, the same plasmas
with the same noise, through other spectrometers (``sim.scene.PairedScene.with_drift``).
First, with the test day's own spectrometers, the re-simulation must give the test map's
spectra bit for bit; where it does not (a map simulated by another version of the
simulator), the scenario's entry says so in ``truth_unavailable`` and has none of these:

- ``rse_perfect_transfer``: the test map as measured against its shots seen by the primary
  as it was on the training day: a transfer that knows every plasma exactly and returns
  what the training day's primary saw;
- ``rse_unknown_primary_drift``: the least RSE a model can expect that knows more than the
  secondary shows (every plasma, the secondary's drift) but not the primary's drift, which
  is drawn apart from the secondary's and so invisible in it. The test map is simulated
  again through the primary as drawn for ``--drift-draws`` days of the scenario's severity
  (each a draw of the drifts the scenario can bring); the best prediction in the
  squared-error sense is the mean of the other days' primaries, and this is its RSE
  averaged over the days (times (K − 1) / K, the share of a K-day mean's scatter a mean of
  all days would not have); ``…_range``: the least and largest day; ``…_test_day``: the
  test map's own day among them. Above 1, no model fitted without the test day's pairs
  can expect RSE 1 or less on a day of that severity;
- ``rse_primary_drift_alone``: ``rse_perfect_transfer`` for each part of the primary's drift
  alone (the others as on the training day): ``wavelength`` (shift and stretch),
  ``resolution``, ``background`` (dark offset and scattered light);
- ``rse_ds_steady_secondary``: the suite's DS fed the test shots as the training day's
  secondary saw them (the secondary's drift undone), against the test map as measured: what
  an input corrected for the secondary's drift would leave;
- ``rse_ds_steady_spectrometers``: the same predictions against the shots as the training
  day's primary saw them: with both drifts undone, what is left is the plasma and laser
  change and DS's own error.

Reads the suite's quick maps from its --work folder (bench/transfer_suite.py --quick), simulating
a scenario's maps there first if they are missing. About 30 seconds a scenario on two cores.

Example:
    .venv/bin/python bench/day_change_floor.py --work /tmp/suite-new/maps --scenario basalt-few-severe --scenario basalt
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.base import clone

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.store import PairedMapReader  # noqa: E402
from sim.generate import scene_of, simulate_again, simulation_attributes  # noqa: E402
from sim.scene import DayConditions, PairedScene  # noqa: E402
from sim.spectrograph import InstrumentDrift  # noqa: E402
from bench.ds_rank import quick_scenario  # noqa: E402
from bench.transfer_suite import SCENARIOS, prepare_maps  # noqa: E402
from transfer.data import iter_raw_chunks  # noqa: E402
from transfer.metrics import rse  # noqa: E402


#: the parts of a spectrometer's day drift, by the InstrumentDrift fields each moves
DRIFT_PARTS = {"wavelength": ("shift_px", "stretch_px"), "resolution": ("fwhm_scale",),
               "background": ("dark_shift_counts", "stray_scale", "stray_tilt")}


#: DS's ridge on the test day's own pairs (its day-change ridge guards against another day)
OWN_DAY_ALPHA = 0.01


def _simulation(path: Path) -> dict:
    with PairedMapReader(path) as reader:
        truth = reader.sample_truth
        layout = reader.layout
    attrs = simulation_attributes(truth)
    if attrs.get("simulator") != "twinplume.sim":
        raise SystemExit(f"{path}: not a simulated map (no /entry/sample truth): cannot simulate it again")
    return {"attrs": attrs, "layout": layout}


def _resimulated(simulation: dict, scene: PairedScene, order: tuple) -> dict[str, np.ndarray]:
    """{system: raw counts [n, pixels]} of the test map's spots in ``order`` (iy, ix), simulated through ``scene``."""
    again = simulate_again(simulation["layout"], simulation["attrs"], scene)
    return {system: grid[order] for system, grid in again.items()}


def _measured_test_map(path: Path) -> tuple[tuple, dict[str, np.ndarray]]:
    """((iy, ix), {system: raw counts}) of the test map in file order, the order of the suite's arrays."""
    order, measured = [], {"primary": [], "secondary": []}
    for _, iy, ix, spectra in iter_raw_chunks([path], ["primary", "secondary"], 4096):
        order.append((iy, ix))
        for system in measured:
            measured[system].append(spectra[system])
    return tuple(np.concatenate(a) for a in zip(*order)), {s: np.concatenate(v) for s, v in measured.items()}


def figures(work: Path, name: str, drift_draws: int) -> dict:
    q = quick_scenario(name, work)
    paths = q.paths
    arrays, prep, unscale = q.maps["arrays"], q.maps["preprocessors"], q.unscale
    truth = unscale(arrays["test"]["primary"]).astype(np.float64)
    training_mean = unscale(arrays["train"]["primary"]).astype(np.float64).mean(axis=0)

    def ds_from(model, secondary_scaled) -> np.ndarray:
        return unscale(model.predict(secondary_scaled)).astype(np.float64)

    half = len(truth) // 2
    on_own_day = clone(q.ds).set_params(alpha=OWN_DAY_ALPHA).fit(arrays["test"]["secondary"][:half], arrays["test"]["primary"][:half])
    spread = float(np.sqrt(((truth - truth.mean(axis=0)) ** 2).sum(axis=1).mean()))
    result = {"training_pairs": int(len(arrays["train"]["primary"])), "test_spectra": int(len(truth)),
              "ds_alpha": float(q.ds.alpha),
              "rse_training_day_mean": round(rse(truth, np.broadcast_to(training_mean, truth.shape)), 4),
              "rse_ds_training_day": round(rse(truth, ds_from(q.ds, arrays["test"]["secondary"])), 4),
              "rse_ds_own_day": round(rse(truth[half:], ds_from(on_own_day, arrays["test"]["secondary"][half:])), 4),
              "spread_over_offset": round(spread / float(np.linalg.norm(truth.mean(axis=0) - training_mean)), 3)}

    # the simulator's truth: the test map's shots again, through other spectrometers
    simulation = _simulation(paths["test"])
    attrs = simulation["attrs"]
    order, measured = _measured_test_map(paths["test"])
    scene = scene_of(attrs)
    again = _resimulated(simulation, scene, order)
    differ = [system for system in measured if not np.array_equal(again[system], measured[system])]
    if differ:
        return {**result, "truth_unavailable": f"{paths['test'].name}: simulating it again does not give its "
                                               f"{' and '.join(differ)} spectra (simulated by another version)"}
    training_day = int(_simulation(paths["train"])["attrs"]["day"])
    severity, test_day = str(attrs["day_change"]), int(attrs["day"])
    training_drift = DayConditions.for_day(training_day, severity).drift
    test_drift = scene.conditions.drift["primary"]

    def corrected(raw):
        return prep["primary"].inverse_transform(prep["primary"].transform(raw)).astype(np.float64)

    def primary_through(drift: InstrumentDrift) -> np.ndarray:
        return corrected(_resimulated(simulation, scene.with_drift("primary", drift), order)["primary"])

    nominal = primary_through(training_drift["primary"])
    alone = {}
    for part, fields in DRIFT_PARTS.items():
        drift = replace(training_drift["primary"], **{f: getattr(test_drift, f) for f in fields})
        alone[part] = round(rse(primary_through(drift), nominal), 4)
    days = [primary_through(DayConditions.for_day(day, severity).drift["primary"]) for day in range(1, drift_draws + 1)]
    total = np.sum(days, axis=0)
    # each day against the mean of the others; (K - 1) / K removes what the mean of K - 1
    # draws adds by not being the mean of all possible days
    per_day = np.array([rse(day, (total - day) / (drift_draws - 1)) for day in days]) * (drift_draws - 1) / drift_draws
    steady_secondary = _resimulated(simulation, scene.with_drift("secondary", training_drift["secondary"]),
                                    order)["secondary"]
    from_steady = ds_from(q.ds, prep["secondary"].transform(steady_secondary))
    return {**result,
            "rse_perfect_transfer": round(rse(truth, nominal), 4),
            "rse_unknown_primary_drift": round(float(per_day.mean()), 4),
            "rse_unknown_primary_drift_range": [round(float(per_day.min()), 4), round(float(per_day.max()), 4)],
            "rse_unknown_primary_drift_test_day": (round(float(per_day[test_day - 1]), 4)
                                                   if 1 <= test_day <= drift_draws else None),
            "rse_primary_drift_alone": alone,
            "rse_ds_steady_secondary": round(rse(truth, from_steady), 4),
            "rse_ds_steady_spectrometers": round(rse(nominal, from_steady), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True,
                        help="the suite's maps folder (its --work; a scenario's quick maps are simulated there if missing)")
    parser.add_argument("--scenario", action="append", required=True, choices=sorted(SCENARIOS), metavar="NAME",
                        help="a scenario of bench/transfer_suite.py (repeatable)")
    parser.add_argument("--drift-draws", type=int, default=16,
                        help="days of drift drawn for rse_unknown_primary_drift (default 16, at least 2)")
    args = parser.parse_args()
    if args.drift_draws < 2:
        parser.error("--drift-draws must be at least 2")
    _, stale = prepare_maps(args.scenario, args.work, quick=True)
    if stale:
        print(f"day_change_floor: {stale}", file=sys.stderr)
        return 2
    print(json.dumps({"bench": "day_change_floor", "drift_draws": args.drift_draws,
                      "scenarios": {n: figures(args.work, n, args.drift_draws) for n in args.scenario}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
