"""`libs-stream view` without a browser: the page's websocket protocol, access control, bounds, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import numpy as np
import onnxruntime as ort
import pytest
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect

from streaming.producer import SpectrumPusher
from streaming.view.app import ViewConfig
from streaming.view.feed import DOCUMENTED_NOVELTY_THRESHOLD, novelty_threshold, trust_threshold
from streaming.view.server import page_url, parse_shape, prepare
from streaming.view.state import MapState, SpectrumStore, decode_frame, encode_frame
from tests.streaming.conftest import spectra
from tests.streaming.viewtools import ViewProcess, wait_for

SHAPE = (4, 6)


class PageSocket:
    """A page's websocket, read in a thread: every frame decoded, in order."""

    def __init__(self, url: str):
        self.url = url.replace("http://", "ws://").split("?")[0] + "ws"
        self.frames: list[tuple[dict, dict]] = []
        self.ws = None
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.connected.wait(10), f"no websocket connection to {self.url}"

    def _read(self):
        with connect(self.url) as ws:
            self.ws = ws
            self.connected.set()
            try:
                while True:
                    self.frames.append(decode_frame(ws.recv()))
            except WebSocketException:
                pass

    def spots(self, kind: str | None = None) -> list[int]:
        return [int(i) for h, r in self.frames if kind is None or h["type"] == kind for i in r["index"]]

    def close(self):
        self.ws.close()
        self.thread.join(5)


