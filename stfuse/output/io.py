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
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import reproject, transform_bounds, transform_geom
from rasterio.warp import transform as warp_transform

from stfuse.data.local import DEFAULT_INTEGER_SCALE, QAFile  # noqa: F401 (re-exported: files without scale or known name)
from stfuse.errors import (
    CorruptFileError,
    CRSError,
    GridMismatchError,
    InputError,
    MissingFileError,
    OutputError,
)
from stfuse.fusion.quality import QUALITY_BITS

OUTPUT_DTYPES: tuple[str, ...] = ("float32", "int16")
"""Data types of prediction outputs. ``float32``: reflectance and sigma as is, nodata NaN.
``int16``: reflectance and sigma as round(value / :data:`INT16_SCALE`) with the band scale
(:data:`INT16_SCALE`) and offset (0) set, nodata :data:`INT16_NODATA`. In both the ``quality``
band holds the exact integer flag values and is never nodata."""

COMPRESSIONS: tuple[str, ...] = ("deflate", "zstd", "lzw", "none")
"""COG compressions of prediction outputs (``zstd``, level 1, is the default)."""

INT16_SCALE = 1e-4
"""Reflectance (and sigma) per int16 count in ``dtype="int16"`` outputs."""

INT16_NODATA = -32768
"""Nodata of ``dtype="int16"`` outputs (reflectance and sigma bands)."""

FLAG_BANDS = ("quality",)
"""Band names that hold integer bit flags, not reflectance: read without scale or nodata."""


def check_output_format(dtype: str, compress: str) -> None:
    """Refuse an output data type or compression stfuse does not write."""
    if dtype not in OUTPUT_DTYPES:
        raise InputError(f"unknown output dtype {dtype!r}; use {' or '.join(OUTPUT_DTYPES)}")
    if compress not in COMPRESSIONS:
        raise InputError(f"unknown compression {compress!r}; use one of {', '.join(COMPRESSIONS)}")


def encode_int16(values: np.ndarray) -> np.ndarray:
    """Reflectance/sigma as int16 counts of :data:`INT16_SCALE` (rounded, clipped to
    -32767..32767), :data:`INT16_NODATA` where NaN."""
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    counts = np.clip(np.round(np.where(finite, values, 0) / np.float32(INT16_SCALE)), -32767, 32767).astype(np.int16)
    counts[~finite] = INT16_NODATA
    return counts


