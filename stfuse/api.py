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
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import xarray as xr

from stfuse import __version__
from stfuse.errors import DataUnavailableError, InputError, OutputError
from stfuse.data.sensors import BANDS, check_bands

if TYPE_CHECKING:
    from stfuse.fusion.quality import Thresholds

log = logging.getLogger("stfuse")

PathLike = str | os.PathLike[str]
IN_MEMORY_BYTES = 2 * 2**30
"""Cubes smaller than this (fine + coarse, bytes) are read into memory once; larger stay lazy."""

ProgressCallback = Callable[[int, int, str], None]
"""Called as ``progress(done, total, label)`` after each unit of work."""


@dataclass(frozen=True)
class FusionResult:
    """One predicted day: ``mean``/``sigma`` (band, y, x) float32 reflectance."""

    mean: xr.DataArray
    sigma: xr.DataArray
    method: str
    tags: dict[str, Any] = field(default_factory=dict)


Refine = Literal["none", "shipped", "scene"]


def fuse(
    fine: xr.DataArray,
    coarse: xr.DataArray,
    coarse_target: xr.DataArray,
    *,
    method: str = "starfm",
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    refine: Refine = "none",
    mc_samples: int = 8,
    seed: int = 0,
    weights: PathLike | None = None,
    variance_scale: float = 1.0,
    scene: tuple[xr.DataArray, xr.DataArray] | None = None,
) -> FusionResult:
    """Predict fine reflectance on the target day from pairs: the pure core.

    ``fine``, ``coarse``: (pair, band, y, x) float32 reflectance, NaN = missing, the coarse
    images already on the fine grid. ``coarse_target``: (band, y, x). Returns mean and sigma
    (standard deviation) with the target's coordinates.

    ``refine``: ``"none"`` (prior only), ``"shipped"`` (the CNN refiner with the weights that
    ship with stfuse) or ``"scene"`` (the refiner first adapted to these pairs, self-supervised,
    when there are two or more; see :mod:`stfuse.fusion.refine`). With a refiner, ``method`` ``auto``
    (or ``estarfm``) uses the Fit-FC + FSDAF ensemble (:func:`stfuse.fusion.refine.predict_hybrid`),
    any other method is refined alone. The refiner runs ``mc_samples`` Monte Carlo dropout
    passes; ``seed`` makes everything reproducible. ``weights``: a refiner checkpoint (from
    ``stfuse train``) instead of the shipped weights; one trained for other bands is refused.
    A prior's variance is multiplied by its factor fitted on simulated days
    (:mod:`stfuse.fusion.prior.calibration`; the hybrid has its own), recorded in the ``calibration`` tag.
    ``variance_scale``: multiply the variance by this factor too, a post-hoc calibration for your
    area (e.g. the scale ``stfuse evaluate --holdout`` fits on withheld Landsat dates); it is
    recorded in the tags (``calibration.user_variance_scale``).
    ``scene``: ``(fine, coarse)`` (pair, band, y, x) the hybrid's variance scale is fitted on, in
    time order; with one pair, the pair and another clear date (:func:`stfuse.fusion.pairs.evidence_day`;
    what catalog mode uses). Default: the pairs (one pair: the fixed scale).
    """
    from stfuse.fusion.prior import changed_fraction, choose_method, method_for_day, predict as prior_predict

    if method == "auto" and refine == "none":
        method = choose_method(fine.sizes["pair"], changed_fraction(coarse.values, coarse_target.values))
    if method == "estarfm" and fine.sizes["pair"] != 2:
        raise InputError(f"method estarfm needs exactly 2 pairs, got {fine.sizes['pair']}; use starfm or auto")
    _check_refine(refine, weights)
    _check_variance_scale(variance_scale)
    arrays = (
        fine.transpose("pair", "band", "y", "x").values,
        coarse.transpose("pair", "band", "y", "x").values,
        coarse_target.transpose("band", "y", "x").values,
    )
    tags: dict[str, Any] = {"options": options or {}, "refine": refine, "seed": seed}
    if refine == "none":
        from stfuse.fusion.prior.calibration import calibration_record

        mean, variance = prior_predict(*arrays, method=method, device=device, **(options or {}))
        record = calibration_record(method, fine.sizes["pair"])
        variance = variance * np.float32(record["variance_scale"])  # the prior's factor from simulated days
    else:
        from stfuse.fusion.refine import load_model

        prior = method_for_day(method, fine.sizes["pair"], hybrid=True)  # auto/estarfm -> the Fit-FC + FSDAF ensemble
        model = load_model(weights, bands=[str(b) for b in coarse_target.band.values]) if weights else None
        scene_arrays = None
        if scene is not None:
            dates = ([str(np.datetime_as_string(t, "D")) for t in scene[0]["pair"].values]
                     if "pair" in scene[0].coords and np.issubdtype(scene[0]["pair"].dtype, np.datetime64) else None)
            scene_arrays = (scene[0], scene[1], dates)
        hybrid = _hybrid_fn(prior, refine, fine, coarse, {}, device, options or {}, mc_samples, seed, base=model,
                            scene=scene_arrays)
        mean, variance = hybrid(*arrays)
        method = f"{hybrid.name}({refine})"
        record = hybrid.calibration(fine.sizes["pair"])  # already applied inside the hybrid
    if variance_scale != 1.0:
        variance = variance * np.float32(variance_scale)
    tags["calibration"] = _calibration_tag(record, variance_scale)
    template = coarse_target.transpose("band", "y", "x")
    mean_da = template.copy(data=mean.astype(np.float32))
    sigma_da = template.copy(data=np.sqrt(np.maximum(variance, 0)).astype(np.float32))
    return FusionResult(mean_da, sigma_da, method, {"method": method, **tags})


