"""Per-pixel Gaussian uncertainty: combining predictions, checking and calibrating variances.

Every prediction in stfuse is a Gaussian per pixel and band: a mean ``mu`` and a variance
``v = sigma**2`` (reflectance units, reflectance^2 for variances). This module holds the
arithmetic on such pairs, all on plain numpy arrays with NaN marking a missing value:

- :func:`combine_inverse_variance` fuses K estimates of the same quantity (e.g. the
  refined single-pair predictions of two Landsat/MODIS pairs)::

      w_k   = (1 / v_k) / sum_j (1 / v_j)               (weights, sum to 1)
      mu    = sum_k w_k mu_k
      v     = 1 / sum_k (1 / v_k)                        (independent errors, rho = 0)
      v_rho = sum_k w_k^2 v_k + rho * sum_{k != j} w_k w_j sigma_k sigma_j

  ``v_rho`` is the exact variance of the weighted mean when every pair of members has
  error correlation ``rho`` (with ``rho = 0`` it equals ``v``). Members that are NaN
  (or have a non-finite / non-positive variance) are skipped pixel by pixel; a pixel with no
  member left is NaN.
- :func:`combine_weighted` weights K estimates by one set of variances and averages another
  with the same weights (the hybrid: weights from the refiner, variance from the priors, the
  members' errors treated as shared so combining does not shrink it).
- :func:`coverage` the fraction of truths inside the central Gaussian intervals
  ``mu +- z sigma`` (a wrapper of :func:`stfuse.evaluate.metrics.interval_coverage` taking variances).
- :func:`fit_variance_scale` / :func:`apply_variance_scale` post-hoc calibration: one
  factor ``s`` with ``v_calibrated = s * v`` chosen on data with a known truth so that the
  standardized residuals ``z = (y - mu) / sqrt(v)`` behave like a standard normal.
- :func:`spread_variance` shares each pixel's variance with its neighbourhood: a per-pixel
  spread ranks errors well, but on real scenes large errors also fall where it is small
  (heavy-tailed ``z``); mixing it with its local mean (``(v + w * mean_window(v)) / (1 + w)``)
  moves variance to those pixels without changing its overall scale.
- :func:`gaussian_nll` the mean negative log-likelihood ``0.5 * (log(2 pi v) + (y - mu)^2 / v)``.
- :func:`leave_one_out_coverage` the coverage a scale fitted on some days gives on another.
- :func:`coverage_interval` how uncertain a coverage measured over a few scenes is: a
  bootstrap interval over days (pixels of one day are not independent draws).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

from stfuse.errors import InputError
from stfuse.evaluate.metrics import interval_coverage, reliability_curve, spearman_error_sigma

ScaleMethod = Literal["coverage", "mad", "mean_square", "coverage_pair"]

_VAR_FLOOR = 1e-12


def combine_inverse_variance(
    means: ArrayLike,
    variances: ArrayLike,
    *,
    correlation: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted combination of K Gaussian estimates, NaN-aware.

    ``means``, ``variances``: (K, ...) arrays (typically (K, B, H, W)), reflectance and
    reflectance^2. A member is skipped at a pixel where its mean or variance is non-finite
    or its variance is negative; a zero variance is floored at 1e-12 (an exact member
    dominates). ``correlation``: assumed error correlation ``rho`` in [0, 1) between
    every two members; the returned variance is that of the weighted mean under it::

        w_k = v_k^-1 / sum_j v_j^-1
        mu  = sum_k w_k mu_k
        v   = sum_k w_k^2 v_k + rho * sum_{k != j} w_k w_j sqrt(v_k v_j)

    (``rho = 0``: ``v = 1 / sum_k v_k^-1``: two members of equal variance halve it.)

    Returns ``(mean, variance)`` of shape ``means.shape[1:]``, float32; NaN where no
    member is valid.
    """
    m = np.asarray(means, np.float64)
    v = np.asarray(variances, np.float64)
    if m.shape != v.shape or m.ndim < 1:
        raise InputError(f"means {m.shape} and variances {v.shape} must have the same shape (K, ...).")
    if not 0.0 <= correlation < 1.0:
        raise InputError(f"correlation must lie in [0, 1); got {correlation}.")
    ok = np.isfinite(m) & np.isfinite(v) & (v >= 0)
    v = np.where(ok, np.maximum(v, _VAR_FLOOR), np.inf)
    prec = np.where(ok, 1.0 / v, 0.0)
    total = prec.sum(axis=0)
    any_ok = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        w = prec / np.where(any_ok, total, 1.0)
        mean = np.where(any_ok, (w * np.where(ok, m, 0.0)).sum(axis=0), np.nan)
        sd = np.where(ok, np.sqrt(np.where(ok, v, 0.0)), 0.0)
        var = (w * w * np.where(ok, v, 0.0)).sum(axis=0)
        if correlation > 0:
            ws = (w * sd).sum(axis=0)
            var = var + correlation * (ws * ws - (w * w * sd * sd).sum(axis=0))
        var = np.where(any_ok, var, np.nan)
    return mean.astype(np.float32), var.astype(np.float32)


