"""Fixtures for the stream tests: test models, workers on random loopback ports, a plain pyzmq client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from streaming.testing import make_test_model as _build_test_model
from streaming.worker import TransferWorker, WorkerConfig

ANY_PORT = "tcp://127.0.0.1:*"
N_SECONDARY, N_PRIMARY = 48, 40


def make_test_model(path: Path, **kwargs) -> Path:
    """A small random-weight model obeying the exported-model contract (not a transfer model)."""
    kwargs.setdefault("n_secondary", N_SECONDARY)
    kwargs.setdefault("n_primary", N_PRIMARY)
    _build_test_model(path, **kwargs)
    return path


@pytest.fixture(scope="session")
def test_model(tmp_path_factory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("model") / "test_model.onnx", n_latent=6, n_clusters=5,
                           baseline_window=5, seed=3)


class WorkerProcess:
    """`libs-stream serve` in a subprocess, bound to random free loopback ports."""

    def __init__(self, model: Path, workdir: Path, *extra: str, ports: dict[str, str] | None = None):
        self.model, self.workdir, self.extra = model, workdir, extra
        self.ready_file = workdir / f"ready-{time.monotonic_ns()}.json"
        self.log_path = workdir / f"worker-{time.monotonic_ns()}.log"
        ports = ports or {}
        cmd = [sys.executable, "-m", "streaming.cli", "serve", "--model", str(model), "--threads", "1",
               "--input", ports.get("input", ANY_PORT), "--output", ports.get("output", ANY_PORT),
               "--control", ports.get("control", ANY_PORT), "--ready-file", str(self.ready_file), *extra]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {self.log()}")
            time.sleep(0.02)
        info = json.loads(self.ready_file.read_text())
        self.input, self.output, self.control = info["input"], info["output"], info["control"]
        self.worker_id = info["worker"]

    @property
    def ports(self) -> dict[str, str]:
        return {"input": self.input, "output": self.output, "control": self.control}

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()


@pytest.fixture(scope="module")
def worker(test_model, tmp_path_factory):
    proc = WorkerProcess(test_model, tmp_path_factory.mktemp("worker"))
    yield proc
    proc.stop()


class ThreadWorker:
    """A TransferWorker running in a thread of the test process (for in-process configurations)."""

    def __init__(self, config: WorkerConfig):
        self.worker = TransferWorker(config)
        self.input = self.worker.endpoints["input"]
        self.output = self.worker.endpoints["output"]
        self.control = self.worker.endpoints["control"]
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


class PlainClient:
    """A client written against the spec with bare pyzmq: none of the project's helpers."""

    def __init__(self, input_address: str, output_address: str, control_address: str):
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.connect(input_address)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(output_address)
        self.control_address = control_address

    def control(self, request: dict, timeout_ms: int = 5000) -> dict:
        req = self.ctx.socket(zmq.REQ)
        req.linger = 0
        req.connect(self.control_address)
        req.send(json.dumps(request).encode())
        assert req.poll(timeout_ms), f"no control reply to {request}"
        reply = json.loads(req.recv())
        req.close()
        return reply

    def wait_joined(self, timeout_s: float = 10) -> None:
        """Handshake from docs/streaming.md: ask for a hello status until it arrives on the SUB."""
        token = os.urandom(4).hex()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.control({"cmd": "hello", "token": token})["ok"]
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                if self.sub.poll(50):
                    topic, header, _ = self.sub.recv_multipart()
                    if topic == b"status" and json.loads(header).get("hello") == token:
                        return
        raise AssertionError("subscriber never saw the hello status")

    def send(self, header: dict, payload: bytes, topic: bytes = b"secondary") -> None:
        self.push.send_multipart([topic, json.dumps(header).encode(), payload])

    def send_frames(self, frames: list[bytes]) -> None:
        self.push.send_multipart(frames)

    def receive(self, topics: set[bytes], count: int, timeout_s: float = 10) -> list[tuple[bytes, dict, bytes]]:
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            if self.sub.poll(50):
                frames = self.sub.recv_multipart()
                if frames[0] in topics:
                    out.append((frames[0], json.loads(frames[1]), frames[2]))
        return out

    def close(self) -> None:
        self.ctx.destroy(linger=0)


@pytest.fixture
def client(worker):
    c = PlainClient(worker.input, worker.output, worker.control)
    c.wait_joined()
    yield c
    c.close()


def spectra(k: int, n: int = N_SECONDARY, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 500, (k, n)).astype("<f4")
