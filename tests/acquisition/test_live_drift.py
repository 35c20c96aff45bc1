"""The drift monitor as a subscriber: replayed documents, no ZeroMQ; then the map file its errors land in."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from acquisition.documents import DocumentRouter, RunStart, RunStop, SpotBatch, SpotErrors, SpotResults
from acquisition.live_drift import MAX_WAITING_PRIMARIES, LiveDrift
from acquisition.live_record import read_earlier_run
from acquisition.recorder import MapRecorder
from acquisition.shared.spectral import baseline_correct
from acquisition.store import MapLayout
from tests.acquisition.conftest import open_map

SHAPE = (4, 6)
N_PIXELS = 300
WINDOWS = [20, 10]        # the model's primary baseline windows (neither the paper's nor the default's)
AXIS = np.linspace(250.0, 850.0, N_PIXELS)
MODEL = {"model": "drift-test", "primary_baseline_windows": WINDOWS, "primary_wavelengths": AXIS.tolist()}


def raw_primaries(n: int, seed: int = 0) -> np.ndarray:
    """Raw primary-like spectra, each its own: a sloping continuum and three lines of spot-varying height."""
    rng = np.random.default_rng(seed)
    x = np.arange(N_PIXELS)
    lines = [a * np.exp(-0.5 * ((x - c) / 2.0) ** 2) for a, c in ((900, 60), (400, 150), (1500, 240))]
    heights = rng.uniform(0.5, 1.5, (n, 3))
    return (200 + 0.3 * x + heights @ np.array(lines) + rng.normal(0, 3, (n, N_PIXELS))).astype(np.float32)


def run_start(layout: MapLayout, *, resumed: bool = False, path: str = "(replay)", derived=None) -> RunStart:
    return RunStart(path, layout, ("primary",), {"primary": AXIS}, {}, {}, resumed, derived=derived,
                    models={"transferred": MODEL})


def replay(layout: MapLayout, scale: np.ndarray, seed: int = 0):
    """Every spot of `layout` as SpotBatch documents, and results as the model would make them when it
    is wrong by a known factor: transferred = scale * (the baseline-corrected measured primary), so that
    spot's relative error is |scale - 1| and its cosine distance 0 (scale > 0)."""
    spots = layout.visit_order()
    raw = raw_primaries(len(spots), seed)
    shot = 500 + np.arange(len(spots))
    corrected = baseline_correct(raw, *WINDOWS)
    transferred = (scale[:, None] * corrected).astype(np.float32)
    batches = [SpotBatch(spots[k, 0], spots[k, 1], shot[k], 1.7e9 + k * 1e-3, np.zeros((len(k), 2)),
                         {"primary": raw[k]}) for k in np.array_split(np.arange(len(spots)), 3)]
    return spots, shot, transferred, batches


def results(spots, shot, transferred, k, *, with_shot: bool = True) -> SpotResults:
    k = np.asarray(k)
    return SpotResults(spots[k, 0], spots[k, 1], transferred[k], np.zeros(len(k), np.int64),
                       np.zeros(len(k), np.float32), model_id="drift-test", shot_id=shot[k] if with_shot else None)


def spot_map(documents, field: str) -> np.ndarray:
    values = np.full(SHAPE, np.nan)
    for doc in documents:
        if isinstance(doc, SpotErrors):
            values[doc.iy, doc.ix] = getattr(doc, field)
    return values


def test_each_result_is_measured_against_the_primary_of_its_own_shot():
    layout = MapLayout(SHAPE, (40.0, 40.0), "raster", (0.0, 0.0))
    n = SHAPE[0] * SHAPE[1]
    scale = 1.0 + 0.01 * np.arange(1, n + 1)             # spot k's relative error: 0.01 * (k + 1)
    spots, shot, transferred, batches = replay(layout, scale)
    drift = LiveDrift(window=5, threshold=0.5)
    documents = []
    router = DocumentRouter(subscribers=[drift, documents.append])
    router.emit(run_start(layout))
    for batch in batches:
        router.emit(batch)
    # results come back in any order and in batches of their own; some name no shot (matched by spot)
    order = np.random.default_rng(3).permutation(n)
    router.emit(results(spots, shot, transferred, order[:7]))
    router.emit(results(spots, shot, transferred, order[7:12], with_shot=False))
    router.emit(results(spots, shot, transferred, order[12:]))
    router.drain()          # the monitor measures on its own thread: drain() waits for it

    expected = np.full(SHAPE, np.nan)
    expected[spots[:, 0], spots[:, 1]] = scale - 1.0
    np.testing.assert_allclose(spot_map(documents, "relative_error"), expected, rtol=1e-5)
    np.testing.assert_allclose(spot_map(documents, "cosine_distance"), 0.0, atol=1e-6)
    summary = drift.summary()
    assert summary["spots"] == n and drift.measured == n
    assert summary["baseline_windows"] == WINDOWS and not summary["resampled"]
    # reference: the first 5 spots compared (order[:5]); recent: the last 5 (order[-5:])
    assert summary["reference_relative_error"] == pytest.approx(np.mean(scale[order[:5]] - 1), rel=1e-5)
    assert summary["recent_relative_error"] == pytest.approx(np.mean(scale[order[-5:]] - 1), rel=1e-5)
    last = [doc for doc in documents if isinstance(doc, SpotErrors)][-1]
    assert (last.recent_relative_error, last.drift) == (summary["recent_relative_error"], summary["drift"])


