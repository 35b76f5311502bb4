"""Scene simulator: daily 30 m "truth" reflectance plus Landsat-like and MODIS-like observations.

Everything is pure numpy (plus ``scipy`` for a KD-tree and a distance transform) and
deterministic from :attr:`SceneSpec.seed`.

The landscape is *procedural*: land cover, textures, clouds and the river are functions of
the pixel position in an unbounded plane (random Fourier fields and tiled random Voronoi
seeds), not arrays of a fixed size. The scene (``height`` x ``width`` fine pixels) is one
window of that plane; :meth:`Scene.window` gives any other window (e.g. a margin around the
scene) with exactly the same content where the windows overlap. This is how
:mod:`stfuse.sim.sample` simulates MODIS pixels that reach beyond the Landsat footprint.

Model, per fine pixel and day ``t`` (bands :data:`stfuse.data.sensors.BANDS`)::

    truth = soil(t) + v(t) * (green - soil(t))       soil(t) = background * wetness(t)

``v`` is a vegetation fraction from a double-logistic phenology curve per field (Voronoi
cell, class-specific timing plus a per-field shift), ``background`` is soil / straw / dry
grass / water / urban material, ``green`` the class's green-canopy spectrum; both carry
per-field and per-pixel texture. Rain events darken soils for a few days. An abrupt change
(``change_kind``: a river flood turning land to turbid water, or a harvest turning crops
to bare soil) happens at ``change_day``.

Observations:

- **coarse** (MODIS-like, daily): truth blurred by a Gaussian PSF (``psf_sigma`` coarse
  pixels), optionally shifted by ``misregistration_px`` fine pixels, block-averaged by
  ``coarse_factor``, plus a per-date per-band bias and noise. Some days have gaps
  (quality 255, NaN) and some pixels lower quality (quality 1, twice the noise).
- **Landsat-like** (every ``landsat_revisit`` days from ``landsat_offset``): truth + noise,
  blobby clouds with thin edges (flagged as dilated cloud), displaced shadows, thin cirrus
  on cloudy dates, and a slanted scene-edge band of fill on some dates; encoded as Landsat
  Collection 2 Level-2 DNs (uint16, ``DN = (refl + 0.2) / 0.0000275``, 0 = fill) with a
  ``QA_PIXEL`` band in the Collection 2 bit layout.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import ndtr, ndtri

from stfuse.data.sensors import BANDS, LANDSAT_C2_L2, LANDSAT_QA, LANDSAT_QA_BITS
from stfuse.errors import InputError

# --------------------------------------------------------------------------------------
# Land-cover classes and spectra
# --------------------------------------------------------------------------------------

CLASS_NAMES: tuple[str, ...] = ("water", "forest", "crop_early", "crop_late", "grassland", "urban", "bare")
"""Land-cover class names; the class id is the index."""
WATER, FOREST, CROP_EARLY, CROP_LATE, GRASSLAND, URBAN, BARE = range(len(CLASS_NAMES))

N_BANDS = len(BANDS)

# Reflectance spectra (blue, green, red, nir08, swir16, swir22), typical surface reflectance.
_SOIL = (0.070, 0.100, 0.140, 0.210, 0.300, 0.250)
_STRAW = (0.090, 0.130, 0.170, 0.260, 0.360, 0.280)
_DRY_GRASS = (0.080, 0.110, 0.150, 0.250, 0.330, 0.250)
_LITTER = (0.040, 0.060, 0.070, 0.200, 0.220, 0.140)
_CROP_GREEN = (0.025, 0.065, 0.035, 0.480, 0.220, 0.100)
_FOREST_GREEN = (0.020, 0.045, 0.025, 0.340, 0.160, 0.070)
_GRASS_GREEN = (0.035, 0.075, 0.045, 0.380, 0.220, 0.110)
_WATER = (0.045, 0.055, 0.035, 0.020, 0.008, 0.004)
_TURBID_WATER = (0.070, 0.100, 0.100, 0.060, 0.020, 0.010)
_URBAN = (0.100, 0.110, 0.130, 0.180, 0.220, 0.190)
_BARE = (0.130, 0.180, 0.240, 0.300, 0.400, 0.340)
_CLOUD = (0.520, 0.500, 0.490, 0.510, 0.400, 0.280)
_SHADOW_FACTOR = (0.50, 0.42, 0.38, 0.33, 0.30, 0.30)  # shadowed / sunlit (diffuse skylight is bluer)

# Per class: background spectrum A, background spectrum B (per field mixed A..B), green spectrum.
_CLASS_SPECTRA = np.array(
    [
        [_WATER, _WATER, _WATER],
        [_LITTER, _SOIL, _FOREST_GREEN],
        [_SOIL, _STRAW, _CROP_GREEN],
        [_SOIL, _STRAW, _CROP_GREEN],
        [_DRY_GRASS, _SOIL, _GRASS_GREEN],
        [_URBAN, _URBAN, _FOREST_GREEN],
        [_BARE, _SOIL, _BARE],
    ],
    dtype=np.float64,
)  # (class, 3, band)

# Background mixing range per class (fraction of spectrum B), chosen per field.
_MIX_RANGE = np.array([[0, 0], [0, 0.3], [0.5, 1.0], [0.0, 0.4], [0.0, 0.4], [0, 0], [0, 0.3]])

# Phenology per class: start / end of season (day of year), rise / fall rates (days),
# vegetation fraction min / max, per-field timing spread (days).
_PHENOLOGY = np.array(
    [
        # sos   eos   r1    r2    vmin  vmax  spread
        [0.0, 0.0, 1.0, 1.0, 0.00, 0.00, 0.0],  # water
        [120, 290, 10, 12, 0.55, 0.85, 3.0],  # forest
        [90, 168, 8, 5, 0.05, 0.85, 6.0],  # crop_early: winter-wheat-like, senescent by July
        [175, 255, 7, 8, 0.05, 0.90, 6.0],  # crop_late: maize-like, green-up in June-July
        [95, 200, 10, 12, 0.15, 0.55, 4.0],  # grassland: slow summer decline
        [0.0, 0.0, 1.0, 1.0, 0.20, 0.20, 0.0],  # urban: static street trees
        [0.0, 0.0, 1.0, 1.0, 0.00, 0.00, 0.0],  # bare
    ]
)
# How much rain darkens the background (1 = bare soil) and how textured each class is.
_SOIL_WEIGHT = np.array([0.0, 0.3, 1.0, 1.0, 0.7, 0.2, 1.0])
_TEXTURE_AMP = np.array([0.01, 0.05, 0.04, 0.04, 0.05, 0.16, 0.06])
_V_TEXTURE_AMP = np.array([0.0, 0.08, 0.12, 0.12, 0.15, 0.60, 0.0])
# Class draw probabilities for a Voronoi field (before the town / riparian / river rules).
_CLASS_PROB = np.array([0.03, 0.12, 0.30, 0.30, 0.13, 0.04, 0.08])

_TILE = 128  # fine pixels per tile of Voronoi seeds
_TILE_OFFSET = 1 << 20  # keeps tile indices non-negative for seeding
_QA_CONF_LOW = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)  # cloud/shadow/snow/cirrus confidence = low

ChangeKind = Literal["flood", "harvest"]


@dataclass(frozen=True)
class SceneSpec:
    """Parameters of a simulated scene. Sizes in fine (30 m) pixels, times in days.

    ``height``/``width`` must be multiples of ``coarse_factor``. Landsat dates are day
    indices ``landsat_offset, landsat_offset + landsat_revisit, ...``. ``cloud_fraction`` is
    the mean cloud cover of Landsat dates; the first date gets a tenth of it (mostly clear)
    and every fourth date 2.5x (cloudy). ``misregistration_px`` shifts what each coarse
    pixel sees by that many fine pixels down and right (sub-pixel geolocation error).
    ``psf_sigma`` is the Gaussian PSF sigma in coarse pixels (applied before block
    averaging). ``change_day=None`` disables the abrupt change.
    """

    height: int = 400
    width: int = 400
    n_days: int = 64
    start: str = "2023-06-01"
    seed: int = 0
    landsat_revisit: int = 16
    landsat_offset: int = 5
    coarse_factor: int = 16
    cloud_fraction: float = 0.2
    misregistration_px: float = 0.0
    change_day: int | None = 30
    change_kind: ChangeKind = "flood"
    psf_sigma: float = 0.5
    field_size_px: float = 40.0
    landsat_noise: float = 0.004
    coarse_noise: float = 0.004
    coarse_bias: float = 0.004
    coarse_gap_days: float = 0.1
    edge_fill: bool = True

    def __post_init__(self) -> None:
        for name in ("height", "width", "n_days", "landsat_revisit", "coarse_factor"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"SceneSpec.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.height % self.coarse_factor or self.width % self.coarse_factor:
            raise InputError(
                f"SceneSpec height x width {self.height} x {self.width} must be multiples of "
                f"coarse_factor {self.coarse_factor}; round them to a multiple"
            )
        if not 0 <= self.landsat_offset < self.n_days:
            raise InputError(f"SceneSpec.landsat_offset {self.landsat_offset} must be in 0..n_days-1 ({self.n_days - 1})")
        if not 0.0 <= self.cloud_fraction <= 0.4:
            raise InputError(f"SceneSpec.cloud_fraction {self.cloud_fraction} must be in 0..0.4 (cloudy dates get 2.5x)")
        if self.change_day is not None and not 0 < self.change_day < self.n_days:
            raise InputError(f"SceneSpec.change_day {self.change_day} must be in 1..n_days-1 or None")
        if self.change_kind not in ("flood", "harvest"):
            raise InputError(f"SceneSpec.change_kind {self.change_kind!r} must be 'flood' or 'harvest'")
        if self.psf_sigma < 0 or self.field_size_px < 4:
            raise InputError("SceneSpec.psf_sigma must be >= 0 and field_size_px >= 4")
        if self.seed < 0:
            raise InputError(f"SceneSpec.seed must be >= 0, got {self.seed}")
        try:
            dt.date.fromisoformat(self.start)
        except ValueError:
            raise InputError(f"SceneSpec.start {self.start!r} is not an ISO date (YYYY-MM-DD)") from None

    @property
    def dates(self) -> list[dt.date]:
        """The simulated days, one per day from ``start``."""
        first = dt.date.fromisoformat(self.start)
        return [first + dt.timedelta(days=i) for i in range(self.n_days)]

    @property
    def landsat_days(self) -> tuple[int, ...]:
        """Day indices of the Landsat-like acquisitions."""
        return tuple(range(self.landsat_offset, self.n_days, self.landsat_revisit))

    @property
    def coarse_shape(self) -> tuple[int, int]:
        """(rows, cols) of the native coarse grid."""
        return self.height // self.coarse_factor, self.width // self.coarse_factor

    def to_dict(self) -> dict[str, object]:
        """Plain dict of the fields (JSON-serialisable)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------------------
