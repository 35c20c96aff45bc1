"""The worker over real sockets, driven by a plain pyzmq client written from the spec."""

import json
import math
import time

import numpy as np
import onnxruntime as ort

from streaming.control import request
from streaming.subscriber import ResultSubscriber

from .conftest import N_PRIMARY, N_SECONDARY, PlainClient, spectra


def direct_run(model_path, x: np.ndarray) -> dict:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    primary, label, novelty = session.run(["primary", "label", "novelty"], {"secondary": x.astype(np.float32)})
    return {"primary": primary, "label": label, "novelty": novelty}


def test_results_match_a_direct_onnxruntime_run(client, test_model):
    x = spectra(7, seed=11)
    # one batch message, then single spectra carrying map positions, interleaved as a producer would
    client.send({"v": 1, "seq": 0, "dtype": "<f4", "shape": [4, N_SECONDARY], "iy": [0, 0, 1, 1],
                 "ix": [0, 1, 0, 1], "shot": [100, 101, 102, 103], "system": "sec-a"}, x[:4].tobytes())
    for i in range(4, 7):
        client.send({"v": 1, "seq": i - 3, "dtype": "<f4", "shape": [N_SECONDARY], "iy": 2, "ix": i - 4,
                     "shot": 100 + i, "t": 1.5e9}, x[i].tobytes())
    results = client.receive({b"transfer"}, 4)
    assert [h["in_seq"] for _, h, _ in results] == [0, 1, 2, 3]
    seqs = [h["seq"] for _, h, _ in results]
    assert seqs == list(range(seqs[0], seqs[0] + 4))

    expected = direct_run(test_model, x)
    _, first, payload = results[0]
    assert first["shape"] == [4, N_PRIMARY] and first["system"] == "sec-a"
    assert first["shot"] == [100, 101, 102, 103] and first["iy"] == [0, 0, 1, 1]
    np.testing.assert_allclose(np.frombuffer(payload, "<f4").reshape(4, N_PRIMARY), expected["primary"][:4],
                               rtol=1e-5, atol=1e-4)
    assert first["label"] == expected["label"][:4].tolist()
    np.testing.assert_allclose(first["novelty"], expected["novelty"][:4], rtol=1e-5)
    for offset, (_, header, payload) in enumerate(results[1:], start=4):
        assert header["shape"] == [N_PRIMARY] and isinstance(header["label"], int)
        assert header["iy"] == 2 and header["ix"] == offset - 4 and header["t"] == 1.5e9
        np.testing.assert_allclose(np.frombuffer(payload, "<f4"), expected["primary"][offset], rtol=1e-5, atol=1e-4)
        assert header["label"] == int(expected["label"][offset])
        assert math.isclose(header["novelty"], float(expected["novelty"][offset]), rel_tol=1e-5)
        assert header["model"] and 0 <= header["latency_s"] < 5


def test_u2_and_f8_inputs_give_the_same_results_as_f4(client, test_model):
    counts = np.random.default_rng(5).integers(0, 4000, (2, N_SECONDARY)).astype("<u2")
    client.send({"v": 1, "seq": 0, "dtype": "<u2", "shape": [2, N_SECONDARY]}, counts.tobytes())
    client.send({"v": 1, "seq": 1, "dtype": "<f8", "shape": [2, N_SECONDARY]}, counts.astype("<f8").tobytes())
    results = client.receive({b"transfer"}, 2)
    expected = direct_run(test_model, counts.astype(np.float32))["primary"]
    for _, header, payload in results:
        np.testing.assert_allclose(np.frombuffer(payload, "<f4").reshape(2, -1), expected, rtol=1e-5, atol=1e-4)


def good(seq: int) -> tuple[dict, bytes]:
    return {"v": 1, "seq": seq, "dtype": "<f4", "shape": [N_SECONDARY]}, spectra(1, seed=seq)[0].tobytes()


