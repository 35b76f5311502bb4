"""The hybrid: prior ensemble + refiner for a target day, its variance scale, and the tile function.

:func:`hybrid_arrays` predicts one day from (P, B, H, W) pairs; :class:`HybridFn` / :func:`hybrid_fn`
run it tile by tile (:func:`stfuse.output.tiling.predict_tiled`); :func:`predict_hybrid` adapts the model to
the scene first when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stfuse.errors import InputError
from stfuse.fusion import prior as _prior
from stfuse.fusion.pairs import pairs_key
from stfuse.fusion.refine.members import CORRECTION_WEIGHT, ENSEMBLE, _prior_name, resolve_members
from stfuse.fusion.refine.network import Refiner, halo, load_model, refine
from stfuse.fusion.refine.training import train_self_supervised
from stfuse.fusion.uncertainty import combine_inverse_variance, combine_weighted, fit_variance_scale, spread_radius, spread_record, spread_variance

# ------------------------------------------------------------------------------------------
# All together
# ------------------------------------------------------------------------------------------


def scene_factor(model: Refiner, n_pairs: int) -> float | None:
    """The model's factor on the scene scale for ``n_pairs`` pairs (``hybrid_scene_factors``,
    fitted on held-out simulated days, :func:`fit_hybrid_scales`); None when it has none.
    Checkpoints made before one-pair factors existed carry ``hybrid_scene_factor`` (2+ pairs)."""
    meta = getattr(model, "meta", {}) or {}
    factors = dict(meta.get("hybrid_scene_factors") or {})
    if "hybrid_scene_factor" in meta:
        factors.setdefault("2", meta["hybrid_scene_factor"])
    value = factors.get(pairs_key(n_pairs))
    return float(value) if value else None


def hybrid_variance_scale(model: Refiner, n_pairs: int, scene_scale: float | None = None) -> float:
    """Post-hoc variance factor of the hybrid for ``n_pairs`` pairs (1 or 2+).

    With a ``scene_scale`` (:func:`scene_variance_scale`: the scale the scene's own cross
    predictions need: the pairs', or with one pair the pair's and the nearest other clear
    date's), for a model that was not adapted to the scene: :func:`scene_factor` times
    ``scene_scale``. Otherwise the fixed factor fitted on held-out simulated days
    (``model.meta["hybrid_variance_scales"]``); 1.0 when the model has none."""
    meta = getattr(model, "meta", {}) or {}
    if scene_scale is not None and uses_scene_calibration(model, n_pairs):
        return float(scene_factor(model, n_pairs)) * float(scene_scale)  # type: ignore[arg-type]
    scales = meta.get("hybrid_variance_scales") or {}
    value = scales.get(pairs_key(n_pairs))
    return float(value) if value else 1.0


def uses_scene_calibration(model: Refiner, n_pairs: int) -> bool:
    """Whether the hybrid's variance scale can follow the scene (:func:`hybrid_variance_scale`)
    for ``n_pairs`` pairs with ``model``: a model with a :func:`scene_factor` for that many
    pairs and not adapted to the scene (an adapted model has seen the cross-pair predictions
    in training). With one pair the scene evidence is a second clear date, which only catalog
    mode has (:func:`stfuse.fusion.pairs.evidence_day`)."""
    meta = getattr(model, "meta", {}) or {}
    return n_pairs >= 1 and scene_factor(model, n_pairs) is not None and not meta.get("self_supervised")


REAL_SCENE_FACTOR = 1.3806  # = 1.175 ** 2 (sigma x 1.175)
"""Variance factor of the hybrid on top of its simulated-day or scene scale, after the variance is
spread over one coarse pixel (:func:`output_variance`): on real scenes errors are heavier-tailed
than on the simulator. Chosen on the simulator and the five real sets together (every one of the
seven sets' 95 % coverages inside 90-98 %, the worst one furthest inside; the rule of
:data:`stfuse.fusion.prior.calibration.REAL_SCENE_SIGMA_FACTORS`, docs/methods.md, "Uncertainty on
real scenes"), never on one task's truth."""


def output_variance(variance: np.ndarray, prior_options: dict[str, Any] | None = None) -> np.ndarray:
    """The hybrid's scaled variance (B, H, W) as stfuse outputs it: shared over one coarse pixel
    around each pixel (:func:`stfuse.fusion.uncertainty.spread_variance`, radius from the priors'
    ``coarse_factor``) times :data:`REAL_SCENE_FACTOR`."""
    return spread_variance(variance, spread_radius(prior_options)) * np.float32(REAL_SCENE_FACTOR)


SCENE_WINDOW = 512
"""Side (fine px) of the central window :func:`scene_variance_scale` predicts on (bounded cost)."""
MIN_SCENE_PIXELS = 4096
"""Fewest valid values (pixels x bands) of the cross-pair predictions for a scene scale."""


def central_window(height: int, width: int, window: int = SCENE_WINDOW) -> tuple[slice, slice]:
    """(rows, cols) slices of the central ``window`` x ``window`` px of a ``height`` x ``width`` image."""
    r0, c0 = max((height - window) // 2, 0), max((width - window) // 2, 0)
    return slice(r0, r0 + window), slice(c0, c0 + window)


def scene_variance_scale(
    fine: np.ndarray,
    coarse: np.ndarray,
    *,
    prior_fn: Any = "ensemble",
    model: Refiner | str | Path | None = None,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    prior_options: dict[str, Any] | None = None,
    window: int = SCENE_WINDOW,
) -> float | None:
    """The variance scale the scene's own pairs ask for: each pair predicted from its neighbour
    in time, both ways (the single-pair hybrid, :func:`hybrid_arrays` at scale 1, on the central
    ``window`` x ``window`` px), scored against that pair's fine image, and the scale fitted
    on those predictions (:func:`stfuse.fusion.uncertainty.fit_variance_scale`, 68 %/95 % compromise).

    ``fine``, ``coarse``: (P, B, H, W) reflectance in time order (NaN = missing). Returns None
    with one pair or fewer than :data:`MIN_SCENE_PIXELS` valid values. Costs 2 (P - 1)
    single-pair hybrid runs on the window.
    """
    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    if fine.ndim != 4 or fine.shape[0] < 2:
        return None
    rows, cols = central_window(*fine.shape[-2:], window)
    fine, coarse = fine[..., rows, cols], coarse[..., rows, cols]
    mdl = load_model(model)
    preds, variances, truths = [], [], []
    for a in range(fine.shape[0] - 1):
        for src, dst in ((a, a + 1), (a + 1, a)):
            m, v = hybrid_arrays(fine[src : src + 1], coarse[src : src + 1], coarse[dst], prior_fn=prior_fn, model=mdl,
                                 mc_samples=mc_samples, seed=seed, device=device, variance_scale=1.0,
                                 prior_options=prior_options)
            ok = np.isfinite(m) & np.isfinite(v) & np.isfinite(fine[dst])
            preds.append(m[ok]); variances.append(v[ok]); truths.append(fine[dst][ok])
    if sum(p.size for p in preds) < MIN_SCENE_PIXELS:
        return None
    return fit_variance_scale(np.concatenate(preds), np.concatenate(variances), np.concatenate(truths))


def calibration_record(model: Refiner, n_pairs: int, members: Sequence[str] | None = None,
                       scene_scale: float | None = None, scene_dates: Sequence[str] | None = None) -> dict[str, Any]:
    """What calibrated the hybrid's variance for ``n_pairs`` pairs, for output tags:
    ``{"variance_scale", "fitted_on", "member_variance_scales", ...}``. ``variance_scale``: the
    post-hoc factor applied (:func:`hybrid_variance_scale` with ``scene_scale``; then also
    ``scene_scale``, ``scene_factor`` and the dates that gave the scene scale, ``scene_dates``,
    when known); ``member_variance_scales``: the refiner's per-prior
    scales, fitted on held-out tiles of the pairs when the model was adapted to them (``scene``,
    ``stfuse train --pair``), else on simulated validation scenes; only those of ``members``
    (prior names) when given."""
    meta = getattr(model, "meta", {}) or {}
    cal = meta.get("hybrid_calibration") or {}
    adapted = meta.get("self_supervised")
    follows_scene = scene_scale is not None and uses_scene_calibration(model, n_pairs)
    if follows_scene:
        source = ("this scene's pairs, each predicted from its neighbour in time" if n_pairs >= 2 else
                  "this day's pair and the nearest other clear date, each predicted from the other")
        fitted_on = (f"{source} (scale {scene_scale:.4g}), times a factor fitted on held-out simulated days "
                     f"({cal.get('n_scenes')} scenes, seed {cal.get('seed')})")
    elif cal:
        fitted_on = (f"held-out simulated days ({cal.get('n_scenes')} scenes, seed {cal.get('seed')}; "
                     f"{cal.get('method')} on the 68 % and 95 % levels)")
    else:
        fitted_on = "none (scale 1)"
    return {
        "variance_scale": hybrid_variance_scale(model, n_pairs, scene_scale) * REAL_SCENE_FACTOR,
        "fitted_on": fitted_on + ", times a real-scene factor chosen on the simulator and five real sets",
        "real_scene_factor": REAL_SCENE_FACTOR,
        "spread": spread_record(),
        **({"scene_scale": round(float(scene_scale), 4), "scene_factor": scene_factor(model, n_pairs)}  # type: ignore[arg-type]
           if follows_scene else {}),
        **({"scene_dates": list(scene_dates)} if follows_scene and scene_dates else {}),
        "member_variance_scales": {k: round(float(v), 4) for k, v in (meta.get("variance_scales") or {}).items()
                                   if members is None or k in members},
        "members_fitted_on": (f"held-out tiles of {adapted.get('pairs')} pairs (self-supervised)" if adapted
                              else "simulated validation scenes"),
    }


def hybrid_arrays(
    fine: np.ndarray,
    coarse: np.ndarray,
    coarse_target: np.ndarray,
    *,
    prior_fn: Any = "ensemble",
    model: Refiner | str | Path | None = None,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    correlation: float = 0.4,
    correction_weight: float = CORRECTION_WEIGHT,
    variance_scale: float | None = None,
    prior_options: dict[str, Any] | None = None,
    variance: str = "mixture",
) -> tuple[np.ndarray, np.ndarray]:
    """The hybrid for one target day with a given model (no training): ``(mean, variance)``.

    For every pair k and every member prior m (:func:`resolve_members`: ``"ensemble"`` =
    :data:`ENSEMBLE`): the single-pair prior ``prior_m(fine[k], coarse[k], coarse_target)``
    is refined (:func:`refine`, with the member's variance scale), its correction weighted by
    ``correction_weight``. The P x M predictions are combined with weights from the refined
    variances (the refiner judges, per pixel, which prior and pair to trust):

    - ``variance="mixture"`` (default, :func:`stfuse.fusion.uncertainty.combine_weighted` with
      ``spread``): the variance of the weighted mixture of the members with their *prior*
      variances, ``sum_k w_k (v_k + (mu_k - mu)^2)`` (not shrunk by combining; the members'
      disagreement adds to it);
    - ``variance="prior"``: the same without the disagreement term;
    - ``variance="refined"``: inverse-variance combination of the refined Gaussians with
      error ``correlation`` (:func:`stfuse.fusion.uncertainty.combine_inverse_variance`);

    then multiplied by ``variance_scale`` (default :func:`hybrid_variance_scale` of the model
    for P pairs: with 2+ pairs the scale the scene's own cross-pair predictions need
    (:func:`scene_variance_scale` on these arrays) times a factor fitted on held-out simulated
    days; with one pair the fixed scale fitted on held-out simulated days, since these arrays
    hold no second clear date: :class:`HybridFn` takes one from catalog mode). The default was chosen because its
    coverage came closest to nominal on both held-out simulated and real days
    (docs/methods.md). Shapes as
    :func:`predict_hybrid`.
    """
    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    ct = np.asarray(coarse_target, np.float32)
    if fine.ndim != 4 or coarse.shape != fine.shape or ct.shape != fine.shape[1:]:
        raise InputError(f"fine {fine.shape} / coarse {coarse.shape} must be (P, B, H, W) and coarse_target {ct.shape} (B, H, W)")
    if not 0.0 <= correction_weight <= 1.0:
        raise InputError(f"correction_weight must lie in [0, 1]; got {correction_weight}")
    mdl = load_model(model)
    members = resolve_members(prior_fn, **(prior_options or {}))
    means, prior_vars, refined_vars = [], [], []
    for k in range(fine.shape[0]):
        for i, (name, prior) in enumerate(members):
            pm, pv = (np.asarray(a, np.float32) for a in prior(fine[k : k + 1], coarse[k : k + 1], ct))
            m, v = refine(pm, pv, fine[k : k + 1], coarse[k : k + 1], ct, model=mdl, mc_samples=mc_samples,
                          seed=seed + 7919 * k + 104729 * i, device=device, prior=name)
            if correction_weight != 1.0:
                m = (pm + np.float32(correction_weight) * (m - pm)).astype(np.float32)
            means.append(m)
            prior_vars.append(pv)
            refined_vars.append(v)
    if variance == "refined":
        mean, var = combine_inverse_variance(np.stack(means), np.stack(refined_vars), correlation=correlation)
    elif variance in ("mixture", "prior"):
        mean, var = combine_weighted(np.stack(means), np.stack(refined_vars), np.stack(prior_vars), spread=variance == "mixture")
    else:
        raise InputError(f"unknown variance model {variance!r}; use mixture, prior or refined")
    if variance_scale is None:
        scene = (scene_variance_scale(fine, coarse, prior_fn=prior_fn, model=mdl, mc_samples=mc_samples, seed=seed,
                                      device=device, prior_options=prior_options)
                 if uses_scene_calibration(mdl, fine.shape[0]) else None)
        variance_scale = hybrid_variance_scale(mdl, fine.shape[0], scene)
    return mean.astype(np.float32), (var * np.float32(variance_scale)).astype(np.float32)


def adapt_model(
    fine: np.ndarray,
    coarse: np.ndarray,
    *,
    prior_fn: Any = "ensemble",
    init: Refiner | str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    **train_options: Any,
) -> Refiner:
    """Adapt a model once to a scene's pairs (:func:`train_self_supervised` with every member
    prior of ``prior_fn``), to be applied afterwards tile by tile (:func:`hybrid_fn`). With one
    pair the initial model (shipped weights) comes back unchanged. Keeps the initial model's
    hybrid variance scales."""
    base = load_model(init)
    model = train_self_supervised(fine, coarse, prior_fn=prior_fn, init=base, seed=seed, device=device, **train_options)
    scales = (getattr(base, "meta", {}) or {}).get("hybrid_variance_scales")
    if scales is not None:
        model.meta.setdefault("hybrid_variance_scales", scales)  # type: ignore[attr-defined]
    return model


class HybridFn:
    """Picklable ``fn(fine, coarse, target) -> (mean, variance)`` running :func:`hybrid_arrays`
    with a fixed model: the ``predict_fn`` of :func:`stfuse.output.tiling.predict_tiled`, with
    ``halo`` = :attr:`halo`. Tiles are refined with their own band statistics (small seams
    are possible at tile edges; the halo covers the priors' and the refiner's neighbourhoods).
    The variance scale is one for the whole area: call :meth:`fit_scene` with the area's pairs
    (one pair: the pair and another clear date) first to have it follow the scene, else the
    fixed simulated-day scale applies."""

    def __init__(
        self,
        prior: str | Sequence[str] = "ensemble",
        model: Refiner | str | Path | None = None,
        *,
        mc_samples: int = 8,
        seed: int = 0,
        device: str = "cpu",
        correlation: float = 0.4,
        correction_weight: float = CORRECTION_WEIGHT,
        prior_options: dict[str, Any] | None = None,
    ) -> None:
        self.prior = prior if isinstance(prior, str) else tuple(prior)
        resolve_members(self.prior, **(prior_options or {}))  # fail early on unknown names
        self.model = load_model(model)
        self.mc_samples, self.seed, self.device = int(mc_samples), int(seed), device
        self.correlation, self.correction_weight = float(correlation), float(correction_weight)
        self.prior_options = dict(prior_options or {})
        self.scene_scale: float | None = None  # set by fit_scene; tiles never fit their own
        self.scene_dates: list[str] | None = None

    def fit_scene(self, fine: Any, coarse: Any, n_pairs: int | None = None, dates: Sequence[str] | None = None) -> float | None:
        """Fit the scene's variance scale once, for days with ``n_pairs`` pairs (default: as many
        as given), from the whole area's ``fine``, ``coarse`` images: the day's pairs, or with one
        pair the pair and the nearest other clear date (:func:`stfuse.fusion.pairs.evidence_day`), in time
        order (``(P, B, H, W)`` arrays or DataArrays with dims pair, band, y, x; only the central
        :data:`SCENE_WINDOW` px are read; ``dates`` are recorded in the tags): :func:`scene_variance_scale`
        when :func:`uses_scene_calibration`, else nothing. Returns it (None when not used)."""
        given = int(fine.sizes["pair"] if hasattr(fine, "sizes") else fine.shape[0])
        self.scene_scale, self.scene_dates = None, None
        if given >= 2 and uses_scene_calibration(self.model, given if n_pairs is None else n_pairs):
            arrays = []
            for a in (fine, coarse):
                if hasattr(a, "isel"):
                    a = a.transpose("pair", "band", "y", "x")
                    rows, cols = central_window(a.sizes["y"], a.sizes["x"])
                    a = a.isel(y=rows, x=cols).values
                arrays.append(np.asarray(a, np.float32))
            self.scene_scale = scene_variance_scale(*arrays, prior_fn=self.prior, model=self.model,
                                                    mc_samples=self.mc_samples, seed=self.seed, device=self.device,
                                                    prior_options=self.prior_options)
            self.scene_dates = list(dates) if dates is not None and self.scene_scale is not None else None
        return self.scene_scale

    @property
    def name(self) -> str:
        return hybrid_name(self.prior)

    @property
    def halo(self) -> int:
        return hybrid_halo(self.prior, self.model, **self.prior_options) + spread_radius(self.prior_options)

    def calibration(self, n_pairs: int) -> dict[str, Any]:
        """The variance calibration applied with ``n_pairs`` pairs (:func:`calibration_record`)."""
        return calibration_record(self.model, n_pairs, [name for name, _ in resolve_members(self.prior, **self.prior_options)],
                                  scene_scale=self.scene_scale, scene_dates=self.scene_dates)

    def __call__(self, fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, variance = hybrid_arrays(
            fine, coarse, coarse_target, prior_fn=self.prior, model=self.model, mc_samples=self.mc_samples, seed=self.seed,
            device=self.device, correlation=self.correlation, correction_weight=self.correction_weight,
            prior_options=self.prior_options,
            variance_scale=hybrid_variance_scale(self.model, int(np.asarray(fine).shape[0]), self.scene_scale),
        )
        return mean, output_variance(variance, self.prior_options)


def hybrid_name(prior: Any) -> str:
    """The method label of the hybrid on ``prior`` (as in output tags), e.g. ``fitfc+fsdaf+refiner``."""
    return f"{_prior_name(ENSEMBLE if prior in ('ensemble', 'auto') else prior)}+refiner"


def hybrid_fn(
    prior_method: str | Sequence[str] = "ensemble",
    model: Refiner | str | Path | None = None,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    **kwargs: Any,
) -> HybridFn:
    """A tile-friendly hybrid predictor (:class:`HybridFn`); ``model`` may come from
    :func:`adapt_model` (adapted once per scene) or be None (shipped weights)."""
    return HybridFn(prior_method, model, mc_samples=mc_samples, seed=seed, device=device, **kwargs)


def hybrid_halo(prior: str | Sequence[str] = "ensemble", model: Refiner | str | Path | None = None, **prior_options: Any) -> int:
    """Tile halo (fine pixels) of the hybrid: the largest member prior's halo plus the refiner's
    (:func:`halo`). Callable priors count as 0."""
    names = list(ENSEMBLE) if prior in ("ensemble", "auto") else ([prior] if isinstance(prior, str) else list(prior))
    prior_halo = max((_prior.halo(n, **prior_options) for n in names if isinstance(n, str) and n in _prior.METHODS), default=0)
    mdl = model if isinstance(model, Refiner) else load_model(model)
    return int(prior_halo) + halo(mdl.highpass if mdl.highpass > 1 else 0)


def predict_hybrid(
    fine: np.ndarray,
    coarse: np.ndarray,
    coarse_target: np.ndarray,
    *,
    prior_fn: Any = "ensemble",
    model: Refiner | str | Path | None = None,
    self_supervised: bool = True,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    correlation: float = 0.4,
    correction_weight: float = CORRECTION_WEIGHT,
    train_options: dict[str, Any] | None = None,
    prior_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prior + refiner for one target day: returns ``(mean, variance)`` (B, H, W) float32.

    ``fine``, ``coarse``: (P, B, H, W) pairs; ``coarse_target`` (B, H, W); reflectance, NaN =
    missing. ``prior_fn``: ``"ensemble"`` (default: :data:`ENSEMBLE`, Fit-FC + FSDAF), a
    :mod:`stfuse.fusion.prior` method name, a list of them, a callable single-pair prior, or
    None/"additive". ``model``: starting refiner (None = shipped weights). With P >= 2 and
    ``self_supervised`` the model is first adapted to the pairs (:func:`adapt_model`;
    ``train_options`` passed on; about 2.5 CPU minutes in all for 400 x 400 x 3). Then
    :func:`hybrid_arrays`: every pair x member prior refined, combined by inverse variance
    (error ``correlation``), the refiner's correction weighted by ``correction_weight``, the
    variance calibrated by the model's hybrid variance scale (:func:`hybrid_variance_scale`:
    with 2+ pairs and a model not adapted here, it follows the scene), then spread and scaled as
    stfuse outputs it (:func:`output_variance`). Figures on the real benchmark
    tasks: docs/benchmarks.md (hybrid section) and docs/methods.md.
    """
    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    mdl = load_model(model)
    if self_supervised and fine.shape[0] >= 2:
        mdl = adapt_model(fine, coarse, prior_fn=prior_fn, init=mdl, seed=seed, device=device, **(train_options or {}))
    mean, variance = hybrid_arrays(
        fine, coarse, coarse_target, prior_fn=prior_fn, model=mdl, mc_samples=mc_samples, seed=seed, device=device,
        correlation=correlation, correction_weight=correction_weight, prior_options=prior_options,
    )
    return mean, output_variance(variance, prior_options)
