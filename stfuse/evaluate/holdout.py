"""Leave-one-date-out holdout (``stfuse evaluate --holdout``): withhold each clear Landsat date
of a catalog query in turn, predict it from the other pairs and that day's MODIS image with the
same per-day path as :func:`stfuse.predict`, and score it on the withheld image's clear pixels."""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import dask
import numpy as np
from affine import Affine
from rasterio.crs import CRS

from stfuse.api import fuse, fuse_with
from stfuse.config import FusionConfig, Query, resolve_configs
from stfuse.data.catalog import describe_dates
from stfuse.data.cube import load_cubes, read_errors
from stfuse.errors import DataUnavailableError, InputError
from stfuse.evaluate.files import calibration
from stfuse.evaluate.metrics import score_arrays, spearman_error_sigma, without_one_band_sam
from stfuse.fused import pair_inputs, provenance, series_predictor, uses_series
from stfuse.fusion.kalman import kalman_predictor
from stfuse.fusion.pairs import Plan, plan_day, series_plan, usable_pair_days
from stfuse.fusion.prior import method_for_day
from stfuse.fusion.quality import QUALITY_BITS, assess, quality_band
from stfuse.fusion.uncertainty import coverage, fit_variance_scale, leave_one_out_coverage
from stfuse.output.io import atomic_path, write_prediction_cog

log = logging.getLogger("stfuse")
PathLike = str | os.PathLike[str]

HOLDOUT_COLUMNS: tuple[str, ...] = (
    "date", "band", "method", "pairs", "fill_dates", "clear_fraction", "n_valid",
    "rmse", "mae", "bias", "cc", "ssim", "psnr", "coverage_68", "coverage_95", "spearman", "ergas", "sam_deg",
    "rmse_unfilled",
)
"""Columns of ``holdout.csv``: one row per (date, band) plus a row ``band = all`` per date.

``pairs``: the pair dates used, ``;``-separated; ``fill_dates``: the farther dates whose clear
pixels filled the pairs' cloudy ones (``--fill``), ``;``-separated. ``clear_fraction``: of the withheld image.
``n_valid``: pixels scored (clear in the withheld image and predicted; for ``all``, in every
band). ``coverage_68``/``coverage_95``: fraction of truth inside ``mean ± z sigma``.
``spearman``: rank correlation of ``|error|`` and ``sigma``. ``ergas``, ``sam_deg``: only on
``all`` rows (they are multi-band); ``sam_deg`` empty with one band (a spectral angle needs 2+). On ``all`` rows the per-band metrics are band means.
``rmse_unfilled``: with ``compare_unfilled``, the RMSE of the same date predicted from its pairs
without gap filling (the two nearest pairs as they are), on the same pixels; empty otherwise.
"""

# --------------------------------------------------------------------------- holdout


@dataclass(frozen=True)
class CatalogCubes:
    """Fine and coarse cubes of a catalog query (see :mod:`stfuse.data.cube`), not yet computed.

    ``start``/``end``: the period asked (None = open); the cubes extend ``margin`` days beyond
    it so that pairs outside the period can be used. ``fine_clear``: clear fraction per fine day.
    """

    fine: Any
    coarse: Any
    fine_clear: dict[dt.date, float]
    coarse_days: list[dt.date]
    start: dt.date | None
    end: dt.date | None
    catalog: str


def load_catalog_cubes(
    *,
    catalog: PathLike | None = None,
    bbox: Sequence[float] | None = None,
    aoi: dict[str, Any] | PathLike | None = None,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    bands: Sequence[str] | None = None,
    crs: str | None = None,
    margin_days: int = 48,
    cache: PathLike | None = None,
) -> CatalogCubes:
    """Search a catalog and open lazy fine + coarse cubes on the fine 30 m grid.

    The same query handling as :func:`stfuse.predict` (:func:`stfuse.data.cube.load_cubes`:
    strict dates, bbox/AOI, providers, a ``margin_days`` wider search for pairs, optional
    Zarr ``cache``); the fine clear fractions are computed (that reads the fine images once).
    Errors name the bad value.
    """
    cubes = load_cubes(catalog=catalog, bbox=bbox, aoi=aoi, start=start, end=end, bands=bands, crs=crs,
                       margin_days=margin_days, cache=cache)
    return CatalogCubes(cubes.fine, cubes.coarse, cubes.fine_clear(), cubes.coarse_days(), cubes.query.start,
                        cubes.query.end, cubes.source)


