"""Gap filling: each pair's cloudy pixels come from the nearest farther clear date on its side."""

from __future__ import annotations

import csv
import datetime as dt
import json

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner

import stfuse
from stfuse.config import FusionConfig, Query
from stfuse.errors import InputError
from stfuse.evaluate.holdout import format_holdout, holdout
from stfuse.fused import plan_fused
from stfuse.fusion.pairs import fill_days, fill_pair, plan_day
from stfuse.fusion.quality import QUALITY_BITS
from stfuse.sim.synth import SceneSpec
from stfuse_cli.main import cli

from conftest import write_tif

FILLED, FINE_MISSING = QUALITY_BITS["filled"], QUALITY_BITS["fine_missing"]
D = dt.date
SEASON = SceneSpec(height=64, width=64, n_days=48, seed=3, landsat_revisit=8, landsat_offset=2, cloud_fraction=0.4,
                   change_day=None)
"""A cloudy 48-day season, Landsat every 8 days (6 dates, 4 % to 100 % cloud)."""


@pytest.fixture(scope="module")
def season(tmp_path_factory):
    from stfuse.sim.sample import write_sample_catalog

    root = tmp_path_factory.mktemp("season")
    write_sample_catalog(root, SEASON, overwrite=True)
    return root


def test_fill_days_are_farther_on_the_pairs_side_nearest_first():
    days = [D(2023, 6, d) for d in (1, 9, 17, 25)] + [D(2023, 7, d) for d in (3, 11, 19)]
    target = D(2023, 6, 28)
    assert fill_days(target, D(2023, 6, 25), days, max_fill=2) == (D(2023, 6, 17), D(2023, 6, 9))
    assert fill_days(target, D(2023, 7, 3), days, max_fill=5) == (D(2023, 7, 11), D(2023, 7, 19))
    assert fill_days(target, D(2023, 6, 25), days, max_fill=3, exclude=[D(2023, 6, 17)]) == (D(2023, 6, 9), D(2023, 6, 1))
    assert fill_days(target, D(2023, 6, 25), days, max_fill=3, max_gap_days=20) == (D(2023, 6, 17), D(2023, 6, 9))
    assert fill_days(target, D(2023, 6, 25), days, max_fill=0) == ()
    with pytest.raises(InputError, match="max_fill"):
        fill_days(target, D(2023, 6, 25), days, max_fill=-1)


def test_plans_carry_fill_days_per_pair_and_none_without_filling():
    days = [D(2023, 6, d) for d in (1, 9, 17, 25)] + [D(2023, 7, d) for d in (3, 11)]
    plan = plan_day(D(2023, 6, 28), days, max_fill=2)
    assert plan.pairs == (D(2023, 6, 25), D(2023, 7, 3))
    assert plan.fills == ((D(2023, 6, 17), D(2023, 6, 9)), (D(2023, 7, 11),))
    assert plan.fill_dates == (D(2023, 6, 9), D(2023, 6, 17), D(2023, 7, 11))
    three = plan_day(D(2023, 6, 28), days, max_pairs=3, max_fill=1)  # a farther pair is not also a fill day
    assert three.pairs == (D(2023, 6, 17), D(2023, 6, 25), D(2023, 7, 3)) and three.fills == ((D(2023, 6, 9),), (D(2023, 6, 9),), (D(2023, 7, 11),))
    assert plan_day(D(2023, 6, 28), days).fills == () == plan_day(D(2023, 6, 28), days).fill_dates


def _stack(values: list[list[float]]) -> xr.DataArray:
    """(time, band=2, y=1, x=len) from per-date rows of pixel values (each band the same)."""
    a = np.asarray(values, np.float32)[:, None, None, :].repeat(2, axis=1)
    return xr.DataArray(a, dims=("time", "band", "y", "x"), coords={"time": [1, 2, 3], "band": ["red", "nir08"]})


