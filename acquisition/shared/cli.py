"""The command-line layer shared by ``libs-sim``, ``libs-acquire``, ``libs-transfer`` and ``libs-stream``.

One way to build a command and one set of conventions:

- a program is a parser with subcommands; each subcommand is registered by a
  function ``register(subparsers)`` that calls :func:`subcommand` (which sets
  the handler ``run(args) -> int`` and the examples block);
- logging: ``-v/--verbose`` (debug messages) and ``-q/--quiet`` (warnings
  only); the default level is INFO, so the periodic progress lines of
  :mod:`acquisition.shared.progress` reach a log file;
- exit codes: 0 done, 1 failure at run time, 2 bad input or usage (nothing was
  changed), 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM where a
  command handles it; a command may document more (``libs-acquire map``: 3
  laser interlock, 4 instrument failure);
- ``--json``: a command with a result prints a short human summary by
  default and, with ``--json``, only that result as one JSON object on stdout;
- argument parsers: ``--shape NYxNX`` (rows x columns), one number or a pair
  ``A,B`` for steps (``DY,DX``) and positions (``X,Y``), in µm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from typing import Callable, Iterable, Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Input errors of the standard library: reported as bad input (exit 2), not as a run-time failure.
INPUT_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


class UsageError(Exception):
    """Bad input or a wrong combination of options: the command changed nothing (exit 2)."""


Handler = Callable[[argparse.Namespace], int]
Register = Callable[[argparse._SubParsersAction], object]


# -- building a command --------------------------------------------------------------------

def examples_block(examples: str | Sequence[str], notes: str = "") -> str:
    """The one "examples:" block of a help text, then any notes."""
    lines = [examples] if isinstance(examples, str) else list(examples)
    text = "examples:\n" + "\n".join(f"  {line}" if line and not line.startswith("  ") else line
                                     for line in "\n".join(lines).splitlines())
    return text + ("\n\n" + notes.strip("\n") if notes else "") + "\n"


def program(prog: str, description: str, examples: str | Sequence[str], registrations: Iterable[Register],
            notes: str = "") -> argparse.ArgumentParser:
    """The parser of one program: the shared logging flags and its subcommands."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=examples_block(examples, notes),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_logging_flags(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in registrations:
        register(subparsers)
    for sub in subparsers.choices.values():
        # also after the subcommand (`libs-stream watch -q`); given there, they win
        add_logging_flags(sub, default=argparse.SUPPRESS)
    return parser


def subcommand(subparsers, name: str, *, help: str, run: Handler, examples: str | Sequence[str],
               description: str | None = None, notes: str = "") -> argparse.ArgumentParser:
    """Register one subcommand: its parser (help, one examples block) and its handler ``run(args) -> int``."""
    parser = subparsers.add_parser(name, help=help, description=description or help,
                                   epilog=examples_block(examples, notes),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)
    return parser


def add_logging_flags(parser: argparse.ArgumentParser, default=0) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="also log debug messages (default: progress and information)")
    group.add_argument("-q", "--quiet", action="count", default=default, help="log warnings and errors only")
    # The spelling libs-stream had; scripts may still pass it.
    group.add_argument("--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       default=None if default == 0 else default, help=argparse.SUPPRESS)


def log_level(args: argparse.Namespace) -> int:
    if getattr(args, "log_level", None):
        return getattr(logging, args.log_level)
    level = logging.INFO - 10 * getattr(args, "verbose", 0) + 10 * getattr(args, "quiet", 0)
    return min(max(level, logging.DEBUG), logging.ERROR)


def configure_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=log_level(args), format=LOG_FORMAT, stream=sys.stderr)


