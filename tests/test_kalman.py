"""The time-series engine (``--method kalman``, :mod:`stfuse.fusion.kalman`) on generated series
with a known answer, and its catalog-mode and holdout paths."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from stfuse.fusion.kalman import DEFAULT_OPTIONS, coarse_noise, predict_series, smooth

PLAIN = {"unmix": False, "wobble": False}
"""The engine without the unmixed driver and the wobble correction: the known answers below are its."""

REPO = Path(__file__).resolve().parents[1]


def stationary_series(seed: int = 0, *, days: int = 60, size: int = 32, d_sd: float = 0.03, fine_noise: float = 0.005,
                      coarse_noise_sd: float = 0.004, every: int = 4):
    """A series with a constant fine-minus-coarse difference ``d``: coarse = a smooth seasonal
    signal + noise each day; fine every ``every`` days = signal + d + noise. Returns the inputs
    and the noise-free fine image of every day (signal + d)."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    d = rng.normal(0, d_sd, (2, size, size)).astype(np.float32)
    signal = (0.2 + 0.05 * np.sin(t / 9.0))[:, None, None, None] * np.ones((1, 2, size, size))
    coarse = (signal + rng.normal(0, coarse_noise_sd, signal.shape)).astype(np.float32)
    fine_days = t[2::every]
    fine = (signal[fine_days] + d + rng.normal(0, fine_noise, (len(fine_days), 2, size, size))).astype(np.float32)
    return t, coarse, fine_days, fine, (signal + d).astype(np.float32)


def test_constant_difference_recovered_and_interval_covers_95_percent():
    t, coarse, fine_days, fine, clean = stationary_series()
    mean, var, params = predict_series(fine, fine_days, coarse, t, t, **PLAIN)
    assert np.isfinite(mean).all() and np.isfinite(var).all()
    # the smoothed d is the constant d: the error left is the coarse noise of the day (0.004)
    assert float(np.sqrt(np.mean((mean - clean) ** 2))) < 0.0055
    # parameters: no change in d, fine noise and coarse noise found
    assert max(params.q0) < 1e-6
    assert 0.5 * 0.005 ** 2 < params.r_fine[0] < 2 * 0.005 ** 2
    assert 0.5 * 0.004 ** 2 < params.coarse.noise_default[0] < 2 * 0.004 ** 2
    # a fresh fine observation of every day falls inside the 95 % interval about 95 % of the time
    fresh = clean + np.random.default_rng(99).normal(0, 0.005, clean.shape).astype(np.float32)
    inside = float(np.mean(np.abs(fresh - mean) <= 1.959964 * np.sqrt(var)))
    assert 0.92 < inside < 0.98, inside


def test_more_fine_dates_never_make_a_withheld_date_worse():
    t, coarse, fine_days, fine, clean = stationary_series(seed=1)
    target = 30
    others = [k for k, d in enumerate(fine_days) if d != target]
    order = sorted(others, key=lambda k: abs(fine_days[k] - target))  # nearest dates first
    rmse = []
    for n in (1, 2, 4, 8, len(order)):
        use = sorted(order[:n])
        mean, _, _ = predict_series(fine[use], fine_days[use], coarse, t, [target], **PLAIN)
        rmse.append(float(np.sqrt(np.mean((mean[0] - clean[target]) ** 2))))
    assert all(b <= a * 1.02 for a, b in zip(rmse, rmse[1:])), rmse
    assert rmse[-1] < 0.8 * rmse[0]


def test_missing_coarse_days_are_interpolated():
    t, coarse, fine_days, fine, clean = stationary_series(seed=2)
    coarse[20:23] = np.nan  # three whole days missing, among them a target
    coarse[28, :, :8] = np.nan  # a cloudy strip on another
    mean, var, _ = predict_series(fine, fine_days, coarse, t, [21, 28, 40], **PLAIN)
    assert np.isfinite(mean).all() and np.isfinite(var).all()
    err = np.sqrt(np.mean((mean - clean[[21, 28, 40]]) ** 2, axis=(1, 2, 3)))
    assert (err < 0.008).all(), err
    # the interpolated day is less certain than a day with its own coarse image
    assert np.median(var[0]) > np.median(var[2])
    # a gap longer than max_interp on a side: not predicted there
    coarse_long = coarse.copy()
    coarse_long[:15] = np.nan
    mean, _, _ = predict_series(fine, fine_days, coarse_long, t, [3], max_interp=10, **PLAIN)
    assert np.isnan(mean).all()


