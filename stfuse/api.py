"""The documented Python API: what ``stfuse predict`` does, as functions.

- :func:`predict` — catalog mode: search a STAC catalog/API, load both sensors on one 30 m
  grid, choose pairs per day, predict every day in the range, write a COG (+ STAC item) per day.
- :func:`predict_files` — local-file mode: the classic STARFM-family workflow on GeoTIFFs
  already on one grid (georeferenced, or a plain pixel grid without CRS).

Both end in :func:`fuse`, the pure core on labelled arrays.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from . import __version__
from .errors import DataUnavailableError, InputError, OutputError
from .sensors import BANDS, check_bands

log = logging.getLogger("stfuse")

PathLike = str | os.PathLike[str]
ProgressCallback = Callable[[int, int, str], None]
"""Called as ``progress(done, total, label)`` after each unit of work."""


@dataclass(frozen=True)
class FusionResult:
    """One predicted day: ``mean``/``sigma`` (band, y, x) float32 reflectance."""

    mean: xr.DataArray
    sigma: xr.DataArray
    method: str
    tags: dict[str, Any] = field(default_factory=dict)


def fuse(
    fine: xr.DataArray,
    coarse: xr.DataArray,
    coarse_target: xr.DataArray,
    *,
    method: str = "starfm",
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> FusionResult:
    """Predict fine reflectance on the target day from pairs: the pure core.

    ``fine``, ``coarse``: (pair, band, y, x) float32 reflectance, NaN = missing, the coarse
    images already on the fine grid. ``coarse_target``: (band, y, x). Returns mean and sigma
    (standard deviation) with the target's coordinates.
    """
    from .prior import choose_method, predict as prior_predict

    if method == "auto":
        method = choose_method(fine.sizes["pair"])
    if method == "estarfm" and fine.sizes["pair"] != 2:
        raise InputError(f"method estarfm needs exactly 2 pairs, got {fine.sizes['pair']}; use starfm or auto")
    mean, variance = prior_predict(
        fine.transpose("pair", "band", "y", "x").values,
        coarse.transpose("pair", "band", "y", "x").values,
        coarse_target.transpose("band", "y", "x").values,
        method=method,
        device=device,
        **(options or {}),
    )
    template = coarse_target.transpose("band", "y", "x")
    mean_da = template.copy(data=mean.astype(np.float32))
    sigma_da = template.copy(data=np.sqrt(np.maximum(variance, 0)).astype(np.float32))
    return FusionResult(mean_da, sigma_da, method, {"method": method, "options": options or {}})


def _provenance(method: str, extra: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {
        "stfuse_version": __version__,
        "method": method,
        "torch_version": torch.__version__,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        **extra,
    }


def predict_files(
    pairs: Sequence[tuple[PathLike, PathLike]],
    coarse: PathLike,
    out: PathLike,
    *,
    method: str = "starfm",
    bands: Sequence[str] | None = None,
    date: dt.date | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Local-file mode: predict ``coarse``'s day from (fine, coarse) pair files; write ``out``.

    All rasters must share one grid (same shape and transform; all with the same CRS or all
    without). Integer inputs without a band scale are read as reflectance x 10000. Writes a
    float32 COG (reflectance bands, then ``<band>_sigma`` bands) and a STAC item beside it
    (``out`` with suffix ``.json``). Returns the COG path.
    """
    from .io import check_same_grid, crs_of, read_reflectance, transform_of, write_prediction_cog, write_stac_item

    if not pairs:
        raise InputError("give at least one pair: --pair FINE.tif COARSE.tif")
    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"output {out} must be a GeoTIFF path ending in .tif")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it")
    arrays: dict[str, xr.DataArray] = {}
    for fine_path, coarse_path in pairs:
        arrays[str(fine_path)] = read_reflectance(fine_path, bands=bands)
        arrays[str(coarse_path)] = read_reflectance(coarse_path, bands=bands)
    arrays[str(coarse)] = read_reflectance(coarse, bands=bands)
    check_same_grid(arrays)
    names = list(arrays)
    fine = xr.concat([arrays[str(f)] for f, _ in pairs], dim="pair")
    coarse_pairs = xr.concat([arrays[str(c)] for _, c in pairs], dim="pair")
    target = arrays[str(coarse)]
    for label, array in arrays.items():
        if not np.isfinite(array.values).any():
            raise DataUnavailableError(f"{label} has no valid pixels (all nodata); check the file")
    band_names = [str(b) for b in target.band.values]
    if not band_names or all(b.startswith("b") and b[1:].isdigit() for b in band_names):
        band_names = [f"band{i + 1}" for i in range(len(band_names))]
    result = fuse(fine, coarse_pairs, target, method=method, device=device, options=options)
    ref = arrays[names[0]]
    crs, transform = crs_of(ref), transform_of(ref)
    tags = _provenance(result.method, {"inputs": {"pairs": [[str(f), str(c)] for f, c in pairs], "coarse_target": str(coarse)}, "options": options or {}})
    write_prediction_cog(out, result.mean.values, result.sigma.values, band_names=band_names, crs=crs, transform=transform, tags=tags, overwrite=overwrite)
    write_stac_item(
        out.with_suffix(".json"),
        item_id=out.stem,
        asset_path=out,
        datetime=dt.datetime.combine(date, dt.time(12)) if date else None,
        band_names=band_names,
        crs=crs,
        transform=transform,
        shape=(ref.sizes["y"], ref.sizes["x"]),
        properties={"stfuse:method": result.method, "stfuse:version": __version__},
        overwrite=True,
    )
    return out


