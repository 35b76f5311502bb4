"""What to fuse and how: the request objects every front end builds.

The CLI's flags, a region YAML file and the Python API all build the same three frozen
dataclasses, validated once here (change one with :func:`dataclasses.replace`):

- :class:`Query` — where, when, which bands, from which catalog;
- :class:`FusionConfig` — how each day is predicted (method and its options, pairs, refiner,
  uncertainty, device);
- :class:`RunConfig` — how the work is run and written (tiles, dask scheduler, outputs, cache).

``stfuse.open_fused(query, fusion, run)`` turns them into a lazy dataset;
``stfuse.predict(query, fusion, run)`` writes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from stfuse.data.sensors import BANDS, COARSE_COLLECTIONS, FINE_COLLECTIONS, check_bands
from stfuse.errors import InputError
from stfuse.fusion.prior import METHODS, choose_method, method_function
from stfuse.fusion.quality import Thresholds

PathLike = str | os.PathLike[str]
Method = Literal["auto", "blend", "starfm", "estarfm", "fsdaf", "fitfc", "kalman"]
Refine = Literal["none", "shipped", "scene"]
Format = Literal["cog", "zarr"]

METHOD_CHOICES: tuple[str, ...] = ("auto", "blend", "starfm", "estarfm", "fsdaf", "fitfc", "kalman")
REFINE_CHOICES: tuple[str, ...] = ("none", "shipped", "scene")
FORMAT_CHOICES: tuple[str, ...] = ("cog", "zarr")


@dataclass(frozen=True)
class Query:
    """Where, when and which bands to fuse.

    ``catalog``: a static STAC catalog path, a STAC API URL or a provider name (None: the
    bundled ``sample_scenes``; then area and dates default to the sample's extent).
    ``bbox``: (min lon, min lat, max lon, max lat) in degrees; or ``aoi``: a GeoJSON geometry
    (dict) or a GeoJSON file; not both. ``start``/``end``: the first and last day to predict,
    inclusive (``datetime.date`` or ``YYYY-MM-DD``; None: the data's extent). ``bands``: band
    names (None: all of :data:`stfuse.data.sensors.BANDS`). ``crs``: output CRS (None: the
    Landsat items' UTM zone). ``coarse_collection``: ``modis-43A4-061`` (MCD43A4 NBAR) or
    ``modis-09GA-061`` (MOD09GA) or a VIIRS NBAR collection; None: by date (MCD43A4 up to
    2026-08-31, VIIRS NBAR after). ``fine_collection``: ``landsat-c2-l2`` (None: the provider's
    default), ``hls2-l30``/``hls2-s30`` (HLS v2) or ``sentinel-2-l2a``/``sentinel-2-c1-l2a``.
    ``dates``: predict only these days (``datetime.date`` or ``YYYY-MM-DD``, or one
    comma-separated string); ``start``/``end`` default to the first and last of them, and a day
    without coarse data is refused with the days that have it. ``every``: predict every
    ``every``-th day counted from the first day (1 = every day); not with ``dates``.
    """

    catalog: PathLike | None = None
    bbox: tuple[float, float, float, float] | None = None
    aoi: dict[str, Any] | PathLike | None = None
    start: dt.date | str | None = None
    end: dt.date | str | None = None
    bands: tuple[str, ...] | None = None
    crs: str | None = None
    coarse_collection: str | None = None
    fine_collection: str | None = None
    dates: tuple[dt.date, ...] | None = None
    every: int | None = None

    def __post_init__(self) -> None:
        self._check_days()
        if self.bbox is not None and self.aoi is not None:
            raise InputError("give a bbox or an aoi, not both")
        if self.bbox is not None:
            bbox = tuple(self.bbox)
            if len(bbox) != 4 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bbox):
                raise InputError(f"bbox must be 4 numbers (min lon, min lat, max lon, max lat), got {self.bbox!r}")
            object.__setattr__(self, "bbox", tuple(float(v) for v in bbox))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(check_bands(list(self.bands))))
        if self.coarse_collection is not None and self.coarse_collection not in COARSE_COLLECTIONS:
            raise InputError(f"{self.coarse_collection!r} is not a coarse collection stfuse can use; "
                             f"use one of {', '.join(COARSE_COLLECTIONS)}")
        if self.fine_collection is not None and self.fine_collection not in FINE_COLLECTIONS:
            raise InputError(f"{self.fine_collection!r} is not a fine collection stfuse can use; "
                             f"use one of {', '.join(FINE_COLLECTIONS)}")

    def _check_days(self) -> None:
        """Validate ``dates``/``every``; ``start``/``end`` default to the first/last of ``dates``."""
        if self.every is not None and (isinstance(self.every, bool) or not isinstance(self.every, numbers.Integral)
                                       or self.every < 1):
            raise InputError(f"every must be a whole number of days >= 1, got {self.every!r}")
        if self.dates is None:
            return
        if self.every is not None:
            raise InputError("give dates or every, not both (--dates picks the days itself)")
        raw = self.dates.split(",") if isinstance(self.dates, str) else list(self.dates)
        days = tuple(sorted({_iso_day(d, "dates") for d in raw if not (isinstance(d, str) and not d.strip())}))
        if not days:
            raise InputError("dates is empty; give days as YYYY-MM-DD,YYYY-MM-DD")
        object.__setattr__(self, "dates", days)
        start = _iso_day(self.start, "start") if self.start is not None else None
        end = _iso_day(self.end, "end") if self.end is not None else None
        outside = [d for d in days if (start and d < start) or (end and d > end)]
        if outside:
            raise InputError(f"date {outside[0]} is outside the range asked for (start {start or '..'}, end {end or '..'}); "
                             "widen the range or drop the date")
        if self.start is None:
            object.__setattr__(self, "start", days[0])
        if self.end is None:
            object.__setattr__(self, "end", days[-1])

    def select_days(self, available: Sequence[dt.date], first: dt.date) -> list[dt.date]:
        """The days to predict among ``available`` (days with coarse data from ``first`` on, in
        order): all of them, the ``dates`` (each must be available) or every ``every``-th
        calendar day from ``first``."""
        if self.dates is not None:
            have = set(available)
            missing = [d for d in self.dates if d not in have]
            if missing:
                raise InputError(f"no coarse (MODIS) image on {', '.join(map(str, missing))}; days with data "
                                 f"from {self.start} to {self.end}: {_day_ranges(available) or 'none'}")
            return list(self.dates)
        if self.every is not None and self.every > 1:
            return [d for d in available if (d - first).days % self.every == 0]
        return list(available)

    @property
    def band_names(self) -> list[str]:
        """The bands asked for, all of them when None."""
        return list(self.bands or BANDS)

    @property
    def source(self) -> str:
        """The catalog as a label (``sample_scenes`` when None)."""
        return str(self.catalog) if self.catalog is not None else "sample_scenes"


@dataclass(frozen=True)
class FusionConfig:
    """How each day is predicted.

    ``method``: the physics prior (``auto``, the default: ``blend``, the mean of Fit-FC, FSDAF and
    ``fine + coarse change``; ``starfm``, ``fsdaf``, ``fitfc``, ``blend`` 1+ pairs, ``estarfm`` 2
    pairs; see :func:`stfuse.fusion.prior.method_for_day`; ``kalman``: the time-series engine,
    every usable date and every coarse day, catalog mode and the holdout,
    :mod:`stfuse.fusion.kalman`; ``max_pairs`` and ``max_fill`` do not apply to it).
    ``window``: its moving-window size in fine pixels (None: the method's default).
    ``options``: other keyword options of the method's function (checked against its
    signature), e.g. ``{"n_classes": 6}`` for FSDAF.
    ``refine``: ``none`` (prior only), ``shipped`` (the CNN refiner with the shipped weights,
    or ``weights``) or ``scene`` (first adapted to the day's pairs); ``mc_samples`` Monte Carlo
    dropout passes; ``seed`` makes every random step reproducible.
    ``variance_scale``: multiplies the predicted variance (sigma^2) after the method's own
    calibration factor, e.g. the scale ``stfuse evaluate --holdout`` fits for an area.
    ``max_pairs`` (1, 2 or more), ``min_clear`` (0..1), ``max_gap_days``: which Landsat dates serve
    as pairs (:mod:`stfuse.fusion.pairs`); ``max_fill``: how many farther usable dates per pair
    fill its cloudy pixels (catalog mode; 0: none). ``strict``: refuse days that fail a quality gate
    (``thresholds``) instead of flagging them. ``device``: ``cpu`` or ``cuda``.
    ``observed``: on a Landsat date (catalog mode), return its clear pixels as observed (sigma
    :data:`stfuse.data.sensors.LANDSAT_SR_NOISE`, quality bit ``observed``) and predict only the
    masked ones; False predicts every pixel.
    """

    method: Method = "auto"
    window: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    refine: Refine = "none"
    weights: PathLike | None = None
    mc_samples: int = 8
    seed: int = 0
    variance_scale: float = 1.0
    max_pairs: int = 2
    max_fill: int = 3
    min_clear: float = 0.05
    max_gap_days: int | None = None
    strict: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    device: str = "cpu"
    observed: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHOD_CHOICES:
            raise InputError(f"unknown method {self.method!r}; choose from {', '.join(METHOD_CHOICES)}")
        if self.refine not in REFINE_CHOICES:
            raise InputError(f"unknown refine mode {self.refine!r}; use none, shipped or scene")
        if self.method == "kalman" and self.refine != "none":
            raise InputError("--method kalman has no refiner; leave out --refine (or use --method auto with it)")
        if self.weights is not None and self.refine == "none":
            raise InputError("a refiner checkpoint (--weights) is only used with --refine shipped or scene")
        check_variance_scale(self.variance_scale)
        if self.window is not None and (isinstance(self.window, bool) or not isinstance(self.window, numbers.Integral)
                                        or self.window < 1):
            raise InputError(f"window must be a positive number of pixels, got {self.window!r}")
        if not isinstance(self.max_pairs, int) or isinstance(self.max_pairs, bool) or self.max_pairs < 1:
            raise InputError(f"max_pairs must be a positive integer, got {self.max_pairs!r}")
        if not isinstance(self.max_fill, int) or isinstance(self.max_fill, bool) or self.max_fill < 0:
            raise InputError(f"max_fill must be a whole number >= 0, got {self.max_fill!r}")
        if not 0 <= self.min_clear <= 1:
            raise InputError(f"min_clear {self.min_clear} must be between 0 and 1")
        if self.max_gap_days is not None and self.max_gap_days < 0:
            raise InputError(f"max_gap_days must be >= 0, got {self.max_gap_days}")
        if not isinstance(self.observed, (bool, np.bool_)):
            raise InputError(f"observed must be True or False, got {self.observed!r}")
        object.__setattr__(self, "observed", bool(self.observed))
        if not 1 <= int(self.mc_samples) <= 256:
            raise InputError(f"mc_samples must be between 1 and 256, got {self.mc_samples}")
        object.__setattr__(self, "device", resolve_device(self.device))
        object.__setattr__(self, "options", dict(self.options or {}))
        check_method_options(self.method, self.prior_options)

    @property
    def prior_options(self) -> dict[str, Any]:
        """Keyword options passed to the prior's function: ``options`` plus ``window``."""
        return {**self.options, **({"window": self.window} if self.window else {})}


@dataclass(frozen=True)
class RunConfig:
    """How the work is run and written.

    ``out_dir``: output folder. ``formats``: ``cog`` (``out_dir/stfuse_YYYY-MM-DD.tif`` + a STAC
    item each) and/or ``zarr`` (``out_dir/stfuse.zarr``). ``overwrite`` replaces outputs;
    ``resume`` skips days already complete. ``tile``: tile side in pixels (plus the method's
    halo). ``scheduler``: None (threads), ``local`` (a LocalCluster of ``workers`` processes x
    ``threads``, ``memory_limit`` each) or a ``tcp://`` address of an existing dask cluster.
    ``cache``: a folder where loaded cubes are kept as Zarr and reused
    (:func:`stfuse.data.cube.load_cubes`). ``dtype``: ``float32`` (nodata NaN) or ``int16``
    (reflectance and sigma x 10000 with the band scale 1e-4 set, nodata -32768; the Zarr store
    likewise, CF-encoded); ``quality`` is exact integer flags in both. ``compress``: the COGs'
    compression, ``zstd`` (level 1), ``deflate``, ``lzw`` or ``none``
    (:data:`stfuse.output.io.OUTPUT_DTYPES`, :data:`stfuse.output.io.COMPRESSIONS`).
    """

    out_dir: PathLike = "out"
    formats: tuple[Format, ...] = ("cog",)
    overwrite: bool = False
    resume: bool = False
    tile: int = 1024
    scheduler: str | None = None
    workers: int | None = None
    threads: int | None = None
    memory_limit: str | None = None
    cache: PathLike | None = None
    dtype: Literal["float32", "int16"] = "float32"
    compress: Literal["zstd", "deflate", "lzw", "none"] = "zstd"

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "int16"):  # = stfuse.output.io.OUTPUT_DTYPES (not imported: rasterio is slow)
            raise InputError(f"unknown output dtype {self.dtype!r}; use float32 or int16")
        if self.compress not in ("zstd", "deflate", "lzw", "none"):  # = stfuse.output.io.COMPRESSIONS
            raise InputError(f"unknown compression {self.compress!r}; use zstd, deflate, lzw or none")
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        unknown = sorted(set(formats) - set(FORMAT_CHOICES))
        if unknown or not formats:
            raise InputError(f"unknown output format {unknown or list(formats)}; use cog and/or zarr")
        object.__setattr__(self, "formats", formats)
        if int(self.tile) < 1:
            raise InputError(f"tile must be >= 1 pixel, got {self.tile}")


def _iso_day(value: Any, name: str) -> dt.date:
    """A strict ``YYYY-MM-DD`` (or date) as a date; :class:`InputError` naming ``name`` otherwise."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name}: {value!r} is not a date; write it as YYYY-MM-DD") from None


def _day_ranges(days: Sequence[dt.date]) -> str:
    """Days as runs of consecutive days: ``2023-06-01 .. 2023-06-09, 2023-06-12``."""
    runs: list[list[dt.date]] = []
    for d in sorted(days):
        if runs and (d - runs[-1][-1]).days == 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ", ".join(f"{r[0]} .. {r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda`` (refused when torch sees no GPU) or ``auto`` (CUDA when available) as a torch device."""
    if device == "cpu":
        return device
    if device not in ("auto", "cuda") and not str(device).startswith("cuda:"):
        raise InputError(f"unknown device {device!r}; use cpu, cuda or auto")
    import torch

    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device != "auto":
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return "cpu"


def check_variance_scale(variance_scale: float) -> None:
    """Refuse a variance scale that is not a positive finite number."""
    if isinstance(variance_scale, bool) or not (isinstance(variance_scale, numbers.Real) and np.isfinite(variance_scale)
                                                and variance_scale > 0):
        raise InputError(f"variance scale must be a positive number (1 = as predicted); got {variance_scale!r}")


def check_method_options(method: str, options: Mapping[str, Any]) -> None:
    """Refuse keyword options that ``method``'s function (every candidate for ``auto``) does not take."""
    if not options:
        return
    if method == "kalman":
        from stfuse.fusion.kalman import OPTIONS

        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InputError(f"method kalman has no option {unknown[0]!r}; its options: {', '.join(OPTIONS)}")
        return
    names = (choose_method(1),) if method == "auto" else (method,)
    for name in names:
        if name not in METHODS:
            continue
        params = inspect.signature(method_function(name)).parameters
        known = [p for p, spec in params.items() if spec.kind == inspect.Parameter.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(known))
        if unknown:
            takes = [m for m in METHODS if unknown[0] in inspect.signature(method_function(m)).parameters]
            hint = f"; {unknown[0]!r} is an option of {', '.join(takes)} (choose one with --method)" if takes else ""
            raise InputError(f"method {name} has no option {unknown[0]!r}; its options: {', '.join(known)}{hint}")


def config_fields(cls: type) -> list[str]:
    """Field names of one of the request dataclasses."""
    return [f.name for f in dataclasses.fields(cls)]


def split_settings(settings: Mapping[str, Any], *, where: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split flat ``settings`` into keyword arguments of :class:`Query`, :class:`FusionConfig`
    and :class:`RunConfig`; :class:`InputError` naming ``where`` and the valid keys for any other key."""
    groups = [config_fields(Query), config_fields(FusionConfig), config_fields(RunConfig)]
    unknown = sorted(set(settings) - {k for g in groups for k in g})
    if unknown:
        valid = sorted({k for g in groups for k in g})
        raise InputError(f"{where} has unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
    return tuple({k: v for k, v in settings.items() if k in g} for g in groups)  # type: ignore[return-value]


def coerce_sequence(value: Any) -> tuple[Any, ...] | None:
    """A list, tuple or single value as a tuple (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(value)
    return (value,)




def resolve_configs(query: Query | None, fusion: FusionConfig | None, run: RunConfig | None, settings: Mapping[str, Any], *,
                    where: str) -> tuple[Query, FusionConfig, RunConfig]:
    """The three request objects from objects and/or flat keyword ``settings`` (fields of any of
    them; a setting overrides the object's field). :class:`InputError` naming ``where`` on an
    unknown key, listing the valid ones."""
    q, f, r = split_settings(settings, where=where)
    return (dataclasses.replace(query or Query(), **q), dataclasses.replace(fusion or FusionConfig(), **f),
            dataclasses.replace(run or RunConfig(), **r))


__all__ = ["FusionConfig", "Query", "RunConfig", "check_method_options", "check_variance_scale", "resolve_configs", "split_settings"]