def _check_variance_scale(variance_scale: float) -> None:
    """Refuse a variance scale that is not a positive finite number."""
    if isinstance(variance_scale, bool) or not (isinstance(variance_scale, numbers.Real) and np.isfinite(variance_scale)
                                                and variance_scale > 0):
        raise InputError(f"variance scale must be a positive number (1 = as predicted); got {variance_scale!r}")


def _check_refine(refine: str, weights: PathLike | None) -> None:
    """Refuse an unknown refine mode, or a refiner checkpoint with no refiner to use it."""
    if refine not in ("none", "shipped", "scene"):
        raise InputError(f"unknown refine mode {refine!r}; use none, shipped or scene")
    if weights is not None and refine == "none":
        raise InputError("a refiner checkpoint (--weights) is only used with --refine shipped or scene")


def _calibration_tag(record: dict[str, Any], variance_scale: float) -> dict[str, Any]:
    """The ``calibration`` tag: the prior's or the hybrid's record (the factor applied and what
    it was fitted on) plus a user variance scale other than 1."""
    return {**record, **({"user_variance_scale": float(variance_scale)} if variance_scale != 1.0 else {})}


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
    refine: Refine = "none",
    mc_samples: int = 8,
    seed: int = 0,
    weights: PathLike | None = None,
    variance_scale: float = 1.0,
    overwrite: bool = False,
) -> Path:
    """Local-file mode: predict ``coarse``'s day from (fine, coarse) pair files; write ``out``.

    All rasters must share one grid (same shape and transform; all with the same CRS or all
    without). Integer inputs without a band scale are read as reflectance x 10000. Writes a
    float32 COG (reflectance bands, then ``<band>_sigma`` bands) and a STAC item beside it
    (``out`` with suffix ``.json``). Returns the COG path. Other arguments as :func:`fuse`.
    """
    from stfuse.output.io import check_same_grid, crs_of, read_reflectance, transform_of, write_prediction_cog, write_stac_item

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
    result = fuse(fine, coarse_pairs, target, method=method, device=device, options=options, refine=refine, mc_samples=mc_samples, seed=seed,
                  weights=weights, variance_scale=variance_scale)
    ref = arrays[names[0]]
    crs, transform = crs_of(ref), transform_of(ref)
    tags = _provenance(result.method, {"inputs": {"pairs": [[str(f), str(c)] for f, c in pairs], "coarse_target": str(coarse)},
                                       "options": options or {}, "refine": refine, "seed": seed, "mc_samples": mc_samples,
                                       **({"weights": str(weights)} if weights else {}), "calibration": result.tags["calibration"]})
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


