"""Live-transfer stream benchmark: prints ONE JSON object.

All in one run on the graph `libs-transfer export` writes (transfer.onnx_graph), with random
weights of the paper's sizes: 3872 -> 4062 pixels, the paper's baseline correction (windows
100 and 50), MLP 3872-128-512-64, decoder 64-512-1024-4062, 8 k-means centroids, 16 novelty
axes; once in float32 and once with the decoder's last layer in int8 (`libs-transfer export
--precision int8`), each model measured against itself. `--graph ds` or `--graph blend` measures
the graph of DS (of rank 64, as `train` fits it) or of the blend of VAE + MLP and DS instead
(float32); `--graph ds_full_rank`/`blend_full_rank` with DS's whole matrix; `--model MODEL.onnx`
an exported model.

- bare ONNX Runtime throughput in this process at each batch size;
- sustained end-to-end throughput through real sockets, producer process -> worker process
  (`libs-stream serve`) -> subscriber process, messages of the same batch sizes;
- p50 / p99 latency at 50 Hz and 1 kHz single-spectrum input (producer send time to
  subscriber receipt, and the worker's own latency_s);
- a sequence check that nothing was lost at any of those rates.

Run: .venv/bin/python bench/stream.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_SECONDARY, N_PRIMARY = 3872, 4062
N_DISTINCT = 256        # distinct random spectra cycled by the producer


def build_model(path: Path, precision: str = "float32", graph: str = "vae_mlp") -> None:
    """The exported graph of `graph` (vae_mlp here; bench/model_cost.py builds the others) with
    random weights of the paper's sizes, and the contracted metadata."""
    from onnx import helper

    from transfer.export import OPSET
    from transfer.onnx_graph import pipeline_graph

    if graph != "vae_mlp":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from bench.model_cost import build
        model = build(graph, trust=False)      # DS of rank 64, as `train` fits it; ds_full_rank: whole
    else:
        model = helper.make_model(pipeline_graph(_vae_mlp_arrays(np.random.default_rng(1)), "bench_random_weights",
                                                 precision=precision),
                                  opset_imports=[helper.make_opsetid("", OPSET)], producer_name="twinplume-bench")
        model.ir_version = min(model.ir_version, 9)
    helper.set_model_props(model, {
        "twinplume.model_id": f"bench-random-weights-{graph}", "twinplume.n_primary": str(N_PRIMARY),
        "twinplume.n_secondary": str(N_SECONDARY),
        "twinplume.primary_wavelengths": json.dumps(np.linspace(245, 407, N_PRIMARY).round(4).tolist()),
        "twinplume.secondary_wavelengths": json.dumps(np.linspace(260, 370, N_SECONDARY).round(4).tolist()),
        "twinplume.provenance": json.dumps({"kind": "benchmark model", "random_weights": True, "graph": graph,
                                            "precision": {"name": precision}})})
    path.write_bytes(model.SerializeToString())


def _vae_mlp_arrays(rng):
    from streaming.testing import random_dense_layers
    from transfer.onnx_graph import PipelineArrays
    return PipelineArrays(
        min_window=100, smooth_window=50,
        secondary_mean=rng.uniform(0, 100, N_SECONDARY), secondary_scale=rng.uniform(20, 60, N_SECONDARY),
        mlp=random_dense_layers(rng, [N_SECONDARY, 128, 512, 64]),
        decoder=random_dense_layers(rng, [64, 512, 1024, N_PRIMARY]),
        primary_mean=rng.uniform(0, 100, N_PRIMARY), primary_scale=rng.uniform(20, 60, N_PRIMARY),
        centroids=rng.uniform(0, 1000, (8, N_PRIMARY)), novelty_mean=np.zeros(N_SECONDARY),
        novelty_axes=np.linalg.qr(rng.standard_normal((N_SECONDARY, 16)))[0].T, novelty_reference=1.0)


def inputs() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1000, (N_DISTINCT, N_SECONDARY)).astype(np.float32)


