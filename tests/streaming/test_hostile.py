"""The worker under hostile input and rough shutdown, over real sockets (spec/stream-protocol.md, "Limits").

The fuzz tests generate messages nobody wrote by hand: random frame counts, random bytes,
deeply nested and oversized JSON, wrong types, huge numbers, payloads of the right and the
wrong size. Every message must get exactly one reply, in order, and the worker must answer
``ping`` afterwards with no internal error counted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import N_SECONDARY, PlainClient, WorkerProcess, spectra

# every frame stays below the worker's ZMQ_MAXMSGSIZE (a larger one is dropped by ZeroMQ with
# its connection, by design, and gets no reply): 64 KiB headers, payloads of at most 256 spectra
MAX_FUZZ_FRAME = 60_000

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                          max_leaves=20)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def header_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["plausible", "plausible", "plausible", "value", "bytes", "deep", "huge-number"]))
    if kind == "value":
        return json.dumps(draw(json_value)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(1, 20_000))
        return b'{"v": 1, "seq": 1, "note": ' + nested(depth) + b"}"
    if kind == "huge-number":
        digits = draw(st.integers(300, 20_000))
        return b'{"v": 1, "seq": ' + b"9" * digits + b', "dtype": "<f4", "shape": [1e999]}'
    header = {"v": draw(st.sampled_from([1, 1, 1, 2, "1", None, 1.0])),
              "seq": draw(st.one_of(st.integers(0, 10**6), st.integers(), st.floats(), st.text(max_size=5))),
              "dtype": draw(st.sampled_from(["<f4", "<f4", "<u2", "<f8", ">f4", "float32", "", "<i8"])),
              "shape": draw(st.one_of(
                  st.just([N_SECONDARY]), st.lists(st.integers(-2, 300), min_size=1, max_size=2).map(
                      lambda s: s[:-1] + [N_SECONDARY] if len(s) == 2 else s),
                  st.lists(st.integers(), max_size=3), json_value))}
    for key in ("iy", "ix", "shot", "t", "system", "source"):
        if draw(st.booleans()):
            header[key] = draw(st.one_of(st.integers(-5, 10**7), st.integers(), st.lists(st.integers(0, 99), max_size=4),
                                         json_value))
    if draw(st.integers(0, 9)) == 0:
        header["note"] = draw(json_value)
    header = {k: v for k, v in header.items() if v is not None or draw(st.booleans())}
    return json.dumps(header).encode()


@st.composite
def payload(draw) -> bytes:
    kind = draw(st.sampled_from(["one", "few", "random", "empty", "overflow"]))
    if kind == "one":
        return spectra(1, seed=draw(st.integers(0, 99)))[0].tobytes()
    if kind == "few":
        return spectra(draw(st.integers(1, 4)), seed=1).tobytes()
    if kind == "overflow":       # finite in float64, beyond float32: must be refused, not computed
        return np.full(N_SECONDARY, draw(st.sampled_from([1e300, -1e39, 3.4e38])), "<f8").tobytes()
    if kind == "empty":
        return b""
    return draw(st.binary(min_size=0, max_size=4 * N_SECONDARY * 3))


@st.composite
def input_message(draw) -> list[bytes]:
    topic = draw(st.sampled_from([b"secondary"] * 8 + [b"transfer", b"", b"\xff" * 9]))
    frames = [topic, draw(header_bytes()), draw(payload())]
    count = draw(st.sampled_from([3] * 12 + [0, 1, 2, 4, 5]))
    if count < 3:
        frames = frames[:count] or [b""]
    else:
        frames += [draw(st.binary(max_size=50)) for _ in range(count - 3)]
    assert all(len(f) <= MAX_FUZZ_FRAME for f in frames)
    return frames


@st.composite
def control_request(draw) -> list[bytes]:
    kind = draw(st.sampled_from(["command", "value", "bytes", "deep", "frames", "token"]))
    if kind == "command":
        return [json.dumps({"cmd": draw(st.sampled_from(["ping", "stats", "model", "hello", "reboot", ""]))}).encode()]
    if kind == "token":
        return [json.dumps({"cmd": "hello", "token": draw(st.one_of(st.text(max_size=100), json_value))}).encode()]
    if kind == "value":
        return [json.dumps(draw(json_value)).encode()]
    if kind == "deep":
        return [b'{"cmd": "ping", "x": ' + nested(draw(st.integers(1, 5000))) + b"}"]
    if kind == "frames":
        return draw(st.lists(st.binary(max_size=40), min_size=2, max_size=4))
    return [draw(st.binary(max_size=200))]


@pytest.fixture(scope="module")
def fuzz_worker(test_model, tmp_path_factory):
    proc = WorkerProcess(test_model, tmp_path_factory.mktemp("fuzz"))
    client = PlainClient(proc.input, proc.output, proc.control)
    client.wait_joined()
    yield proc, client
    client.close()
    proc.stop()


SENTINEL_SOURCE = "fuzz-sentinel"
sent_messages = []


@settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(messages=st.lists(input_message(), min_size=1, max_size=16))
def test_every_fuzzed_input_message_gets_exactly_one_reply(fuzz_worker, messages):
    proc, client = fuzz_worker
    for frames in messages:
        client.send_frames(frames)
    # a valid message after them: everything before its result is the replies to the fuzz
    marker = int.from_bytes(os.urandom(4), "little")
    client.send({"v": 1, "seq": marker, "dtype": "<f4", "shape": [N_SECONDARY], "source": SENTINEL_SOURCE},
                spectra(1)[0].tobytes())
    replies = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not client.sub.poll(100):
            continue
        topic, header, _ = client.sub.recv_multipart()
        if topic == b"status":
            continue
        header = json.loads(header)
        if header.get("source") == SENTINEL_SOURCE and header.get("in_seq") == marker:
            assert topic == b"transfer"
            break
        replies.append((topic, header))
    else:
        raise AssertionError(f"worker stopped answering; log:\n{proc.log()[-3000:]}")
    assert proc.proc.poll() is None, proc.log()[-3000:]
    assert len(replies) == len(messages), (messages, replies)
    for topic, header in replies:
        assert topic in (b"transfer", b"error")
        if topic == b"transfer":
            assert all(v is not None and np.isfinite(v) for v in np.atleast_1d(header["novelty"]))
        else:
            assert header["code"] and len(header["reason"]) < 1000
    sent_messages.append(len(messages))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(requests=st.lists(control_request(), min_size=1, max_size=8))
def test_every_fuzzed_control_request_gets_exactly_one_bounded_reply(fuzz_worker, requests):
    proc, client = fuzz_worker
    req = client.ctx.socket(zmq.REQ)
    req.linger = 0
    req.connect(proc.control)
    try:
        for frames in requests:
            req.send_multipart(frames)
            assert req.poll(10_000), f"no reply to {frames!r}; log:\n{proc.log()[-3000:]}"
            reply = req.recv_multipart()
            assert len(reply) == 1
            decoded = json.loads(reply[0])
            assert isinstance(decoded.get("ok"), bool)
            if not decoded["ok"]:
                assert len(decoded["error"]) < 300
    finally:
        req.close()


def test_the_worker_is_whole_after_the_fuzz(fuzz_worker):
    proc, client = fuzz_worker
    reply = client.control({"cmd": "ping"})
    assert reply["ok"] and reply["ready"]
    stats = client.control({"cmd": "stats"})
    # the decoder raised only MessageError: no message reached the catch-all
    assert stats["internal_errors"] == 0, proc.log()[-3000:]
    assert stats["received"] >= sum(sent_messages)
    print(f"fuzzed input messages answered: {sum(sent_messages)}")
    assert proc.proc.poll() is None


def test_a_hello_token_is_bounded_and_never_republished_when_too_long(fuzz_worker):
    proc, client = fuzz_worker
    reply = client.control({"cmd": "hello", "token": "x" * 65})
    assert not reply["ok"] and "64" in reply["error"] and len(json.dumps(reply)) < 300
    reply = client.control({"cmd": "hello", "token": "x" * 5000})
    assert not reply["ok"] and "4096" in reply["error"] and len(json.dumps(reply)) < 300
    # 20 MB: ZeroMQ drops it with its connection before the worker sees it; no reply, no status
    req = client.ctx.socket(zmq.REQ)
    req.linger = 0
    req.connect(proc.control)
    req.send(json.dumps({"cmd": "hello", "token": "x" * 20_000_000}).encode())
    assert not req.poll(1000)
    req.close()
    assert client.control({"cmd": "ping"})["ok"]
    statuses = client.receive({b"status"}, 3, timeout_s=3)
    assert statuses and all(len(h.get("hello", "")) <= 64 for _, h, _ in statuses)


def test_the_model_reply_names_no_local_path(fuzz_worker, test_model):
    proc, client = fuzz_worker
    reply = client.control({"cmd": "model"})
    text = json.dumps(reply)
    assert reply["file"] == test_model.name and len(reply["sha256"]) == 64
    assert str(test_model.parent) not in text and "/tmp" not in text
    assert reply["limits"]["max_message_spectra"] >= 1


def test_float32_overflow_is_a_non_finite_error_not_a_nan_result(fuzz_worker):
    proc, client = fuzz_worker
    client.send({"v": 1, "seq": 1, "dtype": "<f8", "shape": [N_SECONDARY]}, np.full(N_SECONDARY, 1e300).tobytes())
    # finite in float32, but x - baseline overflows in the model's preprocessing
    client.send({"v": 1, "seq": 2, "dtype": "<f4", "shape": [N_SECONDARY]},
                np.resize(np.array([3.4e38, -3.4e38], "<f4"), N_SECONDARY).tobytes())
    replies = client.receive({b"transfer", b"error"}, 2)
    assert [(t, h.get("code"), h["in_seq"]) for t, h, _ in replies] == [(b"error", "non-finite", 1),
                                                                    (b"error", "non-finite", 2)]


def test_a_message_beyond_the_spectra_limit_is_refused_with_its_own_code(test_model, tmp_path):
    proc = WorkerProcess(test_model, tmp_path, "--max-message-spectra", "4", "--queue-mb", "1")
    client = PlainClient(proc.input, proc.output, proc.control)
    try:
        client.wait_joined()
        client.send({"v": 1, "seq": 0, "dtype": "<f4", "shape": [5, N_SECONDARY]}, spectra(5).tobytes())
        client.send({"v": 1, "seq": 1, "dtype": "<f4", "shape": [4, N_SECONDARY]}, spectra(4).tobytes())
        replies = client.receive({b"transfer", b"error"}, 2)
        assert [(t, h.get("code"), h["in_seq"]) for t, h, _ in replies] == [(b"error", "too-many-spectra", 0),
                                                                             (b"transfer", None, 1)]
        limits = client.control({"cmd": "ping"})["limits"]
        assert limits["max_message_spectra"] == 4
        assert limits["max_frame_bytes"] == 65536      # the header limit: 4 x 48 x 8 bytes is less
        # 1 MB of queue in messages of at most 64 KiB header + 4 x 48 x 8 bytes payload
        assert limits["max_message_bytes"] == 65536 + 4 * N_SECONDARY * 8
        assert limits["input_hwm_messages"] == 1_000_000 // limits["max_message_bytes"]
        # a frame over ZMQ_MAXMSGSIZE is dropped with its connection; the worker and others go on
        rogue = client.ctx.socket(zmq.PUSH)
        rogue.linger = 0
        rogue.connect(proc.input)
        rogue.send_multipart([b"secondary", b"{}", b"\0" * (limits["max_frame_bytes"] * 4)])
        client.send({"v": 1, "seq": 2, "dtype": "<f4", "shape": [N_SECONDARY]}, spectra(1)[0].tobytes())
        replies = client.receive({b"transfer", b"error"}, 1)
        assert [(t, h["in_seq"]) for t, h, _ in replies] == [(b"transfer", 2)]
        assert client.control({"cmd": "ping"})["ok"] and proc.proc.poll() is None
        assert client.control({"cmd": "stats"})["received"] == 3      # the rogue frame never arrived
        rogue.close()
    finally:
        client.close()
        assert proc.stop() == 0


SIGNAL_RUNS = 10
EXIT_BOUND_S = 20      # a hang detector on a loaded machine, not a speed claim (bench/stream_abuse.py)


def test_signal_bursts_at_random_moments_always_end_in_one_clean_exit(test_model, tmp_path):
    rng = random.Random(15)
    for run in range(SIGNAL_RUNS):
        proc = WorkerProcess(test_model, tmp_path)
        client = PlainClient(proc.input, proc.output, proc.control)
        try:
            for i in range(rng.randrange(0, 200)):       # traffic in flight when the signals come
                client.send({"v": 1, "seq": i, "dtype": "<f4", "shape": [N_SECONDARY]}, spectra(1)[0].tobytes())
            time.sleep(rng.uniform(0, 0.3))
            first = time.monotonic()
            for _ in range(rng.randrange(2, 12)):
                proc.proc.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
                if rng.random() < 0.5:
                    time.sleep(rng.uniform(0, 0.02))
            code = proc.proc.wait(EXIT_BOUND_S)
        finally:
            client.close()
            if proc.proc.poll() is None:
                proc.proc.kill()
            proc.stop()
        log = proc.log()
        assert code == 0, f"run {run}: exit {code} after {time.monotonic() - first:.1f} s\n{log[-2000:]}"
        assert log.count("stopping") == 1 and "Traceback" not in log, log[-2000:]
