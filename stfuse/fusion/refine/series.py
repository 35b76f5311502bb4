"""``--refine scene`` on a series: how much of each member to use, learned from the scene's own dates.

With three or more usable Landsat dates in the query window (catalog mode, ``stfuse evaluate
--holdout``), every usable date is an example of exactly the task a day poses: predict its fine
image from the other dates (nearest pairs, gap-filled, as the product plans a day) and its own
coarse image. On those examples (their clear pixels, the central :data:`SCENE_WINDOW` px) stfuse
fits, per band, the convex weights of five members (:data:`MEMBERS`):

- ``fitfc``, ``fsdaf``: the priors with all of the day's pairs;
- ``change``: ``fine + coarse change`` (:func:`stfuse.fusion.prior.blend.change_baseline`);
- ``refiner``: the hybrid with the shipped (or user's) CNN weights (:class:`HybridFn`: Fit-FC
  and FSDAF per pair, weighted per pixel by the refiner's variances);
- ``starfm``: STARFM with all of the day's pairs (the best single prior on one-pair days of the
  simulated seasons, docs/benchmarks.md).

Equal weights on the first three are the default ``blend``. The weights are applied only if,
leaving each example date out in turn (weights fitted on the others), they predict the left-out
dates better than the blend does (:func:`fit_series`); otherwise the day is the blend's. The
variance is the blend's form with the fitted weights: the priors' mean variance plus the
weighted spread of the members, shared over one coarse pixel, times a scale fitted on the
left-out predictions (68 / 95 % compromise). The date being predicted is never an example
(``stfuse evaluate --holdout`` fits one model per withheld date without it).

Arrays: members (K, B, H, W), weights (B, K), reflectance 0..1, NaN = missing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stfuse.fusion import prior as _prior
from stfuse.fusion.prior.blend import change_baseline
from stfuse.fusion.refine.hybrid import HybridFn
from stfuse.fusion.refine.members import options_for
from stfuse.fusion.uncertainty import fit_variance_scale, spread_radius, spread_record, spread_variance

MEMBERS: tuple[str, ...] = ("fitfc", "fsdaf", "change", "refiner", "starfm")
"""The members whose weights the series decides, in the order of a model's weights."""
BLEND_WEIGHTS = np.array([1 / 3, 1 / 3, 1 / 3, 0.0, 0.0])
"""The default ``blend`` as weights of :data:`MEMBERS`."""
MIN_SERIES_DATES = 3
"""Fewest usable dates (pairs) for a series model: each example needs one or two other dates."""
MIN_EXAMPLE_PIXELS = 256
"""Fewest clear pixels of an example date for it to count."""


@dataclass(frozen=True)
class SeriesExample:
    """One usable date predicted from the others: its members (K, B, h, w), the priors' mean
    variance (B, h, w) and its fine image (B, h, w, NaN where not clear), on the central window."""

    date: str
    members: np.ndarray
    prior_variance: np.ndarray
    truth: np.ndarray


@dataclass(frozen=True)
class SeriesModel:
    """What the series decided: per-band ``weights`` (B, K) of :data:`MEMBERS` (the blend's when
    not ``applied``), the ``variance_scale`` on the combined variance, and the evidence: the
    example ``dates``, their left-out RMSE with the fitted weights and with the blend's."""

    weights: np.ndarray
    variance_scale: float
    applied: bool
    dates: tuple[str, ...]
    rmse_series: float
    rmse_blend: float
    band_names: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The ``series`` entry of the ``calibration`` tag."""
        return {
            "applied": self.applied,
            "members": list(MEMBERS),
            "weights": {b: [round(float(w), 4) for w in row] for b, row in zip(self.band_names or range(len(self.weights)), self.weights)},
            "variance_scale": round(float(self.variance_scale), 6),
            "dates": list(self.dates),
            "heldout_rmse": {"series": round(self.rmse_series, 6), "blend": round(self.rmse_blend, 6)},
            **self.extra,
        }


def member_predictions(fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray, *, hybrid: HybridFn,
                       device: str = "cpu", prior_options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The :data:`MEMBERS` for one day: ``(members (K, B, H, W), prior_variance (B, H, W))``, K = 5.

    ``fine``, ``coarse``: (P, B, H, W) pairs, ``coarse_target`` (B, H, W); the prior variance is
    the mean of Fit-FC's and FSDAF's (NaN-aware), as the blend's. Each prior gets the entries of
    ``prior_options`` its function takes (:func:`~stfuse.fusion.refine.members.options_for`:
    STARFM has no ``coarse_factor``)."""
    options = dict(prior_options or {})
    fine, coarse, coarse_target = (np.asarray(a, np.float32) for a in (fine, coarse, coarse_target))
    fit_mean, fit_var = _prior.predict(fine, coarse, coarse_target, method="fitfc", device=device, **options_for("fitfc", options))
    fsd_mean, fsd_var = _prior.predict(fine, coarse, coarse_target, method="fsdaf", device=device, **options_for("fsdaf", options))
    change = change_baseline(torch.from_numpy(fine), torch.from_numpy(coarse), torch.from_numpy(coarse_target)).numpy()
    refined, _ = hybrid(fine, coarse, coarse_target)
    variances = np.stack([fit_var, fsd_var]).astype(np.float32)
    with np.errstate(invalid="ignore"):
        prior_variance = np.nanmean(np.where(np.isfinite(variances), variances, np.nan), axis=0)
    star_mean, _ = _prior.predict(fine, coarse, coarse_target, method="starfm", device=device, **options_for("starfm", options))
    members = np.stack([fit_mean, fsd_mean, change, refined, star_mean]).astype(np.float32)
    return members, prior_variance.astype(np.float32)


