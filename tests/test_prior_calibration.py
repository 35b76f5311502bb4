"""The priors' variance factors (stfuse.fusion.prior.calibration): fitted on simulated days, applied by
stfuse.fuse / stfuse.predict (after spreading the variance over one coarse pixel) and recorded in the
tags; stfuse.fusion.prior.predict stays raw."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from stfuse.api import fuse
from stfuse.fusion.prior import METHODS, predict
from stfuse.fusion.prior.calibration import (
    SCALES_PATH,
    calibrated_variance,
    calibration_record,
    fit_scales,
    real_scene_factor,
    simulated_scale,
    variance_scale,
)
from stfuse.fusion.uncertainty import spread_variance


def test_shipped_factors_move_simulated_coverage_towards_nominal():
    stored = json.loads(SCALES_PATH.read_text())
    assert set(stored["scales"]) == set(METHODS)
    for method, by_pairs in stored["check"].items():
        for n_pairs, c in by_pairs.items():
            assert c["days"] >= 40
            miss = lambda c68, c95: (c68 - 0.6827) ** 2 + (c95 - 0.95) ** 2  # what the factor minimises on the fit days
            if miss(c["raw_cov68"], c["raw_cov95"]) > 0.1**2:  # raw coverage far off (STARFM one pair: 37 / 61 %)
                assert miss(c["cov68"], c["cov95"]) < miss(c["raw_cov68"], c["raw_cov95"]), (method, n_pairs)
            # the 95 % level moves towards nominal (or stays within 1.5 points: the blend with two pairs, factor 1.014);
            # the spread variance's z is light-tailed, so the 68 % level ends a few points high (73-75 %)
            assert abs(c["cov95"] - 0.95) <= max(abs(c["raw_cov95"] - 0.95), 0.015), (method, n_pairs)
            assert miss(c["cov68"], c["cov95"]) < 0.07**2, (method, n_pairs)
            assert 0.85 < c["cov95"] < 0.99 and 0.6 < c["cov68"] < 0.8
            assert simulated_scale(method, int(n_pairs)) == stored["scales"][method][n_pairs]
            assert variance_scale(method, int(n_pairs)) == stored["scales"][method][n_pairs] * real_scene_factor(method) > 1
            assert c["real_factor_cov95"] > c["cov95"]  # the real-scene factor widens every interval
    assert variance_scale("starfm", 3) == variance_scale("starfm", 2)
    assert variance_scale("nope", 1) == 1.0 and calibration_record("nope", 1)["fitted_on"] == "none (scale 1)"


def test_fuse_multiplies_the_prior_variance_by_its_factor_and_tags_it():
    rng = np.random.default_rng(2)
    fine = (0.1 + 0.2 * rng.random((1, 2, 40, 40))).astype(np.float32)
    coarse = np.kron(fine.reshape(1, 2, 5, 8, 5, 8).mean(axis=(3, 5)), np.ones((1, 1, 8, 8))).astype(np.float32)
    target = (coarse[0] + 0.02).astype(np.float32)
    dims = ("pair", "band", "y", "x")
    for method in ("starfm", "fitfc"):
        result = fuse(xr.DataArray(fine, dims=dims), xr.DataArray(coarse, dims=dims), xr.DataArray(target, dims=dims[1:]),
                      method=method)
        mean, var = predict(fine, coarse, target, method=method)
        np.testing.assert_array_equal(result.mean.values, mean)
        np.testing.assert_allclose(result.sigma.values ** 2, spread_variance(var, 16) * variance_scale(method, 1), rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(result.sigma.values ** 2, calibrated_variance(method, 1, var), rtol=1e-5, atol=1e-12)
        assert not np.allclose(spread_variance(var, 16), var)  # the spread changes the variance of this scene
        assert result.tags["calibration"] == calibration_record(method, 1)
        assert "simulated" in result.tags["calibration"]["fitted_on"]


def test_fit_scales_is_reproducible_and_finds_starfm_overconfident():
    first = fit_scales(n_scenes=6, size=64)
    assert first == fit_scales(n_scenes=6, size=64)
    assert first["scales"]["starfm"]["1"] > 2  # raw STARFM sigma is far too small on simulated days
    for by_pairs in first["check"].values():
        for c in by_pairs.values():
            assert 0 <= c["raw_cov68"] <= c["raw_cov95"] <= 1 and c["days"] >= 1
