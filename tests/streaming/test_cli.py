"""`libs-stream` subcommands and the terminal view."""

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from streaming import cli
from streaming.producer import SpectrumPusher
from streaming.protocol import StreamMessage
from streaming.watch import PALETTE, LabelMapView, cell

from tests.waiting import StreamLines

from .conftest import N_PRIMARY, spectra


@pytest.mark.parametrize("command", ["serve", "send", "watch", "keys", "control"])
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"libs-stream {command}" in out


def transfer(iy, ix, label, k=None, t=None):
    header = {"v": 1, "seq": 0, "in_seq": 0, "shape": [N_PRIMARY] if k is None else [k, N_PRIMARY],
              "iy": iy, "ix": ix, "label": label, "latency_s": 0.001, "model": "m"}
    if t is not None:
        header["t"] = t
    return StreamMessage("transfer", header, np.zeros(N_PRIMARY if k is None else (k, N_PRIMARY), np.float32))


def test_label_map_grows_and_draws_each_label_in_its_colour():
    view = LabelMapView()
    view.add(transfer(0, 0, 2))
    view.add(transfer([1, 1], [0, 2], [5, 2], k=2, t=time.time()))
    assert view.labels.shape == (2, 3)
    assert view.label_counts() == {2: 2, 5: 1}
    lines = view.render(width=80, height=20).splitlines()
    assert lines[0].count(cell(2)) == 1 and lines[0].count(cell(-1)) == 2
    assert lines[1] == cell(5) + cell(-1) + cell(2) + "\x1b[0m"
    assert "3 spectra" in lines[2] and "3/6 spots" in lines[2]
    assert re.search(r"end-to-end p50 \d+\.\d\d", lines[2])


def test_large_maps_are_shown_downsampled_to_fit():
    view = LabelMapView(shape=(200, 300))
    view.add(transfer(list(range(200)), [7] * 200, [1] * 200, k=200))
    lines = view.render(width=100, height=30).splitlines()
    assert len(lines) <= 30 and all(line.count("\x1b[48;5;") <= 50 for line in lines[:-1])
    assert "1 block = " in lines[-1]
    assert f"\x1b[48;5;{PALETTE[1]}m" in "".join(lines)


def test_watch_redraws_in_place_on_a_terminal(worker):
    import os
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "watch", "--output", worker.output,
                             "--control", worker.control, "--duration", "4", "--refresh", "10"],
                            stdout=slave, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "80", "LINES": "24"})
    os.close(slave)
    try:
        # watch draws its first frame once its handshake with the worker is done: only then send
        screen, deadline = b"", time.monotonic() + 30
        while b"\x1b[H" not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                screen += os.read(master, 65536)
        assert b"\x1b[H" in screen, "watch drew no frame within 30 s"
        pusher = SpectrumPusher(worker.input)
        pusher.send(spectra(2, seed=1), iy=[0, 0], ix=[0, 1])
        pusher.close()
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:        # the terminal closed with the process
                break
            if not chunk:
                break
            screen += chunk
        proc.wait(timeout=20)
    finally:
        proc.kill()
        os.close(master)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0
    frames = text.split("\x1b[H")
    assert len(frames) >= 5, "redrawn a few times a second"
    assert "2 spectra, 2/2 spots" in frames[-1]
    assert text.count("\x1b[48;5;") >= 2


def test_control_command_prints_the_reply(worker, capsys):
    assert cli.main(["control", "model", "--control", worker.control]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] and reply["n_primary"] == N_PRIMARY


def test_control_command_reports_an_absent_worker(capsys):
    assert cli.main(["control", "ping", "--control", "tcp://127.0.0.1:9", "--timeout", "0.2"]) == 2
    assert "no answer" in capsys.readouterr().err


