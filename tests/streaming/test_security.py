"""CURVE: authorised clients get results, others get nothing; exposed addresses need keys."""

import time

import pytest
import zmq

from streaming import cli
from streaming.control import request
from streaming.producer import SpectrumPusher
from streaming.security import ClientKeys, SecurityError, ServerKeys, is_loopback, make_keys, require_keys_for
from streaming.subscriber import ResultSubscriber
from streaming.worker import TransferWorker, WorkerConfig

from .conftest import ANY_PORT, ThreadWorker, spectra


@pytest.fixture
def keys(tmp_path):
    server_public, server_secret = make_keys(tmp_path / "server", "worker")
    _, client_secret = make_keys(tmp_path / "clients", "viewer")
    _, intruder_secret = make_keys(tmp_path / "others", "intruder")
    return {"server": ServerKeys.load(server_secret, tmp_path / "clients"),
            "client": ClientKeys.load(client_secret, server_public),
            "intruder": ClientKeys.load(intruder_secret, server_public)}


@pytest.mark.parametrize("address,loopback", [
    ("tcp://127.0.0.1:5557", True), ("tcp://localhost:5557", True), ("tcp://[::1]:5557", True),
    ("tcp://127.0.0.1:*", True), ("ipc:///tmp/x", True), ("inproc://x", True),
    ("tcp://0.0.0.0:5557", False), ("tcp://*:5557", False), ("tcp://eth0:5557", False),
    ("tcp://192.168.1.20:5557", False), ("tcp://lab-pc.example.org:5557", False),
])
def test_loopback_detection(address, loopback):
    assert is_loopback(address) is loopback


def test_exposed_addresses_are_refused_without_keys(test_model, capsys):
    with pytest.raises(SecurityError, match="0.0.0.0"):
        require_keys_for(["tcp://127.0.0.1:1", "tcp://0.0.0.0:5557"], have_keys=False)
    require_keys_for(["tcp://0.0.0.0:5557"], have_keys=True)
    code = cli.main(["serve", "--model", str(test_model), "--input", "tcp://0.0.0.0:*", "--output", ANY_PORT,
                     "--control", ANY_PORT])
    assert code == 2
    err = capsys.readouterr().err
    assert "tcp://0.0.0.0:*" in err and "not a loopback address" in err and "--curve-secret" in err


def test_exposed_address_is_accepted_with_keys(test_model, keys):
    worker = TransferWorker(WorkerConfig(model=test_model, input="tcp://0.0.0.0:*", output=ANY_PORT,
                                         control=ANY_PORT, keys=keys["server"]))
    try:
        assert worker.endpoints["input"].startswith("tcp://0.0.0.0:")
    finally:
        worker.close()


def test_unauthorised_clients_receive_nothing(test_model, keys):
    running = ThreadWorker(WorkerConfig(model=test_model, input=ANY_PORT, output=ANY_PORT, control=ANY_PORT,
                                        keys=keys["server"], status_interval_s=0.2))
    ctx = zmq.Context()
    try:
        intruder = ctx.socket(zmq.SUB)
        keys["intruder"].apply(intruder)
        plain = ctx.socket(zmq.SUB)
        for sock in (intruder, plain):
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(running.output)
        # an unauthorised producer does not get spectra in either
        rogue = ctx.socket(zmq.PUSH)
        keys["intruder"].apply(rogue)
        rogue.connect(running.input)
        rogue.send_multipart([b"secondary", b'{"v":1,"seq":0,"dtype":"<f4","shape":[48]}', bytes(4 * 48)],
                             zmq.NOBLOCK)   # queued locally; the refused handshake never lets it out

        with ResultSubscriber(running.output, keys=keys["client"]) as sub:
            sub.wait_ready(running.control, timeout_s=10)
            pusher = SpectrumPusher(running.input, keys=keys["client"])
            for i in range(5):
                pusher.send(spectra(1, seed=i)[0])
            got = [sub.recv(timeout_s=5) for _ in range(5)]
            pusher.close()
        assert [m.in_seq for m in got if m is not None] == list(range(5))
        time.sleep(0.5)   # several status messages went out meanwhile
        assert not intruder.poll(200) and not plain.poll(200)
        stats = request(running.control, {"cmd": "stats"}, keys=keys["client"])
        assert stats["received"] == 5 and stats["rejected"] == 0
        # the control socket is closed to strangers as well
        with pytest.raises(Exception, match="no answer"):
            request(running.control, {"cmd": "ping"}, keys=keys["intruder"], timeout_s=0.5)
    finally:
        ctx.destroy(linger=0)
        running.stop()


def test_keys_command_writes_a_key_pair_and_refuses_to_overwrite(tmp_path, capsys):
    assert cli.main(["keys", "--out", str(tmp_path), "--name", "lab"]) == 0
    assert (tmp_path / "lab.key").is_file() and (tmp_path / "lab.key_secret").is_file()
    assert (tmp_path / "lab.key_secret").stat().st_mode & 0o077 == 0
    public, secret = zmq.auth.load_certificate(tmp_path / "lab.key_secret")
    assert len(public) == 40 and len(secret) == 40
    assert cli.main(["keys", "--out", str(tmp_path), "--name", "lab"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_half_given_or_missing_keys_are_clear_errors(tmp_path):
    with pytest.raises(SecurityError, match="does not exist"):
        ServerKeys.load(tmp_path / "nope.key_secret", tmp_path)
    public, secret = make_keys(tmp_path, "w")
    with pytest.raises(SecurityError, match="no secret"):
        ServerKeys.load(public, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SecurityError, match="no client public keys"):
        ServerKeys.load(secret, empty)
