"""``--refine scene`` on a series (:mod:`stfuse.fusion.refine.series`): weights and variance from the scene's own dates."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from stfuse.evaluate.holdout import holdout
from stfuse.fusion.refine.series import (
    BLEND_WEIGHTS,
    MEMBERS,
    SeriesExample,
    combine,
    fit_series,
    fit_weights,
    simplex_least_squares,
)
from stfuse.fusion.uncertainty import spread_radius, spread_variance
from stfuse.sim.synth import SceneSpec
from stfuse_cli.main import cli

SEASON = SceneSpec(height=96, width=96, n_days=40, seed=2, landsat_revisit=8, landsat_offset=2, cloud_fraction=0.2,
                   change_day=20, change_kind="harvest")
"""A 40-day season, Landsat every 8 days (5 dates) with a harvest."""


@pytest.fixture(scope="module")
def season(tmp_path_factory):
    from stfuse.sim.sample import write_sample_catalog

    root = tmp_path_factory.mktemp("series-season")
    write_sample_catalog(root, SEASON, overwrite=True)
    return root


def _examples(truth_of, n=5, seed=0, noise=(0.02, 0.02, 0.002, 0.02, 0.02), shape=(2, 40, 40)):
    """Synthetic examples: member k = the truth + Gaussian noise of ``noise[k]``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        truth = rng.uniform(0.05, 0.4, shape).astype(np.float32)
        members = np.stack([truth_of(truth, k, rng) + rng.normal(0, s, shape) for k, s in enumerate(noise)]).astype(np.float32)
        out.append(SeriesExample(f"2023-06-{i + 1:02d}", members, np.full(shape, 1e-4, np.float32), truth))
    return out


def test_simplex_least_squares_recovers_known_weights_and_stays_on_the_simplex():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 4))
    y = x @ np.array([0.3, 0.7, 0.0, 0.0])
    w = simplex_least_squares(x.T @ x, x.T @ y)
    np.testing.assert_allclose(w, [0.3, 0.7, 0, 0], atol=1e-9)
    # the unconstrained optimum (1.5, -0.5) is off the simplex: the best feasible point is a vertex
    y = x @ np.array([1.5, -0.5, 0, 0])
    w = simplex_least_squares(x.T @ x, x.T @ y)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w, [1, 0, 0, 0], atol=1e-9)


def test_combine_weights_members_renormalises_where_one_is_missing_and_adds_the_spread():
    rng = np.random.default_rng(2)
    members = rng.uniform(0, 0.5, (4, 2, 5, 5)).astype(np.float32)  # combine takes any number of members
    weights = np.array([[0.1, 0.4, 0.3, 0.2], [0.0, 0.5, 0.5, 0.0]])
    prior_variance = np.full((2, 5, 5), 1e-4, np.float32)
    members[2, 0, 1, 1] = np.nan
    mean, variance = combine(members, prior_variance, weights)
    expected = np.einsum("bk,kbhw->bhw", weights, members)
    mask = np.ones((2, 5, 5), bool)
    mask[0, 1, 1] = False
    np.testing.assert_allclose(mean[mask], expected[mask], rtol=1e-5)
    w = np.array([0.1, 0.4, 0.2]) / 0.7  # member 2 missing at (0, 1, 1)
    assert mean[0, 1, 1] == pytest.approx(float(w @ members[[0, 1, 3], 0, 1, 1]), rel=1e-5)
    spread = sum(weights[1, k] * (members[k, 1, 3, 3] - mean[1, 3, 3]) ** 2 for k in range(4))
    assert variance[1, 3, 3] == pytest.approx(1e-4 + spread, rel=1e-4)


def test_series_learns_the_member_that_predicts_the_other_dates_and_calibrates_its_variance():
    examples = _examples(lambda t, k, rng: t)  # the change member is 10 x less noisy than the others
    model = fit_series(examples, band_names=["red", "nir08"])
    assert model.applied and model.rmse_series < 0.5 * model.rmse_blend
    assert model.weights.shape == (2, len(MEMBERS)) and np.all(model.weights[:, 2] > 0.9)
    assert model.record()["dates"] == [e.date for e in examples]
    # applied to a new example drawn the same way: 95 % of the truth inside +-1.96 sigma, within a few percent
    new = _examples(lambda t, k, rng: t, n=1, seed=9)[0]
    mean, variance = combine(new.members, new.prior_variance, model.weights)
    sigma = np.sqrt(spread_variance(variance, spread_radius(None)) * model.variance_scale)
    inside = np.mean(np.abs(mean - new.truth) <= 1.96 * sigma)
    assert 0.9 <= inside <= 0.99
    assert np.sqrt(np.mean((mean - new.truth) ** 2)) < 0.005


def test_series_keeps_the_blend_when_the_other_dates_do_not_favour_other_weights():
    # the truth is exactly the mean of the first three members: the blend, which the series must keep
    def members_around(truth, k, rng):
        return truth + (np.array([0.03, -0.01, -0.02, 0.05, -0.04])[k] * np.sign(truth - 0.2))

    examples = _examples(members_around, noise=(0, 0, 0, 0, 0))
    model = fit_series(examples)
    assert not model.applied and model.rmse_blend < 1e-6
    np.testing.assert_array_equal(model.weights, np.tile(BLEND_WEIGHTS, (2, 1)))