def test_a_page_gets_one_snapshot_then_only_the_spots_that_changed(worker, test_model, tmp_path):
    view = ViewProcess(tmp_path, "--results", worker.output, "--control", worker.control, "--shape", "4x6")
    view.wait_subscribed()
    early = PageSocket(view.url)
    late = None
    pusher = SpectrumPusher(worker.input)
    data = spectra(24, seed=5)
    try:
        wait_for(lambda: early.frames, 10, "the first page's snapshot")
        assert early.frames[0][0]["type"] == "snapshot" and early.frames[0][0]["count"] == 0
        for i in range(12):
            pusher.send(data[i], iy=i // 6, ix=i % 6)
        wait_for(lambda: len(set(early.spots())) == 12, 20, "the first 12 spots on the first page")
        late = PageSocket(view.url)                      # a page opened mid-map
        wait_for(lambda: late.frames, 10, "the second page's snapshot")
        for i in range(12, 24):
            pusher.send(data[i], iy=i // 6, ix=i % 6)
        wait_for(lambda: len(set(early.spots())) == 24 and len(set(late.spots())) == 24, 20, "every spot on both")

        snapshot_header, snapshot = late.frames[0]
        assert snapshot_header["type"] == "snapshot" and snapshot_header["shape"] == list(SHAPE)
        assert sorted(snapshot["index"].tolist()) == list(range(12))
        assert sorted(late.spots("delta")) == list(range(12, 24))      # never the map again
        assert [h["type"] for h, _ in late.frames].count("snapshot") == 1
        assert sorted(early.spots("delta")) == list(range(24))

        session = ort.InferenceSession(str(test_model), providers=["CPUExecutionProvider"])
        primary, label, novelty = session.run(["primary", "label", "novelty"], {"secondary": data})
        shown = {}
        for _, records in late.frames:
            for i, lab, em, nov in zip(records["index"], records["label"], records["emission"], records["novelty"]):
                shown[int(i)] = (int(lab), float(em), float(nov))
        np.testing.assert_array_equal([shown[i][0] for i in range(24)], label)
        np.testing.assert_allclose([shown[i][1] for i in range(24)], primary.sum(axis=1), rtol=1e-5)
        np.testing.assert_allclose([shown[i][2] for i in range(24)], novelty, rtol=1e-6)
        assert all(np.isnan(r["error"]).all() for _, r in late.frames)  # no map file: no error map
        assert view.stats()["clients"] == 2
    finally:
        pusher.close()
        early.close()
        if late is not None:
            late.close()
        view.stop()


def test_a_spot_without_the_map_file_shows_the_transferred_spectrum_and_says_why_no_other(worker, tmp_path):
    view = ViewProcess(tmp_path, "--results", worker.output, "--control", worker.control, "--shape", "2x2")
    view.wait_subscribed()
    pusher = SpectrumPusher(worker.input)
    try:
        page = PageSocket(view.url)
        wait_for(lambda: page.frames, 10, "the snapshot")
        pusher.send(spectra(1, seed=9)[0], iy=1, ix=0)
        wait_for(lambda: page.spots("delta"), 20, "the spot")
        with urlopen(view.url + "api/spot?iy=1&ix=0", timeout=5) as reply:
            spot = json.loads(reply.read())
        assert list(spot["curves"]) == ["transferred"]
        assert len(spot["curves"]["transferred"]["y"]) == 40
        assert any("--map" in note for note in spot["notes"])
        page.close()
    finally:
        pusher.close()
        view.stop()


def test_the_token_guards_page_websocket_and_spot_requests(tmp_path):
    view = ViewProcess(tmp_path, "--results", "tcp://127.0.0.1:9", "--shape", "2x2", "--token", "s3cret")
    base = view.url.split("?")[0]
    try:
        assert view.url.endswith("?token=s3cret")
        for path in ("", "api/spot?iy=0&ix=0", "static/view.js"):
            with pytest.raises(HTTPError) as refused:
                urlopen(base + path, timeout=5)
            assert refused.value.code == 403
        with pytest.raises(InvalidStatus):
            connect(base.replace("http://", "ws://") + "ws").close()
        with urlopen(view.url, timeout=5) as reply:
            cookie = reply.headers["set-cookie"].split(";")[0]
            assert b"live view" in reply.read()
        with urlopen(Request(base + "static/view.js", headers={"Cookie": cookie}), timeout=5) as reply:
            assert reply.status == 200
        with connect(base.replace("http://", "ws://") + "ws", additional_headers={"Cookie": cookie}) as ws:
            header, _ = decode_frame(ws.recv(timeout=10))
            assert header["type"] == "snapshot"
            # the page is read-only: what a client sends changes nothing and is not answered
            ws.send("{\"cmd\": \"stop\"}")
        assert view.proc.poll() is None
    finally:
        view.stop()


def test_off_loopback_the_page_needs_a_printed_token():
    config = prepare(ViewConfig(results=["tcp://127.0.0.1:5558"], host="0.0.0.0", port=8050))
    assert config.token and len(config.token) >= 20
    assert page_url(config).endswith(f":8050/?token={config.token}")
    assert prepare(ViewConfig(results=["x"], host="127.0.0.1")).token is None
    assert prepare(ViewConfig(results=["x"], host="::1")).token is None


@pytest.mark.parametrize("args, complaint", [
    (["--shape", "12"], "NYxNX"),
    (["--shape", "0x5"], ">= 1"),
    (["--port", "70000"], "--port"),
    (["--map", "/nonexistent/map.h5"], "map.h5"),
])
def test_bad_arguments_exit_2_naming_the_problem(args, complaint):
    out = subprocess.run([sys.executable, "-m", "streaming.cli", "view", "--results", "tcp://127.0.0.1:9", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert complaint in out.stderr and "Traceback" not in out.stderr


def test_the_spectrum_store_keeps_the_latest_spots_within_its_budget():
    n = 100
    store = SpectrumStore(n_spots=50, budget_bytes=10 * 4 * n)   # room for 10 spectra
    for i in range(25):
        store.put(np.array([i // 5]), np.array([i % 5]), np.full((1, n), i, np.float32))
    assert store.capacity == 10 and store.nbytes == 10 * 4 * n
    assert store.get(0, 0) is None and store.get(2, 4) is None            # spots 0..14 overwritten
    assert store.get(3, 0)[0] == 15 and store.get(4, 4)[0] == 24
    store.put(np.array([4]), np.array([4]), np.full((1, n), -1, np.float32))  # a spot again: same slot
    assert store.get(4, 4)[0] == -1 and store.get(3, 0)[0] == 15
    whole = SpectrumStore(n_spots=6, budget_bytes=1 << 20)
    whole.put(np.arange(6), np.zeros(6, int), np.ones((6, n), np.float32))
    assert whole.capacity == 6                                              # never more than the map


def test_wire_records_round_trip_and_a_grown_map_keeps_every_spot():
    state = MapState((3, 4))
    spots = state.flat(np.array([0, 2, 2]), np.array([1, 3, 0]))
    state.apply(spots, np.array([2, 0, 7], np.int16), np.array([1.5, 2.5, 3.5], np.float32),
                np.array([0.9, 4.0, 1.1], np.float32), np.array([0.1, np.nan, 0.7], np.float32))
    state.apply_error(spots[:1], np.array([0.05], np.float32))
    header, records = decode_frame(encode_frame({"type": "delta"}, state.filled(), state))
    assert header == {"type": "delta", "count": 3}
    assert records["index"].tolist() == sorted(spots.tolist())
    assert records["label"].tolist() == [2, 7, 0] and records["error"][0] == np.float32(0.05)
    assert records["trust"][0] == np.float32(0.1) and records["trust"][1] == np.float32(0.7)
    assert np.isnan(records["trust"][2])
    grown = state.grown_to(5, 4)
    assert grown.shape == (6, 4) and grown.shown == 3
    assert grown.label[grown.flat(np.array([2]), np.array([3]))][0] == 0
    assert grown.novelty[grown.flat(np.array([2]), np.array([0]))][0] == np.float32(1.1)


@pytest.mark.parametrize("reply, expected", [
    ({"trust_threshold": 0.45}, 0.45),
    ({"trust_threshold": "0.446"}, 0.446),          # metadata values are strings when not decoded
    ({"provenance": {"trust_threshold": 0.3}}, 0.3),
])
def test_a_calibrated_trust_threshold_in_the_model_metadata_is_marked(reply, expected):
    found = trust_threshold(reply)
    assert found["value"] == pytest.approx(expected) and found["calibrated"]


@pytest.mark.parametrize("reply", [None, {}, {"trust_threshold": "high"}, {"trust_threshold": float("nan")},
                                   {"trust_threshold": -1}, {"trust_threshold": True}, {"trust_threshold": [1]},
                                   {"provenance": "not json"}])
def test_without_a_usable_trust_threshold_none_is_marked_and_novelty_keeps_its_guide_value(reply):
    assert trust_threshold(reply) is None
    found = novelty_threshold(reply)
    assert found["value"] == DOCUMENTED_NOVELTY_THRESHOLD and not found["calibrated"]
    assert "docs/novelty.md" in found["source"]


def test_the_expected_relative_error_of_each_result_reaches_the_page(tmp_path):
    """A worker whose model has the trust output publishes `expected_rel_error` per spectrum (spec)."""
    import zmq

    from streaming import protocol

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    view = ViewProcess(tmp_path, "--results", f"tcp://127.0.0.1:{port}", "--shape", "2x3")
    expected = {0: 0.12, 1: None, 2: 0.61, 3: None, 4: 0.33, 5: 1.7}   # None: not finite, or not published

    def publish(seq, header_extra, k=1, spots=(0,)):
        frames = protocol.encode_transfer(np.ones((k, 40), np.float32), seq=seq, in_seq=seq, single=k == 1,
                                          label=np.zeros(k, int), novelty=np.ones(k), model="m", latency_s=0.001,
                                          echo={"iy": [s // 3 for s in spots] if k > 1 else spots[0] // 3,
                                                "ix": [s % 3 for s in spots] if k > 1 else spots[0] % 3},
                                          worker="w")
        header = json.loads(bytes(frames[1]))
        header.update(header_extra)
        pub.send_multipart([frames[0], json.dumps(header).encode(), frames[2]])

    try:
        def contact():
            pub.send_multipart(protocol.encode_status({"seq": 0, "worker": "w", "model": "m", "t": time.time()}))
            return view.stats()["contact"]
        wait_for(contact, 20, "the view's subscription")
        page = PageSocket(view.url)
        wait_for(lambda: page.frames, 10, "the snapshot")
        publish(0, {"expected_rel_error": expected[0]})
        publish(1, {}, spots=(1,))                                 # a model without the trust output
        publish(2, {"expected_rel_error": [expected[2], None, expected[4], expected[5]]}, k=4, spots=(2, 3, 4, 5))
        wait_for(lambda: len(set(page.spots())) == 6, 20, "every spot")
        shown = {}
        for _, records in page.frames:
            shown.update(zip(records["index"].tolist(), records["trust"].tolist()))
        for spot, value in expected.items():
            if value is None:
                assert np.isnan(shown[spot]), spot
            else:
                assert shown[spot] == pytest.approx(value, rel=1e-6)
        page.close()
    finally:
        view.stop()
        ctx.destroy(linger=0)


def test_parse_shape():
    assert parse_shape("500x500") == (500, 500) and parse_shape("6X8") == (6, 8)


def test_the_view_loads_no_torch():
    script = ("import sys, streaming.cli, streaming.view.app, streaming.view.server, streaming.view.measured, "
              "acquisition.shared.drift, acquisition.shared.spectral, acquisition.live_view; "
              "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_without_a_shape_the_map_grows_and_pages_get_it_anew(worker, tmp_path):
    view = ViewProcess(tmp_path, "--results", worker.output, "--control", worker.control)
    view.wait_subscribed()
    pusher = SpectrumPusher(worker.input)
    page = PageSocket(view.url)
    try:
        wait_for(lambda: page.frames, 10, "the snapshot")
        pusher.send(spectra(1, seed=1)[0], iy=0, ix=0)
        wait_for(lambda: page.spots() == [0], 20, "the first spot")
        pusher.send(spectra(1, seed=2)[0], iy=5, ix=9)
        header, records = wait_for(lambda: next(((h, r) for h, r in page.frames
                                                 if h["type"] == "snapshot" and h["count"] == 2), None), 20,
                                   "a snapshot of the grown map")
        ny, nx = header["shape"]
        assert ny >= 6 and nx >= 10
        assert sorted(records["index"].tolist()) == [0, 5 * nx + 9]
    finally:
        pusher.close()
        page.close()
        view.stop()


def test_transfer_messages_the_view_cannot_place_are_counted_and_the_view_keeps_going(tmp_path):
    import zmq

    from streaming import protocol

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    view = ViewProcess(tmp_path, "--results", f"tcp://127.0.0.1:{port}")     # no shape: the map grows
    seq = iter(range(100))

    def publish(**header_changes):
        frames = protocol.encode_transfer(np.ones((1, 40), np.float32), seq=next(seq), in_seq=0, single=True,
                                          label=np.zeros(1, int), novelty=np.ones(1), model="m", latency_s=0.001,
                                          echo={"iy": 0, "ix": 0}, worker="w")
        header = {**json.loads(bytes(frames[1])), **header_changes}
        pub.send_multipart([frames[0], json.dumps(header).encode(), frames[2]])

    try:
        def contact():
            pub.send_multipart(protocol.encode_status({"seq": 0, "worker": "w", "model": "m", "t": time.time()}))
            return view.stats()["contact"]
        wait_for(contact, 20, "the view's subscription")
        page = PageSocket(view.url)
        publish(iy="row three")                          # not an index
        publish(iy=10**15, ix=10**15)                    # would grow the map past any memory
        publish(label=10**30, iy=0, ix=1)                # a label the page cannot draw
        publish(novelty="high", iy=1, ix=0)              # not a number
        publish(iy=1, ix=1, label=3)                     # a good one after all that
        wait_for(lambda: 3 in [int(v) for _, r in page.frames for v in r["label"]], 20, "the good spot")
        assert view.proc.poll() is None
        header, _ = next(f for f in reversed(page.frames) if f[0]["type"] == "snapshot")
        shape = header["shape"]
        assert shape[0] * shape[1] <= 16                 # not grown for the absurd spot
        page.close()
    finally:
        view.stop()
        ctx.destroy(linger=0)


@pytest.mark.parametrize("calibration", ["nominal", "daily"])
def test_the_view_tells_where_the_measured_secondarys_lines_sit_against_the_models(tmp_path, calibration):
    """A severe day on the factory axes: the lines sit where the drift put them; calibrated on the day
    (and resampled onto the model's axis) they sit where the model saw them."""
    from acquisition.shared.spectral import baseline_correct
    from sim.generate import generate_map
    from sim.scene import PairedScene
    from streaming.view.measured import MeasuredMap

    path = generate_map(tmp_path / "day1.h5", shape=(5, 6), step_um=(150.0, 150.0), day=1, seed=2,
                        day_change="severe", calibration=calibration, progress=False)
    training_day = PairedScene(seed=2)
    x = np.linspace(500.0, 2500.0, 100)
    training = training_day.shots(x, x[::-1], rng=np.random.default_rng(0))["secondary"]
    model_info = {"secondary_wavelengths": training_day.wavelengths("secondary").tolist(),
                  "secondary_mean_spectrum": baseline_correct(training).mean(axis=0).tolist()}
    measured = MeasuredMap(path, model_info)
    measured.start()
    try:
        shift, = wait_for(lambda: None if measured.secondary_shift_px is None else [measured.secondary_shift_px], 30,
                          "where the secondary's lines sit")
    finally:
        measured.stop()
    drift_px = PairedScene(seed=2, day=1, day_change="severe").conditions.drift["secondary"].shift_px
    if calibration == "nominal":
        assert shift == pytest.approx(-drift_px, abs=0.15) and abs(drift_px) > 0.5
        assert "was not recalibrated" in measured.secondary_shift_note()
    else:
        assert abs(shift) < 0.1 and measured.secondary_shift_note() is None
