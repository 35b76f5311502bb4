"""Raster and metadata I/O at the edges: read reflectance GeoTIFFs, write COGs and STAC items.

Inside stfuse, images are ``xarray.DataArray`` with dims ``(band, y, x)``, float32 surface
reflectance (0..1) and NaN where missing; CRS and transform ride along as the
attributes ``crs_wkt`` and ``transform``. Integer scaling happens only here.

Writes are atomic: every file is written under a temporary name in the destination folder
and renamed into place only once complete, so an interrupted run never leaves a file that
looks finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import pystac
import rasterio
import rasterio.shutil
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.warp import transform_geom

from stfuse.errors import (
    CorruptFileError,
    CRSError,
    GridMismatchError,
    InputError,
    MissingFileError,
    OutputError,
)

DEFAULT_INTEGER_SCALE = 1e-4
"""Integer rasters without a band scale are read as reflectance x 10000."""


def read_reflectance(path: str | os.PathLike[str], *, bands: Sequence[str] | None = None) -> xr.DataArray:
    """Read a GeoTIFF as float32 reflectance, dims ``(band, y, x)``, NaN where nodata.

    Integer data are multiplied by the band scale (and offset) if the file sets one,
    else by 1e-4. ``bands`` selects bands by description (e.g. ``["red", "nir08"]``);
    files without descriptions name their bands ``b1, b2, ...``.

    Raises :class:`MissingFileError`, :class:`CorruptFileError`, :class:`InputError`.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"input file not found: {path}")
    try:
        with rasterio.open(path) as src:
            raw = src.read()
            nodata = src.nodata
            integer = np.issubdtype(np.dtype(src.dtypes[0]), np.integer)
            scales = np.asarray([s if s not in (None, 1.0) else (DEFAULT_INTEGER_SCALE if integer else 1.0) for s in src.scales])
            offsets = np.asarray([o or 0.0 for o in src.offsets])
            names = [d if d else f"b{i + 1}" for i, d in enumerate(src.descriptions)]
            crs = src.crs
            transform = src.transform
            tags = src.tags()
    except RasterioIOError as err:
        raise CorruptFileError(f"cannot read {path} as a raster ({err}); is the file complete?") from None
    data = raw.astype(np.float32) * scales[:, None, None].astype(np.float32) + offsets[:, None, None].astype(np.float32)
    missing = ~np.isfinite(data)
    if nodata is not None and not np.isnan(nodata):
        missing |= raw == nodata
    data[missing] = np.nan
    array = _to_dataarray(data, names, crs, transform, name=path.stem)
    array.attrs.update(source=str(path), tags=tags)
    if bands is not None:
        unknown = [b for b in bands if b not in names]
        if unknown:
            raise InputError(f"band {unknown[0]!r} not in {path} (it has {', '.join(names)})")
        array = array.sel(band=list(bands))
    return array


def _to_dataarray(data: np.ndarray, band_names: Sequence[str], crs: CRS | None, transform: Affine, *, name: str) -> xr.DataArray:
    """Wrap a (B, H, W) array with pixel-centre x/y coordinates and CRS/transform."""
    _, height, width = data.shape
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    array = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": list(band_names), "y": ys, "x": xs}, name=name)
    array.attrs["transform"] = tuple(transform)[:6]
    array.attrs["crs_wkt"] = crs.to_wkt() if crs is not None else None
    return array


def crs_of(array: xr.DataArray) -> CRS | None:
    """The CRS of an array read by :func:`read_reflectance` (None if the file had none)."""
    wkt = array.attrs.get("crs_wkt")
    return CRS.from_wkt(wkt) if wkt else None


def transform_of(array: xr.DataArray) -> Affine:
    """The affine transform of an array read by :func:`read_reflectance`."""
    return Affine(*array.attrs["transform"])


