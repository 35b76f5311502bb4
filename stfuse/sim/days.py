"""Simulated days for the refiner and the variance calibrations: scenes of :mod:`stfuse.sim.synth`
with MODIS-like sensor effects on the coarse images, and held-out target days drawn from them.

Pure numpy (plus ``scipy``), deterministic from the seeds. :func:`_synthetic_scene` gives the
scenes the shipped weights are pretrained on (:func:`stfuse.fusion.refine.train_synthetic`);
:func:`calibration_days` the held-out days both the hybrid's
(:func:`stfuse.fusion.refine.fit_hybrid_scales`) and the priors'
(:func:`stfuse.fusion.prior.calibration.fit_scales`) variance factors are fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

from stfuse.fusion.pairs import evidence_day
from stfuse.sim.synth import SceneSpec, simulate, upsample_bilinear


def _simulate_raw(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray, int]:
    """One random :mod:`stfuse.sim.synth` scene: Landsat-like fine images (N, 6, H, W) at its Landsat
    dates (NaN under clouds), the noise-free MODIS-like PSF aggregates (N, 6, h, w) of those
    dates, and the coarse factor. Scene parameters (season, field size, PSF, misregistration,
    abrupt change, clouds, Landsat noise) are drawn from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    factor = int(rng.choice([12, 16, 16, 16, 20]))
    size = (size // factor) * factor
    start_doy = int(rng.integers(60, 250))
    start = (np.datetime64("2023-01-01") + np.timedelta64(start_doy, "D")).astype(str)
    spec = SceneSpec(
        height=size,
        width=size,
        n_days=72,
        start=str(start),
        seed=int(rng.integers(0, 2**31 - 1)),
        landsat_revisit=16,
        landsat_offset=int(rng.integers(0, 16)),
        coarse_factor=factor,
        cloud_fraction=float(rng.choice([0.0, 0.0, 0.03, 0.08])),
        misregistration_px=float(rng.uniform(-0.4, 0.4) * factor),
        change_day=int(rng.integers(10, 70)) if rng.uniform() < 0.5 else None,
        change_kind=str(rng.choice(["flood", "harvest"])),  # type: ignore[arg-type]
        psf_sigma=float(rng.uniform(0.3, 0.8)),
        field_size_px=float(rng.uniform(8, 45)),
        landsat_noise=float(rng.uniform(0.002, 0.006)),
        coarse_noise=0.0,
        coarse_bias=0.0,
        coarse_gap_days=0.0,
        edge_fill=False,
    )
    scene = simulate(spec)
    days = list(scene.landsat_days)
    fine = np.stack([scene.landsat_reflectance(k) for k in range(len(days))]).astype(np.float32)
    return fine, scene.coarse[days].astype(np.float32), factor


def _perturb_coarse(coarse_native: np.ndarray, factor: int, seed: int) -> np.ndarray:
    """MODIS-vs-Landsat sensor effects on clean coarse images (N, B, h, w), then bilinear
    resampling to the fine grid (N, B, h*f, w*f). Per scene, with random strengths: a
    persistent per-band bias, per-date per-band bias and gain, a persistent relative mismatch
    per coarse pixel (geometry/BRDF), per-date relative noise that is spatially correlated
    over 0.5-2.5 coarse pixels (atmosphere, view angle), and white noise per coarse pixel;
    a quarter of the scenes are resampled by nearest neighbour (blocky) instead of bilinear."""
    rng = np.random.default_rng([seed, 3])
    c = coarse_native.astype(np.float64)
    n, b = c.shape[:2]
    u = rng.uniform
    bias = rng.normal(0, u(0, 0.008), size=(1, b, 1, 1)) + rng.normal(0, u(0.0005, 0.004), size=(n, b, 1, 1))
    gain = 1.0 + rng.normal(0, u(0, 0.015), size=(n, b, 1, 1))
    persist = rng.normal(0, u(0, 0.06), size=(1, b) + c.shape[2:])
    corr = gaussian_filter(rng.standard_normal(c.shape), (0, 0, *(2 * [u(0.5, 2.5)])), mode="wrap")
    corr /= corr.std(axis=(2, 3), keepdims=True) + 1e-12
    rel = corr * u(0.0, 0.06) + rng.normal(0, u(0.0, 0.03), size=c.shape)
    white = rng.normal(0, u(0.001, 0.005), size=c.shape)
    c = c * gain * (1.0 + persist + rel) + bias + white
    if u() < 0.25:  # some users resample MODIS by nearest neighbour: blocky coarse images
        return np.repeat(np.repeat(c.astype(np.float32), factor, axis=-2), factor, axis=-1)
    return upsample_bilinear(c.astype(np.float32), factor)


def _synthetic_scene(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Fine (N, 6, H, W) and perturbed coarse-on-fine (N, 6, H, W) images of one synthetic scene."""
    fine, coarse_native, factor = _simulate_raw(seed, size)
    return fine, _perturb_coarse(coarse_native, factor, seed)


class SimulatedDay(NamedTuple):
    """One held-out simulated target day: ``fine``, ``coarse`` (P, 3, H, W) pairs,
    ``coarse_target`` and ``truth`` (3, H, W) reflectance; ``evidence``, for a single-pair
    day: ``(fine, coarse)`` (2, 3, H, W) of the pair and the nearest other clear date, in time
    order (the scene evidence :func:`stfuse.fusion.refine.scene_variance_scale` uses; None otherwise)."""

    fine: np.ndarray
    coarse: np.ndarray
    coarse_target: np.ndarray
    truth: np.ndarray
    evidence: tuple[np.ndarray, np.ndarray] | None = None


def simulated_days(seeds: Sequence[int], size: int) -> list[SimulatedDay]:
    """Held-out synthetic days, green/red/NIR: per scene one single-pair example (pair i ->
    target j, 1-3 revisits apart) and one two-pair example (pairs i < j < k around target j).
    The single-pair day's evidence date is the clear date nearest the pair other than the
    target (the earlier on a tie), as :func:`stfuse.fusion.pairs.evidence_day` picks it in catalog mode."""
    out = []
    for sd in seeds:
        fine, coarse = _synthetic_scene(sd, size)
        fine, coarse = fine[:, 1:4], coarse[:, 1:4]
        rng = np.random.default_rng([sd, 5])
        n = fine.shape[0]
        clear = [i for i in range(n) if np.isnan(fine[i]).mean() < 0.2]
        if len(clear) < 3:
            continue
        j = int(rng.choice(clear[1:-1]))
        before = [i for i in clear if i < j][-3:]
        after = [i for i in clear if i > j][:3]
        i, k = int(rng.choice(before)), int(rng.choice(after))
        single = int(rng.choice([i, k]))
        both = sorted((single, evidence_day(single, j, clear)))  # clear has 3+ dates: never None
        out.append(SimulatedDay(fine[[single]], coarse[[single]], coarse[j], fine[j], (fine[both], coarse[both])))
        out.append(SimulatedDay(fine[[i, k]], coarse[[i, k]], coarse[j], fine[j]))
    return out


def calibration_days(n_scenes: int, seed: int, size: int) -> dict[str, list[SimulatedDay]]:
    """The held-out simulated days of the variance calibrations (the hybrid's and the priors'):
    :func:`simulated_days` of ``SeedSequence([seed, 77]).spawn(n_scenes)`` (disjoint from the
    training scenes of seed 0), ``{"fit": first half, "check": second half}``."""
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence([seed, 77]).spawn(n_scenes)]
    half = len(seeds) // 2
    return {"fit": simulated_days(seeds[:half], size), "check": simulated_days(seeds[half:], size)}
