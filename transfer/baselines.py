"""Baseline transfer models from secondary to primary spectra.

Every model is a scikit-learn estimator (``BaseEstimator``: ``get_params``,
``set_params``, ``sklearn.base.clone``) with ``fit(X_secondary, X_primary)`` and
``predict(X_secondary)`` on [n_spectra, n_pixels] arrays, and
``get_state()``/``from_state()`` as plain arrays for the bundle.
Feed them the same preprocessed (baseline-corrected, scaled) spectra the neural
models see, and inverse-transform the predictions before computing metrics.

- :class:`PLSTransfer`: PLS regression, 16 components (paper, section 4.3.2).
- :class:`KNNTransfer`: k-nearest-neighbour regression, k = 10 (paper, 4.3.1). The
  paper fits both on training + validation data; that is the caller's choice of X.
- :class:`DSTransfer`: direct standardisation, one affine map from all secondary
  pixels to all primary pixels, ridge-regularised (or truncated, PCR).
- :class:`PDSTransfer`: piecewise DS, each primary pixel regressed on a window of
  secondary pixels centred on its wavelength (width from both pixel grids); primary
  pixels outside the secondary's range come from a global ridge model (DS).

DS and PDS also fit chunk by chunk (``partial_fit``) on maps that do not fit in
memory: PDS keeps only banded sums over spectra; DS keeps the spectra while they are
fewer than its secondary pixels (the cheap dual solve) and covariance sums after that.
"""
from __future__ import annotations

import logging

import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.cross_decomposition import PLSRegression
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsRegressor

from transfer.preprocess import SpectraError, check_spectra

log = logging.getLogger(__name__)


class _TransferBaseline(RegressorMixin, BaseEstimator):
    """``score`` (RegressorMixin) is R^2 over all primary pixels of the given arrays."""

    def _check_pair(self, X_secondary, X_primary, *, first: bool):
        X_secondary = check_spectra(X_secondary, None if first else self.n_secondary_,
                                    name="secondary spectra")
        X_primary = check_spectra(X_primary, None if first else self.n_primary_,
                                  name="primary spectra")
        if X_secondary.shape[0] != X_primary.shape[0]:
            raise SpectraError(f"{X_secondary.shape[0]} secondary spectra but "
                               f"{X_primary.shape[0]} primary ones: pairs must match row by row")
        if first:
            self.n_secondary_, self.n_primary_ = X_secondary.shape[1], X_primary.shape[1]
        return X_secondary, X_primary

    def _check_input(self, X_secondary):
        if not hasattr(self, "n_primary_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet")
        return check_spectra(X_secondary, self.n_secondary_, name="secondary spectra", allow_1d=True)

    def _subsample(self, *arrays):
        limit = getattr(self, "max_fit_spectra", None)
        n = arrays[0].shape[0]
        if limit is None or n <= limit:
            return arrays
        rows = np.sort(np.random.default_rng(self.seed).choice(n, limit, replace=False))
        log.info("%s: fitting on %d of %d spectra", type(self).__name__, limit, n)
        return tuple(a[rows] for a in arrays)


class _StreamingFit(_TransferBaseline):
    """Fitting from sums over spectra: ``partial_fit`` adds a chunk (split into blocks
    of ``_block_rows`` to bound the float64 temporaries); the solve happens once, on
    the first ``predict``/``get_state`` after new data."""

    _block_rows = 2048

    def fit(self, X_secondary, X_primary):
        for attr in ("n_primary_", "n_secondary_", "_n"):
            self.__dict__.pop(attr, None)
        return self.partial_fit(X_secondary, X_primary)

    def partial_fit(self, X_secondary, X_primary):
        if hasattr(self, "n_primary_") and not hasattr(self, "_n"):
            raise RuntimeError(f"{type(self).__name__} restored from a state keeps no sums to add "
                               "to; call fit() to fit it afresh")
        first = not hasattr(self, "n_primary_")
        X, Y = self._check_pair(X_secondary, X_primary, first=first)
        if first:
            self._start(X, Y)
        for start in range(0, X.shape[0], self._block_rows):
            self._accumulate(X[start:start + self._block_rows], Y[start:start + self._block_rows])
        self._solved = False
        return self

    def _ensure_solved(self):
        if not getattr(self, "_solved", True):
            if self._n < 2:
                raise SpectraError(f"{type(self).__name__} needs at least 2 spectrum pairs")
            self._solve()
            self._solved = True