def test_nan_fine_pixels_are_not_observations():
    t, coarse, fine_days, fine, clean = stationary_series(seed=3)
    cloudy = fine.copy()
    rng = np.random.default_rng(5)
    for k in range(len(fine_days)):
        cloudy[k][:, rng.random(fine.shape[-2:]) < 0.5] = np.nan  # half of each date clouded
    cloudy[3] = np.nan  # one date entirely
    cloudy[:, :, :4, :4] = np.nan  # a corner never seen
    mean, var, _ = predict_series(cloudy, fine_days, coarse, t, [10, 30], **PLAIN)
    assert np.isnan(mean[:, :, :4, :4]).all()
    seen = np.ones(mean.shape, bool)
    seen[:, :, :4, :4] = False
    assert np.isfinite(mean[seen]).all() and np.isfinite(var[seen]).all()
    assert float(np.sqrt(np.mean((mean - clean[[10, 30]])[seen] ** 2))) < 0.0065


def test_default_engine_unmixes_and_blocks_equal_one_block():
    """The default (unmixed driver, wobble removed) on a series of two kinds of fields inside each
    coarse pixel, one greening and one not: better than the plain engine, and row blocks (grown by
    the unmixing window) give the whole-image result wherever the tile's own unmixing is the same."""
    rng = np.random.default_rng(4)
    days, size = np.arange(48), 96
    kind = (np.add.outer(np.arange(size) // 6, np.arange(size) // 6) % 2).astype(np.float32)  # a 6 px checkerboard
    green = 0.2 + 0.25 / (1 + np.exp(-(days - 24) / 4.0))  # the greening field
    truth = (0.25 * (1 - kind)[None] + green[:, None, None] * kind[None])[:, None].astype(np.float32)
    blocks = truth.reshape(48, 1, 6, 16, 6, 16).mean(axis=(3, 5))
    coarse = np.repeat(np.repeat(blocks, 16, axis=2), 16, axis=3) + rng.normal(0, 0.003, (48, 1, 1, 1)).astype(np.float32)
    fine_days = days[1::6]
    fine = truth[fine_days] + rng.normal(0, 0.004, (len(fine_days), 1, size, size)).astype(np.float32)
    keep = [k for k, d in enumerate(fine_days) if d != 25]
    target = [25]
    plain, _, _ = predict_series(fine[keep], fine_days[keep], coarse, days, target, **PLAIN)
    default, var, params = predict_series(fine[keep], fine_days[keep], coarse, days, target)
    assert params.unmix is not None and params.halo == 48 and DEFAULT_OPTIONS["unmix"]
    rmse = lambda m: float(np.sqrt(np.mean((m[0] - truth[25]) ** 2)))  # noqa: E731
    assert rmse(default) < 0.7 * rmse(plain), (rmse(default), rmse(plain))
    local = dict(unmix_prior="local")
    one, _, p_local = predict_series(fine[keep], fine_days[keep], coarse, days, target, block=1000, **local)
    blocked, _, _ = predict_series(fine[keep], fine_days[keep], coarse, days, target, block=32, params=p_local)
    assert np.allclose(one, blocked, atol=1e-5)


def test_smoother_is_the_rts_smoother_on_a_small_case():
    """One pixel, three observations: the two-filter result equals the Gaussian posterior of a
    daily random walk with a flat start, solved densely (precision matrix over days 0..12)."""
    obs_t, y, r, q = np.array([0.0, 4.0, 10.0]), np.array([0.1, 0.3, 0.2]), np.array([0.01, 0.02, 0.01]), 0.005
    mean, var = smooth(y[:, None, None, None], r[:, None], obs_t, [2.0, 7.0, 12.0], [q])
    precision = np.zeros((13, 13))
    precision[0, 0] = 1e-9
    for k in range(12):
        precision[k:k + 2, k:k + 2] += np.array([[1, -1], [-1, 1]]) / q
    rhs = np.zeros(13)
    for day, value, noise in zip(obs_t.astype(int), y, r):
        precision[day, day] += 1 / noise
        rhs[day] += value / noise
    cov = np.linalg.inv(precision)
    assert np.allclose(mean[:, 0, 0, 0], (cov @ rhs)[[2, 7, 12]], atol=1e-5)
    assert np.allclose(var[:, 0, 0, 0], np.diag(cov)[[2, 7, 12]], rtol=1e-4)


def test_coarse_noise_estimate_is_robust_to_a_few_changed_pixels():
    rng = np.random.default_rng(0)
    c = (0.2 + rng.normal(0, 0.01, (20, 1, 30, 30))).astype(np.float32)
    c[10:, :, :3] += 0.3  # a flood on a tenth of the pixels from day 10
    noise = coarse_noise(c, np.arange(20))
    assert np.nanmedian(noise) == pytest.approx(0.01 ** 2, rel=0.2)


def test_cli_catalog_kalman_on_the_sample(tmp_path):
    from stfuse_cli.main import cli

    out = tmp_path / "tmp"
    result = CliRunner().invoke(cli, ["predict", "--method", "kalman", "--start", "2023-06-12", "--end", "2023-06-14",
                                      "--bands", "red", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    tifs = sorted(out.glob("stfuse_*.tif"))
    assert [p.name for p in tifs] == ["stfuse_2023-06-12.tif", "stfuse_2023-06-13.tif", "stfuse_2023-06-14.tif"]
    with rasterio.open(tifs[1]) as src:
        tags = src.tags()
        pred, sigma = src.read(1), src.read(2)
    assert tags["method"] == "kalman"
    assert json.loads(tags["pair_dates"]) == ["2023-06-06", "2023-06-22", "2023-07-08", "2023-07-24"]  # every clear date
    calibration = json.loads(tags["calibration"])
    assert calibration["method"] == "kalman" and set(calibration["q_per_day"]) == {"red"} and "r_fine" in calibration
    assert np.isfinite(pred).mean() > 0.95 and (sigma[np.isfinite(sigma)] > 0).all()


def test_holdout_kalman_fits_without_the_withheld_date(mini_catalog):
    from stfuse.evaluate.holdout import holdout

    result = holdout(catalog=mini_catalog / "catalog.json", bands=["red", "nir08"], method="kalman", keep_arrays=False)
    assert result.days and all(d.method == "kalman" for d in result.days)
    for day in result.days:
        assert day.date not in day.pairs and len(day.pairs) >= 1
        dates = day.tags["calibration"]["estimator"]["fine_dates"]
        assert day.date.isoformat() not in dates
        assert day.scores["mean"]["rmse"] < 0.08


def test_kalman_refused_where_it_cannot_run(tmp_path):
    from stfuse.config import FusionConfig
    from stfuse.errors import InputError

    with pytest.raises(InputError, match="no refiner"):
        FusionConfig(method="kalman", refine="shipped")
    with pytest.raises(InputError, match="no option 'window'"):
        FusionConfig(method="kalman", window=31)
    import xarray as xr

    from stfuse.api import fuse

    a = xr.DataArray(np.full((1, 1, 8, 8), 0.2, np.float32), dims=("pair", "band", "y", "x"), coords={"band": ["red"]})
    with pytest.raises(InputError, match="time-series method"):
        fuse(a, a, a.isel(pair=0), method="kalman")


def test_series_plan_uses_every_date_and_reports_the_nearest_gaps():
    from stfuse.fusion.pairs import series_plan

    days = [dt.date(2023, 6, 1) + dt.timedelta(days=8 * k) for k in range(6)]
    plan = series_plan(dt.date(2023, 6, 12), days)
    assert plan.pairs == tuple(days) and plan.series and not plan.fills
    assert plan.max_gap_days == 5  # nearest before: 06-09 (3 days), after: 06-17 (5 days)
    assert series_plan(dt.date(2023, 6, 12), days, max_gap_days=10).pairs == tuple(days[1:3])
