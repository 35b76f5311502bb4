"""`stfuse info` on a prediction COG and a Zarr store written with stfuse.output.io (issue #19)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner
from rasterio.crs import CRS

from stfuse.errors import InputError, MissingFileError
from stfuse.fusion.quality import QUALITY_BITS
from stfuse.output.inspect import describe
from stfuse.output.io import create_zarr_output, mark_zarr_day_complete, write_prediction_cog, write_zarr_tiles
from stfuse_cli.main import cli

H, W = 40, 50
TRANSFORM = Affine(30, 0, 514500, 0, -30, 4248000)
BANDS = ["red", "nir08"]


def run(*args):
    return CliRunner().invoke(cli, ["info", *map(str, args)])


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    mean = (0.05 + 0.3 * rng.random((2, H, W))).astype(np.float32)
    sigma = (0.01 + 0.02 * rng.random((2, H, W))).astype(np.float32)
    sigma[1, 0, 0] = np.nan  # missing pixel: left out of the summary
    quality = np.zeros((H, W), np.float32)
    quality[:10] += QUALITY_BITS["coarse_missing"]  # 500 px
    quality[:4, :25] += QUALITY_BITS["large_change"]  # 100 px, 100 of them also coarse_missing
    quality[20:, :10] += QUALITY_BITS["fine_missing"]  # 200 px
    quality[-1] = np.nan  # outside the scene: 50 px not counted
    return {"mean": mean, "sigma": sigma, "quality": quality}


@pytest.fixture(scope="module")
def cog(tmp_path_factory, arrays) -> Path:
    path = tmp_path_factory.mktemp("info") / "stfuse_2023-06-14.tif"
    tags = {"stfuse_method": "fsdaf", "calibration": {"variance_scale": 1.25, "pairs": 1}, "pair_dates": ["2023-06-06"]}
    return write_prediction_cog(path, arrays["mean"], arrays["sigma"], band_names=BANDS, crs=CRS.from_epsg(32614),
                                transform=TRANSFORM, tags=tags, extra_bands={"quality": arrays["quality"]})


def expected_sigma(sigma: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for name, band in zip(BANDS, sigma):
        v = band[np.isfinite(band)].astype(np.float64)
        out[f"{name}_sigma"] = {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}
    return out


def test_info_of_a_cog_as_json(cog, arrays):
    result = run(cog, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["width"], info["height"], info["count"]) == (W, H, 5)
    assert info["crs"] == "EPSG:32614" and info["resolution"] == [30.0, 30.0]
    assert info["transform"] == [30.0, 0.0, 514500.0, 0.0, -30.0, 4248000.0]
    assert info["bounds"] == [514500.0, 4248000.0 - 30 * H, 514500.0 + 30 * W, 4248000.0]
    assert [(b["name"], b["dtype"], b["kind"]) for b in info["bands"]] == [
        ("red", "float32", "reflectance"), ("nir08", "float32", "reflectance"),
        ("red_sigma", "float32", "sigma"), ("nir08_sigma", "float32", "sigma"), ("quality", "float32", "quality")]
    assert info["nodata"] == "nan"
    assert info["tags"]["calibration"] == {"variance_scale": 1.25, "pairs": 1}  # JSON tags decoded
    assert info["tags"]["pair_dates"] == ["2023-06-06"] and info["tags"]["stfuse_method"] == "fsdaf"
    valid = H * W - W
    assert info["quality"]["pixels"] == valid
    pct = info["quality"]["percent"]
    assert pct["coarse_missing"] == pytest.approx(100 * 500 / valid)
    assert pct["large_change"] == pytest.approx(100 * 100 / valid)
    assert pct["fine_missing"] == pytest.approx(100 * 190 / valid)  # rows 20..38 (row 39 is outside)
    assert pct["none"] == pytest.approx(100 * (valid - 500 - 190) / valid)
    for name, stats in expected_sigma(arrays["sigma"]).items():
        assert info["sigma"][name] == pytest.approx(stats, rel=1e-6)


def test_info_of_a_cog_as_text(cog):
    result = run(cog)
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"size      {W} x {H} pixels, 5 bands" in text and "crs       EPSG:32614" in text
    assert "pixel 30 x -30" in text and "origin (514500.000, 4248000.000)" in text
    assert "    5  quality      float32  quality" in text
    assert f"  coarse_missing   {100 * 500 / (H * W - W):.2f} %" in text
    assert 'calibration: {"variance_scale": 1.25, "pairs": 1}' in text


def test_info_of_a_zarr_store(tmp_path, arrays):
    days = [dt.date(2023, 6, 14), dt.date(2023, 6, 15), dt.date(2023, 6, 16)]
    store = create_zarr_output(tmp_path / "stfuse.zarr", days=days, band_names=BANDS, crs=CRS.from_epsg(32614),
                               transform=TRANSFORM, shape=(H, W), attrs={"method": "starfm", "options": {"window": 31}})
    half = np.float32(0.5)
    write_zarr_tiles(store, 0, [((slice(0, H), slice(0, W)), arrays["mean"], arrays["sigma"])])
    mark_zarr_day_complete(store, 0)
    write_zarr_tiles(store, 1, [((slice(0, H // 2), slice(0, W)), arrays["mean"][:, : H // 2], arrays["sigma"][:, : H // 2] + half)])
    # day 1 is written in part and not complete: its sigma (>= 0.5) must not reach the summary
    result = run(store, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["format"] == "zarr" and info["bands"] == BANDS and (info["width"], info["height"]) == (W, H)
    assert info["days"] == ["2023-06-14", "2023-06-15", "2023-06-16"] and info["complete_days"] == ["2023-06-14"]
    assert info["crs"] == "EPSG:32614" and info["transform"] == [30.0, 0.0, 514500.0, 0.0, -30.0, 4248000.0]
    assert info["attrs"]["options"] == {"window": 31}
    assert set(info["variables"]) == {"reflectance", "sigma", "quality"}  # create_zarr_output makes the quality variable
    assert info["variables"]["sigma"]["shape"] == [3, 2, H, W]
    for name, stats in expected_sigma(arrays["sigma"]).items():
        assert info["variables"]["sigma"]["sigma"][name] == pytest.approx(stats, rel=1e-6)
    text = run(store).output
    assert "days      3, 1 complete" in text and "  2023-06-15  incomplete" in text


def test_info_errors(tmp_path):
    with pytest.raises(MissingFileError, match="not found"):
        describe(tmp_path / "nothing.tif")
    (tmp_path / "other.zarr").mkdir()
    import xarray as xr

    xr.Dataset({"a": ("t", np.zeros(3))}).to_zarr(tmp_path / "other2.zarr", mode="w")
    with pytest.raises(InputError, match=r"not a Zarr store written by stfuse .*it has a"):
        describe(tmp_path / "other2.zarr")
    (tmp_path / "bad.tif").write_text("not a tiff")
    result = run(tmp_path / "bad.tif")
    assert result.exit_code == 2 and result.output.startswith("Error: cannot read") and result.output.count("\n") == 1
    result = run(tmp_path / "other.zarr")
    assert result.exit_code == 2 and "Error: cannot open" in result.output