def combine(members: np.ndarray, prior_variance: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Members (K, B, H, W) weighted per band by ``weights`` (B, K): ``(mean, variance)`` (B, H, W).

    A pixel where a member has no value renormalises the others' weights; the variance is the
    prior variance plus the weighted spread of the members around the mean (the blend's form)."""
    members = np.asarray(members, np.float32)
    w = np.asarray(weights, np.float32).T[:, :, None, None]  # (K, B, 1, 1)
    valid = np.isfinite(members) & (w > 0)
    w = np.where(valid, w, 0.0)
    total = w.sum(0)
    safe = np.where(valid, members, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * safe).sum(0) / total
        spread = (w * (safe - mean[None]) ** 2).sum(0) / total
    has = total > 0
    mean = np.where(has, mean, np.nan)
    variance = np.where(has & np.isfinite(prior_variance), prior_variance + spread, np.nan)
    return mean.astype(np.float32), variance.astype(np.float32)


def simplex_least_squares(gram: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """Weights ``w >= 0``, ``sum w = 1`` minimising ``w' G w - 2 c' w`` (the mean squared error
    of ``X w`` against ``y`` with ``G = X'X``, ``c = X'y``): exact, by trying every support
    (K <= 8). ``gram`` (K, K), ``cross`` (K,)."""
    k = len(cross)
    best, best_value = np.full(k, 1.0 / k), np.inf
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            # KKT of the equality-constrained problem on the support: [G 1; 1' 0] [w; l] = [c; 1]
            system = np.zeros((size + 1, size + 1))
            system[:size, :size] = gram[np.ix_(s, s)]
            system[:size, size] = system[size, :size] = 1.0
            try:
                solution = np.linalg.solve(system, np.append(cross[s], 1.0))
            except np.linalg.LinAlgError:
                continue
            if np.any(solution[:size] < -1e-12):
                continue
            w = np.zeros(k)
            w[s] = np.clip(solution[:size], 0, None)
            w /= w.sum()
            value = float(w @ gram @ w - 2 * cross @ w)
            if value < best_value - 1e-15:
                best, best_value = w, value
    return best


def _normal_equations(example: SeriesExample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per band ``(G (B, K, K), c (B, K), n (B,))`` of an example's pixels where every member and
    the truth are finite."""
    m, y = example.members, example.truth
    n_bands = y.shape[0]
    grams, crosses, counts = [], [], []
    for b in range(n_bands):
        ok = np.isfinite(y[b]) & np.isfinite(m[:, b]).all(0)
        x = m[:, b][:, ok].astype(np.float64)  # (K, n)
        grams.append(x @ x.T)
        crosses.append(x @ y[b][ok].astype(np.float64))
        counts.append(int(ok.sum()))
    return np.stack(grams), np.stack(crosses), np.asarray(counts)


def fit_weights(examples: Sequence[SeriesExample]) -> np.ndarray:
    """Per-band convex weights (B, K) of :data:`MEMBERS` minimising the squared error over the
    examples' pixels (:func:`simplex_least_squares`)."""
    return _weights_from([_normal_equations(e) for e in examples])


def _weights_from(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """:func:`fit_weights` from the examples' :func:`_normal_equations` (summed)."""
    gram = sum(p[0] for p in parts)
    cross = sum(p[1] for p in parts)
    count = sum(p[2] for p in parts)
    return np.stack([simplex_least_squares(gram[b] / max(count[b], 1), cross[b] / max(count[b], 1))
                     for b in range(len(count))])


def _rmse(mean: np.ndarray, truth: np.ndarray) -> float:
    """Mean over bands of the RMSE on pixels where both are finite."""
    values = []
    for b in range(truth.shape[0]):
        ok = np.isfinite(mean[b]) & np.isfinite(truth[b])
        if ok.any():
            values.append(float(np.sqrt(np.mean((mean[b][ok] - truth[b][ok]) ** 2))))
    return float(np.mean(values)) if values else float("nan")


def fit_series(examples: Sequence[SeriesExample], *, band_names: Sequence[str] = (),
               prior_options: dict[str, Any] | None = None) -> SeriesModel | None:
    """The series model from ``examples`` (one per usable date); None with fewer than
    :data:`MIN_SERIES_DATES` examples of :data:`MIN_EXAMPLE_PIXELS` clear pixels.

    Each example is predicted with weights fitted on the *other* examples; the fitted weights are
    applied when those left-out predictions have a lower mean RMSE than the blend's on the same
    dates. The variance scale is fitted on the left-out predictions of the weights kept
    (:func:`stfuse.fusion.uncertainty.fit_variance_scale` after :func:`spread_variance`)."""
    examples = [e for e in examples if np.isfinite(e.truth).all(0).sum() >= MIN_EXAMPLE_PIXELS]
    if len(examples) < MIN_SERIES_DATES:
        return None
    radius = spread_radius(prior_options)
    n_bands = examples[0].truth.shape[0]
    blend_weights = np.tile(BLEND_WEIGHTS, (n_bands, 1))
    parts = [_normal_equations(e) for e in examples]  # once per example, summed per left-out date
    left_out, blended, rmse_series, rmse_blend = [], [], [], []
    for i, example in enumerate(examples):
        weights = _weights_from([p for j, p in enumerate(parts) if j != i])
        left_out.append(combine(example.members, example.prior_variance, weights))
        blended.append(combine(example.members, example.prior_variance, blend_weights))
        rmse_series.append(_rmse(left_out[-1][0], example.truth))
        rmse_blend.append(_rmse(blended[-1][0], example.truth))
    applied = float(np.mean(rmse_series)) < float(np.mean(rmse_blend))
    chosen = left_out if applied else blended
    means = np.concatenate([m.ravel() for m, _ in chosen])
    variances = np.concatenate([spread_variance(v, radius).ravel() for _, v in chosen])
    truths = np.concatenate([e.truth.ravel() for e in examples])
    ok = np.isfinite(means) & np.isfinite(variances) & np.isfinite(truths) & (variances > 0)
    scale = fit_variance_scale(means[ok], variances[ok], truths[ok])
    return SeriesModel(_weights_from(parts) if applied else blend_weights, float(scale), applied,
                       tuple(e.date for e in examples), float(np.mean(rmse_series)), float(np.mean(rmse_blend)),
                       tuple(band_names), {"left_out_rmse": {e.date: [round(a, 6), round(b, 6)] for e, a, b
                                                             in zip(examples, rmse_series, rmse_blend)}})


def series_halo(hybrid: HybridFn, prior_options: dict[str, Any] | None = None) -> int:
    """Tile halo (fine px) of a :class:`SeriesPredictor`: the larger of the refiner member's and
    the priors' (each with the variance spread)."""
    priors = max(_prior.halo(name, **options_for(name, prior_options)) for name in ("blend", "starfm"))
    return max(hybrid.halo, priors + spread_radius(prior_options))


FALLBACK_NAME = "blend"
"""Method tag of a day whose series model was not applied (the blend's weights)."""


class SeriesPredictor:
    """The day's predictor with a :class:`SeriesModel` (:class:`stfuse.fused.Predictor`): the
    members on each tile, combined with the model's weights, the variance spread over one coarse
    pixel and scaled by the model's scale (the predictor scales its own variance)."""

    variance_factor = 1.0

    def __init__(self, model: SeriesModel, hybrid: HybridFn, n_pairs: int, *, device: str = "cpu",
                 prior_options: dict[str, Any] | None = None) -> None:
        self.model, self.hybrid, self.n_pairs = model, hybrid, n_pairs
        self.device, self.prior_options = device, dict(prior_options or {})
        if not model.applied:  # the blend's weights: say what produced the numbers (#28)
            self.name = FALLBACK_NAME

    name = "series(fitfc+fsdaf+change+refiner+starfm)"
    """The method tag of days the series model predicts; days where it fell back (its weights did
    not beat the blend on left-out dates) are tagged :data:`FALLBACK_NAME`."""

    @property
    def halo(self) -> int:
        return series_halo(self.hybrid, self.prior_options)

    def calibration(self) -> dict[str, Any]:
        return {"series": self.model.record(), "variance_scale": round(float(self.model.variance_scale), 6),
                "fitted_on": "left-out dates of the scene's own series", "spread": spread_record()}

    def __call__(self, fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        members, prior_variance = member_predictions(fine, coarse, coarse_target, hybrid=self.hybrid, device=self.device,
                                                     prior_options=self.prior_options)
        mean, variance = combine(members, prior_variance, self.model.weights)
        variance = spread_variance(variance, spread_radius(self.prior_options)) * np.float32(self.model.variance_scale)
        return mean, variance


__all__ = ["BLEND_WEIGHTS", "FALLBACK_NAME", "MEMBERS", "MIN_SERIES_DATES", "SeriesExample", "SeriesModel", "SeriesPredictor", "combine",
           "fit_series", "fit_weights", "member_predictions", "series_halo", "simplex_least_squares"]
