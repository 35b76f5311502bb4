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
resampling for reflectance (coarse -> fine) and **nearest** for quality flags. Items of the
same solar day are mosaicked (``groupby="solar_day"``). Everything stays lazy (dask) until
computed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, Iterator, Sequence

import numpy as np
import pystac
import xarray as xr

from .errors import CRSError, DataUnavailableError, InputError
from .sensors import BANDS, Collection, collection

DEFAULT_CHUNKS = {"x": 1024, "y": 1024}


def _item_crs(item: pystac.Item) -> Any:
    from odc.geo import CRS

    props = {**item.properties, **next(iter(item.assets.values())).extra_fields}
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
    from odc.geo.geom import Geometry, box as geom_box

    first = items[0]
    native_crs = _item_crs(first)
    out_crs = CRS(crs) if crs else native_crs
    if aoi is not None:
        region = Geometry(aoi, "EPSG:4326")
    elif bbox is not None:
        region = geom_box(*bbox, "EPSG:4326")
    else:
        from shapely.geometry import shape
        from shapely.ops import unary_union

        region = Geometry(unary_union([shape(i.geometry) for i in items if i.geometry]).__geo_interface__, "EPSG:4326")
    region = region.to_crs(out_crs)
    anchor: Any = "default"
    transform = first.properties.get("proj:transform") or next(iter(first.assets.values())).extra_fields.get("proj:transform")
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


def _load(items: Sequence[pystac.Item], meta: Collection, bands: Sequence[str], geobox, *, chunks: dict[str, int] | None, resampling: str) -> xr.Dataset:
    import odc.stac

    band_assets = [meta.asset_for(b) for b in bands]
    qa_assets: list[str] = []
    if meta.qa is not None:
        qa_assets = [meta.qa_assets[b] for b in bands] if meta.qa_assets else [meta.qa.asset]
    assets = list(dict.fromkeys(band_assets + qa_assets))
    missing = [(i.id, a) for i in items for a in assets if a not in i.assets]
    if missing:
        item_id, asset = missing[0]
        raise InputError(f"item {item_id} of {meta.id} has no asset {asset!r}; it cannot be loaded as {meta.id}")
    resample = {a: resampling for a in band_assets} | {a: "nearest" for a in qa_assets}
    odc.stac.configure_rio(**GDAL_HTTP_OPTIONS)
    return odc.stac.load(
        items,
        bands=assets,
        geobox=geobox,
        groupby="solar_day",
        chunks=chunks if chunks is not None else DEFAULT_CHUNKS,
        resampling=resample,
        fail_on_error=True,
    )


def _harmonise(raw: xr.Dataset, items: Sequence[pystac.Item], meta: Collection, bands: Sequence[str]) -> xr.Dataset:
    """DNs + QA -> float32 reflectance (NaN masked), valid mask and clear fraction.

    ``time`` becomes the acquisition (solar) day at 00:00, so days select by date.
    """
    raw = raw.assign_coords(time=raw.time.values.astype("datetime64[D]").astype("datetime64[ns]"))
    layers = []
    bad_any = None
    for band in bands:
        dn = raw[meta.asset_for(band)]
        refl = (dn.astype("float32") * np.float32(meta.scale) + np.float32(meta.offset)).where(dn != meta.nodata)
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
        by_day.setdefault(np.datetime64(item.datetime.date(), "D"), []).append(item)
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


def load_fine(items: Sequence[pystac.Item], *, bands: Sequence[str] = BANDS, geobox=None, bbox=None, aoi=None, crs: str | None = None, chunks: dict[str, int] | None = None) -> xr.Dataset:
    """Lazy fine (Landsat) cube on the 30 m grid; see module docstring for the variables."""
    if not items:
        raise DataUnavailableError("no fine (Landsat) items to load")
    meta = collection(items[0].collection_id or "landsat-c2-l2")
    if geobox is None:
        geobox = fine_geobox(items, bbox=bbox, aoi=aoi, crs=crs)
    raw = _load(items, meta, bands, geobox, chunks=chunks, resampling="nearest")
    return _harmonise(raw, items, meta, bands)


def load_coarse(items: Sequence[pystac.Item], *, geobox, bands: Sequence[str] = BANDS, chunks: dict[str, int] | None = None, resampling: str = "bilinear") -> xr.Dataset:
    """Lazy coarse (MODIS) cube reprojected to ``geobox`` (bilinear by default; QA nearest)."""
    if not items:
        raise DataUnavailableError("no coarse (MODIS) items to load")
    if resampling not in ("bilinear", "cubic", "average", "nearest"):
        raise InputError(f"unknown resampling {resampling!r}; use bilinear, cubic, average or nearest")
    meta = collection(items[0].collection_id or "modis-43A4-061")
    raw = _load(items, meta, bands, geobox, chunks=chunks, resampling=resampling)
    return _harmonise(raw, items, meta, bands)


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
    from rasterio.errors import RasterioError

    from .catalog import redact
    from .errors import CorruptFileError, RemoteServiceError, StfuseError

    failed = _FailedURLs()
    reader_log = logging.getLogger("odc.loader._rio")
    reader_log.addHandler(failed)
    try:
        yield
    except StfuseError:
        raise
    except (RasterioError, OSError, RuntimeError) as err:
        where = f" ({redact(failed.urls[-1])})" if failed.urls else ""
        text = redact(str(err)) + where
        remote = "http" in text.lower() or "curl" in text.lower()
        if "404" in text or "No such file" in text or "does not exist" in text:
            raise DataUnavailableError(f"an asset is missing: {text}; the catalog points at a file that is not there") from None
        if remote:
            raise RemoteServiceError(f"reading a remote asset failed after retries: {text}") from None
        raise CorruptFileError(f"an asset could not be read (corrupt or truncated?): {text}") from None
    finally:
        reader_log.removeHandler(failed)