def test_fill_pair_takes_fine_and_coarse_from_the_first_date_valid_at_each_pixel():
    nan = np.nan
    # pixels: clear in the pair | cloudy, clear in date 2 | date 2's coarse missing, clear in date 3 | never clear
    fine = _stack([[0.1, nan, nan, nan], [0.2, 0.22, 0.23, nan], [0.3, 0.32, 0.33, nan]])
    coarse = _stack([[1.0, 1.1, 1.2, 1.3], [2.0, 2.1, nan, 2.3], [3.0, 3.1, 3.2, 3.3]])
    f, c, filled = fill_pair(fine, coarse)
    np.testing.assert_allclose(f.values[0, 0], [0.1, 0.22, 0.33, nan])
    np.testing.assert_allclose(c.values[0, 0], [1.0, 2.1, 3.2, 1.3])  # the coarse of the same date as the fine
    np.testing.assert_array_equal(filled.values[0], [False, True, True, False])
    assert f.dims == ("band", "y", "x") and f.dtype == np.float32 and int(f.time) == 1  # the pair's labels
    lazy = fill_pair(fine.copy(data=da.from_array(fine.values)), coarse.copy(data=da.from_array(coarse.values)))
    assert isinstance(lazy[0].data, da.Array)
    np.testing.assert_array_equal(lazy[0].values, f.values)


def _cloudy_day(fused):
    """A plan whose pairs are partly cloudy and that has fill days."""
    return next(p for p in fused.plans if p.fills and any(fused.cubes.fine_clear()[d] < 0.95 for d in p.pairs))


def test_catalog_days_fill_cloudy_pixels_and_flag_them(season):
    filled_cube = plan_fused(Query(catalog=season), FusionConfig(method="starfm", max_fill=3, min_clear=0.05))
    plan = _cloudy_day(filled_cube)
    plain_cube = plan_fused(Query(catalog=season, start=plan.target.isoformat(), end=plan.target.isoformat()),
                            FusionConfig(method="starfm", max_fill=0, min_clear=0.05))
    assert plain_cube.plans[0].pairs == plan.pairs and plain_cube.plans[0].fills == ()
    # expected: a pair's pixel is filled where the pair is cloudy and one of its fill days is clear
    obs = {d: np.isfinite(filled_cube.observation(d).values).all(0) for d in (*plan.pairs, *plan.fill_dates)}
    expected = np.zeros_like(next(iter(obs.values())))
    for pair, fills in zip(plan.pairs, plan.fills):
        expected |= ~obs[pair] & np.any([obs[d] for d in fills], axis=0)
    assert 0.05 < expected.mean() < 0.95
    day = filled_cube.day(plan).compute()
    plain = plain_cube.day(plain_cube.plans[0]).compute()
    np.testing.assert_array_equal((day.quality.values & FILLED) != 0, expected)
    assert not (plain.quality.values & FILLED).any()
    # pixels cloudy in every pair are far fewer once filled
    assert ((day.quality.values & FINE_MISSING) != 0).sum() < 0.5 * max(1, ((plain.quality.values & FINE_MISSING) != 0).sum())
    ds = stfuse.open_fused(Query(catalog=season, start=plan.target.isoformat(), end=plan.target.isoformat()),
                           FusionConfig(method="starfm", max_fill=3, min_clear=0.05))
    assert str(ds.fill_dates.values[0]) == ";".join(d.isoformat() for d in plan.fill_dates)


def test_filling_beats_the_two_nearest_pairs_on_a_cloudy_season(season):
    """Leave-one-date-out on the simulated season: on the pixels where a fill date was used, the
    filled prediction's error is well below the two nearest pairs' (the prior otherwise fills a
    cloud from its neighbours or from the other side only)."""
    runs = {k: holdout(catalog=season, bands=["red", "nir08"], method="starfm", min_clear=0.05, max_fill=k, compare_unfilled=k > 0)
            for k in (0, 3)}
    dates = [d.date for d in runs[3].days]
    assert dates == [d.date for d in runs[0].days] and len(dates) >= 3
    assert sum(bool(d.fill_dates) for d in runs[3].days) >= 2
    sq = {0: [], 3: []}
    for plain, filled in zip(runs[0].days, runs[3].days):
        assert plain.fill_dates == () and plain.unfilled is None
        # the report's unfilled column is the unfilled run's score (every pixel is predicted by both)
        assert filled.unfilled["rmse"] == pytest.approx(plain.scores["mean"]["rmse"], rel=1e-6)
        if not filled.fill_dates:
            assert filled.scores["mean"]["rmse"] == pytest.approx(plain.scores["mean"]["rmse"], rel=1e-6)
        where = ((filled.quality & FILLED) != 0)[None] & np.isfinite(filled.truth) & np.isfinite(plain.mean) & np.isfinite(filled.mean)
        sq[0].append((plain.mean - plain.truth)[where] ** 2)
        sq[3].append((filled.mean - filled.truth)[where] ** 2)
    rmse = {k: float(np.sqrt(np.mean(np.concatenate(v)))) for k, v in sq.items()}
    assert sum(v.size for v in sq[3]) > 1000
    assert rmse[3] < 0.8 * rmse[0], rmse
    rows = [r for r in runs[3].rows() if r["band"] == "all"]
    assert [r["rmse_unfilled"] for r in rows] == [d.unfilled["rmse"] for d in runs[3].days]
    assert all(r["rmse_unfilled"] is None for r in runs[0].rows())
    text = format_holdout(runs[3])
    assert "gap filling against the pairs as they are" in text and text.count(" unfilled (") == sum(bool(d.fill_dates) for d in runs[3].days)


