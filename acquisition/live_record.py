"""What live transfer leaves in the map file, and the account of the spots that got no result.

In the file (spec/paired-map-hdf5.md, derived data): /entry/transferred/{spectra, label,
novelty} per spot, written during the map by its recorder; and once the writer has closed
(nothing can be created in a file in SWMR mode) ``live_relative_error`` and
``live_cosine_distance`` [ny, nx] (NaN: no comparison), the attributes ``model_id``,
``live_drift_json`` (the drift monitor's summary) and ``live_report_json`` (the run's
live summary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acquisition.store.h5files import attr_text, open_for_reading, open_for_update

GROUP = "transferred"
ERROR_DATASETS = ("live_relative_error", "live_cosine_distance")
GAP_REASONS = ("dropped", "lost", "unsent", "rejected", "not_submitted", "not_received")


def spot_runs(mask: np.ndarray) -> list[list[int]]:
    """The True spots of a 2-D mask as row runs [iy, ix_first, ix_last]."""
    runs = []
    for iy in np.flatnonzero(mask.any(axis=1)):
        columns = np.flatnonzero(mask[iy])
        breaks = np.flatnonzero(np.diff(columns) != 1)
        for first, last in zip(np.r_[0, breaks + 1], np.r_[breaks, columns.size - 1]):
            runs.append([int(iy), int(columns[first]), int(columns[last])])
    return runs


def describe_runs(runs: list[list[int]], limit: int = 12) -> str:
    text = [f"({iy}, {a})" if a == b else f"({iy}, {a}-{b})" for iy, a, b in runs[:limit]]
    return ", ".join(text) + (f" and {len(runs) - limit} more run(s)" if len(runs) > limit else "")


def gap_report(acquired: np.ndarray, received: np.ndarray, submitted: np.ndarray, seq_spot, delivery) -> dict:
    """Spots acquired in this run without a live result, each with why (the producer's
    DeliveryReport names dropped, lost, unsent and rejected input seqs; ``seq_spot[seq]`` is
    the flat index of the spot sent as ``seq``)."""
    why = np.full(acquired.shape, "", object)
    why[~submitted] = "not_submitted"            # never handed to the producer
    why[submitted] = "not_received"              # answered, but not a result this map could use
    flat_why = why.reshape(-1)
    for reason, seqs in (("rejected", delivery.rejected), ("lost", delivery.lost), ("dropped", delivery.dropped),
                         ("unsent", delivery.unsent)):
        for seq in seqs:
            if 0 <= seq < len(seq_spot) and seq_spot[seq] >= 0:
                flat_why[seq_spot[seq]] = reason
    gaps = acquired & ~received
    return {"spots": int(acquired.sum()), "submitted": delivery.submitted,
            "results": int((acquired & received).sum()), "without_result": int(gaps.sum()),
            "without_result_spots": spot_runs(gaps),
            "reasons": {name: int(np.count_nonzero(why[gaps] == name)) for name in GAP_REASONS},
            "rejected_reasons": sorted(set(delivery.rejected.values()))[:5], "late": delivery.late}


@dataclass
class EarlierRun:
    """What a resumed map already holds."""

    acquired: np.ndarray                 # bool [ny, nx]
    shot_id: np.ndarray
    group_pixels: int | None             # /entry/transferred's spectrum length, None if there is none
    model_id: str                        # the model that produced the results already there
    has_result: np.ndarray               # bool [ny, nx]: a live result is stored
    errors: dict[str, np.ndarray]        # ERROR_DATASETS present in the file


def read_earlier_run(path: Path) -> EarlierRun:
    f, _ = open_for_reading(path, live=False)
    with f:
        group = f["entry"].get(GROUP)
        return EarlierRun(
            acquired=f["entry/scan/acquired"][()] == 1, shot_id=f["entry/scan/shot_id"][()],
            group_pixels=None if group is None else int(group["spectra"].shape[2]),
            model_id="" if group is None else str(attr_text(group.attrs.get("model_id", ""))),
            has_result=np.zeros(f["entry/scan/acquired"].shape, bool) if group is None else group["label"][()] >= 0,
            errors={} if group is None else {name: group[name][()] for name in ERROR_DATASETS if name in group})


def write_extras(path: Path, *, model_id: str | None, errors: dict[str, np.ndarray] | None,
                 drift: dict | None, report: dict) -> int | None:
    """Per-spot errors (NaN: not measured in this run) and summaries under /entry/transferred of
    a closed map; returns how many acquired spots of the whole map have no live result (None
    without the group)."""
    with open_for_update(path, rdcc_nbytes=0) as f:
        group = f["entry"].get(GROUP)
        if group is None:
            return None
        acquired = f["entry/scan/acquired"][()] == 1
        if model_id:
            group.attrs["model_id"] = str(model_id)
        for name, values in (errors or {}).items():
            if name not in group:
                group.create_dataset(name, shape=values.shape, dtype=np.float32, fillvalue=np.nan)
                group[name].attrs["units"] = "1"
            merged = group[name][()]
            measured = ~np.isnan(values)             # this run's spots; earlier runs keep theirs
            merged[measured] = values[measured]
            group[name][...] = merged
        if drift is not None:
            group.attrs["live_drift_json"] = json.dumps(drift)
        without = int((acquired & (group["label"][()] < 0)).sum())
        group.attrs["live_report_json"] = json.dumps({**{k: v for k, v in report.items()
                                                         if k != "without_result_spots"},
                                                      "map_spots_without_result": without})
    return without
