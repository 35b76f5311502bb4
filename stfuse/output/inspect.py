"""Describing what stfuse wrote (``stfuse info``): a prediction COG or a Zarr store.

:func:`describe` returns a JSON-ready dict, :func:`format_description` the text ``stfuse info``
prints (as ``rio info`` does for any raster, plus what stfuse's outputs carry): size, CRS,
transform and resolution, bands (description, dtype), nodata, tags (JSON values decoded), the
share of pixels with each ``quality`` flag (:data:`stfuse.fusion.quality.QUALITY_BITS`) and
min / median / max of each ``<band>_sigma`` band (reflectance, 1 sigma). For a Zarr store
(variables ``reflectance``, ``sigma``, optional ``quality``; dims ``time, band, y, x``) the same
per variable, over its complete days, plus its days and which are complete
(:func:`stfuse.output.io.zarr_completed_days`).

Statistics are exact (full resolution, one band at a time; a COG's averaged overviews would
blur the quality bit flags), so a whole Landsat scene takes a few seconds per band.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from stfuse.errors import CorruptFileError, InputError, MissingFileError

PathLike = str | os.PathLike[str]


def describe(path: PathLike) -> dict[str, Any]:
    """A JSON-ready description of a prediction COG (any GeoTIFF) or an stfuse Zarr store.

    Keys: ``path``, ``format`` (``"GTiff"``/``"zarr"``), ``width``, ``height``, ``crs`` (text or
    None), ``transform`` (6 numbers), ``resolution`` ((x, y) in CRS units), ``bounds``, then for a
    raster ``count``, ``nodata``, ``bands`` (``band`` number, ``name``, ``dtype``, ``kind``:
    ``reflectance``/``sigma``/``quality``), ``tags``, ``quality`` (``{"pixels", "percent":
    {flag: %, "none": %}}``, absent without a quality band) and ``sigma`` (``{band: {"min",
    "median", "max"}}``); for a Zarr store ``bands``, ``days``, ``complete_days``, ``attrs`` and
    ``variables`` (per variable ``dtype``, ``shape`` and the ``quality``/``sigma`` summaries).
    Raises :class:`MissingFileError`, :class:`CorruptFileError`, :class:`InputError`.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} not found; give a prediction .tif or a .zarr store written by stfuse")
    if path.is_dir():
        return _describe_zarr(path)
    return _describe_raster(path)


def _kind(name: str | None) -> str:
    text = (name or "").lower()
    return "sigma" if text.endswith("_sigma") else "quality" if text == "quality" else "reflectance"