def test_a_result_whose_primary_was_forgotten_or_never_measured_gets_no_error():
    layout = MapLayout((1, MAX_WAITING_PRIMARIES + 3), (40.0, 40.0), "raster", (0.0, 0.0))
    n = layout.shape[1]
    spots = layout.visit_order()
    raw = np.tile(raw_primaries(1), (n, 1))
    drift = LiveDrift(window=2)
    documents = []
    router = DocumentRouter(subscribers=[drift, documents.append])
    router.emit(RunStart("(replay)", layout, ("primary",), {"primary": AXIS}, {}, {}, False,
                         models={"transferred": MODEL}))
    router.emit(SpotBatch(spots[:, 0], spots[:, 1], np.arange(n), np.zeros(n), np.zeros((n, 2)), {"primary": raw}))
    transferred = 2.0 * baseline_correct(raw[:4], *WINDOWS)
    # shots 0-2 are past the bound of waiting primaries; shot 10**6 was never measured
    router.emit(SpotResults(spots[:4, 0], spots[:4, 1], transferred, np.zeros(4, np.int64), np.zeros(4, np.float32),
                            shot_id=np.array([0, 2, 3, 10**6])))
    router.drain()
    errors = [doc for doc in documents if isinstance(doc, SpotErrors)]
    assert len(errors) == 1
    np.testing.assert_allclose(errors[0].relative_error, [np.nan, np.nan, 1.0, np.nan], rtol=1e-5)
    assert drift.measured == 1


def test_drift_warns_once_when_the_recent_error_doubles(caplog):
    layout = MapLayout(SHAPE, (40.0, 40.0), "raster", (0.0, 0.0))
    n = SHAPE[0] * SHAPE[1]
    scale = np.where(np.arange(n) < n // 2, 1.1, 1.2)      # 0.1 for the first half, 0.2 after
    spots, shot, transferred, batches = replay(layout, scale, seed=1)
    drift = LiveDrift(window=n // 2, threshold=0.5)
    router = DocumentRouter(subscribers=[drift])
    router.emit(run_start(layout))
    with caplog.at_level(logging.WARNING, logger="acquisition.shared.drift"):
        for batch in batches:
            router.emit(batch)
            k = np.flatnonzero(np.isin(shot, batch.shot_id))
            router.emit(results(spots, shot, transferred, k))
        router.drain()
    summary = drift.summary()
    assert summary["drift"] == pytest.approx(1.0, rel=1e-5) and summary["drifting"] and summary["warnings"] == 1
    assert caplog.text.count("live transfer drifting") == 1


def test_the_map_holds_the_errors_and_a_resumed_run_keeps_the_reference(tmp_path):
    """Through the map's recorder: live_relative_error as measured, live_drift_json as summarised, and a
    resumed run's drift monitor starts from the errors the map holds."""
    layout = MapLayout(SHAPE, (40.0, 40.0), "raster", (0.0, 0.0))
    n = SHAPE[0] * SHAPE[1]
    scale = 1.0 + 0.01 * np.arange(1, n + 1)
    spots, shot, transferred, batches = replay(layout, scale, seed=2)
    path = tmp_path / "map.h5"
    first = n // 2       # the first run records the first half of the spots, then stops
    drift = LiveDrift(window=4)
    router = DocumentRouter(MapRecorder(path), [drift])
    router.emit(run_start(layout, path=str(path), derived={"transferred": N_PIXELS}))
    router.emit(SpotBatch(spots[:first, 0], spots[:first, 1], shot[:first], np.arange(first) * 1e-3,
                          np.zeros((first, 2)), {"primary": raw_of(batches)[:first]}))
    router.emit(results(spots, shot, transferred, np.arange(first)))
    router.drain()
    router.emit(RunStop({"live": {"model": "drift-test", "drift": drift.summary()}}, "gaps"))

    with open_map(path) as f:
        group = f["entry/transferred"]
        stored = group["live_relative_error"][()]
        stored_drift = json.loads(group.attrs["live_drift_json"])
    expected = np.full(SHAPE, np.nan)
    expected[spots[:first, 0], spots[:first, 1]] = scale[:first] - 1.0
    np.testing.assert_allclose(stored, expected, rtol=1e-5)
    assert stored_drift == drift.summary() and stored_drift["spots"] == first

    resumed = LiveDrift(window=4)
    resumed.resume_from(path)
    resumed(run_start(layout, resumed=True, path=str(path)))
    resumed.drain()
    summary = resumed.summary()
    assert summary["spots"] == first
    assert summary["reference_relative_error"] == pytest.approx(np.mean(scale[:4] - 1), rel=1e-5)
    assert read_earlier_run(path).acquired.sum() == first


def raw_of(batches) -> np.ndarray:
    return np.concatenate([batch.spectra["primary"] for batch in batches])
