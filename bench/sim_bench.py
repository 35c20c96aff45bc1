"""Speed of the simulated bench in fly mode, through the real drivers and transports; prints one JSON object.

Each row is what a fly-mode acquisition does: arm both spectrometers, start the
stage across the row at step x rate, fire the row (a DG645 burst, or the
internal rate left free-running), read both systems' frames, pair them by
timestamp, wait for the stage. No file is written: this is the bench's share
of an acquisition's time, with the scene's rendering reported separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.bigsky import BigSkyLaser  # noqa: E402
from drivers.dg645 import DG645, TriggerSource  # noqa: E402
from drivers.zaber import ZaberXYStage  # noqa: E402
from sim.bench import SimulatedBench  # noqa: E402
from sim.bench.render import render_stats  # noqa: E402

EPILOG = """example:
  python bench/sim_bench.py --rows 20 --shots-per-row 100 --rate 1000 --trigger burst
"""


def configure(dg: DG645, laser: BigSkyLaser, qswitch_s: float = 150e-6) -> None:
    dg.set_delay("A", "T0", 0.0)
    dg.set_delay("B", "A", 10e-6)
    dg.set_delay("C", "T0", qswitch_s)
    dg.set_delay("D", "C", 10e-6)
    for start, end in (("E", "F"), ("G", "H")):
        dg.set_delay(start, "C", 1e-6)
        dg.set_delay(end, start, 10e-6)
    laser.set_external_trigger()
    laser.shutter_open = True
    laser.start()


def read_row(spectrometer, n: int) -> list:
    frames = []
    while len(frames) < n:
        frames += spectrometer.read_batch(n - len(frames), 2.0)
    return frames


def run(rows: int, shots_per_row: int, rate_hz: float, step_um: float, trigger: str, seed: int) -> dict:
    with SimulatedBench(seed=seed) as bench:
        r = bench.resources
        dg, laser = DG645(r["delay_generator"]), BigSkyLaser(r["laser"])
        stage = ZaberXYStage(r["stage"], poll_interval_s=0.001)
        try:
            configure(dg, laser)
            primary, secondary = bench.spectrometer("primary"), bench.spectrometer("secondary")
            x0, y0 = 2000.0, 2000.0
            stage.move_to(x0, y0)
            stage.set_speed(step_um * rate_hz)
            dg.trigger_rate_hz = rate_hz
            if trigger == "burst":
                dg.burst_mode, dg.burst_count, dg.burst_period_s = True, shots_per_row, 1.0 / rate_hz
            render_stats.update(seconds=0.0, shots=0, calls=0)
            pairs = 0
            started = time.perf_counter()
            for row in tqdm(range(rows), desc="rows", unit="row", file=sys.stderr):
                forward = row % 2 == 0
                x_end = x0 + step_um * shots_per_row if forward else x0
                primary.arm(shots_per_row)
                secondary.arm(shots_per_row)
                stage.move_to(x_end, y0 + row * step_um, wait=False)
                if trigger == "burst":
                    dg.trigger()
                else:
                    dg.trigger_source = TriggerSource.INTERNAL
                p, s = read_row(primary, shots_per_row), read_row(secondary, shots_per_row)
                if trigger != "burst":
                    dg.trigger_source = TriggerSource.SINGLE_SHOT
                by_time = {f.timestamp: f for f in s}
                pairs += sum(1 for f in p if f.timestamp in by_time)
                stage.wait_idle()
                stage.move_to(x_end, y0 + (row + 1) * step_um)
            elapsed = time.perf_counter() - started
        finally:
            for instrument in (laser, stage, dg):
                instrument.close()
    render_s = render_stats["seconds"]
    return {
        "benchmark": "simulated bench, fly mode, as fast as possible",
        "trigger": trigger, "rows": rows, "shots_per_row": shots_per_row, "rate_hz": rate_hz,
        "paired_shots": pairs,
        "paired_shots_per_s": round(pairs / elapsed, 1),
        "wall_s": round(elapsed, 3),
        "scene_render_s": round(render_s, 3),
        "scene_render_us_per_shot": round(1e6 * render_s / max(render_stats["shots"], 1), 1),
        "bench_and_drivers_us_per_shot": round(1e6 * (elapsed - render_s) / max(pairs, 1), 1),
        "paired_shots_per_s_without_scene": round(pairs / max(elapsed - render_s, 1e-9), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/sim_bench.py", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--shots-per-row", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="shot rate, Hz")
    parser.add_argument("--step-um", type=float, default=40.0)
    parser.add_argument("--trigger", choices=("burst", "internal", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.shots_per_row < 1 or not args.rate > 0:
        parser.error("--rows and --shots-per-row must be >= 1 and --rate > 0")
    kinds = ("burst", "internal") if args.trigger == "both" else (args.trigger,)
    results = [run(args.rows, args.shots_per_row, args.rate, args.step_um, kind, args.seed) for kind in kinds]
    print(json.dumps(results[0] if len(results) == 1 else
                     {"benchmark": "simulated bench, fly mode, as fast as possible",
                      "by_trigger": {r["trigger"]: r for r in results}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
