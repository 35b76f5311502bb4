"""One lazy fused cube: the per-day path that every command shares.

:func:`open_fused` turns a :class:`~stfuse.config.Query` and a :class:`~stfuse.config.FusionConfig`
into an ``xarray.Dataset`` with dims (time, band, y, x) on the Landsat 30 m grid:

- ``reflectance`` (time, band, y, x) float32 surface reflectance, NaN where not predictable;
- ``sigma`` (time, band, y, x) float32, one standard deviation of the prediction;
- ``quality`` (time, y, x) uint8 bit flags (:data:`stfuse.fusion.quality.QUALITY_BITS`);
  on a Landsat date the clear pixels are that day's observation (``observed`` bit, sigma
  :data:`stfuse.data.sensors.LANDSAT_SR_NOISE`), only the others predicted;
- per-day coordinates ``pair_dates`` and ``fill_dates`` (``;``-separated ISO dates: the pairs,
  and the farther dates whose clear pixels fill the pairs' cloudy ones) and ``method``;
- the CRS as odc-geo's ``spatial_ref`` (``ds.odc.geobox``), provenance in ``attrs``.

Opening searches the catalog and reads the Landsat clear fractions to choose the pairs; every
day's prediction is a dask graph that runs only when that day is computed (``ds.sel(time=...)``
computes that day only). :func:`stfuse.predict` writes the same days to COG/Zarr.

The per-day path is :func:`predict_day`: a :class:`Predictor` (a physics prior, or the hybrid
prior + refiner) run tile by tile with its halo, and its variance scaled by the predictor's
calibration factor times the user's ``variance_scale``. :func:`stfuse.fuse` (one day in memory),
local-file mode and ``stfuse evaluate --holdout`` call the same function.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import dask
import numpy as np
import xarray as xr

from stfuse import __version__
from stfuse.config import FusionConfig, Query, RunConfig, resolve_configs
from stfuse.data.cube import Cubes, load_cubes, read_errors
from stfuse.data.sensors import LANDSAT_SR_NOISE
from stfuse.errors import DataUnavailableError, EmptySearchError, InputError, StfuseError
from stfuse.fusion.pairs import Plan, date_range, fill_pair, max_gap_message, plan_day, plan_days, series_plans, usable_pair_days
from stfuse.fusion.prior import halo as prior_halo
from stfuse.fusion.prior import method_for_day
from stfuse.fusion.prior import predict as prior_predict
from stfuse.fusion.prior.calibration import calibration_record as prior_calibration_record
from stfuse.fusion.quality import QUALITY_BITS, observed_day, quality_band
from stfuse.fusion.uncertainty import spread_radius, spread_variance
from stfuse.output.tiling import predict_tiled

log = logging.getLogger("stfuse")

IN_MEMORY_BYTES = 2 * 2**30
"""Cubes smaller than this (fine + coarse, bytes) are read into memory once by :func:`stfuse.predict`."""


@runtime_checkable
class Predictor(Protocol):
    """What predicts one day, prior or hybrid alike.

    ``name``: the method label in tags; ``halo``: the neighbourhood radius in fine pixels (the
    tile overlap); ``variance_factor``: multiplies the returned variance (a prior's factor fitted
    on simulated days; 1 for the hybrid, which applies its own); ``calibration()``: the record of
    that factor for the output tags. Called as ``fn(fine, coarse, coarse_target)`` on numpy arrays
    (P, B, h, w), (P, B, h, w), (B, h, w) -> (mean, variance) (B, h, w) float32.
    """

    name: str
    halo: int
    variance_factor: float

    def calibration(self) -> dict[str, Any]: ...

    def __call__(self, fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class PriorPredictor:
    """A physics prior (:mod:`stfuse.fusion.prior`) for days with ``n_pairs`` pairs; its variance
    shared over one coarse pixel around each pixel (:func:`stfuse.fusion.uncertainty.spread_variance`),
    as the factor (:mod:`stfuse.fusion.prior.calibration`) was fitted."""

    method: str
    n_pairs: int
    device: str = "cpu"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.method

    @property
    def halo(self) -> int:
        return prior_halo(self.method, **self.options) + self.spread

    @property
    def spread(self) -> int:
        """Radius (fine px) over which the variance is shared (:func:`stfuse.fusion.uncertainty.spread_variance`)."""
        return spread_radius(self.options)

    @property
    def variance_factor(self) -> float:
        return float(self.calibration()["variance_scale"])

    def calibration(self) -> dict[str, Any]:
        return prior_calibration_record(self.method, self.n_pairs)

    def __call__(self, fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, variance = prior_predict(fine, coarse, coarse_target, method=self.method, device=self.device, **self.options)
        return mean, spread_variance(variance, self.spread)


class HybridPredictor:
    """The hybrid (prior ensemble + CNN refiner, :class:`stfuse.fusion.refine.HybridFn`) for one
    set of pairs, its model adapted and its variance scale fitted already (:func:`hybrid_predictor`)."""

    variance_factor = 1.0  # the hybrid scales its variance itself

    def __init__(self, fn: Any, refine: str, n_pairs: int) -> None:
        self.fn, self.refine, self.n_pairs = fn, refine, n_pairs

    @property
    def name(self) -> str:
        return f"{self.fn.name}({self.refine})"

    @property
    def halo(self) -> int:
        return self.fn.halo

    def calibration(self) -> dict[str, Any]:
        return self.fn.calibration(self.n_pairs)

    def __call__(self, fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.fn(fine, coarse, coarse_target)


def hybrid_predictor(
    fusion: FusionConfig,
    day_method: str,
    pair_fine: xr.DataArray,
    pair_coarse: xr.DataArray,
    *,
    scene: tuple[xr.DataArray, xr.DataArray, list[str] | None] | None = None,
    base_model: Any = None,
    memo: dict[Any, Any] | None = None,
) -> HybridPredictor:
    """The hybrid for one day's pairs (pair, band, y, x). With ``refine="scene"`` and 2+ pairs the
    model is first adapted to the pairs (self-supervised, the whole area); the variance scale is
    fitted on ``scene`` = (fine, coarse, dates): the pairs, or with one pair the pair and its
    evidence date (:meth:`stfuse.fusion.refine.HybridFn.fit_scene`; default: the pairs). Both are
    kept in ``memo`` per set of pairs, so days sharing pairs share them. ``base_model``: the
    starting refiner (a user checkpoint; None = shipped weights)."""
    from stfuse.fusion.refine import adapt_model, hybrid_fn

    memo = {} if memo is None else memo
    key = (day_method, tuple(str(t) for t in pair_fine["pair"].values) if "pair" in pair_fine.coords else id(pair_fine),
           *(tuple(str(f) for f in pair_fine["fill"].values) if "fill" in pair_fine.coords else ()))
    if fusion.refine == "scene" and pair_fine.sizes["pair"] >= 2:
        if key not in memo:
            fine = np.asarray(pair_fine.transpose("pair", "band", "y", "x").values, np.float32)
            coarse = np.asarray(pair_coarse.transpose("pair", "band", "y", "x").values, np.float32)
            memo[key] = adapt_model(fine, coarse, prior_fn=day_method, init=base_model, seed=fusion.seed, device=fusion.device)
        model = memo[key]
    else:
        model = base_model
    fn = hybrid_fn(day_method, model, mc_samples=fusion.mc_samples, seed=fusion.seed, device=fusion.device,
                   prior_options=fusion.prior_options)
    scene_fine, scene_coarse, scene_dates = scene if scene is not None else (pair_fine, pair_coarse, None)
    scale_key = ("scene_scale", fusion.refine, *key, *(scene_dates or ()))
    if scale_key not in memo:  # the variance scale that follows the scene: once per set of images
        log.info("fitting the hybrid's variance scale on %s (once for the days sharing these pairs)",
                 ", ".join(scene_dates or ([str(np.datetime64(t, "D")) for t in pair_fine["pair"].values]
                                           if "pair" in pair_fine.coords else ["the pairs"])))
        memo[scale_key] = (fn.fit_scene(scene_fine, scene_coarse, n_pairs=pair_fine.sizes["pair"], dates=scene_dates),
                           fn.scene_dates)
    fn.scene_scale, fn.scene_dates = memo[scale_key]
    return HybridPredictor(fn, fusion.refine, pair_fine.sizes["pair"])


def predict_day(
    pair_fine: xr.DataArray,
    pair_coarse: xr.DataArray,
    coarse_target: xr.DataArray,
    predictor: Predictor | Any,
    *,
    halo: int,
    variance_factor: float,
    tile: int | None = None,
) -> tuple[xr.DataArray, xr.DataArray]:
    """One day, lazily: ``(mean, sigma)`` (band, y, x) float32 dask-backed DataArrays.

    ``pair_fine``/``pair_coarse``: (pair, band, y, x), ``coarse_target``: (band, y, x)
    reflectance, NaN = missing. ``predictor``: a :class:`Predictor` (or a ``dask.delayed`` one)
    run on tiles of ``tile`` pixels (None: one tile, the whole image) grown by ``halo``.
    ``sigma = sqrt(max(variance, 0) * variance_factor)``.
    """
    size = tile or max(coarse_target.sizes["y"], coarse_target.sizes["x"], 1)
    result = predict_tiled(pair_fine, pair_coarse, coarse_target, predict_fn=predictor, halo=halo, tile=size)
    sigma = np.sqrt(result["variance"].clip(min=0) * variance_factor)
    return result["mean"], sigma


def calibration_tag(record: Mapping[str, Any], variance_scale: float) -> dict[str, Any]:
    """The ``calibration`` tag: the predictor's record (the factor applied and what it was fitted
    on) plus a user variance scale other than 1."""
    return {**record, **({"user_variance_scale": float(variance_scale)} if variance_scale != 1.0 else {})}


def provenance(method: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Tags every output carries: stfuse and torch versions, the method, the creation time."""
    import torch

    return {
        "stfuse_version": __version__,
        "method": method,
        "torch_version": torch.__version__,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        **extra,
    }


