"""Writing a fused cube: a COG + STAC item per day and/or one Zarr store, resumable.

:func:`write_fused` is what :func:`stfuse.predict` does after :func:`stfuse.fused.plan_fused`:
for every planned day, prepare its predictor, check the day's quality gates, compute it tile by
tile and write it (COG staged then renamed; a Zarr day marked complete after all its tiles).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import dask
import numpy as np
import rasterio
from rasterio.crs import CRS as RioCRS
from rasterio.windows import Window

from stfuse import __version__
from stfuse.data.cube import read_errors
from stfuse.errors import InputError, OutputError
from stfuse.fused import Fused, calibration_tag, provenance
from stfuse.fusion.pairs import Plan
from stfuse.fusion.quality import QUALITY_BITS, assess
from stfuse.output.io import (
    FLAG_BANDS,
    check_zarr_store,
    compute_blocks,
    create_zarr_output,
    extend_zarr_days,
    mark_zarr_day_complete,
    repair_zarr_output,
    write_prediction_cog,
    write_run_collection,
    write_stac_item,
    write_zarr_tiles,
    zarr_completed_days,
    zarr_days,
)
from stfuse.output.tiling import dask_scheduler

log = logging.getLogger("stfuse")

ProgressCallback = Callable[[float, int, str], None]
"""Called as ``progress(done, total, label)`` as work advances (``done`` may be fractional)."""


class Outputs(list):
    """The written paths (COGs in date order, then the Zarr store), with what this run did:
    ``days`` (the run's days, in date order), ``days_written`` (computed now) and
    ``days_skipped`` (already complete, with ``resume``)."""

    days: tuple[dt.date, ...] = ()
    days_written: int = 0
    days_skipped: int = 0


def cog_path(out_dir: Path, day: dt.date) -> Path:
    """Where a day's COG goes: ``out_dir/stfuse_YYYY-MM-DD.tif`` (its STAC item: ``.json``)."""
    return out_dir / f"stfuse_{day.isoformat()}.tif"


def check_output_dir(out_dir: Path, formats: tuple[str, ...], *, overwrite: bool, resume: bool) -> None:
    """Refuse, before any search or load, an output folder that cannot be written as asked: a
    ``.tif`` path (catalog mode writes a folder), a file, or existing outputs without
    ``overwrite``/``resume``."""
    if out_dir.suffix.lower() in (".tif", ".tiff"):
        raise InputError(f"catalog mode writes a folder of daily COGs, not {out_dir}; give a folder with -o "
                         "(a single .tif output is local-file mode: --pair FINE COARSE --coarse TARGET)")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a folder; give another -o")
    if overwrite or resume or not out_dir.is_dir():
        return
    existing = sorted(out_dir.glob("stfuse_*.tif")) if "cog" in formats else []
    if "zarr" in formats and (out_dir / "stfuse.zarr").exists():
        existing.append(out_dir / "stfuse.zarr")
    if existing:
        raise OutputError(f"{existing[0]} already exists; pass --overwrite to replace or --resume to continue "
                          "(Python: overwrite=True / resume=True), or choose another output folder")


def _blocks_of(src: Any, tile: int) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    """Yield ((rows, cols), (C, h, w) array) windows of ``tile`` pixels from an open raster."""
    for row in range(0, src.height, tile):
        for col in range(0, src.width, tile):
            window = Window(col, row, min(tile, src.width - col), min(tile, src.height - row))
            yield (slice(row, row + window.height), slice(col, col + window.width)), src.read(window=window)


def write_fused(fused: Fused, *, progress: ProgressCallback | None = None) -> Outputs:
    """Write every planned day of ``fused`` as ``fused.run`` asks; returns the output paths
    (:class:`Outputs`: COGs in date order, then the Zarr store). See :func:`stfuse.predict`.

    With ``run.resume`` a day is skipped only when its outputs exist and match this request:
    a COG (and its STAC item) whose bands, dtype, method, refine, options, variance scale,
    pairs, fill days and items (its tags, :func:`_cog_mismatch`) are this run's; any other is
    recomputed (an INFO line says why), in the Zarr store too. The Zarr store is continued only
    if its grid, dtype, bands and settings (its attributes, :func:`_zarr_settings`) are this
    run's, else refused (:class:`~stfuse.errors.OutputError`: a store keeps one set of bands;
    other bands or settings go to another folder); days it lacks, later or earlier, are added
    to its time axis, kept ascending (:func:`stfuse.output.io.extend_zarr_days`). All of this
    is checked before the first day is written."""
    run, fusion, bands, geobox, plans = fused.run, fused.fusion, fused.bands, fused.geobox, fused.plans
    out_dir = Path(run.out_dir)
    cogs = {p.target: cog_path(out_dir, p.target) for p in plans}
    zarr_path = out_dir / "stfuse.zarr"
    check_output_dir(out_dir, run.formats, overwrite=run.overwrite, resume=run.resume)  # stfuse.predict checked before the search
    out_crs = RioCRS.from_wkt(geobox.crs.to_wkt())
    shape, days = (geobox.height, geobox.width), [p.target for p in plans]
    if "zarr" in run.formats and run.resume and repair_zarr_output(zarr_path):
        log.warning("repaired %s: a run was killed while adding days to it", zarr_path)
    continue_zarr = "zarr" in run.formats and run.resume and zarr_path.exists()
    if continue_zarr:  # refused here, before anything is written
        check_zarr_store(zarr_path, band_names=bands, crs=out_crs, transform=geobox.transform, shape=shape, dtype=run.dtype,
                         settings=_zarr_settings(fusion))
    done_cog: set[dt.date] = set()
    stale_cog: set[dt.date] = set()  # written before, but not as this run asks: recomputed in every format
    if run.resume and "cog" in run.formats:
        for plan in plans:
            path = cogs[plan.target]
            if not (path.exists() and path.with_suffix(".json").exists()):
                continue
            why = _cog_mismatch(path, _expected_tags(fused, plan), fused, out_crs)
            if why:
                log.info("%s: %s; recomputing", plan.target.isoformat(), why)
                stale_cog.add(plan.target)
            else:
                done_cog.add(plan.target)
    done_zarr: set[dt.date] = set()
    day_index: dict[dt.date, int] = {}
    if "zarr" in run.formats:
        if continue_zarr:
            added = extend_zarr_days(zarr_path, days)
            if added:
                log.info("adding %d day(s) to %s (%s .. %s)", len(added), zarr_path, added[0], added[-1])
            done_zarr = zarr_completed_days(zarr_path) - stale_cog
        else:
            create_zarr_output(zarr_path, days=days, band_names=bands, crs=out_crs, transform=geobox.transform,
                               shape=shape, chunk=run.tile, overwrite=run.overwrite, dtype=run.dtype,
                               attrs={"stfuse_version": __version__, **_zarr_settings(fusion)})
        day_index = {day: i for i, day in enumerate(zarr_days(zarr_path))}
    todo = [p for p in plans if ("cog" in run.formats and p.target not in done_cog)
            or ("zarr" in run.formats and p.target not in done_zarr)]
    if len(todo) < len(plans):
        log.info("resuming: %d of %d days already complete", len(plans) - len(todo), len(plans))
    if todo:
        fused.read_days(todo)  # only the days still to compute
    def write(plan: Plan, report: Callable[[int, int], None] | None) -> None:
        _write_day(fused, plan, cogs[plan.target] if plan.target not in done_cog and "cog" in run.formats else None,
                   (zarr_path, day_index[plan.target]) if "zarr" in run.formats and plan.target not in done_zarr else None,
                   report, out_crs)

    at_once = days_at_once(fused, len(todo))
    with dask_scheduler(run.scheduler, workers=run.workers, threads=run.threads, memory_limit=run.memory_limit,
                        device=fusion.device), read_errors():
        if at_once > 1:
            _write_days_concurrently(todo, write, at_once, progress)
        else:
            for done, plan in enumerate(todo, start=1):
                label = plan.target.isoformat()
                write(plan, (lambda d, t, label=label, n=done: progress(n - 1 + d / t, len(todo), label)) if progress else None)
                if progress:
                    progress(done, len(todo), label)
    outputs = Outputs()
    outputs.days_written, outputs.days_skipped = len(todo), len(plans) - len(todo)
    outputs.days = tuple(sorted(p.target for p in plans))
    if "cog" in run.formats:
        outputs += [cogs[p.target] for p in plans]
        write_run_collection(out_dir, [cogs[p.target].with_suffix(".json") for p in plans],
                             description=f"stfuse {fusion.method} predictions from {fused.query.source}",
                             properties={"method": fusion.method, "bands": list(bands), "version": __version__})
    if "zarr" in run.formats:
        outputs.append(zarr_path)
    return outputs


_ZARR_LOCK = threading.Lock()
MAX_DAYS_AT_ONCE = 4
"""Most days :func:`write_fused` computes at once (:func:`days_at_once`)."""


def days_at_once(fused: Fused, n_days: int) -> int:
    """How many days :func:`write_fused` computes at once: one per core (at most
    :data:`MAX_DAYS_AT_ONCE`) when the area is a single tile on CPU with the default threaded
    scheduler, since a day's single tile otherwise leaves cores idle (Fit-FC and FSDAF are
    largely sequential); else 1 (the tiles of a day already spread over the cores or workers).
    Each day is computed exactly as alone, so the outputs do not depend on it."""
    run = fused.run
    one_tile = fused.geobox.height <= run.tile and fused.geobox.width <= run.tile
    if run.scheduler is not None or fused.fusion.device != "cpu" or not one_tile:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_DAYS_AT_ONCE, n_days))


