"""Fill values never become reflectance (#31): the sensor table's fill and valid range apply at
read, before any reprojection or resampling, whatever the item or the file declares.

A COG without a GeoTIFF nodata tag, in an item without ``raster:bands`` nodata (real MCD43A4
items declare none), used to be warped bilinearly with its fill (32767) as a value: coarse
pixels next to a fill read as reflectance up to 2.5. Every collection of the table is loaded
here through the real cube path (odc-stac, stfuse's reader, GDAL over a loopback HTTP server)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine

from stfuse.data.cube import load_coarse, load_fine
from stfuse.data.sensors import COLLECTIONS
from stfuse.sim.sample import write_cog
from stfuse.sim.testing import serve_files

GUIDE = {  # collection -> (fill, valid min, valid max) DNs, from the product guides
    "landsat-c2-l2": (0, 7273, 43636),  # USGS Landsat 8-9 C2 L2 Science Product Guide
    "modis-43A4-061": (32767, 0, 32766),  # MCD43A4 v061 user guide
    "modis-09GA-061": (-28672, -100, 16000),  # MOD09GA v061 user guide
    **{v: (32767, 0, 32766) for v in ("VNP43IA4", "VJ143IA4", "VNP43MA4", "VJ143MA4")},  # VIIRS VNP43 user guide (#30)
    "hls2-l30": (-9999, -100, 16000), "hls2-s30": (-9999, -100, 16000),  # HLS v2.0 user guide
    "sentinel-2-l2a": (0, 1, 32767), "sentinel-2-c1-l2a": (0, 1, 32767),  # S2 L2A: 0 no data, DN 1..2^15-1
}
QA_GOOD = {"landsat-c2-l2": 1 << 6, "modis-43A4-061": 0, "modis-09GA-061": 0,  # clear / full inversion / clear
           **{v: 0 for v in ("VNP43IA4", "VJ143IA4", "VNP43MA4", "VJ143MA4", "hls2-l30", "hls2-s30")},
           "sentinel-2-l2a": 4, "sentinel-2-c1-l2a": 4}  # full inversion / Fmask clear / SCL vegetation
OTHER = {"landsat-c2-l2": 65535, "modis-43A4-061": 0, "modis-09GA-061": 0,  # a nodata an item may declare instead
         **{v: 0 for v in ("VNP43IA4", "VJ143IA4", "VNP43MA4", "VJ143MA4", "hls2-l30", "hls2-s30")},
         "sentinel-2-l2a": 65535, "sentinel-2-c1-l2a": 65535}
BANDS = ("red", "nir08")
X0, Y0 = 500040.0, 4300080.0
GRID = 96  # 30 m output pixels a side; the sources cover 3840 m a side from (X0, Y0)
BEYOND = 8  # the grid's last columns, east of the sources: no item covers them


def _geobox():
    from odc.geo.geobox import GeoBox

    west = X0 + 3840 - (GRID - BEYOND) * 30
    return GeoBox.from_bbox((west, Y0 - 480 - GRID * 30, west + GRID * 30, Y0 - 480), "EPSG:32614", resolution=30.0)


def _invalid_values(fill: int, low: int, high: int, dtype: str) -> list[int]:
    """The fill and DNs outside the valid range that ``dtype`` can hold."""
    info = np.iinfo(dtype)
    values = [fill]
    if low - 1 >= info.min and low - 1 != fill:
        values.append(max(info.min, low - 5000) if max(info.min, low - 5000) != fill else low - 1)
    if high + 1 <= info.max and high + 1 != fill:
        values.append(min(info.max, high + 5000) if min(info.max, high + 5000) != fill else high + 1)
    return values


def _item(cid: str, root, url: str, *, seed: int, declare: str, tag: str) -> tuple[pystac.Item, dict[str, int]]:
    """One item of collection ``cid`` whose band COGs hold one constant valid DN each, and fill or
    out-of-range DNs in a random 15 % of the pixels. ``declare``: the item's raster:bands nodata,
    "none", "table" (the table's fill) or "other" (:data:`OTHER`); ``tag``: the files' GeoTIFF
    nodata, "none" or "table". Returns the item and each band's valid DN."""
    meta = COLLECTIONS[cid]
    fill, low, high = GUIDE[cid]
    pixel = 30.0 if meta.resolution == "fine" else 240.0
    size = int(round(3840 / pixel))
    transform = Affine(pixel, 0, X0, 0, -pixel, Y0)
    rng = np.random.default_rng(seed)
    folder = root / cid
    folder.mkdir(parents=True, exist_ok=True)
    item = pystac.Item(f"{cid}-{seed}", {"type": "Polygon", "coordinates": [[[-99.0, 38.8], [-98.9, 38.8], [-98.9, 38.9], [-99.0, 38.8]]]},
                       [-99.0, 38.8, -98.9, 38.9], None, collection=cid,
                       properties={"start_datetime": "2023-06-01T00:00:00Z", "end_datetime": "2023-06-01T23:59:59Z",
                                   "datetime": "2023-06-01T17:00:00Z", "platform": "x", "proj:epsg": 32614,
                                   "proj:shape": [size, size], "proj:transform": list(transform)[:6]})
    sources = {}
    invalid = _invalid_values(fill, low, high, meta.dtype)
    for k, band in enumerate(BANDS):
        value = int(low + (0.2 + 0.1 * k) * (high - low))
        dn = np.full((size, size), value, meta.dtype)
        bad = rng.random((size, size)) < 0.15
        dn[bad] = rng.choice(np.array(invalid, meta.dtype), size=int(bad.sum()))
        key = meta.asset_for(band)
        write_cog(folder / f"{item.id}_{key}.tif", dn, transform=transform, crs="EPSG:32614", nodata=fill if tag == "table" else None)
        declared = {"table": fill, "other": OTHER[cid]}.get(declare)
        extra = {"raster:bands": [{"data_type": meta.dtype, "nodata": declared}]} if declared is not None else {}
        item.add_asset(key, pystac.Asset(f"{url}/{cid}/{item.id}_{key}.tif", extra_fields=extra))
        sources[band] = value
    qa = np.full((size, size), QA_GOOD[cid], meta.qa_dtype or "uint16")
    for key in {meta.qa.asset, *meta.qa_assets.values()}:
        write_cog(folder / f"{item.id}_{key}.tif", qa, transform=transform, crs="EPSG:32614", nodata=None)
        item.add_asset(key, pystac.Asset(f"{url}/{cid}/{item.id}_{key}.tif"))
    return item, sources


def _load(cid: str, items: list[pystac.Item], **kwargs):
    load = load_fine if COLLECTIONS[cid].resolution == "fine" else load_coarse
    return load(items, geobox=_geobox(), bands=BANDS, **kwargs).compute()


def test_the_table_holds_every_collections_fill_and_valid_range():
    assert set(COLLECTIONS) == set(GUIDE), "a collection without its product guide's fill/valid range in this test"
    for cid, meta in COLLECTIONS.items():
        assert (meta.nodata, *meta.valid_range) == GUIDE[cid]


@pytest.mark.parametrize("tag", ["none", "table"])
@pytest.mark.parametrize("declare", ["none", "table", "other"])
@pytest.mark.parametrize("cid", sorted(GUIDE))
def test_no_fill_or_out_of_range_value_becomes_reflectance(cid, declare, tag, tmp_path):
    """Each band's valid DNs are one constant: a valid output pixel that mixed in a fill or an
    out-of-range DN (bilinear) would differ from it. Every valid value is inside the valid range;
    pixels no item covers are missing whatever nodata the item declares."""
    meta = COLLECTIONS[cid]
    fill, low, high = GUIDE[cid]
    with serve_files(tmp_path) as files:
        item, sources = _item(cid, tmp_path, files.url, seed=len(cid) + len(declare), declare=declare, tag=tag)
        cube = _load(cid, [item])
    refl = cube.reflectance.values[0]
    valid = cube.valid.values[0]
    lowest, highest = low * meta.scale + meta.offset, high * meta.scale + meta.offset
    for b, band in enumerate(BANDS):
        values = refl[b][valid]
        assert values.size > 0.3 * valid.size
        assert (values >= lowest - 1e-6).all() and (values <= highest + 1e-6).all(), f"{band}: valid values outside the range"
        expected = np.float32(sources[band]) * np.float32(meta.scale) + np.float32(meta.offset)
        assert np.abs(values - expected).max() < 1e-6, f"{band}: a fill or out-of-range DN was mixed into a valid pixel"
    assert np.isnan(refl[:, ~valid]).all()
    assert not valid[:, -BEYOND:].any() and valid[:, :-BEYOND].mean() > 0.4


def test_a_file_whose_nodata_disagrees_with_the_table_is_named_once(tmp_path, caplog):
    """A COG tagged nodata 0 for MCD43A4 (fill 32767): one warning naming the file, however many
    blocks read it; files tagged with the table's fill or untagged are not named."""
    cid = "modis-43A4-061"
    with serve_files(tmp_path) as files:
        item, _ = _item(cid, tmp_path, files.url, seed=3, declare="none", tag="none")
        red = COLLECTIONS[cid].asset_for("red")
        with rasterio.open(tmp_path / cid / f"{item.id}_{red}.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
            dst.nodata = 0
        with caplog.at_level(logging.WARNING, logger="stfuse"):
            cube = _load(cid, [item], chunks={"x": 32, "y": 32})  # 9 blocks read each file
    named = [r.getMessage() for r in caplog.records if "nodata" in r.getMessage()]
    assert len(named) == 1, named
    assert f"{item.id}_{red}.tif" in named[0] and "32767" in named[0] and "nodata 0" in named[0]
    assert np.nanmax(cube.reflectance.values) <= 3.2766


def _strip_nodata(catalog, collection: str) -> int:
    """Remove `nodata` from every item's raster:bands of ``collection`` and the nodata tag of its COGs."""
    changed = 0
    for item_path in (catalog / collection).rglob("*.json"):
        item = json.loads(item_path.read_text())
        if item.get("type") != "Feature":
            continue
        for asset in item["assets"].values():
            for band in asset.get("raster:bands", []):
                band.pop("nodata", None)
            with rasterio.open(item_path.parent / asset["href"], "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
                changed += dst.nodata is not None
                dst.nodata = None
        item_path.write_text(json.dumps(item))
    return changed


def test_fused_day_from_untagged_cogs_equals_the_tagged_run(mini_catalog, tmp_path):
    """The sample's MODIS COGs written again without any nodata (tags nor raster:bands): the
    fused day is the tagged run's, bit for bit, its pixels without coarse data are flagged, and
    the cube carries no one-day item_id/platform scalars (#28)."""
    import stfuse
    from stfuse.config import Query
    from stfuse.fusion.quality import QUALITY_BITS

    untagged = tmp_path / "untagged"
    shutil.copytree(mini_catalog, untagged)
    assert _strip_nodata(untagged, "modis-43A4-061") > 0
    day = "2023-06-16"  # the mini scene's MODIS image of that day holds fills over the grid
    tagged, plain = (stfuse.open_fused(Query(catalog=catalog, start=day, end=day, bands=BANDS)).compute()
                     for catalog in (mini_catalog, untagged))
    assert np.nanmax(tagged.reflectance.values) < 1.0
    assert np.nanmax(plain.reflectance.values) < 1.0, "fill (32767) resampled into valid coarse pixels"
    for var in ("reflectance", "sigma", "quality"):
        np.testing.assert_array_equal(plain[var].values, tagged[var].values)
    missing = (plain.quality.values[0] & QUALITY_BITS["coarse_missing"]) > 0
    assert 0 < missing.sum() < missing.size  # the fills reach the grid, flagged as no coarse data
    for ds in (tagged, plain):  # #28: no one day's coarse item as a scalar of the whole cube
        assert [n for n, c in ds.coords.items() if c.ndim == 0 and n != "spatial_ref"] == []