def test_watch_draws_the_label_map_of_a_live_stream(worker):
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "watch", "--output", worker.output,
                             "--control", worker.control, "--duration", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stdout, stderr = StreamLines(proc.stdout), StreamLines(proc.stderr)
    try:
        stderr.wait_for("watching", timeout_s=30)     # subscribed and handshake done
        pusher = SpectrumPusher(worker.input)
        for iy in range(3):
            pusher.send(spectra(4, seed=iy), iy=[iy] * 4, ix=[0, 1, 2, 3])
        pusher.close()
        proc.wait(timeout=30)
        out, err = stdout.finish(), stderr.finish()
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    map_rows = [line for line in lines if line.startswith("\x1b[48;5;")]
    assert len(map_rows) == 3 and all(row.count("\x1b[48;5;") == 4 for row in map_rows)
    assert f"\x1b[48;5;{236}m" not in "".join(map_rows)     # every spot got a label
    assert "12 spectra, 12/12 spots" in out


@pytest.fixture
def paired_map(tmp_path):
    store = pytest.importorskip("acquisition.store")
    path = tmp_path / "map.h5"
    layout = store.MapLayout(shape=(3, 4), step_um=(10.0, 10.0))
    wavelengths = {"primary": np.linspace(200, 900, N_PRIMARY), "secondary": np.linspace(250, 850, 48)}
    x = spectra(12, seed=4)
    with store.PairedMapWriter.create(path, layout, wavelengths) as writer:
        for i, (iy, ix) in enumerate(layout.visit_order()):
            writer.write_spot(int(iy), int(ix), {"primary": np.zeros(N_PRIMARY, np.float32), "secondary": x[i]},
                              shot_id=1000 + i, timestamp=time.time(), position_um=(ix * 10.0, iy * 10.0))
        writer.finish()
    return path


def test_send_replays_a_map_with_positions(worker, paired_map):
    from streaming.subscriber import ResultSubscriber

    with ResultSubscriber(worker.output) as sub:
        sub.wait_ready(worker.control)
        assert cli.main(["send", str(paired_map), "--input", worker.input, "--output", worker.output,
                         "--rate", "2000", "--batch", "5"]) == 0
        got = []
        while len(got) < 3 and (message := sub.recv(timeout_s=5)) is not None:
            got.append(message)
    assert [m.header["shape"][0] for m in got] == [5, 5, 2]
    positions = [(iy, ix) for m in got for iy, ix in zip(m.header["iy"], m.header["ix"])]
    assert sorted(positions) == [(iy, ix) for iy in range(3) for ix in range(4)]
    assert all(s >= 1000 for m in got for s in m.header["shot"])


def test_send_refuses_a_file_that_is_not_a_map(tmp_path, capsys):
    pytest.importorskip("acquisition.store")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    assert cli.main(["send", str(bad), "--input", "tcp://127.0.0.1:9"]) == 2
    assert "bad.h5" in capsys.readouterr().err


def test_watch_records_results_into_the_map(worker, paired_map, test_model):
    import h5py
    import onnxruntime as ort

    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "watch", "--output", worker.output,
                             "--control", worker.control, "--duration", "4", "--out", str(paired_map)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = StreamLines(proc.stdout), StreamLines(proc.stderr)
    try:
        stderr.wait_for("watching", timeout_s=30)
        assert cli.main(["send", str(paired_map), "--input", worker.input, "--output", worker.output,
                         "--rate", "1000"]) == 0
        proc.wait(timeout=30)
        out, err = stdout.finish(), stderr.finish()
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "wrote 12 results" in out
    from acquisition.store import PairedMapReader
    with PairedMapReader(paired_map) as reader:
        chunk = reader.read_all(systems=["secondary"])
    session = ort.InferenceSession(str(test_model), providers=["CPUExecutionProvider"])
    primary, label = session.run(["primary", "label"], {"secondary": chunk.spectra["secondary"]})
    with h5py.File(paired_map, "r") as f:
        group = f["entry/transferred"]
        np.testing.assert_array_equal(group["label"][()][chunk.iy, chunk.ix], label)
        np.testing.assert_allclose(group["spectra"][()][chunk.iy, chunk.ix], primary, rtol=1e-5, atol=1e-4)
        assert group.attrs["model_id"] == worker_model_id(worker)


def worker_model_id(worker) -> str:
    from streaming.control import request
    return request(worker.control, {"cmd": "ping"})["model"]


