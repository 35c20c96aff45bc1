"""One progress convention: a bar on a terminal, periodic log lines in a file or a pipe."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from acquisition.shared.progress import Progress, Step, progress_iter

ROOT = Path(__file__).resolve().parents[3]


def test_not_a_terminal_logs_lines_with_counts_and_a_last_line(caplog):
    with caplog.at_level(logging.INFO, logger="progress"):
        with Progress(10, desc="fitting scalers train.h5", unit="spot", log_every_s=0, terminal=False) as bar:
            for _ in range(5):
                bar.update(2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("fitting scalers train.h5: 2/10 spot (20 %)")
    assert any("6/10 spot (60 %)" in line for line in lines)
    assert lines[-1].startswith("fitting scalers train.h5: 10/10 spot (100 %) in ")


def test_log_lines_are_spaced_by_the_interval(caplog):
    with caplog.at_level(logging.INFO, logger="progress"):
        with Progress(1000, desc="sampling", log_every_s=3600, terminal=False) as bar:
            for _ in range(1000):
                bar.update(1)
    assert [r.getMessage().split(":")[1].split()[0] for r in caplog.records] == ["1000/1000"]


def test_a_terminal_gets_a_bar_and_no_log_lines(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="progress"):
        for _ in progress_iter(range(3), desc="rows", log_every_s=0):
            pass
        with Progress(3, desc="bar", terminal=True) as bar:
            bar.update(3)
    assert not [r for r in caplog.records if r.getMessage().startswith("bar")]
    assert "3/3" in capsys.readouterr().err


def test_disabled_progress_says_nothing(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="progress"):
        with Progress(3, desc="quiet", enabled=False, log_every_s=0, terminal=False) as bar:
            bar.update(3)
    assert not caplog.records and not capsys.readouterr().err


def test_a_stopped_step_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="progress"):
        try:
            with Progress(10, desc="generate", log_every_s=3600, terminal=False) as bar:
                bar.update(4)
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
    assert "4/10" in caplog.records[-1].getMessage() and "stopped after" in caplog.records[-1].getMessage()


def test_a_step_without_counts_logs_its_start_and_duration(caplog):
    with caplog.at_level(logging.INFO, logger="progress"):
        with Step("fitting the PLS baseline on 900 spectra"):
            pass
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "fitting the PLS baseline on 900 spectra ...", "fitting the PLS baseline on 900 spectra"]


def test_generate_into_a_pipe_logs_progress_up_to_the_end(tmp_path):
    env = dict(os.environ, TWINPLUME_PROGRESS_EVERY_S="0", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "sim.cli", "generate", "--shape", "4x5", "--step-um", "40",
                           "--chunk-spots", "5", "--out", str(tmp_path / "m.h5")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "progress: generate m.h5" in line]
    counts = [int(line.split("generate m.h5: ")[1].split("/")[0]) for line in lines]
    assert counts[:4] == [5, 10, 15, 20] and "(100 %) in" in lines[-1]
    assert "\r" not in done.stderr                     # no bar redrawn into the pipe