def _write_days_concurrently(plans: list[Plan], write: Callable[[Plan, Any], None], workers: int,
                             progress: ProgressCallback | None) -> None:
    """``write(plan, None)`` for every plan on ``workers`` threads (torch single-threaded in each);
    progress per finished day, in date order (a day is reported once it and every earlier day are
    done); a failure stops the days not yet started and is raised."""
    import torch

    with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = [pool.submit(write, plan, None) for plan in plans]
        try:
            for done, (future, plan) in enumerate(zip(futures, plans), start=1):
                future.result()
                if progress:
                    progress(done, len(plans), plan.target.isoformat())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _zarr_settings(fusion: Any) -> dict[str, Any]:
    """What made the values of a Zarr store, kept in its attributes (:func:`create_zarr_output`)
    and compared when a run continues it (:func:`check_zarr_store`): method, refine, prior
    options, variance scale, Landsat-date pass-through, the pair choice (max pairs, gap filling,
    min clear, max gap) and, with a refiner, its seed, Monte Carlo samples and weights."""
    settings = {"method": fusion.method, "refine": fusion.refine, "options": _plain(fusion.prior_options),
                "variance_scale": float(fusion.variance_scale), "observed": bool(fusion.observed), "max_pairs": fusion.max_pairs,
                "max_fill": fusion.max_fill, "min_clear": float(fusion.min_clear), "max_gap_days": fusion.max_gap_days}
    if fusion.refine != "none":
        settings.update(seed=fusion.seed, mc_samples=fusion.mc_samples, weights=str(fusion.weights) if fusion.weights else None)
    return settings


