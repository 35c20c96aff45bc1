"""The worker under abuse: prints ONE JSON object (spec/stream-protocol.md, "Limits").

- flood: a producer sends maximum-size valid messages (``--max-message-spectra`` spectra of
  ``<f8``, the widest dtype: 2.0 MB each for the paper-size model by default) as fast as its PUSH lets
  it, for ``--flood-s`` seconds (the issue's figure is 60 s; the default is shorter). The
  worker's resident memory is sampled from /proc every 50 ms: peak during the flood
  against its RSS at rest (model loaded, one batch run), and the bound the docs state
  (at rest + queue budget + two turns' batches). The producer is meant to block: how many
  messages it got out against how many results came back says so.
- fuzz: ``--fuzz`` messages generated from valid ones (random frame counts, random bytes,
  deep nesting, huge numbers, wrong types, wrong sizes, float32 overflow) at a worker on a
  small test model; each must get exactly one reply, and the worker must answer ping after.
- signals: ``--signal-runs`` workers, each stopped by a burst of 2-12 SIGINT/SIGTERM at a
  random moment under traffic; a run counts when it exits with code 0 within ``--exit-bound-s``.

Run: .venv/bin/python bench/stream_abuse.py [--flood-s 60] [--fuzz 5000] [--signal-runs 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stream import N_PRIMARY, N_SECONDARY, build_model  # noqa: E402

SMALL_N = 48


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def start_worker(model: Path, workdir: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"ready-{time.monotonic_ns()}.json"
    log = open(workdir / "worker.log", "a")
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "--log-level", "WARNING", "serve", "--model",
                             str(model), "--input", "tcp://127.0.0.1:*", "--output", "tcp://127.0.0.1:*",
                             "--control", "tcp://127.0.0.1:*", "--ready-file", str(ready), *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((workdir / "worker.log").read_text())
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def control(address: str, request: dict, timeout_s: float = 10.0) -> dict | None:
    import zmq

    with zmq.Context() as ctx, ctx.socket(zmq.REQ) as req:
        req.linger = 0
        req.connect(address)
        req.send_json(request)
        return req.recv_json() if req.poll(int(timeout_s * 1000)) else None


# ------------------------------------------------------------------ flood


def flood_producer(address: str, k: int, seconds: float, results) -> None:
    import zmq

    x = np.random.default_rng(0).uniform(0, 1000, (k, N_SECONDARY)).astype("<f8")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.sndhwm = 4         # the producer's own queue small: its sends wait on the worker's
    push.connect(address)
    header = {"v": 1, "dtype": "<f8", "shape": [k, N_SECONDARY], "source": "flood"}
    sent, blocked_s, end = 0, 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        if not push.poll(100, zmq.POLLOUT):          # the worker's queue is full: PUSH blocks
            blocked_s += time.monotonic() - started
            continue
        push.send_multipart([b"secondary", json.dumps({**header, "seq": sent}).encode(), x.data], copy=False)
        sent += 1
    push.close(linger=0)
    ctx.term()
    results.put({"sent": sent, "blocked_s": round(blocked_s, 1)})


def flood(model: Path, workdir: Path, seconds: float, k: int, queue_mb: float) -> dict:
    import zmq

    proc, info = start_worker(model, workdir, "--max-message-spectra", str(k), "--queue-mb", str(queue_mb))
    try:
        ping = control(info["control"], {"cmd": "ping"})
        # at rest: the model loaded and one full batch run, so the runtime's arena is warm
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"transfer")
        sub.setsockopt(zmq.SUBSCRIBE, b"error")
        sub.connect(info["output"])
        time.sleep(0.5)
        push = ctx.socket(zmq.PUSH)
        push.connect(info["input"])
        x = np.random.default_rng(1).uniform(0, 1000, (k, N_SECONDARY)).astype("<f8")
        # warm-up: enough messages at once for a full batch, so the runtime's arena is at its size
        warm = max(1, ping["limits"]["max_batch"] // k)
        for seq in range(warm):
            push.send_multipart([b"secondary", json.dumps({"v": 1, "seq": seq, "dtype": "<f8",
                                                           "shape": [k, N_SECONDARY]}).encode(), x.tobytes()])
        for _ in range(warm):
            if not sub.poll(60_000):
                raise RuntimeError("no result for the warm-up messages")
            sub.recv_multipart()
        time.sleep(1.0)
        rest = rss_bytes(proc.pid)
        samples, stop = [], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(rss_bytes(proc.pid))
                time.sleep(0.05)

        received = {"transfer": 0, "error": 0}

        def receive() -> None:
            while not stop.is_set():
                if sub.poll(100):
                    received[sub.recv_multipart()[0].decode()] += 1

        threads = [threading.Thread(target=sample), threading.Thread(target=receive)]
        for t in threads:
            t.start()
        results = mp.get_context("spawn").Queue()
        producer = mp.get_context("spawn").Process(target=flood_producer, args=(info["input"], k, seconds, results))
        producer.start()
        produced = results.get(timeout=seconds + 120)
        producer.join(30)
        time.sleep(2.0)          # let the worker drain what is queued
        stop.set()
        for t in threads:
            t.join()
        alive = proc.poll() is None and control(info["control"], {"cmd": "ping"}) is not None
        peak_hwm = rss_bytes(proc.pid, "VmHWM")
        push.close(linger=0)
        sub.close(linger=0)
        ctx.term()
    finally:
        proc.terminate()
        proc.wait(60)
    limits = ping["limits"]
    message = limits["max_message_bytes"]
    # queued input (per producer) + what two turns hold: per spectrum its <f8 frame, float32 copy and batch
    # row, about as much again in the runtime's intermediates, and two float32 output rows
    turn = limits["max_batch"] * (N_SECONDARY * (8 + 4 + 4 + 16) + N_PRIMARY * 4 * 2)
    bound = rest + limits["input_hwm_messages"] * message + 2 * turn
    peak = max(max(samples, default=0), peak_hwm)
    return {"seconds": seconds, "producer_blocked_share": round(produced["blocked_s"] / seconds, 3),
            "message_spectra": k, "message_mb": round(limits["max_frame_bytes"] / 1e6, 2),
            "queue_mb": queue_mb, "input_hwm_messages": limits["input_hwm_messages"],
            "messages_sent": produced["sent"], "producer_blocked_s": produced["blocked_s"],
            "results": received["transfer"], "errors": received["error"],
            "rss_rest_mb": round(rest / 1e6, 1), "rss_peak_mb": round(peak / 1e6, 1),
            "rss_growth_mb": round((peak - rest) / 1e6, 1), "stated_bound_mb": round(bound / 1e6, 1),
            "bound_parts_mb": {"rest": round(rest / 1e6, 1),
                               "queue": round(limits["input_hwm_messages"] * message / 1e6, 1),
                               "two_turns": round(2 * turn / 1e6, 1)},
            "within_bound": peak <= bound, "worker_alive": alive}


# ------------------------------------------------------------------ fuzz


def fuzzed_message(rng: random.Random, seq: int) -> list[bytes]:
    header = {"v": 1, "seq": seq, "dtype": "<f4", "shape": [SMALL_N]}
    payload = np.random.default_rng(seq).uniform(0, 500, SMALL_N).astype("<f4").tobytes()
    kind = rng.randrange(12)
    if kind == 0:
        return [b"secondary", bytes(rng.getrandbits(8) for _ in range(rng.randrange(200))), payload]
    if kind == 1:
        depth = rng.randrange(1, 20_000)
        return [b"secondary", b'{"v": 1, "seq": 1, "note": ' + b"[" * depth + b"]" * depth + b"}", payload]
    if kind == 2:
        return [b"secondary", b'{"v": 1, "seq": ' + b"9" * rng.randrange(20, 20_000) + b"}", payload]
    if kind == 3:
        key = rng.choice(["v", "seq", "dtype", "shape", "iy", "ix", "shot", "t", "system", "source"])
        header[key] = rng.choice([None, "x" * rng.randrange(2000), -1, 10**30, 1.5, [], {}, [[1]], True, 1e308])
    elif kind == 4:
        payload = payload[: rng.randrange(len(payload))]
    elif kind == 5:
        header["dtype"] = "<f8"
        payload = np.full(SMALL_N, rng.choice([1e300, -1e39, np.nan, np.inf])).tobytes()
    elif kind == 6:
        frames = [b"secondary", json.dumps(header).encode(), payload]
        return frames[: rng.randrange(0, 3)] or [b""] if rng.random() < 0.5 else frames + [b"x"] * rng.randrange(1, 4)
    elif kind == 7:
        header["shape"] = [rng.randrange(-3, 300), rng.choice([SMALL_N, SMALL_N + 1, 0])]
    elif kind == 8:
        return [rng.choice([b"transfer", b"", b"\xff"]), json.dumps(header).encode(), payload]
    elif kind == 9:
        payload = bytes(rng.getrandbits(8) for _ in range(4 * SMALL_N))
    return [b"secondary", json.dumps(header).encode(), payload]


def fuzz(model: Path, workdir: Path, count: int) -> dict:
    import zmq

    proc, info = start_worker(model, workdir)
    rng = random.Random(20)
    answered = sent = 0
    ctx = zmq.Context()
    try:
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(info["output"])
        push.connect(info["input"])
        token = os.urandom(4).hex()
        while True:       # the handshake of docs/streaming.md: our SUB is joined once a hello comes back
            control(info["control"], {"cmd": "hello", "token": token})
            if sub.poll(300) and json.loads(sub.recv_multipart()[1]).get("hello") == token:
                break
        while sent < count:
            batch = [fuzzed_message(rng, sent + i) for i in range(min(50, count - sent))]
            for frames in batch:
                push.send_multipart(frames)
            marker = sent + 10**9
            push.send_multipart([b"secondary", json.dumps({"v": 1, "seq": marker, "dtype": "<f4", "shape": [SMALL_N],
                                                           "source": "marker"}).encode(),
                                 np.zeros(SMALL_N, "<f4").tobytes()])
            sent += len(batch)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if not sub.poll(100):
                    continue
                topic, header, _ = sub.recv_multipart()
                if topic == b"status":
                    continue
                header = json.loads(header)
                if header.get("source") == "marker" and header.get("in_seq") == marker:
                    break
                answered += 1
            else:
                break
        alive = proc.poll() is None and (control(info["control"], {"cmd": "ping"}) or {}).get("ok", False)
        stats = control(info["control"], {"cmd": "stats"}) or {}
    finally:
        ctx.destroy(linger=0)
        proc.terminate()
        proc.wait(60)
    return {"sent": sent, "answered": answered, "answered_share": round(answered / max(sent, 1), 4),
            "worker_alive_and_answering_ping": alive, "internal_errors": stats.get("internal_errors")}


# ------------------------------------------------------------------ signals


def signals(model: Path, workdir: Path, runs: int, bound_s: float) -> dict:
    import zmq

    rng = random.Random(15)
    exits = []
    for run in range(runs):
        proc, info = start_worker(model, workdir)
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(info["input"])
        for i in range(rng.randrange(0, 300)):
            push.send_multipart([b"secondary", json.dumps({"v": 1, "seq": i, "dtype": "<f4", "shape": [SMALL_N]}).encode(),
                                 np.ones(SMALL_N, "<f4").tobytes()])
        time.sleep(rng.uniform(0, 0.3))
        first = time.monotonic()
        for _ in range(rng.randrange(2, 12)):
            proc.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0, 0.02))
        try:
            code = proc.wait(bound_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
            proc.wait()
        exits.append({"code": code, "s": round(time.monotonic() - first, 3)})
        ctx.destroy(linger=0)
    clean = [e for e in exits if e["code"] == 0]
    return {"runs": runs, "exit_bound_s": bound_s, "clean_within_bound": len(clean),
            "exit_s_max": max(e["s"] for e in exits), "exit_s_median": float(np.median([e["s"] for e in exits])),
            "codes": sorted({str(e["code"]) for e in exits})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood-s", type=float, default=20.0, help="flood duration (issue figure: 60; default 20)")
    parser.add_argument("--max-message-spectra", type=int, default=64, help="spectra per flood message (default 64, "
                                                                            "the worker's default limit)")
    parser.add_argument("--queue-mb", type=float, default=256.0, help="the worker's --queue-mb (default 256)")
    parser.add_argument("--fuzz", type=int, default=5000, help="fuzzed messages (default 5000)")
    parser.add_argument("--signal-runs", type=int, default=20)
    parser.add_argument("--exit-bound-s", type=float, default=5.0)
    parser.add_argument("--skip", action="append", default=[], choices=["flood", "fuzz", "signals"])
    args = parser.parse_args()
    from streaming.testing import make_test_model

    result: dict = {"bench": "stream_abuse", "cpu_count": os.cpu_count(),
                    "loadavg_1min_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = tmp / "small.onnx"
        make_test_model(small, n_secondary=SMALL_N, n_primary=40, seed=3)
        if "flood" not in args.skip:
            paper = tmp / "paper.onnx"
            build_model(paper, "float32")
            result["flood"] = flood(paper, tmp / "flood", args.flood_s, args.max_message_spectra, args.queue_mb)
        if "fuzz" not in args.skip:
            result["fuzz"] = fuzz(small, tmp / "fuzz", args.fuzz)
        if "signals" not in args.skip:
            result["signals"] = signals(small, tmp / "signals", args.signal_runs, args.exit_bound_s)
    result["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