MALFORMED = {
    "bad-frames": lambda: [b"secondary", json.dumps(good(100)[0]).encode()],
    "bad-json": lambda: [b"secondary", b'{"v": 1, "seq": 101,', good(101)[1]],
    "bad-version": lambda: [b"secondary", json.dumps({**good(102)[0], "v": 9}).encode(), good(102)[1]],
    "bad-dtype": lambda: [b"secondary", json.dumps({**good(103)[0], "dtype": "float32"}).encode(), good(103)[1]],
    "bad-size": lambda: [b"secondary", json.dumps(good(104)[0]).encode(), good(104)[1][:-8]],
    "bad-n": lambda: [b"secondary", json.dumps({**good(105)[0], "shape": [N_SECONDARY // 2]}).encode(),
                      good(105)[1][: 2 * N_SECONDARY]],
    "non-finite": lambda: [b"secondary", json.dumps(good(106)[0]).encode(),
                           np.full(N_SECONDARY, np.nan, "<f4").tobytes()],
    "bad-index": lambda: [b"secondary", json.dumps({**good(107)[0], "shape": [1, N_SECONDARY], "iy": [1, 2]}).encode(),
                          good(107)[1]],
}


def test_every_malformed_input_gets_an_error_and_the_worker_keeps_serving(client):
    for i, (code, make) in enumerate(MALFORMED.items()):
        client.send_frames(make())
        header, payload = good(i)
        client.send(header, payload)
    received = client.receive({b"transfer", b"error"}, 2 * len(MALFORMED))
    assert len(received) == 2 * len(MALFORMED)
    errors = [h for topic, h, _ in received if topic == b"error"]
    transfers = [h for topic, h, _ in received if topic == b"transfer"]
    assert [e["code"] for e in errors] == list(MALFORMED)
    assert all(e["v"] == 1 and len(e["reason"]) > 15 for e in errors)
    assert len({e["reason"] for e in errors}) == len(MALFORMED)
    # in_seq is given whenever the header could be read
    assert [e.get("in_seq") for e in errors] == [None, None, 102, 103, 104, 105, 106, 107]
    assert [t["in_seq"] for t in transfers] == list(range(len(MALFORMED)))
    # results and errors come out in input order
    assert [topic for topic, _, _ in received] == [b"error", b"transfer"] * len(MALFORMED)


def test_status_messages_appear_about_once_a_second(client):
    statuses = client.receive({b"status"}, 3, timeout_s=6)
    assert len(statuses) == 3
    for _, header, payload in statuses:
        assert header["v"] == 1 and payload == b""
        for key in ("received", "published", "rejected", "throughput_spectra_s", "latency_s", "model"):
            assert key in header
        assert set(header["latency_s"]) >= {"p50", "p99"}
    times = [h["t"] for _, h, _ in statuses if "hello" not in h]
    assert all(0.3 < b - a < 5 for a, b in zip(times, times[1:])), "about once a second"


def test_control_ping_stats_model(client, worker):
    ping = client.control({"cmd": "ping"})
    assert ping["ok"] and ping["ready"] and ping["n_secondary"] == N_SECONDARY and ping["n_primary"] == N_PRIMARY
    stats = client.control({"cmd": "stats"})
    assert stats["ok"] and stats["model"] == ping["model"] and stats["received"] >= 0
    # the fields of a status message, seq and t included (docs/streaming.md)
    assert isinstance(stats["seq"], int) and abs(stats["t"] - time.time()) < 60
    model = client.control({"cmd": "model"})
    assert model["ok"] and model["model"] == ping["model"]
    assert len(model["primary_wavelengths"]) == N_PRIMARY and model["provenance"]["kind"] == "test model"
    assert {o["name"] for o in model["outputs"]} == {"primary", "latent", "label", "novelty"}
    bad = client.control({"cmd": "reboot"})
    assert not bad["ok"] and "cmd" in bad["error"]
    # the worker still answers after a refused request
    assert client.control({"cmd": "ping"})["ok"]


def test_stats_count_what_was_served(worker):
    before = request(worker.control, {"cmd": "stats"})
    c = PlainClient(worker.input, worker.output, worker.control)
    try:
        c.wait_joined()
        c.send(*good(0))
        c.send_frames([b"secondary", b"{", b""])
        assert len(c.receive({b"transfer", b"error"}, 2)) == 2
    finally:
        c.close()
    after = request(worker.control, {"cmd": "stats"})
    assert after["published"] - before["published"] == 1
    assert after["rejected"] - before["rejected"] == 1
    assert after["received"] - before["received"] == 2


def test_messages_sent_right_after_the_handshake_are_all_received(worker):
    with ResultSubscriber(worker.output) as sub:
        sub.wait_ready(worker.control)
        c = PlainClient(worker.input, worker.output, worker.control)
        try:
            for i in range(200):
                c.send(*good(i))
            got = []
            deadline = time.monotonic() + 15
            while len(got) < 200 and time.monotonic() < deadline:
                message = sub.recv(timeout_s=0.5)
                if message is not None and message.topic == "transfer":
                    got.append(message.in_seq)
        finally:
            c.close()
    assert got == list(range(200))
    assert sub.missing == 0


def test_handshake_without_control_waits_for_a_periodic_status(worker):
    with ResultSubscriber(worker.output) as sub:
        sub.wait_ready(timeout_s=5)
        assert worker.worker_id in sub.status


def test_the_worker_stops_cleanly_on_sigterm_and_sigint(test_model, tmp_path):
    import signal

    from .conftest import WorkerProcess

    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = WorkerProcess(test_model, tmp_path)
        c = PlainClient(proc.input, proc.output, proc.control)
        c.wait_joined()
        c.send(*good(0))
        assert len(c.receive({b"transfer"}, 1)) == 1
        c.close()
        assert proc.stop(sig) == 0
        assert "stopping" in proc.log()


def test_handshake_waits_for_a_worker_that_starts_later(test_model, tmp_path):
    import socket as socket_module
    import threading

    from .conftest import WorkerProcess

    ports = {}
    for name in ("input", "output", "control"):
        with socket_module.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    started = []
    launcher = threading.Timer(0.5, lambda: started.append(WorkerProcess(test_model, tmp_path, ports=ports)))
    launcher.start()
    try:
        with ResultSubscriber(ports["output"]) as sub:
            sub.wait_ready(ports["control"], timeout_s=30)
            launcher.join()
            assert sub.status and started[0].worker_id in sub.status
    finally:
        launcher.join()
        for proc in started:
            proc.stop()
