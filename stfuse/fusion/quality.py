"""Quality gates: flag predictions the method cannot be trusted on, per pixel and per day.

stfuse always writes the prediction, but says when it is doubtful:

- a per-pixel ``quality`` band (bit flags, :data:`QUALITY_BITS`): the coarse target is
  missing there (the prediction is a fallback), every pair's fine pixel is missing (cloud),
  or the coarse change since the nearest pair exceeds ``change_threshold`` reflectance in
  some band (land-cover change the prior may not follow);
- day-level warnings (:func:`assess`): the coarse target is mostly masked, the pairs are
  far in time, or much of the scene changed. They go to the log and the output tags, and
  ``strict=True`` turns them into a :class:`stfuse.errors.QualityError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import xarray as xr

from stfuse.errors import QualityError

log = logging.getLogger("stfuse")

QUALITY_BITS = {"coarse_missing": 1, "fine_missing": 2, "large_change": 4}
"""Bit values of the ``quality`` band; 0 = no flag."""


@dataclass(frozen=True)
class Thresholds:
    """Day-level gates: minimum coarse clear fraction, maximum pair distance (days), maximum
    fraction of pixels with a large coarse change, and what counts as large (reflectance)."""

    min_coarse_clear: float = 0.5
    max_gap_days: int = 48
    max_changed_fraction: float = 0.25
    change_threshold: float = 0.1


def quality_band(fine: xr.DataArray, coarse: xr.DataArray, coarse_target: xr.DataArray, *, change_threshold: float = 0.1) -> xr.DataArray:
    """(y, x) uint8 bit flags from the inputs of one prediction (lazy if they are).

    ``fine``/``coarse``: (pair, band, y, x); ``coarse_target``: (band, y, x); NaN = missing.
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
    return flags.astype("uint8").rename("quality")


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
