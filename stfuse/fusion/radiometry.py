"""Coarse images in the fine images' units: a per-band linear fit at the pair dates.

Users bring Landsat and MODIS in whatever units they have: reflectance 0-1, reflectance x 1e4,
or uncalibrated digital numbers. The priors and the ``fine + coarse change`` baseline add
coarse *changes* to fine images, so both must be in one unit. At the pair dates the coarse
image is, up to sensor differences, the fine image seen through a wide point-spread function;
so per band, ``lowpass(coarse) ~ gain * lowpass(fine) + offset`` over every pixel where both
are valid (both smoothed alike, so that blocky, smooth or already-sharp coarse images compare
like with like; geometric-mean regression: both sides are noisy; only pixels valid in both, so
masked clouds do not drag the fit). How much of the fit is applied varies smoothly with its
evidence, the distance of the gain from 1 in log units: a weight ``w`` = 0 for gains inside
:data:`SAME_UNITS` (the sensors agree as real sensors in one unit do), 1 outside
:data:`OTHER_UNITS` (clearly other units), a smoothstep between; the coarse images become
``(1 - w) * coarse + w * (coarse - offset) / gain``. So scaling an input by 5 % moves the output
by a little, never by a switch (it flipped on a hard threshold before, issue #28).

Arrays are numpy float32, NaN = missing: fine/coarse (P, B, H, W) on the fine grid,
coarse_target (B, H, W).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

from stfuse.errors import InputError

SAME_UNITS = (0.6, 1 / 0.6)
"""Gains (coarse per fine unit) inside which the two sensors count as being in one unit (weight 0).
Fitted gains on real data in one unit: 0.65-0.98 (estarfm-real, CIA: MODIS shows less contrast
than Landsat); in different units: 0.22-0.29 (Landsat digital numbers, realset1) and 7e-5 to 9e-5
(reflectance beside reflectance x 1e4, Kranj)."""
OTHER_UNITS = (0.3, 1 / 0.3)
"""Gains outside which the coarse images are fully mapped into the fine units (weight 1)."""
PLAUSIBLE_SAME_UNITS = (0.65, 1.1)
"""Gains seen between real sensors in one unit; a gain in :data:`SAME_UNITS` but outside this gets a
warning (check the files' scale and the QA masks)."""
SMOOTH_PX = 16
"""Box filter side (fine pixels) that brings the fine images to the coarse scale for the fit."""


DARK_OFFSET = -0.5
"""Median over bands of the fit's offset relative to the mean coarse value below which the fine
images are not the same physical quantity as the coarse ones (:func:`same_quantity`)."""


def same_quantity(fit: "UnitFit", coarse: np.ndarray) -> tuple[bool, list[float]]:
    """Whether fine and coarse images measure the same quantity up to a unit (scale) factor, and
    each band's offset relative to the mean coarse value (``coarse``: (P, B, H, W), coarse units).

    Surface reflectance beside surface reflectance (in any unit) relates with a small offset:
    -0.24..+0.47 of the mean coarse value on estarfm-real, CIA and Kranj. Digital numbers or
    top-of-atmosphere values beside surface reflectance carry a large dark offset (path radiance,
    the DN zero point): -0.07..-5.1, median over bands -0.8 to -2.5, on realset1 (Landsat Level-1
    DN beside MODIS reflectance). Such pairs are not the same quantity when the units differ
    (``fit.applied``) and the median relative offset is below :data:`DARK_OFFSET`: their changes
    follow different physics (the atmosphere changes the DN, not the surface reflectance) and the
    coarse change does not carry over without a calibration per date.
    """
    means = [float(np.nanmean(coarse[:, b])) for b in range(coarse.shape[1])]
    relative = [o / m if np.isfinite(m) and abs(m) > 1e-12 else 0.0 for o, m in zip(fit.offset, means)]
    return not (fit.applied and float(np.median(relative)) < DARK_OFFSET), relative


def unit_weight(gain: float) -> float:
    """How much of a fitted unit mapping is applied (0..1): a smoothstep of ``|log gain|`` from
    :data:`SAME_UNITS` (0) to :data:`OTHER_UNITS` (1)."""
    if not np.isfinite(gain) or gain <= 0:
        return 1.0
    lo, hi = -np.log(SAME_UNITS[0]), -np.log(OTHER_UNITS[0])
    t = float(np.clip((abs(np.log(gain)) - lo) / (hi - lo), 0.0, 1.0))
    return t * t * (3 - 2 * t)


@dataclass(frozen=True)
class UnitFit:
    """Per-band ``coarse = gain * fine + offset`` (fine units -> coarse units), the weight of the
    mapping into the fine units per band (:func:`unit_weight`) and whether any is applied."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    weight: tuple[float, ...] = ()

    @property
    def applied(self) -> bool:
        """True when some band's coarse values are (partly) mapped into the fine units."""
        return any(w > 0 for w in self.weight)

    def to_fine_units(self, coarse: np.ndarray) -> np.ndarray:
        """``coarse`` (..., B, H, W) in the fine images' units: ``(1 - w) * coarse + w * (coarse - offset) / gain``
        per band (unchanged when no weight is positive)."""
        if not self.applied:
            return coarse
        gain = np.asarray(self.gain, dtype=np.float32)[:, None, None]
        offset = np.asarray(self.offset, dtype=np.float32)[:, None, None]
        weight = np.asarray(self.weight, dtype=np.float32)[:, None, None]
        return ((1 - weight) * coarse + weight * ((coarse - offset) / gain)).astype(np.float32)

    def record(self) -> dict[str, object]:
        """For output tags: the fitted gains, offsets and weights, and whether any was applied."""
        return {"gain": [round(g, 6) for g in self.gain], "offset": [round(o, 6) for o in self.offset],
                "weight": [round(w, 4) for w in self.weight], "applied": self.applied}

    def report(self, log: logging.Logger) -> None:
        """Warn when the mapping is applied (fully: the files are in other units; partly: the units
        are ambiguous) or when a gain in one unit is implausible; say nothing otherwise."""
        gains = ", ".join(f"{g:.4g}" for g in self.gain)
        weights = ", ".join(f"{w:.2f}" for w in self.weight)
        if self.applied and all(w >= 1 for w in self.weight):
            log.warning("coarse and fine files are in different units (coarse per fine unit, per band: %s); the coarse images were "
                        "mapped into the fine units (units tag). If both are reflectance, check their scale/offset", gains)
        elif self.applied:
            log.warning("coarse and fine files may be in different units (gain %s per band, mapping weight %s): the coarse images were "
                        "partly mapped into the fine units. Check both files' scale/offset and that clouds are masked (QA files)",
                        gains, weights)
        elif any(not (PLAUSIBLE_SAME_UNITS[0] <= g <= PLAUSIBLE_SAME_UNITS[1]) for g in self.gain):
            log.warning("coarse and fine files differ more than real sensors in one unit do (gain %s per band, 0.65-1.1 expected); "
                        "check the files' scale/offset and that clouds are masked (QA files)", gains)


def _lowpass(image: np.ndarray, size: int) -> np.ndarray:
    """NaN-aware box mean of a (H, W) image over ``size`` x ``size`` pixels (NaN where the box is mostly missing)."""
    valid = np.isfinite(image)
    total = uniform_filter(np.where(valid, image, 0.0).astype(np.float64), size, mode="nearest")
    count = uniform_filter(valid.astype(np.float64), size, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0.5, total / count, np.nan)


def fit_units(fine: np.ndarray, coarse: np.ndarray, *, smooth: int = SMOOTH_PX) -> UnitFit:
    """Fit per band ``lowpass(coarse) = gain * lowpass(fine) + offset`` over the pairs (module docstring).

    ``fine``, ``coarse``: (P, B, H, W). Raises :class:`InputError` when a band has fewer than
    100 pixels valid in both, or no contrast (then no fit is possible).
    """
    if fine.shape != coarse.shape or fine.ndim != 4:
        raise InputError(f"fine {fine.shape} and coarse {coarse.shape} must both be (pair, band, y, x)")
    size = max(1, min(smooth, fine.shape[-2], fine.shape[-1]))
    gains, offsets = [], []
    for b in range(fine.shape[1]):
        low = np.concatenate([_lowpass(fine[p, b], size).ravel() for p in range(fine.shape[0])])
        c = np.concatenate([_lowpass(coarse[p, b], size).ravel() for p in range(coarse.shape[0])])
        ok = np.isfinite(low) & np.isfinite(c)
        if ok.sum() < 100:
            raise InputError(f"band {b + 1}: only {int(ok.sum())} pixels are valid in both the fine and the coarse pair images; "
                             "need 100 to relate their units")
        x, y = low[ok], c[ok]
        sx, sy = x.std(), y.std()
        if sx == 0 or sy == 0:
            raise InputError(f"band {b + 1}: the fine or coarse pair images are constant; their units cannot be related")
        gain = float(np.sign(np.corrcoef(x, y)[0, 1]) * sy / sx) or float(sy / sx)
        gains.append(gain)
        offsets.append(float(y.mean() - gain * x.mean()))
    return UnitFit(tuple(gains), tuple(offsets), tuple(unit_weight(g) for g in gains))


def harmonize(fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, UnitFit]:
    """``(coarse, coarse_target, fit)`` with both coarse arrays in the fine images' units when
    their units differ (:func:`fit_units`); unchanged otherwise."""
    fit = fit_units(fine, coarse)
    return fit.to_fine_units(coarse), fit.to_fine_units(coarse_target), fit


__all__ = ["DARK_OFFSET", "OTHER_UNITS", "SAME_UNITS", "SMOOTH_PX", "UnitFit", "fit_units", "harmonize", "same_quantity", "unit_weight"]