# Deterministic random building blocks
# --------------------------------------------------------------------------------------


def _key(*parts: object) -> list[int]:
    """Stable integer entropy for ``np.random.default_rng`` from strings/ints."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(zlib.crc32(part.encode()))
        else:
            out.append(int(part) % (1 << 32))
    return out


def _rng(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng([seed, *_key(*parts)])


def smooth_field(seed: int, key: str, rows: np.ndarray, cols: np.ndarray, corr_px: float, n_modes: int = 96) -> np.ndarray:
    """Unit-variance Gaussian random field (random Fourier features) on a pixel grid.

    ``rows``/``cols``: pixel-centre coordinates (1D, fine pixels, any origin). The field is a
    function of position only, so overlapping windows agree. ``corr_px``: correlation length
    (Gaussian covariance ``exp(-r^2 / 2 corr^2)``). Returns (len(rows), len(cols)) float32.
    """
    rng = _rng(seed, "field", key)
    k = rng.normal(0.0, 1.0 / corr_px, size=(n_modes, 2))
    phase = rng.uniform(0.0, 2 * np.pi, size=n_modes)
    ay = np.outer(np.asarray(rows, np.float64), k[:, 0])
    bx = np.outer(np.asarray(cols, np.float64), k[:, 1]) + phase
    a = np.concatenate([np.cos(ay), -np.sin(ay)], axis=1)
    b = np.concatenate([np.cos(bx), np.sin(bx)], axis=1)
    return ((a @ b.T) * math.sqrt(2.0 / n_modes)).astype(np.float32)


def fractal_field(seed: int, key: str, rows: np.ndarray, cols: np.ndarray, scales: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Unit-variance sum of :func:`smooth_field` at several (corr_px, weight) scales."""
    total = sum(w * smooth_field(seed, f"{key}/{i}", rows, cols, c) for i, (c, w) in enumerate(scales))
    return (total / math.sqrt(sum(w * w for _, w in scales))).astype(np.float32)