def run_main(parser: argparse.ArgumentParser | Callable[[], argparse.ArgumentParser],
             argv: Sequence[str] | None = None, *,
             input_errors: tuple[type[BaseException], ...] | Callable[[], tuple[type[BaseException], ...]] = (),
             interrupted_hint: str = "") -> int:
    """Parse, set up logging, run the handler and map what it raised to the shared exit codes.

    ``input_errors`` are the program's exceptions caused by its input (or a
    function returning them, so that heavy imports wait until a command runs);
    they exit 2 with one line naming what is wrong. Anything else is a failure
    at run time (exit 1), with its traceback at ``-v``.

    ``parser`` may be a function that builds it: its imports then happen while
    a Ctrl-C is held back (see :func:`deferred_interrupt`), so that one pressed
    while numpy or h5py load is not lost in a library's bare ``except:``.
    """
    interrupted = False
    obey_sigint()
    try:
        with deferred_interrupt():
            if callable(parser) and not isinstance(parser, argparse.ArgumentParser):
                parser = parser()
            args = parser.parse_args(legacy_shape_argv(sys.argv[1:] if argv is None else argv))
            check_required(args)
            configure_logging(args)
            errors = input_errors() if callable(input_errors) else input_errors
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        prog = parser.prog if isinstance(parser, argparse.ArgumentParser) else "command"
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    prefix = f"{parser.prog} {args.command}"
    try:
        code = args.run(args)
        return EXIT_OK if code is None else int(code)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted{'; ' + interrupted_hint if interrupted_hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        # A handler that stops with a message (raise SystemExit("...")) has refused its input.
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return EXIT_USAGE
        raise
    except BrokenPipeError:
        # stdout closed early (e.g. piped into `head`): not an error of the command.
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - every error leaves as one line and an exit code
        if isinstance(exc, (UsageError, *INPUT_OS_ERRORS, *errors)):
            print(f"{prefix}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        logging.getLogger(parser.prog).debug("failure", exc_info=True)
        print(f"{prefix}: failed: {exc or type(exc).__name__} (run with -v for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def obey_sigint() -> None:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt even where it was inherited as ignored.

    A shell script starts its background jobs (``cmd &``) with SIGINT ignored and
    Python keeps that, so ``kill -INT`` did nothing and the command ran to its end
    while SIGTERM stopped it. Every command here stops cleanly on SIGINT instead.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def deferred_interrupt():
    """Hold back SIGINT inside the block and raise KeyboardInterrupt at its end if one came.

    Some libraries import with a bare ``except:``, which swallows a
    KeyboardInterrupt raised in the middle of an import: the command then ran to
    the end as if Ctrl-C had never been pressed. Outside the main thread, or
    where something else handles SIGINT, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class StopRequested:
    """A Ctrl-C that cannot get lost: the first SIGINT raises KeyboardInterrupt *and* is
    remembered, so a long loop that checks :meth:`check` between steps stops even if a
    library caught the exception; a second SIGINT raises again at once.

        with StopRequested() as stop:
            for chunk in chunks:
                ...
                stop.check()
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopRequested":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


# -- results: a short summary, or one JSON object -------------------------------------------

def add_json_flag(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true",
                        help=f"print {what} as one JSON object on stdout instead of the summary")


def emit(args: argparse.Namespace, summary: str, result: dict) -> None:
    """Print the human summary, or with ``--json`` only the result as one JSON object."""
    if getattr(args, "json", False):
        print(json.dumps(result, default=_json_default))
    else:
        print(summary)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# -- argument parsers ---------------------------------------------------------------------

def parse_shape(text: str) -> tuple[int, int]:
    """``'30x40'`` -> ``(30, 40)``: rows by columns (NYxNX)."""
    try:
        ny, nx = (int(part) for part in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {text!r}: expected NYxNX (rows x columns), e.g. 40x40") from None
    if ny < 1 or nx < 1:
        raise ValueError(f"shape {text!r}: both sizes must be >= 1")
    return ny, nx


def parse_pair(text: str, what: str = "value") -> tuple[float, float]:
    """``'40'`` -> ``(40.0, 40.0)``; ``'20,40'`` -> ``(20.0, 40.0)``; every number finite."""
    try:
        parts = [float(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected a number or two numbers 'A,B'") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(f"{what} {text!r}: expected one or two numbers")
    if not all(abs(p) < float("inf") for p in parts):
        raise ValueError(f"{what} {text!r}: numbers must be finite")
    return parts[0], parts[1]


def parse_step(text: str) -> tuple[float, float]:
    """A grid step in µm: one number, or ``DY,DX``; both > 0."""
    dy, dx = parse_pair(text, "step")
    if not (dy > 0 and dx > 0):
        raise ValueError(f"step {text!r}: steps must be > 0 µm")
    return dy, dx


def parse_position(text: str) -> tuple[float, float]:
    """A stage position ``X,Y`` in µm."""
    if "," not in str(text):
        raise ValueError(f"position {text!r}: expected X,Y in µm, e.g. 1200,-400")
    return parse_pair(text, "position")


def argument_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """Wrap a parser for ``type=``: a ValueError becomes argparse's usage error (exit 2)."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


shape_type = argument_type(parse_shape)
step_type = argument_type(parse_step)
position_type = argument_type(parse_position)


def legacy_shape_argv(argv: Sequence[str]) -> list[str]:
    """``--shape NY NX`` (the spelling `libs-stream watch` had) -> ``--shape NYxNX``, with a note on stderr."""
    out = list(argv)
    for i, token in enumerate(out[:-2]):
        if token == "--shape" and out[i + 1].isdigit() and out[i + 2].isdigit():
            print(f"--shape {out[i + 1]} {out[i + 2]} is deprecated; use --shape {out[i + 1]}x{out[i + 2]}",
                  file=sys.stderr)
            out[i + 1:i + 3] = [f"{out[i + 1]}x{out[i + 2]}"]
            break
    return out


# -- the stage ---------------------------------------------------------------------------

#: Without --origin-um, spot (0, 0) of a map lies this far inside the stage travel, in x and y, in both
#: `libs-acquire map` and `libs-sim generate` (whose simulated stage travel starts at 0, 0); in fly mode
#: `libs-acquire map` adds the run-up in x.
DEFAULT_ORIGIN_MARGIN_UM = 1000.0


# -- options with one name everywhere -------------------------------------------------------

class DeprecatedAlias(argparse.Action):
    """An older spelling of an option: stores into the new option's dest and says so on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_secondary_option(parser: argparse.ArgumentParser, *, required: bool = False, help: str,
                         aliases: Sequence[str] = (), default: str | None = None) -> None:
    """``--secondary NAME``: which secondary system of a model bundle, in every command."""
    parser.add_argument("--secondary", metavar="NAME", required=required, default=default, help=help)
    for alias in aliases:
        parser.add_argument(alias, dest="secondary", action=DeprecatedAlias, new="--secondary",
                            help=argparse.SUPPRESS)


def require(parser: argparse.ArgumentParser, dest: str, flag: str) -> None:
    """Mark ``flag`` required in a way its deprecated aliases also satisfy (checked by :func:`run_main`)."""
    required = list(parser.get_default("_required") or [])
    parser.set_defaults(_required=required + [(dest, flag, parser)])


def check_required(args: argparse.Namespace) -> None:
    for dest, flag, parser in getattr(args, "_required", None) or []:
        if getattr(args, dest, None) is None:
            parser.error(f"the following arguments are required: {flag}")


# -- CURVE keys: one directory, as `libs-stream keys` makes it ------------------------------

WORKER_KEY_NAME = "worker"
CLIENTS_DIR = "clients"


def add_keys_option(parser: argparse.ArgumentParser, *, role: str, client_name: str = "acquisition") -> None:
    """``--keys DIR``: the directory of CURVE keys that ``libs-stream keys`` makes.

    The worker (``role="worker"``) reads ``DIR/worker.key_secret`` and admits
    the clients whose public keys are in ``DIR/clients``; a client reads the
    worker's public ``DIR/worker.key`` and its own secret
    ``DIR/clients/NAME.key_secret`` (or ``DIR/NAME.key_secret``), NAME given
    by ``--key-name``.
    """
    if role == "worker":
        help_text = "CURVE keys: DIR/worker.key_secret, and DIR/clients/*.key the clients admitted"
    else:
        help_text = (f"CURVE keys: the worker's public DIR/worker.key and this client's "
                     f"DIR/clients/NAME.key_secret (NAME: --key-name, default {client_name})")
    parser.add_argument("--keys", metavar="DIR", help=help_text + "; make them with `libs-stream keys`")
    if role != "worker":
        parser.add_argument("--key-name", metavar="NAME", default=client_name,
                            help=f"this client's key name in DIR/clients (default {client_name})")


def worker_key_files(keys_dir) -> tuple[str, str]:
    """(secret key file, directory of admitted client public keys) of ``--keys DIR`` for the worker."""
    from pathlib import Path
    folder = Path(keys_dir)
    return str(folder / f"{WORKER_KEY_NAME}.key_secret"), str(folder / CLIENTS_DIR)


def client_key_files(keys_dir, name: str) -> tuple[str, str]:
    """(this client's secret key file, the worker's public key file) of ``--keys DIR``."""
    from pathlib import Path
    folder = Path(keys_dir)
    candidates = [folder / CLIENTS_DIR / f"{name}.key_secret", folder / f"{name}.key_secret"]
    secret = next((path for path in candidates if path.is_file()), candidates[0])
    return str(secret), str(folder / f"{WORKER_KEY_NAME}.key")
