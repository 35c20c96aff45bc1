import numpy as np
import pytest

from sklearn.base import clone

from transfer.baselines import DSTransfer, KNNTransfer, PDSTransfer, PLSTransfer, resolution_half_window
from transfer.selection import choose_on_validation
from transfer.metrics import rse
from transfer.preprocess import SpectraError

from .synthetic import WL_PRIMARY, WL_SECONDARY, paired_spectra


@pytest.fixture(scope="module")
def data():
    train_s, train_p, _ = paired_spectra(400, seed=0)
    test_s, test_p, _ = paired_spectra(150, seed=1)
    mean_rse = rse(test_p, np.broadcast_to(train_p.mean(axis=0), test_p.shape))
    return train_s, train_p, test_s, test_p, mean_rse


MODELS = {
    "pls": lambda: PLSTransfer(n_components=16),
    "knn": lambda: KNNTransfer(n_neighbors=10),
    "knn_pca": lambda: KNNTransfer(n_neighbors=10, n_components=8),
    "ds": lambda: DSTransfer(),
    "ds_pcr": lambda: DSTransfer(n_components=6),
    "ds_rank": lambda: DSTransfer(rank=8),
    "pds": lambda: PDSTransfer(WL_SECONDARY, WL_PRIMARY, half_window=5),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_baseline_beats_mean_spectrum_predictor(name, data):
    train_s, train_p, test_s, test_p, mean_rse = data
    model = MODELS[name]().fit(train_s, train_p)
    predicted = model.predict(test_s)
    assert predicted.shape == test_p.shape
    assert mean_rse > 0.95
    assert rse(test_p, predicted) < 0.5 * min(mean_rse, 1.0)


@pytest.mark.parametrize("name", MODELS)
def test_state_round_trip_predicts_the_same(name, data):
    train_s, train_p, test_s, _, _ = data
    model = MODELS[name]().fit(train_s[:200], train_p[:200])
    state = model.get_state()
    for value in state.values():
        assert value is None or isinstance(value, (np.ndarray, int, float, str))
    restored = type(model).from_state(state)
    np.testing.assert_allclose(restored.predict(test_s[:20]), model.predict(test_s[:20]), rtol=1e-6, atol=1e-6)


def test_linear_models_recover_an_exact_linear_map():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12))
    A = rng.normal(size=(12, 9))
    Y = X @ A + 5.0
    for model in (DSTransfer(alpha=1e-10), PLSTransfer(n_components=12)):
        np.testing.assert_allclose(model.fit(X, Y).predict(X[:5]), Y[:5], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: DSTransfer(), lambda: PDSTransfer(WL_SECONDARY, WL_PRIMARY)])
def test_streaming_fit_equals_one_shot_fit(make, data):
    train_s, train_p, test_s, _, _ = data
    whole = make().fit(train_s, train_p)
    chunked = make()
    for rows in np.array_split(np.arange(400), [7, 150, 151]):
        chunked.partial_fit(train_s[rows], train_p[rows])
    np.testing.assert_allclose(chunked.predict(test_s), whole.predict(test_s), rtol=1e-6,
                               atol=1e-6 * np.abs(whole.predict(test_s)).max())


def test_pds_windows_are_centred_on_each_primary_wavelength(data):
    train_s, train_p, _, _, _ = data
    model = PDSTransfer(WL_SECONDARY, WL_PRIMARY, half_window=3).fit(train_s, train_p)
    start = model.window_start_
    below, above = WL_PRIMARY < WL_SECONDARY[0], WL_PRIMARY > WL_SECONDARY[-1]
    spacing = WL_SECONDARY[1] - WL_SECONDARY[0]
    np.testing.assert_array_equal(model.outside_, (WL_PRIMARY < WL_SECONDARY[0] - spacing / 2)
                                  | (WL_PRIMARY > WL_SECONDARY[-1] + spacing / 2))
    inside = ~below & ~above
    centre = WL_SECONDARY[start[inside] + 3]
    interior = (start[inside] > 0) & (start[inside] < WL_SECONDARY.size - 7)
    assert np.all(np.abs(centre - WL_PRIMARY[inside])[interior] <= spacing / 2 + 1e-9)


def test_pds_window_width_follows_the_coarser_grid():
    fine = np.linspace(300.0, 310.0, 1001)           # 0.01 nm pixels
    coarse = np.linspace(295.0, 315.0, 201)          # 0.1 nm pixels
    assert resolution_half_window(fine, coarse, 2.0) == 20     # two coarse pixels of fine ones
    assert resolution_half_window(coarse, fine, 2.0) == 2      # two of its own pixels
    assert resolution_half_window(WL_SECONDARY, WL_PRIMARY, 1.0) >= 1