def load_base_model(fusion: FusionConfig, bands: Sequence[str]) -> Any:
    """The user's refiner checkpoint (``fusion.weights``), refused if its bands differ; None otherwise."""
    if fusion.weights is None:
        return None
    from stfuse.fusion.refine import load_model

    return load_model(fusion.weights, bands=list(bands))


def pair_inputs(fine: xr.DataArray, coarse: xr.DataArray, plan: Plan) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """A day's pairs from the fine and coarse cubes (time, band, y, x): ``(fine, coarse, filled)``,
    (pair, band, y, x) each, every pair gap-filled from its fill days (:func:`stfuse.fusion.pairs.fill_pair`),
    and ``filled`` (y, x) bool, True where some pair took a fill day's pixel. Without fill days
    the pair images as they are (``filled`` all False)."""
    times = [np.datetime64(d) for d in plan.pairs]
    pair_fine, pair_coarse = fine.sel(time=times).rename(time="pair"), coarse.sel(time=times).rename(time="pair")
    if not plan.fills:
        return pair_fine, pair_coarse, xr.zeros_like(pair_fine.isel(pair=0, band=0), dtype=bool).reset_coords(drop=True)
    fines, coarses, filled = [], [], []
    for day, fills in zip(plan.pairs, plan.fills):
        days = [np.datetime64(d) for d in (day, *fills)]
        f, c, used = fill_pair(fine.sel(time=days), coarse.sel(time=days))
        fines.append(f.rename(time="pair"))
        coarses.append(c.rename(time="pair"))
        filled.append(used)
    fill_labels = ("pair", [";".join(d.isoformat() for d in fills) for fills in plan.fills])
    concat = lambda parts: xr.concat(parts, dim="pair", coords="different", compat="equals", join="exact")  # noqa: E731
    return (concat(fines).assign_coords(fill=fill_labels), concat(coarses).assign_coords(fill=fill_labels),
            concat(filled).any("pair"))