@dataclass
class HoldoutDay:
    """One withheld Landsat date: what was used and how well it was predicted.

    ``scores``: :func:`stfuse.evaluate.metrics.score_arrays` result plus ``coverage`` (all bands),
    ``band_coverage`` (per band), ``spearman`` and ``band_spearman``. Arrays (band, y, x)
    float32 reflectance, kept when ``keep_arrays``: ``truth`` (the withheld image, NaN where not
    clear), ``mean`` and ``sigma`` (the prediction, 1 standard deviation).
    """

    date: dt.date
    pairs: tuple[dt.date, ...]
    method: str
    clear_fraction: float
    scores: dict[str, Any]
    truth: np.ndarray | None = None
    mean: np.ndarray | None = None
    sigma: np.ndarray | None = None
    quality: np.ndarray | None = None
    fill_dates: tuple[dt.date, ...] = ()
    unfilled: dict[str, Any] | None = None
    """With ``compare_unfilled``: ``rmse`` (band mean) and ``band_rmse`` of the prediction without
    gap filling, on the pixels both predictions and the truth have."""
    tags: dict[str, Any] = field(default_factory=dict)
    """The prediction's tags beyond the date, pairs and method, as a ``stfuse predict`` output's
    (``fine_items``, ``coarse_items``, ``catalog``, ``options``, ``quality``, ``calibration``,
    with a refiner ``refine``/``seed``/``mc_samples``; ``note`` when the method is not what was
    asked for, e.g. the series model not applied): :func:`write_holdout` writes them."""


@dataclass
class HoldoutResult:
    """Result of :func:`holdout`: scored days in date order, skipped dates with the reason."""

    days: list[HoldoutDay]
    skipped: dict[dt.date, str]
    band_names: list[str]
    method: str
    catalog: str
    crs_wkt: str | None = None
    transform: tuple[float, ...] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """Table rows (:data:`HOLDOUT_COLUMNS`): per date, one per band then ``all``."""
        rows: list[dict[str, Any]] = []
        for day in self.days:
            common = dict(date=day.date.isoformat(), method=day.method, pairs=";".join(p.isoformat() for p in day.pairs),
                          fill_dates=";".join(p.isoformat() for p in day.fill_dates), clear_fraction=day.clear_fraction)
            s, u = day.scores, day.unfilled
            band_unfilled = u["band_rmse"] if u else [None] * len(s["bands"])
            for entry, cov, rho, rmse_u in zip(s["bands"], s["band_coverage"], s["band_spearman"], band_unfilled):
                rows.append({**common, "band": entry.get("name", str(entry["band"])), "n_valid": entry["n_valid"],
                             **{k: entry[k] for k in ("rmse", "mae", "bias", "cc", "ssim", "psnr")},
                             "coverage_68": cov["0.68"], "coverage_95": cov["0.95"], "spearman": rho,
                             "ergas": None, "sam_deg": None, "rmse_unfilled": rmse_u})
            rows.append({**common, "band": "all", "n_valid": s["n_valid"], **s["mean"],
                         "coverage_68": s["coverage"]["0.68"], "coverage_95": s["coverage"]["0.95"],
                         "spearman": s["spearman"], "ergas": s["ergas"], "sam_deg": s["sam_deg"],
                         "rmse_unfilled": u["rmse"] if u else None})
        return rows

    def summary(self) -> dict[str, Any]:
        """Means over the scored dates per band (and ``all``) of every numeric column; JSON-ready."""
        keys = [k for k in HOLDOUT_COLUMNS if k not in ("date", "band", "method", "pairs", "fill_dates")]
        by_band: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows():
            by_band.setdefault(row["band"], []).append(row)
        means = {band: {k: _nanmean([r[k] for r in rows]) for k in keys} for band, rows in by_band.items()}
        return {
            "method": self.method,
            "catalog": self.catalog,
            "dates": [d.date.isoformat() for d in self.days],
            "skipped": {d.isoformat(): why for d, why in sorted(self.skipped.items())},
            "mean_over_dates": means,
            **self.extra,
            "seconds": round(self.seconds, 2),
        }


