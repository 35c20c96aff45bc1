"""The live client without a map: replayed documents, a real worker process, real ZeroMQ sockets."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from acquisition.documents import DocumentRouter, RunStart, RunStop, SpotBatch, SpotErrors, SpotResults
from acquisition.live import LiveOptions, LiveTransfer
from acquisition.live_drift import LiveDrift
from acquisition.shared.drift import baseline_windows
from acquisition.shared.spectral import baseline_correct
from acquisition.store import MapLayout
from tests.streaming.conftest import WorkerProcess, make_test_model

SHAPE = (5, 8)
N_SECONDARY, N_PRIMARY = 48, 40


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("model") / "replay.onnx", n_latent=6, n_clusters=5,
                           baseline_window=5, seed=4)


@pytest.fixture(scope="module")
def worker(model, tmp_path_factory):
    proc = WorkerProcess(model, tmp_path_factory.mktemp("worker"))
    yield proc
    proc.stop()


def model_axes(model) -> dict[str, np.ndarray]:
    props = {p.key: p.value for p in onnx.load(model).metadata_props}
    return {"primary": np.asarray(json.loads(props["twinplume.primary_wavelengths"])),
            "secondary": np.asarray(json.loads(props["twinplume.secondary_wavelengths"]))}


def replayed_run(axes: dict[str, np.ndarray], seed: int = 0):
    """A run's documents as a map would emit them: rows in batches of uneven size, then nothing."""
    rng = np.random.default_rng(seed)
    layout = MapLayout(SHAPE, (40.0, 40.0), "raster", (0.0, 0.0))
    start = RunStart("(replay: no map file)", layout, ("primary", "secondary"), axes, {}, {}, resumed=False)
    spots = layout.visit_order()
    secondary = rng.uniform(50, 400, (len(spots), N_SECONDARY)).astype(np.float32)
    primary = rng.uniform(50, 400, (len(spots), N_PRIMARY)).astype(np.float32)
    batches, first = [], 0
    for size in (1, 7, 3, 12, len(spots)):
        stop = min(first + size, len(spots))
        if stop > first:
            k = np.arange(first, stop)
            batches.append(SpotBatch(spots[k, 0], spots[k, 1], 1000 + k, 1.7e9 + k * 1e-3,
                                     np.column_stack([spots[k, 1] * 40.0, spots[k, 0] * 40.0]),
                                     {"primary": primary[k], "secondary": secondary[k]}))
        first = stop
    return start, batches, secondary, primary, spots


def test_replayed_documents_get_the_models_result_for_every_spot_before_the_run_stops(worker, model):
    start, batches, secondary, measured_primary, spots = replayed_run(model_axes(model))
    live = LiveTransfer(LiveOptions(worker.input, results=worker.output, control=worker.control), show_progress=False)
    drift = LiveDrift(window=10)
    documents = []
    router = DocumentRouter(subscribers=[live, drift, documents.append])

    derived = live.prepare(start.path, start.layout, start.wavelengths)
    router.emit(RunStart(start.path, start.layout, start.systems, start.wavelengths, {}, {}, False,
                         derived=derived, models={"transferred": live.model_info}))
    for doc in batches:
        router.emit(doc)
    router.drain()
    summary = live.summary()
    router.emit(RunStop({"live": summary}, "complete"))

    assert derived == {"transferred": N_PRIMARY}, "the model's output lies on the primary axis"
    kinds = [type(doc).__name__ for doc in documents]
    assert kinds[-1] == "RunStop" and "SpotResults" in kinds
    results = [doc for doc in documents if isinstance(doc, SpotResults)]
    iy = np.concatenate([r.iy for r in results])
    ix = np.concatenate([r.ix for r in results])
    assert sorted(zip(iy.tolist(), ix.tolist())) == sorted(map(tuple, spots.tolist())), "one result a spot"
    assert summary["results"] == len(spots) and summary["without_result"] == 0 and summary["written"] == len(spots)

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    order = {tuple(s): n for n, s in enumerate(spots.tolist())}
    rows = np.array([order[(a, b)] for a, b in zip(iy.tolist(), ix.tolist())])
    primary, label, novelty = session.run(["primary", "label", "novelty"], {"secondary": secondary[rows]})
    np.testing.assert_allclose(np.concatenate([r.spectra for r in results]), primary, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(np.concatenate([r.label for r in results]), label)
    np.testing.assert_allclose(np.concatenate([r.novelty for r in results]), novelty, rtol=1e-5, atol=1e-5)
    model_id = {p.key: p.value for p in onnx.load(model).metadata_props}["twinplume.model_id"]
    assert {r.model_id for r in results} == {model_id}
    # results name their shots, and the drift monitor compared each with the primary measured at that shot
    np.testing.assert_array_equal(np.concatenate([r.shot_id for r in results]), 1000 + rows)
    errors = [doc for doc in documents if isinstance(doc, SpotErrors)]
    relative = np.full(SHAPE, np.nan)
    for doc in errors:
        relative[doc.iy, doc.ix] = doc.relative_error
    truth = baseline_correct(measured_primary[rows], *baseline_windows(live.model_info)).astype(np.float64)
    expected = np.full(SHAPE, np.nan)
    expected[iy, ix] = np.linalg.norm(primary - truth, axis=1) / np.linalg.norm(truth, axis=1)
    np.testing.assert_allclose(relative, expected, rtol=1e-4)
    assert drift.summary()["spots"] == len(spots) and drift.measured == len(spots)


def test_replayed_documents_without_a_worker_name_every_spot_and_emit_nothing(tmp_path):
    axes = {"primary": np.linspace(200, 900, N_PRIMARY), "secondary": np.linspace(250, 850, N_SECONDARY)}
    start, batches, _, _, spots = replayed_run(axes, seed=1)
    live = LiveTransfer(LiveOptions("ipc://" + str(tmp_path / "nobody-in"), results="ipc://" + str(tmp_path / "out"),
                                    control="ipc://" + str(tmp_path / "ctl"), timeout_s=0.3), show_progress=False)
    documents = []
    router = DocumentRouter(subscribers=[live, documents.append])
    router.emit(start)      # not prepared: RunStart does it
    for doc in batches:
        router.emit(doc)
    router.drain()

    report = live.summary()
    assert not any(isinstance(doc, SpotResults) for doc in documents)
    assert report["results"] == 0 and report["without_result"] == len(spots) == report["submitted"]
    named = np.zeros(SHAPE, bool)
    for iy, first, last in report["without_result_spots"]:
        named[iy, first:last + 1] = True
    assert named.all() and sum(report["reasons"].values()) == len(spots)
