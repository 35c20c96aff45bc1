"""``libs-stream``: serve the live-transfer worker, replay a map into it, watch its output, make keys."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from acquisition.shared import cli as shared_cli

from . import control
from .security import SecurityError, ServerKeys, client_keys_from_args, make_keys, require_keys_for
from .protocol import MAX_SPECTRA_PER_MESSAGE
from .worker import DEFAULT_CONTROL, DEFAULT_INPUT, DEFAULT_OUTPUT

log = logging.getLogger("libs-stream")

SERVE_EXAMPLE = """example:
  libs-stream serve --model model.onnx
  libs-stream serve --model model.onnx --input tcp://0.0.0.0:5557 --output tcp://0.0.0.0:5558 \\
      --control tcp://0.0.0.0:5559 --curve-secret keys/worker.key_secret --curve-clients keys/clients
"""
SEND_EXAMPLE = """example:
  libs-stream send map.h5 --rate 1000            # one spectrum per message, 1000 spectra/s
  libs-stream send map.h5 --rate 0 --batch 64    # as fast as the worker takes them
"""
WATCH_EXAMPLE = """example:
  libs-stream watch                               # label map of the worker on the default addresses
  libs-stream watch --shape 60x80 --out map.h5    # also write results to /entry/transferred of map.h5
"""
KEYS_EXAMPLE = """example:
  libs-stream keys --out keys --name worker       # keys/worker.key (public) + keys/worker.key_secret
  libs-stream keys --out keys/clients --name viewer
"""
VIEW_EXAMPLE = """example:
  libs-stream view --results tcp://127.0.0.1:5558 --control tcp://127.0.0.1:5559 --shape 500x500
  libs-stream view --results tcp://127.0.0.1:5558 --control tcp://127.0.0.1:5559 --map live.h5
  libs-stream view --results tcp://lab-pc:5558 --host 0.0.0.0 --port 8050   # prints a URL with a token
"""
CONTROL_EXAMPLE = """example:
  libs-stream control stats
  libs-stream control model --control tcp://127.0.0.1:5559