def _blocks_of(src, tile: int):
    """Yield ((rows, cols), (C, h, w) array) windows of ``tile`` pixels from an open raster."""
    from rasterio.windows import Window

    for row in range(0, src.height, tile):
        for col in range(0, src.width, tile):
            window = Window(col, row, min(tile, src.width - col), min(tile, src.height - row))
            yield (slice(row, row + window.height), slice(col, col + window.width)), src.read(window=window)


def _prior_fn(method: str, device: str, options: dict[str, Any]):
    """A picklable ``fn(fine, coarse, target) -> (mean, variance)`` for tiles."""
    from functools import partial

    from stfuse.fusion.prior import predict as prior_predict

    return partial(prior_predict, method=method, device=device, **options)


def _hybrid_fn(method: str, refine: str, pair_fine: xr.DataArray, pair_coarse: xr.DataArray, models: dict[Any, Any],
               device: str, options: dict[str, Any], mc_samples: int, seed: int, base: Any = None,
               scene: tuple[xr.DataArray, xr.DataArray, list[str]] | None = None):
    """The tile function of the hybrid for one day (:func:`stfuse.fusion.refine.hybrid_fn`). With
    ``refine="scene"`` and 2+ pairs the model is adapted once to those pairs (the whole area,
    self-supervised) and reused for every day with the same pairs (cached in ``models``), and
    likewise the variance scale fitted on the ``scene`` images ``(fine, coarse, dates)``: the
    pairs, or with one pair the pair and its evidence date (:meth:`stfuse.fusion.refine.HybridFn.fit_scene`;
    default: the pairs). ``method``: the day's prior (:func:`stfuse.fusion.prior.method_for_day` with
    ``hybrid``). ``base``: the starting refiner (a user checkpoint; None = shipped weights)."""
    from stfuse.fusion.refine import adapt_model, hybrid_fn

    prior = method
    key = (prior, tuple(str(t) for t in pair_fine["pair"].values) if "pair" in pair_fine.coords else id(pair_fine))
    if refine == "scene" and pair_fine.sizes["pair"] >= 2:
        if key not in models:
            fine = np.asarray(pair_fine.transpose("pair", "band", "y", "x").values, np.float32)
            coarse = np.asarray(pair_coarse.transpose("pair", "band", "y", "x").values, np.float32)
            models[key] = adapt_model(fine, coarse, prior_fn=prior, init=base, seed=seed, device=device)
        model = models[key]
    else:
        model = base
    hybrid = hybrid_fn(prior, model, mc_samples=mc_samples, seed=seed, device=device, prior_options=options)
    scene_fine, scene_coarse, scene_dates = scene if scene is not None else (pair_fine, pair_coarse, None)
    scale_key = ("scene_scale", refine, *key, *(scene_dates or ()))
    if scale_key not in models:  # the variance scale that follows the scene (not adapted): once per set of images
        models[scale_key] = (hybrid.fit_scene(scene_fine, scene_coarse, n_pairs=pair_fine.sizes["pair"], dates=scene_dates),
                             hybrid.scene_dates)
    hybrid.scene_scale, hybrid.scene_dates = models[scale_key]
    return hybrid


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
    formats: Sequence[str] = ("cog",),
    overwrite: bool = False,
    resume: bool = False,
    tile: int = 1024,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
    strict: bool = False,
    thresholds: "Thresholds | None" = None,
    progress: ProgressCallback | None = None,
    cache: PathLike | None = None,
    coarse_collection: str | None = None,
    refine: Refine = "none",
    mc_samples: int = 8,
    seed: int = 0,
    weights: PathLike | None = None,
    variance_scale: float = 1.0,
) -> list[Path]:
    """Catalog mode: predict every day from ``start`` to ``end`` and write the outputs.

    ``catalog``: a static catalog path, a STAC API URL or provider name (default: the
    bundled ``sample_scenes``; with it, area/dates default to the sample's extent).
    ``bbox``: lon/lat; or ``aoi``: a GeoJSON geometry dict or file. ``formats``: ``cog``
    (``out_dir/stfuse_YYYY-MM-DD.tif`` + a STAC item ``.json`` each) and/or ``zarr``
    (``out_dir/stfuse.zarr``, dims time, band, y, x). Work is tiled (``tile`` pixels plus the
    method's halo) and run on ``scheduler`` (see :func:`stfuse.output.tiling.dask_scheduler`).
    ``resume`` skips days already complete. Doubtful days (see :mod:`stfuse.fusion.quality`) are
    written with warnings in their tags and a per-pixel ``quality`` band; ``strict`` refuses
    them instead. ``cache``: a folder where the loaded cubes are kept as Zarr and reused by
    later runs of the same query (see :func:`stfuse.data.cube.load_cubes`). ``coarse_collection``:
    ``modis-43A4-061`` (MCD43A4 NBAR, default) or ``modis-09GA-061`` (MOD09GA). ``refine``,
    ``mc_samples``, ``seed``: as in :func:`fuse`; with a refiner each day runs the hybrid tile
    by tile (:func:`stfuse.fusion.refine.hybrid_fn`; ``scene`` adapts the model once per set of pairs)
    and its tags record ``refine``/``seed``/``mc_samples``; ``weights``: a refiner checkpoint
    instead of the shipped weights (checked against ``bands`` first). ``variance_scale``:
    as in :func:`fuse`. Returns the written paths (COGs in date order, then the Zarr store).
    """
    from stfuse.data.cube import load_cubes, read_errors
    from stfuse.fusion.pairs import date_range, plan_days, usable_pair_days
    from stfuse.fusion.prior import halo as prior_halo, method_for_day
    from stfuse.fusion.prior.calibration import calibration_record as prior_calibration
    from stfuse.fusion.quality import QUALITY_BITS, Thresholds, assess, quality_band
    from stfuse.output.tiling import dask_scheduler, predict_tiled

    bands = check_bands(bands or BANDS)
    _check_refine(refine, weights)
    _check_variance_scale(variance_scale)
    if weights is not None:
        from stfuse.fusion.refine import load_model

        base_model = load_model(weights, bands=bands)  # refused here, before any search, if its bands differ
    else:
        base_model = None
    unknown_formats = set(formats) - {"cog", "zarr"}
    if unknown_formats or not formats:
        raise InputError(f"unknown output format {sorted(unknown_formats) or formats}; use cog and/or zarr")
    # Pairs may lie outside the target range: search fine/coarse items with a margin.
    cubes = load_cubes(catalog=catalog, bbox=bbox, aoi=aoi, start=start, end=end, bands=bands, crs=crs,
                       margin_days=max_gap_days or 48, cache=cache, coarse_collection=coarse_collection)
    start_date, end_date = cubes.query.start, cubes.query.end
    fine, coarse = cubes.fine, cubes.coarse
    geobox = fine.odc.geobox
    fine_clear = cubes.fine_clear()  # reads the fine images once (small: a few scenes)
    coarse_days = cubes.coarse_days()
    pair_days = usable_pair_days(fine_clear, coarse_days, min_clear=min_clear)
    if not pair_days:
        raise InputError(
            f"no clear fine/coarse pair: the {len(fine_clear)} Landsat images found have clear fractions "
            f"{', '.join(f'{c:.0%}' for c in fine_clear.values())} (need >= {min_clear:.0%}); widen the dates or lower --min-clear"
        )
    first = start_date or min(coarse_days)
    last = end_date or max(coarse_days)
    targets = [d for d in date_range(first, last) if d in set(coarse_days)]
    if not targets:
        raise DataUnavailableError(f"no coarse (MODIS) image between {first} and {last}; widen the date range")
    plans = plan_days(targets, pair_days, max_pairs=max_pairs, max_gap_days=max_gap_days)
    # Only the days used are read: targets and their pairs.
    # With the refiner a single-pair day also reads its evidence date (the scene's error scale).
    fine_days = sorted({d for p in plans for d in (*p.pairs, *((p.evidence,) if p.evidence and refine != "none" else ()))})
    needed = sorted({*fine_days, *(p.target for p in plans)})
    coarse = coarse.sel(time=[np.datetime64(d, "ns") for d in needed])
    fine = fine.sel(time=[np.datetime64(d, "ns") for d in fine_days])
    if fine.reflectance.nbytes + coarse.reflectance.nbytes <= IN_MEMORY_BYTES:
        # Small cubes: read every COG once instead of once per target day.
        import dask

        with read_errors():
            fine, coarse = dask.compute(fine, coarse)
    with read_errors():
        coarse_clear = dict(zip(needed, coarse.clear_fraction.values.tolist()))

    out_dir = Path(out_dir)
    cog_paths = {p.target: out_dir / f"stfuse_{p.target.isoformat()}.tif" for p in plans}
    zarr_path = out_dir / "stfuse.zarr"
    done_cog = {d for d, path in cog_paths.items() if path.exists() and path.with_suffix(".json").exists()} if resume else set()
    if "cog" in formats and not (overwrite or resume):
        existing = [path for path in cog_paths.values() if path.exists()]
        if existing:
            raise OutputError(f"{existing[0]} already exists; pass --overwrite to replace or --resume to continue")
    from rasterio.crs import CRS as RioCRS

    from stfuse.output.io import (create_zarr_output, mark_zarr_day_complete, write_prediction_cog, write_stac_item, write_zarr_tiles,
                     zarr_completed_days, compute_blocks)

    out_crs = RioCRS.from_wkt(geobox.crs.to_wkt())
    if "zarr" in formats:
        if resume and zarr_path.exists():
            done_zarr = zarr_completed_days(zarr_path)
        else:
            create_zarr_output(zarr_path, days=[p.target for p in plans], band_names=bands, crs=out_crs, transform=geobox.transform,
                               shape=(geobox.height, geobox.width), chunk=tile, overwrite=overwrite,
                               attrs={"stfuse_version": __version__, "method": method})
            done_zarr = set()
    day_index = {p.target: i for i, p in enumerate(plans)}
    todo = [p for p in plans if ("cog" in formats and p.target not in done_cog) or ("zarr" in formats and p.target not in done_zarr)]
    if len(todo) < len(plans):
        log.info("resuming: %d of %d days already complete", len(plans) - len(todo), len(plans))

    options = dict(options or {})
    models: dict[Any, Any] = {}  # refine="scene": one adapted model per set of pairs
    thresholds = thresholds or Thresholds()
    outputs: list[Path] = []
    with dask_scheduler(scheduler, workers=workers, threads=threads, memory_limit=memory_limit, device=device), read_errors():
        for done, plan in enumerate(todo, start=1):
            day_method = method_for_day(method, len(plan.pairs), hybrid=refine != "none")
            times = [np.datetime64(d) for d in plan.pairs]
            pair_fine = fine.reflectance.sel(time=times).rename(time="pair")
            pair_coarse = coarse.reflectance.sel(time=times).rename(time="pair")
            target = coarse.reflectance.sel(time=np.datetime64(plan.target))
            if refine == "none":
                result = predict_tiled(pair_fine, pair_coarse, target, predict_fn=_prior_fn(day_method, device, options),
                                       halo=prior_halo(day_method, **options), tile=tile)
                record = prior_calibration(day_method, len(plan.pairs))
                factor = record["variance_scale"] * variance_scale  # the prior's factor from simulated days, then the user's
            else:
                scene_days = tuple(sorted((*plan.pairs, plan.evidence))) if plan.evidence else plan.pairs
                scene_times = [np.datetime64(d) for d in scene_days]
                hybrid = _hybrid_fn(day_method, refine, pair_fine, pair_coarse, models, device, options, mc_samples, seed,
                                    base=base_model, scene=(fine.reflectance.sel(time=scene_times).rename(time="pair"),
                                                            coarse.reflectance.sel(time=scene_times).rename(time="pair"),
                                                            [d.isoformat() for d in scene_days]))
                result = predict_tiled(pair_fine, pair_coarse, target, predict_fn=hybrid, halo=hybrid.halo, tile=tile)
                day_method = hybrid.name + f"({refine})"
                record = hybrid.calibration(len(plan.pairs))  # already applied inside the hybrid
                factor = variance_scale
            sigma = np.sqrt(result["variance"].clip(min=0) * factor)
            flags = quality_band(pair_fine, pair_coarse, target, change_threshold=thresholds.change_threshold)
            changed = float(((flags & QUALITY_BITS["large_change"]) > 0).mean())
            warnings = assess(day=plan.target.isoformat(), coarse_clear=coarse_clear[plan.target], max_gap_days=plan.max_gap_days,
                              changed_fraction=changed, thresholds=thresholds, strict=strict)
            quality = {"coarse_clear_fraction": round(coarse_clear[plan.target], 4), "max_pair_gap_days": plan.max_gap_days,
                       "changed_fraction": round(changed, 4), "warnings": warnings, "bits": QUALITY_BITS}
            tags = _provenance(
                day_method,
                {
                    "target_date": plan.target.isoformat(),
                    "pair_dates": [d.isoformat() for d in plan.pairs],
                    "fine_items": [str(fine.item_id.sel(time=t).item()) for t in times],
                    "coarse_items": [str(coarse.item_id.sel(time=t).item()) for t in (*times, np.datetime64(plan.target))],
                    "catalog": str(catalog) if catalog is not None else "sample_scenes",
                    "options": options,
                    "quality": quality,
                    **({"refine": refine, "seed": seed, "mc_samples": mc_samples} if refine != "none" else {}),
                    "calibration": _calibration_tag(record, variance_scale),
                    **({"weights": str(weights)} if weights else {}),
                },
            )
            label = plan.target.isoformat()
            report = (lambda d, t, label=label, n=done: progress(n - 1 + d / t, len(todo), label)) if progress else None
            cog = cog_paths[plan.target]
            if "cog" in formats and plan.target not in done_cog:
                write_prediction_cog(cog, result["mean"].data, sigma.data, band_names=list(bands), crs=out_crs,
                                     transform=geobox.transform, tags=tags, extra_bands={"quality": flags.data},
                                     overwrite=True, progress=report)
                write_stac_item(
                    cog.with_suffix(".json"), item_id=cog.stem, asset_path=cog,
                    datetime=dt.datetime.combine(plan.target, dt.time(12), tzinfo=dt.timezone.utc),
                    band_names=list(bands), crs=out_crs, transform=geobox.transform, shape=(geobox.height, geobox.width),
                    properties={"stfuse:method": day_method, "stfuse:pair_dates": tags["pair_dates"],
                                "stfuse:quality": quality, "stfuse:version": __version__},
                    extra_bands=("quality",), overwrite=True,
                )
            if "zarr" in formats and plan.target not in done_zarr:
                index = day_index[plan.target]
                n = len(bands)
                if "cog" in formats:
                    import rasterio

                    with rasterio.open(cog) as src:  # reuse the COG just written instead of recomputing
                        blocks = _blocks_of(src, tile)
                        write_zarr_tiles(zarr_path, index, ((w, b[:n], b[n:]) for w, b in blocks))
                else:
                    import dask.array as da

                    stack = da.concatenate([result["mean"].data, sigma.data])
                    write_zarr_tiles(zarr_path, index, ((w, b[:n], b[n:]) for w, b in compute_blocks(stack, block=tile, progress=report)))
                mark_zarr_day_complete(zarr_path, index)
            if progress:
                progress(done, len(todo), label)
    if "cog" in formats:
        outputs += [cog_paths[p.target] for p in plans]
        from stfuse.output.io import write_run_collection

        write_run_collection(out_dir, [cog_paths[p.target].with_suffix(".json") for p in plans],
                             description=f"stfuse {method} predictions from {catalog or 'sample_scenes'}",
                             properties={"method": method, "bands": list(bands), "version": __version__})
    if "zarr" in formats:
        outputs.append(zarr_path)
    return outputs