def _plain(value: Any) -> Any:
    """``value`` as its JSON tag reads back (tuples as lists, paths as text)."""
    return json.loads(json.dumps(value, default=str))


def _tag(tags: dict[str, str], key: str, default: Any) -> Any:
    """A COG tag decoded as :func:`stfuse.output.io.write_prediction_cog` encoded it (JSON unless a string)."""
    if key not in tags:
        return default
    try:
        return json.loads(tags[key])
    except ValueError:
        return tags[key]


def _expected_tags(fused: Fused, plan: Plan) -> dict[str, Any]:
    """What a day's COG written by this run records (compared by :func:`_cog_mismatch`)."""
    fusion = fused.fusion
    fine_items, coarse_items = fused.item_ids(plan)
    expected = {"bands": list(fused.bands), "dtype": fused.run.dtype, "method": fused._unprepared(plan)[0], "refine": fusion.refine,
                "options": _plain(fusion.prior_options), "variance scale": float(fusion.variance_scale),
                "pair dates": [d.isoformat() for d in plan.pairs], "fill dates": [d.isoformat() for d in plan.fill_dates],
                "items": [*fine_items, *coarse_items]}
    if fusion.refine != "none":
        expected.update({"seed": fusion.seed, "mc_samples": fusion.mc_samples, "weights": str(fusion.weights) if fusion.weights else None})
    return expected


