"""Fill values the items do not declare: real MCD43A4 items carry no `nodata` in `raster:bands`.

Pixels of the output grid that no MODIS item covers must load as missing (NaN reflectance, not
valid), not as reflectance 0 with quality 'good' (issue #20, real-metadata faults)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import rasterio

from stfuse.data.cube import load_cubes


def _strip_nodata(catalog, collection: str, *, tags: bool) -> int:
    """Remove `nodata` from the raster:bands of every item of ``collection`` (and, with ``tags``,
    the GeoTIFF nodata tag of its COGs); returns how many assets were changed."""
    changed = 0
    for item_path in (catalog / collection).rglob("*.json"):
        item = json.loads(item_path.read_text())
        if item.get("type") != "Feature":
            continue
        for asset in item["assets"].values():
            for band in asset.get("raster:bands", []):
                if band.pop("nodata", None) is not None:
                    changed += 1
                    if tags:
                        with rasterio.open(item_path.parent / asset["href"], "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
                            dst.nodata = None
        item_path.write_text(json.dumps(item))
    return changed


def _wide_bbox(catalog):
    """A lon/lat box reaching ~5 km east of the Landsat footprint (the MODIS window ends ~1 km beyond it)."""
    item = next(p for p in (catalog / "landsat-c2-l2").rglob("*.json") if json.loads(p.read_text()).get("type") == "Feature")
    west, south, east, north = json.loads(item.read_text())["bbox"]
    return (west + 0.3 * (east - west), south + 0.2 * (north - south), east + 0.06, north - 0.2 * (north - south))


def test_modis_without_declared_nodata_is_missing_where_no_item_covers(mini_catalog, tmp_path):
    catalog = tmp_path / "cat"
    shutil.copytree(mini_catalog, catalog)
    assert _strip_nodata(catalog, "modis-43A4-061", tags=True) > 0
    cubes = load_cubes(catalog=catalog, bbox=_wide_bbox(catalog), bands=["red", "nir08"])
    coarse = cubes.coarse.isel(time=slice(0, 3)).compute()
    fine = cubes.fine.isel(time=0).compute()
    outside = np.isnan(fine.reflectance.values).all(axis=0) & ~fine.valid.values
    east = np.zeros_like(outside)
    east[:, -20:] = True  # the last 20 columns (600 m) lie ~4 km beyond the MODIS window
    assert (outside & east).sum() > 0
    for t in range(3):
        refl = coarse.reflectance.isel(time=t).values
        assert np.isnan(refl[:, east]).all(), "pixels no MODIS item covers loaded as valid reflectance"
        assert not coarse.valid.isel(time=t).values[east].any()
        assert np.isfinite(refl[:, :, :10]).mean() > 0.5  # the covered part still loads


def test_landsat_without_declared_nodata_is_missing_outside_the_scene(mini_catalog, tmp_path):
    """A guard: Landsat's fill (DN 0) equals the loader's default fill, so this held before the
    fix too; the declared fill values must keep it so."""
    catalog = tmp_path / "cat"
    shutil.copytree(mini_catalog, catalog)
    assert _strip_nodata(catalog, "landsat-c2-l2", tags=True) > 0
    cubes = load_cubes(catalog=catalog, bbox=_wide_bbox(catalog), bands=["red"])
    fine = cubes.fine.isel(time=0).compute()
    assert np.isnan(fine.reflectance.values[:, :, -20:]).all() and not fine.valid.values[:, -20:].any()


def test_landsat_is_dated_by_its_local_solar_day(mini_catalog, tmp_path):
    """An acquisition late in the UTC day east of ~145 E (or, mirrored here in Kansas, early in
    the UTC day) belongs to the local solar day, the date of the daily MODIS image seen with it."""
    import datetime as dt

    from stfuse.data.cube import solar_day

    catalog = tmp_path / "cat"
    shutil.copytree(mini_catalog, catalog)
    path = next(p for p in sorted((catalog / "landsat-c2-l2").rglob("*.json")) if json.loads(p.read_text()).get("type") == "Feature")
    item = json.loads(path.read_text())
    day = dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00")).date()
    item["properties"]["datetime"] = f"{day + dt.timedelta(days=1)}T03:00:00Z"  # 20:24 local solar time on `day` at 98.8 W
    path.write_text(json.dumps(item))
    cubes = load_cubes(catalog=catalog)
    assert day in cubes.fine_clear() and day + dt.timedelta(days=1) not in cubes.fine_clear()
    assert str(solar_day(np.datetime64("2023-06-06T23:46"), 150.0)) == "2023-06-07"  # Queensland, next local day
    assert str(solar_day(np.datetime64("2023-06-06T23:46"), None)) == "2023-06-06"
