"""Long cloudy simulated series: a daily coarse sensor with day-to-day wobble and gaps, and a
cloudy Landsat series, on a scene of :mod:`stfuse.sim.synth`.

What the time-series engine (:mod:`stfuse.fusion.kalman`) and its benchmark
(``tools/series_engine_study.py``) are decided on. The surface (fields, phenology, rain, an
abrupt flood or harvest on some fields at ``change_day``), its PSF aggregate on the coarse grid
and the Landsat-like acquisitions (noise, blobby clouds with shadows and thin edges; with
``cloud_fraction`` 0.3-0.4 the dates are 30-60 % cloudy on average, one in four nearly
overcast) come from :func:`stfuse.sim.synth.simulate`, which is called, not changed. On top of
the noise-free coarse aggregate this module puts a coarse sensor like a daily MODIS/VIIRS
product (:func:`coarse_sensor`):

- a multiplicative factor per day and band: a view-angle cycle over the 16-day orbit repeat
  (amplitude ``wobble_cycle``) plus a random part (``wobble_sd``): together 1-3 % (BRDF);
- a persistent relative mismatch per coarse pixel (geometry, spectral response; ``persist_sd``);
- white noise per coarse pixel and day (``noise_sd`` absolute plus ``noise_rel`` relative);
- whole days missing (``gap_days``: fraction of days) and, on the other days, cloudy coarse
  pixels (blobs; on ``cloudy_days`` of the days, up to ``max_cloud`` of the pixels);
- bilinear resampling to the fine grid (NaN spreads to the fine pixels a missing coarse
  pixel touches), as catalog mode reprojects MODIS.

Deterministic from :attr:`SeriesSpec.seed`. Pure numpy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from stfuse.data.sensors import BANDS
from stfuse.sim.synth import Scene, SceneSpec, simulate, smooth_field, upsample_bilinear


@dataclass(frozen=True)
class SeriesSpec:
    """A simulated series. Sizes in fine pixels, times in days (see the module docstring).

    ``landsat_revisit`` 16 (one satellite) or 8 (two); ``cloud_fraction`` the simulator's mean
    cloud parameter (<= 0.4; the dates then hold 0-100 % cloud, one in four nearly overcast).
    """

    size: int = 256
    n_days: int = 160
    start: str = "2023-04-15"
    seed: int = 0
    coarse_factor: int = 16
    landsat_revisit: int = 8
    landsat_offset: int = 3
    cloud_fraction: float = 0.35
    change_day: int | None = 80
    change_kind: str = "flood"
    misregistration_px: float = 2.0
    psf_sigma: float = 0.5
    field_size_px: float = 30.0
    landsat_noise: float = 0.004
    wobble_cycle: float = 0.01
    wobble_sd: float = 0.01
    persist_sd: float = 0.03
    noise_sd: float = 0.003
    noise_rel: float = 0.01
    gap_days: float = 0.15
    cloudy_days: float = 0.35
    max_cloud: float = 0.4

    def scene_spec(self) -> SceneSpec:
        """The :class:`~stfuse.sim.synth.SceneSpec` of the surface and the Landsat-like dates
        (the simulator's own coarse noise, bias and gaps off: :func:`coarse_sensor` replaces them)."""
        return SceneSpec(height=self.size, width=self.size, n_days=self.n_days, start=self.start, seed=self.seed,
                         landsat_revisit=self.landsat_revisit, landsat_offset=self.landsat_offset,
                         coarse_factor=self.coarse_factor, cloud_fraction=self.cloud_fraction,
                         misregistration_px=self.misregistration_px, change_day=self.change_day,
                         change_kind=self.change_kind,  # type: ignore[arg-type]
                         psf_sigma=self.psf_sigma, field_size_px=self.field_size_px, landsat_noise=self.landsat_noise,
                         coarse_noise=0.0, coarse_bias=0.0, coarse_gap_days=0.0, edge_fill=False)


@dataclass(eq=False)
class Series:
    """A simulated series on the fine grid. ``days`` (T,) dates; ``coarse`` (T, B, H, W) float32
    reflectance (NaN: missing day or cloudy coarse pixel); ``fine_days`` (N,) indices into
    ``days`` of the Landsat dates; ``fine`` (N, B, H, W) float32 (NaN: cloud, shadow, edges);
    ``gain`` (T, B) the coarse sensor's daily factor; ``scene`` the simulator's scene (its
    ``truth_day(i)`` is the noise-free surface of any day, all six bands)."""

    spec: SeriesSpec
    bands: tuple[str, ...]
    days: list[dt.date]
    coarse: np.ndarray
    fine_days: tuple[int, ...]
    fine: np.ndarray
    gain: np.ndarray
    scene: Scene

    @property
    def fine_dates(self) -> list[dt.date]:
        return [self.days[i] for i in self.fine_days]

    def truth(self, day: int) -> np.ndarray:
        """The noise-free surface (B, H, W) of day index ``day`` in this series' bands."""
        return self.scene.truth_day(day)[[BANDS.index(b) for b in self.bands]]

    def clear_fraction(self) -> list[float]:
        """Per Landsat date, the fraction of pixels clear in every band."""
        return [float(np.isfinite(f).all(axis=0).mean()) for f in self.fine]


def coarse_sensor(clean: np.ndarray, spec: SeriesSpec) -> tuple[np.ndarray, np.ndarray]:
    """The daily coarse sensor on the noise-free coarse aggregate ``clean`` (T, B, h, w): returns
    ``(coarse (T, B, h, w) float32 with NaN gaps, gain (T, B))`` (module docstring)."""
    rng = np.random.default_rng([spec.seed, 4242])
    t_days, n_bands, h, w = clean.shape
    t = np.arange(t_days, dtype=np.float64)[:, None]
    phase = rng.uniform(0, 2 * np.pi)
    band_amp = spec.wobble_cycle * rng.uniform(0.6, 1.4, size=(1, n_bands))
    gain = 1.0 + band_amp * np.sin(2 * np.pi * t / 16.0 + phase) + rng.normal(0, spec.wobble_sd, size=(t_days, 1)) \
        * rng.uniform(0.8, 1.2, size=(1, n_bands))
    persist = rng.normal(0, spec.persist_sd, size=(1, n_bands, h, w))
    noise = rng.normal(0, 1, size=clean.shape) * (spec.noise_sd + spec.noise_rel * clean)
    coarse = clean * gain[:, :, None, None] * (1.0 + persist) + noise
    rows = np.arange(h, dtype=np.float64) + 0.5
    cols = np.arange(w, dtype=np.float64) + 0.5
    for day in range(t_days):
        if rng.uniform() < spec.gap_days:
            coarse[day] = np.nan
        elif rng.uniform() < spec.cloudy_days:
            field = smooth_field(spec.seed, f"coarse-cloud/{day}", rows, cols, 2.5)
            cover = rng.uniform(0.05, spec.max_cloud)
            coarse[day][:, field > np.quantile(field, 1.0 - cover)] = np.nan
    return coarse.astype(np.float32), gain.astype(np.float32)


def simulate_series(spec: SeriesSpec | None = None, bands: Sequence[str] = ("red", "nir08")) -> Series:
    """Simulate a long cloudy series (module docstring) in ``bands``. 256 px x 160 days: ~20 s."""
    spec = spec or SeriesSpec()
    scene = simulate(spec.scene_spec())
    index = [BANDS.index(b) for b in bands]
    native, gain = coarse_sensor(scene.coarse_clean, spec)
    coarse = upsample_bilinear(native[:, index], spec.coarse_factor)
    fine = np.stack([scene.landsat_reflectance(k)[index] for k in range(len(scene.landsat))]).astype(np.float32)
    return Series(spec, tuple(bands), scene.dates, coarse.astype(np.float32), tuple(scene.landsat_days), fine,
                  gain[:, index], scene)


SERIES_SETS: dict[str, SeriesSpec] = {
    "sim A (8-day, flood)": SeriesSpec(seed=11, landsat_revisit=8, landsat_offset=3, cloud_fraction=0.35, change_day=80,
                                       change_kind="flood"),
    "sim B (8-day, harvest)": SeriesSpec(seed=12, landsat_revisit=8, landsat_offset=5, cloud_fraction=0.4, change_day=70,
                                         change_kind="harvest", misregistration_px=-3.0, field_size_px=20.0),
    "sim C (16-day, flood)": SeriesSpec(seed=13, landsat_revisit=16, landsat_offset=6, cloud_fraction=0.3, change_day=95,
                                        change_kind="flood", field_size_px=40.0, wobble_sd=0.015),
}
"""The simulated series of the benchmark (``tools/series_engine_study.py``): 256 x 256 px, 160
days from mid-April; two with Landsat every 8 days, one every 16 days."""


__all__ = ["SERIES_SETS", "Series", "SeriesSpec", "coarse_sensor", "simulate_series"]