def test_cli_fill_is_recorded_in_tags_and_stac_items_and_refused_where_it_does_not_apply(season, tmp_path):
    target = plan_fused(Query(catalog=season), FusionConfig(max_fill=3, min_clear=0.05))
    plan = _cloudy_day(target)
    day = plan.target.isoformat()
    result = CliRunner().invoke(cli, ["predict", "--catalog", str(season), "--start", day, "--end", day, "--method", "starfm",
                                      "--fill", "3", "--min-clear", "0.05", "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    cog = tmp_path / "out" / f"stfuse_{day}.tif"
    with rasterio.open(cog) as src:
        tags = src.tags()
        quality = src.read(src.count).astype(np.uint8)
    assert json.loads(tags["fill_dates"]) == [d.isoformat() for d in plan.fill_dates]
    assert (quality & FILLED).any()
    item = json.loads(cog.with_suffix(".json").read_text())
    assert item["properties"]["stfuse:fill_dates"] == [d.isoformat() for d in plan.fill_dates]
    assert 0 < item["properties"]["stfuse:quality"]["filled_fraction"] < 1
    local = CliRunner().invoke(cli, ["predict", "--pair", str(cog), str(cog), "--coarse", str(cog), "-o", str(tmp_path / "x.tif"),
                                     "--fill", "2"])
    assert local.exit_code == 2 and "--fill applies to catalog mode" in local.output
    evaluate = CliRunner().invoke(cli, ["evaluate", str(cog), str(cog), "--fill", "2"])
    assert evaluate.exit_code == 2 and "--fill applies only with --holdout" in evaluate.output


def test_local_mode_runs_with_eight_cloudy_pairs(tmp_path):
    """Eight pairs, each cloudy over a different third of the scene: every pixel is predicted
    (the pairs fill each other's gaps), and on a uniform change the prediction is exact."""
    rng = np.random.default_rng(4)
    fields = (0.1 + 0.3 * rng.random((2, 6, 6))).astype(np.float32)
    base = np.repeat(np.repeat(fields, 8, axis=1), 8, axis=2)
    pairs = []
    for k in range(8):
        fine = base + 0.01 * k
        cloudy = fine.copy()
        rows = slice(16 * (k % 3), 16 * (k % 3) + 16)
        cloudy[:, rows] = -9999 / 1e4
        pairs += ["--pair", str(write_tif(tmp_path / f"L{k}.tif", np.round(cloudy * 1e4).astype(np.int16), nodata=-9999)),
                  str(write_tif(tmp_path / f"M{k}.tif", np.round(fine * 1e4).astype(np.int16), nodata=-9999))]
    target = write_tif(tmp_path / "T.tif", np.round((base + 0.1) * 1e4).astype(np.int16), nodata=-9999)
    out = tmp_path / "pred.tif"
    result = CliRunner().invoke(cli, ["predict", *pairs, "--coarse", str(target), "-o", str(out), "--method", "fitfc"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        pred = src.read([1, 2]).astype(np.float64)
        tags = src.tags()
    assert len(json.loads(tags["inputs"])["pairs"]) == 8
    assert np.isfinite(pred).all()
    np.testing.assert_allclose(pred, base + 0.1, atol=2e-3)


def test_cli_holdout_compare_unfilled_prints_both_rmses_and_writes_the_column(season, tmp_path):
    out = tmp_path / "holdout"
    result = CliRunner().invoke(cli, ["evaluate", "--holdout", "--catalog", str(season), "--bands", "red", "--method", "starfm",
                                      "--compare-unfilled", "--no-predictions", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "gap filling against the pairs as they are" in result.output and " unfilled (" in result.output
    rows = [r for r in csv.DictReader((out / "holdout.csv").open()) if r["band"] == "all"]
    filled = [r for r in rows if r["fill_dates"]]
    assert filled and all(float(r["rmse_unfilled"]) > 0 for r in filled)
