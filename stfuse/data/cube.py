"""Load STAC items into chunked xarray cubes on one 30 m grid (odc-stac).

:func:`load_fine` returns Landsat-like reflectance and :func:`load_coarse` MODIS-like
reflectance, each an ``xarray.Dataset`` with

- ``reflectance`` (time, band, y, x) float32 surface reflectance, NaN where masked;
- ``valid`` (time, y, x) bool, True where every band is usable (QA passed, not fill);
- ``clear_fraction`` (time,) float32, fraction of valid pixels in the grid;
- coordinates ``platform`` and ``item_id`` along ``time``.

The fine grid is the Landsat native 30 m grid (pixel edges aligned with the items' own
``proj:transform``, so no half-pixel resample happens) in the items' UTM CRS, unless the
user gives ``crs``. Coarse data are reprojected to the same grid with **bilinear**
resampling for reflectance (coarse -> fine) and **nearest** for quality flags. Before any
resampling, reflectance DNs equal to the collection's fill or outside its valid range
(:class:`stfuse.data.sensors.Collection`) become the fill in the pixels read, whatever the item
or the file declares (:func:`_read_masked`), so no fill is ever mixed into a valid pixel. Items of the
same solar day are mosaicked (``groupby="solar_day"``). Everything stays lazy (dask) until
computed.

:func:`load_cubes` is the one path from a query to both cubes (search, load, optional Zarr
cache keyed by the query and the items found: :func:`cache_key`, :func:`write_cache`).
Read failures are raised as :mod:`stfuse.errors` types naming the item and asset; an asset
refused with HTTP 403 (an expired signed URL) is re-signed once with the provider's signer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pystac
import rasterio
import xarray as xr
from rasterio.errors import RasterioError
from shapely.geometry import shape
from shapely.ops import unary_union

from stfuse.data import catalog as cat
from stfuse.data.catalog import DEFAULT_SAMPLE, is_remote, item_time, redact, strip_query
from stfuse.data.sensors import BANDS, COARSE_COLLECTIONS, FINE_COLLECTIONS, MODIS_END, PROVIDERS, Collection, check_bands, collection, default_coarse
from stfuse.errors import CorruptFileError, CRSError, DataUnavailableError, InputError, OutputError, RemoteServiceError, StfuseError

DEFAULT_CHUNKS = {"x": 1024, "y": 1024}

log = logging.getLogger("stfuse")


def _proj(item: pystac.Item, key: str) -> Any:
    """Projection field ``key`` of ``item``: its properties, else the first asset carrying it
    (Earth Search puts ``proj:transform`` on assets, after a thumbnail that has none)."""
    if item.properties.get(key) is not None:
        return item.properties[key]
    for asset in item.assets.values():
        if asset.extra_fields.get(key) is not None:
            return asset.extra_fields[key]
    return None


def _item_crs(item: pystac.Item) -> Any:
    from odc.geo import CRS

    props = {k: _proj(item, k) for k in ("proj:code", "proj:epsg", "proj:wkt2")}
    if props.get("proj:code"):
        return CRS(props["proj:code"])
    if props.get("proj:epsg"):
        return CRS(f"EPSG:{props['proj:epsg']}")
    if props.get("proj:wkt2"):
        return CRS(props["proj:wkt2"])
    raise CRSError(f"item {item.id} has no proj:code, proj:epsg or proj:wkt2; stfuse needs each item's CRS")


def fine_geobox(items: Sequence[pystac.Item], *, bbox: tuple[float, float, float, float] | None = None, aoi: dict | None = None, crs: str | None = None, resolution: float = 30.0):
    """The 30 m output grid: the items' native Landsat grid clipped to ``bbox``/``aoi`` (lon/lat).

    Pixel edges are snapped to the first item's ``proj:transform`` so that native pixels are
    read without resampling. Without bbox/aoi the union footprint of the items is used.
    """
    from odc.geo import CRS, xy_
    from odc.geo.geobox import GeoBox
    from odc.geo.geom import Geometry
    from odc.geo.geom import box as geom_box

    first = items[0]
    native_crs = _item_crs(first)
    out_crs = CRS(crs) if crs else native_crs
    if aoi is not None:
        region = Geometry(aoi, "EPSG:4326")
    elif bbox is not None:
        region = geom_box(*bbox, "EPSG:4326")
    else:
        region = Geometry(unary_union([shape(i.geometry) for i in items if i.geometry]).__geo_interface__, "EPSG:4326")
    region = region.to_crs(out_crs)
    anchor: Any = "default"
    transform = _proj(first, "proj:transform")
    if transform and out_crs == native_crs:
        x0, y0 = transform[2], transform[5]
        anchor = xy_((x0 / resolution) % 1.0, (y0 / resolution) % 1.0)
    return GeoBox.from_bbox(region.boundingbox, out_crs, resolution=resolution, anchor=anchor)


GDAL_HTTP_OPTIONS = {
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
}
"""GDAL settings for remote COG reads: bounded retries with delay, a timeout, no directory listing."""


def _load(items: Sequence[pystac.Item], meta: Collection, bands: Sequence[str], geobox, *, chunks: dict[str, int] | None, resampling: str,
          resign: Any = None) -> xr.Dataset:
    import odc.stac

    band_assets = [meta.asset_for(b) for b in bands]
    qa_assets: list[str] = []
    if meta.qa is not None:
        qa_assets = [meta.qa_assets[b] for b in bands] if meta.qa_assets else [meta.qa.asset]
    assets = list(dict.fromkeys(band_assets + qa_assets))
    missing = [(i.id, a) for i in items for a in assets if a not in i.assets]
    if missing:
        item_id, asset = missing[0]
        item = next(i for i in items if i.id == item_id)
        if meta.hdf5_only and any("hdf5" in str(a.media_type or "") or str(a.href).split("?")[0].endswith(".h5")
                                  for a in item.assets.values()):
            raise InputError(
                f"item {item_id} of {meta.id} holds its bands in one HDF5 file (as LP DAAC ships {meta.id}), not in "
                f"one GeoTIFF per band; stfuse does not read VIIRS HDF5 yet: use a catalog of COGs (e.g. made with "
                f"stactools-viirs, assets {asset!r} ...) or --coarse-collection modis-43A4-061 before {MODIS_END}")
        raise InputError(f"item {item_id} of {meta.id} has no asset {asset!r}; it cannot be loaded as {meta.id}")
    resample = {a: resampling for a in band_assets} | {a: "nearest" for a in qa_assets}
    hrefs = [i.assets[a].href for i in items for a in assets]
    odc.stac.configure_rio(**GDAL_HTTP_OPTIONS, **(cat.earthdata_credentials() if cat.needs_earthdata(hrefs) else {}))
    names = {href: (i.id, a) for i in items for a in assets  # odc reads a local catalog's relative hrefs made absolute
             for href in {i.assets[a].href, i.assets[a].get_absolute_href() or i.assets[a].href}}
    fills = {a: (meta.nodata, *(meta.valid_range or (None, None))) for a in band_assets}
    return odc.stac.load(
        items,
        bands=assets,
        geobox=geobox,
        groupby="solar_day",
        chunks=chunks if chunks is not None else DEFAULT_CHUNKS,
        resampling=resample,
        fail_on_error=True,
        driver=_driver(names, resign, fills),
        stac_cfg=meta.load_config(),  # fill values for items that do not declare them
    )


def _driver(names: dict[str, tuple[str, str]], resign: Any, fills: dict[str, tuple[Any, Any, Any]] | None = None) -> "_Driver":
    return _Driver(names, resign, fills)


class _Driver:
    """odc-loader's rasterio driver whose reads name the item and asset when they fail, and
    re-sign a refused (HTTP 403) signed URL once with ``resign`` before giving up.

    Delegates everything but :meth:`open` to ``odc.loader``'s ``RioDriver``; module-level and
    picklable, so the graphs run on a distributed cluster too. ``fills``: asset key ->
    (fill, valid min, valid max) of the sensor table, applied to each source read before it is
    reprojected (:func:`_read_masked`).
    """

    def __init__(self, names: dict[str, tuple[str, str]], resign: Any, fills: dict[str, tuple[Any, Any, Any]] | None = None) -> None:
        from odc.loader._rio import RioDriver
        from odc.stac._mdtools import StacAuxReader

        self._rio = RioDriver(aux_reader=StacAuxReader())
        self.names, self.resign, self.fills = names, resign, fills or {}

    def new_load(self, geobox, *, chunks=None):
        return self._rio.new_load(geobox, chunks=chunks)

    def finalise_load(self, load_state):
        return self._rio.finalise_load(load_state)

    def capture_env(self):
        return self._rio.capture_env()

    def restore_env(self, env, load_state):
        return self._rio.restore_env(env, load_state)

    def open(self, src, ctx) -> "_Reader":
        return _Reader(src, self.names, self.resign, self.fills)

    @property
    def md_parser(self):
        return self._rio.md_parser

    @property
    def dask_reader(self):
        return self._rio.dask_reader

    @property
    def aux_reader(self):
        return self._rio.aux_reader


_FRESH: dict[str, str] = {}
"""Re-signed hrefs by their refused original (per process), so later blocks skip the 403."""


def _refused(text: str) -> bool:
    return bool(re.search(r"\b403\b|AuthenticationFailed|Forbidden|AccessDenied", text))


class _Reader:
    """Reads one band like odc-loader's ``RioReader``; failures become :mod:`stfuse.errors`
    types naming the item and asset; a 403 is answered by re-signing once, another failed
    HTTP read (e.g. a download cut short) by reading once more without GDAL's cache. A
    reflectance asset (one with ``fills``) is read by :func:`_read_masked`: the sensor table's
    fill and valid range apply to the source pixels before they are warped."""

    def __init__(self, src: Any, names: dict[str, tuple[str, str]], resign: Any, fills: dict[str, tuple[Any, Any, Any]] | None = None) -> None:
        self._src, self._names, self._resign, self._fills = src, names, resign, fills or {}

    def read(self, cfg, dst_geobox, *, dst=None, selection=None):
        from odc.loader._rio import rio_read

        src = self._src
        original = src.uri
        item_id, asset = self._names.get(original, ("?", "?"))
        where = f"item {item_id} asset {asset!r} ({redact(original)})"
        fills = self._fills.get(asset)
        read_once = rio_read if fills is None else functools.partial(_read_masked, fills=fills, where=where, key=original)
        if self._resign is not None and original in _FRESH:
            src = src.patch(uri=_FRESH[original])
        resigned = retried = False
        while True:
            try:
                if retried:  # GDAL keeps what it read of the failed download: read this file again without its cache
                    with rasterio.Env(CPL_VSIL_CURL_NON_CACHED="/vsicurl/" + src.uri):
                        return read_once(src, cfg, dst_geobox, dst=dst, selection=selection)
                return read_once(src, cfg, dst_geobox, dst=dst, selection=selection)
            except RasterioError as err:
                text = str(err)
            if _refused(text) and self._resign is not None and not resigned:  # an expired signed URL: sign again, once
                _FRESH[original] = self._resign(original, fresh=True)
                src, resigned = src.patch(uri=_FRESH[original]), True
            elif _refused(text) and resigned:
                raise RemoteServiceError(
                    f"the asset server refused {where} (HTTP 403) even after re-signing its URL; "
                    "check your access to the data (e.g. a Planetary Computer subscription key) and try again"
                ) from None
            elif _transient(text, original) and not retried:  # e.g. a download cut short: GDAL does not retry those
                log.warning("reading %s failed (%s); retrying once", where, redact(text))
                time.sleep(READ_RETRY_DELAY_S)
                retried = True
            else:
                raise _classify(text, where) from None


READ_RETRY_DELAY_S = 1.0
"""Wait before the one retry of a remote read that failed for a reason other than 403/404."""

READ_PAD_PX = 8
"""Source pixels :func:`_read_masked` reads beyond odc-geo's region of interest, so that the warp
of its in-memory copy sees every pixel the warp of the file would (bilinear needs 1, cubic 2)."""

_NODATA_WARNED: set[str] = set()
"""Files (and what declared it) already warned about a nodata other than the table's, per process."""
_NODATA_LOCK = threading.Lock()