def combine_weighted(
    means: ArrayLike, weight_vars: ArrayLike, variances: ArrayLike, *, spread: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean weighted by inverse ``weight_vars``, variance = the same weighted mean of ``variances``.

    All (K, ...) arrays; a member is skipped where any of its three values is non-finite or a
    variance is negative::

        w_k = (1/u_k) / sum_j (1/u_j),   mu = sum_k w_k mu_k
        v   = sum_k w_k v_k                          (spread=False)
        v   = sum_k w_k (v_k + (mu_k - mu)^2)        (spread=True: the variance of the mixture)

    (the members' errors treated as shared: combining does not shrink the variance; with
    ``spread`` their disagreement adds to it). Returns float32 ``(mean, variance)``; NaN where
    no member is valid.
    """
    m = np.asarray(means, np.float64)
    u = np.asarray(weight_vars, np.float64)
    v = np.asarray(variances, np.float64)
    ok = np.isfinite(m) & np.isfinite(u) & np.isfinite(v) & (u >= 0) & (v >= 0)
    prec = np.where(ok, 1.0 / np.maximum(np.where(ok, u, 1.0), 1e-12), 0.0)
    total = prec.sum(axis=0)
    any_ok = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        w = prec / np.where(any_ok, total, 1.0)
        mean = np.where(any_ok, (w * np.where(ok, m, 0.0)).sum(axis=0), np.nan)
        terms = np.where(ok, v, 0.0)
        if spread:
            terms = terms + np.where(ok, (np.where(ok, m, 0.0) - mean) ** 2, 0.0)
        var = np.where(any_ok, np.maximum((w * terms).sum(axis=0), 1e-10), np.nan)
    return mean.astype(np.float32), var.astype(np.float32)


def coverage(
    pred: ArrayLike,
    variance: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    levels: Sequence[float] = (0.68, 0.95),
) -> dict[float, float]:
    """Fraction of ``truth`` inside ``pred +- z sqrt(variance)``, ``z = Phi^-1((1 + level) / 2)``.

    Arrays of one broadcastable shape (e.g. (B, H, W)); ``valid`` optional bool mask;
    non-finite pixels are left out. Returns ``{level: observed fraction}``; a calibrated
    prediction gives about ``level``. (:func:`stfuse.evaluate.metrics.interval_coverage` on sigma.)
    """
    sigma = np.sqrt(np.maximum(np.asarray(variance, np.float64), 0.0))
    return interval_coverage(np.asarray(pred, np.float64), sigma, np.asarray(truth, np.float64), valid, levels)


def _standardized(pred: ArrayLike, variance: ArrayLike, truth: ArrayLike, valid: ArrayLike | None) -> np.ndarray:
    """1-D ``|y - mu| / sqrt(v)`` over valid pixels with finite values and v > 0."""
    p = np.asarray(pred, np.float64)
    v = np.asarray(variance, np.float64)
    t = np.asarray(truth, np.float64)
    try:
        p, v, t = np.broadcast_arrays(p, v, t)
        ok = np.isfinite(p) & np.isfinite(v) & np.isfinite(t) & (v > 0)
        if valid is not None:
            ok &= np.broadcast_to(np.asarray(valid, bool), ok.shape)
    except ValueError as exc:
        raise InputError(
            f"pred {np.shape(pred)}, variance {np.shape(variance)} and truth {np.shape(truth)} "
            "must have one broadcastable shape."
        ) from exc
    return np.abs(t[ok] - p[ok]) / np.sqrt(v[ok])


def fit_variance_scale(
    pred: ArrayLike,
    variance: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    *,
    method: ScaleMethod = "coverage_pair",
) -> float:
    """Post-hoc calibration factor ``s`` (``v_calibrated = s * v``) from a known truth.

    With standardized residuals ``z_i = (y_i - mu_i) / sqrt(v_i)`` over valid pixels:

    - ``"coverage"``: ``s = q_0.6827(|z|)^2`` so that exactly 68.27 % of the truths fall
      inside ``mu +- sqrt(s v)`` (the 1-sigma interval is nominal).
    - ``"coverage_pair"`` (default): ``s`` minimising the squared miscoverage at the 68.27 %
      and 95 % levels together, ``(F(sqrt s) - 0.6827)^2 + (F(1.96 sqrt s) - 0.95)^2`` with
      ``F`` the empirical CDF of ``|z|``: a compromise when the residuals are heavier-tailed
      than Gaussian (then no single ``s`` makes both levels nominal).
    - ``"mad"``: robust, ``s = (median|z| / 0.6745)^2`` (unit variance for Gaussian ``z``).
    - ``"mean_square"``: ``s = mean(z^2)`` (unit variance; sensitive to outliers).

    Returns a positive float; 1.0 when no pixel is valid.
    """
    return _scale_from_z(_standardized(pred, variance, truth, valid), method)


def _scale_from_z(z: np.ndarray, method: ScaleMethod = "coverage_pair") -> float:
    """:func:`fit_variance_scale` on standardized absolute residuals ``|z|`` (1-D)."""
    if z.size == 0:
        return 1.0
    if method == "coverage":
        s = float(np.quantile(z, norm.cdf(1) - norm.cdf(-1))) ** 2
    elif method == "mad":
        s = (float(np.median(z)) / norm.ppf(0.75)) ** 2
    elif method == "mean_square":
        s = float(np.mean(z * z))
    elif method == "coverage_pair":
        zs = np.sort(z)
        n = zs.size
        z68, z95 = 1.0, norm.ppf(0.975)
        q68 = norm.cdf(1) - norm.cdf(-1)
        # candidate scales: a log grid around the 68 % and 95 % solutions
        a = max(float(np.quantile(zs, q68)) / z68, 1e-6)
        b = max(float(np.quantile(zs, 0.95)) / z95, 1e-6)
        lo, hi = min(a, b) / 1.05, max(a, b) * 1.05
        root = np.geomspace(lo, hi, 400)
        f68 = np.searchsorted(zs, z68 * root, side="right") / n
        f95 = np.searchsorted(zs, z95 * root, side="right") / n
        loss = (f68 - q68) ** 2 + (f95 - 0.95) ** 2
        s = float(root[int(np.argmin(loss))]) ** 2
    else:
        raise InputError(f"unknown method {method!r}; choose coverage, coverage_pair, mad or mean_square.")
    return s if np.isfinite(s) and s > 0 else 1.0


def apply_variance_scale(variance: ArrayLike, scale: float) -> np.ndarray:
    """``scale * variance`` (float32): apply a factor from :func:`fit_variance_scale`."""
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"variance scale must be a positive number; got {scale}.")
    return (np.asarray(variance, np.float32) * np.float32(scale)).astype(np.float32)


SPREAD_WEIGHT = 1.0
"""``w`` of :func:`spread_variance`: the local mean counts as much as the pixel's own variance
(docs/methods.md, "Uncertainty on real scenes": chosen with the simulator and the real sets)."""


def spread_radius(prior_options: Mapping[str, Any] | None = None) -> int:
    """Half window (fine px) of :func:`spread_variance` for a predictor run with ``prior_options``:
    one coarse pixel (their ``coarse_factor``, default 16 fine px), so the window
    (``2 * coarse_factor + 1`` px) spans about two coarse pixels."""
    return int((prior_options or {}).get("coarse_factor", 16))


def spread_record() -> dict[str, float]:
    """How the variance was spread, for the ``calibration`` output tag."""
    return {"radius_coarse_pixels": 1, "weight": SPREAD_WEIGHT}


def spread_variance(variance: np.ndarray, radius: int, weight: float = SPREAD_WEIGHT) -> np.ndarray:
    """``(v + weight * m) / (1 + weight)`` with ``m`` the mean of the finite ``v`` over the
    ``(2 radius + 1)^2`` window of each pixel (the window clipped at the array's edges).

    ``variance``: (..., H, W) reflectance^2, NaN = missing (stays NaN). Returns float32 of the
    same shape. The window sums are position-independent (:func:`stfuse.fusion.prior._window.box_sum`
    on a NaN halo), so a tile grown by ``radius`` px (plus its predictor's own halo) gives the
    whole image's values exactly. ``radius`` 0 or ``weight`` 0 return the variance unchanged.
    """
    v = np.asarray(variance, np.float32)
    if radius <= 0 or weight == 0 or v.size == 0:
        return v.copy()
    import torch

    from stfuse.fusion.prior._window import box_sum, halo_block

    x = torch.from_numpy(np.ascontiguousarray(v.reshape(-1, *v.shape[-2:])))
    xh = halo_block(x, 0, x.shape[-2], radius)
    ok = torch.isfinite(xh)
    total = box_sum(torch.where(ok, xh, 0.0), radius)
    count = box_sum(ok.to(torch.float32), radius)
    local = (total / count.clamp_min(1)).to(torch.float32).numpy().reshape(v.shape)
    with np.errstate(invalid="ignore"):
        return ((v + np.float32(weight) * local) / np.float32(1 + weight)).astype(np.float32)


def gaussian_nll(pred: ArrayLike, variance: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> float:
    """Mean Gaussian negative log-likelihood ``0.5 * (log(2 pi v) + (y - mu)^2 / v)`` (nats).

    Lower is better; it rewards small variances only where errors are small.
    """
    p = np.asarray(pred, np.float64)
    v = np.asarray(variance, np.float64)
    t = np.asarray(truth, np.float64)
    ok = np.isfinite(p) & np.isfinite(v) & np.isfinite(t) & (v > 0)
    if valid is not None:
        ok &= np.broadcast_to(np.asarray(valid, bool), ok.shape)
    if not ok.any():
        return float("nan")
    r = t[ok] - p[ok]
    return float(np.mean(0.5 * (np.log(2 * np.pi * v[ok]) + r * r / v[ok])))


def coverage_interval(
    days: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
    levels: Sequence[float] = (0.6827, 0.95),
    *,
    confidence: float = 0.9,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[float, tuple[float, float]]:
    """Bootstrap interval of the pooled coverage, resampling whole days.

    ``days``: one ``(pred, variance, truth)`` per day (any shapes; non-finite pixels left
    out). Pixels of one day share its errors (a missed phenology, an abrupt change), so the
    coverage measured on a few days varies far more than a pixel count suggests; this draws
    ``n_boot`` sets of days with replacement (``numpy.random.default_rng(seed)``) and returns
    ``{level: (lo, hi)}``, the central ``confidence`` interval of the pooled coverage.
    """
    if not days:
        raise InputError("coverage_interval needs at least one day.")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1); got {confidence}.")
    z = [_standardized(p, v, t, None) for p, v, t in days]
    n = np.array([a.size for a in z], np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(z), size=(n_boot, len(z)))
    picks = np.apply_along_axis(np.bincount, 1, draws, minlength=len(z)).astype(np.float64)  # (n_boot, days): times each day drawn
    total = picks @ n
    out: dict[float, tuple[float, float]] = {}
    for level in levels:
        inside = np.array([(a <= norm.ppf(0.5 + level / 2)).sum() for a in z], np.float64)
        frac = (picks @ inside) / np.maximum(total, 1.0)
        lo, hi = np.quantile(frac, [(1 - confidence) / 2, (1 + confidence) / 2])
        out[level] = (float(lo), float(hi))
    return out


def leave_one_out_coverage(
    days: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
    levels: Sequence[float] = (0.6827, 0.95),
    *,
    method: ScaleMethod = "coverage_pair",
) -> dict[float, float]:
    """Coverage of a variance scale on days it was not fitted on.

    ``days``: two or more ``(pred, variance, truth)``. For each day the scale is fitted
    (:func:`fit_variance_scale`) on all the other days and applied to it; returns the pooled
    ``{level: coverage}`` over all days, an honest estimate of what the scale fitted on every
    day will give on a new one (the in-sample coverage is optimistic).
    """
    if len(days) < 2:
        raise InputError("leave_one_out_coverage needs at least two days.")
    z = [_standardized(p, v, t, None) for p, v, t in days]
    inside = {level: 0.0 for level in levels}
    total = 0
    for i, zi in enumerate(z):
        rest = np.concatenate([a for j, a in enumerate(z) if j != i])
        s = _scale_from_z(rest, method)
        for level in levels:
            inside[level] += float((zi <= norm.ppf(0.5 + level / 2) * np.sqrt(s)).sum())
        total += zi.size
    return {level: inside[level] / total if total else float("nan") for level in levels}


def calibration_report(
    pred: ArrayLike, variance: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None
) -> dict[str, float]:
    """``{"cov68", "cov95", "spearman", "nll", "scale"}`` of a prediction against a truth.

    ``scale`` is what :func:`fit_variance_scale` would multiply the variance by (1 = calibrated).
    """
    cov = coverage(pred, variance, truth, valid, levels=(0.6827, 0.95))
    sigma = np.sqrt(np.maximum(np.asarray(variance, np.float64), 0))
    return {
        "cov68": cov[0.6827],
        "cov95": cov[0.95],
        "spearman": spearman_error_sigma(np.asarray(pred, np.float64), sigma, np.asarray(truth, np.float64), valid),
        "nll": gaussian_nll(pred, variance, truth, valid),
        "scale": fit_variance_scale(pred, variance, truth, valid),
    }


__all__ = [
    "apply_variance_scale",
    "calibration_report",
    "combine_inverse_variance",
    "combine_weighted",
    "coverage",
    "coverage_interval",
    "fit_variance_scale",
    "gaussian_nll",
    "interval_coverage",
    "leave_one_out_coverage",
    "reliability_curve",
    "spearman_error_sigma",
    "spread_radius",
    "spread_record",
    "spread_variance",
]