def test_send_counts_the_workers_rejections_and_exits_non_zero(paired_map, tmp_path, capsys):
    from .conftest import WorkerProcess, make_test_model

    # a worker whose model takes another number of pixels than the map's secondary spectra
    model = make_test_model(tmp_path / "wider.onnx", n_secondary=64, n_primary=20)
    proc = WorkerProcess(model, tmp_path)
    try:
        code = cli.main(["send", str(paired_map), "--input", proc.input, "--output", proc.output,
                         "--control", proc.control, "--rate", "0", "--batch", "5"])
    finally:
        proc.stop()
    captured = capsys.readouterr()
    assert code == 1
    assert "0 transferred, 12 rejected" in captured.out
    error = captured.err.strip().splitlines()[-1]
    assert "rejected 12 of 12 spectra (3 of 3 messages)" in error and "bad-n" in error


def test_send_without_a_worker_gives_up_after_its_timeout(paired_map, capsys):
    started = time.monotonic()
    code = cli.main(["send", str(paired_map), "--input", "tcp://127.0.0.1:9", "--output", "tcp://127.0.0.1:9",
                     "--timeout", "0.5"])
    assert code == 1 and time.monotonic() - started < 30
    assert "no worker answered within 0.5 s" in capsys.readouterr().err


def test_a_huge_index_is_counted_outside_the_map_not_allocated():
    view = LabelMapView()
    view.add(transfer(10**7, 10**7, 3))
    view.add(transfer([0, 1], [1, 2**31 - 1], [4, 4], k=2))
    assert view.labels.shape == (1, 2) and view.outside == 2 and view.spectra == 3
    fixed = LabelMapView(shape=(20, 20))
    fixed.add(transfer([0, 25], [0, 1], [1, 2], k=2))
    assert fixed.outside == 1 and fixed.label_counts() == {1: 1}
    assert "outside the map 1" in fixed.summary()


def test_an_unreadable_result_is_counted_not_raised():
    view = LabelMapView()
    view.add(transfer([0, 1], [0], [1, 2], k=2))          # ix has 1 value for 2 spectra
    view.add(transfer(0, 0, 10**30))                       # a label no int64 holds
    assert view.malformed == 2 and view.spectra == 0


def test_the_recorder_keeps_results_inside_the_map_and_counts_the_rest(paired_map):
    import h5py

    from streaming.recorder import TransferRecorder

    recorder = TransferRecorder(paired_map, flush_spectra=1)
    assert recorder.shape == (3, 4)
    recorder.add(transfer([0, 2, 10**7], [3, 0, 0], [1, 2, 3], k=3))
    recorder.add(transfer(5, 0, 1))
    recorder.close()
    assert recorder.written == 2 and recorder.outside == 2
    with h5py.File(paired_map, "r") as f:
        labels = f["entry/transferred/label"][()]
    assert labels[0, 3] == 1 and labels[2, 0] == 2


def test_a_transfer_result_reads_every_header_form_as_arrays():
    from streaming.protocol import encode_transfer
    from streaming.results import TransferResult

    primary = np.arange(2 * N_PRIMARY, dtype=np.float32).reshape(2, N_PRIMARY)
    frames = encode_transfer(primary, seq=4, in_seq=9, single=False, label=np.array([1, 3]),
                             novelty=np.array([0.5, np.nan]), model="m1", latency_s=0.002,
                             echo={"iy": [0, 1], "ix": [2, 3], "shot": [7, 8], "t": 12.5, "source": "s"}, worker="w")
    result = TransferResult.from_frames([bytes(f) for f in frames])
    assert (result.k, result.seq, result.in_seq, result.model, result.source, result.worker) == (2, 4, 9, "m1", "s", "w")
    assert result.iy.tolist() == [0, 1] and result.ix.tolist() == [2, 3] and result.shot.tolist() == [7, 8]
    assert result.label.tolist() == [1, 3] and result.novelty[0] == 0.5 and np.isnan(result.novelty[1])
    np.testing.assert_array_equal(result.spectra, primary)
    assert result.expected_rel_error is None and result.t == 12.5 and result.latency_s == 0.002
    single = TransferResult.from_message(transfer(4, 5, 2))
    assert single.k == 1 and single.iy.tolist() == [4] and single.label.tolist() == [2] and single.has_position