def test_pds_outside_the_secondary_range_predicts_like_ds(data):
    train_s, train_p, test_s, test_p, _ = data
    pds = PDSTransfer(WL_SECONDARY, WL_PRIMARY, alpha=1e-2).fit(train_s, train_p)
    ds = DSTransfer(alpha=1e-2).fit(train_s, train_p[:, pds.outside_])
    assert pds.outside_.sum() > 10
    np.testing.assert_allclose(pds.predict(test_s)[:, pds.outside_], ds.predict(test_s), rtol=1e-6, atol=1e-6)
    truth = test_p[:, pds.outside_]
    mean = np.broadcast_to(train_p[:, pds.outside_].mean(axis=0), truth.shape)
    assert rse(truth, pds.predict(test_s)[:, pds.outside_]) < 0.5 * rse(truth, mean)


def test_pds_state_written_before_the_fallback_still_loads(data):
    train_s, train_p, test_s, _, _ = data
    state = PDSTransfer(WL_SECONDARY, WL_PRIMARY, half_window=5).fit(train_s, train_p).get_state()
    old = {k: v for k, v in state.items() if k not in ("window_start", "outside") and not k.startswith("fallback")}
    restored = PDSTransfer.from_state(old)
    assert restored.fallback_ is None
    np.testing.assert_array_equal(restored.window_start_, state["window_start"])
    assert restored.predict(test_s[:3]).shape == (3, WL_PRIMARY.size)


@pytest.mark.parametrize("name", MODELS)
def test_baselines_are_scikit_learn_estimators(name, data):
    train_s, train_p, test_s, _, _ = data
    model = MODELS[name]()
    params = model.get_params()
    twin = clone(model)
    assert set(twin.get_params()) == set(params)
    fitted = model.fit(train_s[:200], train_p[:200])
    np.testing.assert_allclose(clone(fitted).fit(train_s[:200], train_p[:200]).predict(test_s[:5]),
                               fitted.predict(test_s[:5]), rtol=1e-6, atol=1e-6)
    assert not hasattr(clone(fitted), "n_primary_")


def test_ridge_chosen_on_validation_through_grid_search(data):
    train_s, train_p, test_s, test_p, _ = data
    choice = choose_on_validation(DSTransfer(), {"alpha": [1e-6, 1e-2, 1e3]}, (train_s[:300], train_p[:300]),
                                  (train_s[300:], train_p[300:]))
    scores = {row["params"]["alpha"]: row["selection_rse"] for row in choice.table}
    assert choice.params["alpha"] == min(scores, key=scores.get)
    assert choice.validation_rse == pytest.approx(min(scores.values()))
    refit = DSTransfer(alpha=choice.params["alpha"]).fit(train_s[:300], train_p[:300])
    np.testing.assert_allclose(choice.estimator.predict(test_s), refit.predict(test_s))
    assert scores[1e3] > choice.validation_rse       # a huge ridge is worse on unseen spectra


def test_pds_is_good_inside_the_shared_range(data):
    train_s, train_p, test_s, test_p, _ = data
    inside = (WL_PRIMARY >= WL_SECONDARY[0]) & (WL_PRIMARY <= WL_SECONDARY[-1])
    predicted = PDSTransfer(WL_SECONDARY, WL_PRIMARY).fit(train_s, train_p).predict(test_s)
    assert rse(test_p[:, inside], predicted[:, inside]) < 0.05


def test_clear_errors(data):
    train_s, train_p, test_s, _, _ = data
    with pytest.raises(SpectraError, match="pairs must match"):
        DSTransfer().fit(train_s[:10], train_p[:9])
    model = PLSTransfer(n_components=4).fit(train_s[:50], train_p[:50])
    with pytest.raises(SpectraError, match=f"expected {WL_SECONDARY.size} pixels"):
        model.predict(test_s[:, :-1])
    bad = train_s[:50].copy()
    bad[4, 4] = np.nan
    with pytest.raises(SpectraError, match="NaN"):
        KNNTransfer().fit(bad, train_p[:50])
    with pytest.raises(SpectraError, match="PDS: spectra have"):
        PDSTransfer(WL_SECONDARY, WL_PRIMARY).fit(train_s[:, :-3], train_p)
    with pytest.raises(RuntimeError, match="not fitted"):
        DSTransfer().predict(test_s)


def test_restored_streaming_model_refuses_partial_fit_but_refits(data):
    train_s, train_p, test_s, _, _ = data
    restored = DSTransfer.from_state(DSTransfer(alpha=1e-2).fit(train_s[:100], train_p[:100]).get_state())
    assert restored.alpha == 1e-2
    with pytest.raises(RuntimeError, match="restored"):
        restored.partial_fit(train_s[:10], train_p[:10])
    fresh = DSTransfer(alpha=1e-2).fit(train_s, train_p).predict(test_s[:5])
    np.testing.assert_allclose(restored.fit(train_s, train_p).predict(test_s[:5]), fresh)


@pytest.mark.parametrize("params", [{"alpha": 1e-3}, {"alpha": 1e-2, "n_components": 6},
                                    {"alpha": 0.0, "n_components": 5}])