def _same_value(a: Any, b: Any) -> bool:
    a, b = float(a), float(b)
    return a == b or (np.isnan(a) and np.isnan(b))


def _warn_nodata(key: str, where: str, what: str, declared: Any, fill: Any) -> None:
    """Warn once per file (per process, not per block read) that ``what`` (the file's GeoTIFF tag,
    the item's ``raster:bands``) declares a nodata other than the sensor table's ``fill``."""
    if declared is None or _same_value(declared, fill):
        return
    key = f"{strip_query(key)} {what}"
    with _NODATA_LOCK:
        if key in _NODATA_WARNED:
            return
        _NODATA_WARNED.add(key)
    log.warning("%s: %s declares nodata %s but the sensor table's fill is %s; the table's fill and valid range "
                "apply (and %s is masked too)", where, what, declared, fill, declared)


def _window_pixels(rdr: Any, band: int, rr: Any) -> tuple[np.ndarray, Any] | None:
    """The pixels of ``band`` in odc-geo's region of interest ``rr.roi_src`` plus :data:`READ_PAD_PX`
    (clipped to the file), and their transform; None when the file does not reach the block."""
    from odc.geo.roi import roi_is_empty
    from rasterio.windows import Window

    if roi_is_empty(rr.roi_src) or roi_is_empty(rr.roi_dst):
        return None
    rows, cols = rr.roi_src
    window = Window.from_slices((max((rows.start or 0) - READ_PAD_PX, 0), min(rows.stop + READ_PAD_PX, rdr.height)),
                                (max((cols.start or 0) - READ_PAD_PX, 0), min(cols.stop + READ_PAD_PX, rdr.width)))
    return rdr.read(band, window=window), rdr.window_transform(window)


