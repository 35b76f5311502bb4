"""Reading reflectance, grid checks, atomic COG writing and STAC items."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from stfuse.errors import CorruptFileError, CRSError, GridMismatchError, MissingFileError, OutputError
from stfuse.output.io import atomic_path, check_same_grid, read_reflectance, safe_filename, write_prediction_cog, write_stac_item

from conftest import write_tif


def test_integer_without_scale_is_reflectance_times_10000(tmp_path):
    dn = np.array([[[1000, 2500], [-9999, 0]]], dtype=np.int16)
    path = write_tif(tmp_path / "a.tif", dn, nodata=-9999)
    array = read_reflectance(path)
    assert array.dims == ("band", "y", "x")
    np.testing.assert_allclose(array.values[0, 0], [0.1, 0.25], rtol=1e-6)
    assert np.isnan(array.values[0, 1, 0]) and array.values[0, 1, 1] == 0


def test_integer_with_band_scale_uses_it(tmp_path):
    dn = np.full((2, 3, 3), 20000, dtype=np.uint16)
    path = write_tif(tmp_path / "a.tif", dn, scale=0.0000275, descriptions=["red", "nir08"])
    array = read_reflectance(path, bands=["nir08"])
    np.testing.assert_allclose(array.values, 0.55, rtol=1e-5)
    assert list(array.band.values) == ["nir08"]


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(MissingFileError, match="not found"):
        read_reflectance(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(CorruptFileError, match="cannot read"):
        read_reflectance(bad)


def test_grid_checks(tmp_path):
    a = read_reflectance(write_tif(tmp_path / "a.tif", np.ones((1, 4, 4), np.float32)))
    b = read_reflectance(write_tif(tmp_path / "b.tif", np.ones((1, 4, 5), np.float32)))
    c = read_reflectance(write_tif(tmp_path / "c.tif", np.ones((1, 4, 4), np.float32), crs=None))
    d = read_reflectance(write_tif(tmp_path / "d.tif", np.ones((1, 4, 4), np.float32), transform=Affine(30, 0, 0, 0, -30, 0)))
    check_same_grid({"a": a, "a2": a})
    with pytest.raises(GridMismatchError, match="4 x 5 pixels"):
        check_same_grid({"a": a, "b": b})
    with pytest.raises(CRSError, match="c has no CRS but a does"):
        check_same_grid({"a": a, "c": c})
    with pytest.raises(GridMismatchError, match="not on the same grid"):
        check_same_grid({"a": a, "d": d})


def test_cog_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    mean = rng.random((2, 300, 280), dtype=np.float32)
    mean[0, 0, 0] = np.nan
    sigma = np.full_like(mean, 0.01)
    out = write_prediction_cog(tmp_path / "p.tif", mean, sigma, band_names=["red", "nir08"], crs=rasterio.crs.CRS.from_epsg(32614),
                               transform=Affine(30, 0, 500000, 0, -30, 4500000), tags={"method": "starfm", "pairs": [1, 2]})
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(out) as src:
        assert src.descriptions == ("red", "nir08", "red_sigma", "nir08_sigma")
        assert src.crs.to_epsg() == 32614 and np.isnan(src.nodata)
        assert src.tags()["method"] == "starfm" and json.loads(src.tags()["pairs"]) == [1, 2]
        np.testing.assert_array_equal(src.read(1), mean[0])
    assert [p.name for p in tmp_path.iterdir()] == ["p.tif"]  # no temporary left behind
    with pytest.raises(OutputError, match="--overwrite"):
        write_prediction_cog(out, mean, sigma, band_names=["red", "nir08"], crs=None, transform=Affine.identity())


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.tif"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_stac_item_for_georeferenced_and_plain_grids(tmp_path):
    import pystac

    tif = tmp_path / "p.tif"
    tif.write_bytes(b"")
    item_path = write_stac_item(tmp_path / "p.json", item_id="p", asset_path=tif, datetime=None, band_names=["red"],
                                crs=rasterio.crs.CRS.from_epsg(32614), transform=Affine(30, 0, 500000, 0, -30, 4500000), shape=(10, 10))
    item = pystac.Item.from_file(str(item_path))
    assert item.properties["proj:code"] == "EPSG:32614" and item.bbox[0] < item.bbox[2]
    assert item.assets["data"].href.endswith("p.tif")
    plain = write_stac_item(tmp_path / "q.json", item_id="q", asset_path=tif, datetime=None, band_names=["red"],
                            crs=None, transform=Affine(30, 0, 0, 0, -30, 0), shape=(10, 10))
    assert pystac.Item.from_file(str(plain)).geometry is None


def test_safe_filename_strips_traversal():
    assert "/" not in safe_filename("../../etc/passwd") and not safe_filename("../x").startswith(".")


def test_cog_from_dask_blocks_equals_numpy(tmp_path):
    import dask.array as da

    rng = np.random.default_rng(3)
    mean = rng.random((3, 333, 517), dtype=np.float32)
    sigma = mean / 10
    seen = []
    out = write_prediction_cog(tmp_path / "d.tif", da.from_array(mean, chunks=(3, 128, 200)), da.from_array(sigma, chunks=(3, 128, 200)),
                               band_names=["a", "b", "c"], crs=None, transform=Affine(30, 0, 0, 0, -30, 0),
                               progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (9, 9)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(), np.concatenate([mean, sigma]))
    assert cog_validate(str(out))[0]
