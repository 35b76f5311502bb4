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
from typing import Any, Callable, Literal

import numpy as np

from ..errors import InputError

Method = Literal["starfm", "estarfm", "fsdaf", "fitfc", "auto"]

_METHODS: dict[str, tuple[str, str]] = {
    "starfm": ("stfuse.prior.starfm", "starfm"),
    "estarfm": ("stfuse.prior.estarfm", "estarfm"),
    "fsdaf": ("stfuse.prior.fsdaf", "fsdaf"),
    "fitfc": ("stfuse.prior.fitfc", "fitfc"),
}
METHODS: tuple[str, ...] = tuple(_METHODS)


def method_function(name: str) -> Callable[..., Any]:
    """The core tensor function of prior ``name`` (imported lazily: torch is heavy)."""
    if name not in _METHODS:
        raise InputError(f"unknown method {name!r}; choose from {', '.join(METHODS)} or auto")
    module, attr = _METHODS[name]
    return getattr(importlib.import_module(module), attr)


def choose_method(n_pairs: int) -> str:
    """The ``auto`` rule: ESTARFM when two pairs bracket the target, else STARFM.

    (Refined by the priors work: see docs/methods.md.)
    """
    return "estarfm" if n_pairs == 2 else "starfm"


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
        method = choose_method(fine.shape[0])
    function = method_function(method)
    as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)
    with torch.no_grad():
        mean, variance = function(as_tensor(fine), as_tensor(coarse), as_tensor(coarse_target), **options)
    return mean.cpu().numpy(), variance.cpu().numpy()


def halo(method: str, **options: Any) -> int:
    """Neighbourhood radius (fine pixels) that ``method`` needs around each output pixel."""
    module, _ = _METHODS[choose_method(2) if method == "auto" else method]
    return int(importlib.import_module(module).halo(**options))