def select_days_used(fine: xr.Dataset, coarse: xr.Dataset, plans: Sequence[Plan], *, hybrid: bool,
                     series_days: Sequence[dt.date] = (), keep_coarse: bool = False) -> tuple[xr.Dataset, xr.Dataset]:
    """The fine and coarse cubes cut to the days ``plans`` read: the pairs' fine images (with the
    refiner, a one-pair day's evidence date too: the scene's error scale; with a series model,
    every usable date ``series_days``) and the coarse images of those and the targets
    (``keep_coarse``: every coarse day, as the time-series engine reads the whole coarse series)."""
    fine_days = sorted({*series_days,
                        *(d for p in plans for d in (*p.pairs, *p.fill_dates, *((p.evidence,) if p.evidence and hybrid else ())))})
    needed = sorted({*fine_days, *(p.target for p in plans)})
    return (fine.sel(time=[np.datetime64(d, "ns") for d in fine_days]),
            coarse if keep_coarse else coarse.sel(time=[np.datetime64(d, "ns") for d in needed]))


def uses_series(fusion: FusionConfig, n_dates: int) -> bool:
    """Whether days are predicted with a series model (:mod:`stfuse.fusion.refine.series`):
    ``--refine scene`` with the default method and at least
    :data:`~stfuse.fusion.refine.series.MIN_SERIES_DATES` usable dates (local files: pairs)."""
    from stfuse.fusion.refine.series import MIN_SERIES_DATES

    return fusion.refine == "scene" and fusion.method == "auto" and n_dates >= MIN_SERIES_DATES