def _cog_mismatch(path: Path, expected: dict[str, Any], fused: Fused, crs: RioCRS) -> str | None:
    """Why the existing COG ``path`` is not what this run would write: another grid (CRS,
    transform, size) than ``fused``'s, or tags other than ``expected`` (:func:`_expected_tags`),
    e.g. ``"bands differ (red,nir08 vs blue)"``; None when it is."""
    try:
        with rasterio.open(path) as src:
            descriptions, dtype, tags = src.descriptions, src.dtypes[0], src.tags()
            size, transform, file_crs = (src.width, src.height), src.transform, src.crs
    except rasterio.errors.RasterioIOError:
        return "its COG cannot be read"
    geobox = fused.geobox
    if size != (geobox.width, geobox.height) or file_crs != crs or not transform.almost_equals(geobox.transform, precision=1e-6):
        return f"grid differs ({size[0]} x {size[1]} pixels at {transform.c:.1f}, {transform.f:.1f} vs " \
               f"{geobox.width} x {geobox.height} at {geobox.transform.c:.1f}, {geobox.transform.f:.1f})"
    calibration = _tag(tags, "calibration", {})
    found = {"bands": [d for d in descriptions if d and not d.endswith("_sigma") and d not in FLAG_BANDS], "dtype": dtype,
             "method": _tag(tags, "method", None), "refine": _tag(tags, "refine", "none"), "options": _tag(tags, "options", {}),
             "variance scale": float(calibration.get("user_variance_scale", 1.0)) if isinstance(calibration, dict) else None,
             "pair dates": _tag(tags, "pair_dates", None), "fill dates": _tag(tags, "fill_dates", []),
             "items": [*_tag(tags, "fine_items", []), *_tag(tags, "coarse_items", [])],
             "seed": _tag(tags, "seed", None), "mc_samples": _tag(tags, "mc_samples", None), "weights": _tag(tags, "weights", None)}
    series = calibration.get("series") if isinstance(calibration, dict) else None
    if isinstance(series, dict) and series.get("applied") is False and str(expected["method"]).startswith("series("):
        found["method"] = expected["method"]  # a series day that fell back is tagged blend: the same request
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, list) else json.dumps(v) if isinstance(v, dict) else str(v)  # noqa: E731
    differ = [f"{key} {'differ' if key.endswith('s') and key != 'variance scale' else 'differs'}"
              + ("" if key == "items" else f" ({shown(found[key])} vs {shown(value)})")
              for key, value in expected.items() if found[key] != value]
    return ", ".join(differ) or None


def _collections_tag(fused: Fused) -> dict[str, Any]:
    """``collections``: the fine and coarse collections the query searched (#30: VIIRS after MODIS), if known."""
    cubes = getattr(fused, "cubes", None)
    fine, coarse = getattr(cubes, "fine_collection", ""), getattr(cubes, "coarse_collection", "")
    return {"collections": {"fine": fine, "coarse": coarse}} if fine or coarse else {}