"""


EXAMPLES = [
    "libs-stream serve --model model.onnx",
    "libs-stream send map.h5 --rate 1000",
    "libs-stream watch --shape 60x80",
    "libs-stream control stats",
    "libs-stream keys --out keys --name worker",
]


def _add_client_keys(p: argparse.ArgumentParser, client_name: str = "viewer") -> None:
    shared_cli.add_keys_option(p, role="client", client_name=client_name)
    p.add_argument("--curve-secret", metavar="FILE", help="instead of --keys: this client's CURVE secret key file "
                                                          "(.key_secret)")
    p.add_argument("--curve-server", metavar="FILE", help="instead of --keys: the worker's CURVE public key file (.key)")


def _keys_from_dir(args) -> None:
    """--keys DIR fills in the key files it stands for; giving both spellings is refused."""
    if getattr(args, "keys", None) is None:
        return
    if args.command == "serve":
        if args.curve_secret or args.curve_clients:
            raise SecurityError("give either --keys DIR or --curve-secret/--curve-clients, not both")
        args.curve_secret, args.curve_clients = shared_cli.worker_key_files(args.keys)
    else:
        if args.curve_secret or args.curve_server:
            raise SecurityError("give either --keys DIR or --curve-secret/--curve-server, not both")
        args.curve_secret, args.curve_server = shared_cli.client_key_files(args.keys, args.key_name)


def build_parser() -> argparse.ArgumentParser:
    return shared_cli.program("libs-stream", "Live spectral transfer over ZeroMQ (spec/stream-protocol.md).",
                              EXAMPLES, [_add_subcommands])


def _add_subcommands(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("serve", help="run the transfer worker", formatter_class=fmt, epilog=SERVE_EXAMPLE,
                       description="Run the exported model on every secondary spectrum pulled from --input and "
                                   "publish the results on --output. Stops cleanly on Ctrl-C / SIGTERM.")
    p.add_argument("--model", required=True, help="exported model (.onnx)")
    p.add_argument("--input", default=DEFAULT_INPUT, help=f"PULL address to bind (default {DEFAULT_INPUT})")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"PUB address to bind (default {DEFAULT_OUTPUT})")
    p.add_argument("--control", default=DEFAULT_CONTROL, help=f"REP address to bind (default {DEFAULT_CONTROL})")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--max-batch", type=int, default=256, help="most spectra per inference (default 256)")
    p.add_argument("--max-message-spectra", type=int, default=MAX_SPECTRA_PER_MESSAGE, metavar="K",
                   help=f"most spectra in one input message; larger ones get a 'too-many-spectra' error and "
                        f"larger frames are dropped by ZeroMQ (default {MAX_SPECTRA_PER_MESSAGE})")
    p.add_argument("--queue-mb", type=float, default=256.0, metavar="MB",
                   help="input the worker queues per connected producer, in MB of maximum-size messages; "
                        "a producer beyond it blocks (default 256)")
    p.add_argument("--spin", action="store_true", help="let ONNX Runtime threads spin: faster on a machine "
                                                       "the worker has to itself, slower on a shared one")
    shared_cli.add_keys_option(p, role="worker")
    p.add_argument("--curve-secret", metavar="FILE", help="instead of --keys: the worker's CURVE secret key file "
                                                          "(.key_secret)")
    p.add_argument("--curve-clients", metavar="DIR", help="instead of --keys: directory of allowed client public "
                                                          "keys (*.key)")
    p.add_argument("--ready-file", metavar="FILE", help="write the bound endpoints here as JSON once ready")

    p = sub.add_parser("send", help="replay a paired map's secondary spectra", formatter_class=fmt,
                       epilog=SEND_EXAMPLE, description="Replay the acquired secondary spectra of a paired map, "
                                                        "in map order, with iy/ix/shot, at a given rate. Counts "
                                                        "the worker's answers: exits 1 with the reason when it "
                                                        "rejected spectra, left messages unanswered or was not "
                                                        "there.")
    p.add_argument("map", help="paired-map HDF5 file")
    p.add_argument("--input", action="append", help=f"worker input address; repeat for several workers "
                                                    f"(default {DEFAULT_INPUT})")
    p.add_argument("--control", action="append", help="worker control address: wait until it is ready first")
    p.add_argument("--rate", type=float, default=1000.0, help="spectra per second; 0 = unpaced (default 1000)")
    p.add_argument("--batch", type=int, default=1, help="spectra per message (default 1)")
    p.add_argument("--system", default="secondary", help="system to replay (default secondary)")
    p.add_argument("--limit", type=int, default=None, help="send at most this many spectra")
    p.add_argument("--output", action="append", help=f"worker PUB address, where send reads the worker's answers "
                                                     f"to its messages; repeat for several (default: the "
                                                     f"output each --control worker names, else {DEFAULT_OUTPUT})")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="give up when no worker answers or takes a message for this long (default 10)")
    _add_client_keys(p, client_name="acquisition")

    p = sub.add_parser("watch", help="show the label map building up live", formatter_class=fmt,
                       epilog=WATCH_EXAMPLE, description="Subscribe to workers' output and draw the k-means label "
                                                         "map from iy/ix, with throughput and latency.")
    p.add_argument("--output", action="append", help=f"worker PUB address; repeat for several workers "
                                                     f"(default {DEFAULT_OUTPUT})")
    p.add_argument("--control", action="append", help="worker control address, for a quick handshake")
    p.add_argument("--shape", type=shared_cli.shape_type, metavar="NYxNX",
                   help="map shape, rows x columns (default: grow as seen)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--refresh", type=float, default=4.0, help="redraws per second (default 4)")
    p.add_argument("--out", metavar="MAP.h5", help="write results into /entry/transferred of this paired map")
    _add_client_keys(p)

    p = sub.add_parser("view", help="the live map, spectra and health in a browser", formatter_class=fmt,
                       epilog=VIEW_EXAMPLE,
                       description="Serve a read-only page showing the label, emission, novelty and (with --map) "
                                   "transfer-error maps as results arrive, the spectra of any spot and the "
                                   "stream's health. Loopback only unless --host is given; then the page needs "
                                   "the access token printed at start.")
    p.add_argument("--results", action="append", metavar="ADDR", help=f"worker PUB address; repeat for several "
                                                                      f"workers (default {DEFAULT_OUTPUT})")
    p.add_argument("--control", action="append", metavar="ADDR", help="worker control address: model id, "
                                                                      "precision, wavelengths, trust threshold")
    p.add_argument("--map", metavar="MAP.h5", help="the paired map being written: measured spectra and the live "
                                                   "transfer error (read through SWMR)")
    p.add_argument("--wait-for-map", action="store_true", help="--map may not exist yet: follow it once the "
                                                               "acquisition has created it (give --shape)")
    p.add_argument("--shape", metavar="NYxNX", help="map shape (default: from --map, else grows as spots arrive)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; anything else "
                                                       "requires the access token)")
    p.add_argument("--port", type=int, default=8050, help="HTTP port (default 8050; 0: any free port)")
    p.add_argument("--token", help="access token to require (default: a random one when off loopback)")
    p.add_argument("--spectra-memory-mb", type=float, default=256.0,
                   help="memory for transferred spectra kept per spot (default 256)")
    p.add_argument("--stop-with-stdin", action="store_true",
                   help="stop when standard input closes (libs-acquire map --view uses it, so the view never "
                        "outlives the map command, even one that was killed)")
    _add_client_keys(p)

    p = sub.add_parser("keys", help="make a CURVE key pair", formatter_class=fmt, epilog=KEYS_EXAMPLE,
                       description="Create NAME.key (public: give it to the other side) and NAME.key_secret "
                                   "(keep it private). The worker admits clients whose NAME.key is in its "
                                   "--curve-clients directory.")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the two key files into "
                                                               "(created if missing)")
    p.add_argument("--name", default="worker", help="file name of the pair: NAME.key and NAME.key_secret; refuses "
                                                    "to overwrite an existing pair (default worker)")

    p = sub.add_parser("control", help="ask a worker: ping, stats or model", formatter_class=fmt,
                       epilog=CONTROL_EXAMPLE,
                       description="Send one request to a running worker's control socket and print its JSON "
                                   "reply: ping (is it ready, which model, its limits), stats (the counters and "
                                   "rates of a status message) or model (the loaded model's description).")
    p.add_argument("cmd", choices=["ping", "stats", "model"], help="what to ask")
    p.add_argument("--control", default=DEFAULT_CONTROL,
                   help=f"the worker's control (REP) address (default {DEFAULT_CONTROL})")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S",
                   help="seconds to wait for the reply before exiting 2 (default 2)")
    _add_client_keys(p)
    for name, parser in sub.choices.items():
        parser.set_defaults(run=COMMANDS[name])


class StopRequest:
    """A signal handler that only records the request: one attribute write, no lock, no I/O.

    However many SIGINT/SIGTERM arrive, and whenever (even inside the handler itself), the
    worker's loop sees the flag within one turn and stops once.
    """

    def __init__(self):
        self.requested = False
        self.worker = None

    def __call__(self, signum, frame) -> None:
        self.requested = True
        worker = self.worker
        if worker is not None:
            worker.stop()


def cmd_serve(args) -> int:
    from .model import ModelContractError
    from .worker import TransferWorker, WorkerConfig

    if bool(args.curve_secret) != bool(args.curve_clients):
        raise SecurityError("CURVE needs both --curve-secret and --curve-clients")
    if args.max_batch < 1 or args.max_message_spectra < 1 or not args.queue_mb > 0:
        print("libs-stream serve: error: --max-batch, --max-message-spectra and --queue-mb must be positive",
              file=sys.stderr)
        return 2
    keys = ServerKeys.load(args.curve_secret, args.curve_clients) if args.curve_secret else None
    config = WorkerConfig(model=args.model, input=args.input, output=args.output, control=args.control,
                          threads=args.threads, spin=args.spin, max_batch=args.max_batch,
                          max_message_spectra=args.max_message_spectra, queue_bytes=int(args.queue_mb * 1e6),
                          keys=keys, ready_file=args.ready_file)
    # installed before the model loads, so a stop during start-up is a clean exit too
    stop = StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = TransferWorker(config)
    except BaseException as exc:
        for sig, handler in previous.items():   # no worker to stop: the caller's handlers again
            signal.signal(sig, handler)
        if isinstance(exc, ModelContractError):
            raise SystemExit(f"libs-stream serve: error: {exc}") from None
        raise
    stop.worker = worker
    if stop.requested:
        worker.stop()
    worker.run()
    # stopped and closed: later signals of the same burst must not kill the exit itself
    # (Python restores the default handlers while it shuts down)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    return 0


def _worker_outputs(controls: list[str] | None, keys, timeout_s: float) -> list[str]:
    """The PUB addresses of the workers behind ``controls`` (from their ping replies), else the default."""
    if not controls:
        return [DEFAULT_OUTPUT]
    outputs = []
    for address in controls:
        bound = control.wait_ready(address, timeout_s=timeout_s, keys=keys).get("endpoints", {}).get("output")
        if not isinstance(bound, str) or not bound.startswith("tcp://"):
            raise control.ControlError(f"the worker at {address} did not name its output address")
        host, port = bound[len("tcp://"):].rsplit(":", 1)
        if host in ("0.0.0.0", "*", "[::]"):       # bound to every interface: reach it where its control is
            host = address[len("tcp://"):].rsplit(":", 1)[0]
        outputs.append(f"tcp://{host}:{port}")
    return outputs


def cmd_send(args) -> int:
    from tqdm import tqdm

    # the map store is acquisition's; only this replay command reads maps
    from acquisition.store import PairedMapError, PairedMapReader
    from .producer import SendTimeout, SpectrumPusher
    from .subscriber import ResultSubscriber

    inputs = args.input or [DEFAULT_INPUT]
    keys = client_keys_from_args(args.curve_secret, args.curve_server)
    require_keys_for(inputs + (args.output or []) + (args.control or []), keys is not None)
    try:
        outputs = args.output or _worker_outputs(args.control, keys, args.timeout)
    except control.ControlError as exc:
        print(f"libs-stream send: error: {exc}: is `libs-stream serve` running there, and are the CURVE keys "
              f"the worker's?", file=sys.stderr)
        return 1
    if args.batch < 1 or args.rate < 0 or not args.timeout > 0:
        print("libs-stream send: error: --batch must be >= 1, --rate >= 0 and --timeout > 0", file=sys.stderr)
        return 2
    try:
        reader = PairedMapReader(args.map)
    except PairedMapError as exc:
        print(f"libs-stream send: error: {exc}", file=sys.stderr)
        return 2
    source = f"send-{os.getpid()}-{os.urandom(3).hex()}"
    with reader, ResultSubscriber(outputs, keys=keys) as results:
        if args.system not in reader.systems:
            print(f"libs-stream send: error: {args.map} has no system {args.system!r} "
                  f"(it has {', '.join(reader.systems)})", file=sys.stderr)
            return 2
        # the worker's replies are how send knows its spectra were taken: no reply, no sending
        try:
            results.wait_ready(args.control, timeout_s=args.timeout)
        except (TimeoutError, control.ControlError):
            print(f"libs-stream send: error: no worker answered within {args.timeout:g} s at "
                  f"{', '.join(args.control or outputs)}: is `libs-stream serve` running there, and are the "
                  f"CURVE keys the worker's?", file=sys.stderr)
            return 1
        tally = ReplyTally(source)
        shot_ids = reader.scan_values("shot_id")
        total = min(reader.n_acquired, args.limit) if args.limit else reader.n_acquired
        pusher = SpectrumPusher(inputs, keys=keys, system=args.system, source=source, send_timeout_s=args.timeout)
        interval = 1.0 / args.rate if args.rate else 0.0
        sent, next_time = 0, time.perf_counter()
        try:
            with tqdm(total=total, unit="spectra", desc="send") as progress:
                for chunk in reader.iter_chunks(systems=[args.system]):
                    spectra = chunk.spectra[args.system]
                    for start in range(0, len(spectra), args.batch):
                        rows = slice(start, min(start + args.batch, len(spectra), start + total - sent))
                        iy, ix = chunk.iy[rows], chunk.ix[rows]
                        k = len(iy)
                        if k == 0:
                            break
                        if interval:
                            next_time += k * interval
                            delay = next_time - time.perf_counter()
                            if delay > 0:
                                time.sleep(delay)
                        if args.batch == 1:
                            pusher.send(spectra[rows][0], iy=int(iy[0]), ix=int(ix[0]),
                                        shot=int(shot_ids[iy[0], ix[0]]))
                        else:
                            pusher.send(spectra[rows], iy=iy, ix=ix, shot=shot_ids[iy, ix])
                        tally.sent(k)
                        sent += k
                        progress.update(k)
                        tally.drain(results)
                    if sent >= total:
                        break
            log.info("waiting up to %g s for the worker to take and answer the last messages", args.timeout)
            pusher.close(linger_s=args.timeout)
        except SendTimeout as exc:
            pusher.close(linger_s=0)
            print(f"libs-stream send: error: {exc}; {sent} spectra were sent", file=sys.stderr)
            return 1
        tally.wait(results, pusher.seq, timeout_s=args.timeout)
    print(f"sent {sent} spectra in {pusher.seq} messages to {', '.join(inputs)}: {tally.summary()}")
    problem = tally.problem(pusher.seq)
    if problem:
        print(f"libs-stream send: error: {problem}", file=sys.stderr)
        return 1
    return 0


class ReplyTally:
    """The worker's replies to one sender's messages (matched by its ``source``)."""

    def __init__(self, source: str):
        self.source = source
        self.messages = self.spectra = 0
        self.answered: set[int] = set()
        self.transferred = 0
        self.rejected_messages = 0
        self.rejected_spectra = 0
        self.reasons: dict[str, tuple[int, str]] = {}
        self._sizes: dict[int, int] = {}

    def sent(self, k: int) -> None:
        self._sizes[self.messages] = k
        self.messages += 1
        self.spectra += k

    def add(self, message) -> None:
        header = message.header
        in_seq = header.get("in_seq")
        if header.get("source") != self.source or not isinstance(in_seq, int) or in_seq in self.answered:
            return
        self.answered.add(in_seq)
        k = self._sizes.get(in_seq, 0)
        if message.topic == "error":
            self.rejected_messages += 1
            self.rejected_spectra += k
            code = str(header.get("code", "?"))
            count, reason = self.reasons.get(code, (0, str(header.get("reason", ""))[:200]))
            self.reasons[code] = (count + 1, reason)
        elif message.topic == "transfer":
            self.transferred += k

    def drain(self, results) -> None:
        while (message := results.recv(timeout_s=0)) is not None:
            self.add(message)

    def wait(self, results, n_messages: int, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answered) < n_messages and time.monotonic() < deadline:
            message = results.recv(timeout_s=min(0.2, max(0.0, deadline - time.monotonic())))
            if message is not None:
                self.add(message)

    def summary(self) -> str:
        return (f"{self.transferred} transferred, {self.rejected_spectra} rejected, "
                f"{self.spectra - self.transferred - self.rejected_spectra} without an answer")

    def problem(self, n_messages: int) -> str | None:
        """One line saying what went wrong, or None when every spectrum was transferred."""
        if self.rejected_messages:
            code, (count, reason) = max(self.reasons.items(), key=lambda item: item[1][0])
            return (f"the worker rejected {self.rejected_spectra} of {self.spectra} spectra "
                    f"({self.rejected_messages} of {n_messages} messages); most often {code} ({count}x): {reason}")
        missing = n_messages - len(self.answered)
        if missing:
            return f"{missing} of {n_messages} messages got no answer from the worker"
        return None


def cmd_watch(args) -> int:
    from .subscriber import ResultSubscriber
    from .watch import LabelMapView, frame

    outputs = args.output or [DEFAULT_OUTPUT]
    keys = client_keys_from_args(args.curve_secret, args.curve_server)
    require_keys_for(outputs + (args.control or []), keys is not None)
    recorder = None
    if args.out:
        from .recorder import RecorderUnavailable, TransferRecorder
        model = {}
        if args.control:
            model = control.request(args.control[0], {"cmd": "model"}, keys=keys)
        try:
            recorder = TransferRecorder(args.out, wavelengths=model.get("primary_wavelengths"),
                                        trust_threshold=model.get("trust_threshold"))
        except (RecorderUnavailable, FileNotFoundError) as exc:
            raise SystemExit(f"libs-stream watch: error: {exc}") from None
    view = LabelMapView(tuple(args.shape) if args.shape else None)
    tty = sys.stdout.isatty()
    if tty:
        sys.stdout.write("\x1b[2J")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with ResultSubscriber(outputs, keys=keys) as sub:
        try:
            sub.wait_ready(args.control, timeout_s=5.0)
        except (TimeoutError, control.ControlError) as exc:
            log.warning("%s; showing whatever arrives", exc)
        log.info("watching %s", ", ".join(outputs))   # subscribed: what is published from now on is seen
        end = None if args.duration is None else time.monotonic() + args.duration
        next_draw = time.monotonic()
        try:
            while not stop and (end is None or time.monotonic() < end):
                message = sub.recv(timeout_s=0.02)
                if message is not None:
                    view.add(message)
                    if recorder is not None:
                        recorder.add(message)
                if time.monotonic() >= next_draw:
                    next_draw += 1.0 / args.refresh
                    if tty:
                        sys.stdout.write(frame(view.render(gaps=sub.missing)))
                        sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        if not tty:
            print(view.render(width=160, height=60, gaps=sub.missing))
        else:
            print(view.summary(gaps=sub.missing))
        if view.outside:
            log.warning("%d results lay outside the map and were not drawn", view.outside)
    if recorder is not None:
        try:
            recorder.close()
        except Exception as exc:  # the results are gone with this process: say so loudly
            raise SystemExit(f"libs-stream watch: error: could not write results to {args.out}: {exc}") from None
        outside = f" ({recorder.outside} outside the map not written)" if recorder.outside else ""
        flagged = (f"; {recorder.untrusted} flagged untrusted (expected_rel_error above {recorder.trust_threshold:g})"
                   if recorder.trust_threshold is not None else "")
        print(f"wrote {recorder.written} results to {args.out}:/entry/transferred{outside}{flagged}")
    return 0


def cmd_view(args) -> int:
    from .view.app import ViewConfig
    from .view.server import parse_shape, serve

    def bad(reason: str) -> int:
        print(f"libs-stream view: error: {reason}", file=sys.stderr)
        return 2

    results = args.results or [DEFAULT_OUTPUT]
    keys = client_keys_from_args(args.curve_secret, args.curve_server)
    require_keys_for(results + (args.control or []), keys is not None)
    try:
        shape = parse_shape(args.shape) if args.shape else None
    except ValueError as exc:
        return bad(str(exc))
    if not 0 <= args.port <= 65535 or args.spectra_memory_mb <= 0:
        return bad("--port must be 0-65535 and --spectra-memory-mb > 0")
    if args.wait_for_map and not args.map:
        return bad("--wait-for-map needs --map")
    config = ViewConfig(results=results, controls=args.control or [], map_path=args.map, shape=shape,
                        wait_for_map=args.wait_for_map,
                        host=args.host, port=args.port, token=args.token, keys=keys,
                        spectra_budget_bytes=int(args.spectra_memory_mb * (1 << 20)))
    from acquisition.store import PairedMapError
    try:
        serve(config, announce=lambda line: print(line, flush=True), stop_with_stdin=args.stop_with_stdin)
    except PairedMapError as exc:
        return bad(str(exc))
    return 0


def cmd_keys(args) -> int:
    public, secret = make_keys(args.out, args.name)
    print(f"public key: {public}  (hand this out)\nsecret key: {secret}  (keep private)")
    return 0


def cmd_control(args) -> int:
    keys = client_keys_from_args(args.curve_secret, args.curve_server)
    reply = control.request(args.control, {"cmd": args.cmd}, timeout_s=args.timeout, keys=keys)
    print(json.dumps(reply, indent=2))
    return 0


COMMANDS = {"serve": cmd_serve, "send": cmd_send, "watch": cmd_watch, "keys": cmd_keys, "control": cmd_control,
            "view": cmd_view}


def _run(run):
    def with_keys(args) -> int:
        _keys_from_dir(args)
        return run(args)
    return with_keys


COMMANDS = {name: _run(run) for name, run in COMMANDS.items()}


def main(argv: list[str] | None = None) -> int:
    return shared_cli.run_main(build_parser, argv,
                               input_errors=(SecurityError, control.ControlError, FileNotFoundError, OSError))


if __name__ == "__main__":
    sys.exit(main())