def series_examples(fine: xr.DataArray, coarse: xr.DataArray, pair_days: Sequence[dt.date] | None, fusion: FusionConfig,
                    hybrid: Any, *, memo: dict[Any, Any] | None = None) -> list[Any]:
    """Every usable date predicted from the others on the central
    :data:`~stfuse.fusion.refine.SCENE_WINDOW` px: a :class:`~stfuse.fusion.refine.series.SeriesExample`
    list. Catalog mode: ``fine``, ``coarse`` the cubes' reflectance (time, band, y, x), NaN where
    not clear, ``pair_days`` the usable dates, each planned as a day is
    (:func:`stfuse.fusion.pairs.plan_day`: nearest pairs, gap filling). Local files
    (``pair_days`` None): ``fine``, ``coarse`` the pairs (pair, band, y, x), each predicted from
    all the others (as local mode combines every pair). ``hybrid``: the refiner member
    (:class:`~stfuse.fusion.refine.HybridFn`). Examples are kept in ``memo`` by date and plan
    (the holdout refits without each withheld date)."""
    from stfuse.fusion.refine import central_window
    from stfuse.fusion.refine.series import SeriesExample, member_predictions

    memo = {} if memo is None else memo
    rows, cols = central_window(fine.sizes["y"], fine.sizes["x"])
    fine, coarse = fine.isel(y=rows, x=cols), coarse.isel(y=rows, x=cols)
    as_array = lambda a, *dims: np.asarray(a.transpose(*dims).values, np.float32)  # noqa: E731
    examples = []
    if pair_days is None:
        f, c = as_array(fine, "pair", "band", "y", "x"), as_array(coarse, "pair", "band", "y", "x")
        for k in range(f.shape[0]):
            others = [j for j in range(f.shape[0]) if j != k]
            members, prior_variance = member_predictions(f[others], c[others], c[k], hybrid=hybrid, device=fusion.device,
                                                         prior_options=fusion.prior_options)
            examples.append(SeriesExample(f"pair {k + 1}", members, prior_variance, f[k]))
        return examples
    for day in pair_days:
        plan = plan_day(day, [d for d in pair_days if d != day], max_pairs=fusion.max_pairs,
                        max_gap_days=fusion.max_gap_days, max_fill=fusion.max_fill)
        if not plan.pairs:
            continue
        key = ("series-example", plan.target, plan.pairs, plan.fills)
        if key not in memo:
            pair_fine, pair_coarse, _ = pair_inputs(fine, coarse, plan)
            target = np.datetime64(day, "ns")
            members, prior_variance = member_predictions(
                as_array(pair_fine, "pair", "band", "y", "x"), as_array(pair_coarse, "pair", "band", "y", "x"),
                as_array(coarse.sel(time=target), "band", "y", "x"), hybrid=hybrid, device=fusion.device,
                prior_options=fusion.prior_options)
            memo[key] = SeriesExample(day.isoformat(), members, prior_variance, as_array(fine.sel(time=target), "band", "y", "x"))
        examples.append(memo[key])
    return examples


