"""Outputs exactly as the README documents them, in catalog and local-file mode (issue #19, item 5):
the ``quality`` band (exact integer flags, never nodata), band names, the version tag, the Zarr
``quality`` variable, holdout predictions, ``--dtype int16`` (scale/offset) and ``--compress``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from click.testing import CliRunner

from stfuse import __version__
from stfuse.config import RunConfig
from stfuse.errors import InputError
from stfuse.evaluate.files import evaluate_files
from stfuse.evaluate.holdout import HoldoutDay, HoldoutResult, write_holdout
from stfuse.evaluate.report import read_pixel_series
from stfuse.fusion.quality import QUALITY_BITS
from stfuse.output.inspect import describe
from stfuse.output.io import read_reflectance, write_prediction_cog, write_stac_item
from stfuse_cli.main import cli

from conftest import write_tif

CRS_UTM = rasterio.crs.CRS.from_epsg(32614)
GRID = Affine(30, 0, 500000, 0, -30, 4500000)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture()
def scene(tmp_path):
    """3-band 64x64 int16 inputs (reflectance x 1e4); the target adds +0.03, +0.2 (large change)
    in the top-left 8x8 block, and has no data in the bottom-right 8x8 block; the fine pair has a
    cloud (nodata) in an 8x8 block."""
    rng = np.random.default_rng(3)
    fields = (0.1 + 0.2 * rng.random((3, 8, 8))).astype(np.float32)
    fine = np.repeat(np.repeat(fields, 8, axis=1), 8, axis=2)
    target = fine + 0.03
    target[:, :8, :8] += 0.2
    dn = lambda a: np.round(a * 10000).astype(np.int16)  # noqa: E731
    fine_dn, target_dn = dn(fine), dn(target)
    fine_dn[:, 24:32, 24:32] = -9999
    target_dn[:, -8:, -8:] = -9999
    described = dict(nodata=-9999, descriptions=["red", "nir08", "swir16"])
    paths = {
        "fine": write_tif(tmp_path / "fine.tif", fine_dn, **described),
        "coarse1": write_tif(tmp_path / "coarse1.tif", dn(fine), **described),
        "coarse2": write_tif(tmp_path / "coarse2.tif", target_dn, **described),
        "fine_plain": write_tif(tmp_path / "fine_plain.tif", fine_dn, nodata=-9999),
        "coarse1_plain": write_tif(tmp_path / "coarse1_plain.tif", dn(fine), nodata=-9999),
        "coarse2_plain": write_tif(tmp_path / "coarse2_plain.tif", target_dn, nodata=-9999),
    }
    return paths


def local(paths, out, *extra, plain=False):
    s = "_plain" if plain else ""
    return run("predict", "--pair", paths["fine" + s], paths["coarse1" + s], "--coarse", paths["coarse2" + s], "-o", out, *extra)


def test_local_mode_has_catalog_layout_quality_and_version(scene, tmp_path):
    out = tmp_path / "pred.tif"
    result = local(scene, out, "--date", "2001-07-11")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        assert src.descriptions == ("red", "nir08", "swir16", "red_sigma", "nir08_sigma", "swir16_sigma", "quality")
        tags = src.tags()
        assert tags["stfuse_version"] == __version__
        assert json.loads(tags["quality"])["bits"] == QUALITY_BITS
        flags = src.read(7)
    assert np.isfinite(flags).all() and set(np.unique(flags)) <= set(range(8))
    assert (flags == np.round(flags)).all()  # exact integers
    assert (flags[-8:, -8:].astype(int) & QUALITY_BITS["coarse_missing"]).all()
    assert (flags[24:32, 24:32].astype(int) & QUALITY_BITS["fine_missing"]).all()
    assert (flags[:8, :8].astype(int) & QUALITY_BITS["large_change"]).all()
    assert (flags[40:48, 8:16] == 0).all()
    item = json.loads(out.with_suffix(".json").read_text())
    bands = item["assets"]["data"]["raster:bands"]
    assert [b["name"] for b in bands][-1] == "quality" and bands[-1]["unit"] == "bit flags" and "nodata" not in bands[-1]
    assert item["properties"]["stfuse:version"] == __version__


def test_local_mode_band_names_default_and_from_bands(scene, tmp_path):
    result = local(scene, tmp_path / "a.tif", plain=True)
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "a.tif") as src:
        assert src.descriptions == ("band1", "band2", "band3", "band1_sigma", "band2_sigma", "band3_sigma", "quality")
    result = local(scene, tmp_path / "b.tif", "--bands", "red,nir08,swir16", plain=True)
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "b.tif") as src:
        assert src.descriptions[:3] == ("red", "nir08", "swir16") and src.descriptions[-1] == "quality"
    result = local(scene, tmp_path / "c.tif", "--bands", "red,nir08", plain=True)
    assert result.exit_code == 2 and "give one name per band (3)" in result.output
    # described files: --bands selects among the descriptions
    result = local(scene, tmp_path / "d.tif", "--bands", "nir08")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "d.tif") as src:
        assert src.descriptions == ("nir08", "nir08_sigma", "quality")


def test_local_int16_round_trips_through_readers(scene, tmp_path):
    assert local(scene, tmp_path / "f.tif").exit_code == 0
    result = local(scene, tmp_path / "i.tif", "--dtype", "int16", "--compress", "deflate")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "i.tif") as src:
        assert src.dtypes == ("int16",) * 7 and src.nodata == -32768 and src.compression.value == "DEFLATE"
        assert src.scales == (1e-4,) * 6 + (1.0,) and src.offsets == (0.0,) * 7
        raw_flags = src.read(7)
    f, i = read_reflectance(tmp_path / "f.tif"), read_reflectance(tmp_path / "i.tif")
    assert i.dtype == np.float32 and list(i.band.values) == list(f.band.values)
    np.testing.assert_array_equal(np.isnan(f.values), np.isnan(i.values))
    assert np.nanmax(np.abs(f.values - i.values)) <= 0.5e-4 + 1e-7
    np.testing.assert_array_equal(i.sel(band="quality").values, f.sel(band="quality").values)  # flags exact, unscaled
    np.testing.assert_array_equal(raw_flags, f.sel(band="quality").values)
    truth = write_tif(tmp_path / "truth.tif", np.nan_to_num(f.values[:3], nan=0.2).astype(np.float32), descriptions=["red", "nir08", "swir16"])
    sf, si = evaluate_files(tmp_path / "f.tif", truth), evaluate_files(tmp_path / "i.tif", truth)
    assert [b["name"] for b in si["bands"]] == ["red", "nir08", "swir16"]
    for a, b in zip(sf["bands"], si["bands"]):
        assert abs(a["rmse"] - b["rmse"]) < 1e-4
    assert abs(sf["coverage"]["0.68"] - si["coverage"]["0.68"]) < 0.02
    info = describe(tmp_path / "i.tif")
    assert info["quality"] == describe(tmp_path / "f.tif")["quality"]
    assert abs(info["sigma"]["red_sigma"]["median"] - describe(tmp_path / "f.tif")["sigma"]["red_sigma"]["median"]) < 1e-4
    files = [("2001-07-11", tmp_path / "f.tif")], [("2001-07-11", tmp_path / "i.tif")]
    (_, vf, sgf), (_, vi, sgi) = (read_pixel_series(x, ["red"], [(40, 40)], (64, 64)) for x in files)
    assert abs(vf - vi).max() <= 0.5e-4 + 1e-7 and abs(sgf - sgi).max() <= 0.5e-4 + 1e-7


def test_local_mode_refuses_catalog_run_flags_but_takes_output_flags(scene, tmp_path):
    result = local(scene, tmp_path / "x.tif", "--tile", "128")
    assert result.exit_code == 2 and "--tile applies to catalog mode" in result.output
    assert local(scene, tmp_path / "y.tif", "--compress", "none").exit_code == 0


@pytest.mark.parametrize("compress, expected", [("zstd", "ZSTD"), ("deflate", "DEFLATE"), ("lzw", "LZW"), ("none", None)])
def test_compress_option_sets_the_file_compression(tmp_path, compress, expected):
    rng = np.random.default_rng(0)
    mean = rng.random((2, 40, 40), dtype=np.float32)
    flags = np.zeros((40, 40), np.uint8)
    out = write_prediction_cog(tmp_path / "p.tif", mean, mean / 10, band_names=["red", "nir08"], crs=CRS_UTM, transform=GRID,
                               extra_bands={"quality": flags}, compress=compress)
    with rasterio.open(out) as src:
        assert (src.compression.value if src.compression else None) == expected
        np.testing.assert_array_equal(src.read(1), mean[0])


def test_bad_dtype_or_compression_refused():
    with pytest.raises(InputError, match="unknown output dtype 'uint8'"):
        RunConfig(dtype="uint8")
    with pytest.raises(InputError, match="unknown compression 'jpeg'"):
        RunConfig(compress="jpeg")
    with pytest.raises(InputError, match="unknown compression"):
        write_prediction_cog("/tmp/never.tif", np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), band_names=["red"], crs=None,
                             transform=GRID, compress="jpeg")


def test_float32_quality_never_nan_even_where_reflectance_is(tmp_path):
    mean = np.full((1, 32, 32), 0.2, np.float32)
    mean[0, :4] = np.nan
    flags = np.zeros((32, 32), np.uint8)
    flags[:4] = QUALITY_BITS["coarse_missing"] | QUALITY_BITS["fine_missing"]
    for dtype in ("float32", "int16"):
        out = write_prediction_cog(tmp_path / f"{dtype}.tif", mean, mean / 10, band_names=["red"], crs=CRS_UTM, transform=GRID,
                                   extra_bands={"quality": flags}, dtype=dtype)
        array = read_reflectance(out)
        assert np.isnan(array.sel(band="red").values[:4]).all()
        np.testing.assert_array_equal(array.sel(band="quality").values, flags)
    item = write_stac_item(tmp_path / "i.json", item_id="i", asset_path=out, datetime=dt.datetime(2023, 6, 1), band_names=["red"],
                           crs=CRS_UTM, transform=GRID, shape=(32, 32), extra_bands=("quality",), dtype="int16")
    bands = json.loads(item.read_text())["assets"]["data"]["raster:bands"]
    assert bands[0] == {"name": "red", "data_type": "int16", "nodata": -32768, "unit": "reflectance", "scale": 1e-4, "offset": 0.0}
    assert bands[2] == {"name": "quality", "data_type": "int16", "unit": "bit flags"}


def test_catalog_cog_and_zarr_quality_and_resume(tmp_path):
    out = tmp_path / "o"
    args = ["predict", "--start", "2023-06-20", "--end", "2023-06-21", "--bands", "red", "-q", "-o", out]
    result = run(*args, "--format", "cog,zarr")
    assert result.exit_code == 0, result.output
    with rasterio.open(out / "stfuse_2023-06-20.tif") as src:
        assert src.descriptions == ("red", "red_sigma", "quality") and src.tags()["stfuse_version"] == __version__
        cog_flags = src.read(3)
    assert np.isfinite(cog_flags).all() and (cog_flags == np.round(cog_flags)).all()
    ds = xr.open_zarr(out / "stfuse.zarr")
    assert ds.quality.dims == ("time", "y", "x") and ds.quality.dtype == np.uint8
    assert ds.quality.attrs["flag_meanings"] == "coarse_missing fine_missing large_change observed filled"
    np.testing.assert_array_equal(ds.quality.sel(time="2023-06-20").values, cog_flags.astype(np.uint8))
    # Zarr only (computed directly, not copied from a COG), then resumed: the same flags
    out2 = tmp_path / "z"
    assert run(*args[:-1], out2, "--format", "zarr").exit_code == 0
    z = xr.open_zarr(out2 / "stfuse.zarr")
    np.testing.assert_array_equal(z.quality.values, ds.quality.values)
    np.testing.assert_array_equal(z.reflectance.values, ds.reflectance.values)
    result = run(*args[:-1], out2, "--format", "zarr", "--resume")
    assert result.exit_code == 0, result.output
    z = xr.open_zarr(out2 / "stfuse.zarr")
    assert bool(z.complete.all())
    np.testing.assert_array_equal(z.quality.values, ds.quality.values)


def test_catalog_int16_cog_and_zarr_read_back(tmp_path):
    base = ["predict", "--start", "2023-06-20", "--end", "2023-06-20", "--bands", "red", "-q", "--format", "cog,zarr"]
    assert run(*base, "-o", tmp_path / "f").exit_code == 0
    result = run(*base, "-o", tmp_path / "i", "--dtype", "int16", "--compress", "zstd")
    assert result.exit_code == 0, result.output
    f, i = (read_reflectance(tmp_path / d / "stfuse_2023-06-20.tif") for d in ("f", "i"))
    assert np.nanmax(np.abs(f.values - i.values)) <= 0.5e-4 + 1e-7
    np.testing.assert_array_equal(np.isnan(f.values), np.isnan(i.values))
    zf, zi = (xr.open_zarr(tmp_path / d / "stfuse.zarr") for d in ("f", "i"))
    assert zf.reflectance.dtype == np.float32 and np.issubdtype(zi.reflectance.dtype, np.floating)
    assert float(np.nanmax(np.abs(zf.reflectance.values - zi.reflectance.values))) <= 0.5e-4 + 1e-7
    assert float(np.nanmax(np.abs(zf.sigma.values - zi.sigma.values))) <= 0.5e-4 + 1e-7
    np.testing.assert_array_equal(zf.quality.values, zi.quality.values)
    item = json.loads((tmp_path / "i" / "stfuse_2023-06-20.json").read_text())
    assert item["assets"]["data"]["raster:bands"][0]["data_type"] == "int16"


def _holdout_result(quality: np.ndarray | None) -> HoldoutResult:
    rng = np.random.default_rng(2)
    mean = rng.random((1, 16, 16), dtype=np.float32)
    day = HoldoutDay(dt.date(2023, 6, 14), (dt.date(2023, 6, 6),), "starfm", 1.0, {}, truth=mean, mean=mean, sigma=mean / 10)
    if quality is not None:
        day.quality = quality  # what holdout() keeps per day (HoldoutDay.quality)
    return HoldoutResult([day], {}, ["red"], "starfm", "sample", crs_wkt=CRS_UTM.to_wkt(), transform=tuple(GRID)[:6])


def test_holdout_predictions_carry_quality_and_version(tmp_path, monkeypatch):
    import stfuse.evaluate.holdout as holdout_module

    monkeypatch.setattr(holdout_module.HoldoutResult, "rows", lambda self: [])
    monkeypatch.setattr(holdout_module.HoldoutResult, "summary", lambda self: {})
    flags = np.zeros((16, 16), np.uint8)
    flags[:2] = QUALITY_BITS["fine_missing"]
    paths = write_holdout(_holdout_result(flags), tmp_path / "r")
    tif = next(p for p in paths if Path(p).suffix == ".tif")
    with rasterio.open(tif) as src:
        assert src.descriptions == ("red", "red_sigma", "quality") and src.tags()["stfuse_version"] == __version__
        np.testing.assert_array_equal(src.read(3), flags)
    paths = write_holdout(_holdout_result(None), tmp_path / "s")  # a result without flags: still the version tag
    with rasterio.open(next(p for p in paths if Path(p).suffix == ".tif")) as src:
        assert src.descriptions == ("red", "red_sigma") and src.tags()["stfuse_version"] == __version__