def _read_masked(src: Any, cfg: Any, dst_geobox: Any, dst: Any = None, selection: Any = None, *,
                 fills: tuple[Any, Any, Any], where: str, key: str) -> Any:
    """odc-loader's ``rio_read`` of one reflectance band, with the sensor table's fill applied to
    the source pixels before any reprojection or resampling.

    ``fills``: (fill, valid min, valid max) of :class:`stfuse.data.sensors.Collection`. The source
    pixels the warp needs (odc-geo's region of interest plus :data:`READ_PAD_PX`, from the overview
    odc-loader would pick) are read once; the fill, DNs outside the valid range and the nodata that
    the file or the item declares all become the table's fill; odc-loader's read (paste or warp)
    then runs on that in-memory copy with the fill as its source nodata. So bilinear/cubic never
    mix a fill into a valid pixel, whether or not the file carries a nodata tag: an untagged file
    reads as a tagged one, bit for bit. A file or item whose nodata differs from the table is
    named in a warning, once.
    """
    from odc.loader._reader import pick_overview
    from odc.loader._rio import _do_read, _reproject_info_from_rio, rio_read

    fill, low, high = fills
    declared_by_item = cfg.fill_value
    cfg = cfg.patch(src_nodata_override=fill)
    if selection is not None or not isinstance(src.band, int) or (dst is not None and dst.ndim != 2):  # not one 2-D band: the fill only
        return rio_read(src, cfg, dst_geobox, dst=dst, selection=selection)
    ttol = 0.9 if cfg.nearest else 0.05  # as odc-loader's reader
    with rasterio.open(src.uri, "r", sharing=False) as rdr:
        declared = rdr.nodatavals[src.band - 1]
        rr = _reproject_info_from_rio(rdr, dst_geobox, ttol=ttol)
        level = pick_overview(rr.read_shrink, rdr.overviews(src.band)) if cfg.use_overviews and rr.read_shrink > 1 else None
        part = _window_pixels(rdr, src.band, rr) if level is None else None
        crs = rdr.crs
    if level is not None:
        with rasterio.open(src.uri, "r", sharing=False, overview_level=level) as ovr:
            part = _window_pixels(ovr, src.band, _reproject_info_from_rio(ovr, dst_geobox, ttol=ttol))
    _warn_nodata(key, where, "the file", declared, fill)
    _warn_nodata(key, where, "the item's raster:bands", declared_by_item, fill)
    if part is None:  # the file does not reach this block of the grid: nothing to mask
        return rio_read(src, cfg, dst_geobox, dst=dst)
    data, transform = part
    bad = np.isnan(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    for other in {fill, declared, declared_by_item} - {None}:
        if not np.isnan(float(other)):
            bad |= data == other
    if low is not None:
        bad |= data < low
    if high is not None:
        bad |= data > high
    with np.errstate(invalid="ignore", over="ignore"):
        if not _same_value(np.array(fill).astype(data.dtype), fill):  # the file's type cannot hold the fill
            data = data.astype("float64")
    data = np.where(bad, np.array(fill).astype(data.dtype), data)
    # an in-memory (GDAL MEM) dataset: what odc-loader's read does to a file, it does to this copy
    with rasterio.open("stfuse-masked", "w+", driver="MEM", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype.name, crs=crs, transform=transform, nodata=fill) as copy:
        copy.write(data, 1)
        rr = _reproject_info_from_rio(copy, dst_geobox, ttol=ttol)
        return _do_read(rasterio.band(copy, 1), cfg, dst_geobox, rr, dst=dst)


def _transient(text: str, uri: str) -> bool:
    """A failed read of a remote asset that may succeed when repeated (not refused, not missing)."""
    return uri.startswith(("http://", "https://")) and not _refused(text) and not _missing(text)


def _missing(text: str) -> bool:
    return bool(re.search(r"\b404\b", text)) or "No such file" in text or "does not exist" in text


def _classify(text: str, where: str) -> Exception:
    """The :mod:`stfuse.errors` exception for a raster read failure ``text`` at ``where``."""
    text = redact(text)
    if where and where not in text:
        text = f"{where}: {text}"
    remote = "http" in text.lower() or "curl" in text.lower()
    if _refused(text):
        return RemoteServiceError(
            f"the asset server refused access (HTTP 403) to {text}; a signed URL may have expired: "
            "search again for fresh URLs, or check your access to the data"
        )
    if _missing(text):
        return DataUnavailableError(f"an asset is missing: {text}; the catalog points at a file that is not there")
    if remote:
        return RemoteServiceError(
            f"reading a remote asset failed after retries (the download failed or was cut short): {text}; try again later"
        )
    return CorruptFileError(f"an asset could not be read (corrupt or truncated?): {text}")


def solar_day(when: Any, lon: float | None) -> np.datetime64:
    """The local solar date (``datetime64[D]``) of UTC time(s) ``when`` at longitude ``lon``
    (degrees east; None: the UTC date). A Landsat scene at 23:46 UTC east of ~145 E was seen on
    the next local day, the day its daily MODIS image carries."""
    when = np.asarray(when, dtype="datetime64[ns]")
    if lon is not None:
        when = when + np.timedelta64(int(round(lon / 15.0 * 3600e9)), "ns")
    return when.astype("datetime64[D]")


def _geobox_lon(geobox: Any) -> float:
    """Longitude (degrees east) of a grid's centre."""
    return float(geobox.extent.centroid.to_crs("EPSG:4326").coords[0][0])


def _day_scaling(raw: xr.Dataset, items: Sequence[pystac.Item], meta: Collection, bands: Sequence[str],
                 lon: float | None) -> dict[str, tuple[xr.DataArray, xr.DataArray]]:
    """Each band's (scale, offset) along ``raw.time`` from the items of each day
    (:meth:`Collection.scale_offset`: Sentinel-2 baseline 04.00 items carry a -1000 DN offset, older
    ones none). Items of one day that disagree are named in a warning; the first one's apply."""
    days = raw.time.values.astype("datetime64[D]")
    by_day: dict[Any, list[pystac.Item]] = {}
    for item in items:
        by_day.setdefault(solar_day(np.datetime64(item_time(item).replace(tzinfo=None), "ns"), lon)[()], []).append(item)
    out = {}
    for band in bands:
        pairs = []
        for day in days:
            found = [meta.scale_offset(i, band) for i in by_day.get(day, [])] or [(meta.scale, meta.offset)]
            if len(set(found)) > 1:
                log.warning("%s items of %s declare different scale/offset for %s (%s); the first one's applies to the day",
                            meta.id, day, band, sorted(set(found)))
            pairs.append(found[0])
        arr = np.array(pairs, dtype="float32").reshape(len(days), 2)
        out[band] = (xr.DataArray(arr[:, 0], dims="time", coords={"time": raw.time}),
                     xr.DataArray(arr[:, 1], dims="time", coords={"time": raw.time}))
    return out


def _harmonise(raw: xr.Dataset, items: Sequence[pystac.Item], meta: Collection, bands: Sequence[str],
               lon: float | None = None) -> xr.Dataset:
    """DNs + QA -> float32 reflectance (NaN masked), valid mask and clear fraction.

    ``time`` becomes the acquisition day at 00:00, so days select by date: the local solar day
    at longitude ``lon`` (fine images), or the UTC date (None: daily products are dated so).
    """
    raw = raw.assign_coords(time=solar_day(raw.time.values, lon).astype("datetime64[ns]"))
    layers = []
    bad_any = None
    per_day = _day_scaling(raw, items, meta, bands, lon) if meta.item_offsets else {}
    for band in bands:
        dn = raw[meta.asset_for(band)]
        missing = meta.invalid(dn)  # the table's fill, outside the valid range (e.g. a cubic overshoot)
        if dn.attrs.get("nodata") is not None and not _same_value(dn.attrs["nodata"], meta.nodata):
            missing = missing | (dn == dn.attrs["nodata"])  # the fill an item declared: what pixels no item covers hold
        scale, offset = per_day.get(band, (np.float32(meta.scale), np.float32(meta.offset)))
        refl = (dn.astype("float32") * scale + offset).where(~missing)
        if meta.qa is not None:
            qa_name = meta.qa_assets[band] if meta.qa_assets else meta.qa.asset
            bad = xr.apply_ufunc(meta.qa.bad_mask, raw[qa_name], dask="parallelized", output_dtypes=[bool])
            refl = refl.where(~bad)
        layers.append(refl)
        band_bad = refl.isnull()
        bad_any = band_bad if bad_any is None else (bad_any | band_bad)
    reflectance = xr.concat(layers, dim=xr.Variable("band", list(bands))).transpose("time", "band", "y", "x")
    reflectance = reflectance.where(~bad_any)
    valid = ~bad_any

    by_day: dict[Any, list[pystac.Item]] = {}
    for item in items:
        by_day.setdefault(solar_day(np.datetime64(item_time(item).replace(tzinfo=None), "ns"), lon)[()], []).append(item)
    days = raw.time.values.astype("datetime64[D]")
    platforms = [",".join(sorted({str(i.properties.get("platform", "")) for i in by_day.get(d, [])})) for d in days]
    ids = [",".join(i.id for i in by_day.get(d, [])) for d in days]
    ds = xr.Dataset(
        {
            "reflectance": reflectance.astype("float32"),
            "valid": valid,
            "clear_fraction": valid.mean(("y", "x")).astype("float32"),
        }
    )
    ds = ds.assign_coords(platform=("time", platforms), item_id=("time", ids))
    ds.attrs.update(collection=meta.id, units="reflectance (0..1)")
    return ds


def load_fine(items: Sequence[pystac.Item], *, bands: Sequence[str] = BANDS, geobox=None, bbox=None, aoi=None, crs: str | None = None,
              chunks: dict[str, int] | None = None, resign: Any = None) -> xr.Dataset:
    """Lazy fine (Landsat) cube on the 30 m grid; see module docstring for the variables.

    ``resign``: the provider's signer (:class:`stfuse.data.catalog.Signer`), used to re-sign an
    asset URL the server refuses (HTTP 403, expired token) once before failing.
    """
    if not items:
        raise DataUnavailableError("no fine (Landsat) items to load")
    meta = collection(items[0].collection_id or "landsat-c2-l2")
    items = [meta.normalise(i) for i in items]  # another provider's asset keys (Earth Search "red" for "B04")
    if geobox is None:
        geobox = fine_geobox(items, bbox=bbox, aoi=aoi, crs=crs)
    raw = _load(items, meta, bands, geobox, chunks=chunks, resampling=meta.fine_resampling, resign=resign)
    return _harmonise(raw, items, meta, bands, lon=_geobox_lon(geobox))  # dated by the local solar day


def load_coarse(items: Sequence[pystac.Item], *, geobox, bands: Sequence[str] = BANDS, chunks: dict[str, int] | None = None, resampling: str = "bilinear",
                resign: Any = None) -> xr.Dataset:
    """Lazy coarse (MODIS) cube reprojected to ``geobox`` (bilinear by default; QA nearest)."""
    if not items:
        raise DataUnavailableError("no coarse (MODIS) items to load")
    if resampling not in ("bilinear", "cubic", "average", "nearest"):
        raise InputError(f"unknown resampling {resampling!r}; use bilinear, cubic, average or nearest")
    meta = collection(items[0].collection_id or "modis-43A4-061")
    items = [meta.normalise(i) for i in items]
    raw = _load(items, meta, bands, geobox, chunks=chunks, resampling=resampling, resign=resign)
    return _harmonise(raw, items, meta, bands)


class _RedactReaderLog(logging.Filter):
    """Strips signed-URL tokens from odc-loader's read-failure log lines, and drops its 403
    lines: :class:`_Reader` re-signs those or reports them itself, naming the item."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _refused(text):
            return False
        record.msg, record.args = redact(text), ()
        return True


if not any(isinstance(f, _RedactReaderLog) for f in logging.getLogger("odc.loader._rio").filters):
    logging.getLogger("odc.loader._rio").addFilter(_RedactReaderLog())


class _FailedURLs(logging.Handler):
    """Collects the asset URLs odc-stac's reader reports as failed (its exceptions omit them)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.urls: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r"Failed to load (\S+)", record.getMessage())
        if match:
            self.urls.append(match.group(1).rstrip(":0123456789").rstrip(":"))


@contextlib.contextmanager
def read_errors() -> Iterator[None]:
    """Turn raster read failures raised while computing cubes into :mod:`stfuse.errors` types.

    Messages name the failing asset's URL or path (which holds the item id and asset key);
    signed-URL tokens are stripped from them.
    """
    failed = _FailedURLs()
    reader_log = logging.getLogger("odc.loader._rio")
    reader_log.addHandler(failed)
    try:
        yield
    except StfuseError:
        raise
    except (RasterioError, OSError, RuntimeError) as err:
        where = redact(failed.urls[-1]) if failed.urls else ""
        raise _classify(str(err), where) from None
    finally:
        reader_log.removeHandler(failed)


# --------------------------------------------------------------------------- query -> cubes


@dataclass(frozen=True)
class Cubes:
    """Fine and coarse cubes of one catalog query, on the fine 30 m grid (lazy, dask-backed).

    ``query``: what was asked (dates, area); ``searched``: the wider query sent (``margin_days``
    more on each side, for pairs outside the period); ``source``: the catalog as a label;
    ``cache_path``: the cache entry used or written (None without a cache); ``from_cache``:
    True when the cubes were read from it instead of the catalog's assets.
    """

    fine: xr.Dataset
    coarse: xr.Dataset
    query: Any
    searched: Any
    source: str
    fine_items: list[pystac.Item]
    coarse_items: list[pystac.Item]
    cache_path: Path | None = None
    from_cache: bool = False
    fine_collection: str = ""
    """The fine collection searched (stfuse's id, :mod:`stfuse.data.sensors`)."""
    coarse_collection: str = ""
    """The coarse collection searched: the one asked for, else MCD43A4 up to the end of MODIS, VIIRS NBAR after."""

    def fine_clear(self) -> dict[Any, float]:
        """Clear fraction (0..1) of each fine day, ``datetime.date`` -> float; reads the fine images."""
        with read_errors():
            clear = self.fine.clear_fraction.values
        return {np.datetime64(t, "D").item(): float(c) for t, c in zip(self.fine.time.values, clear)}

    def coarse_days(self) -> list[Any]:
        """The coarse (MODIS) days, ``datetime.date``, in time order."""
        return [np.datetime64(t, "D").item() for t in self.coarse.time.values]


def load_cubes(
    *,
    catalog: str | os.PathLike[str] | None = None,
    bbox: Sequence[float] | None = None,
    aoi: dict[str, Any] | str | os.PathLike[str] | None = None,
    start: Any = None,
    end: Any = None,
    bands: Sequence[str] | None = None,
    crs: str | None = None,
    margin_days: int = 48,
    cache: str | os.PathLike[str] | None = None,
    chunks: dict[str, int] | None = None,
    coarse_collection: str | None = None,
    fine_collection: str | None = None,
) -> Cubes:
    """Query -> search -> lazy fine + coarse cubes on the fine grid: the one path every command uses.

    ``catalog``: static catalog path, STAC API URL or provider name (default: sample_scenes).
    Dates are strict ISO 8601 and ordered; ``bbox`` (lon/lat) or ``aoi`` (GeoJSON dict or
    file), not both. Fine (``landsat-c2-l2``) and coarse (``coarse_collection``: ``modis-43A4-061``
    NBAR, the default, or ``modis-09GA-061`` daily surface reflectance) items are searched ``margin_days`` beyond the dates. ``cache``: a
    folder where the loaded cubes are kept as Zarr, keyed by the query and the items found
    (ids and ``updated``/datetimes), so a re-run reads no remote asset (see :func:`cache_key`).
    """
    bands = check_bands(bands or BANDS)
    start_date = cat.parse_date(start, name="start") if start is not None else None
    end_date = cat.parse_date(end, name="end") if end is not None else None
    if start_date and end_date and end_date < start_date:
        raise InputError(f"the date range is reversed: start {start_date} is after end {end_date}")
    if bbox is not None and aoi is not None:
        raise InputError("give a bbox or an aoi, not both")
    aoi_geom = cat.read_aoi(aoi) if isinstance(aoi, (str, os.PathLike)) else aoi
    query = cat.SearchQuery(start=start_date, end=end_date, bbox=cat.check_bbox(bbox) if bbox is not None else None, aoi=aoi_geom)
    provider = PROVIDERS.get(str(catalog)) if catalog is not None else None
    fine_id = fine_collection or (str(provider["fine"]) if provider else "landsat-c2-l2")
    if fine_id not in FINE_COLLECTIONS:
        raise InputError(f"{fine_id!r} is not a fine collection stfuse can use; use one of {', '.join(FINE_COLLECTIONS)}")
    by_date = default_coarse(start_date, end_date, bands)
    after_modis = (end_date or start_date) is not None and (end_date or start_date) > MODIS_END
    coarse_id = coarse_collection or (by_date if after_modis or not (provider and provider["coarse"]) else str(provider["coarse"]))
    if coarse_id not in COARSE_COLLECTIONS:
        raise InputError(f"{coarse_id!r} is not a coarse collection stfuse can use; use one of {', '.join(COARSE_COLLECTIONS)}")
    if coarse_collection is None and after_modis:
        log.info("coarse collection %s: the query reaches %s, after the end of MODIS NBAR (%s); VIIRS NBAR instead of "
                 "MCD43A4 (--coarse-collection to choose)", coarse_id, end_date or start_date, MODIS_END)
    margin = dt.timedelta(days=margin_days)
    wide = cat.SearchQuery(start=start_date - margin if start_date else None, end=end_date + margin if end_date else None,
                     bbox=query.bbox, aoi=query.aoi)
    found = cat.search(catalog, wide, [fine_id, coarse_id])
    fine_items = cat.require_items(found, fine_id, catalog, query, searched=wide)
    coarse_items = cat.require_items(found, coarse_id, catalog, query, searched=wide)
    source = str(catalog) if catalog is not None else "sample_scenes"

    entry = None
    if cache is not None:
        key = cache_key(source=_source_key(catalog), query=wide, bands=bands, crs=crs,
                        items={fine_id: fine_items, coarse_id: coarse_items})
        entry = Path(cache).expanduser() / key
        if (entry / COMPLETE).exists():
            fine, coarse = open_cache(entry)
            log.info("read the cubes from the cache %s", entry)
            return Cubes(fine, coarse, query, wide, source, fine_items, coarse_items, entry, True, fine_id, coarse_id)

    resign = cat.signer_for(catalog)
    fine = load_fine(fine_items, bands=bands, bbox=query.bbox, aoi=query.aoi, crs=crs, chunks=chunks, resign=resign)
    if fine.sizes["x"] == 0 or fine.sizes["y"] == 0:
        raise DataUnavailableError("the area does not overlap the fine images; check --bbox / --aoi")
    coarse = load_coarse(coarse_items, geobox=fine.odc.geobox, bands=bands, chunks=chunks, resign=resign)
    if entry is not None:
        write_cache(entry, fine, coarse, about={"source": cat.redact(source), "fine": fine_id, "coarse": coarse_id,
                                                "bands": list(bands), "crs": crs, "query": _query_dict(wide)})
        fine, coarse = open_cache(entry)
    return Cubes(fine, coarse, query, wide, source, fine_items, coarse_items, entry, False, fine_id, coarse_id)


# --------------------------------------------------------------------------- cache

CACHE_VERSION = 3
"""Bumped when the cached layout or the loading changes, so old entries are not reused
(3: fills and out-of-range DNs masked before resampling, #31)."""

COMPLETE = "complete.json"
"""Written last in a cache entry: an entry without it is never read."""

def _source_key(catalog: Any) -> str:
    """The catalog as it identifies data: provider name, URL without query, or absolute path."""
    if catalog is None:
        return str(DEFAULT_SAMPLE)
    if is_remote(catalog):
        return strip_query(str(catalog))
    path = Path(catalog).resolve()
    return str(path / "catalog.json" if path.is_dir() else path)


def _query_dict(query: Any) -> dict[str, Any]:
    return {"start": query.start.isoformat() if query.start else None, "end": query.end.isoformat() if query.end else None,
            "bbox": list(query.bbox) if query.bbox else None, "aoi": query.aoi}


def _item_stamp(item: pystac.Item) -> list[str]:
    """What identifies an item's content: id, ``updated`` (or ``created``) and its datetimes."""
    p = item.properties
    return [item.id, str(p.get("updated") or p.get("created") or ""), str(p.get("datetime") or ""),
            str(p.get("start_datetime") or ""), str(p.get("end_datetime") or "")]


def cache_key(*, source: str, query: Any, bands: Sequence[str], crs: str | None, items: dict[str, Sequence[pystac.Item]]) -> str:
    """Hex digest naming a cache entry: catalog, collections, area, dates, bands, CRS, and the
    items found with their ``updated``/datetimes (a changed catalog gives a new key)."""
    doc = {
        "version": CACHE_VERSION,
        "source": source,
        "query": _query_dict(query),
        "bands": list(bands),
        "crs": crs,
        "items": {cid: [_item_stamp(i) for i in sorted(found, key=lambda i: i.id)] for cid, found in sorted(items.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _to_store(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    if "reflectance" in ds and ds.reflectance.chunks is not None:
        ds["reflectance"] = ds.reflectance.chunk({"band": -1})
    for name in ("platform", "item_id"):
        ds.coords[name] = ds[name].astype(str)
    for var in ds.variables.values():
        var.encoding = {}
    return ds


def write_cache(entry: str | os.PathLike[str], fine: xr.Dataset, coarse: xr.Dataset, *, about: dict[str, Any]) -> Path:
    """Compute ``fine`` and ``coarse`` into a new cache entry (Zarr stores), atomically.

    Written in a temporary folder beside ``entry`` and renamed into place only when complete
    (:data:`COMPLETE` last), so an interrupted run never leaves an entry that looks complete;
    the temporary folder is removed on any error. If another run wrote the same entry
    meanwhile, that one is kept. Reads raise :mod:`stfuse.errors` types (see :func:`read_errors`).
    """
    entry = Path(entry)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
    except OSError as err:
        raise OutputError(f"cannot create the cache folder {entry.parent}: {err.strerror or err}; choose another --cache") from None
    try:
        with read_errors():
            _to_store(fine).to_zarr(tmp / "fine.zarr", mode="w", consolidated=True, zarr_format=2)
            _to_store(coarse).to_zarr(tmp / "coarse.zarr", mode="w", consolidated=True, zarr_format=2)
        (tmp / COMPLETE).write_text(json.dumps({**about, "version": CACHE_VERSION}, indent=1, default=str))
        if entry.exists() and not (entry / COMPLETE).exists():
            shutil.rmtree(entry)  # an incomplete leftover (made by hand: stfuse never renames one into place)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / COMPLETE).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent run finished first: keep its entry
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write the cache entry {entry}: {err.strerror or err}; check the space and permissions of --cache") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def open_cache(entry: str | os.PathLike[str]) -> tuple[xr.Dataset, xr.Dataset]:
    """The (fine, coarse) cubes of a complete cache entry, lazily (dask) from Zarr."""
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor: geobox of the cached grid)

    entry = Path(entry)
    cubes = []
    for name in ("fine.zarr", "coarse.zarr"):
        ds = xr.open_zarr(entry / name, consolidated=True)
        cubes.append(ds.assign_coords(platform=ds.platform.load(), item_id=ds.item_id.load()))
    return cubes[0], cubes[1]
