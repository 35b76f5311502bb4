"""Abrupt land-cover change between the pair date and the target date (issue #32): one-pair tasks.

A flood (land turned to turbid water: low NIR/SWIR) or a harvest (green crops turned to bare
soil) covers parts of coarse pixels between the date of the fine/coarse pair and the target
date. The surface is the landscape of :mod:`stfuse.sim.synth` (fields with phenology, rain,
textures) evaluated on two days. The flood covers ``flood_fraction`` of the scene: the low ground
of a smooth random terrain (correlation about one coarse pixel, plus detail), so that its
irregular patches cover whole coarse pixels in places and parts of many others; the water is
turbid (its turbidity varies smoothly) with a little texture. The harvest is the simulator's own
(the crop fields within a radius turn to stubble / bare soil). The coarse images are the
**block means** of the true fine surface over ``factor`` x ``factor`` pixels (480 m / 30 m = 16
by default) plus a per-band bias per date and Gaussian noise per coarse pixel, put on the fine
grid either as **blocky** nearest-neighbour blocks (``coarse="blocky"``, as coarse images cut to
a 480 m grid and replicated) or **smoothly** (``coarse="smooth"``: bilinear between coarse-pixel
centres, as a MODIS product resampled bilinearly). The fine image of the pair is the true
surface plus Landsat-like noise; the truth is the noise-free surface on the target date.

    task = abrupt_task(seed=1, kind="flood", coarse="blocky")
    task.fine_pair.shape      # (1, B, H, W); coarse_pair the same; coarse_target and truth (B, H, W)

Pure numpy, deterministic from the arguments, small (256 x 256 px by default: well under a
second to build).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from stfuse.errors import InputError
from stfuse.sim.synth import (
    _TURBID_WATER,
    _WATER,
    BANDS,
    SceneSpec,
    _Landscape,
    block_mean,
    make_window,
    smooth_field,
    upsample_bilinear,
)

__all__ = ["AbruptTask", "abrupt_task", "abrupt_tasks", "DEFAULT_BANDS"]

DEFAULT_BANDS: tuple[str, ...] = ("green", "red", "nir08")
"""Three bands like the Landsat-5 flood scene of issue #32 (green, red, NIR)."""

CoarseKind = Literal["blocky", "smooth"]
ChangeKind = Literal["flood", "harvest"]

# day indices in the simulated series: pair on day 2, target on day 18 (16 days, one Landsat
# revisit), the abrupt change on day 10 in between
_PAIR_DAY, _TARGET_DAY, _CHANGE_DAY = 2, 18, 10


@dataclass(frozen=True)
class AbruptTask:
    """One one-pair task. Arrays float32 reflectance on the fine grid.

    ``fine_pair``/``coarse_pair`` (1, B, H, W), ``coarse_target``/``truth`` (B, H, W),
    ``change_mask`` (H, W) the fine pixels whose land cover changed, ``factor`` fine pixels per
    coarse pixel, ``bands`` the band names, ``name`` a short id."""

    name: str
    fine_pair: np.ndarray
    coarse_pair: np.ndarray
    coarse_target: np.ndarray
    truth: np.ndarray
    change_mask: np.ndarray
    factor: int
    bands: tuple[str, ...]

    def baseline(self) -> np.ndarray:
        """``fine + coarse change``: the pair's fine image plus the coarse change (B, H, W)."""
        return (self.fine_pair[0] + self.coarse_target - self.coarse_pair[0]).astype(np.float32)