def series_predictor(fusion: FusionConfig, fine: xr.DataArray, coarse: xr.DataArray, pair_days: Sequence[dt.date] | None,
                     n_pairs: int, *, base_model: Any = None, memo: dict[Any, Any] | None = None) -> Any:
    """The day's :class:`~stfuse.fusion.refine.series.SeriesPredictor`, its model fitted on the
    examples of :func:`series_examples` (once per set of dates, kept in ``memo``); None when
    too few dates have enough clear pixels."""
    from stfuse.fusion.refine import hybrid_fn
    from stfuse.fusion.refine.series import SeriesPredictor, fit_series

    memo = {} if memo is None else memo
    hybrid = hybrid_fn("ensemble", base_model, mc_samples=fusion.mc_samples, seed=fusion.seed, device=fusion.device,
                       prior_options=fusion.prior_options)
    key = ("series-model", tuple(pair_days) if pair_days is not None else "pairs")
    if key not in memo:
        what = f"{len(pair_days)} dates ({pair_days[0]} .. {pair_days[-1]})" if pair_days is not None else f"{fine.sizes['pair']} pairs"
        log.info("fitting the series model on %s", what)
        examples = series_examples(fine, coarse, pair_days, fusion, hybrid, memo=memo)
        memo[key] = fit_series(examples, band_names=[str(b) for b in fine.band.values], prior_options=fusion.prior_options)
    model = memo[key]
    if model is None:
        return None
    return SeriesPredictor(model, hybrid, n_pairs, device=fusion.device, prior_options=fusion.prior_options)