def decode_int16(counts: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_int16`: float32 reflectance, NaN where :data:`INT16_NODATA`."""
    counts = np.asarray(counts)
    values = counts.astype(np.float32) * np.float32(INT16_SCALE)
    values[counts == INT16_NODATA] = np.nan
    return values


def read_reflectance(path: str | os.PathLike[str], *, bands: Sequence[str] | None = None,
                     qa: QAFile | None = None) -> xr.DataArray:
    """Read a GeoTIFF as float32 reflectance, dims ``(band, y, x)``, NaN where nodata.

    Scale and offset follow :func:`stfuse.data.local.file_scaling`: the file's band scale/offset
    tags, else a USGS Landsat C2 or MODIS file name (with the MTL file beside it), else x 1e-4
    with a warning. Bands are named by :func:`stfuse.data.local.band_names` (descriptions, known
    file names, else ``b1, b2, ...``); ``bands`` selects bands by name (aliases count: ``nir`` =
    ``nir08``). A ``quality`` band (bit flags, :data:`FLAG_BANDS`) keeps its integer values,
    unscaled and never NaN. ``qa``: a QA raster on the file's grid (:class:`stfuse.data.local.QAFile`)
    whose flagged pixels become NaN (per band for per-band QA such as MCD43A4's). The attrs
    record ``source``, ``tags``, ``scaling`` (the rule used) and ``qa`` (the QA file, if any).

    Raises :class:`MissingFileError`, :class:`CorruptFileError`, :class:`InputError`.
    """
    from stfuse.data.local import band_names as local_band_names
    from stfuse.data.local import file_scaling, qa_bad_mask

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"input file not found: {path}")
    try:
        with rasterio.open(path) as src:
            raw = src.read()
            scaling = file_scaling(path, dtype=src.dtypes[0], scales=src.scales, offsets=src.offsets,
                                   descriptions=src.descriptions, nodata=src.nodata)
            names = local_band_names(path, src.descriptions)
            crs = src.crs
            transform = src.transform
            tags = src.tags()
    except RasterioIOError as err:
        raise CorruptFileError(f"cannot read {path} as a raster ({err}); is the file complete?") from None
    nodata, scales, offsets = scaling.nodata, scaling.scales.copy(), scaling.offsets.copy()
    flags = np.array([n in FLAG_BANDS for n in names], dtype=bool)
    scales[flags], offsets[flags] = 1.0, 0.0
    data = raw.astype(np.float32) * scales[:, None, None].astype(np.float32) + offsets[:, None, None].astype(np.float32)
    missing = ~np.isfinite(data)
    if nodata is not None and not np.isnan(nodata):
        missing |= raw == nodata
    if qa is not None:
        for b in range(raw.shape[0]):
            missing[b] |= qa_bad_mask(qa, raw.shape[1:], band_index=b if qa.rule.per_band else 0)
    missing[flags] = False
    data[missing] = np.nan
    array = _to_dataarray(data, names, crs, transform, name=path.stem)
    array.attrs.update(source=str(path), tags=tags, scaling=scaling.source, unit=scaling.unit,
                       qa=str(qa.path) if qa is not None else None)
    return array if bands is None else select_bands(array, bands)


def select_bands(array: xr.DataArray, bands: Sequence[str]) -> xr.DataArray:
    """The ``bands`` (by name) of a :func:`read_reflectance` array; :class:`InputError` naming
    the file and the bands it has when one is absent."""
    from stfuse.data.bands import band_name, did_you_mean

    names = [str(b) for b in array.band.values]
    wanted = [b if b in names else (band_name(b) or b) for b in bands]  # aliases: nir = nir08
    unknown = [b for b, w in zip(bands, wanted) if w not in names]
    if unknown:
        raise InputError(f"band {unknown[0]!r} not in {array.attrs.get('source')} (it has {', '.join(names)})"
                         f"{did_you_mean(unknown[0], names)}")
    return array.sel(band=wanted)


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


def check_same_grid(arrays: Mapping[str, xr.DataArray], *, role: str | None = None) -> None:
    """Raise unless all arrays share shape, transform and CRS (all set or all absent).

    ``arrays`` maps a label (e.g. the file name) to the array, for messages. ``role``: what the
    arrays are, for the advice in the message: ``"fine"`` (resample them onto one grid),
    ``"coarse"`` (resample them onto the fine grid) or None: guessed per mismatch from the pixel
    sizes (the same: fine images on two grids; different: a coarse image beside a fine one).
    """
    labels = list(arrays)
    first = labels[0]
    ref = arrays[first]
    ref_crs = crs_of(ref)

    def advice(label: str, other: xr.DataArray) -> str:
        """What to do, for fine images on two grids or a coarse image beside a fine one (``role``, else guessed)."""
        t, r = transform_of(other), transform_of(ref)
        xres, yres = abs(r.a), abs(r.e)
        left, bottom, right, top = bounds_of(ref)
        fine = (f"the fine images must share one grid: resample {label} onto the grid of {first} (e.g. rio warp {label} "
                f"regridded.tif --like {first}, or gdalwarp -tr {xres:g} {yres:g} -te {left:.10g} {bottom:.10g} {right:.10g} "
                f"{top:.10g} -r bilinear {label} regridded.tif) and give that file instead")
        coarse = f"resample the coarse images to the fine grid first (e.g. gdalwarp -tr {xres:g} {yres:g} -r bilinear)"
        if role in ("fine", "coarse"):
            return fine if role == "fine" else coarse
        if np.isclose(abs(t.a), xres, rtol=1e-6) and np.isclose(abs(t.e), yres, rtol=1e-6):  # same pixel size: two fine grids
            return f"{fine} (if {label} is a coarse image: {coarse})"
        return f"{coarse} (if both are fine images: {fine})"

    for label in labels[1:]:
        other = arrays[label]
        if other.sizes["band"] != ref.sizes["band"]:
            raise GridMismatchError(
                f"{label} has {other.sizes['band']} bands but {first} has {ref.sizes['band']}; give all inputs the same bands"
            )
        if (other.sizes["y"], other.sizes["x"]) != (ref.sizes["y"], ref.sizes["x"]):
            raise GridMismatchError(
                f"{label} is {other.sizes['y']} x {other.sizes['x']} pixels but {first} is "
                f"{ref.sizes['y']} x {ref.sizes['x']}; {advice(label, other)}"
            )
        if not transform_of(other).almost_equals(transform_of(ref), precision=1e-6):
            raise GridMismatchError(
                f"{label} and {first} are not on the same grid: transforms {tuple(transform_of(other))[:6]} vs "
                f"{tuple(transform_of(ref))[:6]}; {advice(label, other)}"
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



def on_same_grid(array: xr.DataArray, like: xr.DataArray) -> bool:
    """True if ``array`` has ``like``'s shape (y, x), transform and CRS (both set and equal, or both absent)."""
    return ((array.sizes["y"], array.sizes["x"]) == (like.sizes["y"], like.sizes["x"])
            and transform_of(array).almost_equals(transform_of(like), precision=1e-6) and crs_of(array) == crs_of(like))


def bounds_of(array: xr.DataArray) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of an array read by :func:`read_reflectance`, in its CRS units."""
    transform, height, width = transform_of(array), array.sizes["y"], array.sizes["x"]
    xs, ys = transform * (np.array([0.0, width, 0.0, width]), np.array([0.0, 0.0, height, height]))
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def bounds_in(array: xr.DataArray, like: xr.DataArray) -> tuple[float, float, float, float]:
    """``array``'s bounds in ``like``'s CRS (densified, so curved edges are covered); both need a CRS."""
    src_crs, dst_crs = crs_of(array), crs_of(like)
    if src_crs is None or dst_crs is None:
        raise CRSError("both rasters need a CRS to compare their extents")
    return tuple(float(v) for v in transform_bounds(src_crs, dst_crs, *bounds_of(array), densify_pts=21))  # type: ignore[return-value]


def grids_overlap(array: xr.DataArray, like: xr.DataArray) -> bool:
    """True if ``array``'s extent and ``like``'s share an area of positive size (both need a CRS)."""
    left, bottom, right, top = bounds_in(array, like)
    l2, b2, r2, t2 = bounds_of(like)
    if not all(np.isfinite((left, bottom, right, top))):
        return False
    return min(right, r2) > max(left, l2) and min(top, t2) > max(bottom, b2)


def _footprint_area(array: xr.DataArray, crs: CRS) -> float:
    """Area (``crs`` units squared) of ``array``'s extent, its edges densified (21 points each) and
    transformed into ``crs``."""
    height, width = array.sizes["y"], array.sizes["x"]
    t = np.linspace(0.0, 1.0, 21)[:-1]
    cols = np.concatenate([t * width, np.full_like(t, width), (1 - t) * width, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * height, np.full_like(t, height), (1 - t) * height])
    xs, ys = transform_of(array) * (cols, rows)
    xs, ys = (np.asarray(v, dtype=np.float64) for v in warp_transform(crs_of(array), crs, xs, ys))
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def pixel_size_ratio(array: xr.DataArray, like: xr.DataArray) -> float:
    """``array``'s pixel size over ``like``'s: the square root of their pixel areas' ratio, with
    ``array``'s pixel area measured in ``like``'s CRS (its extent transformed into it, over its
    pixel count), so sheared pixels (MODIS sinusoidal beside UTM) count at their true size;
    e.g. 16 for 480 m pixels beside 30 m ones, about 15.4 for MODIS 463 m. Both need a CRS."""
    if crs_of(array) is None or crs_of(like) is None:
        raise CRSError("both rasters need a CRS to compare their pixel sizes")
    fine_area = abs(transform_of(like).determinant)
    if crs_of(array) == crs_of(like):
        coarse_area = abs(transform_of(array).determinant)
    else:
        coarse_area = _footprint_area(array, crs_of(like)) / (array.sizes["y"] * array.sizes["x"])
    return float(np.sqrt(coarse_area / fine_area))


def resample_to_grid(array: xr.DataArray, like: xr.DataArray, *, resampling: str = "bilinear") -> xr.DataArray:
    """``array`` (from :func:`read_reflectance`, (band, y, x), NaN = missing) reprojected onto
    ``like``'s grid: ``like``'s shape, transform, CRS and x/y coordinates, ``array``'s bands and
    attributes (``source``, ``tags``...). float32; NaN where the source has no data or does not
    reach. ``resampling``: a :class:`rasterio.enums.Resampling` name (``bilinear``, ``average``,
    ``nearest``, ...); bit-flag bands (:data:`FLAG_BANDS`) always take ``nearest``. Both need a CRS
    (:class:`CRSError` otherwise). Uses :func:`rasterio.warp.reproject` (GDAL's warper).
    """
    src_crs, dst_crs = crs_of(array), crs_of(like)
    if src_crs is None or dst_crs is None:
        missing = array.attrs.get("source", "the input") if src_crs is None else like.attrs.get("source", "the target grid")
        raise CRSError(f"{missing} has no CRS, so it cannot be resampled; georeference it first (e.g. gdal_edit.py -a_srs EPSG:XXXX)")
    try:
        method = Resampling[resampling]
    except KeyError:
        raise InputError(f"unknown resampling {resampling!r}; use e.g. bilinear, average or nearest") from None
    source = np.ascontiguousarray(array.transpose("band", "y", "x").values, dtype=np.float32)
    out = np.full((source.shape[0], like.sizes["y"], like.sizes["x"]), np.nan, dtype=np.float32)
    flags = np.array([str(b) in FLAG_BANDS for b in array.band.values], dtype=bool)
    common = dict(src_transform=transform_of(array), src_crs=src_crs, dst_transform=transform_of(like), dst_crs=dst_crs)
    if (~flags).any():
        values = out[~flags]
        reproject(source[~flags], values, src_nodata=np.nan, dst_nodata=np.nan, resampling=method, **common)
        out[~flags] = values
    if flags.any():
        values = np.zeros((int(flags.sum()), *out.shape[1:]), dtype=np.float32)
        reproject(source[flags], values, resampling=Resampling.nearest, **common)
        out[flags] = values
    result = xr.DataArray(out, dims=("band", "y", "x"), coords={"band": array.band.values, "y": like.y.values, "x": like.x.values},
                          name=array.name, attrs=dict(array.attrs))
    result.attrs.update(transform=like.attrs["transform"], crs_wkt=like.attrs["crs_wkt"])
    return result


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
        raise OutputError(f"{path} already exists; pass --overwrite (Python: overwrite=True) to replace it")
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
    dtype: str = "float32",
    compress: str = "zstd",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a Cloud-Optimized GeoTIFF: reflectance bands, then ``<band>_sigma`` bands, then
    ``extra_bands`` (name -> (H, W) integer flags, e.g. ``quality``).

    ``mean`` and ``sigma`` are (B, H, W) reflectance / standard deviation, numpy or dask
    (computed tile by tile, so a full Landsat scene never sits in memory); NaN is nodata.
    ``dtype`` (:data:`OUTPUT_DTYPES`): ``float32`` (nodata NaN) or ``int16`` (reflectance and
    sigma in counts of 1e-4 with the band scale/offset set, nodata -32768); the extra bands hold
    their exact integer values in either and are never nodata. ``compress``
    (:data:`COMPRESSIONS`): zstd (level 1), deflate, lzw or none. Tags (method, inputs,
    version...) are stored as GeoTIFF metadata; values that are not strings are JSON-encoded.
    The file appears at ``path`` only when complete.
    """
    check_output_format(dtype, compress)
    layers = [mean, sigma, *[(e[None] if e.ndim == 2 else e) for e in (extra_bands or {}).values()]]
    lazy = any(isinstance(getattr(a, "data", a), da.Array) for a in layers)
    arrays = [getattr(a, "data", a) for a in layers]
    stack = da.concatenate([da.asarray(a, dtype=np.float32) for a in arrays]) if lazy else np.concatenate([np.asarray(a, np.float32) for a in arrays])
    descriptions = [*band_names, *(f"{b}_sigma" for b in band_names), *(extra_bands or {})]
    n_scaled = 2 * len(band_names)  # reflectance + sigma; the rest are flags
    count, height, width = stack.shape
    blocksize = 512 if min(height, width) >= 512 else 256 if min(height, width) >= 256 else 128  # COG minimum
    integer = dtype == "int16"
    base = dict(width=width, height=height, count=count, dtype=dtype, crs=crs, transform=transform,
                nodata=INT16_NODATA if integer else float("nan"))
    codec = {"compress": compress.upper()}  # "NONE" too: the COG driver's default is LZW
    predictor = (2 if integer else 3) if compress != "none" and min(height, width) >= 16 else "NO"
    level = {"zstd": dict(level=1), "deflate": dict(level=6)}.get(compress, {})
    cog = dict(driver="COG", **codec, **level, predictor=predictor, blocksize=blocksize,
               overview_resampling="average", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        # The COG driver creates by copying: stage a tiled GTiff beside the target first.
        stage = tmp.with_name(tmp.name + ".stage.tif")
        try:
            tiled = dict(driver="GTiff", tiled=True, blockxsize=max(blocksize, 16), blockysize=max(blocksize, 16), compress="ZSTD", ZSTD_LEVEL=1, BIGTIFF="IF_SAFER")
            with rasterio.open(stage, "w", **base, **tiled) as dst:
                for (rows, cols), block in compute_blocks(stack, progress=progress):
                    if integer:
                        block = np.concatenate([encode_int16(block[:n_scaled]), np.round(block[n_scaled:]).astype(np.int16)])
                    dst.write(block, window=((rows.start, rows.stop), (cols.start, cols.stop)))
                for i, description in enumerate(descriptions, start=1):
                    dst.set_band_description(i, description)
                if integer:
                    dst.scales = [INT16_SCALE] * n_scaled + [1.0] * (count - n_scaled)
                    dst.offsets = [0.0] * count
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
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write a STAC item (JSON) describing one prediction COG, with proj/raster/eo fields.

    ``raster:bands`` lists every band (reflectance, ``<band>_sigma``, then ``extra_bands``
    such as ``quality``) with the file's ``dtype``, its nodata (none on flag bands) and, for
    int16, the scale/offset. The asset href is relative to the item file. Items for rasters
    without a CRS carry no geometry (allowed by STAC for non-georeferenced data).
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
                "raster:bands": [_raster_band(n, dtype, flags=n in extra_bands) for n in names],
                "eo:bands": [{"name": n} for n in names],
            },
        ),
    )
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(item.to_dict(include_self_link=False), indent=1))
    return path


def _raster_band(name: str, dtype: str, *, flags: bool) -> dict[str, Any]:
    """One ``raster:bands`` entry of a prediction COG."""
    if flags:
        return {"name": name, "data_type": dtype, "unit": "bit flags"}
    entry: dict[str, Any] = {"name": name, "data_type": dtype, "nodata": INT16_NODATA if dtype == "int16" else "nan",
                             "unit": "reflectance (1 sigma)" if name.endswith("_sigma") else "reflectance"}
    if dtype == "int16":
        entry.update(scale=INT16_SCALE, offset=0.0)
    return entry


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
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Create (metadata only) a Zarr store for a region: ``reflectance`` and ``sigma``
    (time, band, y, x) float32 NaN-filled, ``quality`` (time, y, x) uint8 bit flags
    (:data:`stfuse.fusion.quality.QUALITY_BITS`; 0 until the day is written) and ``complete``
    (time,) bool, all False. With ``dtype="int16"`` reflectance and sigma are stored as int16
    counts with CF ``scale_factor`` 1e-4 and ``_FillValue`` -32768, so ``xarray.open_zarr``
    still gives float reflectance with NaN.

    The CRS is stored CF-style in a ``spatial_ref`` coordinate (rioxarray/odc-geo read it).
    ``quality`` declares no nodata (no ``_FillValue``/``nodata``: 0 means "no flag").
    ``attrs`` (the run's method and settings) become the store's attributes, strings or JSON;
    :func:`check_zarr_store` compares them when a run continues the store, and
    :func:`extend_zarr_days` adds days to it.
    Days and tiles are then filled in any order by :func:`write_zarr_tiles`; a day counts as
    done only once :func:`mark_zarr_day_complete` ran after all of its tiles.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it or --resume to continue it (Python: overwrite=True / resume=True)")
    height, width = shape
    n_days, n_bands = len(days), len(band_names)
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    chunks = (1, n_bands, min(chunk, height), min(chunk, width))
    check_output_format(dtype, "zstd")
    empty = da.full((n_days, n_bands, height, width), np.nan, dtype=np.float32, chunks=chunks)
    no_flags = da.zeros((n_days, height, width), dtype=np.uint8, chunks=(1, *chunks[2:]))
    dims = ("time", "band", "y", "x")
    ds = xr.Dataset(
        {
            "reflectance": (dims, empty, {"units": "1", "long_name": "surface reflectance"}),
            "sigma": (dims, empty, {"units": "1", "long_name": "1-sigma uncertainty of reflectance"}),
            "quality": (("time", "y", "x"), no_flags, _quality_attrs()),
            "complete": (("time",), da.zeros(n_days, dtype=bool, chunks=n_days)),
        },
        coords={"time": np.array([np.datetime64(d, "ns") for d in days]), "band": np.array(list(band_names), dtype=object), "y": ys, "x": xs},
        attrs=dict(attrs or {}),
    )
    if crs is not None:
        ds = ds.rio.write_crs(crs.to_wkt()).rio.write_transform(transform)
        for name in ("reflectance", "sigma", "quality"):  # CF grid_mapping goes in encoding so it round-trips
            ds[name].encoding["grid_mapping"] = ds[name].attrs.pop("grid_mapping", "spatial_ref")
            ds[name].encoding["coordinates"] = "spatial_ref"
    ds["quality"].encoding["_FillValue"] = None  # flags: 0 is "no flag", never missing
    if dtype == "int16":
        for name in ("reflectance", "sigma"):
            ds[name].encoding.update(dtype="int16", scale_factor=np.float32(INT16_SCALE), _FillValue=np.int16(INT16_NODATA),
                                     fill_value=INT16_NODATA)
    ds.attrs = {k: _tag_value(v) for k, v in ds.attrs.items()}
    try:
        ds.to_zarr(path, mode="w", compute=False, consolidated=True)
    except OSError as err:
        raise OutputError(f"cannot create Zarr store {path}: {err}") from None
    return path


def _quality_attrs() -> dict[str, Any]:
    return {"long_name": "quality bit flags", "flag_masks": list(QUALITY_BITS.values()),
            "flag_meanings": " ".join(QUALITY_BITS)}


def write_zarr_tiles(path: str | os.PathLike[str], day_index: int, tiles: Iterable[tuple[Any, ...]]) -> None:
    """Write ``(window, mean, sigma)`` or ``(window, mean, sigma, quality)`` tiles of day
    ``day_index``: mean/sigma (B, h, w) float reflectance (or int16 counts for an int16 store),
    quality (h, w) integer flags."""
    group = zarr.open_group(str(path), mode="r+")
    reflectance, sigma_array = group["reflectance"], group["sigma"]
    quality = group["quality"] if "quality" in group else None
    integer = np.dtype(reflectance.dtype) == np.int16
    for (rows, cols), mean, sigma, *flags in tiles:
        if integer and not np.issubdtype(np.asarray(mean).dtype, np.integer):
            mean, sigma = encode_int16(mean), encode_int16(sigma)
        elif not integer and np.issubdtype(np.asarray(mean).dtype, np.integer):
            mean, sigma = decode_int16(mean), decode_int16(sigma)
        reflectance[day_index, :, rows, cols] = mean
        sigma_array[day_index, :, rows, cols] = sigma
        if flags and quality is not None:
            quality[day_index, rows, cols] = np.asarray(flags[0]).astype(np.uint8)


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


def zarr_days(path: str | os.PathLike[str]) -> list[dt.date]:
    """The days of a stfuse Zarr store's time axis, in store order (its day indices)."""
    return [np.datetime64(t, "D").item() for t in xr.open_zarr(path)["time"].values]


def _attr_value(text: Any) -> Any:
    """A store attribute as :func:`_tag_value` wrote it, decoded (JSON when it parses)."""
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return text


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else json.dumps(value) if isinstance(value, dict) else str(value)


def check_zarr_store(path: str | os.PathLike[str], *, band_names: Sequence[str], crs: CRS | None, transform: Affine,
                     shape: tuple[int, int], dtype: str, settings: Mapping[str, Any]) -> None:
    """Refuse (:class:`~stfuse.errors.OutputError`, exit 2), before anything is written, an
    existing store that this run cannot continue: not a stfuse store, another grid (CRS,
    transform, shape), another ``dtype``, other bands, or other ``settings`` (how the values
    were made: method, refine, options...; compared with the store's attributes of the same
    names, written by :func:`create_zarr_output`; an attribute the store lacks is not compared).
    A store keeps one set of bands: a run with other bands (or other settings) must write to
    another folder, or replace the store (``--overwrite`` without ``--resume``)."""
    path = Path(path)
    again = "write to another folder (-o), or replace it with --overwrite (without --resume)"
    try:
        ds = xr.open_zarr(path)
        stored_dtype = str(zarr.open_group(str(path), mode="r")["reflectance"].dtype)
    except Exception as err:  # zarr/xarray raise several types for "not such a store"
        raise OutputError(f"{path} is not a Zarr store written by stfuse ({err}); {again}") from None
    if not {"reflectance", "sigma", "complete"} <= set(ds.variables) or not {"time", "band", "y", "x"} <= set(ds.dims):
        raise OutputError(f"{path} is not a Zarr store written by stfuse (no reflectance/sigma/complete); {again}")
    stored_bands = [str(b) for b in ds.band.values]
    if stored_bands != list(band_names):
        raise OutputError(f"{path} holds bands {','.join(stored_bands)}, this run asks for {','.join(band_names)}; "
                          f"a Zarr store keeps one set of bands: {again}")
    height, width = shape
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    stored_wkt = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds.variables else None
    same_crs = (stored_wkt is None and crs is None) or (stored_wkt is not None and crs is not None and CRS.from_wkt(stored_wkt) == crs)
    tolerance = 1e-6 * max(abs(transform.a), abs(transform.e), 1e-9)
    same_grid = (ds.sizes["y"], ds.sizes["x"]) == (height, width) and np.allclose(ds.x.values, xs, rtol=0, atol=tolerance) \
        and np.allclose(ds.y.values, ys, rtol=0, atol=tolerance)
    if not (same_crs and same_grid):
        raise OutputError(f"{path} is on another grid ({ds.sizes['x']} x {ds.sizes['y']} pixels"
                          f"{'' if same_crs else ', another CRS'}) than this run ({width} x {height}); {again}")
    if stored_dtype != dtype:
        raise OutputError(f"{path} holds {stored_dtype} values, this run asks for --dtype {dtype}; {again}")
    differ = [f"{key} {_shown(_attr_value(ds.attrs[key]))} vs {_shown(_attr_value(_tag_value(value)))}"
              for key, value in settings.items()
              if key in ds.attrs and _attr_value(ds.attrs[key]) != _attr_value(_tag_value(value))]
    if differ:
        raise OutputError(f"{path} was written with other settings ({'; '.join(differ)}, stored vs asked); "
                          f"resuming would mix them in one store: {again}")


def _zarr_grid(group: Any) -> tuple[CRS | None, Affine]:
    """The CRS and transform a store was created with (its ``spatial_ref``, else its x/y coordinates)."""
    ref = group["spatial_ref"].attrs if "spatial_ref" in group else {}
    crs = CRS.from_wkt(ref["crs_wkt"]) if "crs_wkt" in ref else None
    if "GeoTransform" in ref:
        return crs, Affine.from_gdal(*map(float, ref["GeoTransform"].split()))
    xs, ys = np.asarray(group["x"][:]), np.asarray(group["y"][:])
    dx = float(xs[1] - xs[0]) if xs.size > 1 else 1.0
    dy = float(ys[1] - ys[0]) if ys.size > 1 else -1.0
    return crs, Affine(dx, 0.0, float(xs[0]) - dx / 2, 0.0, dy, float(ys[0]) - dy / 2)


def extend_zarr_days(path: str | os.PathLike[str], days: Sequence[dt.date]) -> list[dt.date]:
    """Add ``days`` the store lacks to its time axis, keeping it ascending; returns the days added
    (empty slots: NaN, quality 0, ``complete`` False). Metadata only when every new day is later
    than the store's last day (the arrays grow at the end); otherwise (an earlier or in-between
    day) the store is rewritten, sorted, into a new store beside it that replaces it only once
    complete (the complete days copied as they are, the incomplete ones left empty to be
    recomputed). Call after :func:`check_zarr_store` and before writing any day."""
    path = Path(path)
    existing = zarr_days(path)
    new = sorted(set(days) - set(existing))
    if not new:
        return []
    if existing == sorted(existing) and (not existing or new[0] > existing[-1]):
        _append_zarr_days(path, new)
    else:
        _rewrite_zarr_days(path, sorted({*existing, *new}))
    return new


def _append_zarr_days(path: Path, new: Sequence[dt.date]) -> None:
    """Grow every time-axis array by the (later) ``new`` days; the time coordinate last, so an
    interrupted append leaves the old days readable (:func:`repair_zarr_output` trims the rest)."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    time = group["time"]
    n_old = time.shape[0]
    n = n_old + len(new)
    values, _, _ = xr.coding.times.encode_cf_datetime(np.array([np.datetime64(d, "ns") for d in new]),
                                                      time.attrs.get("units"), time.attrs.get("calendar"))
    values = np.asarray(values)
    if np.issubdtype(np.dtype(time.dtype), np.integer) and not np.array_equal(values, np.round(values)):
        raise OutputError(f"cannot add {new[0]} to {path}: its time units {time.attrs.get('units')!r} cannot hold it; "
                          "write to another folder (-o)")
    for name in ("reflectance", "sigma", "quality", "complete"):
        if name in group:
            group[name].resize((n, *group[name].shape[1:]))
    time.resize((n,))
    time[n_old:] = values.astype(time.dtype)
    zarr.consolidate_metadata(str(path))


def _rewrite_zarr_days(path: Path, days: Sequence[dt.date]) -> None:
    """Rewrite the store with the time axis ``days`` (ascending), copying its complete days."""
    import shutil
    import uuid

    old = zarr.open_group(str(path), mode="r", use_consolidated=False)
    old_days = zarr_days(path)
    complete = np.asarray(old["complete"][:])
    crs, transform = _zarr_grid(old)
    reflectance = old["reflectance"]
    height, width = reflectance.shape[2:]
    chunk = max(reflectance.chunks[2], reflectance.chunks[3])
    for stale in path.parent.glob(f".{path.name}.extend-*"):  # left by a killed earlier rewrite
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f".{path.name}.extend-{uuid.uuid4().hex[:8]}")
    backup = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        create_zarr_output(tmp, days=days, band_names=[str(b) for b in old["band"][:]], crs=crs, transform=transform,
                           shape=(height, width), chunk=chunk, attrs=dict(old.attrs),
                           dtype="int16" if np.dtype(reflectance.dtype) == np.int16 else "float32")
        new = zarr.open_group(str(tmp), mode="r+")
        new["x"][:], new["y"][:] = old["x"][:], old["y"][:]  # the coordinates exactly as they were
        index = {d: i for i, d in enumerate(days)}
        rows = reflectance.chunks[2]
        for i, day in enumerate(old_days):
            if i >= complete.size or not complete[i]:
                continue
            j = index[day]
            for r0 in range(0, height, rows):  # one chunk row at a time: a day of a large area never sits in memory
                r = slice(r0, min(r0 + rows, height))
                for name in ("reflectance", "sigma"):
                    new[name][j, :, r] = old[name][i, :, r]
                if "quality" in old:
                    new["quality"][j, r] = old["quality"][i, r]
            new["complete"][j] = True
        os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException as err:
        if backup.exists() and not path.exists():
            os.replace(backup, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            raise OutputError(f"could not extend {path}: {err.strerror or err}") from None
        raise
    shutil.rmtree(backup, ignore_errors=True)


def repair_zarr_output(path: str | os.PathLike[str]) -> bool:
    """Undo what a run killed while extending the store (:func:`extend_zarr_days`) left: the
    old store put back if it was killed between the two renames of a rewrite, arrays trimmed to
    the time axis if it was killed mid-append. Returns True if anything was repaired."""
    path = Path(path)
    repaired = False
    backups = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if not path.exists() and backups:
        os.replace(backups.pop(), path)
        repaired = True
    if backups:  # killed after the rewritten store was in place: the old one is left over
        import shutil

        for backup in backups:
            shutil.rmtree(backup, ignore_errors=True)
    if not path.is_dir():
        return repaired
    try:
        group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
        n = group["time"].shape[0]
        grown = [name for name in ("reflectance", "sigma", "quality", "complete") if name in group and group[name].shape[0] != n]
    except Exception:  # not a stfuse store: check_zarr_store says so
        return repaired
    for name in grown:
        group[name].resize((n, *group[name].shape[1:]))
    if grown:
        zarr.consolidate_metadata(str(path))
    return repaired or bool(grown)


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
