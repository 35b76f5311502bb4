"""Local-file mode with coarse images on their native grid (issue #17, "native-grid coarse").

A 96 x 96 scene of 30 m pixels (EPSG:32633) with smooth fields; its coarse images are 6 x 6 pixels
of 480 m (16 x 16 fine-pixel block means) on their own grid, and the same content resampled
(bilinear) onto the fine grid as the classic workflow's input.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

import stfuse
from stfuse.errors import CRSError, GridMismatchError
from stfuse.output.io import read_reflectance, resample_to_grid

CRS = "EPSG:32633"
FINE = Affine(30, 0, 400000, 0, -30, 5000000)
NATIVE = Affine(480, 0, 400000, 0, -480, 5000000)
SIZE, FACTOR = 96, 16
BANDS = ["red", "nir08"]


def _write(path, data: np.ndarray, transform: Affine | None, crs: str | None = CRS):
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype="float32", crs=crs,
                       transform=transform, nodata=float("nan")) as dst:
        dst.write(data.astype(np.float32))
        dst.descriptions = tuple(BANDS)
    return path


def _block_mean(fine: np.ndarray) -> np.ndarray:
    b, h, w = fine.shape
    return fine.reshape(b, h // FACTOR, FACTOR, w // FACTOR, FACTOR).mean(axis=(2, 4))


def _onto_fine(native: np.ndarray) -> np.ndarray:
    out = np.full((native.shape[0], SIZE, SIZE), np.nan, np.float32)
    reproject(native.astype(np.float32), out, src_transform=NATIVE, src_crs=CRS, dst_transform=FINE, dst_crs=CRS,
              src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.bilinear)
    return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Fine t1, truth t2 and the coarse t1/t2 images, native (480 m) and on the fine grid."""
    root = tmp_path_factory.mktemp("native")
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    fields = np.stack([0.08 + 0.05 * np.sin(2 * np.pi * x) * np.cos(np.pi * y) + 0.03 * x,
                       0.30 + 0.08 * np.cos(2 * np.pi * y) * np.sin(np.pi * x) + 0.05 * y])
    change = np.stack([0.02 + 0.01 * x, -0.03 + 0.02 * y])  # smooth, band-wise
    fine1, truth = fields, fields * 1.05 + change
    paths = {"fine": _write(root / "fine_t1.tif", fine1, FINE)}
    for day, image in (("t1", fine1), ("t2", truth)):
        native = _block_mean(image)
        paths[f"native_{day}"] = _write(root / f"modis_{day}_native.tif", native, NATIVE)
        paths[f"grid_{day}"] = _write(root / f"modis_{day}_30m.tif", _onto_fine(native), FINE)
    return paths, truth


def _predict(scene, tmp_path, kind: str, name: str, **kwargs):
    paths, truth = scene
    out = tmp_path / f"{name}.tif"
    stfuse.predict_files([(paths["fine"], paths[f"{kind}_t1"])], paths[f"{kind}_t2"], out, method="fitfc", **kwargs)
    with rasterio.open(out) as src:
        pred, tags = src.read(), src.tags()
    return pred, tags


def _rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean((pred[: len(BANDS)] - truth) ** 2)))


def test_native_coarse_is_resampled_and_matches_the_on_grid_run(scene, tmp_path, caplog):
    _, truth = scene
    with caplog.at_level(logging.INFO, logger="stfuse"):
        native, tags = _predict(scene, tmp_path, "native", "native")
    resampled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resampled ")]
    assert len(resampled) == 2 and all("onto the fine grid" in m for m in resampled)
    on_grid, grid_tags = _predict(scene, tmp_path, "grid", "grid")
    assert np.isfinite(native[: len(BANDS)]).mean() > 0.99
    rmse_native, rmse_grid = _rmse(native, truth), _rmse(on_grid, truth)
    assert rmse_native <= 1.1 * rmse_grid, (rmse_native, rmse_grid)
    assert json.loads(tags["options"])["coarse_factor"] == 16
    assert json.loads(grid_tags["options"])["coarse_factor"] == 16  # on-grid inputs at 30 m: 480 m / 30 m (#32)


@pytest.mark.parametrize("pixel, crs, factor", [(50.0, "EPSG:32614", 10), (25.0, "EPSG:32614", 19), (70.0, "EPSG:32614", 7),
                                                (30.0, None, None)])
def test_on_grid_coarse_factor_follows_the_fine_pixel_size(tmp_path, pixel, crs, factor):
    """Coarse files already on the fine grid: coarse_factor = round(480 m / fine pixel) in a metric
    CRS (1:10 at 50 m, 1:19 at 25 m, 1:7 for 70 m HLS-like grids), the methods' 16 without a CRS (#32)."""
    from conftest import write_tif

    rng = np.random.default_rng(0)
    fields = np.repeat(np.repeat((0.1 + 0.2 * rng.random((2, 8, 8))).astype(np.float32), 8, axis=1), 8, axis=2)
    transform = Affine(pixel, 0, 500000, 0, -pixel, 4000000)
    files = [write_tif(tmp_path / f"{name}.tif", np.round((fields + shift) * 1e4).astype(np.int16), crs=crs, transform=transform)
             for name, shift in (("fine", 0.0), ("c1", 0.0), ("c2", 0.02))]
    out = stfuse.predict_files([(files[0], files[1])], files[2], tmp_path / "p.tif")
    with rasterio.open(out) as src:
        options = json.loads(src.tags()["options"])
    assert options.get("coarse_factor") == factor


