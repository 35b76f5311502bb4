"""Physics priors: STARFM-family spatiotemporal fusion as vectorised torch.

Every method has the same core signature, on plain tensors (reflectance 0..1, NaN = missing)::

    mean, variance = method(fine, coarse, coarse_target, **options)

    fine:          (P, B, H, W) float32  fine images of the P pairs
    coarse:        (P, B, H, W) float32  coarse images of the pairs, resampled to the fine grid
    coarse_target: (B, H, W)    float32  coarse image of the target day on the fine grid
    mean:          (B, H, W)    float32  predicted fine reflectance (NaN where not predictable)
    variance:      (B, H, W)    float32  per-pixel variance of the prediction (reflectance^2)

:func:`predict` dispatches by name and :func:`predict_dataarray` wraps it for labelled arrays.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Literal

import numpy as np

from stfuse.errors import InputError

Method = Literal["starfm", "estarfm", "fsdaf", "fitfc", "blend", "auto"]

_METHODS: dict[str, tuple[str, str]] = {
    "starfm": ("stfuse.fusion.prior.starfm", "starfm"),
    "estarfm": ("stfuse.fusion.prior.estarfm", "estarfm"),
    "fsdaf": ("stfuse.fusion.prior.fsdaf", "fsdaf"),
    "fitfc": ("stfuse.fusion.prior.fitfc", "fitfc"),
    "blend": ("stfuse.fusion.prior.blend", "blend"),
}
METHODS: tuple[str, ...] = tuple(_METHODS)
SERIES_METHODS: tuple[str, ...] = ("kalman",)
"""Time-series methods (:mod:`stfuse.fusion.kalman`): not priors of a day's pairs; they need the
dates and the daily coarse series (catalog mode, ``stfuse evaluate --holdout``, Python)."""


def method_function(name: str) -> Callable[..., Any]:
    """The core tensor function of prior ``name`` (imported lazily: torch is heavy)."""
    if name in SERIES_METHODS:
        raise InputError(f"method {name} is a time-series method: it needs dated fine images and the daily coarse series, "
                         "which catalog mode (stfuse predict --catalog ...) and stfuse evaluate --holdout give; in Python, "
                         "stfuse.fusion.kalman.predict_series. Local files and benchmark tasks have no dates: use another method")
    if name not in _METHODS:
        raise InputError(f"unknown method {name!r}; choose from {', '.join(METHODS)} or auto")
    module, attr = _METHODS[name]
    return getattr(importlib.import_module(module), attr)


CHANGE_THRESHOLD = 0.1
"""Coarse change (reflectance) counted as land-cover change (:func:`changed_fraction`)."""


def choose_method(n_pairs: int, changed_fraction: float = 0.0) -> str:
    """The ``auto`` rule: ``blend`` (Fit-FC + FSDAF + ``fine + coarse change``, averaged) for any
    number of pairs and any amount of change.

    Decided on the simulator and all five real sets together (docs/methods.md, "Default method"):
    the blend has the lowest mean RMSE relative to the ``fine + coarse change`` baseline over
    the sets, with one pair and with two, and is not worse than the baseline on any set; each
    single prior loses to the baseline on at least one real set. ``n_pairs`` and
    ``changed_fraction`` are kept for callers; neither changes the choice.
    """
    del n_pairs, changed_fraction
    return "blend"


def method_for_day(method: str, n_pairs: int, *, hybrid: bool = False) -> str:
    """The method a day runs with ``n_pairs`` pairs, from the method asked for.

    Prior alone: ``auto`` -> :func:`choose_method` (``blend``; per-day change is flagged by
    :mod:`stfuse.fusion.quality`); ``estarfm`` with other than 2 pairs -> ``starfm`` (it
    needs a pair on each side). With the hybrid (``hybrid``): ``ensemble`` (the Fit-FC + FSDAF
    ensemble that :mod:`stfuse.fusion.refine` refines) for ``auto`` and ``estarfm``, else ``method``.
    """
    if hybrid:
        return "ensemble" if method in ("auto", "estarfm") else method
    if method == "auto":
        return choose_method(n_pairs)
    if method == "estarfm" and n_pairs != 2:
        return "starfm"
    return method


def changed_fraction(coarse: np.ndarray, coarse_target: np.ndarray, threshold: float = CHANGE_THRESHOLD) -> float:
    """Fraction of pixels whose coarse reflectance changed by more than ``threshold`` in any
    band since the closest pair. ``coarse``: (P, B, H, W); ``coarse_target``: (B, H, W)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no change counted
        change = np.nanmin(np.abs(coarse_target[None] - coarse), axis=0)
        changed = np.nanmax(np.where(np.isfinite(change), change, 0), axis=0) > threshold
    return float(changed.mean()) if changed.size else 0.0


def predict(
    fine: np.ndarray,
    coarse: np.ndarray,
    coarse_target: np.ndarray,
    *,
    method: str = "starfm",
    device: str = "cpu",
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Run prior ``method`` on numpy arrays; returns (mean, variance) as float32 numpy.

    Shapes as in the module docstring: fine/coarse (P, B, H, W), coarse_target (B, H, W).
    """
    import torch

    if method == "auto":
        method = choose_method(fine.shape[0], changed_fraction(coarse, coarse_target))
    function = method_function(method)
    as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)
    with torch.no_grad():
        mean, variance = function(as_tensor(fine), as_tensor(coarse), as_tensor(coarse_target), **options)
    return mean.cpu().numpy(), variance.cpu().numpy()


def halo(method: str, **options: Any) -> int:
    """Neighbourhood radius (fine pixels) that ``method`` needs around each output pixel."""
    if method == "auto":
        method = choose_method(1)
    if method in SERIES_METHODS:
        return 0  # pixel by pixel (the method refuses to run as a prior: method_function)
    module, _ = _METHODS[method]
    return int(importlib.import_module(module).halo(**options))