def _nanmean(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def score_day(mean: np.ndarray, sigma: np.ndarray, truth: np.ndarray, valid: np.ndarray | None, band_names: Sequence[str]) -> dict[str, Any]:
    """Scores of one predicted day: accuracy, coverage and error/sigma rank correlation.

    ``mean``, ``sigma``, ``truth``: (band, y, x) reflectance; ``valid``: optional (y, x) or
    (band, y, x) bool (e.g. the clear mask of the truth). Returns :func:`score_arrays`'s dict
    (each band entry gains ``n_valid``) plus ``n_valid`` (pixels valid in every band),
    ``coverage`` / ``spearman`` over all bands and ``band_coverage`` / ``band_spearman`` per band.
    """
    ok = np.isfinite(mean) & np.isfinite(truth) & np.isfinite(sigma)
    if valid is not None:
        ok &= np.broadcast_to(valid, ok.shape)
    result = without_one_band_sam(score_arrays(mean, truth, truth_valid=ok, band_names=band_names))
    for b, entry in enumerate(result["bands"]):
        entry["n_valid"] = int(ok[b].sum())
    result["n_valid"] = int(ok.all(axis=0).sum())
    result["coverage"] = calibration(mean, sigma, truth, ok)
    result["band_coverage"] = [calibration(mean[b], sigma[b], truth[b], ok[b]) for b in range(len(band_names))]
    result["spearman"] = spearman_error_sigma(mean, sigma, truth, ok)
    result["band_spearman"] = [spearman_error_sigma(mean[b], sigma[b], truth[b], ok[b]) for b in range(len(band_names))]
    return result


def holdout_plans(days: Sequence[dt.date], cubes: CatalogCubes, fusion: FusionConfig) -> tuple[list[Plan], dict[dt.date, str]]:
    """Which of ``days`` can be withheld: ``(plans, skipped)``. ``plans``: each day's
    :class:`~stfuse.fusion.pairs.Plan` among the *other* usable dates (pairs, fill days and, with
    the hybrid, a one-pair day's evidence date for the variance scale; never the withheld one);
    ``skipped``: day -> the reason."""
    coarse_set = set(cubes.coarse_days)
    usable = usable_pair_days(cubes.fine_clear, cubes.coarse_days, min_clear=fusion.min_clear)
    skipped: dict[dt.date, str] = {}
    plans: list[Plan] = []
    for day in days:
        if cubes.fine_clear[day] < fusion.min_clear:
            skipped[day] = f"clear fraction {cubes.fine_clear[day]:.0%} < min_clear {fusion.min_clear:.0%}"
        elif day not in coarse_set:
            skipped[day] = "no coarse (MODIS) image that day"
        else:
            others = [d for d in usable if d != day]  # never the withheld date
            plan = (series_plan(day, others, max_gap_days=fusion.max_gap_days) if fusion.method == "kalman"  # every other date
                    else plan_day(day, others, max_pairs=fusion.max_pairs, max_gap_days=fusion.max_gap_days, max_fill=fusion.max_fill))
            if plan.pairs:
                plans.append(plan if fusion.refine != "none" else replace(plan, evidence=None))
            else:
                skipped[day] = "no other clear pair" + (f" within --max-gap {fusion.max_gap_days} days" if fusion.max_gap_days is not None else "")
    return plans, skipped


def holdout(
    query: Query | None = None,
    fusion: FusionConfig | None = None,
    *,
    keep_arrays: bool = True,
    compare_unfilled: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    **settings: Any,
) -> HoldoutResult:
    """Leave-one-date-out validation on a catalog query.

    For each fine (Landsat) date from ``start`` to ``end`` that is at least ``min_clear`` clear
    and has a coarse image, withhold it, choose pairs among the *other* clear dates
    (:func:`stfuse.fusion.pairs.choose_pairs`: nearest before/after, ``max_pairs``, ``max_gap_days``),
    predict it with :func:`stfuse.fuse` from them and that day's coarse image, and score the
    prediction against the withheld image on its clear pixels (:func:`score_day`).
    ``query``, ``fusion``: as :func:`stfuse.predict` (or their fields as keywords; the query's
    ``start``/``end`` bound the withheld dates). ``method`` ``estarfm`` falls back to
    ``starfm`` on days with one pair (as ``predict`` does). Dates that cannot be scored are
    listed in ``skipped`` with the reason. The whole area is held in memory (use a bbox for
    large scenes). ``keep_arrays``: keep truth/mean/sigma per day (for reports). With a refiner
    (``refine``) the hybrid is scored instead of the prior alone (as :func:`stfuse.fuse`);
    as in :func:`stfuse.predict`, a one-pair day's variance scale then follows the scene through
    the nearest other clear date (:func:`stfuse.fusion.pairs.evidence_day`), never the withheld one.
    ``compare_unfilled``: also predict each date whose pairs were gap-filled from the same pairs
    without filling, and report both RMSEs (:attr:`HoldoutDay.unfilled`, ``rmse_unfilled``): the
    gain of every clear observation over the two nearest scenes, per withheld date.
    """
    query, fusion, _ = resolve_configs(query, fusion, None, settings, where="holdout")
    max_gap_days, refine = fusion.max_gap_days, fusion.refine
    t0 = time.perf_counter()
    cubes = load_catalog_cubes(catalog=query.catalog, bbox=query.bbox, aoi=query.aoi, start=query.start, end=query.end,
                               bands=query.bands, crs=query.crs, margin_days=max_gap_days or 48)
    fine, coarse = cubes.fine, cubes.coarse
    band_names = [str(b) for b in fine.band.values]
    in_period = [d for d in sorted(cubes.fine_clear)
                 if (cubes.start is None or d >= cubes.start) and (cubes.end is None or d <= cubes.end)]
    if not in_period:
        raise DataUnavailableError(
            f"no Landsat image {describe_dates(cubes.start, cubes.end)} to withhold; widen the dates"
        )
    plans, skipped = holdout_plans(in_period, cubes, fusion)
    if not plans:
        reasons = "; ".join(f"{d}: {why}" for d, why in skipped.items())
        raise DataUnavailableError(f"no Landsat date can be withheld and predicted ({reasons}); widen the dates or lower --min-clear")
    usable = usable_pair_days(cubes.fine_clear, cubes.coarse_days, min_clear=fusion.min_clear)
    series_days = {p.target: [d for d in usable if d != p.target] for p in plans}  # never the withheld date
    series_days = {day: others for day, others in series_days.items() if uses_series(fusion, len(others))}
    needed = sorted({d for p in plans for d in (p.target, *p.pairs, *p.fill_dates, *((p.evidence,) if p.evidence else ()),
                                                *series_days.get(p.target, ()))})
    times = [np.datetime64(d, "ns") for d in needed]
    with read_errors():  # the time-series engine (kalman) reads every coarse day
        fine, coarse = dask.compute(fine.sel(time=times), coarse.sel(time=coarse.time.values if fusion.method == "kalman" else times))
    days: list[HoldoutDay] = []
    series_memo: dict[Any, Any] = {}  # the examples' members, shared by the withheld dates' series models
    checked: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per day: (mean, variance, truth) of scored pixels
    for done, plan in enumerate(plans, start=1):
        day, pairs = plan.target, plan.pairs
        # as stfuse.predict: the prior a day of len(pairs) pairs runs (the hybrid resolves its own)
        day_fusion = fusion if refine != "none" else replace(fusion, method=method_for_day(fusion.method, len(pairs)))
        pair_fine, pair_coarse, filled = pair_inputs(fine.reflectance, coarse.reflectance, plan)
        target_time = np.datetime64(day, "ns")
        scene_times = sorted(np.datetime64(d, "ns") for d in (*pairs, plan.evidence)) if plan.evidence else None
        scene = None if scene_times is None else (fine.reflectance.sel(time=scene_times).rename(time="pair"),
                                                  coarse.reflectance.sel(time=scene_times).rename(time="pair"))
        series = (kalman_predictor(fusion, fine.reflectance, coarse.reflectance, plan, memo=series_memo) if fusion.method == "kalman"
                  else series_predictor(fusion, fine.reflectance, coarse.reflectance, series_days[day], len(pairs), memo=series_memo)
                  if day in series_days else None)  # kalman or --refine scene on the series: fitted on the other dates only
        result = (fuse_with(series, pair_fine, pair_coarse, coarse.reflectance.sel(time=target_time), fusion)
                  if series is not None else fuse(pair_fine, pair_coarse, coarse.reflectance.sel(time=target_time), day_fusion, scene=scene))
        flags = quality_band(pair_fine, pair_coarse, coarse.reflectance.sel(time=target_time),
                             change_threshold=fusion.thresholds.change_threshold, filled=filled).values
        truth = fine.reflectance.sel(time=target_time).transpose("band", "y", "x").values
        valid = fine.valid.sel(time=target_time).values
        mean, sigma = result.mean.values, result.sigma.values
        scores = score_day(mean, sigma, truth, valid, band_names)
        ok = np.isfinite(mean) & np.isfinite(sigma) & np.isfinite(truth) & np.broadcast_to(valid, mean.shape)
        unfilled = None
        if compare_unfilled:
            plain = mean
            if plan.fills:  # the same pairs as they are
                plain_fine, plain_coarse, _ = pair_inputs(fine.reflectance, coarse.reflectance, replace(plan, fills=()))
                plain = fuse(plain_fine, plain_coarse, coarse.reflectance.sel(time=target_time), day_fusion, scene=scene).mean.values
            both = ok & np.isfinite(plain)
            band_rmse = [float(np.sqrt(np.mean((plain[b] - truth[b])[both[b]] ** 2))) if both[b].any() else None
                         for b in range(len(band_names))]
            unfilled = {"rmse": _nanmean(band_rmse), "band_rmse": band_rmse}
        checked.append((mean[ok], sigma[ok].astype(np.float64) ** 2, truth[ok]))
        method, tags = _day_method_and_tags(result, series, plan, fine, coarse, flags, fusion, cubes.catalog)
        days.append(HoldoutDay(day, pairs, method, cubes.fine_clear[day], scores,
                               *((truth, mean, sigma, flags) if keep_arrays else (None, None, None, None)),
                               fill_dates=plan.fill_dates, unfilled=unfilled, tags=tags))
        log.info("holdout %s from %s: RMSE %.4f", day, ", ".join(map(str, pairs)), scores["mean"]["rmse"])
        if progress:
            progress(done, len(plans), day.isoformat())
    geobox = fine.odc.geobox
    return HoldoutResult(days, skipped, band_names, fusion.method, cubes.catalog, crs_wkt=geobox.crs.to_wkt(),
                         transform=tuple(geobox.transform)[:6], seconds=time.perf_counter() - t0,
                         extra={"calibration": variance_calibration(checked)})


def _day_method_and_tags(result: Any, series: Any, plan: Plan, fine: Any, coarse: Any, flags: np.ndarray,
                         fusion: FusionConfig, catalog: str) -> tuple[str, dict[str, Any]]:
    """A withheld day's method label and the tags of its prediction, as ``stfuse predict`` tags a
    day (:func:`stfuse.output.writers._day_tags`): items, options, quality, calibration.

    A day whose series model was not applied (its left-out dates did not favour other weights
    than the blend's, ``calibration`` -> ``series`` -> ``applied`` False) is the blend's mean
    (Fit-FC + FSDAF + ``fine + coarse change``, equal weights) with the series' variance scale:
    labelled ``blend``, with a ``note`` saying so."""
    method, note = result.method, None
    model = getattr(series, "model", None)
    if model is not None and not model.applied:
        method = "blend"
        note = (f"series model not applied: on its left-out dates its RMSE {model.rmse_series:.5f} was not below the "
                f"blend's {model.rmse_blend:.5f}, so this is the blend (fitfc+fsdaf+change, equal weights) with the variance "
                "scale fitted on those dates (calibration -> series)")
    times = [np.datetime64(d, "ns") for d in sorted({*plan.pairs, *plan.fill_dates})]
    target = np.datetime64(plan.target, "ns")
    item = lambda cube, t: str(cube.item_id.sel(time=t).item()) if "item_id" in cube.coords else None  # noqa: E731
    changed = float(((np.asarray(flags) & QUALITY_BITS["large_change"]) > 0).mean())
    coarse_clear = float(coarse.clear_fraction.sel(time=target).item()) if "clear_fraction" in coarse else float("nan")
    quiet = lambda record: record.module != "quality"  # noqa: E731  (the holdout does not log predict's day warnings)
    log.addFilter(quiet)
    try:
        warnings = assess(day=plan.target.isoformat(), coarse_clear=coarse_clear, max_gap_days=plan.max_gap_days,
                          changed_fraction=changed, thresholds=fusion.thresholds, strict=False)
    finally:
        log.removeFilter(quiet)
    quality = {"coarse_clear_fraction": round(coarse_clear, 4), "max_pair_gap_days": plan.max_gap_days,
               "changed_fraction": round(changed, 4), "warnings": warnings, "bits": QUALITY_BITS}
    if plan.fills:
        quality["filled_fraction"] = round(float(((np.asarray(flags) & QUALITY_BITS["filled"]) > 0).mean()), 4)
    tags = {
        "fine_items": [item(fine, t) for t in times],
        "coarse_items": [item(coarse, t) for t in (*times, target)],
        "catalog": catalog,
        "options": fusion.prior_options,
        "quality": quality,
        **({"refine": fusion.refine, "seed": fusion.seed, "mc_samples": fusion.mc_samples} if fusion.refine != "none" else {}),
        "calibration": result.tags.get("calibration", {}),
        **({"weights": str(fusion.weights)} if fusion.weights else {}),
        **({"note": note} if note else {}),
    }
    return method, tags


def variance_calibration(days: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """A post-hoc variance scale for an area from its withheld dates.

    ``days``: per withheld date ``(mean, variance, truth)`` of its scored pixels. Returns
    ``{"variance_scale", "coverage_as_predicted", "coverage_leave_one_date_out"}``: the scale
    fitted on all dates (:func:`stfuse.fusion.uncertainty.fit_variance_scale`, to pass to
    ``stfuse predict --variance-scale``), the 68/95 % coverage without it, and the coverage it
    gives on dates it was not fitted on (:func:`stfuse.fusion.uncertainty.leave_one_out_coverage`;
    None with a single date).
    """
    levels = (0.68, 0.95)
    if not days or not any(d[0].size for d in days):
        return {"variance_scale": None, "coverage_as_predicted": None, "coverage_leave_one_date_out": None}
    m, v, t = (np.concatenate([d[i] for d in days]) for i in range(3))
    loo = leave_one_out_coverage(days, levels) if len(days) >= 2 else None
    return {
        "variance_scale": round(fit_variance_scale(m, v, t), 4),
        "coverage_as_predicted": {str(k): round(c, 4) for k, c in coverage(m, v, t, levels=levels).items()},
        "coverage_leave_one_date_out": {str(k): round(c, 4) for k, c in loo.items()} if loo else None,
    }


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def write_holdout_csv(result: HoldoutResult, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write :meth:`HoldoutResult.rows` as CSV (:data:`HOLDOUT_COLUMNS`, full float precision)."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(HOLDOUT_COLUMNS))
            writer.writeheader()
            for row in result.rows():
                writer.writerow({k: _csv_value(row[k]) for k in HOLDOUT_COLUMNS})
    return path


def write_holdout(result: HoldoutResult, out_dir: PathLike, *, predictions: bool = True, overwrite: bool = False) -> list[Path]:
    """Write ``out_dir/holdout.csv``, ``out_dir/holdout.json`` (summary) and, with ``predictions``,
    ``out_dir/predictions/holdout_YYYY-MM-DD.tif`` (COG: reflectance, then ``<band>_sigma``, then
    ``quality`` when the day carries its flags (``HoldoutDay.quality``, (y, x) ints); tags with
    the ``stfuse_version``; needs the arrays). Returns the written paths."""
    out_dir = Path(out_dir)
    paths = [write_holdout_csv(result, out_dir / "holdout.csv", overwrite=overwrite)]
    summary = out_dir / "holdout.json"
    with atomic_path(summary, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps({**result.summary(), "rows": result.rows()}, indent=1, default=str))
    paths.append(summary)
    if predictions:
        crs = CRS.from_wkt(result.crs_wkt) if result.crs_wkt else None
        transform = Affine(*result.transform) if result.transform else Affine.identity()
        for day in result.days:
            if day.mean is None or day.sigma is None:
                raise InputError("the holdout result has no arrays; run holdout(keep_arrays=True) to write predictions")
            path = out_dir / "predictions" / f"holdout_{day.date.isoformat()}.tif"
            flags = getattr(day, "quality", None)
            extra = dict(getattr(day, "tags", None) or {})
            if flags is not None:
                extra["quality"] = {**extra.get("quality", {}), "bits": QUALITY_BITS}
            tags = provenance(day.method, {"target_date": day.date.isoformat(), "pair_dates": [p.isoformat() for p in day.pairs],
                                           "fill_dates": [p.isoformat() for p in day.fill_dates],
                                           "holdout": "withheld Landsat date", **extra})
            paths.append(write_prediction_cog(path, day.mean, day.sigma, band_names=result.band_names, crs=crs,
                                              transform=transform, tags=tags, overwrite=overwrite,
                                              extra_bands={"quality": np.asarray(flags)} if flags is not None else None))
    return paths


def format_holdout(result: HoldoutResult) -> str:
    """Human-readable holdout table: a row per date and band, then the means over dates. No trailing newline."""
    rows = result.rows()
    w = max(4, *(len(r["band"]) for r in rows))
    head = f"{'date':>10} {'band':>{w}} {'RMSE':>8} {'MAE':>8} {'bias':>8} {'CC':>7} {'SSIM':>7} {'PSNR':>7} {'cov68':>6} {'cov95':>6}"

    def line(label: str, band: str, r: dict[str, Any]) -> str:
        def f(v: float | None, spec: str) -> str:
            return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0]))

        return (f"{label:>10} {band:>{w}} {f(r['rmse'], '8.5f')} {f(r['mae'], '8.5f')} {f(r['bias'], '8.5f')} "
                f"{f(r['cc'], '7.4f')} {f(r['ssim'], '7.4f')} {f(r['psnr'], '7.2f')} "
                f"{f(r['coverage_68'], '6.1%')} {f(r['coverage_95'], '6.1%')}")

    lines = [head] + [line(r["date"], r["band"], r) for r in rows]
    lines.append("mean over dates:")
    for band, m in result.summary()["mean_over_dates"].items():
        lines.append(line("", band, m))
    dated = ", ".join(f"{d.date} ({d.method} from {' + '.join(p.isoformat() for p in d.pairs)})" for d in result.days)
    lines.append(f"withheld {len(result.days)} Landsat date(s): {dated}")
    lines += [f"  {d.date}: {d.tags['note']}" for d in result.days if (getattr(d, "tags", None) or {}).get("note")]
    compared = [d for d in result.days if d.unfilled and d.unfilled["rmse"] is not None]
    if compared:
        lines.append("gap filling against the pairs as they are (RMSE, all bands):")
        for d in compared:
            filled, plain = d.scores["mean"]["rmse"], d.unfilled["rmse"]
            lines.append(f"  {d.date}: {filled:.5f} filled from {len(d.fill_dates)} more date(s), {plain:.5f} unfilled "
                         f"({filled / plain - 1:+.1%})" if d.fill_dates else f"  {d.date}: {filled:.5f} (nothing to fill)")
    for d, why in sorted(result.skipped.items()):
        lines.append(f"skipped {d}: {why}")
    cal = result.extra.get("calibration") or {}
    if cal.get("variance_scale") is not None:
        loo = cal.get("coverage_leave_one_date_out")
        check = (f"; on dates it was not fitted on it gives {loo['0.68']:.1%} / {loo['0.95']:.1%}" if loo else
                 " (one date: no leave-one-date-out check)")
        lines.append(f"uncertainty: 68/95 % coverage {cal['coverage_as_predicted']['0.68']:.1%} / "
                     f"{cal['coverage_as_predicted']['0.95']:.1%} as predicted; variance scale fitted on these dates "
                     f"{cal['variance_scale']:g} (stfuse predict --variance-scale {cal['variance_scale']:g}){check}")
    return "\n".join(lines)