@pytest.mark.slow
def test_ds_dual_solve_equals_the_covariance_solve(params, data):
    train_s, train_p, test_s, _, _ = data
    n = 120                                     # fewer spectra than the 330 secondary pixels
    assert n < train_s.shape[1]
    primal = DSTransfer(**params, solver="primal").fit(train_s[:n], train_p[:n])
    dual = DSTransfer(**params, solver="dual").fit(train_s[:n], train_p[:n])
    auto = DSTransfer(**params).fit(train_s[:n], train_p[:n])
    scale = np.abs(primal.get_state()["coef"]).max()
    np.testing.assert_allclose(dual.get_state()["coef"], primal.get_state()["coef"], rtol=0, atol=1e-7 * scale)
    np.testing.assert_array_equal(auto.get_state()["coef"], dual.get_state()["coef"])
    expected = primal.predict(test_s)
    np.testing.assert_allclose(dual.predict(test_s), expected, rtol=1e-7, atol=1e-7 * np.abs(expected).max())


def test_ds_chunked_fit_crossing_to_covariance_sums_equals_either_solve(data):
    train_s, train_p, test_s, _, _ = data
    rows = np.array_split(np.arange(400), [100, 250, 329, 331])   # passes 330 pixels mid-way
    models = {solver: DSTransfer(alpha=1e-3, solver=solver) for solver in DSTransfer.SOLVERS}
    for model in models.values():
        for part in rows:
            model.partial_fit(train_s[part], train_p[part])
    expected = models["primal"].predict(test_s)
    for solver in ("auto", "dual"):
        np.testing.assert_allclose(models[solver].predict(test_s), expected, rtol=1e-7,
                                   atol=1e-7 * np.abs(expected).max(), err_msg=solver)
    with pytest.raises(ValueError, match="solver"):
        DSTransfer(solver="kernel")


def test_ds_without_ridge_on_too_few_spectra_says_so(data):
    train_s, train_p, _, _, _ = data
    with pytest.raises(ValueError, match="singular"):
        DSTransfer(alpha=0.0).fit(train_s[:50], train_p[:50]).predict(train_s[:2])


@pytest.mark.parametrize("n", [120, 400])        # the dual solve (n < 330 pixels) and the covariance sums
def test_reduced_rank_ds_is_the_full_fit_on_its_leading_axes(n, data):
    """DS of rank k predicts my + (F(x) - my) V V^T: the full DS's prediction F(x) projected on
    the k leading principal axes V of its own training fit, here by a direct SVD."""
    train_s, train_p, test_s, _, _ = data
    full = DSTransfer(alpha=1e-2).fit(train_s[:n], train_p[:n])
    mean = train_p[:n].mean(axis=0)
    fitted = full.predict(train_s[:n]) - mean
    _, singular, axes = np.linalg.svd(fitted, full_matrices=False)
    # three phases: three axes stand out, and there V is defined
    assert singular[3] < 0.05 * singular[2]
    reduced = DSTransfer(alpha=1e-2, rank=3).fit(train_s[:n], train_p[:n])
    expected = mean + (full.predict(test_s) - mean) @ axes[:3].T @ axes[:3]
    np.testing.assert_allclose(reduced.predict(test_s), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    left, right = reduced.affine_factors()
    assert left.shape == (train_s.shape[1], 3) and right.shape == (3, train_p.shape[1])
    assert full.affine_factors()[1] is None
    # inside the noise (axes 4 on, alike): as much of the fit as the exact axes keep, to 0.1 %
    kept = DSTransfer(alpha=1e-2, rank=8).fit(train_s[:n], train_p[:n]).predict(train_s[:n]) - mean
    assert np.sum(kept ** 2) >= 0.999 * np.sum(singular[:8] ** 2)
    # a rank at least the map's own is the full DS
    assert DSTransfer(alpha=1e-2, rank=10_000).fit(train_s[:n], train_p[:n]).affine_factors()[1] is None


def test_reduced_rank_ds_recovers_a_low_rank_truth():
    rng = np.random.default_rng(5)
    truth = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 30))          # a rank-3 map
    X, X_new = rng.normal(size=(500, 40)), rng.normal(size=(200, 40))
    Y = X @ truth + 2.0 + 0.05 * rng.normal(size=(500, 30))
    expected = X_new @ truth + 2.0
    errors = {k: rse(expected, DSTransfer(alpha=1e-6, rank=k).fit(X, Y).predict(X_new)) for k in (2, 3)}
    full = rse(expected, DSTransfer(alpha=1e-6).fit(X, Y).predict(X_new))
    assert errors[3] <= full * 1.01 and errors[3] < 0.01
    assert errors[2] > 10 * errors[3]


def test_ds_rank_and_its_state_are_checked(data):
    train_s, train_p, _, _, _ = data
    with pytest.raises(ValueError, match="rank"):
        DSTransfer(rank=0)
    state = DSTransfer(rank=4).fit(train_s[:100], train_p[:100]).get_state()
    assert set(state) >= {"coef_left", "coef_right", "intercept"} and "coef" not in state
    state["coef_right"] = state["coef_right"][:3]
    with pytest.raises(ValueError, match="coef_left .* coef_right .* do not fit together"):
        DSTransfer.from_state(state)
