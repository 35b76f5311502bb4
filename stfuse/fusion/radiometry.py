"""Coarse images in the fine images' units: a per-band linear fit at the pair dates.

Users bring Landsat and MODIS in whatever units they have: reflectance 0-1, reflectance x 1e4,
or uncalibrated digital numbers. The priors and the ``fine + coarse change`` baseline add
coarse *changes* to fine images, so both must be in one unit. At the pair dates the coarse
image is, up to sensor differences, the fine image seen through a wide point-spread function;
so per band, ``lowpass(coarse) ~ gain * lowpass(fine) + offset`` over every pixel where both
are valid (both smoothed alike, so that blocky, smooth or already-sharp coarse images compare
like with like; geometric-mean regression: both sides are noisy). Where the gain of any band is outside
:data:`SAME_UNITS` the units differ and the coarse images are mapped into the fine units,
``(coarse - offset) / gain``; otherwise they are left alone (real sensors in the same unit
agree within about 35 % at the coarse scale; see docs/methods.md).

Arrays are numpy float32, NaN = missing: fine/coarse (P, B, H, W) on the fine grid,
coarse_target (B, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

from stfuse.errors import InputError

SAME_UNITS = (0.5, 2.0)
"""Gains (coarse per fine unit) inside which the two sensors count as being in one unit. Fitted
gains on real data in one unit: 0.65-0.98 (estarfm-real, CIA: MODIS shows less contrast than
Landsat); in different units: 0.22-0.29 (Landsat digital numbers, realset1) and 7e-5 to 9e-5
(reflectance beside reflectance x 1e4, Kranj)."""
SMOOTH_PX = 16
"""Box filter side (fine pixels) that brings the fine images to the coarse scale for the fit."""


@dataclass(frozen=True)
class UnitFit:
    """Per-band ``coarse = gain * fine + offset`` (fine units -> coarse units), and whether the
    coarse images are mapped into the fine units (``applied``)."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    applied: bool

    def to_fine_units(self, coarse: np.ndarray) -> np.ndarray:
        """``coarse`` (..., B, H, W) in the fine images' units (unchanged when not ``applied``)."""
        if not self.applied:
            return coarse
        gain = np.asarray(self.gain, dtype=np.float32)[:, None, None]
        offset = np.asarray(self.offset, dtype=np.float32)[:, None, None]
        return ((coarse - offset) / gain).astype(np.float32)

    def record(self) -> dict[str, object]:
        """For output tags: the fitted gains and offsets, and whether they were applied."""
        return {"gain": [round(g, 6) for g in self.gain], "offset": [round(o, 6) for o in self.offset], "applied": self.applied}


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
    lo, hi = SAME_UNITS
    applied = any(not (lo <= g <= hi) for g in gains)
    return UnitFit(tuple(gains), tuple(offsets), applied)


def harmonize(fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, UnitFit]:
    """``(coarse, coarse_target, fit)`` with both coarse arrays in the fine images' units when
    their units differ (:func:`fit_units`); unchanged otherwise."""
    fit = fit_units(fine, coarse)
    return fit.to_fine_units(coarse), fit.to_fine_units(coarse_target), fit


__all__ = ["SAME_UNITS", "SMOOTH_PX", "UnitFit", "fit_units", "harmonize"]
