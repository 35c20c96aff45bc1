"""The shared command-line layer: exit codes, logging flags, --json, parsers, and the four programs using it."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest

from acquisition.shared import cli


def toy_program(run, registrations=None):
    def register(subparsers):
        p = cli.subcommand(subparsers, "do", help="do it", run=run, examples="toy do --shape 2x3")
        p.add_argument("--shape", type=cli.shape_type)
        cli.add_json_flag(p)
        cli.add_secondary_option(p, help="which", aliases=["--name"])
    return cli.program("toy", "A toy.", "toy do", registrations or [register])


def exit_of(parser, argv, **kwargs) -> int:
    try:
        return cli.run_main(parser, argv, **kwargs)
    except SystemExit as exc:           # argparse refusing the command line
        return exc.code


class Refused(Exception):
    pass


@pytest.mark.parametrize("raised, code", [
    (None, 0), (cli.UsageError("bad"), 2), (FileNotFoundError("no such file"), 2), (Refused("input"), 2),
    (SystemExit("toy do: refused"), 2), (RuntimeError("disk on fire"), 1), (KeyboardInterrupt(), 130),
])
def test_exit_codes(raised, code, capsys):
    def run(args):
        if raised is not None:
            raise raised
        return 0
    assert exit_of(toy_program(run), ["do"], input_errors=(Refused,)) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code:
        assert err.startswith("toy") and err.count("\n") == 1, err


def test_bad_shape_is_a_usage_error_naming_the_option(capsys):
    assert exit_of(toy_program(lambda args: 0), ["do", "--shape", "3by4"]) == 2
    assert "--shape" in capsys.readouterr().err


def test_the_older_shape_spelling_still_works(capsys):
    seen = {}
    assert exit_of(toy_program(lambda args: seen.setdefault("shape", args.shape) and 0),
                   ["do", "--shape", "60", "80"]) == 0
    assert seen["shape"] == (60, 80)
    assert "deprecated" in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [("30x40", (30, 40)), ("1X2", (1, 2))])
def test_parse_shape(text, expected):
    assert cli.parse_shape(text) == expected


@pytest.mark.parametrize("text", ["0x4", "4", "4x4x4", "ax4", ""])
def test_parse_shape_refuses(text):
    with pytest.raises(ValueError, match="shape"):
        cli.parse_shape(text)


def test_steps_and_positions():
    assert cli.parse_step("40") == (40.0, 40.0) and cli.parse_step("20,40") == (20.0, 40.0)
    assert cli.parse_position("1200,-400") == (1200.0, -400.0)
    for bad in ("0", "-1,2", "nan", "inf,1"):
        with pytest.raises(ValueError):
            cli.parse_step(bad)
    with pytest.raises(ValueError):
        cli.parse_position("1200")


def test_logging_flags_before_or_after_the_subcommand_and_the_old_log_level():
    parser = toy_program(lambda args: 0)
    assert cli.log_level(parser.parse_args(["do"])) == logging.INFO
    assert cli.log_level(parser.parse_args(["-v", "do"])) == logging.DEBUG
    assert cli.log_level(parser.parse_args(["do", "-q"])) == logging.WARNING
    assert cli.log_level(parser.parse_args(["--log-level", "error", "do"])) == logging.ERROR


def test_json_only_with_the_flag(capsys):
    def run(args):
        cli.emit(args, "3 things done", {"things": 3})
        return 0
    assert exit_of(toy_program(run), ["do"]) == 0
    assert capsys.readouterr().out == "3 things done\n"
    assert exit_of(toy_program(run), ["do", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"things": 3}


def test_secondary_has_one_name_and_the_old_one_is_a_hidden_alias(capsys):
    parser = toy_program(lambda args: 0)
    assert parser.parse_args(["do", "--secondary", "cheap"]).secondary == "cheap"
    assert parser.parse_args(["do", "--name", "cheap"]).secondary == "cheap"
    assert "deprecated" in capsys.readouterr().err
    sub = parser._subparsers._group_actions[0].choices["do"]
    assert "--name" not in sub.format_help() and "--secondary" in sub.format_help()


def test_a_ctrl_c_while_the_command_loads_is_not_lost(capsys):
    """A library that imports with a bare `except:` swallowed the KeyboardInterrupt; the command then ran on."""
    ran = []

    def build():
        os.kill(os.getpid(), signal.SIGINT)
        try:
            signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None
        except BaseException:  # noqa: BLE001 - what such a library does
            pass
        return toy_program(lambda args: ran.append(True) or 0)

    assert cli.run_main(build, ["do"]) == 130
    assert not ran
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_requested_survives_a_swallowed_interrupt():
    with cli.StopRequested() as stop:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None
        except KeyboardInterrupt:
            pass                                  # swallowed by a library
        with pytest.raises(KeyboardInterrupt):
            stop.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_keys_dir_layout(tmp_path):
    (tmp_path / "clients").mkdir()
    (tmp_path / "clients" / "viewer.key_secret").write_text("x")
    assert cli.worker_key_files(tmp_path) == (str(tmp_path / "worker.key_secret"), str(tmp_path / "clients"))
    assert cli.client_key_files(tmp_path, "viewer") == (str(tmp_path / "clients" / "viewer.key_secret"),
                                                        str(tmp_path / "worker.key"))
    (tmp_path / "acquisition.key_secret").write_text("x")
    assert cli.client_key_files(tmp_path, "acquisition")[0] == str(tmp_path / "acquisition.key_secret")


# -- the four programs ------------------------------------------------------------------------

def _programs():
    from acquisition.cli import build_parser as acquire
    from sim.cli import build_parser as simulate
    from streaming.cli import build_parser as stream
    programs = {"libs-sim": simulate, "libs-acquire": acquire, "libs-stream": stream}
    try:
        from transfer.cli import build_parser as transfer
        programs["libs-transfer"] = transfer
    except ImportError:  # no torch on this machine
        pass
    return programs


@pytest.mark.parametrize("name", ["libs-sim", "libs-acquire", "libs-transfer", "libs-stream"])
def test_every_program_has_the_same_logging_flags_and_one_examples_block(name, capsys):
    programs = _programs()
    if name not in programs:
        pytest.skip("needs torch")
    parser = programs[name]()
    text = parser.format_help()
    assert text.count("examples:") == 1 and "example:" not in text and f"{name} " in text.split("examples:")[1]
    for sub in [parser, *parser._subparsers._group_actions[0].choices.values()]:
        assert {"-v", "--verbose", "-q", "--quiet"} <= set(sub._option_string_actions), sub.prog


@pytest.mark.parametrize("argv", [
    ["libs-sim", "generate", "--shape", "3by4", "--step-um", "40", "--out", "x.h5"],
    ["libs-acquire", "map", "--sim", "--shape", "3by4", "--out", "x.h5"],
    ["libs-acquire", "import-npy", "nowhere", "--split", "train", "--shape", "3by4", "--out", "x.h5"],
    ["libs-stream", "watch", "--shape", "3by4"],
])
def test_a_bad_shape_exits_2_in_every_program(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mains = {"libs-sim": "sim.cli", "libs-acquire": "acquisition.cli", "libs-stream": "streaming.cli"}
    import importlib
    assert exit_of(importlib.import_module(mains[argv[0]]).build_parser, argv[1:]) == 2
    assert "NYxNX" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_map_rate_help_names_the_simulated_default():
    from acquisition.map_cmd import SIM_DEFAULT_RATE_HZ
    from sim.bench.bench import DEFAULT_RATE_HZ
    assert SIM_DEFAULT_RATE_HZ == DEFAULT_RATE_HZ


def test_generate_and_map_start_at_the_same_default_origin(tmp_path):
    from acquisition.cli import main as acquire
    from acquisition.store import PairedMapReader
    from sim.cli import main as simulate
    margin = cli.DEFAULT_ORIGIN_MARGIN_UM
    assert simulate(["generate", "--shape", "2x2", "--step-um", "40", "--out", str(tmp_path / "g.h5"),
                     "--no-progress"]) == 0
    assert acquire(["map", "--sim", "--mode", "step", "--shape", "2x2", "--out", str(tmp_path / "a.h5"),
                    "--no-progress"]) == 0
    with PairedMapReader(tmp_path / "g.h5") as generated, PairedMapReader(tmp_path / "a.h5") as acquired:
        assert generated.layout.origin_um == (margin, margin)
        assert acquired.layout.origin_um == (margin, margin)