def abrupt_task(seed: int = 1, *, kind: ChangeKind = "flood", coarse: CoarseKind = "blocky", size: int = 256,
                factor: int = 16, bands: tuple[str, ...] = DEFAULT_BANDS, start: str = "2023-06-20",
                landsat_noise: float = 0.004, coarse_noise: float = 0.004, coarse_bias: float = 0.004,
                flood_fraction: float = 0.25) -> AbruptTask:
    """Build one abrupt-change task (module docstring).

    Args:
        seed: landscape seed (every other argument equal, the same seed gives the same task).
        kind: ``"flood"`` or ``"harvest"``.
        coarse: ``"blocky"`` (nearest-neighbour blocks) or ``"smooth"`` (bilinear) coarse images.
        size: scene height and width in fine pixels (rounded down to a multiple of ``factor``).
        factor: coarse pixel size in fine pixels (16: 480 m on a 30 m grid; 16-20 for MODIS).
        bands: band names of :data:`stfuse.sim.synth.BANDS` (3-6 of them).
        start: date of day 0 (the pair is on day 2, the change on day 10, the target on day 18).
        landsat_noise: standard deviation of the noise of the fine pair image.
        coarse_noise: standard deviation of the noise per coarse pixel, band and date.
        coarse_bias: standard deviation of the bias per band and date of the coarse images.
        flood_fraction: share of the scene the flood covers (``kind="flood"``).
    """
    if kind not in ("flood", "harvest"):
        raise InputError(f"kind must be 'flood' or 'harvest', got {kind!r}")
    if coarse not in ("blocky", "smooth"):
        raise InputError(f"coarse must be 'blocky' or 'smooth', got {coarse!r}")
    unknown = [b for b in bands if b not in BANDS]
    if unknown or not bands:
        raise InputError(f"bands must be names of {BANDS}, got {bands!r}")
    factor = int(factor)
    size = (int(size) // factor) * factor
    if factor < 2 or size < 4 * factor:
        raise InputError(f"need factor >= 2 and size >= 4 * factor, got size {size}, factor {factor}")
    spec = SceneSpec(height=size, width=size, n_days=_TARGET_DAY + 2, start=start, seed=int(seed),
                     landsat_offset=_PAIR_DAY, coarse_factor=factor, cloud_fraction=0.0,
                     change_day=_CHANGE_DAY if kind == "harvest" else None, change_kind=kind, edge_fill=False)
    window = make_window(spec, 0, 0, size, size, _Landscape(spec))
    idx = [BANDS.index(b) for b in bands]
    t1 = window.truth(_PAIR_DAY)[idx]
    t2 = window.truth(_TARGET_DAY)[idx]
    if kind == "flood":
        mask = _flood_mask(int(seed), size, factor, float(flood_fraction))
        t2[:, mask] = _flood_water(int(seed), size, factor)[idx][:, mask]
    else:
        mask = window.change_mask.copy()
    rng = np.random.default_rng([int(seed), 3202, factor, size, 0 if kind == "flood" else 1])
    nb = len(idx)
    fine1 = t1 + rng.normal(0.0, landsat_noise, t1.shape).astype(np.float32)

    def observe(truth: np.ndarray) -> np.ndarray:
        c = block_mean(truth, factor)
        c = c + rng.normal(0.0, coarse_bias, (nb, 1, 1)).astype(np.float32)
        c = c + rng.normal(0.0, coarse_noise, c.shape).astype(np.float32)
        if coarse == "blocky":
            return np.repeat(np.repeat(c, factor, -2), factor, -1).astype(np.float32)
        return upsample_bilinear(c, factor)

    c1, c2 = observe(t1), observe(t2)
    return AbruptTask(name=f"{kind}-{coarse}-s{seed}", fine_pair=np.clip(fine1, 0.0, 1.0)[None].astype(np.float32),
                      coarse_pair=c1[None], coarse_target=c2, truth=t2.astype(np.float32),
                      change_mask=mask, factor=factor, bands=tuple(bands))


def _flood_mask(seed: int, size: int, factor: int, fraction: float) -> np.ndarray:
    """(size, size) bool: the low ground of a smooth random terrain, ``fraction`` of the scene."""
    x = np.arange(size, dtype=np.float64) + 0.5
    terrain = smooth_field(seed, "abrupt/terrain", x, x, 1.2 * factor) + 0.35 * smooth_field(seed, "abrupt/detail", x, x, 0.25 * factor)
    return terrain < np.quantile(terrain, fraction)


def _flood_water(seed: int, size: int, factor: int) -> np.ndarray:
    """(6, size, size) float32 flood-water reflectance: clear-to-turbid water, smoothly varying, textured."""
    x = np.arange(size, dtype=np.float64) + 0.5
    turbid = np.clip(0.55 + 0.25 * smooth_field(seed, "abrupt/turbidity", x, x, 2.0 * factor), 0.0, 1.0)
    texture = 1.0 + 0.06 * smooth_field(seed, "abrupt/ripples", x, x, 1.5)
    clear, muddy = np.asarray(_WATER, np.float32), np.asarray(_TURBID_WATER, np.float32)
    water = clear[:, None, None] + turbid[None] * (muddy - clear)[:, None, None]
    return np.clip(water * texture[None], 0.0005, 1.0).astype(np.float32)


def abrupt_tasks(coarse: CoarseKind = "blocky", seeds: tuple[int, ...] = (1, 2, 3), kinds: tuple[ChangeKind, ...] = ("flood", "harvest"),
                 **kwargs) -> list[AbruptTask]:
    """:func:`abrupt_task` for every kind and seed (flood first)."""
    return [abrupt_task(s, kind=k, coarse=coarse, **kwargs) for k in kinds for s in seeds]