def test_series_needs_three_dates_with_clear_pixels():
    examples = _examples(lambda t, k, rng: t, n=3)
    assert fit_series(examples[:2]) is None
    cloudy = SeriesExample(examples[2].date, examples[2].members, examples[2].prior_variance,
                           np.full_like(examples[2].truth, np.nan))
    assert fit_series([*examples[:2], cloudy]) is None
    assert fit_weights(examples).shape == (2, len(MEMBERS))


def test_holdout_with_refine_scene_fits_each_withheld_date_without_it(season, monkeypatch):
    import stfuse.fused as fused

    seen = []
    real = fused.series_examples

    def spy(fine, coarse, pair_days, *args, **kwargs):
        seen.append(list(pair_days))
        return real(fine, coarse, pair_days, *args, **kwargs)

    monkeypatch.setattr(fused, "series_examples", spy)
    scene = holdout(catalog=season, bands=["red", "nir08"], refine="scene")
    blend = holdout(catalog=season, bands=["red", "nir08"])
    for d in scene.days:  # a day whose series model fell back to the blend says so (issue #28)
        assert d.method == ("series(fitfc+fsdaf+change+refiner+starfm)" if d.tags["calibration"]["series"]["applied"] else "blend")
    assert any(d.method.startswith("series(") for d in scene.days)
    assert len(seen) == len(scene.days) >= 4
    for day, days in zip(scene.days, seen):
        assert day.date not in days and len(days) >= 3
    for a, b in zip(scene.days, blend.days):
        assert a.scores["mean"]["rmse"] < 1.1 * b.scores["mean"]["rmse"]
    rmse = lambda r: np.mean([d.scores["mean"]["rmse"] for d in r.days])  # noqa: E731
    assert rmse(scene) <= rmse(blend) * 1.02
    assert 0.85 <= np.mean([d.scores["coverage"]["0.95"] for d in scene.days]) <= 0.995


def test_cli_predict_refine_scene_records_the_series_in_tags(season, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", "--catalog", str(season), "--start", "2023-06-10", "--end", "2023-06-11",
                                      "--bands", "red,nir08", "--refine", "scene", "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cogs = sorted(out.glob("stfuse_*.tif"))
    assert len(cogs) == 2
    with rasterio.open(cogs[0]) as src:
        tags = src.tags()
        data = src.read()
    record = json.loads(tags["calibration"])["series"]
    assert tags["method"] == ("series(fitfc+fsdaf+change+refiner+starfm)" if record["applied"] else "blend")
    assert record["members"] == list(MEMBERS) and len(record["dates"]) >= 3
    assert set(record["weights"]) == {"red", "nir08"}
    assert all(abs(sum(w) - 1) < 1e-3 for w in record["weights"].values())
    assert record["heldout_rmse"]["series"] > 0 and record["heldout_rmse"]["blend"] > 0
    assert np.isfinite(data[:4]).mean() > 0.95
    assert dt.date.fromisoformat(record["dates"][0]) < dt.date(2023, 6, 10)


def test_local_mode_with_four_pairs_fits_the_series_on_the_pairs(tmp_path):
    """Local files, 4 pairs, ``--refine scene``: each pair predicted from the other three is the
    series; the output records it and is as accurate as the default blend on the target's truth."""
    from stfuse.sim.synth import simulate

    from conftest import write_tif

    scene = simulate(SceneSpec(height=64, width=64, n_days=40, seed=2, landsat_revisit=8, landsat_offset=2, cloud_fraction=0.0,
                               change_day=20, change_kind="harvest"))
    days = scene.landsat_days
    bands = [2, 3]  # red, nir08
    args = []
    for k, day in enumerate(days[:4]):
        fine = scene.landsat_reflectance(k)[bands]
        args += ["--pair", str(write_tif(tmp_path / f"L{k}.tif", np.nan_to_num(np.round(fine * 1e4), nan=-9999).astype(np.int16),
                                         nodata=-9999)),
                 str(write_tif(tmp_path / f"M{k}.tif", np.round(scene.coarse_on_fine(day)[bands] * 1e4).astype(np.int16)))]
    target_day = days[4]
    target = write_tif(tmp_path / "T.tif", np.round(scene.coarse_on_fine(target_day)[bands] * 1e4).astype(np.int16))
    truth = scene.truth_day(target_day)[bands]
    preds = {}
    for refine in ("none", "scene"):
        out = tmp_path / f"{refine}.tif"
        result = CliRunner().invoke(cli, ["predict", *args, "--coarse", str(target), "-o", str(out), "--refine", refine])
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as src:
            preds[refine] = (src.read([1, 2]).astype(np.float64), src.tags())
    mean, tags = preds["scene"]
    applied = json.loads(tags["calibration"])["series"]["applied"]
    assert tags["method"] == ("series(fitfc+fsdaf+change+refiner+starfm)" if applied else "blend")
    assert json.loads(tags["calibration"])["series"]["dates"] == ["pair 1", "pair 2", "pair 3", "pair 4"]
    rmse = lambda p: float(np.sqrt(np.nanmean((p - truth) ** 2)))  # noqa: E731
    assert np.isfinite(mean).all()
    assert rmse(mean) <= 1.05 * rmse(preds["none"][0])
