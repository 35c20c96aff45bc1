"""``libs-stream``: serve the live-transfer worker, replay a map into it, watch its output, make keys."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time

from . import control
from .security import SecurityError, ServerKeys, client_keys_from_args, make_keys, require_keys_for
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
  libs-stream watch --shape 60 80 --out map.h5    # also write results to /entry/transferred of map.h5
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


def _add_client_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--curve-secret", metavar="FILE", help="this client's CURVE secret key file (.key_secret)")
    p.add_argument("--curve-server", metavar="FILE", help="the worker's CURVE public key file (.key)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="libs-stream", formatter_class=fmt,
                                     description="Live spectral transfer over ZeroMQ (spec/stream-protocol.md).",
                                     epilog=SERVE_EXAMPLE + WATCH_EXAMPLE)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the transfer worker", formatter_class=fmt, epilog=SERVE_EXAMPLE,
                       description="Run the exported model on every secondary spectrum pulled from --input and "
                                   "publish the results on --output. Stops cleanly on Ctrl-C / SIGTERM.")
    p.add_argument("--model", required=True, help="exported model (.onnx)")
    p.add_argument("--input", default=DEFAULT_INPUT, help=f"PULL address to bind (default {DEFAULT_INPUT})")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"PUB address to bind (default {DEFAULT_OUTPUT})")
    p.add_argument("--control", default=DEFAULT_CONTROL, help=f"REP address to bind (default {DEFAULT_CONTROL})")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--max-batch", type=int, default=256, help="most spectra per inference (default 256)")
    p.add_argument("--spin", action="store_true", help="let ONNX Runtime threads spin: faster on a machine "
                                                       "the worker has to itself, slower on a shared one")
    p.add_argument("--curve-secret", metavar="FILE", help="worker's CURVE secret key file (.key_secret)")
    p.add_argument("--curve-clients", metavar="DIR", help="directory of allowed client public keys (*.key)")
    p.add_argument("--ready-file", metavar="FILE", help="write the bound endpoints here as JSON once ready")

    p = sub.add_parser("send", help="replay a paired map's secondary spectra", formatter_class=fmt,
                       epilog=SEND_EXAMPLE, description="Replay the acquired secondary spectra of a paired map, "
                                                        "in map order, with iy/ix/shot, at a given rate.")
    p.add_argument("map", help="paired-map HDF5 file")
    p.add_argument("--input", action="append", help=f"worker input address; repeat for several workers "
                                                    f"(default {DEFAULT_INPUT})")
    p.add_argument("--control", action="append", help="worker control address: wait until it is ready first")
    p.add_argument("--rate", type=float, default=1000.0, help="spectra per second; 0 = unpaced (default 1000)")
    p.add_argument("--batch", type=int, default=1, help="spectra per message (default 1)")
    p.add_argument("--system", default="secondary", help="system to replay (default secondary)")
    p.add_argument("--limit", type=int, default=None, help="send at most this many spectra")
    _add_client_keys(p)

    p = sub.add_parser("watch", help="show the label map building up live", formatter_class=fmt,
                       epilog=WATCH_EXAMPLE, description="Subscribe to workers' output and draw the k-means label "
                                                         "map from iy/ix, with throughput and latency.")
    p.add_argument("--output", action="append", help=f"worker PUB address; repeat for several workers "
                                                     f"(default {DEFAULT_OUTPUT})")
    p.add_argument("--control", action="append", help="worker control address, for a quick handshake")
    p.add_argument("--shape", type=int, nargs=2, metavar=("NY", "NX"), help="map shape (default: grow as seen)")
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
    _add_client_keys(p)

    p = sub.add_parser("keys", help="make a CURVE key pair", formatter_class=fmt, epilog=KEYS_EXAMPLE,
                       description="Create NAME.key (public: give it to the other side) and NAME.key_secret "
                                   "(keep it private). The worker admits clients whose NAME.key is in its "
                                   "--curve-clients directory.")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--name", default="worker")

    p = sub.add_parser("control", help="ask a worker: ping, stats or model", formatter_class=fmt,
                       epilog=CONTROL_EXAMPLE)
    p.add_argument("cmd", choices=["ping", "stats", "model"])
    p.add_argument("--control", default=DEFAULT_CONTROL)
    p.add_argument("--timeout", type=float, default=2.0)
    _add_client_keys(p)
    return parser


def cmd_serve(args) -> int:
    from .model import ModelContractError
    from .worker import TransferWorker, WorkerConfig

    if bool(args.curve_secret) != bool(args.curve_clients):
        raise SecurityError("CURVE needs both --curve-secret and --curve-clients")
    keys = ServerKeys.load(args.curve_secret, args.curve_clients) if args.curve_secret else None
    config = WorkerConfig(model=args.model, input=args.input, output=args.output, control=args.control,
                          threads=args.threads, spin=args.spin, max_batch=args.max_batch, keys=keys,
                          ready_file=args.ready_file)
    try:
        worker = TransferWorker(config)
    except ModelContractError as exc:
        raise SystemExit(f"libs-stream serve: error: {exc}") from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.stop())
    worker.run()
    return 0


def cmd_send(args) -> int:
    from tqdm import tqdm

    # the map store is acquisition's; only this replay command reads maps
    from acquisition.store import PairedMapError, PairedMapReader
    from .producer import SpectrumPusher

    inputs = args.input or [DEFAULT_INPUT]
    keys = client_keys_from_args(args.curve_secret, args.curve_server)
    require_keys_for(inputs + (args.control or []), keys is not None)
    if args.batch < 1 or args.rate < 0:
        raise SystemExit("libs-stream send: error: --batch must be >= 1 and --rate >= 0")
    for address in args.control or []:
        control.wait_ready(address, keys=keys)
    try:
        reader = PairedMapReader(args.map)
    except PairedMapError as exc:
        raise SystemExit(f"libs-stream send: error: {exc}") from None
    with reader:
        if args.system not in reader.systems:
            raise SystemExit(f"libs-stream send: error: {args.map} has no system {args.system!r} "
                             f"(it has {', '.join(reader.systems)})")
        shot_ids = reader.scan_values("shot_id")
        total = min(reader.n_acquired, args.limit) if args.limit else reader.n_acquired
        pusher = SpectrumPusher(inputs, keys=keys, system=args.system)
        interval = 1.0 / args.rate if args.rate else 0.0
        sent, next_time = 0, time.perf_counter()
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
                        pusher.send(spectra[rows][0], iy=int(iy[0]), ix=int(ix[0]), shot=int(shot_ids[iy[0], ix[0]]))
                    else:
                        pusher.send(spectra[rows], iy=iy, ix=ix, shot=shot_ids[iy, ix])
                    sent += k
                    progress.update(k)
                if sent >= total:
                    break
        log.info("waiting until the worker has taken the last messages (Ctrl-C to abandon them)")
        pusher.close()
    print(f"sent {sent} spectra in {pusher.seq} messages to {', '.join(inputs)}")
    return 0


def cmd_watch(args) -> int:
    from .subscriber import ResultSubscriber
    from .watch import LabelMapView, frame

    outputs = args.output or [DEFAULT_OUTPUT]
    keys = client_keys_from_args(args.curve_secret, args.curve_server)
    require_keys_for(outputs + (args.control or []), keys is not None)
    recorder = None
    if args.out:
        from .recorder import RecorderUnavailable, TransferRecorder
        wavelengths = None
        if args.control:
            model = control.request(args.control[0], {"cmd": "model"}, keys=keys)
            wavelengths = model.get("primary_wavelengths")
        try:
            recorder = TransferRecorder(args.out, wavelengths=wavelengths)
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
    if recorder is not None:
        try:
            recorder.close()
        except Exception as exc:  # the results are gone with this process: say so loudly
            raise SystemExit(f"libs-stream watch: error: could not write results to {args.out}: {exc}") from None
        print(f"wrote {recorder.written} results to {args.out}:/entry/transferred")
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
        serve(config, announce=lambda line: print(line, flush=True))
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    commands = {"serve": cmd_serve, "send": cmd_send, "watch": cmd_watch, "keys": cmd_keys, "control": cmd_control,
                "view": cmd_view}
    try:
        return commands[args.command](args)
    except (SecurityError, control.ControlError, FileNotFoundError, OSError) as exc:
        print(f"libs-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