def test_user_coarse_factor_wins(scene, tmp_path):
    _, tags = _predict(scene, tmp_path, "native", "user", options={"coarse_factor": 8})
    assert json.loads(tags["options"])["coarse_factor"] == 8


def test_method_without_coarse_factor_gets_none(scene, tmp_path):
    paths, _ = scene
    out = tmp_path / "starfm.tif"
    stfuse.predict_files([(paths["fine"], paths["native_t1"])], paths["native_t2"], out, method="starfm")
    with rasterio.open(out) as src:
        assert "coarse_factor" not in json.loads(src.tags()["options"])


def test_on_grid_inputs_unchanged(scene, tmp_path, caplog):
    """Coarse files on the fine grid: no resampling, output = stfuse.fuse on the arrays."""
    paths, _ = scene
    with caplog.at_level(logging.INFO, logger="stfuse"):
        pred, _ = _predict(scene, tmp_path, "grid", "plain")
    assert not [r for r in caplog.records if r.getMessage().startswith("resampled ")]
    fine = xr.concat([read_reflectance(paths["fine"])], dim="pair")
    coarse = xr.concat([read_reflectance(paths["grid_t1"])], dim="pair")
    expected = stfuse.fuse(fine, coarse, read_reflectance(paths["grid_t2"]), method="fitfc")
    np.testing.assert_array_equal(pred[: len(BANDS)], expected.mean.values)
    np.testing.assert_array_equal(pred[len(BANDS): 2 * len(BANDS)], expected.sigma.values)


def test_coarse_without_overlap_is_refused(scene, tmp_path):
    paths, truth = scene
    far = _write(tmp_path / "far.tif", _block_mean(truth), Affine(480, 0, 600000, 0, -480, 5000000))
    out = tmp_path / "far_pred.tif"
    with pytest.raises(GridMismatchError, match="does not overlap") as err:
        stfuse.predict_files([(paths["fine"], paths["native_t1"])], far, out, method="fitfc")
    assert "600000" in str(err.value) and "400000" in str(err.value)  # both bounds
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not list(tmp_path.glob(".far_pred*"))


def test_coarse_without_crs_is_refused(scene, tmp_path):
    paths, truth = scene
    plain = _write(tmp_path / "plain.tif", _block_mean(truth), NATIVE, crs=None)
    out = tmp_path / "plain_pred.tif"
    with pytest.raises(CRSError, match="has no CRS but"):
        stfuse.predict_files([(paths["fine"], paths["native_t1"])], plain, out, method="fitfc")
    assert not out.exists()


def test_resample_to_grid_keeps_bands_and_attrs_and_fills_outside_with_nan(scene, tmp_path):
    paths, _ = scene
    fine = read_reflectance(paths["fine"])
    half = _write(tmp_path / "half.tif", np.full((2, 3, 6), 0.2, np.float32), NATIVE)  # covers the top half only
    coarse = read_reflectance(half)
    out = resample_to_grid(coarse, fine)
    assert out.dtype == np.float32 and out.shape == fine.shape
    assert list(out.band.values) == BANDS and out.attrs["source"] == str(half)
    assert out.attrs["transform"] == fine.attrs["transform"] and out.attrs["crs_wkt"] == fine.attrs["crs_wkt"]
    np.testing.assert_array_equal(out.x.values, fine.x.values)
    np.testing.assert_allclose(out.values[:, :48], 0.2, rtol=1e-6)
    assert np.isnan(out.values[:, 48:]).all()


SINUSOIDAL = "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs"
MODIS_PIXEL = 463.312716525  # m, MODIS 500 m sinusoidal


def test_modis_sinusoidal_native_grid(scene, tmp_path):
    """Coarse images in MODIS sinusoidal (463 m, sheared against UTM): resampled, coarse_factor 15."""
    paths, truth = scene
    left, bottom, right, top = rasterio.warp.transform_bounds(CRS, SINUSOIDAL, 400000, 5000000 - 30 * SIZE, 400000 + 30 * SIZE, 5000000)
    x0, y0 = np.floor(left / MODIS_PIXEL) * MODIS_PIXEL, np.ceil(top / MODIS_PIXEL) * MODIS_PIXEL
    width, height = int(np.ceil((right - x0) / MODIS_PIXEL)), int(np.ceil((y0 - bottom) / MODIS_PIXEL))
    modis = Affine(MODIS_PIXEL, 0, x0, 0, -MODIS_PIXEL, y0)
    files = {}
    for day, image in (("t1", read_reflectance(paths["fine"]).values), ("t2", truth)):
        native = np.full((len(BANDS), height, width), np.nan, np.float32)
        reproject(image.astype(np.float32), native, src_transform=FINE, src_crs=CRS, dst_transform=modis, dst_crs=SINUSOIDAL,
                  src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.average)
        files[day] = _write(tmp_path / f"modis_{day}_sinu.tif", native, modis, crs=SINUSOIDAL)
    out = tmp_path / "sinu.tif"
    stfuse.predict_files([(paths["fine"], files["t1"])], files["t2"], out, method="fitfc")
    with rasterio.open(out) as src:
        pred, tags = src.read(), src.tags()
    assert json.loads(tags["options"])["coarse_factor"] == 15
    assert np.isfinite(pred[: len(BANDS)]).mean() > 0.95
    no_change = _rmse(read_reflectance(paths["fine"]).values, truth)
    assert _rmse(pred, truth) < 0.5 * no_change  # the coarse change is used
