"""A map run's documents, recorded by a test subscriber and checked against the bench's truth."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from acquisition.documents import DocumentRouter, RunStart, RunStop, SpotBatch, SpotResults
from acquisition.mapping import acquire_map, layout_of
from acquisition.safety import AcquisitionAborted, StopFlag
from acquisition.store import PairedMapReader
from tests.acquisition.conftest import small_map
from tests.fixtures.emulated import bench_config


@pytest.mark.parametrize("mode", ["fly", "step"])
def test_a_run_emits_start_the_spots_as_stored_and_stop(tmp_path, make_bench, mode):
    bench = make_bench(seed=8)
    settings = small_map(mode=mode, shape=(3, 4))
    out = tmp_path / "map.h5"
    documents = []

    summary = acquire_map(out, settings, bench_config(bench), bench=bench, show_progress=False,
                          subscribers=[documents.append])

    start, *batches, stop = documents
    assert isinstance(start, RunStart) and isinstance(stop, RunStop)
    assert all(isinstance(doc, SpotBatch) for doc in batches) and batches
    assert start.layout == layout_of(settings) and start.systems == ("primary", "secondary")
    assert start.wavelengths["primary"].shape == (bench.spectrometer("primary").pixels,)
    assert start.settings["mode"] == mode and not start.resumed
    assert stop.exit_status == "complete"
    timing = {"elapsed_s", "spots_per_s"}
    assert {k: v for k, v in stop.summary.items() if k not in timing} == \
        {k: v for k, v in summary.as_dict().items() if k not in timing}

    spots = [(int(iy), int(ix)) for doc in batches for iy, ix in zip(doc.iy, doc.ix)]
    assert sorted(spots) == [(iy, ix) for iy in range(3) for ix in range(4)], "each spot once"
    fired = {shot.t: shot for shot in bench.fired}
    with PairedMapReader(out) as reader:
        for doc in batches:
            for k in range(len(doc)):
                shot = fired[min(fired, key=lambda t: abs(t - doc.timestamp[k]))]
                assert abs(shot.t - doc.timestamp[k]) < 1e-6, "a spot whose shot the bench never fired"
                assert np.abs(doc.position_um[k] - (shot.x_um, shot.y_um)).max() < 1.0
                stored = reader.spot(int(doc.iy[k]), int(doc.ix[k]))
                for system, spectra in doc.spectra.items():
                    np.testing.assert_array_equal(spectra[k], stored[system])


def test_an_interrupted_run_still_stops_its_documents_and_a_failing_subscriber_changes_nothing(
        tmp_path, make_bench):
    bench = make_bench(seed=9)
    stop_flag = StopFlag()
    documents = []

    def stop_after_first_batch(doc):
        if isinstance(doc, SpotBatch):
            stop_flag.request("enough", "SIGINT")

    def broken(doc):
        raise RuntimeError("a bug in someone's callback")

    with pytest.raises(AcquisitionAborted):
        acquire_map(tmp_path / "map.h5", small_map(shape=(4, 5)), bench_config(bench), bench=bench,
                    show_progress=False, stop_flag=stop_flag,
                    subscribers=[broken, documents.append, stop_after_first_batch])

    assert isinstance(documents[0], RunStart) and isinstance(documents[-1], RunStop)
    stop = documents[-1]
    assert stop.exit_status == "aborted" and "enough" in stop.reason
    recorded = sum(len(doc) for doc in documents if isinstance(doc, SpotBatch))
    assert stop.summary["acquired"] == recorded < 20


def test_spot_batches_carry_each_shot_as_the_bench_fired_it(tmp_path, make_bench):
    """Shot ids, trigger times and true positions of every spot against the bench's own record."""
    bench = make_bench(seed=11)
    out = tmp_path / "map.h5"
    documents = []

    acquire_map(out, small_map(shape=(4, 5)), bench_config(bench), bench=bench, show_progress=False,
                subscribers=[documents.append])

    start = documents[0]
    assert start.true_positions and start.derived is None
    batches = [doc for doc in documents if isinstance(doc, SpotBatch)]
    fired = {shot.t: shot for shot in bench.fired}
    times = np.array(sorted(fired))
    with h5py.File(out, "r") as f:
        stored_truth = f["entry/sample/true_position"][()]
    with PairedMapReader(out) as reader:
        for doc in batches:
            assert doc.true_position_um is not None and doc.true_position_um.shape == (len(doc), 2)
            for k in range(len(doc)):
                t = times[np.argmin(np.abs(times - doc.timestamp[k]))]
                shot = fired[t]
                assert abs(t - doc.timestamp[k]) < 1e-6
                assert int(doc.shot_id[k]) == shot.shot_id, "the spot's shot id is not the pulse that hit it"
                np.testing.assert_array_equal(doc.true_position_um[k], (shot.x_um, shot.y_um))
                np.testing.assert_array_equal(stored_truth[doc.iy[k], doc.ix[k]], (shot.x_um, shot.y_um))
                assert int(reader.scan_values("shot_id")[doc.iy[k], doc.ix[k]]) == shot.shot_id


class Recorder:
    """A store that logs what it was given, and can be told to fail on spots."""

    def __init__(self, log, fail_on_spots=False):
        self.log, self.fail_on_spots, self.drained = log, fail_on_spots, False

    def __call__(self, doc):
        if isinstance(doc, SpotBatch) and self.fail_on_spots:
            raise OSError("No space left on device")
        self.log.append(("store", type(doc).__name__))

    def drain(self):
        self.drained = True
        self.log.append(("store", "drain"))


def batch(iy):
    return SpotBatch(np.array([iy]), np.array([0]), np.array([iy]), np.array([0.0]), np.zeros((1, 2)),
                     {"secondary": np.ones((1, 3), np.float32)})


def test_the_router_gives_the_store_spots_first_its_stop_first_and_lets_subscribers_emit_results():
    log = []

    class Emitter:
        """Answers each spot with a result, from inside its delivery; gives out one more on drain."""

        def connect(self, emit):
            self.emit = emit

        def __call__(self, doc):
            log.append(("emitter", type(doc).__name__))
            if isinstance(doc, SpotBatch):
                self.emit(SpotResults(doc.iy, doc.ix, np.zeros((1, 3), np.float32), np.array([1]),
                                      np.array([0.5], np.float32)))

        def drain(self):
            self.emit(SpotResults(np.array([9]), np.array([9]), np.zeros((1, 3), np.float32), np.array([2]),
                                  np.array([0.5], np.float32)))

    store = Recorder(log)
    router = DocumentRouter(store, [Emitter(), lambda doc: log.append(("user", type(doc).__name__))])
    router.emit(batch(0))
    router.drain()
    router.emit(RunStop({}, "complete"))

    assert log == [("store", "SpotBatch"), ("emitter", "SpotBatch"), ("user", "SpotBatch"),
                   ("store", "SpotResults"), ("emitter", "SpotResults"), ("user", "SpotResults"),
                   ("store", "SpotResults"), ("emitter", "SpotResults"), ("user", "SpotResults"),
                   ("store", "drain"),
                   ("store", "RunStop"), ("emitter", "RunStop"), ("user", "RunStop")]


def test_a_store_failure_stops_the_run_and_no_subscriber_sees_the_spot():
    log = []
    router = DocumentRouter(Recorder(log, fail_on_spots=True), [lambda doc: log.append(("user", type(doc).__name__))])
    with pytest.raises(OSError, match="No space"):
        router.emit(batch(0))
    assert log == []
    router.emit(RunStop({}, "failed"))
    assert log == [("store", "RunStop"), ("user", "RunStop")]
