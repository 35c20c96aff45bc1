"""Baseline-correction speed: the vectorised implementation against a per-spectrum
pandas rolling-window implementation of the same algorithm, on the same spectra.

Prints one JSON object on stdout (progress goes to stderr).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.shared.spectral import baseline_correct  # noqa: E402
from bench.pandas_baseline import pandas_baseline_correct  # noqa: E402

EPILOG = """example:
  python bench/preprocess.py --n-spectra 4096 --n-pixels 4062 --reference-spectra 200
"""


def synthetic_spectra(n: int, n_pixels: int, seed: int) -> np.ndarray:
    """LIBS-like float32 counts: lines on a sloped continuum, with noise."""
    rng = np.random.default_rng(seed)
    px = np.arange(n_pixels, dtype=np.float32)
    out = np.empty((n, n_pixels), dtype=np.float32)
    centres = rng.uniform(0, n_pixels, 60)
    for i in range(n):
        continuum = rng.uniform(100, 500) + rng.uniform(0, 0.1) * px
        lines = np.zeros(n_pixels, dtype=np.float32)
        for c, a in zip(centres, rng.uniform(0, 4000, centres.size)):
            lo, hi = int(max(c - 12, 0)), int(min(c + 12, n_pixels))
            lines[lo:hi] += a * np.exp(-0.5 * ((px[lo:hi] - c) / 2.5) ** 2)
        out[i] = continuum + lines + rng.normal(0, 15, n_pixels)
    return out


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-spectra", type=int, default=4096, help="spectra for the vectorised run")
    parser.add_argument("--n-pixels", type=int, default=4062, help="pixels per spectrum (primary: 4062)")
    parser.add_argument("--reference-spectra", type=int, default=200,
                        help="spectra timed with the pandas reference (per-spectrum time is scaled)")
    parser.add_argument("--min-window", type=int, default=100)
    parser.add_argument("--smooth-window", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="vectorised runs; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X = synthetic_spectra(args.n_spectra, args.n_pixels, args.seed)
    n_ref = min(args.reference_spectra, args.n_spectra)
    start = time.perf_counter()
    reference = np.array([pandas_baseline_correct(x, args.min_window, args.smooth_window)
                          for x in tqdm(X[:n_ref], desc="pandas reference", file=sys.stderr)])
    reference_s = (time.perf_counter() - start) / n_ref

    vector32_s = best_time(lambda: baseline_correct(X, args.min_window, args.smooth_window),
                           args.repeat) / args.n_spectra
    X64 = X.astype(np.float64)
    vector64_s = best_time(lambda: baseline_correct(X64, args.min_window, args.smooth_window),
                           args.repeat) / args.n_spectra
    got32 = baseline_correct(X[:n_ref], args.min_window, args.smooth_window)
    got64 = baseline_correct(X64[:n_ref], args.min_window, args.smooth_window)
    scale = float(np.abs(reference).max())
    print(json.dumps({
        "benchmark": "baseline_correct",
        "n_pixels": args.n_pixels, "min_window": args.min_window, "smooth_window": args.smooth_window,
        "n_spectra_vectorised": args.n_spectra, "n_spectra_reference": n_ref,
        "reference_pandas_us_per_spectrum": round(reference_s * 1e6, 2),
        "vectorised_float32_us_per_spectrum": round(vector32_s * 1e6, 2),
        "vectorised_float64_us_per_spectrum": round(vector64_s * 1e6, 2),
        "speedup_float32": round(reference_s / vector32_s, 1),
        "speedup_float64": round(reference_s / vector64_s, 1),
        "vectorised_float32_spectra_per_s": round(1 / vector32_s),
        "max_rel_diff_float32": float(np.abs(got32 - reference).max() / scale),
        "max_rel_diff_float64": float(np.abs(got64 - reference).max() / scale),
        "threads": 1,
        "python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
