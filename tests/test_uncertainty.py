"""Tests of stfuse.fusion.uncertainty: inverse-variance combination, coverage, variance calibration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stfuse.errors import InputError
from stfuse.evaluate.metrics import interval_coverage
from stfuse.fusion.uncertainty import (
    apply_variance_scale,
    calibration_report,
    combine_inverse_variance,
    coverage,
    coverage_interval,
    fit_variance_scale,
    gaussian_nll,
    leave_one_out_coverage,
    spread_variance,
)


def test_equal_variances_average_means_and_halve_variance():
    means = np.stack([np.full((2, 3, 4), 0.1), np.full((2, 3, 4), 0.3)])
    variances = np.full_like(means, 4e-4)
    mean, var = combine_inverse_variance(means, variances)
    assert mean.shape == var.shape == (2, 3, 4)
    np.testing.assert_allclose(mean, 0.2, rtol=1e-6)
    np.testing.assert_allclose(var, 2e-4, rtol=1e-6)


def test_known_weights():
    # v = 1 and 3: weights 3/4 and 1/4, combined variance 1 / (1 + 1/3) = 0.75
    mean, var = combine_inverse_variance(np.array([[0.0], [4.0]]), np.array([[1.0], [3.0]]))
    np.testing.assert_allclose(mean, [1.0], rtol=1e-6)
    np.testing.assert_allclose(var, [0.75], rtol=1e-6)


def test_nan_member_is_skipped_and_all_nan_gives_nan():
    means = np.array([[0.1, np.nan, np.nan], [0.3, 0.3, np.nan]])
    variances = np.array([[1e-4, 1e-4, 1e-4], [1e-4, 2e-4, 1e-4]])
    mean, var = combine_inverse_variance(means, variances)
    np.testing.assert_allclose(mean[:2], [0.2, 0.3], rtol=1e-6)
    np.testing.assert_allclose(var[:2], [5e-5, 2e-4], rtol=1e-6)
    assert np.isnan(mean[2]) and np.isnan(var[2])
    # a NaN variance also skips the member
    mean, var = combine_inverse_variance(np.array([[0.1], [0.5]]), np.array([[np.nan], [1e-4]]))
    np.testing.assert_allclose(mean, [0.5])


def test_correlated_members():
    # two members of variance v with correlation rho: variance of their mean is v (1 + rho) / 2
    mean, var = combine_inverse_variance(np.array([[0.0], [1.0]]), np.array([[2.0], [2.0]]), correlation=0.5)
    np.testing.assert_allclose(mean, [0.5])
    np.testing.assert_allclose(var, [2.0 * 1.5 / 2], rtol=1e-6)
    with pytest.raises(InputError):
        combine_inverse_variance(np.zeros((2, 1)), np.ones((2, 1)), correlation=1.0)


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError, match="same shape"):
        combine_inverse_variance(np.zeros((2, 3)), np.ones((2, 4)))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1, 1), st.floats(1e-6, 1.0)), min_size=1, max_size=5),
)
def test_combination_is_a_convex_mean_with_smaller_variance(members):
    m = np.array([[a] for a, _ in members])
    v = np.array([[b] for _, b in members])
    mean, var = combine_inverse_variance(m, v)
    assert m.min() - 1e-6 <= mean[0] <= m.max() + 1e-6
    assert var[0] <= v.min() * (1 + 1e-5)


def test_coverage_matches_metrics():
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 1, (3, 50, 50))
    pred = np.zeros_like(truth)
    variance = np.full_like(truth, 1.0)
    c = coverage(pred, variance, truth)
    assert c == interval_coverage(pred, np.ones_like(truth), truth)
    assert abs(c[0.68] - 0.68) < 0.02 and abs(c[0.95] - 0.95) < 0.01


@pytest.mark.parametrize("method", ["coverage", "coverage_pair", "mad", "mean_square"])
def test_variance_scale_recovers_known_scale(method):
    rng = np.random.default_rng(1)
    variance = rng.uniform(1e-5, 1e-3, (4, 100, 100))
    s_true = 2.5
    truth = rng.normal(0, 1, variance.shape) * np.sqrt(s_true * variance)
    pred = np.zeros_like(truth)
    s = fit_variance_scale(pred, variance, truth, method=method)
    assert s == pytest.approx(s_true, rel=0.05)
    calibrated = apply_variance_scale(variance, s)
    c = coverage(pred, calibrated, truth, levels=(0.6827, 0.95))
    assert abs(c[0.6827] - 0.6827) < 0.02 and abs(c[0.95] - 0.95) < 0.01


def test_variance_scale_ignores_invalid_pixels_and_is_one_without_data():
    variance = np.ones((10, 10))
    truth = np.full((10, 10), np.nan)
    assert fit_variance_scale(np.zeros((10, 10)), variance, truth) == 1.0
    truth = np.random.default_rng(2).normal(0, 3, (10, 10))
    valid = np.zeros((10, 10), bool)
    assert fit_variance_scale(np.zeros((10, 10)), variance, truth, valid) == 1.0
    with pytest.raises(InputError):
        apply_variance_scale(variance, -1.0)
    with pytest.raises(InputError):
        fit_variance_scale(np.zeros(3), np.ones(3), np.ones(3), method="nope")  # type: ignore[arg-type]


def test_gaussian_nll_and_report():
    rng = np.random.default_rng(3)
    truth = rng.normal(0, 0.01, (2, 64, 64))
    pred = np.zeros_like(truth)
    good = gaussian_nll(pred, np.full_like(truth, 1e-4), truth)
    bad = gaussian_nll(pred, np.full_like(truth, 1e-2), truth)
    expected = 0.5 * (np.log(2 * np.pi * 1e-4) + 1.0)
    assert good == pytest.approx(expected, abs=0.02) and bad > good
    rep = calibration_report(pred, np.full_like(truth, 1e-4), truth)
    assert set(rep) == {"cov68", "cov95", "spearman", "nll", "scale"}
    assert rep["scale"] == pytest.approx(1.0, rel=0.08)
    assert abs(rep["cov95"] - 0.95) < 0.01


def test_combine_weighted_formula_nan_skipping_and_shared_error_calibration():
    from stfuse.fusion.uncertainty import combine_weighted

    m = np.array([[1.0, 2.0, np.nan], [3.0, 6.0, 5.0]])
    u = np.array([[1.0, 1.0, 1.0], [3.0, 1.0, 2.0]])
    v = np.array([[2.0, 1.0, 1.0], [4.0, 3.0, 7.0]])
    mean, var = combine_weighted(m, u, v)
    np.testing.assert_allclose(mean, [1.5, 4.0, 5.0], rtol=1e-6)  # weights (3/4, 1/4), (1/2, 1/2), member 2 only
    np.testing.assert_allclose(var, [2.5, 2.0, 7.0], rtol=1e-6)
    assert np.isnan(combine_weighted(np.full((2, 1), np.nan), np.ones((2, 1)), np.ones((2, 1)))[0]).all()
    # spread: the variance of the mixture adds the members' disagreement (law of total variance)
    _, mix = combine_weighted(m, u, v, spread=True)
    np.testing.assert_allclose(mix, [2.5 + 0.75 * 0.25 + 0.25 * 2.25, 2.0 + 4.0, 7.0], rtol=1e-6)
    # members sharing one error of sd 0.02 (errors fully correlated): combining must not shrink the
    # variance, and the weighted prior variance gives nominal coverage whatever the weights
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 0.4, 200_000)
    err = 0.02 * rng.standard_normal(truth.size)
    members = np.stack([truth + err, truth + err])
    weight_vars = np.stack([np.full(truth.size, 1e-4), rng.uniform(1e-5, 1e-3, truth.size)])
    mean, var = combine_weighted(members, weight_vars, np.full((2, truth.size), 0.02**2))
    cov = coverage(mean, var, truth, levels=(0.6827, 0.95))
    assert abs(cov[0.6827] - 0.6827) < 0.005 and abs(cov[0.95] - 0.95) < 0.003


def _gaussian_days(rng, scales, n=400):
    """One (pred, variance, truth) per day; truth errors have variance scale * variance."""
    days = []
    for s in scales:
        v = rng.uniform(1e-5, 1e-3, n)
        days.append((np.zeros(n), v, rng.normal(0, 1, n) * np.sqrt(s * v)))
    return days


def test_coverage_interval_brackets_nominal_and_widens_with_day_to_day_miscalibration():
    rng = np.random.default_rng(4)
    calibrated = coverage_interval(_gaussian_days(rng, [1.0] * 30), seed=1)
    for level, (lo, hi) in calibrated.items():
        assert lo <= level <= hi and hi - lo < 0.05
    # each day's sigma off by a factor (too narrow on some days, too wide on others): the pooled
    # coverage is close to nominal, but a handful of days can land far from it
    scales = list(np.exp(rng.normal(0, 0.8, 30)))
    mixed_days = _gaussian_days(rng, scales)
    mixed = coverage_interval(mixed_days, seed=1)
    pooled = coverage(np.concatenate([d[0] for d in mixed_days]), np.concatenate([d[1] for d in mixed_days]),
                      np.concatenate([d[2] for d in mixed_days]), levels=(0.6827, 0.95))
    for level in (0.6827, 0.95):
        lo, hi = mixed[level]
        assert lo <= pooled[level] <= hi
        assert hi - lo > 2 * (calibrated[level][1] - calibrated[level][0])
    assert coverage_interval(mixed_days, seed=1) == mixed  # seeded
    with pytest.raises(InputError):
        coverage_interval([])


def test_leave_one_out_coverage_of_a_fitted_scale():
    """Every day's sigma is too small by the same factor (variance x 3): a scale fitted on the other
    days brings each day to nominal; days of different factors are left off nominal."""
    rng = np.random.default_rng(5)
    same = leave_one_out_coverage(_gaussian_days(rng, [3.0] * 10, n=2000))
    assert abs(same[0.6827] - 0.6827) < 0.02 and abs(same[0.95] - 0.95) < 0.01
    uncalibrated = coverage(*(np.concatenate(a) for a in zip(*_gaussian_days(rng, [3.0] * 10, n=2000))), levels=(0.95,))
    assert uncalibrated[0.95] < 0.80
    # one day much worse than the others: the others' scale does not cover it
    mixed = leave_one_out_coverage(_gaussian_days(rng, [1.0, 1.0, 1.0, 30.0], n=2000))
    assert mixed[0.95] < 0.90
    with pytest.raises(InputError):
        leave_one_out_coverage(_gaussian_days(rng, [1.0]))


def test_spread_variance_is_the_mix_of_a_pixel_and_its_window_mean_and_tile_invariant():
    rng = np.random.default_rng(3)
    v = rng.gamma(2.0, 1e-4, (2, 70, 64)).astype(np.float32)
    v[1, 10, 12] = np.nan
    out = spread_variance(v, 4)
    # by hand at an inner pixel: (v + mean of its 9 x 9 window) / 2
    np.testing.assert_allclose(out[0, 30, 30], (v[0, 30, 30] + v[0, 26:35, 26:35].mean()) / 2, rtol=1e-6)
    # at a corner the window is clipped to the array, NaN neighbours are left out, NaN stays NaN
    np.testing.assert_allclose(out[0, 0, 0], (v[0, 0, 0] + v[0, :5, :5].mean()) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1, 10, 10], (v[1, 10, 10] + np.nanmean(v[1, 6:15, 6:15])) / 2, rtol=1e-6)
    assert np.isnan(out[1, 10, 12]) and out.dtype == np.float32
    # a tile grown by the radius gives the whole array's values bit for bit (stfuse's tiling relies on it)
    tile = spread_variance(v[:, 17:53, 9:41], 4)
    np.testing.assert_array_equal(tile[:, 4:-4, 4:-4], out[:, 21:49, 13:37])
    np.testing.assert_array_equal(spread_variance(v, 0), v)
    np.testing.assert_array_equal(spread_variance(np.full((1, 9, 9), 2e-4, np.float32), 3), np.full((1, 9, 9), 2e-4, np.float32))


def test_spread_variance_brings_coverage_back_when_per_pixel_variances_are_noisy():
    # the error's true variance is a smooth field; the predicted variance is that field times
    # per-pixel noise (a neighbour spread from few neighbours): the standardized errors are then
    # heavy-tailed and a 95 % interval holds too little; sharing each variance with its window
    # removes most of the noise and brings the 95 % coverage close to nominal
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:256, 0:256]
    true_var = (1e-4 * (1.2 + np.sin(yy / 40.0) * np.cos(xx / 33.0)))[None].astype(np.float32)
    truth = rng.normal(0.0, np.sqrt(true_var)).astype(np.float32)
    noisy = (true_var * rng.chisquare(2, true_var.shape) / 2).astype(np.float32)  # unbiased, very noisy
    mean = np.zeros_like(truth)
    before = coverage(mean, noisy, truth)[0.95]
    after = coverage(mean, spread_variance(noisy, 8), truth)[0.95]
    assert before < 0.88 and 0.92 < after < 0.97, (before, after)
