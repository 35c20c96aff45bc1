"""Live-view benchmark (`libs-stream view`): prints ONE JSON object.

A publisher process speaks the worker's output protocol (streaming.protocol.encode_transfer,
4062-pixel float32 spectra as the paper's primary system, labels, novelty, `t` = the time of
publication, a `status` every second) at 1 kHz, one spectrum per message, in raster order
over a 500 x 500 map. `libs-stream view` (its own process, as in use) subscribes, and one
headless Chromium page watches it. A bare `ResultSubscriber` process on the same stream is
the reference: what merely receiving and decoding each result costs, in the same run.

Measured twice in the same run, at the start of the map (N spots after a 2,000-spot warm-up,
whose one-off cost, the spectrum store's first touch, is reported apart) and at its end (its
last N spots, with every spot before them already on the page):
- the view's CPU per result (µs) and its share of one core (user + system, /proc);
- the reference subscriber's CPU per result;
- update messages per second and bytes per result sent to the page;
- the page's frame time (requestAnimationFrame intervals, p50 / p99) and the time it spends
  applying one update (p50 / p99), plus an idle page's frame time before the stream starts;
- the lag from a result's publication to its spot being drawn on the page (p99, per update
  the oldest result in it, so an upper bound for every spot).
Between the two, the middle of the map is published in messages of 250 spectra at 20 times
the rate (`--full` publishes every spot at 1 kHz instead: 250 s for 500 x 500).

Run: .venv/bin/python bench/view.py [--spots 20000] [--shape 500x500] [--rate 1000] [--full]
Needs Chromium + chromedriver (Debian: chromium chromium-driver) and selenium.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_PRIMARY = 4062
FILL_BATCH = 250
WARM_UP_SPOTS = 2000


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the publisher: the worker's output protocol, paced ---------------------------------------------


def publisher(address_out, commands, done, shape):
    import zmq

    from streaming import protocol

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 100_000
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    address_out.put(f"tcp://127.0.0.1:{port}")
    rng = np.random.default_rng(0)
    pool = (rng.gamma(2.0, 50.0, (64, N_PRIMARY)) * rng.uniform(0.5, 2.0, (64, 1))).astype(np.float32)
    seq = {"transfer": 0, "status": 0}
    worker = "bench:publisher"
    nx = shape[1]

    def status():
        pub.send_multipart(protocol.encode_status({"seq": seq["status"], "worker": worker, "model": "bench",
                                                   "t": time.time(), "received": seq["transfer"],
                                                   "published_spectra": seq["transfer"], "rejected": 0}))
        seq["status"] += 1

    next_status = time.monotonic()
    while True:
        try:
            command = commands.get(timeout=0.2)
        except Exception:
            command = None
        if time.monotonic() >= next_status:
            status()
            next_status = time.monotonic() + 1.0
        if command is None:
            continue
        if command[0] == "stop":
            break
        _, first, last, rate, batch = command
        interval = batch / rate if rate else 0.0
        t_next = time.perf_counter()
        for start in range(first, last, batch):
            k = min(batch, last - start)
            spots = np.arange(start, start + k)
            rows = spots % len(pool)
            frames = protocol.encode_transfer(
                pool[rows], seq=seq["transfer"], in_seq=seq["transfer"], single=(batch == 1),
                label=(spots * 7 // 1000) % 8, novelty=1.0 + (spots % 97) / 40.0, model="bench", latency_s=0.002,
                echo={"iy": int(spots[0] // nx) if batch == 1 else (spots // nx).tolist(),
                      "ix": int(spots[0] % nx) if batch == 1 else (spots % nx).tolist(), "t": time.time()},
                worker=worker)
            pub.send_multipart(frames, copy=False)
            seq["transfer"] += 1
            if time.monotonic() >= next_status:
                status()
                next_status = time.monotonic() + 1.0
            if interval:
                t_next += interval
                delay = t_next - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        done.put(seq["transfer"])
    pub.close(linger=2000)
    ctx.term()


def reference_subscriber(address, ready, stop, result):
    """The floor: receive and decode every result with the project's subscriber, nothing else."""
    from streaming.subscriber import ResultSubscriber

    sub = ResultSubscriber(address, topics=("transfer",))
    ready.set()
    count = 0
    while not stop.is_set():
        message = sub.recv(timeout_s=0.1)
        if message is not None:
            count += 1 if message.array.ndim == 1 else message.array.shape[0]
    result.put(count)
    sub.close()