def predict(
    *,
    catalog: PathLike | None = None,
    bbox: Sequence[float] | None = None,
    aoi: dict[str, Any] | PathLike | None = None,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    bands: Sequence[str] | None = None,
    out_dir: PathLike = "out",
    method: str = "starfm",
    max_pairs: int = 2,
    min_clear: float = 0.3,
    max_gap_days: int | None = None,
    crs: str | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Catalog mode: predict every day from ``start`` to ``end`` and write one COG per day.

    ``catalog``: a static catalog path, a STAC API URL or provider name (default: the
    bundled ``sample_scenes``; with it, bbox/dates default to the sample's extent).
    ``bbox``: lon/lat; or ``aoi``: a GeoJSON geometry dict or file. Outputs go to
    ``out_dir/stfuse_YYYY-MM-DD.tif`` with a STAC item ``.json`` beside each. Returns the
    COG paths in date order.
    """
    from . import catalog as cat
    from .cube import load_coarse, load_fine
    from .pairs import date_range, plan_days, usable_pair_days
    from .sensors import PROVIDERS

    bands = check_bands(bands or BANDS)
    start_date = cat.parse_date(start, name="start") if start is not None else None
    end_date = cat.parse_date(end, name="end") if end is not None else None
    if start_date and end_date and end_date < start_date:
        raise InputError(f"the date range is reversed: start {start_date} is after end {end_date}")
    aoi_geom = cat.read_aoi(aoi) if isinstance(aoi, (str, os.PathLike)) else aoi
    query = cat.Query(start=start_date, end=end_date, bbox=cat.check_bbox(bbox) if bbox is not None else None, aoi=aoi_geom)
    provider = PROVIDERS.get(str(catalog)) if catalog is not None else None
    fine_id = str(provider["fine"]) if provider else "landsat-c2-l2"
    coarse_id = str(provider["coarse"]) if provider and provider["coarse"] else "modis-43A4-061"
    found = cat.search(catalog, query, [fine_id, coarse_id])
    fine_items = cat.require_items(found, fine_id, catalog, query)
    coarse_items = cat.require_items(found, coarse_id, catalog, query)

    fine = load_fine(fine_items, bands=bands, bbox=query.bbox, aoi=query.aoi, crs=crs)
    if fine.sizes["x"] == 0 or fine.sizes["y"] == 0:
        raise DataUnavailableError("the area does not overlap the fine images; check --bbox / --aoi")
    coarse = load_coarse(coarse_items, geobox=fine.odc.geobox, bands=bands)
    fine_days = [d.astype("datetime64[D]").item() for d in fine.time.values]
    coarse_days = [d.astype("datetime64[D]").item() for d in coarse.time.values]
    fine_clear = dict(zip(fine_days, fine.clear_fraction.values.tolist()))
    pair_days = usable_pair_days(fine_clear, coarse_days, min_clear=min_clear)
    first = start_date or min(coarse_days)
    last = end_date or max(coarse_days)
    targets = [d for d in date_range(first, last) if d in set(coarse_days)]
    if not targets:
        raise DataUnavailableError(f"no coarse (MODIS) image between {first} and {last}; widen the date range")
    plans = plan_days(targets, pair_days, max_pairs=max_pairs, max_gap_days=max_gap_days)

    out_dir = Path(out_dir)
    outputs: list[Path] = []
    fine_cache: dict[dt.date, xr.DataArray] = {}
    coarse_cache: dict[dt.date, xr.DataArray] = {}

    def fine_day(day: dt.date) -> xr.DataArray:
        if day not in fine_cache:
            fine_cache[day] = fine.reflectance.sel(time=np.datetime64(day)).compute()
        return fine_cache[day]

    def coarse_day(day: dt.date) -> xr.DataArray:
        if day not in coarse_cache:
            coarse_cache[day] = coarse.reflectance.sel(time=np.datetime64(day)).compute()
        return coarse_cache[day]

    geobox = fine.odc.geobox
    from rasterio.crs import CRS as RioCRS

    out_crs = RioCRS.from_wkt(geobox.crs.to_wkt())
    for done, plan in enumerate(plans, start=1):
        out = out_dir / f"stfuse_{plan.target.isoformat()}.tif"
        if out.exists() and not overwrite:
            raise OutputError(f"{out} already exists; pass --overwrite to replace it")
        pair_fine = xr.concat([fine_day(d) for d in plan.pairs], dim="pair")
        pair_coarse = xr.concat([coarse_day(d) for d in plan.pairs], dim="pair")
        target = coarse_day(plan.target)
        result = fuse(pair_fine, pair_coarse, target, method=method, device=device, options=options)
        tags = _provenance(
            result.method,
            {
                "target_date": plan.target.isoformat(),
                "pair_dates": [d.isoformat() for d in plan.pairs],
                "fine_items": [str(fine.item_id.sel(time=np.datetime64(d)).item()) for d in plan.pairs],
                "coarse_items": [str(coarse.item_id.sel(time=np.datetime64(d)).item()) for d in (*plan.pairs, plan.target)],
                "catalog": str(catalog) if catalog is not None else "sample_scenes",
                "options": options or {},
            },
        )
        from .io import write_prediction_cog, write_stac_item

        write_prediction_cog(out, result.mean.values, result.sigma.values, band_names=list(bands), crs=out_crs, transform=geobox.transform, tags=tags, overwrite=overwrite)
        write_stac_item(
            out.with_suffix(".json"),
            item_id=out.stem,
            asset_path=out,
            datetime=dt.datetime.combine(plan.target, dt.time(12), tzinfo=dt.timezone.utc),
            band_names=list(bands),
            crs=out_crs,
            transform=geobox.transform,
            shape=(geobox.height, geobox.width),
            properties={"stfuse:method": result.method, "stfuse:pair_dates": tags["pair_dates"], "stfuse:version": __version__},
            overwrite=True,
        )
        outputs.append(out)
        for day in list(fine_cache):
            if all(day not in p.pairs for p in plans[done:done + 1]):
                fine_cache.pop(day)
        coarse_cache.pop(plan.target, None) if plan.target not in plan.pairs else None
        if progress:
            progress(done, len(plans), plan.target.isoformat())
    return outputs