class Fused:
    """A planned fused cube: the loaded cubes, the days with their pairs, and how each is predicted.

    Built by :func:`plan_fused`. :attr:`dataset` is the lazy ``xarray.Dataset``;
    :meth:`predictor` and :meth:`day` give one day's predictor and arrays (what the writers use).
    """

    def __init__(self, query: Query, fusion: FusionConfig, run: RunConfig, cubes: Cubes, fine: xr.Dataset,
                 coarse: xr.Dataset, plans: list[Plan], base_model: Any = None, pair_days: Sequence[dt.date] = ()) -> None:
        self.query, self.fusion, self.run, self.cubes = query, fusion, run, cubes
        self.fine, self.coarse, self.plans, self.base_model = fine, coarse, plans, base_model
        self.series_days = list(pair_days) if uses_series(fusion, len(pair_days)) else []
        self.bands = [str(b) for b in fine.band.values]
        self.geobox = fine.odc.geobox
        self._memo: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self._coarse_clear: dict[dt.date, float] | None = None

    def read_days(self, plans: Sequence[Plan]) -> None:
        """Read the images ``plans`` use (targets, pairs, evidence dates) into memory at once when
        they fit in :data:`IN_MEMORY_BYTES`, so each COG is read once, not once per day; the cube
        then holds only those days."""
        fine, coarse = select_days_used(self.fine, self.coarse, plans, hybrid=self.fusion.refine != "none",
                                        series_days=self.series_days, keep_coarse=self.fusion.method == "kalman")
        if fine.reflectance.nbytes + coarse.reflectance.nbytes <= IN_MEMORY_BYTES:
            with read_errors():
                self.fine, self.coarse = dask.compute(fine, coarse)
            self._coarse_clear = None

    def day_method(self, plan: Plan) -> str:
        """The method a day runs (:func:`stfuse.fusion.prior.method_for_day`)."""
        return method_for_day(self.fusion.method, len(plan.pairs), hybrid=self.fusion.refine != "none")

    def inputs(self, plan: Plan) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
        """The day's pair fine and coarse images (pair, band, y, x), gap-filled from the plan's fill
        days (:func:`pair_inputs`), and target coarse image (band, y, x)."""
        fine, coarse, _ = pair_inputs(self.fine.reflectance, self.coarse.reflectance, plan)
        return fine, coarse, self.coarse.reflectance.sel(time=np.datetime64(plan.target))

    def predictor(self, plan: Plan) -> Predictor:
        """The day's predictor; for the hybrid, adapted and scaled once per set of pairs (memoised)."""
        day_method = self.day_method(plan)
        if self.fusion.method == "kalman":  # the time-series engine: fitted once on the series (stfuse.fusion.kalman)
            from stfuse.fusion.kalman import kalman_predictor

            with self._lock:
                return kalman_predictor(self.fusion, self.fine.reflectance, self.coarse.reflectance, plan, memo=self._memo)
        if self.fusion.refine == "none":
            return PriorPredictor(day_method, len(plan.pairs), self.fusion.device, self.fusion.prior_options)
        if self.series_days:
            with self._lock:
                series = series_predictor(self.fusion, self.fine.reflectance, self.coarse.reflectance, self.series_days,
                                          len(plan.pairs), base_model=self.base_model, memo=self._memo)
            if series is not None:
                return series
        pair_fine, pair_coarse, _ = self.inputs(plan)
        scene_days = tuple(sorted((*plan.pairs, plan.evidence))) if plan.evidence else plan.pairs
        scene_times = [np.datetime64(d) for d in scene_days]
        scene = (self.fine.reflectance.sel(time=scene_times).rename(time="pair"),
                 self.coarse.reflectance.sel(time=scene_times).rename(time="pair"), [d.isoformat() for d in scene_days])
        with self._lock:
            return hybrid_predictor(self.fusion, day_method, pair_fine, pair_coarse, scene=scene, base_model=self.base_model,
                                    memo=self._memo)

    def _unprepared(self, plan: Plan) -> tuple[str, int, float]:
        """(name, halo, variance factor) of the day's predictor without preparing the hybrid;
        they depend only on the day's method and number of pairs, so each is worked out once."""
        key = ("unprepared", self.day_method(plan), len(plan.pairs))
        if key not in self._memo:
            self._memo[key] = self._unprepared_info(plan)
        return self._memo[key]

    def _unprepared_info(self, plan: Plan) -> tuple[str, int, float]:
        day_method = self.day_method(plan)
        if self.fusion.method == "kalman":
            from stfuse.fusion.kalman import KalmanPredictor, kalman_halo

            return KalmanPredictor.name, kalman_halo(self.fusion.options), KalmanPredictor.variance_factor * self.fusion.variance_scale
        if self.fusion.refine == "none":
            p = PriorPredictor(day_method, len(plan.pairs), self.fusion.device, self.fusion.prior_options)
            return p.name, p.halo, p.variance_factor * self.fusion.variance_scale
        from stfuse.fusion.refine import hybrid_fn

        fn = hybrid_fn(day_method, self.base_model, mc_samples=self.fusion.mc_samples, seed=self.fusion.seed,
                       device=self.fusion.device, prior_options=self.fusion.prior_options)
        if self.series_days:
            from stfuse.fusion.refine.series import SeriesPredictor, series_halo

            return SeriesPredictor.name, series_halo(fn, self.fusion.prior_options), 1.0 * self.fusion.variance_scale
        return f"{fn.name}({self.fusion.refine})", fn.halo, 1.0 * self.fusion.variance_scale

    def day(self, plan: Plan, predictor: Predictor | None = None) -> xr.Dataset:
        """One day's lazy ``mean``, ``sigma`` (band, y, x) and ``quality`` (y, x). With no
        ``predictor`` the hybrid is prepared lazily, as part of the day's graph."""
        pair_fine, pair_coarse, filled = pair_inputs(self.fine.reflectance, self.coarse.reflectance, plan)
        target = self.coarse.reflectance.sel(time=np.datetime64(plan.target))
        if predictor is not None:
            fn, halo, factor = predictor, predictor.halo, predictor.variance_factor * self.fusion.variance_scale
        elif self.fusion.refine == "none":  # a prior, or the time-series engine (fitted here, once per query)
            fn = self.predictor(plan)
            halo, factor = fn.halo, fn.variance_factor * self.fusion.variance_scale
        else:
            _, halo, factor = self._unprepared(plan)
            fn = dask.delayed(self.predictor, pure=False, traverse=False)(
                plan, dask_key_name=f"stfuse-predictor-{plan.target.isoformat()}-{'-'.join(map(str, plan.pairs))}")
        mean, sigma = predict_day(pair_fine, pair_coarse, target, fn, halo=halo, variance_factor=factor, tile=self.run.tile)
        flags = quality_band(pair_fine, pair_coarse, target, change_threshold=self.fusion.thresholds.change_threshold,
                             filled=filled if plan.fills else None)
        observation = self.observation(plan.target) if self.fusion.observed else None
        if observation is not None:  # a Landsat date: its clear pixels are the observation
            mean, sigma, flags = observed_day(mean, sigma, flags, observation, noise=LANDSAT_SR_NOISE)
        return xr.Dataset({"mean": mean, "sigma": sigma, "quality": flags})

    def observation(self, day: dt.date) -> xr.DataArray | None:
        """The fine (Landsat) image of ``day``, (band, y, x) float32 reflectance, NaN where masked
        (lazy unless read by :meth:`read_days`); None when no fine image holds that day. Taken from
        the cut cube when ``day`` is a pair, else from the loaded cube (a date too cloudy to be a pair)."""
        for cube in (self.fine, self.cubes.fine):
            days = cube.time.values.astype("datetime64[D]")
            hits = np.flatnonzero(days == np.datetime64(day, "D"))
            if hits.size:
                return cube.reflectance.isel(time=int(hits[0]))
        return None

    def coarse_clear(self, day: dt.date) -> float:
        """Clear fraction (0..1) of the coarse image of ``day`` (reads the coarse images once)."""
        if self._coarse_clear is None:
            with read_errors():
                days = [np.datetime64(t, "D").item() for t in self.coarse.time.values]
                self._coarse_clear = dict(zip(days, self.coarse.clear_fraction.values.tolist()))
        return self._coarse_clear[day]

    def item_ids(self, plan: Plan) -> tuple[list[str], list[str]]:
        """Ids of the fine items of the pairs (and fill days) and of the coarse items of those and the target."""
        times = [np.datetime64(d) for d in sorted({*plan.pairs, *plan.fill_dates})]
        return ([str(self.fine.item_id.sel(time=t).item()) for t in times],
                [str(self.coarse.item_id.sel(time=t).item()) for t in (*times, np.datetime64(plan.target))])

    @property
    def dataset(self) -> xr.Dataset:
        """The lazy fused cube (see the module docstring)."""
        days = [self.day(plan) for plan in self.plans]
        times = [np.datetime64(p.target, "ns") for p in self.plans]
        names = [self._unprepared(p)[0] for p in self.plans]
        ds = xr.Dataset({
            "reflectance": xr.concat([d["mean"] for d in days], dim="time", coords="minimal", compat="override", join="override"),
            "sigma": xr.concat([d["sigma"] for d in days], dim="time", coords="minimal", compat="override", join="override"),
            "quality": xr.concat([d["quality"] for d in days], dim="time", coords="minimal", compat="override", join="override"),
        })
        ds = ds.assign_coords(time=times, pair_dates=("time", [";".join(p.isoformat() for p in plan.pairs) for plan in self.plans]),
                              fill_dates=("time", [";".join(p.isoformat() for p in plan.fill_dates) for plan in self.plans]),
                              method=("time", names))
        # one day's coarse item_id/platform (scalars of the inputs' selection) do not describe the cube (#28)
        ds = ds.drop_vars([name for name, coord in ds.coords.items() if coord.ndim == 0 and name != "spatial_ref"])
        # attrs replaced, not updated: the inputs' (e.g. MODIS nodata 32767) do not describe the outputs (#28)
        ds["reflectance"].attrs = dict(units="1", long_name="surface reflectance")
        ds["sigma"].attrs = dict(units="1", long_name="one standard deviation of the predicted reflectance")
        ds["quality"].attrs = dict(long_name="quality bit flags", flag_meanings=" ".join(QUALITY_BITS),
                                   flag_masks=list(QUALITY_BITS.values()))
        ds.attrs.update(stfuse_version=__version__, catalog=self.query.source,
                        query=json.dumps(_jsonable(asdict(self.query))), fusion=json.dumps(_jsonable(asdict(self.fusion))))
        return ds


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def plan_fused(query: Query, fusion: FusionConfig = FusionConfig(), run: RunConfig = RunConfig()) -> Fused:
    """Search, load lazily, choose each day's pairs: a :class:`Fused` (nothing predicted yet).

    Reads the fine images' clear fractions (to choose pairs); the cubes keep only the days the
    plans use (:func:`select_days_used`). :meth:`Fused.read_days` reads them into memory.
    """
    bands = query.band_names
    base_model = load_base_model(fusion, bands)  # refused here, before any search, if its bands differ
    load = lambda margin, cache=None: load_cubes(catalog=query.catalog, bbox=query.bbox, aoi=query.aoi, start=query.start,  # noqa: E731
                                                 end=query.end, bands=bands, crs=query.crs, margin_days=margin, cache=cache,
                                                 coarse_collection=query.coarse_collection, fine_collection=query.fine_collection)
    try:
        cubes = load(fusion.max_gap_days or 48, run.cache)
    except EmptySearchError as error:  # within --max-gap of the dates: is a pair just beyond it?
        if not fusion.max_gap_days or fusion.max_gap_days >= 48:
            raise
        _refuse_max_gap(load, fusion, error)
        raise
    fine_clear = cubes.fine_clear()  # reads the fine images once (small: a few scenes)
    coarse_days = cubes.coarse_days()
    pair_days = usable_pair_days(fine_clear, coarse_days, min_clear=fusion.min_clear)
    if not pair_days:
        raise InputError(
            f"no clear fine/coarse pair: the {len(fine_clear)} Landsat images found have clear fractions "
            f"{', '.join(f'{c:.0%}' for c in fine_clear.values())} (need >= {fusion.min_clear:.0%}); "
            "widen the dates or lower --min-clear"
        )
    first = cubes.query.start or min(coarse_days)
    last = cubes.query.end or max(coarse_days)
    targets = query.select_days([d for d in date_range(first, last) if d in set(coarse_days)], first)  # --dates/--every
    if not targets:
        raise DataUnavailableError(f"no coarse (MODIS) image between {first} and {last}; widen the date range")
    if fusion.method == "kalman":  # every usable date is every day's pair (stfuse.fusion.kalman)
        plans = series_plans(targets, pair_days, max_gap_days=fusion.max_gap_days)
    else:
        plans = plan_days(targets, pair_days, max_pairs=fusion.max_pairs, max_gap_days=fusion.max_gap_days,
                          max_fill=fusion.max_fill)
    fine, coarse = select_days_used(cubes.fine, cubes.coarse, plans, hybrid=fusion.refine != "none",
                                    series_days=pair_days if uses_series(fusion, len(pair_days)) else (),
                                    keep_coarse=fusion.method == "kalman")
    return Fused(query, fusion, run, cubes, fine, coarse, plans, base_model, pair_days)