def bare_throughput(model: Path, batch: int, threads: int, spin: bool, seconds: float) -> float:
    from streaming.model import PipelineSession

    model = PipelineSession(model, threads=threads, spin=spin)
    x = inputs()[:batch] if batch <= N_DISTINCT else np.resize(inputs(), (batch, N_SECONDARY))
    model.run(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.run(x)
        done += batch
    return done / (time.perf_counter() - start)


# ------------------------------------------------------------------ processes


def subscriber_process(output: str, control: str, source: str, expected: int, ready, results) -> None:
    from streaming.subscriber import ResultSubscriber

    with ResultSubscriber(output, topics=("transfer", "error")) as sub:
        sub.wait_ready(control, timeout_s=30)
        cpu_start = _cpu_s()
        ready.set()
        in_seqs, e2e, worker_latency, errors = [], [], [], 0
        first = last = None
        spectra = 0
        while spectra < expected:
            message = sub.recv(timeout_s=20)
            if message is None:
                break
            now = time.time()
            if message.header.get("source") != source:
                continue        # the tail of an earlier run still draining from the worker
            if message.topic == "error":
                errors += 1
                continue
            first = first if first is not None else now
            last = now
            k = 1 if len(message.header["shape"]) == 1 else message.header["shape"][0]
            spectra += k
            in_seqs.append(message.in_seq)
            e2e.append(now - message.header["t"])
            worker_latency.append(message.header["latency_s"])
        results.put({"cpu_s": _cpu_s() - cpu_start, "spectra": spectra, "in_seqs": in_seqs, "e2e": e2e, "worker_latency": worker_latency,
                     "first": first, "last": last, "errors": errors, "gaps": sub.missing})


def producer_process(input_address: str, source: str, batch: int, messages: int, rate_hz: float, start,
                     results) -> None:
    from streaming.producer import SpectrumPusher

    x = inputs()
    pusher = SpectrumPusher(input_address, source=source)
    start.wait()
    cpu_start = _cpu_s()
    t0 = time.time()
    next_time = time.perf_counter()
    for i in range(messages):
        if rate_hz:
            next_time += 1.0 / rate_hz
            delay = next_time - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        rows = (np.arange(batch) + i * batch) % N_DISTINCT
        pusher.send(x[rows[0]] if batch == 1 else x[rows])
    pusher.close()
    results.put({"t0": t0, "cpu_s": _cpu_s() - cpu_start})


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_stats(control: str) -> dict:
    import zmq

    with zmq.Context() as ctx, ctx.socket(zmq.REQ) as req:
        req.connect(control)
        req.send_json({"cmd": "stats"})
        if not req.poll(10_000):
            raise RuntimeError(f"worker at {control} does not answer 'stats'")
        return req.recv_json()


def run_stream(workers: list[dict], batch: int, messages: int, rate_hz: float) -> dict:
    ctx = mp.get_context("spawn")
    ready, start, results = ctx.Event(), ctx.Event(), ctx.Queue()
    source = f"bench-{batch}-{rate_hz}-{time.monotonic_ns()}"
    outputs, controls = [w["output"] for w in workers], [w["control"] for w in workers]
    sub = ctx.Process(target=subscriber_process, args=(outputs, controls, source,
                                                       batch * messages, ready, results))
    prod = ctx.Process(target=producer_process, args=([w["input"] for w in workers], source, batch, messages, rate_hz, start,
                                                      results))
    sub.start()
    prod.start()
    if not ready.wait(60):
        raise RuntimeError("subscriber did not join")
    worker_cpu = sum(_cpu_s(w["pid"]) for w in workers)
    batches_before = sum(_worker_stats(c)["batches"] for c in controls)
    start.set()
    got = [results.get(timeout=300) for _ in range(2)]
    worker_cpu = sum(_cpu_s(w["pid"]) for w in workers) - worker_cpu
    batches = sum(_worker_stats(c)["batches"] for c in controls) - batches_before
    prod.join()
    sub.join()
    received = next(g for g in got if "spectra" in g)
    sent = next(g for g in got if "t0" in g)
    lost = messages - len(set(received["in_seqs"]))
    out = {"batch": batch, "messages": messages, "spectra": received["spectra"], "lost_messages": lost,
           # several workers share the input: order holds per worker only
           "out_of_order": len(workers) == 1 and received["in_seqs"] != sorted(received["in_seqs"]), "worker_seq_gaps": received["gaps"],
           "errors": received["errors"]}
    out["spectra_per_inference"] = round(received["spectra"] / max(batches, 1), 1)
    if received["spectra"]:
        # where the machine's time went
        out["cpu_us_per_spectrum"] = {name: round(1e6 * cpu / received["spectra"], 1) for name, cpu in
                                      (("producer", sent["cpu_s"]), ("worker", worker_cpu),
                                       ("subscriber", received["cpu_s"]))}
    if received["last"] is not None:
        out["spectra_per_s"] = round(received["spectra"] / (received["last"] - sent["t0"]), 1)
    # under saturation latency is only queueing; it means something at a set rate
    for name in ("e2e", "worker_latency") if rate_hz else ():
        values = np.asarray(received[name])
        if values.size:
            out[f"{name}_ms"] = {"p50": round(float(np.percentile(values, 50)) * 1e3, 3),
                                 "p99": round(float(np.percentile(values, 99)) * 1e3, 3),
                                 "max": round(float(values.max()) * 1e3, 3)}
    return out


def start_worker(model: Path, workdir: Path, threads: int, max_batch: int, spin: bool,
                 transport: str) -> tuple[subprocess.Popen, dict]:
    workdir.mkdir(parents=True)
    ready = workdir / "ready.json"
    log = open(workdir / "worker.log", "w")
    if transport == "tcp":
        addresses = {name: "tcp://127.0.0.1:*" for name in ("input", "output", "control")}
    else:   # unix-domain sockets: same host, no TCP stack
        addresses = {name: f"ipc://{workdir / name}" for name in ("input", "output", "control")}
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "--log-level", "WARNING", "serve", "--model",
                             str(model), "--input", addresses["input"], "--output", addresses["output"],
                             "--control", addresses["control"],
                             "--threads", str(threads), "--max-batch", str(max_batch), "--ready-file", str(ready),
                             *(["--spin"] if spin else [])],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((workdir / "worker.log").read_text())
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def measure(model: Path, workdir: Path, args, scale: float) -> dict:
    """Bare ONNX Runtime, the stream's throughput and its latency, all on one model."""
    bare_threads = os.cpu_count() or 1       # the reference is one session on every core
    batches = (1, 16, 64)
    # bare runtime before and after the stream runs; the ratio uses the better of the two,
    # so load from other programs on a shared machine does not flatter the stream
    bare_batches = (*batches, args.max_batch)     # max_batch: what the worker can reach by micro-batching

    def bare() -> dict[str, float]:
        return {str(b): round(bare_throughput(model, b, bare_threads, args.spin, 1.5 * scale), 1)
                for b in bare_batches}

    result: dict = {"bare_threads": bare_threads}
    bare_before = bare()
    started = [start_worker(model, workdir / f"worker{i}", args.threads, args.max_batch, args.spin,
                            args.transport) for i in range(args.workers)]
    workers = [worker for _, worker in started]
    try:
        run_stream(workers, 16, 20, 0)       # warm-up: connections, first inferences
        throughput = {}
        for batch in batches:
            messages = max(20, int(scale * {1: 15000, 16: 1500, 64: 500}[batch]))
            throughput[str(batch)] = run_stream(workers, batch, messages, 0)
        latency = {f"{rate}_hz": run_stream(workers, 1, max(50, int(scale * rate * seconds)), rate)
                   for rate, seconds in ((50, 4), (1000, 6))}
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            proc.wait(30)
    bare_after = bare()
    result["bare_ort_spectra_per_s"] = {b: max(bare_before[b], bare_after[b]) for b in bare_before}
    result["bare_ort_before_after"] = {b: [bare_before[b], bare_after[b]] for b in bare_before}
    result["end_to_end"] = throughput
    result["latency"] = latency
    best_e2e = max(t.get("spectra_per_s", 0) for t in throughput.values())
    ratios = {b: round(throughput[b].get("spectra_per_s", 0) / result["bare_ort_spectra_per_s"][b], 3)
              for b in throughput}
    result["end_to_end_vs_bare"] = ratios
    runs = list(throughput.values()) + list(latency.values())
    result["nothing_lost"] = all(r["lost_messages"] == 0 and r["worker_seq_gaps"] == 0 and not r["out_of_order"]
                                 for r in runs)
    result["targets"] = {
        "e2e_ge_10000_spectra_per_s": best_e2e >= 10_000,
        "e2e_ge_half_of_bare_at_same_batch": all(r >= 0.5 for r in ratios.values()),
        "p99_le_5ms_at_1khz": latency["1000_hz"].get("e2e_ms", {}).get("p99", 1e9) <= 5.0,
        "nothing_lost": result["nothing_lost"],
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test of the benchmark)")
    parser.add_argument("--precision", choices=("float32", "int8", "both"), default="both",
                        help="which paper-size graph to measure (default: %(default)s; ignored with --model)")
    parser.add_argument("--workers", type=int, default=1, help="workers sharing the input (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime threads per worker (default: the cores shared among the workers; the bare "
                             "reference always has every core)")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--spin", action="store_true", help="ONNX Runtime spinning threads, both sides")
    parser.add_argument("--transport", choices=("tcp", "ipc"), default="tcp",
                        help="loopback TCP (the default addresses) or unix-domain sockets (default: %(default)s)")
    parser.add_argument("--graph", choices=("vae_mlp", "ds", "blend", "ds_full_rank", "blend_full_rank"),
                        default="vae_mlp",
                        help="which paper-size graph with random weights (default: %(default)s; ds and blend with "
                             "DS of rank 64 as `train` fits it, *_full_rank with DS's whole matrix; all but vae_mlp "
                             "in float32 only; ignored with --model)")
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL.onnx",
                        help="an exported model to measure (default: the exported graph with random paper-size "
                             "weights)")
    args = parser.parse_args()
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.workers)
    scale = 0.2 if args.quick else 1.0
    result: dict = {"bench": "stream", "cpu_count": os.cpu_count(), "transport": args.transport,
                    "workers": args.workers, "threads": args.threads, "spin": args.spin, "max_batch": args.max_batch,
                    # the machine is shared: the load around the run says how far to trust it
                    "loadavg_1min_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.model is not None:
            model = args.model.resolve()
            result["model"] = {"path": str(model)}
            result["measured"] = measure(model, workdir / "measured", args, scale)
        else:
            result["model"] = {"n_secondary": N_SECONDARY, "n_primary": N_PRIMARY, "mlp": [3872, 128, 512, 64],
                               "decoder": [64, 512, 1024, 4062], "graph": "transfer.onnx_graph, random weights",
                               "transfer_model": args.graph}
            precisions = ("float32", "int8") if args.precision == "both" else (args.precision,)
            for precision in precisions if args.graph == "vae_mlp" else ("float32",):
                model = workdir / f"bench_model_{precision}.onnx"
                build_model(model, precision, args.graph)
                result[precision] = measure(model, workdir / precision, args, scale)
    result["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