class _AffineTransfer(_TransferBaseline):
    """Prediction X @ coef_ + intercept_ (coef_ [n_secondary, n_primary]), or, for a map of
    reduced rank k, (X @ L) @ R + intercept_ with coef = L R (L [n_secondary, k], R [k, n_primary]):
    ``affine_factors()`` gives either form, and the export builds its graph from it."""

    def _ensure_solved(self):
        pass

    def affine_factors(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(L, R) of a reduced-rank map, (coef, None) of a full one; float64."""
        self._ensure_solved()
        factors = getattr(self, "coef_factors_", None)
        return factors if factors is not None else (self.coef_, None)

    def predict(self, X_secondary) -> np.ndarray:
        X = self._check_input(X_secondary)
        left, right = self.affine_factors()
        out = X @ left.astype(X.dtype)
        if right is not None:
            out = out @ right.astype(X.dtype)
        return out + self.intercept_.astype(X.dtype)

    _state_params: tuple[str, ...] = ()

    def get_state(self) -> dict:
        """{"coef": [n_secondary, n_primary]} or, reduced, {"coef_left": L, "coef_right": R};
        with "intercept": [n_primary] and the constructor params."""
        left, right = self.affine_factors()
        matrices = {"coef": left.copy()} if right is None else {"coef_left": left.copy(), "coef_right": right.copy()}
        return {**matrices, "intercept": self.intercept_.copy(),
                **{name: getattr(self, name) for name in self._state_params}}

    @classmethod
    def from_state(cls, state: dict):
        model = cls(**{name: _plain(state[name]) for name in cls._state_params
                       if state.get(name) is not None})
        model.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        if "coef_left" in state:
            left = np.asarray(state["coef_left"], dtype=np.float64)
            right = np.asarray(state["coef_right"], dtype=np.float64)
            if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0] \
                    or model.intercept_.shape != right.shape[1:]:
                raise ValueError(f"{cls.__name__} state: coef_left {left.shape}, coef_right {right.shape} and "
                                 f"intercept {model.intercept_.shape} do not fit together")
            model.coef_factors_ = (left, right)
            model.n_secondary_, model.n_primary_ = left.shape[0], right.shape[1]
            return model
        model.coef_ = np.asarray(state["coef"], dtype=np.float64)
        if model.coef_.ndim != 2 or model.intercept_.shape != model.coef_.shape[1:]:
            raise ValueError(f"{cls.__name__} state: coef {model.coef_.shape} and intercept "
                             f"{model.intercept_.shape} do not fit together")
        model.n_secondary_, model.n_primary_ = model.coef_.shape
        return model


class PLSTransfer(_AffineTransfer):
    """PLS regression (scikit-learn PLSRegression), kept as its affine map, of rank
    n_components: the factors L = x_rotations_, R = y_loadings_^T, so that prediction and
    the live graph cost k (n_secondary + n_primary) multiply-adds, not n_secondary n_primary.

    It regresses the spectra as given (``scale=False``): they arrive scaled by the
    SpectralScaler, and PLS's own per-pixel standardisation would give every noise-only
    pixel a line's weight, so that another day's background there swamps the prediction
    (RSE 1.34, above the mean spectrum, on the demo's day-1 map; 0.25 without it).

    scikit-learn copies the data to float64 (about 16 bytes per value of X and Y);
    ``max_fit_spectra`` fits on a seeded random subset when memory is short.
    """

    _state_params = ("n_components",)

    def __init__(self, n_components: int = 16, *, max_fit_spectra: int | None = None, seed: int = 0):
        self.n_components = n_components
        self.max_fit_spectra = max_fit_spectra
        self.seed = seed

    def fit(self, X_secondary, X_primary) -> "PLSTransfer":
        X, Y = self._subsample(*self._check_pair(X_secondary, X_primary, first=True))
        n_components = min(int(self.n_components), X.shape[0] - 1, X.shape[1])
        pls = PLSRegression(n_components=n_components, scale=False).fit(X, Y)
        self.__dict__.pop("coef_", None)
        self.coef_factors_ = (np.asarray(pls.x_rotations_, np.float64), np.asarray(pls.y_loadings_, np.float64).T)
        self.intercept_ = pls.predict(np.zeros((1, X.shape[1])))[0].astype(np.float64)
        probe = X[: min(8, X.shape[0])]
        expected = pls.predict(probe)
        if not np.allclose(self.predict(probe), expected, rtol=1e-4, atol=1e-6 * (np.abs(expected).max() + 1)):
            raise RuntimeError("PLSRegression is not x_rotations_ @ y_loadings_.T in this scikit-learn version")
        return self


class DSTransfer(_StreamingFit, _AffineTransfer):
    """Direct standardisation: primary = secondary @ F + b over all pixels.

    F solves the ridge problem min ||Yc - Xc F||^2 + alpha ||F||^2 on centred data:
    F = (Xc^T Xc + alpha I)^-1 Xc^T Yc. ``alpha`` is relative to the mean eigenvalue
    (trace / n_secondary). ``n_components`` instead keeps only the leading eigenvectors
    V of Xc^T Xc (principal-component regression, still with the ridge):
    F = V diag(1 / (s + alpha)) V^T Xc^T Yc.

    Two equivalent solvers (``solver="auto"`` picks by the number of spectra n):

    - dual, while n < n_secondary: the spectra themselves are kept and F comes from
      the n x n Gram matrix K = Xc Xc^T, as F = Xc^T (K + alpha I)^-1 Yc (Cholesky) or,
      with ``n_components``, F = Xc^T U diag(1 / (s + alpha)) U^T Yc from the leading
      eigenvectors U of K (the eigenvalues s of K are those of Xc^T Xc). Cost O(n^2 (p + q))
      and O(n^3); memory the kept spectra plus float64 copies, ~8 n (n_secondary + n_primary) bytes.
    - primal, from n >= n_secondary on: only the sums Xc^T Xc and Xc^T Yc are kept
      (memory about 8 * n_secondary * (n_secondary + n_primary) bytes) and F comes from a
      Cholesky solve or an eigen-decomposition of the n_secondary^2 covariance.

    Chunked fitting (``partial_fit``) starts dual and folds the kept spectra into the
    primal sums as soon as n reaches n_secondary. ``solver="primal"``/``"dual"`` forces
    one form (``"dual"`` keeps every spectrum, however many).

    ``rank`` k reduces F to F V V^T, V the k leading principal axes of the training
    spectra's fitted primaries Xc F (reduced-rank regression): the map that keeps the most
    of the fit among those of rank k. It is kept as two factors, so prediction, and the
    live graph, cost k (n_secondary + n_primary) multiply-adds per spectrum instead of
    n_secondary n_primary. docs/streaming.md, "DS and the blend live", measures it.
    """

    _state_params = ("alpha", "n_components", "rank")
    SOLVERS = ("auto", "primal", "dual")
    #: subspace iterations and extra columns of the randomized eigensolver behind ``rank``
    _RANK_ITERATIONS, _RANK_OVERSAMPLING = 6, 16

    def __init__(self, alpha: float = 1e-3, n_components: int | None = None, *, solver: str = "auto",
                 rank: int | None = None):
        if solver not in self.SOLVERS:
            raise ValueError(f"DS: solver must be one of {self.SOLVERS}, got {solver!r}")
        if rank is not None and int(rank) < 1:
            raise ValueError(f"DS: rank must be a positive integer or None, got {rank!r}")
        self.alpha = alpha
        self.n_components = n_components
        self.solver = solver
        self.rank = rank

    def _start(self, X, Y):
        # Sums about a fixed shift (the first chunk's mean) avoid cancellation.
        self._shift_x, self._shift_y = X.mean(axis=0, dtype=np.float64), Y.mean(axis=0, dtype=np.float64)
        self._n = 0
        self._sx, self._sy = np.zeros(X.shape[1]), np.zeros(Y.shape[1])
        self._kept_x, self._kept_y = [], []
        self._sxx = self._sxy = None
        if self.solver == "primal":
            self._start_sums()

    def _start_sums(self):
        self._sxx = np.zeros((self.n_secondary_, self.n_secondary_))
        self._sxy = np.zeros((self.n_secondary_, self.n_primary_))

    def _accumulate(self, X, Y):
        Xs = X - self._shift_x.astype(X.dtype)      # fresh arrays: safe to keep
        Ys = Y - self._shift_y.astype(Y.dtype)
        self._n += X.shape[0]
        self._sx += Xs.sum(axis=0, dtype=np.float64)
        self._sy += Ys.sum(axis=0, dtype=np.float64)
        if self._sxx is not None:
            self._sxx += Xs.T @ Xs
            self._sxy += Xs.T @ Ys
            return
        self._kept_x.append(Xs)
        self._kept_y.append(Ys)
        if self.solver == "auto" and self._n >= self.n_secondary_:
            log.debug("DS: %d spectra >= %d secondary pixels, switching to covariance sums",
                      self._n, self.n_secondary_)
            self._start_sums()
            kept = zip(self._kept_x, self._kept_y)
            self._kept_x, self._kept_y = [], []
            for Xs, Ys in kept:
                self._sxx += Xs.T @ Xs
                self._sxy += Xs.T @ Ys

    def _solve(self):
        mx, my = self._sx / self._n, self._sy / self._n
        coef = self._dual_coef(mx, my) if self._sxx is None else self._primal_coef(mx, my)
        self.__dict__.pop("coef_", None)
        self.__dict__.pop("coef_factors_", None)
        if self.rank is not None and int(self.rank) < min(coef.shape):
            axes = self._fitted_axes(coef, mx, int(self.rank))
            self.coef_factors_ = (coef @ axes, np.ascontiguousarray(axes.T))
            through = (mx + self._shift_x) @ self.coef_factors_[0] @ self.coef_factors_[1]
        else:
            self.coef_ = coef
            through = (mx + self._shift_x) @ coef
        self.intercept_ = (my + self._shift_y) - through

    def _fitted_axes(self, coef, mx, rank: int) -> np.ndarray:
        """[n_primary, rank] orthonormal: the leading eigenvectors of F^T Cxx F, the fitted
        primaries' covariance, by seeded randomized subspace iteration (never forming it)."""
        if self._sxx is not None:
            cxx = self._centred_covariance(mx)
            covariance_times = lambda v: cxx @ v                         # noqa: E731
        else:
            Xc = self._centred_kept(mx)
            covariance_times = lambda v: Xc.T @ (Xc @ v)                  # noqa: E731
        fitted_times = lambda q: coef.T @ covariance_times(coef @ q)    # noqa: E731
        basis = np.random.default_rng(0).standard_normal((coef.shape[1], rank + self._RANK_OVERSAMPLING))
        for _ in range(self._RANK_ITERATIONS):
            basis = np.linalg.qr(fitted_times(basis))[0]
        eigval, eigvec = np.linalg.eigh(basis.T @ fitted_times(basis))
        return basis @ eigvec[:, ::-1][:, :rank]

    def _singular(self):
        return ValueError(f"DS: the secondary covariance plus ridge alpha={self.alpha} is "
                          "singular; use a larger alpha")

    def _centred_covariance(self, mx) -> np.ndarray:
        """Xc^T Xc from the primal sums (a fresh array)."""
        return self._sxx - self._n * np.outer(mx, mx)

    def _centred_kept(self, mx) -> np.ndarray:
        """The kept spectra about their mean, float64 (a fresh array)."""
        Xc = np.concatenate(self._kept_x).astype(np.float64)
        Xc -= mx
        return Xc

    def _primal_coef(self, mx, my):
        cxx = self._centred_covariance(mx)
        cxy = self._sxy - self._n * np.outer(mx, my)
        ridge = float(self.alpha) * max(np.trace(cxx), 1e-300) / cxx.shape[0]
        if self.n_components is None:
            # Ridge alone: a Cholesky solve is several times cheaper than eigh.
            cxx[np.diag_indices_from(cxx)] += ridge
            try:
                return cho_solve(cho_factor(cxx, overwrite_a=True), cxy, overwrite_b=True)
            except np.linalg.LinAlgError:
                raise self._singular() from None
        eigval, eigvec = np.linalg.eigh(cxx)
        eigval, eigvec = eigval[-int(self.n_components):], eigvec[:, -int(self.n_components):]
        return eigvec @ (_shrinkage(eigval, ridge)[:, None] * (eigvec.T @ cxy))

    def _dual_coef(self, mx, my):
        Xc = self._centred_kept(mx)
        Yc = np.concatenate(self._kept_y).astype(np.float64)
        Yc -= my
        gram = Xc @ Xc.T
        ridge = float(self.alpha) * max(np.trace(gram), 1e-300) / Xc.shape[1]
        if self.n_components is None:
            if not ridge > 0:       # rank(Xc) < n < n_secondary: singular, whatever rounding says
                raise self._singular()
            gram[np.diag_indices_from(gram)] += ridge
            try:
                return Xc.T @ cho_solve(cho_factor(gram, overwrite_a=True), Yc, overwrite_b=True)
            except np.linalg.LinAlgError:
                raise self._singular() from None
        # Xc = U S W^T: the leading W are Xc^T U / S, so V diag(1/(s+a)) V^T Xc^T reduces
        # to Xc^T U diag(1/(s+a)) U^T; directions with S = 0 add nothing in either form.
        eigval, eigvec = np.linalg.eigh(gram)
        eigval, eigvec = eigval[-int(self.n_components):], eigvec[:, -int(self.n_components):]
        return Xc.T @ ((eigvec * _shrinkage(eigval, ridge)) @ (eigvec.T @ Yc))


def _shrinkage(eigval: np.ndarray, ridge: float) -> np.ndarray:
    """1 / (s + ridge) of the eigenvalues s (clipped at 0; 0 where s + ridge is 0)."""
    eigval = np.maximum(eigval, 0.0)
    return np.divide(1.0, eigval + ridge, out=np.zeros_like(eigval), where=eigval + ridge > 0)


class PDSTransfer(_StreamingFit):
    """Piecewise direct standardisation between two pixel grids.

    Primary pixel j (wavelength l_j) is regressed, with an intercept and a ridge of
    ``alpha`` times the window's mean variance, on the 2*h+1 secondary pixels centred
    on the secondary pixel nearest l_j. The half-width h follows the two grids: it
    spans ``window_pixels`` pixels of the coarser grid (so one primary pixel of a
    broad, low-resolution primary sees every fine secondary pixel it covers, plus a
    margin for day-to-day wavelength shifts), or is fixed by ``half_window``.

    Primary pixels outside the secondary's range (beyond half a secondary pixel from
    its ends) have no secondary pixels near their wavelength. They come from a global
    ridge model instead: DS (:class:`DSTransfer`, ridge ``fallback_alpha``, default
    ``alpha``) from all secondary pixels to those primary pixels, which is what DS
    would predict there. All windows are solved at once as a batch of small ridge
    problems; fitting keeps only banded sums (and the fallback's DS sums).
    """

    def __init__(self, wavelengths_secondary=None, wavelengths_primary=None, *,
                 half_window: int | None = None, window_pixels: float = 2.0, alpha: float = 1e-3,
                 fallback_alpha: float | None = None):
        self.wavelengths_secondary = wavelengths_secondary
        self.wavelengths_primary = wavelengths_primary
        self.half_window = half_window
        self.window_pixels = window_pixels
        self.alpha = alpha
        self.fallback_alpha = fallback_alpha

    def _axes(self) -> tuple[np.ndarray, np.ndarray]:
        if self.wavelengths_secondary is None or self.wavelengths_primary is None:
            raise ValueError("PDS needs both wavelength axes (wavelengths_secondary, wavelengths_primary)")
        return (np.asarray(self.wavelengths_secondary, dtype=np.float64),
                np.asarray(self.wavelengths_primary, dtype=np.float64))

    def _layout(self):
        """window_start_, outside_ and the half-width from the axes and parameters."""
        wl_s, wl_p = self._axes()
        _check_axes(wl_s, wl_p)
        half = self.half_window
        if half is None:
            half = resolution_half_window(wl_s, wl_p, self.window_pixels)
        if int(half) != half or half < 0:
            raise ValueError(f"PDS: half_window must be a non-negative integer, got {half!r}")
        self.half_window_ = int(half)
        self.window_start_ = _window_starts(wl_s, wl_p, self.half_window_)
        self.outside_ = outside_range(wl_s, wl_p)

    @property
    def width(self) -> int:
        wl_s, _ = self._axes()
        return min(2 * self.half_window_ + 1, wl_s.size)

    def fit(self, X_secondary, X_primary):
        self.__dict__.pop("fallback_", None)
        return super().fit(X_secondary, X_primary)

    def _start(self, X, Y):
        self._layout()
        wl_s, wl_p = self._axes()
        if (X.shape[1], Y.shape[1]) != (wl_s.size, wl_p.size):
            self.__dict__.pop("n_primary_", None)
            raise SpectraError(
                f"PDS: spectra have {X.shape[1]}/{Y.shape[1]} pixels (secondary/primary), the "
                f"wavelength axes {wl_s.size}/{wl_p.size}")
        self._shift_x, self._shift_y = X.mean(axis=0, dtype=np.float64), Y.mean(axis=0, dtype=np.float64)
        self._n = 0
        self._sx, self._sy = np.zeros(X.shape[1]), np.zeros(Y.shape[1])
        self._band = np.zeros((X.shape[1], self.width))        # sum x_a x_(a+d)
        self._cross = np.zeros((Y.shape[1], self.width))       # sum x_(s_j+t) y_j
        alpha = self.alpha if self.fallback_alpha is None else self.fallback_alpha
        self.fallback_ = DSTransfer(alpha=alpha) if self.outside_.any() else None

    def _accumulate(self, X, Y):
        if self.fallback_ is not None:
            self.fallback_.partial_fit(X, Y[:, self.outside_])
        Xs = X - self._shift_x
        Ys = Y - self._shift_y
        n_sec = X.shape[1]
        self._n += X.shape[0]
        self._sx += Xs.sum(axis=0)
        self._sy += Ys.sum(axis=0)
        for d in range(self.width):
            self._band[:n_sec - d, d] += np.einsum("ia,ia->a", Xs[:, :n_sec - d], Xs[:, d:])
            self._cross[:, d] += np.einsum("ij,ij->j", Xs[:, self.window_start_ + d], Ys)

    def _solve(self):
        n, w, start = self._n, self.width, self.window_start_
        mx, my = self._sx / n, self._sy / n
        t = np.arange(w)
        rows = start[:, None, None] + np.minimum(t[:, None], t[None, :])[None]
        gram = self._band[rows, np.abs(t[:, None] - t[None, :])[None]]      # [n_p, w, w]
        mean_win = mx[start[:, None] + t[None, :]]                            # [n_p, w]
        gram = gram - n * mean_win[:, :, None] * mean_win[:, None, :]
        cross = self._cross - n * mean_win * my[:, None]
        ridge = float(self.alpha) * np.maximum(np.trace(gram, axis1=1, axis2=2) / w, 1e-300)
        gram[:, t, t] += ridge[:, None]
        self.coef_ = np.linalg.solve(gram, cross[:, :, None])[:, :, 0]       # [n_p, w]
        self.intercept_ = (my + self._shift_y) - np.einsum(
            "jt,jt->j", mean_win + self._shift_x[start[:, None] + t[None, :]], self.coef_)
        if self.fallback_ is not None:
            self.coef_[self.outside_] = 0.0
            self.intercept_[self.outside_] = 0.0

    def predict(self, X_secondary) -> np.ndarray:
        X = self._check_input(X_secondary)
        self._ensure_solved()
        out = np.broadcast_to(self.intercept_.astype(X.dtype), (X.shape[0], self.n_primary_)).copy()
        for d in range(self.coef_.shape[1]):
            out += X[:, self.window_start_ + d] * self.coef_[:, d].astype(X.dtype)
        if self.fallback_ is not None:
            out[:, self.outside_] = self.fallback_.predict(X)
        return out

    def get_state(self) -> dict:
        self._ensure_solved()
        wl_s, wl_p = self._axes()
        state = {"wavelengths_secondary": wl_s.copy(), "wavelengths_primary": wl_p.copy(),
                 "half_window": self.half_window_, "alpha": float(self.alpha),
                 "window_start": self.window_start_.copy(),
                 "coef": self.coef_.copy(), "intercept": self.intercept_.copy()}
        if self.fallback_ is not None:
            fallback = self.fallback_.get_state()
            state.update(outside=self.outside_.astype(np.uint8), fallback_coef=fallback["coef"],
                         fallback_intercept=fallback["intercept"], fallback_alpha=float(self.fallback_.alpha))
        return state

    @classmethod
    def from_state(cls, state: dict) -> "PDSTransfer":
        """Also reads states written before the fallback existed (edge windows, no fallback)."""
        model = cls(state["wavelengths_secondary"], state["wavelengths_primary"],
                    half_window=int(_plain(state["half_window"])), alpha=float(_plain(state["alpha"])))
        wl_s, wl_p = model._axes()
        _check_axes(wl_s, wl_p)
        model.half_window_ = int(model.half_window)
        model.window_start_ = (np.asarray(state["window_start"], dtype=np.int64) if "window_start" in state
                               else _window_starts(wl_s, wl_p, model.half_window_))
        model.coef_ = np.asarray(state["coef"], dtype=np.float64)
        model.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        if model.coef_.shape != (wl_p.size, model.width) or model.window_start_.shape != (wl_p.size,) \
                or model.intercept_.shape != (wl_p.size,):
            raise ValueError(f"PDS state: coef shape {model.coef_.shape} does not fit the axes")
        model.fallback_ = None
        model.outside_ = np.zeros(wl_p.size, dtype=bool)
        if "fallback_coef" in state:
            model.outside_ = np.asarray(state["outside"]).astype(bool)
            model.fallback_alpha = float(_plain(state["fallback_alpha"]))
            model.fallback_ = DSTransfer.from_state({"coef": state["fallback_coef"],
                                                     "intercept": state["fallback_intercept"],
                                                     "alpha": model.fallback_alpha})
            if model.outside_.shape != (wl_p.size,) or model.fallback_.n_primary_ != int(model.outside_.sum()):
                raise ValueError("PDS state: the fallback model does not fit the out-of-range pixels")
        model.n_secondary_ = wl_s.size
        model.n_primary_ = wl_p.size
        return model


def _plain(value):
    """A 0-d array from a state file as the Python number it was."""
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else value


def _check_axes(wl_secondary: np.ndarray, wl_primary: np.ndarray) -> None:
    if wl_secondary.ndim != 1 or wl_primary.ndim != 1 or wl_secondary.size < 2 \
            or np.any(np.diff(wl_secondary) <= 0):
        raise ValueError("PDS: wavelength axes must be 1-D and the secondary strictly increasing")


def outside_range(wl_secondary: np.ndarray, wl_primary: np.ndarray) -> np.ndarray:
    """Primary pixels more than half a secondary pixel beyond either end of the secondary axis."""
    wl_secondary = np.asarray(wl_secondary, dtype=np.float64)
    wl_primary = np.asarray(wl_primary, dtype=np.float64)
    lo = wl_secondary[0] - 0.5 * (wl_secondary[1] - wl_secondary[0])
    hi = wl_secondary[-1] + 0.5 * (wl_secondary[-1] - wl_secondary[-2])
    return (wl_primary < lo) | (wl_primary > hi)


def resolution_half_window(wl_secondary: np.ndarray, wl_primary: np.ndarray, window_pixels: float) -> int:
    """Half-width, in secondary pixels, of a window spanning `window_pixels` pixels of the
    coarser of the two grids on each side (median spacings over the shared range)."""
    wl_secondary = np.asarray(wl_secondary, dtype=np.float64)
    wl_primary = np.asarray(wl_primary, dtype=np.float64)
    shared = (wl_primary >= wl_secondary[0]) & (wl_primary <= wl_secondary[-1])
    step_s = float(np.median(np.diff(wl_secondary)))
    primary_steps = np.diff(wl_primary)[shared[1:] & shared[:-1]]
    step_p = float(np.median(primary_steps)) if primary_steps.size else step_s
    return max(1, math.ceil(float(window_pixels) * max(step_s, step_p) / step_s - 1e-9))


def _window_starts(wl_secondary: np.ndarray, wl_primary: np.ndarray, half_window: int) -> np.ndarray:
    if int(half_window) != half_window or half_window < 0:
        raise ValueError(f"PDS: half_window must be a non-negative integer, got {half_window!r}")
    width = min(2 * half_window + 1, wl_secondary.size)
    right = np.clip(np.searchsorted(wl_secondary, wl_primary), 1, wl_secondary.size - 1)
    nearest = np.where(wl_primary - wl_secondary[right - 1] <= wl_secondary[right] - wl_primary,
                       right - 1, right)
    return np.clip(nearest - half_window, 0, wl_secondary.size - width).astype(np.int64)


class KNNTransfer(_TransferBaseline):
    """k-nearest-neighbour regression (scikit-learn KNeighborsRegressor, brute force,
    Euclidean), optionally in a PCA space of ``n_components`` dimensions.

    Exact search costs O(n_fit * n_query * n_secondary): fine for ~10^4 spectra; for
    ~10^5 set ``n_components`` (e.g. 64) and/or ``max_fit_spectra``. The model keeps its
    training targets, so its state is as large as its training set.
    """

    def __init__(self, n_neighbors: int = 10, *, n_components: int | None = None,
                 max_fit_spectra: int | None = None, seed: int = 0, predict_rows: int = 256):
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.max_fit_spectra = max_fit_spectra
        self.seed = seed
        self.predict_rows = predict_rows

    def _features(self, X):
        if self.pca_ is None:
            return X
        return ((X - self.pca_["mean"].astype(X.dtype)) @ self.pca_["components"].T.astype(X.dtype))

    def fit(self, X_secondary, X_primary) -> "KNNTransfer":
        X, Y = self._subsample(*self._check_pair(X_secondary, X_primary, first=True))
        if X.shape[0] < self.n_neighbors:
            raise SpectraError(f"KNN needs at least {self.n_neighbors} training spectra, got {X.shape[0]}")
        self.pca_ = None
        if self.n_components is not None:
            pca = PCA(n_components=min(self.n_components, *X.shape), svd_solver="randomized",
                      random_state=self.seed).fit(X)
            self.pca_ = {"mean": pca.mean_, "components": pca.components_}
        self._build(self._features(X), Y)
        return self

    def _build(self, features, targets):
        self.fit_features_, self.fit_targets_ = features, targets
        self.model_ = KNeighborsRegressor(n_neighbors=self.n_neighbors, algorithm="brute").fit(features, targets)

    def predict(self, X_secondary) -> np.ndarray:
        X = self._check_input(X_secondary)
        features = self._features(X)
        out = np.empty((X.shape[0], self.n_primary_), dtype=self.fit_targets_.dtype)
        for start in range(0, X.shape[0], self.predict_rows):   # bounds the [rows, k, n] gather
            out[start:start + self.predict_rows] = self.model_.predict(features[start:start + self.predict_rows])
        return out

    def get_state(self) -> dict:
        state = {"n_neighbors": self.n_neighbors, "fit_features": self.fit_features_,
                 "fit_targets": self.fit_targets_, "n_secondary": self.n_secondary_}
        if self.pca_ is not None:
            state.update(pca_mean=self.pca_["mean"], pca_components=self.pca_["components"])
        return state

    @classmethod
    def from_state(cls, state: dict) -> "KNNTransfer":
        model = cls(n_neighbors=int(state["n_neighbors"]))
        model.pca_ = ({"mean": np.asarray(state["pca_mean"]), "components": np.asarray(state["pca_components"])}
                      if "pca_components" in state else None)
        targets = np.asarray(state["fit_targets"])
        model.n_secondary_, model.n_primary_ = int(state["n_secondary"]), targets.shape[1]
        model._build(np.asarray(state["fit_features"]), targets)
        return model


def baselines_from_config(cfg, wavelengths_secondary: np.ndarray, wavelengths_primary: np.ndarray, *,
                          seed: int = 0, n_fit: int | None = None) -> dict:
    """Unfitted baselines with the `[baselines]` settings `cfg` (what `train` and the suite fit);
    `n_fit`, the training spectra KNN will see, caps its neighbour count."""
    neighbours = min(cfg["knn_neighbors"], cfg["knn_max_spots"], n_fit or cfg["knn_neighbors"])
    return {
        "pls": PLSTransfer(cfg["pls_components"], seed=seed),
        "knn": KNNTransfer(max(1, neighbours), max_fit_spectra=cfg["knn_max_spots"], seed=seed),
        "ds": DSTransfer(alpha=cfg["ridge_alpha"], rank=cfg["ds_rank"] or None),
        "pds": PDSTransfer(wavelengths_secondary, wavelengths_primary,
                           half_window=cfg["pds_half_window"] or None,      # 0: width from the two pixel grids
                           window_pixels=cfg["pds_window_pixels"], alpha=cfg["ridge_alpha"]),
    }