def _tag(value: str) -> Any:
    """A tag value as stfuse wrote it: JSON when it parses as an object, list or number, else the text."""
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError):
        return value
    return decoded if isinstance(decoded, (dict, list, int, float)) and not isinstance(decoded, bool) else value


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def sigma_summary(values: np.ndarray) -> dict[str, float | None]:
    """``min``, ``median``, ``max`` of the finite values of an array (None when there are none)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return {"min": None, "median": None, "max": None}
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def quality_summary(flags: np.ndarray) -> dict[str, Any]:
    """Share (percent) of the valid (finite) pixels of a ``quality`` band with each flag, and with none."""
    from stfuse.fusion.quality import QUALITY_BITS

    flags = np.asarray(flags, np.float64)
    valid = np.isfinite(flags)
    n = int(valid.sum())
    bits = flags[valid].astype(np.int64)
    percent = {name: (100.0 * float(((bits & bit) != 0).sum()) / n if n else None) for name, bit in QUALITY_BITS.items()}
    percent["none"] = 100.0 * float((bits == 0).sum()) / n if n else None
    return {"pixels": n, "percent": percent}


def _grid(crs: Any, transform: Any, width: int, height: int) -> dict[str, Any]:
    left, top = transform.c, transform.f
    right, bottom = transform.c + transform.a * width, transform.f + transform.e * height
    return {
        "width": int(width),
        "height": int(height),
        "crs": (crs.to_string() if crs is not None else None),
        "transform": [float(v) for v in tuple(transform)[:6]],
        "resolution": [abs(float(transform.a)), abs(float(transform.e))],
        "bounds": [min(left, right), min(top, bottom), max(left, right), max(top, bottom)],
    }


def _describe_raster(path: Path) -> dict[str, Any]:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        src = rasterio.open(path)
    except RasterioIOError as err:
        raise CorruptFileError(f"cannot read {path} as a raster ({err}); give a prediction .tif or a .zarr store") from None
    with src, read_errors_named(path):
        check_complete(src, path)
        names = [d if d else f"b{i + 1}" for i, d in enumerate(src.descriptions)]
        info: dict[str, Any] = {"path": str(path), "format": src.driver, **_grid(src.crs, src.transform, src.width, src.height),
                                "count": src.count, "nodata": _finite(src.nodata) if src.nodata is not None else None,
                                "bands": [{"band": i + 1, "name": n, "dtype": src.dtypes[i], "kind": _kind(n)} for i, n in enumerate(names)],
                                "tags": {k: _tag(v) for k, v in src.tags().items()}}
        if src.nodata is not None and math.isnan(src.nodata):
            info["nodata"] = "nan"
        sigma = {}
        for i, name in enumerate(names):
            kind = _kind(name)
            if kind == "sigma":
                sigma[name] = sigma_summary(_masked(src, i + 1))
            elif kind == "quality" and "quality" not in info:
                info["quality"] = quality_summary(_masked(src, i + 1))
        if sigma:
            info["sigma"] = sigma
    return info


MAX_BLOCKS_CHECKED = 4096
"""Blocks per level (and band) whose extent :func:`check_complete` checks; above it, the last row of blocks."""


def check_complete(src: Any, path: PathLike) -> None:
    """Raise :class:`CorruptFileError` naming ``path`` when an open GeoTIFF (``src``, rasterio)
    is truncated: a block of the full resolution or of an overview (every block, or the last
    row of blocks above :data:`MAX_BLOCKS_CHECKED`; the TIFF's own offsets and sizes, nothing
    decoded) ends beyond the end of the file, as after an interrupted download or copy. Other
    formats, and files whose blocks GDAL does not report, pass."""
    size = os.path.getsize(path)
    end, where = 0, ""
    levels = [(None, 1)] + [(i, f) for i, f in enumerate(src.overviews(1) if src.count else [])]
    bands = [1] if src.count and str(getattr(src.interleaving, "value", src.interleaving)).lower() == "pixel" else range(1, src.count + 1)
    block_h, block_w = src.block_shapes[0] if src.count else (1, 1)
    for level, factor in levels:
        rows, cols = math.ceil(math.ceil(src.height / factor) / block_h), math.ceil(math.ceil(src.width / factor) / block_w)
        first_row = 0 if rows * cols * len(bands) <= MAX_BLOCKS_CHECKED else rows - 1
        for band in bands:
            for row in range(first_row, rows):
                for col in range(cols):
                    try:
                        offset = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band, ovr=level)
                        count = src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band, ovr=level)
                    except Exception:  # not a TIFF, or GDAL cannot tell: nothing to check
                        return
                    if offset is None or count is None:
                        if level is None and row == first_row and col == 0:
                            return  # not a TIFF
                        continue
                    if int(offset) and int(offset) + int(count) > end:
                        end = int(offset) + int(count)
                        where = "full resolution" if level is None else f"overview 1/{factor}"
    if end > size:
        raise CorruptFileError(f"{path} is incomplete or corrupt: it has {size} bytes but its {where} data runs to byte {end} "
                               "(truncated, e.g. by an interrupted download, copy or write); fetch or write it again")


@contextmanager
def read_errors_named(path: PathLike) -> Iterator[None]:
    """GDAL read failures inside the block as :class:`CorruptFileError` naming ``path`` (a file
    that opens but whose data cannot be read is incomplete or corrupt)."""
    from rasterio.errors import RasterioError

    try:
        yield
    except RasterioError as err:
        raise CorruptFileError(f"{path} is incomplete or corrupt: reading its pixels failed ({err}); fetch or write it again") from None


def _masked(src: Any, band: int) -> np.ndarray:
    """Band ``band`` as float64 times its scale plus offset (int16 outputs), NaN where nodata."""
    raw = src.read(band)
    scale, offset = src.scales[band - 1], src.offsets[band - 1]
    data = raw.astype(np.float64) * (1.0 if scale is None else scale) + (offset or 0.0)
    if src.nodata is not None and not math.isnan(src.nodata):
        data[raw == src.nodata] = np.nan
    return data


def _describe_zarr(path: Path) -> dict[str, Any]:
    import xarray as xr

    from stfuse.output.io import zarr_completed_days

    try:
        ds = xr.open_zarr(path)
    except Exception as err:  # zarr raises several types for "not a store"
        raise CorruptFileError(f"cannot open {path} as a Zarr store ({type(err).__name__}: {err})") from None
    with ds:
        if "reflectance" not in ds or tuple(ds["reflectance"].dims) != ("time", "band", "y", "x"):
            raise InputError(f"{path} is not a Zarr store written by stfuse (no reflectance variable with dims time, band, y, x; "
                             f"it has {', '.join(map(str, ds.data_vars)) or 'no variables'})")
        crs, transform = _zarr_grid(ds)
        days = [str(np.datetime64(t, "D")) for t in ds["time"].values]
        complete = sorted(str(d) for d in zarr_completed_days(path))
        bands = [str(b) for b in ds["band"].values]
        info: dict[str, Any] = {"path": str(path), "format": "zarr", **_grid(crs, transform, ds.sizes["x"], ds.sizes["y"]),
                                "bands": bands, "days": days, "complete_days": complete,
                                "attrs": {k: _tag(v) if isinstance(v, str) else v for k, v in ds.attrs.items()}, "variables": {}}
        done = [i for i, d in enumerate(days) if d in complete]
        for name in ("reflectance", "sigma", "quality"):
            if name not in ds:
                continue
            var = ds[name]
            entry: dict[str, Any] = {"dtype": str(var.dtype), "dims": list(var.dims), "shape": [int(s) for s in var.shape]}
            if name == "sigma":
                entry["sigma"] = {f"{b}_sigma": sigma_summary(var.isel(time=done, band=i).values) for i, b in enumerate(bands)}
            elif name == "quality":
                entry["quality"] = quality_summary(var.isel(time=done).values)
            info["variables"][name] = entry
    return info


def _zarr_grid(ds: Any) -> tuple[Any, Any]:
    """CRS (from the CF ``spatial_ref`` coordinate, None without) and transform (from x/y pixel centres)."""
    from affine import Affine
    from rasterio.crs import CRS

    crs = None
    if "spatial_ref" in ds.coords:
        wkt = ds.coords["spatial_ref"].attrs.get("crs_wkt") or ds.coords["spatial_ref"].attrs.get("spatial_ref")
        crs = CRS.from_wkt(wkt) if wkt else None
    xs, ys = ds["x"].values, ds["y"].values
    dx = float(xs[1] - xs[0]) if xs.size > 1 else 1.0
    dy = float(ys[1] - ys[0]) if ys.size > 1 else -1.0
    return crs, Affine(dx, 0.0, float(xs[0]) - dx / 2, 0.0, dy, float(ys[0]) - dy / 2)


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_description(info: dict[str, Any]) -> str:
    """The text ``stfuse info`` prints for a :func:`describe` result (no trailing newline)."""
    t = info["transform"]
    lines = [
        f"{info['path']} ({info['format']})",
        f"size      {info['width']} x {info['height']} pixels"
        + (f", {info['count']} bands" if "count" in info else f", {len(info['days'])} days x {len(info['bands'])} bands"),
        f"crs       {info['crs'] or 'none'}",
        f"transform origin ({t[2]:.3f}, {t[5]:.3f}), pixel {t[0]:g} x {t[4]:g}"
        + (f", rotation {t[1]:g} / {t[3]:g}" if t[1] or t[3] else ""),
        f"bounds    {', '.join(f'{v:.3f}' for v in info['bounds'])}",
    ]
    if "count" in info:
        lines.append(f"nodata    {info['nodata']}")
        lines.append("bands")
        width = max(len(b["name"]) for b in info["bands"]) if info["bands"] else 4
        for b in info["bands"]:
            lines.append(f"  {b['band']:>3}  {b['name']:<{width}}  {b['dtype']:<8} {b['kind']}")
        tags = info.get("tags") or {}
    else:
        lines.append(f"bands     {', '.join(info['bands'])}")
        done = set(info["complete_days"])
        lines.append(f"days      {len(info['days'])}, {len(done)} complete")
        for day in info["days"]:
            lines.append(f"  {day}  {'complete' if day in done else 'incomplete'}")
        for name, var in info["variables"].items():
            lines.append(f"variable  {name}  {var['dtype']}  ({', '.join(f'{d} {s}' for d, s in zip(var['dims'], var['shape']))})")
        tags = info.get("attrs") or {}
    quality = info.get("quality") or info.get("variables", {}).get("quality", {}).get("quality")
    if quality:
        lines.append(f"quality flags ({quality['pixels']} valid pixels)")
        for flag, pct in quality["percent"].items():
            lines.append(f"  {flag:<16} {_number(pct, 2)} %")
    sigma = info.get("sigma") or info.get("variables", {}).get("sigma", {}).get("sigma")
    if sigma:
        width = max(17, *(len(n) for n in sigma))
        lines.append(f"{'sigma (reflectance)':<{width + 2}} {'min':>8} {'median':>8} {'max':>8}")
        for name, s in sigma.items():
            lines.append(f"  {name:<{width}} {_number(s['min']):>8} {_number(s['median']):>8} {_number(s['max']):>8}")
    if tags:
        lines.append("tags")
        for key, value in tags.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if len(text) > 100 and not isinstance(value, str):  # long JSON: one item a line
                text = json.dumps(value, indent=2, default=str)
            lines.append(f"  {key}: " + text.replace("\n", "\n    "))
    return "\n".join(lines)


def json_ready(value: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