# -- the run -------------------------------------------------------------------------------------------


def page_figures(browser) -> dict:
    figures = browser.execute_script(
        "const s = window.viewStats; const out = {frames: s.frames.slice(), lags: s.lags.slice(), "
        "apply: s.applyMs.slice(), shown: s.shown, messages: s.messages, bytes: s.bytes};"
        "s.frames.length = 0; s.lags.length = 0; s.applyMs.length = 0; return out;")
    from tests.streaming.viewtools import percentile

    def ms(values, q):
        value = percentile(values, q)
        return None if value is None else round(value, 2)

    return {"frame_ms_p50": ms(figures["frames"], 50), "frame_ms_p99": ms(figures["frames"], 99),
            "apply_ms_p50": ms(figures["apply"], 50), "apply_ms_p99": ms(figures["apply"], 99),
            "lag_ms_p50": ms([1000 * v for v in figures["lags"]], 50),
            "lag_ms_p99": ms([1000 * v for v in figures["lags"]], 99),
            "updates_seen": len(figures["lags"]), "spots_on_page": figures["shown"]}


def run_phase(name, first, last, rate, batch, *, commands, done, view, browser, ref_pid) -> dict:
    page_figures(browser)                       # drop what the page measured before
    stats0, cpu0, ref0, t0 = view.stats(), cpu_seconds(view.proc.pid), cpu_seconds(ref_pid), time.monotonic()
    commands.put(("phase", first, last, rate, batch))
    done.get(timeout=3600)
    target = last
    deadline = time.monotonic() + 60
    while view.stats()["shown"] < target and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)                             # the last update reaches the page
    wall = time.monotonic() - t0
    stats1, cpu1, ref1 = view.stats(), cpu_seconds(view.proc.pid), cpu_seconds(ref_pid)
    n = last - first
    cpu = cpu1 - cpu0
    out = {"phase": name, "spots": [first, last], "rate_hz": rate, "spectra_per_message": batch,
           "wall_s": round(wall, 2), "view_cpu_us_per_result": round(1e6 * cpu / n, 1),
           "view_core_share": round(cpu / wall, 4),
           "reference_subscriber_cpu_us_per_result": round(1e6 * (ref1 - ref0) / n, 1),
           "update_messages_per_s": round((stats1["messages_sent"] - stats0["messages_sent"]) / wall, 2),
           "bytes_per_result_to_page": round((stats1["bytes_sent"] - stats0["bytes_sent"]) / n, 1),
           "snapshots_sent": stats1["snapshots"] - stats0["snapshots"],
           "lost_by_view": stats1["lost"] - stats0["lost"], "shown_after": stats1["shown"]}
    out.update(page_figures(browser))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="500x500")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--spots", type=int, default=20_000, help="spots measured at the start and at the end")
    parser.add_argument("--full", action="store_true", help="publish every spot at --rate (no fast middle)")
    args = parser.parse_args()

    from streaming.view.server import parse_shape
    from tests.streaming.viewtools import ViewProcess, find_browser, start_browser, wait_for

    shape = parse_shape(args.shape)
    total = shape[0] * shape[1]
    n = min(args.spots, (total - WARM_UP_SPOTS) // 2)
    found = find_browser()
    if found is None:
        print(json.dumps({"bench": "view", "skipped": "no Chromium + chromedriver here (apt-get install "
                                                      "chromium chromium-driver)"}))
        return 0
    ctx = mp.get_context("spawn")
    address_q, commands, done = ctx.Queue(), ctx.Queue(), ctx.Queue()
    pub = ctx.Process(target=publisher, args=(address_q, commands, done, shape), daemon=True)
    pub.start()
    address = address_q.get(timeout=30)
    ready, stop, ref_result = ctx.Event(), ctx.Event(), ctx.Queue()
    ref = ctx.Process(target=reference_subscriber, args=(address, ready, stop, ref_result), daemon=True)
    ref.start()
    ready.wait(30)
    result: dict = {"bench": "view", "shape": list(shape), "n_primary": N_PRIMARY, "rate_hz": args.rate,
                    "cpu_count": os.cpu_count(), "loadavg_1min_before": round(os.getloadavg()[0], 2),
                    "subset": None if args.full else
                    f"{WARM_UP_SPOTS} warm-up spots, then {n} at {args.rate:g} Hz (start); the {total - 2 * n - WARM_UP_SPOTS} after them at {20 * args.rate:g} spectra/s in messages of "
                    f"{FILL_BATCH} spectra"}
    with tempfile.TemporaryDirectory() as tmp:
        view = ViewProcess(Path(tmp), "--results", address, "--shape", args.shape)
        browser = start_browser(*found, temp_dir=Path(tmp))
        try:
            wait_for(lambda: view.stats()["contact"], 30, "the view's subscription")
            browser.get(view.url)
            wait_for(lambda: browser.execute_script("return window.viewStats.snapshots") >= 1, 30, "the page")
            time.sleep(3)
            idle = page_figures(browser)
            result["idle_page_frame_ms_p50"], result["idle_page_frame_ms_p99"] = (idle["frame_ms_p50"],
                                                                                  idle["frame_ms_p99"])
            phase = dict(commands=commands, done=done, view=view, browser=browser, ref_pid=ref.pid)
            # the first results pay once for the spectrum store's memory: reported apart, not per result
            warm = run_phase("warm-up", 0, WARM_UP_SPOTS, args.rate, 1, **phase)
            result["warm_up"] = {k: warm[k] for k in ("spots", "wall_s", "view_cpu_us_per_result")}
            first = WARM_UP_SPOTS
            if args.full:
                start = run_phase("start", first, first + n, args.rate, 1, **phase)
                run_phase("middle", first + n, total - n, args.rate, 1, **phase)
            else:
                start = run_phase("start", first, first + n, args.rate, 1, **phase)
                fill = run_phase("middle (fast fill)", first + n, total - n, 20 * args.rate, FILL_BATCH, **phase)
                result["fill"] = {k: fill[k] for k in ("wall_s", "view_cpu_us_per_result", "shown_after",
                                                       "lost_by_view")}
            end = run_phase("end", total - n, total, args.rate, 1, **phase)
            result["start"], result["end"] = start, end
            shot = os.environ.get("BENCH_VIEW_SCREENSHOT")
            if shot:
                browser.save_screenshot(shot)
            result["page_caught_up"] = bool(wait_for(
                lambda: browser.execute_script("return window.viewStats.shown") >= total, 30, "the page"))
        finally:
            browser.quit()
            view.stop()
            if "Traceback" in view.log():
                print(view.log()[-3000:], file=sys.stderr)
            commands.put(("stop",))
            stop.set()
            pub.join(10)
            ref.join(10)
    result["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    s, e = result["start"], result["end"]
    result["targets"] = {
        "view_under_10pct_core_at_1kHz": max(s["view_core_share"], e["view_core_share"]) < 0.10,
        "lag_p99_under_500ms": max(s["lag_ms_p99"] or 1e9, e["lag_ms_p99"] or 1e9) < 500,
        "cpu_end_over_start": round(e["view_cpu_us_per_result"] / max(s["view_cpu_us_per_result"], 1e-9), 2),
        "lag_p99_end_over_start": None if not (s["lag_ms_p99"] and e["lag_ms_p99"]) else
        round(e["lag_ms_p99"] / s["lag_ms_p99"], 2),
        "bytes_end_over_start": round(e["bytes_per_result_to_page"] / max(s["bytes_per_result_to_page"], 1e-9), 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