def _refuse_max_gap(load: Any, fusion: FusionConfig, error: Exception) -> None:
    """After an empty search within ``--max-gap`` days of the dates: search 48 days around them
    (``load(48)``, no cache) and, if pairs lie there, raise the :class:`InputError` naming
    ``--max-gap`` and the nearest pair's distance (:func:`stfuse.fusion.pairs.max_gap_message`);
    return otherwise (the caller re-raises ``error``)."""
    try:
        cubes = load(48)
        pair_days = usable_pair_days(cubes.fine_clear(), cubes.coarse_days(), min_clear=fusion.min_clear)
        first, last = cubes.query.start or min(cubes.coarse_days()), cubes.query.end or max(cubes.coarse_days())
    except StfuseError:
        return
    targets = [d for d in date_range(first, last) if d in set(cubes.coarse_days())] or date_range(first, last)
    if pair_days:
        raise InputError(max_gap_message(targets, pair_days, fusion.max_gap_days)) from error


def open_fused(query: Query | None = None, fusion: FusionConfig | None = None, run: RunConfig | None = None,
               **settings: Any) -> xr.Dataset:
    """The fused daily cube of ``query`` as a lazy ``xarray.Dataset`` (time, band, y, x).

    ``query``/``fusion``/``run``: :class:`~stfuse.config.Query`, :class:`~stfuse.config.FusionConfig`,
    :class:`~stfuse.config.RunConfig` (``run.tile`` and ``run.cache`` are used); or their fields
    as keyword arguments (``open_fused(start="2023-06-10", end="2023-06-20", method="auto")``).
    Variables ``reflectance`` and ``sigma`` (float32 reflectance), ``quality`` (uint8 flags);
    nothing is predicted until computed, and selecting days computes only those::

        ds = stfuse.open_fused(start="2023-06-10", end="2023-06-20")
        day = ds.sel(time="2023-06-14").compute()       # one day predicted
        ds.reflectance.sel(band="nir08").mean(["y", "x"]).values   # every day

    Compute under ``stfuse.output.tiling.dask_scheduler(...)`` to choose the dask scheduler.
    """
    query, fusion, run = resolve_configs(query, fusion, run, settings, where="open_fused")
    return plan_fused(query, fusion, run).dataset


__all__ = ["Fused", "HybridPredictor", "Predictor", "PriorPredictor", "calibration_tag", "hybrid_predictor", "open_fused",
           "plan_fused", "predict_day", "provenance", "series_examples", "series_predictor", "uses_series"]
