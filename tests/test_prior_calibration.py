"""The priors' variance factors (stfuse.fusion.prior.calibration): fitted on simulated days, applied by
stfuse.fuse / stfuse.predict and recorded in the tags; stfuse.fusion.prior.predict stays raw."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from stfuse.api import fuse
from stfuse.fusion.prior import METHODS, predict
from stfuse.fusion.prior.calibration import SCALES_PATH, calibration_record, fit_scales, variance_scale


def test_shipped_factors_move_simulated_coverage_towards_nominal():
    stored = json.loads(SCALES_PATH.read_text())
    assert set(stored["scales"]) == set(METHODS)
    for method, by_pairs in stored["check"].items():
        for n_pairs, c in by_pairs.items():
            assert c["days"] >= 40
            miss = lambda c68, c95: (c68 - 0.6827) ** 2 + (c95 - 0.95) ** 2  # what the factor minimises on the fit days
            if miss(c["raw_cov68"], c["raw_cov95"]) > 0.05**2:  # raw coverage off by more than 5 points:
                assert miss(c["cov68"], c["cov95"]) < miss(c["raw_cov68"], c["raw_cov95"]), (method, n_pairs)
            else:  # near nominal already (the blend with two pairs: 70.1 / 92.2 %): the factor keeps it near
                assert miss(c["cov68"], c["cov95"]) < 0.06**2, (method, n_pairs)
            assert 0.85 < c["cov95"] < 0.99 and 0.6 < c["cov68"] < 0.8
            assert variance_scale(method, int(n_pairs)) == stored["scales"][method][n_pairs] > 1  # every prior's sigma is too small
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
        np.testing.assert_allclose(result.sigma.values ** 2, var * variance_scale(method, 1), rtol=1e-5, atol=1e-12)
        assert result.tags["calibration"] == calibration_record(method, 1)
        assert "simulated" in result.tags["calibration"]["fitted_on"]


def test_fit_scales_is_reproducible_and_finds_starfm_overconfident():
    first = fit_scales(n_scenes=6, size=64)
    assert first == fit_scales(n_scenes=6, size=64)
    assert first["scales"]["starfm"]["1"] > 2  # raw STARFM sigma is far too small on simulated days
    for by_pairs in first["check"].values():
        for c in by_pairs.values():
            assert 0 <= c["raw_cov68"] <= c["raw_cov95"] <= 1 and c["days"] >= 1
