"""The priors the refiner works on: a stand-in prior, prior names -> functions, the hybrid's ensemble.

A *member* is one single-pair prior ``fn(fine (1,B,H,W), coarse (1,B,H,W), coarse_target (B,H,W)) ->
(mean, variance)`` (reflectance, reflectance^2); the hybrid runs every member on every pair.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter

from stfuse.errors import InputError
from stfuse.fusion import prior as _prior
from stfuse.fusion.uncertainty import combine_inverse_variance

PriorFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""A single-pair prior: ``prior_fn(fine (1,B,H,W), coarse (1,B,H,W), coarse_target (B,H,W)) -> (mean, var)``."""


# ------------------------------------------------------------------------------------------
# Stand-in prior
# ------------------------------------------------------------------------------------------


def additive_prior(
    fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray, *, window: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """The simplest prior: ``fine + (coarse_target - coarse)`` per pair (a stand-in for STARFM).

    ``fine``, ``coarse``: (P, B, H, W) reflectance, NaN = missing; ``coarse_target`` (B, H, W).
    Variance per pair: the local (``window`` x ``window``) variance of ``fine - coarse`` (how
    much fine detail the coarse change cannot describe) plus ``0.002^2``. With P > 1 the
    pairs are combined by inverse variance. Returns float32 ``(mean, variance)`` (B, H, W).
    """
    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    ct = np.asarray(coarse_target, np.float32)
    if fine.ndim != 4 or fine.shape != coarse.shape or ct.shape != fine.shape[1:]:
        raise InputError(
            f"additive_prior: fine {fine.shape} and coarse {coarse.shape} must be (P, B, H, W) and "
            f"coarse_target {ct.shape} (B, H, W)"
        )
    means, variances = [], []
    for k in range(fine.shape[0]):
        mean = fine[k] + (ct - coarse[k])
        r = fine[k] - coarse[k]
        ok = np.isfinite(r)
        r0 = np.where(ok, r, 0.0).astype(np.float64)
        n = uniform_filter(ok.astype(np.float64), (1, window, window), mode="nearest")
        m1 = uniform_filter(r0, (1, window, window), mode="nearest")
        m2 = uniform_filter(r0 * r0, (1, window, window), mode="nearest")
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.maximum(m2 / n - (m1 / n) ** 2, 0.0) + 0.002**2
        means.append(mean)
        variances.append(np.where(np.isfinite(mean), var, np.nan))
    if len(means) == 1:
        return means[0].astype(np.float32), variances[0].astype(np.float32)
    return combine_inverse_variance(np.stack(means), np.stack(variances))


def options_for(method: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The entries of ``options`` that prior ``method``'s function takes (its keyword-only
    parameters): one set of options (e.g. ``coarse_factor``, which local-file mode adds for
    native-grid coarse files) shared by members of which some do not take every option
    (STARFM has no ``coarse_factor``)."""
    if not options:
        return {}
    params = inspect.signature(_prior.method_function(_prior.choose_method(1) if method == "auto" else method)).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params and params[k].kind == inspect.Parameter.KEYWORD_ONLY}


def resolve_prior(prior_fn: PriorFn | str | None, **options: Any) -> PriorFn:
    """A callable single-pair prior from a callable, a method name of :mod:`stfuse.fusion.prior`
    (``"starfm"``, ``"fitfc"``, ...) or ``"additive"`` / None (:func:`additive_prior`)."""
    if prior_fn is None or prior_fn == "additive":
        return lambda f, c, t: additive_prior(f, c, t, **options)
    if isinstance(prior_fn, str):
        method = prior_fn
        _prior.method_function(method)  # raises InputError for unknown names
        return lambda f, c, t: _prior.predict(f, c, t, method=method, **options)
    if callable(prior_fn):
        return prior_fn
    raise InputError(f"prior_fn must be a callable, a method name or 'additive'; got {prior_fn!r}")


ENSEMBLE: tuple[str, ...] = ("fitfc", "fsdaf")
"""Members of the ``"ensemble"`` prior of the hybrid: each pair is predicted by every member,
each prediction refined, and all are combined by inverse variance (the two priors with the
lowest RMSE on the real benchmark tasks; their errors are partly independent)."""


CORRECTION_WEIGHT = 0.0
"""Default weight of the refiner's mean correction in the hybrid (0 = keep the prior means,
1 = full correction). Measured on the real benchmark tasks (docs/methods.md): the shipped
weights' correction does not carry over from simulated to real scenes (0.5 and 1 raised the
RMSE of the two-pair ensemble from 0.00634 to 0.00647 / 0.00666), while the refiner's
per-pixel variance is what weights the ensemble members and pairs; so the default keeps the
means and uses the refiner for the uncertainty. A documented choice among {0, 0.5, 1}."""


def resolve_members(prior_fn: Any, **options: Any) -> list[tuple[str, PriorFn]]:
    """``[(name, single-pair prior), ...]``: ``"ensemble"`` / ``"auto"`` -> :data:`ENSEMBLE`,
    a list/tuple -> each of its entries, anything else -> itself (see :func:`resolve_prior`)."""
    if isinstance(prior_fn, str) and prior_fn in ("ensemble", "auto"):
        prior_fn = ENSEMBLE
    if isinstance(prior_fn, (list, tuple)):
        if not prior_fn:
            raise InputError("the list of priors is empty; give at least one prior (e.g. 'fitfc')")
        return [(_prior_name(p), resolve_prior(p, **options)) for p in prior_fn]
    return [(_prior_name(prior_fn), resolve_prior(prior_fn, **options))]


def _prior_name(prior_fn: Any) -> str:
    if prior_fn is None:
        return "additive"
    if isinstance(prior_fn, str):
        return prior_fn
    if isinstance(prior_fn, (list, tuple)):
        return "+".join(_prior_name(p) for p in prior_fn)
    keywords = getattr(prior_fn, "keywords", None)  # functools.partial(stfuse.fusion.prior.predict, method=...)
    if isinstance(keywords, dict) and isinstance(keywords.get("method"), str):
        return keywords["method"]
    return getattr(prior_fn, "__name__", type(prior_fn).__name__)
