"""Quality gates: flag predictions the method cannot be trusted on, per pixel and per day.

stfuse always writes the prediction, but says when it is doubtful:

- a per-pixel ``quality`` band (bit flags, :data:`QUALITY_BITS`): the coarse target is
  missing there (the prediction is a fallback), every pair's fine pixel is missing (cloud),
  or the coarse change since the nearest pair exceeds ``change_threshold`` reflectance in
  some band (land-cover change the prior may not follow); on a Landsat date (catalog mode),
  ``observed`` marks the clear pixels returned as that day's observation, not predicted
  (:func:`observed_day`);
- day-level warnings (:func:`assess`): the coarse target is mostly masked, the pairs are
  far in time, or much of the scene changed. They go to the log and the output tags, and
  ``strict=True`` turns them into a :class:`stfuse.errors.QualityError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr

from stfuse.errors import QualityError

log = logging.getLogger("stfuse")

QUALITY_BITS = {"coarse_missing": 1, "fine_missing": 2, "large_change": 4, "observed": 8, "filled": 16}
"""Bit values of the ``quality`` band; 0 = no flag. ``observed``: the pixel is the Landsat
observation of that day (sigma :data:`stfuse.data.sensors.LANDSAT_SR_NOISE`), not a prediction;
only ``coarse_missing`` may accompany it. ``filled``: a pair was cloudy there and a farther clear
date filled it (gap filling, :func:`stfuse.fusion.pairs.fill_pair`)."""


@dataclass(frozen=True)
class Thresholds:
    """Day-level gates: minimum coarse clear fraction, maximum pair distance (days), maximum
    fraction of pixels with a large coarse change, and what counts as large (reflectance)."""

    min_coarse_clear: float = 0.5
    max_gap_days: int = 48
    max_changed_fraction: float = 0.25
    change_threshold: float = 0.1


def quality_band(fine: xr.DataArray, coarse: xr.DataArray, coarse_target: xr.DataArray, *, change_threshold: float = 0.1,
                 filled: xr.DataArray | None = None) -> xr.DataArray:
    """(y, x) uint8 bit flags from the inputs of one prediction (lazy if they are).

    ``fine``/``coarse``: (pair, band, y, x); ``coarse_target``: (band, y, x); NaN = missing.
    ``filled``: (y, x) bool, where a pair was gap-filled (:func:`stfuse.fused.pair_inputs`).
    """
    coarse_missing = coarse_target.isnull().any("band")
    fine_missing = fine.isnull().any("band").all("pair")
    change = abs(coarse_target - coarse).min("pair", skipna=True)  # change since the closest-looking pair
    large_change = (change > change_threshold).any("band")
    flags = (
        coarse_missing.astype("uint8") * QUALITY_BITS["coarse_missing"]
        + fine_missing.astype("uint8") * QUALITY_BITS["fine_missing"]
        + large_change.astype("uint8") * QUALITY_BITS["large_change"]
    )
    if filled is not None:
        flags = flags + filled.astype("uint8") * QUALITY_BITS["filled"]
    return flags.astype("uint8").rename("quality")


def observed_day(mean: xr.DataArray, sigma: xr.DataArray, flags: xr.DataArray, observation: xr.DataArray, *,
                 noise: float) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """One day's ``(mean, sigma, quality)`` with the day's own clear Landsat pixels passed through.

    ``mean``/``sigma``: (band, y, x) float32 prediction; ``flags``: (y, x) uint8 (:func:`quality_band`);
    ``observation``: (band, y, x) the fine image of the same day, NaN where masked. Where it is
    finite in every band: mean = the observation (exact, float32), sigma = ``noise`` (reflectance,
    1 sigma), quality = ``observed`` plus ``coarse_missing`` if set; elsewhere all three unchanged.
    Lazy if the inputs are (``observation`` is rechunked to ``mean``'s chunks).
    """
    observation = observation.reset_coords(drop=True).transpose(*mean.dims).astype("float32")
    if mean.chunks is not None:
        observation = observation.chunk(dict(zip(mean.dims, mean.chunks)))
    clear = observation.notnull().all("band")
    kept = flags & QUALITY_BITS["coarse_missing"]
    return (mean.copy(data=xr.where(clear, observation, mean).transpose(*mean.dims).data),
            sigma.copy(data=xr.where(clear, np.float32(noise), sigma).transpose(*sigma.dims).astype("float32").data),
            flags.copy(data=xr.where(clear, kept | QUALITY_BITS["observed"], flags).astype("uint8").transpose(*flags.dims).data))


def assess(*, day: str, coarse_clear: float, max_gap_days: int, changed_fraction: float, thresholds: Thresholds = Thresholds(), strict: bool = False) -> list[str]:
    """Day-level warnings (strings) for one prediction; raises :class:`QualityError` if ``strict``."""
    warnings = []
    if coarse_clear < thresholds.min_coarse_clear:
        warnings.append(f"coarse image of {day} is only {coarse_clear:.0%} clear (< {thresholds.min_coarse_clear:.0%})")
    if max_gap_days > thresholds.max_gap_days:
        warnings.append(f"nearest pair is {max_gap_days} days from {day} (> {thresholds.max_gap_days})")
    if changed_fraction > thresholds.max_changed_fraction:
        warnings.append(
            f"{changed_fraction:.0%} of pixels changed by more than {thresholds.change_threshold} reflectance since the pairs "
            f"(> {thresholds.max_changed_fraction:.0%}); the prior may not follow such change"
        )
    for text in warnings:
        log.warning("%s", text)
    if warnings and strict:
        raise QualityError(f"refusing to predict {day} (--strict): " + "; ".join(warnings))
    return warnings