def _smooth_1d(seed: int, key: str, x: np.ndarray, corr_px: float, n_modes: int = 48) -> np.ndarray:
    """Unit-variance 1D smooth random function of ``x``."""
    rng = _rng(seed, "curve", key)
    k = rng.normal(0.0, 1.0 / corr_px, size=n_modes)
    phase = rng.uniform(0.0, 2 * np.pi, size=n_modes)
    return np.cos(np.outer(np.asarray(x, np.float64), k) + phase).sum(axis=1) * math.sqrt(2.0 / n_modes)


def double_logistic(doy: np.ndarray | float, sos, eos, rise, fall, vmin, vmax) -> np.ndarray:
    """Vegetation fraction: ``vmin + (vmax - vmin) * (logistic((doy-sos)/rise) - logistic((doy-eos)/fall))``."""
    doy = np.asarray(doy, np.float64)
    up = 1.0 / (1.0 + np.exp(-(doy - sos) / rise))
    down = 1.0 / (1.0 + np.exp(-(doy - eos) / fall))
    return vmin + (vmax - vmin) * np.clip(up - down, 0.0, 1.0)


# --------------------------------------------------------------------------------------
# Fields (Voronoi cells), river, change region
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cells:
    """Voronoi seeds covering a window with margin and their per-field attributes."""

    points: np.ndarray  # (n, 2) row, col
    ids: np.ndarray  # (n,) int64, stable id of each seed (tile row, tile col, index)
    cls: np.ndarray  # (n,) int
    sos: np.ndarray
    eos: np.ndarray
    rise: np.ndarray
    fall: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    brightness: np.ndarray  # (n,)
    background: np.ndarray  # (n, band)
    green: np.ndarray  # (n, band)


