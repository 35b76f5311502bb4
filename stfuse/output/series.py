"""A pixel's daily series with sigma, read back from the outputs of ``stfuse predict``.

The outputs are a folder of daily COGs (``stfuse_YYYY-MM-DD.tif``: reflectance bands, then
``<band>_sigma``, then ``quality``), one such COG, or the Zarr store (``stfuse.zarr``:
``reflectance``/``sigma`` (time, band, y, x), ``quality`` (time, y, x), ``complete`` (time)).
Points are given in lon/lat degrees (EPSG:4326) and transformed to the outputs' CRS.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from stfuse.errors import InputError, MissingFileError
from stfuse.evaluate.report import read_pixel_series, timeseries_plot
from stfuse.output.io import atomic_path

PathLike = str | os.PathLike[str]
LonLat = tuple[float, float]

_DAY_FILE = re.compile(r"stfuse_(\d{4}-\d{2}-\d{2})\.tif$")


def pixel_series(path: PathLike, points: Sequence[LonLat], *, bands: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every day's reflectance, sigma and quality flags at ``points`` in the outputs at ``path``.

    ``path``: a folder of daily COGs from ``stfuse predict``, one such COG, or its Zarr store
    (only days marked complete). ``points``: (lon, lat) in degrees; each is located in the
    outputs' grid (refused when outside it). ``bands``: reflectance bands to read (default all).
    Returns one row per day and point, in date then point order: ``{"date": "YYYY-MM-DD",
    "lon", "lat", "row", "col", "<band>", "<band>_sigma", ..., "quality"}``; reflectance and
    sigma as float (NaN where there is no prediction), quality as int (None when the outputs
    have no quality band).
    """
    if not points:
        raise InputError("give at least one point (--point LON LAT)")
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} not found; give the -o folder (or its stfuse.zarr) of `stfuse predict`")
    if _is_zarr(path):
        return _zarr_series(path, points, bands)
    return _cog_series(path, points, bands)


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and (path.suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zgroup").exists())


def _locate(points: Sequence[LonLat], crs: CRS | None, transform: Affine, shape: tuple[int, int], where: Path) -> list[tuple[int, int]]:
    """(row, col) of each (lon, lat) in a grid; InputError naming the grid's extent when outside."""
    if crs is None:
        raise InputError(f"{where} has no CRS, so a lon/lat point cannot be located in it")
    for lon, lat in points:
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise InputError(f"point ({lon}, {lat}) is not a lon/lat in degrees; give --point LON LAT")
    xs, ys = warp_transform(CRS.from_epsg(4326), crs, [p[0] for p in points], [p[1] for p in points])
    height, width = shape
    out = []
    for (lon, lat), x, y in zip(points, xs, ys):
        col_f, row_f = ~transform * (x, y)
        row, col = math.floor(row_f), math.floor(col_f)
        if not (0 <= row < height and 0 <= col < width):
            left, top = transform * (0, 0)
            right, bottom = transform * (width, height)
            w, s, e, n = transform_bounds(crs, CRS.from_epsg(4326), min(left, right), min(top, bottom),
                                          max(left, right), max(top, bottom))
            raise InputError(f"point ({lon}, {lat}) is outside the grid of {where}, which covers lon {w:.5f} .. {e:.5f}, "
                             f"lat {s:.5f} .. {n:.5f}")
        out.append((row, col))
    return out


def _rows(days: Sequence[str], points: Sequence[LonLat], pixels: Sequence[tuple[int, int]], bands: Sequence[str],
          values: np.ndarray, sigmas: np.ndarray, quality: np.ndarray | None) -> list[dict[str, Any]]:
    """Rows of :func:`pixel_series` from arrays (day, band, point) and quality (day, point)."""
    rows = []
    for t, day in enumerate(days):
        for k, ((lon, lat), (row, col)) in enumerate(zip(points, pixels)):
            entry: dict[str, Any] = {"date": day, "lon": float(lon), "lat": float(lat), "row": row, "col": col}
            for j, b in enumerate(bands):
                entry[b] = float(values[t, j, k])
                entry[f"{b}_sigma"] = float(sigmas[t, j, k])
            q = None if quality is None else quality[t, k]
            entry["quality"] = None if q is None or not np.isfinite(q) else int(q)
            rows.append(entry)
    return rows


def _pick_bands(available: Sequence[str], bands: Sequence[str] | None, where: Path) -> list[str]:
    if bands is None:
        return list(available)
    unknown = [b for b in bands if b not in available]
    if unknown:
        raise InputError(f"band {unknown[0]!r} is not in {where} (it has {', '.join(available)})")
    return list(bands)


def daily_files(path: Path) -> list[tuple[str, Path]]:
    """(ISO day, path) of the daily COGs in a folder of ``stfuse predict`` outputs (or one COG), in date order."""
    if path.is_file():
        m = _DAY_FILE.search(path.name)
        if not m:
            raise InputError(f"{path} is not a daily output of `stfuse predict` (stfuse_YYYY-MM-DD.tif)")
        return [(m.group(1), path)]
    files = sorted((m.group(1), p) for p in path.iterdir() if (m := _DAY_FILE.search(p.name)))
    if not files:
        raise InputError(f"{path} has no stfuse_YYYY-MM-DD.tif files (nor is it a Zarr store); run `stfuse predict -o {path}` first")
    return files


def _cog_series(path: Path, points: Sequence[LonLat], bands: Sequence[str] | None) -> list[dict[str, Any]]:
    files = daily_files(path)
    with rasterio.open(files[0][1]) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
        names = [d or f"b{i + 1}" for i, d in enumerate(src.descriptions)]
    pixels = _locate(points, crs, transform, shape, files[0][1])
    reflectance = [n for n in names if not n.endswith("_sigma") and n != "quality"]
    chosen = _pick_bands(reflectance, bands, files[0][1])
    with_quality = "quality" in names
    days, values, sigmas = read_pixel_series(files, [*chosen, *(["quality"] if with_quality else [])], pixels, shape)
    quality = values[:, -1, :] if with_quality else None
    n = len(chosen)
    return _rows([d.isoformat() for d in days], points, pixels, chosen, values[:, :n], sigmas[:, :n], quality)


def _zarr_series(path: Path, points: Sequence[LonLat], bands: Sequence[str] | None) -> list[dict[str, Any]]:
    ds = xr.open_zarr(path)
    if "reflectance" not in ds or "sigma" not in ds:
        raise InputError(f"{path} is not an stfuse Zarr store (no reflectance/sigma variables)")
    wkt = ds["spatial_ref"].attrs.get("crs_wkt") if "spatial_ref" in ds.coords else None
    crs = CRS.from_wkt(wkt) if wkt else None
    xs, ys = ds["x"].values, ds["y"].values
    geotransform = ds["spatial_ref"].attrs.get("GeoTransform") if "spatial_ref" in ds.coords else None
    if geotransform:
        c, a, b, f, d, e = (float(v) for v in str(geotransform).split())
        transform = Affine(a, b, c, d, e, f)
    else:  # from the pixel-centre coordinates
        dx = float(xs[1] - xs[0]) if len(xs) > 1 else 1.0
        dy = float(ys[1] - ys[0]) if len(ys) > 1 else -1.0
        transform = Affine(dx, 0, float(xs[0]) - dx / 2, 0, dy, float(ys[0]) - dy / 2)
    pixels = _locate(points, crs, transform, (len(ys), len(xs)), path)
    chosen = _pick_bands([str(b) for b in ds["band"].values], bands, path)
    if "complete" in ds:
        ds = ds.isel(time=np.flatnonzero(np.asarray(ds["complete"].values)))
    if ds.sizes["time"] == 0:
        raise InputError(f"{path} has no complete day yet; finish it with `stfuse predict --format zarr --resume`")
    iy = xr.DataArray([p[0] for p in pixels], dims="point")
    ix = xr.DataArray([p[1] for p in pixels], dims="point")
    at = ds.isel(y=iy, x=ix).sel(band=chosen)
    values = at["reflectance"].transpose("time", "band", "point").values.astype(np.float64)
    sigmas = at["sigma"].transpose("time", "band", "point").values.astype(np.float64)
    quality = at["quality"].transpose("time", "point").values.astype(np.float64) if "quality" in at else None
    days = [np.datetime64(t, "D").item().isoformat() for t in ds["time"].values]
    return _rows(days, points, pixels, chosen, values, sigmas, quality)


def write_series_csv(rows: Sequence[dict[str, Any]], path: PathLike, *, overwrite: bool = False) -> Path:
    """Write :func:`pixel_series` rows as CSV (columns in the rows' order; NaN and None as empty cells)."""
    if not rows:
        raise InputError("no rows to write")
    path = Path(path)
    columns = list(rows[0])
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    return path


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def series_plot(path: PathLike, points: Sequence[LonLat], out_png: PathLike, *, bands: Sequence[str] | None = None,
                catalog: PathLike | None = None, observations: bool = False) -> Path:
    """A PNG of the series at ``points`` (:func:`stfuse.evaluate.report.timeseries_plot`):
    prediction ± 1 sigma per band (and NDVI with red and nir08), one row per point; with
    ``observations`` the clear Landsat values of ``catalog`` (None: the sample) as dots.
    ``path``: a folder of daily COGs (a Zarr store cannot be plotted: give its COG folder)."""
    path = Path(path)
    if _is_zarr(path) or not path.is_dir():
        raise InputError(f"a PNG is drawn from the folder of daily COGs, not from {path}; "
                         "give the -o folder of `stfuse predict --format cog`, or drop --png")
    files = daily_files(path)
    with rasterio.open(files[0][1]) as src:
        pixels = _locate(points, src.crs, src.transform, (src.height, src.width), files[0][1])
    return timeseries_plot(path, catalog, pixels, out_png, bands=bands, observations=observations,
                           title=" | ".join(f"({lon:.5f}, {lat:.5f})" for lon, lat in points))


__all__ = ["daily_files", "pixel_series", "series_plot", "write_series_csv"]
