"""Czerny-Turner spectrograph and linear-array detector models.

Light path per system: collection optics and fibre -> grating (Czerny-Turner,
flat detector, non-linear lambda(pixel)) -> instrument function (Gaussian,
FWHM varying across the detector) convolved with each line's Stark Lorentzian
-> integration over each pixel -> detector QE, PRNU -> photon shot noise,
read noise, dark offset -> 16-bit ADC.

Line profiles are precomputed per line on a geometric grid of electron
densities and rendered with sparse products; a chunk of shots interpolates
between the two grid nodes around its electron density.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse
from scipy.interpolate import CubicSpline
from scipy.optimize import fsolve
from scipy.special import ndtri, voigt_profile
from threadpoolctl import ThreadpoolController

from sim.lines import LineTable, load_lines
from sim.plasma import CONTINUUM_NM

ADC_MAX = 65535.0
_BLAS = ThreadpoolController()
#: Electron-density grid of the precomputed line profiles, in units of 1e17 cm^-3.
STARK_GRID = 2.0 ** np.arange(-6, 7)
_SUBPIXELS = 8
#: Width of the dense pixel blocks the rendering products are cut into.
_BLOCK_PIXELS = 192
#: float32 values per block of the detector model (fits a core's L2 cache)
_CACHE_FLOATS = 65536


@dataclass(frozen=True)
class SpectrographDesign:
    """Fixed properties of one spectrometer system."""

    name: str
    model: str
    serial: str
    lambda_min_nm: float
    lambda_max_nm: float
    pixels: int
    pixel_um: float
    focal_mm: float
    included_angle_deg: float
    detector_tilt_deg: float
    fwhm_blue_nm: float            # instrument FWHM at lambda_min (paper: primary 0.046-0.035,
    fwhm_red_nm: float             # secondary 0.023-0.032; blue/red ends from libs-physics.md s.9)
    qe_nodes: tuple                # ((nm, QE), ...) detector quantum efficiency
    blaze_nm: float                # grating efficiency peak
    blaze_width_nm: float
    throughput: float              # counts per photon of the plasma model, incl. fibre share
    gain_e_per_count: float
    read_noise_e: float
    dark_offset_counts: float
    dsnu_counts: float             # fixed-pattern dark non-uniformity (rms)
    prnu: float                    # fixed-pattern photo-response non-uniformity (rms, relative)
    stray_fraction: float          # share of line light scattered into a smooth background


PRIMARY = SpectrographDesign(
    name="primary", model="CT-245-407 (simulated)", serial="SIM-P-0001",
    lambda_min_nm=245.0, lambda_max_nm=407.0, pixels=4062, pixel_um=8.0, focal_mm=100.0,
    included_angle_deg=30.0, detector_tilt_deg=3.0, fwhm_blue_nm=0.046, fwhm_red_nm=0.035,
    qe_nodes=((230, 0.20), (260, 0.30), (300, 0.42), (350, 0.52), (420, 0.58)),
    blaze_nm=300.0, blaze_width_nm=90.0, throughput=4.0e6,
    gain_e_per_count=1.8, read_noise_e=14.0, dark_offset_counts=950.0, dsnu_counts=2.0,
    prnu=0.004, stray_fraction=5.0e-3)

SECONDARY = SpectrographDesign(
    name="secondary", model="CT-260-370 (simulated)", serial="SIM-S-0001",
    lambda_min_nm=260.0, lambda_max_nm=370.0, pixels=3872, pixel_um=7.0, focal_mm=140.0,
    included_angle_deg=28.0, detector_tilt_deg=-2.0, fwhm_blue_nm=0.023, fwhm_red_nm=0.032,
    qe_nodes=((250, 0.12), (280, 0.20), (320, 0.32), (380, 0.42)),
    blaze_nm=330.0, blaze_width_nm=70.0, throughput=4.3e6,
    gain_e_per_count=1.4, read_noise_e=12.0, dark_offset_counts=780.0, dsnu_counts=1.5,
    prnu=0.005, stray_fraction=6.0e-3)

DESIGNS = {"primary": PRIMARY, "secondary": SECONDARY}

#: A narrow, high-resolution secondary (R ~ 23 000): a 2400 /mm-class grating at
#: 250 mm focal length, 278-322 nm; sees Si I 288, Al I 308/309, Mg II 279/280, Fe II
#: 273-275, Mn II 293-295, Ca/Ti lines near 300-320 nm, and nothing of 245-275 or 325-407 nm.
NARROW_HIRES = SpectrographDesign(
    name="secondary", model="CT-278-322-HR (simulated)", serial="SIM-S-HR-0001",
    lambda_min_nm=278.0, lambda_max_nm=322.0, pixels=3648, pixel_um=8.0, focal_mm=250.0,
    included_angle_deg=24.0, detector_tilt_deg=-1.5, fwhm_blue_nm=0.0125, fwhm_red_nm=0.0135,
    qe_nodes=((250, 0.12), (280, 0.20), (320, 0.32), (380, 0.42)),
    blaze_nm=300.0, blaze_width_nm=60.0, throughput=6.0e6,
    gain_e_per_count=1.4, read_noise_e=12.0, dark_offset_counts=780.0, dsnu_counts=1.5,
    prnu=0.005, stray_fraction=4.0e-3)

#: A broad, low-resolution secondary (R ~ 1400-2200): a 600 /mm-class grating, a
#: 2048-pixel detector over 240-415 nm and a wide slit (FWHM ~ 2 pixels): lines blend (Fe II 259.8/259.9, Si I 251-253, Mn I 403),
#: but K I 404 and Ca II 393/397 are seen.
BROAD_LOWRES = SpectrographDesign(
    name="secondary", model="CT-240-415-LR (simulated)", serial="SIM-S-LR-0001",
    lambda_min_nm=240.0, lambda_max_nm=415.0, pixels=2048, pixel_um=14.0, focal_mm=250.0,
    included_angle_deg=32.0, detector_tilt_deg=2.0, fwhm_blue_nm=0.17, fwhm_red_nm=0.19,
    qe_nodes=((230, 0.10), (260, 0.14), (300, 0.25), (350, 0.38), (420, 0.48)),
    blaze_nm=350.0, blaze_width_nm=110.0, throughput=1.2e6,
    gain_e_per_count=2.0, read_noise_e=20.0, dark_offset_counts=1000.0, dsnu_counts=2.5,
    prnu=0.006, stray_fraction=1.0e-2)

#: Secondary spectrometers a scene can use; "standard" is the paper's (and the default).
SECONDARY_VARIANTS = {"standard": SECONDARY, "narrow-hires": NARROW_HIRES, "broad-lowres": BROAD_LOWRES}


def secondary_design(variant: str) -> SpectrographDesign:
    try:
        return SECONDARY_VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown secondary variant {variant!r}; known: {', '.join(SECONDARY_VARIANTS)}") from None


_NORMAL_TABLE = ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)


def standard_normal_fast(rng: np.random.Generator, shape) -> np.ndarray:
    """float32 N(0, 1) deviates via a 65536-entry inverse-CDF table."""
    size = int(np.prod(shape))
    raw = rng.bit_generator.random_raw((size + 3) // 4).view(np.uint16)[:size]
    return _NORMAL_TABLE[raw].reshape(shape)


@dataclass(frozen=True)
class InstrumentDrift:
    """What changes in a spectrometer between days."""

    shift_px: float = 0.0          # wavelength drift at the detector centre, pixels
    stretch_px: float = 0.0        # extra drift at the detector ends (+ red end, - blue end)
    fwhm_scale: float = 1.0        # focus / temperature: resolution drift
    dark_shift_counts: float = 0.0
    stray_scale: float = 1.0       # scattered-light level (fibre coupling, cleanliness)
    stray_tilt: float = 0.0        # slope change of the scattered-light background


class CzernyTurner:
    """lambda(pixel) from the grating equation m lambda = d (sin alpha + sin beta)."""

    def __init__(self, design: SpectrographDesign):
        self.design = design
        n = design.pixels
        self._centre = 0.5 * (n - 1)
        tilt = np.radians(design.detector_tilt_deg)
        focal = design.focal_mm * 1e3

        def beta_offset(p):
            x = (np.asarray(p, dtype=np.float64) - self._centre) * design.pixel_um
            return np.arctan(x * np.cos(tilt) / (focal + x * np.sin(tilt)))

        self._beta_offset = beta_offset
        included = np.radians(design.included_angle_deg)

        def ends(params):
            d_nm, beta_c = params
            lam = d_nm * (np.sin(beta_c + included) + np.sin(beta_c + beta_offset([0, n - 1])))
            return lam - [design.lambda_min_nm, design.lambda_max_nm]

        span = beta_offset(n - 1) - beta_offset(0)
        d0 = (design.lambda_max_nm - design.lambda_min_nm) / span
        self.groove_spacing_nm, self.beta_centre = fsolve(ends, [d0, 0.0], xtol=1e-13)
        self._alpha = self.beta_centre + included

    @property
    def grooves_per_mm(self) -> float:
        return 1e6 / self.groove_spacing_nm

    def wavelength(self, pixel) -> np.ndarray:
        beta = self.beta_centre + self._beta_offset(pixel)
        return self.groove_spacing_nm * (np.sin(self._alpha) + np.sin(beta))

    def dispersion(self, pixel) -> np.ndarray:
        """d lambda / d pixel, nm per pixel (numerical derivative)."""
        p = np.asarray(pixel, dtype=np.float64)
        return 0.5 * (self.wavelength(p + 0.5) - self.wavelength(p - 0.5)) / 0.5


class Spectrograph:
    """One system on one day: renders plasma emission to detector counts."""

    def __init__(self, design: SpectrographDesign, drift: InstrumentDrift = InstrumentDrift(),
                 lines: LineTable | None = None):
        self.design = design
        self.drift = drift
        self.lines = lines if lines is not None else load_lines()
        self.grating = CzernyTurner(design)
        n = design.pixels
        self.pixel = np.arange(n, dtype=np.float64)
        #: the factory calibration; the day's drift moves the light, not this axis
        self.wavelengths = self.grating.wavelength(self.pixel)
        #: what each pixel sees today: the axis a perfect wavelength calibration of the day gives
        self.calibrated_wavelengths = self.grating.wavelength(self._drifted(self.pixel))
        self._true_wavelengths = self.calibrated_wavelengths
        fixed = np.random.default_rng(zlib.crc32(design.serial.encode()))
        self.prnu = (1.0 + design.prnu * fixed.standard_normal(n)).astype(np.float32)
        self.dark_level = (design.dark_offset_counts + drift.dark_shift_counts
                           + design.dsnu_counts * fixed.standard_normal(n)).astype(np.float32)
        lam = self.wavelengths
        lo, hi = lam[0], lam[-1]
        self.line_index = np.flatnonzero((self.lines.wavelength_nm > lo - 1.0)
                                         & (self.lines.wavelength_nm < hi + 1.0))
        lam_l = self.lines.wavelength_nm[self.line_index]
        # lines just beyond the detector ends still spill their wings onto it: extend the grid
        margin = np.arange(-100.0, n + 100.0)
        self.line_pixel = np.interp(lam_l, self.grating.wavelength(self._drifted(margin)), margin)
        self.line_response = (design.throughput * self.response(lam_l)).astype(np.float32)
        self._profiles: dict[int, sparse.csr_matrix] = {}
        self._blocks: dict[tuple[int, int], list] = {}
        self._continuum_matrix = self._build_continuum_matrix()
        u = (lam - lo) / (hi - lo)
        shape = (1.0 + 0.6 * np.exp(-0.5 * ((u - 0.7) / 0.3) ** 2) + drift.stray_tilt * (u - 0.5))
        self._stray_shape = (np.maximum(shape, 0.05) / shape.mean() * self.prnu).astype(np.float32)

    def _drifted(self, p):
        u = (np.asarray(p) - 0.5 * (self.design.pixels - 1)) / (0.5 * self.design.pixels)
        return p + self.drift.shift_px + self.drift.stretch_px * u

    # -- optics ----------------------------------------------------------------------
    def response(self, wavelength_nm) -> np.ndarray:
        """Relative photons-to-electrons efficiency: optics, grating, detector QE."""
        d = self.design
        lam = np.asarray(wavelength_nm, dtype=np.float64)
        qe_nm, qe = np.array(d.qe_nodes).T
        detector = np.interp(lam, qe_nm, qe)
        grating = 0.35 + 0.4 * np.exp(-0.5 * ((lam - d.blaze_nm) / d.blaze_width_nm) ** 2)
        optics = 0.6 + 0.3 * np.clip((lam - 240.0) / 170.0, 0, 1)   # UV loss in fibre and lens
        return detector * grating * optics

    def instrument_fwhm_nm(self, wavelength_nm) -> np.ndarray:
        d = self.design
        u = (np.asarray(wavelength_nm) - d.lambda_min_nm) / (d.lambda_max_nm - d.lambda_min_nm)
        return self.drift.fwhm_scale * (d.fwhm_blue_nm + (d.fwhm_red_nm - d.fwhm_blue_nm) * u)

    def _profile_matrix(self, node: int) -> sparse.csr_matrix:
        """Pixel-integrated Voigt profiles (sum 1) of this system's lines at STARK_GRID[node]."""
        if node in self._profiles:
            return self._profiles[node]
        n = self.design.pixels
        lam_l = self.lines.wavelength_nm[self.line_index]
        disp = self.grating.dispersion(self.line_pixel)
        sigma = self.instrument_fwhm_nm(lam_l) / 2.3548 / disp
        gamma = 0.5 * self.lines.stark_fwhm_nm[self.line_index] * STARK_GRID[node] / disp
        half = np.clip(np.ceil(4 * 2.3548 * sigma + 40 * gamma), 12, 600).astype(int)
        rows, cols, vals = [], [], []
        sub = (np.arange(_SUBPIXELS) + 0.5) / _SUBPIXELS - 0.5
        for i, (p0, s, g, h) in enumerate(zip(self.line_pixel, sigma, gamma, half)):
            pix = np.arange(int(round(p0)) - h, int(round(p0)) + h + 1)
            pix = pix[(pix >= 0) & (pix < n)]
            if pix.size == 0:
                continue
            offsets = (pix[:, None] + sub[None, :] - p0).ravel()
            prof = voigt_profile(offsets, s, g).reshape(pix.size, _SUBPIXELS).mean(axis=1)
            full = voigt_profile(np.arange(-h, h + 1)[:, None] + sub[None, :] + (round(p0) - p0), s, g).mean()
            prof = prof / (full * (2 * h + 1))          # sum 1 over the untruncated window
            rows.append(np.full(pix.size, i))
            cols.append(pix)
            vals.append(prof * self.prnu[pix])
        matrix = sparse.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(self.line_index), n))
        self._profiles[node] = matrix
        return matrix

    def _basis_blocks(self, first: int, last: int):
        """The stacked basis (line profiles at STARK_GRID[first..last], continuum
        nodes, scattered light) cut into dense pixel blocks: (start, stop, rows, matrix)."""
        key = (first, last)
        if key not in self._blocks:
            stacked = sparse.vstack([self._profile_matrix(node) for node in range(first, last + 1)]
                                    + [sparse.csr_matrix(self._continuum_matrix),
                                       sparse.csr_matrix(self._stray_shape[None, :])], format="csc")
            blocks = []
            for start in range(0, self.design.pixels, _BLOCK_PIXELS):
                stop = min(self.design.pixels, start + _BLOCK_PIXELS)
                part = stacked[:, start:stop]
                rows = np.unique(part.indices)
                blocks.append((start, stop, rows, np.ascontiguousarray(part[rows].toarray(), dtype=np.float32)))
            self._blocks[key] = blocks
        return self._blocks[key]

    def _build_continuum_matrix(self) -> np.ndarray:
        """[len(CONTINUUM_NM), pixels]: photons per nm at the nodes -> counts per pixel."""
        lam = self._true_wavelengths
        basis = CubicSpline(CONTINUUM_NM, np.eye(CONTINUUM_NM.size))(lam)          # [n, m]
        per_pixel = self.grating.dispersion(self._drifted(self.pixel)) * self.design.throughput
        return (basis * (per_pixel * self.response(lam) * self.prnu)[:, None]).T.astype(np.float32)

    # -- rendering ------------------------------------------------------------------
    def render(self, line_photons: np.ndarray, stark_x: np.ndarray, continuum: np.ndarray) -> np.ndarray:
        """Expected counts (float32 [k, pixels]) before noise.

        line_photons: [k, L] over the whole line table (other systems' lines ignored);
        stark_x: [k] electron density / 1e17 cm^-3; continuum: [k, len(CONTINUUM_NM)].
        """
        counts = line_photons[:, self.line_index] * self.line_response
        k, n_lines = counts.shape
        grid = np.log2(np.clip(stark_x, STARK_GRID[0], STARK_GRID[-1] * 0.999)) - np.log2(STARK_GRID[0])
        lower = np.floor(grid).astype(int)
        frac = (grid - lower).astype(np.float32)[:, None]
        first, last = int(lower.min(initial=0)), int(lower.max(initial=0)) + 1
        nodes = last - first + 1
        # weights are built transposed so each pixel block gathers contiguous rows
        weights = np.zeros((nodes * n_lines + CONTINUUM_NM.size + 1, k), dtype=np.float32)
        by_node = weights[:nodes * n_lines].reshape(nodes, n_lines, k)
        shot = np.arange(k)
        by_node[lower - first, :, shot] = counts * (1 - frac)
        by_node[lower - first + 1, :, shot] = counts * frac
        weights[nodes * n_lines:-1] = continuum.T
        weights[-1] = (self.design.stray_fraction * self.drift.stray_scale / self.design.pixels) * counts.sum(axis=1)
        out = np.empty((k, self.design.pixels), dtype=np.float32)
        # small products: a multi-threaded BLAS only spins against other work here
        with _BLAS.limit(limits=1, user_api="blas"):
            for start, stop, rows, matrix in self._basis_blocks(first, last):
                np.matmul(weights[rows].T, matrix, out=out[:, start:stop])
        return out

    # -- detector --------------------------------------------------------------------
    def detect(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy 16-bit counts from expected photo-counts (modified in place and returned).

        Shot noise is the Gaussian limit of Poisson statistics in electrons
        (variance = signal * gain in e-, i.e. signal / gain in counts); at the
        low end read noise dominates, where the two differ. Gaussian deviates
        come from an inverse-CDF table indexed by 16-bit uniforms (five times
        faster than a ziggurat here; tails end at 4.3 sigma).
        """
        d = self.design
        signal = np.asarray(signal, dtype=np.float32)
        inv_gain = np.float32(1.0 / d.gain_e_per_count)
        read_var = np.float32((d.read_noise_e / d.gain_e_per_count) ** 2)
        rows = max(1, _CACHE_FLOATS // max(1, signal.shape[-1]))
        flat = signal.reshape(-1, signal.shape[-1])
        for r0 in range(0, flat.shape[0], rows):     # blocks that stay in cache through every pass
            block = flat[r0:r0 + rows]
            np.maximum(block, 0, out=block)
            noise = standard_normal_fast(rng, block.shape)
            sd = block * inv_gain
            sd += read_var
            np.sqrt(sd, out=sd)
            noise *= sd
            block += noise
            block += self.dark_level
            np.rint(block, out=block)
            np.clip(block, 0.0, ADC_MAX, out=block)
        return signal

    def dark(self, k: int, rng: np.random.Generator) -> np.ndarray:
        return self.detect(np.zeros((k, self.design.pixels), np.float32), rng)