def _day_tags(fused: Fused, plan: Plan, name: str, record: dict[str, Any], quality: dict[str, Any]) -> dict[str, Any]:
    """The tags of one day's outputs (provenance, pairs, items, quality, calibration)."""
    fusion = fused.fusion
    fine_items, coarse_items = fused.item_ids(plan)
    return provenance(name, {
        "target_date": plan.target.isoformat(),
        "pair_dates": [d.isoformat() for d in plan.pairs],
        **({"fill_dates": [d.isoformat() for d in plan.fill_dates]} if plan.fills else {}),
        "fine_items": fine_items,
        "coarse_items": coarse_items,
        "catalog": fused.query.source,
        **_collections_tag(fused),
        "options": fusion.prior_options,
        "quality": quality,
        **({"refine": fusion.refine, "seed": fusion.seed, "mc_samples": fusion.mc_samples} if fusion.refine != "none" else {}),
        "calibration": calibration_tag(record, fusion.variance_scale),
        **({"weights": str(fusion.weights)} if fusion.weights else {}),
    })


def _write_day(fused: Fused, plan: Plan, cog: Path | None, zarr: tuple[Path, int] | None,
               report: Callable[[int, int], None] | None, out_crs: RioCRS) -> None:
    """Predict one day and write it to its COG (+ STAC item) and/or its Zarr slot."""
    fusion, bands, geobox, tile = fused.fusion, fused.bands, fused.geobox, fused.run.tile
    predictor = fused.predictor(plan)
    day = fused.day(plan, predictor)
    flags = day["quality"]
    share = {name: ((flags & QUALITY_BITS[name]) > 0).mean() for name in ("large_change", "filled")}
    share = {name: float(v) for name, v in zip(share, dask.compute(*share.values()))}  # the flags computed once for both
    changed = share["large_change"]
    coarse_clear = fused.coarse_clear(plan.target)
    warnings = assess(day=plan.target.isoformat(), coarse_clear=coarse_clear, max_gap_days=plan.max_gap_days,
                      changed_fraction=changed, thresholds=fusion.thresholds, strict=fusion.strict)
    quality = {"coarse_clear_fraction": round(coarse_clear, 4), "max_pair_gap_days": plan.max_gap_days,
               "changed_fraction": round(changed, 4), "warnings": warnings, "bits": QUALITY_BITS}
    if plan.fills:
        quality["filled_fraction"] = round(share["filled"], 4)
    tags = _day_tags(fused, plan, predictor.name, predictor.calibration(), quality)
    if cog is not None:
        write_prediction_cog(cog, day["mean"].data, day["sigma"].data, band_names=list(bands), crs=out_crs,
                             transform=geobox.transform, tags=tags, extra_bands={"quality": flags.data},
                             dtype=fused.run.dtype, compress=fused.run.compress, overwrite=True, progress=report)
        write_stac_item(
            cog.with_suffix(".json"), item_id=cog.stem, asset_path=cog,
            datetime=dt.datetime.combine(plan.target, dt.time(12), tzinfo=dt.timezone.utc),
            band_names=list(bands), crs=out_crs, transform=geobox.transform, shape=(geobox.height, geobox.width),
            properties={"stfuse:method": predictor.name, "stfuse:pair_dates": tags["pair_dates"],
                        **({"stfuse:fill_dates": tags["fill_dates"]} if "fill_dates" in tags else {}),
                        "stfuse:quality": quality, "stfuse:version": __version__},
            extra_bands=("quality",), dtype=fused.run.dtype, overwrite=True,
        )
    if zarr is not None:
        zarr_path, index = zarr
        n = len(bands)
        if cog is not None:
            with rasterio.open(cog) as src:  # reuse the COG just written instead of recomputing (same dtype)
                write_zarr_tiles(zarr_path, index, ((w, b[:n], b[n:2 * n], b[2 * n]) for w, b in _blocks_of(src, tile)))
        else:
            import dask.array as da

            stack = da.concatenate([day["mean"].data, day["sigma"].data, da.asarray(flags.data[None]).astype(np.float32)])
            write_zarr_tiles(zarr_path, index, ((w, b[:n], b[n:2 * n], b[2 * n]) for w, b in
                                                compute_blocks(stack, block=tile, progress=report)))
        with _ZARR_LOCK:  # one flag array for all days: concurrent days must not interleave its writes
            mark_zarr_day_complete(zarr_path, index)