class _Landscape:
    """Procedural description of the plane; evaluates windows. Coordinates: fine pixels, scene origin."""

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        h, w = spec.height, spec.width
        rng = _rng(spec.seed, "layout")
        # River: crosses the scene left to right around 40-55 % of the height.
        self.river_row0 = h * rng.uniform(0.40, 0.55)
        self.river_slope = rng.uniform(-0.15, 0.15)
        self.river_amp = 0.06 * h
        self.river_wavelength = max(w, 200) * rng.uniform(0.6, 1.0)
        self.river_phase = rng.uniform(0, 2 * np.pi)
        self.river_half_width = 2.5
        # Town: a cluster of urban fields.
        self.town = np.array([h * rng.uniform(0.15, 0.3), w * rng.uniform(0.1, 0.35)])
        self.town_radius = 0.12 * min(h, w) + 12
        # Change region (flood reach along the river, or a harvested block of fields).
        self.flood_col = w * rng.uniform(0.5, 0.65)
        self.flood_len = 0.22 * w + 8
        self.flood_width = 0.10 * h + 4
        self.harvest_center = np.array([h * rng.uniform(0.7, 0.85), w * rng.uniform(0.55, 0.8)])
        self.harvest_radius = 0.2 * min(h, w) + 10
        self.harvest_ids = self._harvested_fields() if spec.change_kind == "harvest" else np.zeros(0, np.int64)

    def _harvested_fields(self) -> np.ndarray:
        """Ids of the crop fields harvested at ``change_day``: those seeded in the scene within
        ``harvest_radius`` of the harvest centre (at least the nearest one). Window-independent."""
        s = self.spec
        cells = self.cells(0, 0, s.height, s.width)
        inside = (cells.points[:, 0] >= 0) & (cells.points[:, 0] < s.height) & (cells.points[:, 1] >= 0) & (cells.points[:, 1] < s.width)
        crop = inside & np.isin(cells.cls, (CROP_EARLY, CROP_LATE))
        if not crop.any():
            return np.zeros(0, np.int64)
        dist = np.hypot(*(cells.points - self.harvest_center).T)
        reach = max(self.harvest_radius, float(dist[crop].min()) + 1e-6)
        return np.sort(cells.ids[crop & (dist <= reach)])

    # -- river -------------------------------------------------------------------------
    def river_center(self, cols: np.ndarray) -> np.ndarray:
        """Row of the river centre line at columns ``cols``."""
        s = self.spec
        return (
            self.river_row0
            + self.river_slope * (cols - s.width / 2)
            + self.river_amp * np.sin(2 * np.pi * cols / self.river_wavelength + self.river_phase)
            + 3.0 * _smooth_1d(s.seed, "river", cols, 25.0)
        )

    def river_distance(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Approximate perpendicular distance (px) of each pixel to the river centre line. (h, w)."""
        center = self.river_center(cols)
        slope = self.river_center(cols + 0.5) - self.river_center(cols - 0.5)  # window-independent
        return np.abs(rows[:, None] - center[None, :]) / np.sqrt(1 + slope**2)[None, :]

    # -- Voronoi cells -----------------------------------------------------------------
    def cells(self, row0: float, col0: float, height: int, width: int) -> _Cells:
        """Seeds of every tile touching the window plus one tile of margin."""
        s = self.spec
        n_per_tile = max(1, int(round(_TILE * _TILE / s.field_size_px**2)))
        t_r = range(math.floor(row0 / _TILE) - 1, math.floor((row0 + height) / _TILE) + 2)
        t_c = range(math.floor(col0 / _TILE) - 1, math.floor((col0 + width) / _TILE) + 2)
        pts, attrs, ids = [], [], []
        for tr in t_r:
            for tc in t_c:
                rng = _rng(s.seed, "cells", tr + _TILE_OFFSET, tc + _TILE_OFFSET)
                p = rng.uniform(0, _TILE, size=(n_per_tile, 2)) + np.array([tr * _TILE, tc * _TILE])
                pts.append(p)
                attrs.append(rng.uniform(size=(n_per_tile, 6 + N_BANDS)))
                ids.append((((tr + _TILE_OFFSET) << 22 | (tc + _TILE_OFFSET)) << 20) + np.arange(n_per_tile, dtype=np.int64))
        points = np.concatenate(pts)
        u = np.concatenate(attrs)
        cls = np.searchsorted(np.cumsum(_CLASS_PROB), u[:, 0] * _CLASS_PROB.sum(), side="right").clip(0, len(CLASS_NAMES) - 1)
        river_d = self.river_distance_points(points)
        riparian = (river_d < 25) & (u[:, 1] < 0.55) & (cls != WATER)
        cls = np.where(riparian, FOREST, cls)
        in_town = np.hypot(*(points - self.town).T) < self.town_radius
        cls = np.where(in_town & (u[:, 1] < 0.85), URBAN, cls)
        cls = np.where(river_d < 8, GRASSLAND, cls)  # no ponds/town right on the bank
        ph = _PHENOLOGY[cls]
        shift = ph[:, 6] * _norm_ppf(u[:, 2])
        bright = 1.0 + 0.07 * _norm_ppf(u[:, 3])
        lo, hi = _MIX_RANGE[cls].T
        mix = (lo + (hi - lo) * u[:, 4])[:, None]
        spectra = _CLASS_SPECTRA[cls]  # (n, 3, band)
        jitter = 1.0 + 0.03 * _norm_ppf(u[:, 6 : 6 + N_BANDS])
        background = ((1 - mix) * spectra[:, 0] + mix * spectra[:, 1]) * jitter
        green = spectra[:, 2] * jitter
        return _Cells(
            points=points,
            ids=np.concatenate(ids).astype(np.int64),
            cls=cls.astype(np.int64),
            sos=ph[:, 0] + shift,
            eos=ph[:, 1] + shift,
            rise=ph[:, 2],
            fall=ph[:, 3],
            vmin=ph[:, 4],
            vmax=ph[:, 5],
            brightness=bright,
            background=background,
            green=green,
        )

    def river_distance_points(self, points: np.ndarray) -> np.ndarray:
        """Vertical distance (px) of points (n, 2) to the river centre line."""
        return np.abs(points[:, 0] - self.river_center(points[:, 1]))

    # -- change region -----------------------------------------------------------------
    def flood_zone(self, rows: np.ndarray, cols: np.ndarray, river_d: np.ndarray) -> np.ndarray:
        """Bool (h, w): land that the flood covers (a reach of the river's floodplain)."""
        s = self.spec
        reach = np.exp(-(((cols - self.flood_col) / self.flood_len) ** 4))
        wobble = 1.0 + 0.35 * smooth_field(s.seed, "flood", rows, cols, 10.0)
        return river_d < self.river_half_width + self.flood_width * reach[None, :] * wobble


def _norm_ppf(u: np.ndarray) -> np.ndarray:
    """Standard normal quantile of uniform draws ``u`` (same shape)."""
    return ndtri(np.clip(u, 1e-6, 1 - 1e-6))


# --------------------------------------------------------------------------------------
# A window of the plane: static per-pixel arrays + daily truth
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class SceneWindow:
    """Simulated surface on a window of fine pixels; rows/cols relative to the scene origin.

    ``row0, col0``: position of the window's top-left pixel in scene pixels (may be negative).
    Arrays are (height, width); spectra (band, height, width).
    """

    spec: SceneSpec
    row0: int
    col0: int
    classes: np.ndarray  # (h, w) uint8, before the change
    change_mask: np.ndarray  # (h, w) bool
    change_class: int
    _background: np.ndarray = field(repr=False)  # (band, h, w) float32, texture applied
    _green: np.ndarray = field(repr=False)  # (band, h, w)
    _soil_weight: np.ndarray = field(repr=False)  # (h, w)
    _cell_index: np.ndarray = field(repr=False)  # (h, w) int
    _v_texture: np.ndarray = field(repr=False)  # (h, w) multiplier of v
    _cells: _Cells = field(repr=False)
    _after: np.ndarray = field(repr=False)  # (band, n_changed) background after the change (texture applied)
    _water_texture: np.ndarray = field(repr=False)  # (n_changed,)

    @property
    def shape(self) -> tuple[int, int]:
        return self.classes.shape

    def classes_at(self, day: int) -> np.ndarray:
        """Land-cover class map (h, w) uint8 on day index ``day`` (after the change if due)."""
        out = self.classes.copy()
        if self.spec.change_day is not None and day >= self.spec.change_day:
            out[self.change_mask] = self.change_class
        return out

    def vegetation_fraction(self, day: int) -> np.ndarray:
        """Per-pixel vegetation fraction (h, w) float32 on day index ``day``."""
        c = self._cells
        v_cell = double_logistic(_doy(self.spec, day), c.sos, c.eos, c.rise, c.fall, c.vmin, c.vmax)
        return np.clip(v_cell[self._cell_index] * self._v_texture, 0.0, 1.0).astype(np.float32)

    def truth(self, day: int) -> np.ndarray:
        """True surface reflectance (band, h, w) float32 on day index ``day``."""
        s = self.spec
        v = self.vegetation_fraction(day)
        wet = np.float32(wetness(s)[day])
        soil = self._background * (1.0 - self._soil_weight * (1.0 - wet))
        out = soil + v * (self._green - soil)
        if s.change_day is not None and day >= s.change_day and self._after.shape[1]:
            idx = np.nonzero(self.change_mask)
            if s.change_kind == "flood":
                decay = math.exp(-(day - s.change_day) / 12.0)
                water = np.asarray(_WATER, np.float32)[:, None] + decay * (
                    np.asarray(_TURBID_WATER, np.float32) - np.asarray(_WATER, np.float32)
                )[:, None]
                out[:, idx[0], idx[1]] = water * self._water_texture[None, :]
            else:  # harvest: bare soil / stubble, darkened by rain like other soils
                out[:, idx[0], idx[1]] = self._after * wet
        return np.clip(out, 0.0005, 1.0).astype(np.float32)

    def crop(self, drow: int, dcol: int, height: int, width: int) -> "SceneWindow":
        """Sub-window (views where possible) starting ``drow, dcol`` pixels into this one."""
        sl = (slice(drow, drow + height), slice(dcol, dcol + width))
        cm = self.change_mask[sl]
        flat_idx = np.flatnonzero(self.change_mask)
        pos = np.full(self.change_mask.shape, -1, np.int64)
        pos.flat[flat_idx] = np.arange(flat_idx.size)
        keep = pos[sl][cm]
        return SceneWindow(
            spec=self.spec,
            row0=self.row0 + drow,
            col0=self.col0 + dcol,
            classes=self.classes[sl],
            change_mask=cm,
            change_class=self.change_class,
            _background=self._background[(slice(None), *sl)],
            _green=self._green[(slice(None), *sl)],
            _soil_weight=self._soil_weight[sl],
            _cell_index=self._cell_index[sl],
            _v_texture=self._v_texture[sl],
            _cells=self._cells,
            _after=self._after[:, keep],
            _water_texture=self._water_texture[keep],
        )


def _doy(spec: SceneSpec, day: int) -> float:
    """Day of year of day index ``day``, continuing past 365 when the series crosses New Year."""
    start = dt.date.fromisoformat(spec.start)
    return float((start - dt.date(start.year, 1, 1)).days + 1 + int(day))


def wetness(spec: SceneSpec) -> np.ndarray:
    """Soil brightness factor per day (n_days,) in ~0.85..1: rain darkens soil, which then dries."""
    rng = _rng(spec.seed, "rain")
    n_events = max(1, spec.n_days // 18)
    days = np.sort(rng.uniform(0, spec.n_days, size=n_events))
    depth = rng.uniform(0.06, 0.14, size=n_events)
    t = np.arange(spec.n_days, dtype=np.float64)[:, None]
    dark = np.where(t >= np.floor(days), depth * np.exp(-(t - np.floor(days)) / 3.0), 0.0).sum(axis=1)
    return (1.0 - np.minimum(dark, 0.18)).astype(np.float32)


def make_window(spec: SceneSpec, row0: int, col0: int, height: int, width: int, landscape: _Landscape | None = None) -> SceneWindow:
    """Build the static per-pixel arrays of a window (see :class:`SceneWindow`)."""
    land = landscape or _Landscape(spec)
    s = spec
    rows = np.arange(row0, row0 + height, dtype=np.float64) + 0.5
    cols = np.arange(col0, col0 + width, dtype=np.float64) + 0.5
    cells = land.cells(row0, col0, height, width)
    # Noisy-edged Voronoi: query with domain-warped coordinates.
    warp_r = 3.0 * smooth_field(s.seed, "warp_r", rows, cols, 6.0) + 1.5 * smooth_field(s.seed, "warp_r2", rows, cols, 2.0)
    warp_c = 3.0 * smooth_field(s.seed, "warp_c", rows, cols, 6.0) + 1.5 * smooth_field(s.seed, "warp_c2", rows, cols, 2.0)
    qr = (rows[:, None] + warp_r).ravel()
    qc = (cols[None, :] + warp_c).ravel()
    _, nearest = cKDTree(cells.points).query(np.column_stack([qr, qc]), k=1)
    cell_index = nearest.reshape(height, width)
    cls = cells.cls[cell_index].copy()
    river_d = land.river_distance(rows, cols)
    river_edge = land.river_half_width * (1.0 + 0.3 * smooth_field(s.seed, "bank", rows, cols, 8.0))
    cls[river_d < river_edge] = WATER
    # Texture.
    fine = smooth_field(s.seed, "tex_fine", rows, cols, 1.2)
    mid = smooth_field(s.seed, "tex_mid", rows, cols, 5.0)
    amp = _TEXTURE_AMP[cls].astype(np.float32)
    bright = (cells.brightness[cell_index] * (1.0 + amp * (0.8 * fine + 0.6 * mid))).astype(np.float32)
    band_tex = smooth_field(s.seed, "tex_band", rows, cols, 3.0)  # mild spectral texture
    spectral = 1.0 + 0.02 * band_tex[None] * np.linspace(-1, 1, N_BANDS, dtype=np.float32)[:, None, None]
    is_water = cls == WATER
    background = np.where(is_water[None], np.asarray(_WATER, np.float32)[:, None, None], cells.background[cell_index].transpose(2, 0, 1))
    green = np.where(is_water[None], np.asarray(_WATER, np.float32)[:, None, None], cells.green[cell_index].transpose(2, 0, 1))
    background = (background * bright[None] * spectral).astype(np.float32)
    green = (green * bright[None] * spectral).astype(np.float32)
    v_tex = (1.0 + _V_TEXTURE_AMP[cls] * (0.7 * mid + 0.5 * fine)).astype(np.float32)
    v_tex[is_water] = 0.0
    soil_weight = _SOIL_WEIGHT[cls].astype(np.float32)
    # Abrupt change.
    if s.change_day is None:
        change = np.zeros((height, width), bool)
        change_class = int(WATER)
    elif s.change_kind == "flood":
        change = land.flood_zone(rows, cols, river_d) & (cls != WATER) & (cls != URBAN)
        change_class = int(WATER)
    else:
        harvested = np.isin(cells.ids, land.harvest_ids)
        change = harvested[cell_index] & (cls != WATER)
        change_class = int(BARE)
    idx = np.nonzero(change)
    if s.change_kind == "harvest":
        stubble = np.asarray(_STRAW, np.float32)[:, None] * (0.6 + 0.4 * bright[idx][None]) * 0.5 + background[:, idx[0], idx[1]] * 0.5
        after = stubble.astype(np.float32)
    else:
        after = np.zeros((N_BANDS, idx[0].size), np.float32)
    water_tex = (1.0 + 0.04 * mid[idx]).astype(np.float32)
    return SceneWindow(
        spec=s,
        row0=int(row0),
        col0=int(col0),
        classes=cls.astype(np.uint8),
        change_mask=change,
        change_class=change_class,
        _background=background,
        _green=green,
        _soil_weight=soil_weight,
        _cell_index=cell_index,
        _v_texture=v_tex,
        _cells=cells,
        _after=after,
        _water_texture=water_tex,
    )


# --------------------------------------------------------------------------------------
# Coarse (MODIS-like) sensor model
# --------------------------------------------------------------------------------------


def psf_matrix(n_coarse: int, factor: int, sigma_fine: float, shift_fine: float, pad: int) -> np.ndarray:
    """1D PSF + block-average operator (n_coarse, n_coarse*factor + 2*pad) float32.

    Row ``J`` averages the Gaussian-blurred (``sigma_fine`` fine px) signal over fine pixels
    ``J*factor + shift_fine .. (J+1)*factor + shift_fine``; input index 0 is fine pixel ``-pad``.
    Weights integrate the Gaussian over each fine pixel and sum to 1.
    """
    n_in = n_coarse * factor + 2 * pad
    centers = np.arange(n_in, dtype=np.float64) - pad  # fine pixel i covers [i, i+1)
    sigma = max(float(sigma_fine), 1e-3)
    out = np.zeros((n_coarse, n_in))
    sub = np.arange(factor, dtype=np.float64)
    for j in range(n_coarse):  # n_coarse rows only, not per pixel
        # source fine pixel k (centre k + 0.5 + shift) spreads over input pixels by the Gaussian
        mu = (j * factor + sub + 0.5 + shift_fine)[:, None]
        lo = (centers[None, :] - mu) / sigma
        hi = (centers[None, :] + 1.0 - mu) / sigma
        out[j] = (ndtr(hi) - ndtr(lo)).sum(axis=0) / factor
    out /= out.sum(axis=1, keepdims=True)
    return out.astype(np.float32)


def psf_pad(spec: SceneSpec) -> int:
    """Margin (fine px) the coarse PSF reaches beyond the scene."""
    return int(math.ceil(4.0 * spec.psf_sigma * spec.coarse_factor + abs(spec.misregistration_px))) + 2


def coarse_bias(spec: SceneSpec) -> np.ndarray:
    """Per-date per-band additive bias of the coarse sensor (n_days, band) float32."""
    return (_rng(spec.seed, "coarse_bias").normal(0.0, spec.coarse_bias, size=(spec.n_days, N_BANDS))).astype(np.float32)


def coarse_quality(spec: SceneSpec, day: int, rows: np.ndarray, cols: np.ndarray, key: str = "scene") -> np.ndarray:
    """MCD43-like quality (len(rows), len(cols)) uint8 on a coarse grid: 0 full inversion, 1 magnitude, 255 fill.

    ``rows``/``cols``: coarse pixel-centre coordinates. On ~``coarse_gap_days`` of the days a
    blob covering ~6 % of the pixels is fill; ~12 % of pixels are quality 1 every day.
    """
    rng = _rng(spec.seed, "coarse_gap_day", key, day)
    quality = np.zeros((len(rows), len(cols)), np.uint8)
    mag = smooth_field(spec.seed, f"coarse_mag/{key}/{day}", rows, cols, 1.5)
    quality[mag > 1.17] = 1  # ~12 % of a unit normal
    if rng.uniform() < spec.coarse_gap_days:
        gap = smooth_field(spec.seed, f"coarse_gap/{key}/{day}", rows, cols, 2.0)
        quality[gap > np.quantile(gap, 0.94)] = 255
    return quality


# --------------------------------------------------------------------------------------
# Landsat-like sensor model
# --------------------------------------------------------------------------------------


def encode_landsat(reflectance: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """Landsat C2 L2 DNs (uint16): ``round((refl + 0.2) / 0.0000275)`` clipped to 1..65535, 0 where ``fill``."""
    dn = np.rint((np.asarray(reflectance, np.float64) - LANDSAT_C2_L2.offset) / LANDSAT_C2_L2.scale)
    dn = np.clip(dn, 1, 65535).astype(np.uint16)
    if fill is not None:
        dn[..., fill] = 0
    return dn


def decode_landsat(dn: np.ndarray) -> np.ndarray:
    """float32 reflectance from Landsat C2 L2 DNs, NaN where DN == 0."""
    return LANDSAT_C2_L2.to_reflectance(dn)


def qa_pixel(fill: np.ndarray, cloud: np.ndarray, dilated: np.ndarray, shadow: np.ndarray, cirrus: np.ndarray, water: np.ndarray) -> np.ndarray:
    """Landsat C2 QA_PIXEL (uint16) from boolean masks, like USGS values.

    Bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 shadow, 5 snow, 6 clear (no cloud
    and no dilated cloud), 7 water; confidence pairs 8-9 cloud, 10-11 shadow, 12-13 snow,
    14-15 cirrus (low = 1, high = 3). Clear land = 21824, clear water = 21952, high-confidence
    cloud = 22280, fill = 1.
    """
    b = LANDSAT_QA_BITS
    qa = np.full(fill.shape, _QA_CONF_LOW, np.uint32)
    qa |= dilated.astype(np.uint32) << b["dilated_cloud"]
    qa |= cirrus.astype(np.uint32) << b["cirrus"]
    qa |= cloud.astype(np.uint32) << b["cloud"]
    qa |= shadow.astype(np.uint32) << b["shadow"]
    qa |= (~cloud & ~dilated).astype(np.uint32) << b["clear"]
    qa |= water.astype(np.uint32) << b["water"]
    qa |= cloud.astype(np.uint32) * (3 << 8)
    qa |= shadow.astype(np.uint32) * (3 << 10)
    qa |= cirrus.astype(np.uint32) * (3 << 14)
    qa = qa.astype(np.uint16)
    qa[fill] = 1 << b["fill"]
    return qa


def sun_angles(spec: SceneSpec, k: int) -> tuple[float, float]:
    """(azimuth, elevation) degrees of the sun for Landsat date ``k`` (mid-latitude summer morning)."""
    rng = _rng(spec.seed, "sun", k)
    return float(round(rng.uniform(112, 132), 4)), float(round(rng.uniform(58, 66), 4))


def cloud_multipliers(n_dates: int) -> np.ndarray:
    """Relative cloud cover per Landsat date: first mostly clear, every 4th cloudy."""
    base = np.array([0.1, 1.0, 0.6, 2.5])
    extra = np.array([0.8, 1.2, 0.4, 2.5])
    return np.array([base[k] if k < 4 else extra[k % 4] for k in range(n_dates)])


def fill_fraction(spec: SceneSpec, k: int) -> float:
    """Fraction of the scene in the scene-edge fill band on Landsat date ``k`` (0 = none)."""
    if not spec.edge_fill or k == 0:
        return 0.0
    if k == 2:
        return 0.12
    rng = _rng(spec.seed, "fill", k)
    return float(rng.uniform(0.03, 0.15)) if rng.uniform() < 0.4 else 0.0


@dataclass(eq=False)
class LandsatDate:
    """One simulated Landsat acquisition: DNs, QA and the masks it was built from. Arrays (H, W)."""

    day: int
    platform: str
    dn: np.ndarray  # (band, H, W) uint16
    qa: np.ndarray  # (H, W) uint16
    fill: np.ndarray
    cloud: np.ndarray
    dilated: np.ndarray
    shadow: np.ndarray
    cirrus: np.ndarray
    sun_azimuth: float
    sun_elevation: float

    @property
    def cloud_cover(self) -> float:
        """Percent of non-fill pixels flagged cloud or dilated cloud (like ``eo:cloud_cover``)."""
        valid = ~self.fill
        return float(100.0 * (self.cloud | self.dilated)[valid].mean()) if valid.any() else 100.0


def simulate_landsat(spec: SceneSpec, window: SceneWindow, k: int, day: int) -> LandsatDate:
    """Landsat-like acquisition ``k`` (day index ``day``) of the scene window."""
    s = spec
    h, w = window.shape
    rows = np.arange(window.row0, window.row0 + h, dtype=np.float64) + 0.5
    cols = np.arange(window.col0, window.col0 + w, dtype=np.float64) + 0.5
    truth = window.truth(day)
    rng = _rng(s.seed, "landsat", k)
    azimuth, elevation = sun_angles(s, k)
    # Fill band along a slanted scene edge (left or right side, ~12 deg from vertical).
    frac = fill_fraction(s, k)
    fill = np.zeros((h, w), bool)
    if frac > 0:
        slant = math.tan(math.radians(12.0))
        x = cols[None, :] - window.col0 + slant * (rows[:, None] - window.row0 - h / 2)
        x = x if k % 2 else (w - x)
        fill = x < np.quantile(x, frac)
    # Clouds: thresholded fractal field; thick core (cloud bit), thin haze fading over the
    # 3-pixel dilation ring (dilated-cloud bit), nothing beyond.
    cover = s.cloud_fraction * cloud_multipliers(k + 1)[k]
    scales = ((30.0, 1.0), (10.0, 0.5), (3.0, 0.2))
    cloud_field = fractal_field(s.seed, f"cloud/{k}", rows, cols, scales)
    cloud = np.zeros((h, w), bool)
    dilated = np.zeros((h, w), bool)
    shadow = np.zeros((h, w), bool)
    alpha = np.zeros((h, w), np.float32)
    if cover > 0:
        thr = float(np.quantile(cloud_field, 1.0 - cover))
        cloud = cloud_field > thr
        dist = ndimage.distance_transform_edt(~cloud)
        dilated = (dist > 0) & (dist <= 3.0)
        core = np.clip((cloud_field - thr) / 0.6, 0, 1)
        alpha = np.where(cloud, 0.55 + 0.45 * core, np.where(dilated, 0.3 * np.exp(-(dist - 1.0) / 1.2), 0.0)).astype(np.float32)
        # Shadow: the cloud field seen from the sun, displaced opposite the sun azimuth.
        length = rng.uniform(1200, 2500) / 30.0 / math.tan(math.radians(elevation))  # cloud height / tan(elev), px
        az = math.radians(azimuth)
        d_row, d_col = -length * math.cos(az), length * math.sin(az)  # toward the sun; +row is south
        shadow_field = fractal_field(s.seed, f"cloud/{k}", rows + d_row, cols + d_col, scales)
        shadow = (shadow_field > thr) & ~cloud & ~dilated
    cirrus = np.zeros((h, w), bool)
    haze = np.zeros((h, w), np.float32)
    if cover >= s.cloud_fraction > 0:
        cirrus_field = smooth_field(s.seed, f"cirrus/{k}", rows, cols, 40.0)
        cirrus = cirrus_field > np.quantile(cirrus_field, 0.92)
        haze = np.where(cirrus, 0.02 + 0.03 * np.clip(cirrus_field - np.quantile(cirrus_field, 0.92), 0, 1), 0).astype(np.float32)
    # Radiometry.
    shade = np.where(shadow[None], np.asarray(_SHADOW_FACTOR, np.float32)[:, None, None], np.float32(1.0))
    cloud_tex = 0.85 + 0.15 * np.clip(cloud_field, -2, 2) / 2
    cloud_refl = np.asarray(_CLOUD, np.float32)[:, None, None] * cloud_tex[None]
    obs = truth * shade
    obs = (1.0 - alpha[None]) * obs + alpha[None] * cloud_refl + haze[None]
    noise_sd = s.landsat_noise * np.array([0.9, 0.9, 1.0, 1.3, 1.1, 1.0], np.float32)[:, None, None]
    bias = rng.normal(0.0, 0.15 * s.landsat_noise, size=(N_BANDS, 1, 1)).astype(np.float32)
    obs = obs + bias + noise_sd * rng.standard_normal((N_BANDS, h, w), dtype=np.float32)
    dn = encode_landsat(obs, fill)
    water = window.classes_at(day) == WATER
    qa = qa_pixel(fill, cloud & ~fill, dilated & ~fill, shadow & ~fill, cirrus & ~fill, water & ~fill)
    platform = "landsat-8" if k % 2 == 0 else "landsat-9"
    return LandsatDate(day, platform, dn, qa, fill, cloud & ~fill, dilated & ~fill, shadow & ~fill, cirrus & ~fill, azimuth, elevation)


# --------------------------------------------------------------------------------------
# Resampling helpers
# --------------------------------------------------------------------------------------


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks of the last two axes (..., H, W) -> (..., H/f, W/f)."""
    *lead, h, w = image.shape
    hb, wb = h // factor, w // factor
    x = image[..., : hb * factor, : wb * factor].reshape(*lead, hb, factor, wb, factor)
    return x.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def _bilinear_matrix(n_out: int, factor: int) -> np.ndarray:
    """(n_out, n_out//factor) 1D linear interpolation from coarse to fine pixel centres, edges clamped."""
    n_in = n_out // factor
    x = (np.arange(n_out) + 0.5) / factor - 0.5  # fine centre in coarse pixel-index units
    x = np.clip(x, 0, n_in - 1)
    i0 = np.floor(x).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = x - i0
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] += (1 - t).astype(np.float32)
    m[np.arange(n_out), i1] += t.astype(np.float32)
    return m


def upsample_bilinear(coarse: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear resampling of (..., h, w) coarse images to (..., h*f, w*f) fine pixels.

    Pixel-centre aligned (like GDAL/odc bilinear), edges clamped; NaNs spread to neighbours.
    """
    *_, h, w = coarse.shape
    my = _bilinear_matrix(h * factor, factor)
    mx = _bilinear_matrix(w * factor, factor)
    return (my @ np.asarray(coarse, np.float32) @ mx.T).astype(np.float32)


# --------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Scene:
    """A simulated scene. Shapes: T days, B=6 bands (:data:`stfuse.data.sensors.BANDS`), H x W fine px,
    h x w = H/f x W/f coarse px, N Landsat dates. Reflectance is unitless (0..1).

    - ``classes`` (H, W) uint8 class ids (:data:`CLASS_NAMES`) before the change;
      ``change_mask`` (H, W) bool; ``classes_at(day)`` after it.
    - ``truth_day(i)`` (B, H, W) float32; ``truth`` (T, B, H, W) materialises all days
      (T*B*H*W*4 bytes, 245 MB for the default spec).
    - ``coarse`` (T, B, h, w) float32 (NaN where ``coarse_quality`` is 255);
      ``coarse_quality`` (T, h, w) uint8 (0 good, 1 magnitude inversion, 255 fill);
      ``coarse_clean`` (T, B, h, w) the noise-free PSF aggregate; ``coarse_on_fine(i)``.
    - ``landsat_days`` (N,) day indices; ``landsat_dn`` (N, B, H, W) uint16 C2 L2 DNs;
      ``landsat_qa`` (N, H, W) uint16 QA_PIXEL; ``landsat[k]`` the :class:`LandsatDate`
      with the masks behind the QA.
    """

    spec: SceneSpec
    dates: list[dt.date]
    fine_window: SceneWindow = field(repr=False)
    padded_window: SceneWindow = field(repr=False)
    coarse: np.ndarray = field(repr=False)
    coarse_clean: np.ndarray = field(repr=False)
    coarse_quality: np.ndarray = field(repr=False)
    coarse_bias: np.ndarray = field(repr=False)
    landsat: list[LandsatDate] = field(repr=False)
    landscape: _Landscape = field(repr=False)

    # -- fine truth --------------------------------------------------------------------
    @property
    def classes(self) -> np.ndarray:
        return self.fine_window.classes

    @property
    def change_mask(self) -> np.ndarray:
        return self.fine_window.change_mask

    @property
    def change_day(self) -> int | None:
        return self.spec.change_day

    def classes_at(self, day: int) -> np.ndarray:
        """Class map (H, W) on day index ``day``."""
        return self.fine_window.classes_at(day)

    def truth_day(self, day: int) -> np.ndarray:
        """True reflectance (B, H, W) float32 on day index ``day`` (computed on demand)."""
        if not 0 <= day < self.spec.n_days:
            raise InputError(f"day index {day} is outside 0..{self.spec.n_days - 1}")
        return self.fine_window.truth(day)

    def truth_days(self, days: list[int] | tuple[int, ...]) -> np.ndarray:
        """True reflectance (len(days), B, H, W) float32 for selected day indices."""
        return np.stack([self.truth_day(d) for d in days])

    @cached_property
    def truth(self) -> np.ndarray:
        """All days (T, B, H, W) float32 (large: computed once, then cached)."""
        return self.truth_days(range(self.spec.n_days))

    def window(self, row0: int, col0: int, height: int, width: int) -> SceneWindow:
        """The same landscape on any window of fine pixels (scene origin = 0, 0; may extend outside)."""
        return make_window(self.spec, row0, col0, height, width, self.landscape)

    # -- coarse ------------------------------------------------------------------------
    def coarse_on_fine(self, day: int) -> np.ndarray:
        """Coarse image of ``day`` bilinearly resampled to the fine grid (B, H, W) float32."""
        return upsample_bilinear(self.coarse[day], self.spec.coarse_factor)

    # -- Landsat -----------------------------------------------------------------------
    @property
    def landsat_days(self) -> tuple[int, ...]:
        return tuple(d.day for d in self.landsat)

    @property
    def landsat_dn(self) -> np.ndarray:
        """(N, B, H, W) uint16 DNs."""
        return np.stack([d.dn for d in self.landsat])

    @property
    def landsat_qa(self) -> np.ndarray:
        """(N, H, W) uint16 QA_PIXEL."""
        return np.stack([d.qa for d in self.landsat])

    def landsat_reflectance(self, k: int, *, masked: bool = True) -> np.ndarray:
        """Reflectance (B, H, W) float32 of Landsat date ``k``; NaN at fill and, if ``masked``, where QA is bad."""
        date = self.landsat[k]
        refl = decode_landsat(date.dn)
        if masked:
            refl[:, LANDSAT_QA.bad_mask(date.qa)] = np.nan
        return refl

    def landsat_valid(self, k: int) -> np.ndarray:
        """(H, W) bool: usable pixels of Landsat date ``k`` (not fill, cloud, dilated, cirrus, shadow, snow)."""
        return ~LANDSAT_QA.bad_mask(self.landsat[k].qa)


def simulate(spec: SceneSpec | None = None) -> Scene:
    """Simulate a scene (see module docstring). Deterministic for a given ``spec``."""
    s = spec or SceneSpec()
    land = _Landscape(s)
    pad = psf_pad(s)
    padded = make_window(s, -pad, -pad, s.height + 2 * pad, s.width + 2 * pad, land)
    central = padded.crop(pad, pad, s.height, s.width)
    h, w = s.coarse_shape
    f = s.coarse_factor
    my = psf_matrix(h, f, s.psf_sigma * f, s.misregistration_px, pad)
    mx = psf_matrix(w, f, s.psf_sigma * f, s.misregistration_px, pad)
    clean = np.empty((s.n_days, N_BANDS, h, w), np.float32)
    n_rows = s.height + 2 * pad
    for day in range(s.n_days):
        # one large GEMM along x for all bands and rows, then small ones along y
        along_x = (padded.truth(day).reshape(N_BANDS * n_rows, -1) @ mx.T).reshape(N_BANDS, n_rows, w)
        clean[day] = my @ along_x
    bias = coarse_bias(s)
    crow = np.arange(h, dtype=np.float64) + 0.5
    ccol = np.arange(w, dtype=np.float64) + 0.5
    quality = np.stack([coarse_quality(s, day, crow, ccol) for day in range(s.n_days)])
    noise = _rng(s.seed, "coarse_noise").standard_normal(clean.shape, dtype=np.float32) * np.float32(s.coarse_noise)
    noise *= np.where(quality == 1, np.float32(2.0), np.float32(1.0))[:, None]
    coarse = clean + bias[:, :, None, None] + noise
    coarse[np.broadcast_to((quality == 255)[:, None], coarse.shape)] = np.nan
    landsat = [simulate_landsat(s, central, k, day) for k, day in enumerate(s.landsat_days)]
    return Scene(
        spec=s,
        dates=s.dates,
        fine_window=central,
        padded_window=padded,
        coarse=coarse,
        coarse_clean=clean,
        coarse_quality=quality,
        coarse_bias=bias,
        landsat=landsat,
        landscape=land,
    )


__all__ = [
    "BANDS",
    "BARE",
    "CLASS_NAMES",
    "CROP_EARLY",
    "CROP_LATE",
    "FOREST",
    "GRASSLAND",
    "URBAN",
    "WATER",
    "LandsatDate",
    "Scene",
    "SceneSpec",
    "SceneWindow",
    "block_mean",
    "coarse_bias",
    "coarse_quality",
    "decode_landsat",
    "double_logistic",
    "encode_landsat",
    "psf_matrix",
    "qa_pixel",
    "simulate",
    "simulate_landsat",
    "smooth_field",
    "upsample_bilinear",
    "wetness",
]
