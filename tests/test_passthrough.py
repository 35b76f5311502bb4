"""Observation pass-through: on a Landsat date its clear pixels are the observation, only the others predicted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import stfuse
from stfuse.config import FusionConfig, Query, RunConfig
from stfuse.data.sensors import LANDSAT_SR_NOISE
from stfuse.errors import InputError
from stfuse.fused import plan_fused
from stfuse.fusion.quality import QUALITY_BITS
from stfuse_cli.main import cli

OBSERVED, COARSE_MISSING = QUALITY_BITS["observed"], QUALITY_BITS["coarse_missing"]


@pytest.fixture(scope="module")
def landsat(mini_catalog):
    """The mini catalog's Landsat dates -> (clear fraction, fine image (band, y, x) as loaded)."""
    fused = plan_fused(Query(catalog=mini_catalog))
    clear = fused.cubes.fine_clear()
    return {day: (frac, fused.observation(day).values) for day, frac in clear.items()}


def _day(catalog, day, **fusion) -> dict[str, np.ndarray]:
    """One day of the lazy cube, computed: reflectance, sigma (band, y, x), quality (y, x), pair_dates."""
    ds = stfuse.open_fused(Query(catalog=catalog, start=day.isoformat(), end=day.isoformat()), FusionConfig(**fusion))
    out = ds.isel(time=0).compute()
    return {"reflectance": out.reflectance.values, "sigma": out.sigma.values, "quality": out.quality.values,
            "pairs": str(out.pair_dates.values)}


def _check_passed_through(day: dict[str, np.ndarray], obs: np.ndarray, plain: dict[str, np.ndarray]) -> None:
    clear = np.isfinite(obs).all(0)
    assert 0.2 < clear.mean() < 1  # the date has both clear and cloudy pixels
    np.testing.assert_array_equal(day["reflectance"][:, clear], obs[:, clear])  # bit for bit
    assert day["reflectance"].dtype == np.float32
    assert (day["sigma"][:, clear] == np.float32(LANDSAT_SR_NOISE)).all()
    np.testing.assert_array_equal((day["quality"] & OBSERVED) != 0, clear)  # the bit says which, exactly
    assert set(np.unique(day["quality"][clear]).tolist()) <= {OBSERVED, OBSERVED | COARSE_MISSING}
    # cloudy pixels: predicted, exactly as without pass-through
    cloudy = ~clear
    np.testing.assert_array_equal(day["reflectance"][:, cloudy], plain["reflectance"][:, cloudy])
    np.testing.assert_array_equal(day["sigma"][:, cloudy], plain["sigma"][:, cloudy])
    np.testing.assert_array_equal(day["quality"][cloudy], plain["quality"][cloudy])
    predicted = cloudy & ((day["quality"] & COARSE_MISSING) == 0)
    assert predicted.any() and np.isfinite(day["reflectance"][:, predicted]).all()
    # without pass-through the clear pixels were not the observation (the prior averages neighbours and pairs)
    assert (plain["reflectance"][:, clear] != obs[:, clear]).any(0).mean() > 0.5
    assert not (plain["quality"] & OBSERVED).any()


def test_clear_pixels_of_landsat_dates_come_back_exactly(mini_catalog, landsat):
    assert len(landsat) >= 2
    for day, (_, obs) in landsat.items():
        fused, plain = _day(mini_catalog, day), _day(mini_catalog, day, observed=False)
        assert day.isoformat() in fused["pairs"]  # clear enough: the date is one of its own pairs
        _check_passed_through(fused, obs, plain)


def test_a_landsat_date_too_cloudy_for_a_pair_passes_through_too(mini_catalog, landsat):
    (cloudy_day, (frac, obs)), (_, (other, _)) = sorted(landsat.items(), key=lambda kv: kv[1][0])[:2]
    min_clear = (frac + other) / 2  # the cloudier date is no pair any more
    fused, plain = _day(mini_catalog, cloudy_day, min_clear=min_clear), _day(mini_catalog, cloudy_day, min_clear=min_clear, observed=False)
    assert cloudy_day.isoformat() not in fused["pairs"]
    _check_passed_through(fused, obs, plain)


def test_days_without_a_landsat_image_are_unchanged(mini_catalog, landsat):
    first = min(landsat)
    day = next(first + np.timedelta64(k, "D").item() for k in range(1, 10) if first + np.timedelta64(k, "D").item() not in landsat)
    fused, plain = _day(mini_catalog, day), _day(mini_catalog, day, observed=False)
    for name in ("reflectance", "sigma", "quality"):
        np.testing.assert_array_equal(fused[name], plain[name])  # bit-identical
    assert not (fused["quality"] & OBSERVED).any()


def test_predict_writes_the_observation_and_documents_the_bit(mini_catalog, landsat, tmp_path):
    day, (_, obs) = max(landsat.items(), key=lambda kv: kv[1][0])
    query = Query(catalog=mini_catalog, start=day.isoformat(), end=day.isoformat())
    paths = stfuse.predict(query, FusionConfig(), RunConfig(out_dir=tmp_path, formats=("cog", "zarr")))
    (cog,) = [p for p in paths if str(p).endswith(".tif")]
    n = obs.shape[0]
    with rasterio.open(cog) as src:
        data = src.read()
        assert json.loads(src.tags()["quality"])["bits"] == QUALITY_BITS
    clear = np.isfinite(obs).all(0)
    np.testing.assert_array_equal(data[:n][:, clear], obs[:, clear])
    assert (data[n:2 * n][:, clear] == np.float32(LANDSAT_SR_NOISE)).all()
    np.testing.assert_array_equal((data[2 * n].astype(int) & OBSERVED) != 0, clear)
    import xarray as xr

    z = xr.open_zarr(tmp_path / "stfuse.zarr")
    assert z.quality.attrs["flag_meanings"].split() == list(QUALITY_BITS) and z.quality.attrs["flag_masks"] == list(QUALITY_BITS.values())
    np.testing.assert_array_equal(z.quality.isel(time=0).values, data[2 * n].astype(np.uint8))


def test_no_observed_flag_and_validation(mini_catalog, landsat, tmp_path):
    day = max(landsat, key=lambda d: landsat[d][0])
    result = CliRunner().invoke(cli, ["predict", "--catalog", str(mini_catalog), "--start", day.isoformat(), "--end", day.isoformat(),
                                      "--no-observed", "-q", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / f"stfuse_{day.isoformat()}.tif") as src:
        assert not (src.read(src.count).astype(int) & OBSERVED).any()
    with pytest.raises(InputError, match="observed must be True or False"):
        FusionConfig(observed="yes")
