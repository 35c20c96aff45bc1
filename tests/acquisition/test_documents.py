"""A map run's documents, recorded by a test subscriber and checked against the bench's truth."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.documents import RunStart, RunStop, SpotBatch
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