def check_same_grid(arrays: Mapping[str, xr.DataArray]) -> None:
    """Raise unless all arrays share shape, transform and CRS (all set or all absent).

    ``arrays`` maps a label (e.g. the file name) to the array, for messages.
    """
    labels = list(arrays)
    first = labels[0]
    ref = arrays[first]
    ref_crs = crs_of(ref)
    for label in labels[1:]:
        other = arrays[label]
        if other.sizes["band"] != ref.sizes["band"]:
            raise GridMismatchError(
                f"{label} has {other.sizes['band']} bands but {first} has {ref.sizes['band']}; give all inputs the same bands"
            )
        if (other.sizes["y"], other.sizes["x"]) != (ref.sizes["y"], ref.sizes["x"]):
            raise GridMismatchError(
                f"{label} is {other.sizes['y']} x {other.sizes['x']} pixels but {first} is "
                f"{ref.sizes['y']} x {ref.sizes['x']}; resample the coarse images to the fine grid first "
                "(e.g. gdalwarp -tr 30 30 -r bilinear)"
            )
        if not transform_of(other).almost_equals(transform_of(ref), precision=1e-6):
            raise GridMismatchError(
                f"{label} and {first} are not on the same grid: transforms {tuple(transform_of(other))[:6]} vs "
                f"{tuple(transform_of(ref))[:6]}"
            )
        other_crs = crs_of(other)
        if (other_crs is None) != (ref_crs is None):
            missing, present = (label, first) if other_crs is None else (first, label)
            raise CRSError(
                f"{missing} has no CRS but {present} does; either georeference all inputs or none "
                "(e.g. gdal_edit.py -a_srs EPSG:XXXX)"
            )
        if other_crs is not None and other_crs != ref_crs:
            raise CRSError(f"{label} is in {other_crs} but {first} is in {ref_crs}; reproject to one CRS first")


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Refuses to replace an existing file unless ``overwrite``. On any error (including
    KeyboardInterrupt) the temporary file is removed and ``path`` is left untouched.
    Temporaries of ``path`` left by a killed earlier run (``.NAME.*.partial``) are removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder {parent}: {err.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable; choose another with -o")
    for stale in parent.glob(f".{path.name}.*.partial*"):  # left by a killed earlier run
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get normal permissions
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OutputError):
            raise
        raise OutputError(f"could not write {path}: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _blocks(array, block: int) -> Iterator[tuple[tuple[slice, slice], Any]]:
    """Yield ((row slice, col slice), lazy-or-numpy block) over a (C, H, W) array in chunk order."""
    _, height, width = array.shape
    if hasattr(array, "chunks") and not isinstance(array, np.ndarray):
        row_edges = np.cumsum((0, *array.chunks[1]))
        col_edges = np.cumsum((0, *array.chunks[2]))
    else:
        row_edges = np.arange(0, height + block, block).clip(max=height)
        col_edges = np.arange(0, width + block, block).clip(max=width)
    for r0, r1 in zip(row_edges[:-1], row_edges[1:]):
        for c0, c1 in zip(col_edges[:-1], col_edges[1:]):
            if r1 > r0 and c1 > c0:
                rows, cols = slice(int(r0), int(r1)), slice(int(c0), int(c1))
                yield (rows, cols), array[:, rows, cols]


def compute_blocks(array, *, batch: int = 4, block: int = 2048, progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    """Compute a (C, H, W) numpy/dask array block by block, ``batch`` blocks at a time.

    Works with any dask scheduler, including a distributed cluster: results come back to
    this process, so memory here is bounded by ``batch`` blocks.
    """
    pending = list(_blocks(array, block))
    total = len(pending)
    done = 0
    for i in range(0, total, batch):
        group = pending[i : i + batch]
        values = dask.compute(*[blk for _, blk in group]) if hasattr(group[0][1], "dask") else [blk for _, blk in group]
        for (window, _), value in zip(group, values):
            done += 1
            yield window, np.asarray(value, dtype=np.float32)
            if progress:
                progress(done, total)


def write_prediction_cog(
    path: str | os.PathLike[str],
    mean: Any,
    sigma: Any,
    *,
    band_names: Sequence[str],
    crs: CRS | None,
    transform: Affine,
    tags: Mapping[str, Any] | None = None,
    extra_bands: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a float32 Cloud-Optimized GeoTIFF: reflectance bands, then ``<band>_sigma`` bands.

    ``mean`` and ``sigma`` are (B, H, W) reflectance / standard deviation, numpy or dask
    (computed tile by tile, so a full Landsat scene never sits in memory); NaN is nodata.
    ``extra_bands`` (name -> (H, W) array) are appended after the sigma bands (e.g. quality).
    Tags (method, inputs, version...) are stored as GeoTIFF metadata; values that are not
    strings are JSON-encoded. The file appears at ``path`` only when complete.
    """
    layers = [mean, sigma, *[(e[None] if e.ndim == 2 else e) for e in (extra_bands or {}).values()]]
    lazy = any(isinstance(getattr(a, "data", a), da.Array) for a in layers)
    arrays = [getattr(a, "data", a) for a in layers]
    stack = da.concatenate([da.asarray(a, dtype=np.float32) for a in arrays]) if lazy else np.concatenate([np.asarray(a, np.float32) for a in arrays])
    descriptions = [*band_names, *(f"{b}_sigma" for b in band_names), *(extra_bands or {})]
    count, height, width = stack.shape
    blocksize = 512 if min(height, width) >= 512 else 256 if min(height, width) >= 256 else 128  # COG minimum
    base = dict(width=width, height=height, count=count, dtype="float32", crs=crs, transform=transform, nodata=float("nan"))
    cog = dict(driver="COG", compress="ZSTD", level=1, predictor=3 if min(height, width) >= 16 else 1, blocksize=blocksize,
               overview_resampling="average", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        # The COG driver creates by copying: stage a tiled GTiff beside the target first.
        stage = tmp.with_name(tmp.name + ".stage.tif")
        try:
            tiled = dict(driver="GTiff", tiled=True, blockxsize=max(blocksize, 16), blockysize=max(blocksize, 16), compress="ZSTD", ZSTD_LEVEL=1, BIGTIFF="IF_SAFER")
            with rasterio.open(stage, "w", **base, **tiled) as dst:
                for (rows, cols), block in compute_blocks(stack, progress=progress):
                    dst.write(block, window=((rows.start, rows.stop), (cols.start, cols.stop)))
                for i, description in enumerate(descriptions, start=1):
                    dst.set_band_description(i, description)
                dst.update_tags(**{k: _tag_value(v) for k, v in (tags or {}).items()})
            rasterio.shutil.copy(stage, tmp, **cog)
        finally:
            stage.unlink(missing_ok=True)
    return path


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(text: str) -> str:
    """A file-name-safe version of catalog-supplied text (no path separators or ``..``)."""
    name = _SAFE_NAME.sub("_", text).strip("._")
    return name or "item"


def write_stac_item(
    path: str | os.PathLike[str],
    *,
    item_id: str,
    asset_path: str | os.PathLike[str],
    datetime: dt.datetime | None,
    band_names: Sequence[str],
    crs: CRS | None,
    transform: Affine,
    shape: tuple[int, int],
    properties: Mapping[str, Any] | None = None,
    extra_bands: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write a STAC item (JSON) describing one prediction COG, with proj/raster/eo fields.

    The asset href is relative to the item file. Items for rasters without a CRS carry no
    geometry (allowed by STAC for non-georeferenced data).
    """
    height, width = shape
    geometry = bbox = None
    if crs is not None:
        left, top = transform @ (0, 0)
        right, bottom = transform @ (width, height)
        ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
        geometry = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
        xs = [p[0] for p in geometry["coordinates"][0]]
        ys = [p[1] for p in geometry["coordinates"][0]]
        bbox = [min(xs), min(ys), max(xs), max(ys)]
    props = dict(properties or {})
    if datetime is None:
        props.setdefault("stfuse:target_date", None)
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    else:
        when = datetime if datetime.tzinfo else datetime.replace(tzinfo=dt.timezone.utc)
    item = pystac.Item(id=item_id, geometry=geometry, bbox=bbox, datetime=when, properties=props)
    epsg = crs.to_epsg() if crs is not None else None
    item.properties["proj:code"] = f"EPSG:{epsg}" if epsg else None
    if crs is not None and not epsg:
        item.properties["proj:wkt2"] = crs.to_wkt()
    item.properties["proj:shape"] = [height, width]
    item.properties["proj:transform"] = list(transform)[:6]
    item.stac_extensions = [
        "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    ]
    path = Path(path)
    rel = os.path.relpath(Path(asset_path).resolve(), path.parent.resolve())
    names = [*band_names, *(f"{b}_sigma" for b in band_names), *extra_bands]
    item.add_asset(
        "data",
        pystac.Asset(
            href=rel,
            media_type=pystac.MediaType.COG,
            roles=["data"],
            title="fused reflectance and uncertainty",
            extra_fields={
                "raster:bands": [{"name": n, "data_type": "float32", "nodata": "nan", "unit": "reflectance (1 sigma)" if n.endswith("_sigma") else ("bit flags" if n in extra_bands else "reflectance")} for n in names],
                "eo:bands": [{"name": n} for n in names],
            },
        ),
    )
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(item.to_dict(include_self_link=False), indent=1))
    return path


# --------------------------------------------------------------------------- Zarr


def create_zarr_output(
    path: str | os.PathLike[str],
    *,
    days: Sequence[dt.date],
    band_names: Sequence[str],
    crs: CRS | None,
    transform: Affine,
    shape: tuple[int, int],
    chunk: int = 1024,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Create (metadata only) a Zarr store for a region: ``reflectance`` and ``sigma``
    (time, band, y, x) float32 NaN-filled, and ``complete`` (time,) bool, all False.

    The CRS is stored CF-style in a ``spatial_ref`` coordinate (rioxarray/odc-geo read it).
    Days and tiles are then filled in any order by :func:`write_zarr_tiles`; a day counts as
    done only once :func:`mark_zarr_day_complete` ran after all of its tiles.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it or --resume to continue it")
    height, width = shape
    n_days, n_bands = len(days), len(band_names)
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    chunks = (1, n_bands, min(chunk, height), min(chunk, width))
    empty = da.full((n_days, n_bands, height, width), np.nan, dtype=np.float32, chunks=chunks)
    dims = ("time", "band", "y", "x")
    ds = xr.Dataset(
        {
            "reflectance": (dims, empty, {"units": "1", "long_name": "surface reflectance"}),
            "sigma": (dims, empty, {"units": "1", "long_name": "1-sigma uncertainty of reflectance"}),
            "complete": (("time",), da.zeros(n_days, dtype=bool, chunks=n_days)),
        },
        coords={"time": np.array([np.datetime64(d, "ns") for d in days]), "band": np.array(list(band_names), dtype=object), "y": ys, "x": xs},
        attrs=dict(attrs or {}),
    )
    if crs is not None:
        ds = ds.rio.write_crs(crs.to_wkt()).rio.write_transform(transform)
        for name in ("reflectance", "sigma"):  # CF grid_mapping goes in encoding so it round-trips
            ds[name].encoding["grid_mapping"] = ds[name].attrs.pop("grid_mapping", "spatial_ref")
            ds[name].encoding["coordinates"] = "spatial_ref"
    ds.attrs = {k: _tag_value(v) for k, v in ds.attrs.items()}
    try:
        ds.to_zarr(path, mode="w", compute=False, consolidated=True)
    except OSError as err:
        raise OutputError(f"cannot create Zarr store {path}: {err}") from None
    return path


def write_zarr_tiles(path: str | os.PathLike[str], day_index: int, tiles: Iterable[tuple[tuple[slice, slice], np.ndarray, np.ndarray]]) -> None:
    """Write ``(window, mean, sigma)`` tiles — (B, h, w) each — of day ``day_index``."""
    group = zarr.open_group(str(path), mode="r+")
    reflectance, sigma_array = group["reflectance"], group["sigma"]
    for (rows, cols), mean, sigma in tiles:
        reflectance[day_index, :, rows, cols] = mean
        sigma_array[day_index, :, rows, cols] = sigma


def mark_zarr_day_complete(path: str | os.PathLike[str], day_index: int) -> None:
    """Flag day ``day_index`` complete (call only after all its tiles are written)."""
    group = zarr.open_group(str(path), mode="r+")
    group["complete"][day_index] = True


def zarr_completed_days(path: str | os.PathLike[str]) -> set[dt.date]:
    """Days marked complete in an existing stfuse Zarr store (empty set if none)."""
    path = Path(path)
    if not path.exists():
        return set()
    group = zarr.open_group(str(path), mode="r")
    complete = np.asarray(group["complete"][:])
    times = xr.open_zarr(path)["time"].values
    return {np.datetime64(t, "D").item() for t, done in zip(times, complete) if done}


def write_run_collection(out_dir: str | os.PathLike[str], item_paths: Sequence[str | os.PathLike[str]], *, description: str,
                         properties: Mapping[str, Any] | None = None) -> Path:
    """Write ``out_dir/collection.json``: a STAC collection linking the run's item JSON files
    (relative links), with the spatial and temporal extent of all of them."""
    out_dir = Path(out_dir)
    items = [pystac.Item.from_file(str(p)) for p in item_paths]
    boxes = [i.bbox for i in items if i.bbox]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)] if boxes else [-180, -90, 180, 90]
    times = sorted(i.datetime for i in items if i.datetime)
    collection = pystac.Collection(
        id="stfuse-run",
        description=description,
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[times[0] if times else None, times[-1] if times else None]])),
        extra_fields={"stfuse": dict(properties or {})},
    )
    doc = collection.to_dict(include_self_link=False)
    doc["links"] = [link for link in doc["links"] if link["rel"] != "root"] + [
        {"rel": "item", "href": "./" + Path(p).name, "type": "application/geo+json"} for p in item_paths
    ]
    path = out_dir / "collection.json"
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=str))
    return path
