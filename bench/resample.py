"""Resampling speed: building and applying `AxisResampler` (the cubic spline that puts a
recalibrated or line-aligned spectrometer's spectra back on the model's axis).

Two references, measured in the same run on the same axes:

- building: the whole-axis construction (one cubic spline through every source pixel for
  each block of unit spectra, the operator the resampler held before it was windowed);
  the two operators are compared entry by entry as well;
- applying: per-spectrum linear interpolation with `np.interp`, what a lab script would
  write (it blurs lines; the spline does not, docs/transfer.md).

Prints one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import scipy
from scipy import sparse
from scipy.interpolate import CubicSpline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.shared.spectral import AxisResampler  # noqa: E402
from bench.preprocess import best_time, synthetic_spectra  # noqa: E402

EPILOG = """examples:
  python bench/resample.py                         # the secondary's 3872 px, a severe day's 0.8 px shift
  python bench/resample.py --n-pixels 4062 --shift-px 1.5 --stretch-px 0.5
"""


def whole_axis_operator(wl_from: np.ndarray, wl_to: np.ndarray, block: int = 512) -> sparse.csr_matrix:
    """The reference: every block of unit spectra splined through the whole source axis."""
    target = np.clip(wl_to, wl_from[0], wl_from[-1])
    rows, cols, vals = [], [], []
    for start in range(0, wl_from.size, block):
        stop = min(wl_from.size, start + block)
        unit = np.zeros((wl_from.size, stop - start))
        unit[np.arange(start, stop), np.arange(stop - start)] = 1.0
        weights = CubicSpline(wl_from, unit, axis=0)(target)
        r, c = np.nonzero(np.abs(weights) > 1e-6)
        rows.append(r), cols.append(c + start), vals.append(weights[r, c])
    return sparse.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(wl_to.size, wl_from.size))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-pixels", type=int, default=3872, help="pixels per spectrum (secondary: 3872)")
    parser.add_argument("--shift-px", type=float, default=0.8, help="how far the source axis lies from the target")
    parser.add_argument("--stretch-px", type=float, default=0.2, help="and how much more at the red end")
    parser.add_argument("--n-spectra", type=int, default=4096, help="spectra resampled per timed run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    n = args.n_pixels
    target = np.linspace(260.0, 370.0, n)
    u = (np.arange(n) - 0.5 * (n - 1)) / (0.5 * n)
    source = np.interp(np.arange(n) - args.shift_px - args.stretch_px * u, np.arange(n), target,
                       left=np.nan, right=np.nan)
    step = target[1] - target[0]
    ends = np.isnan(source)
    source[ends] = target[0] + (np.arange(n)[ends] - args.shift_px - args.stretch_px * u[ends]) * step
    X = synthetic_spectra(args.n_spectra, n, args.seed)

    build_s = best_time(lambda: AxisResampler(source, target), args.repeat)
    reference_build_s = best_time(lambda: whole_axis_operator(source, target), 1)
    resampler = AxisResampler(source, target)
    difference = abs(resampler.operator - whole_axis_operator(source, target)).max()

    apply_s = best_time(lambda: resampler(X), args.repeat) / args.n_spectra
    linear_s = best_time(lambda: [np.interp(target, source, x) for x in X[:512]], args.repeat) / 512
    one_s = best_time(lambda: resampler(X[:1]), 20)
    print(json.dumps({
        "benchmark": "axis_resampler", "n_pixels": n, "shift_px": args.shift_px, "stretch_px": args.stretch_px,
        "build_s": round(build_s, 4), "reference_whole_axis_build_s": round(reference_build_s, 4),
        "build_speedup": round(reference_build_s / build_s, 1),
        "max_abs_weight_difference": float(difference),
        "weights_per_pixel": round(resampler.operator.nnz / n, 1),
        "apply_us_per_spectrum_batch": round(apply_s * 1e6, 2),
        "apply_us_one_spectrum": round(one_s * 1e6, 2),
        "reference_np_interp_us_per_spectrum": round(linear_s * 1e6, 2),
        "n_spectra": args.n_spectra, "threads": "numpy/scipy default",
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
