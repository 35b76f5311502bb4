"""Scoring predictions against truth files (``stfuse evaluate``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError


def evaluate_files(prediction: str | os.PathLike[str], truth: str | os.PathLike[str]) -> dict[str, Any]:
    """Metrics of a prediction GeoTIFF against a truth GeoTIFF (same grid).

    The first bands of ``prediction`` are compared with the truth's bands in order (units:
    reflectance; integer files are read as x 1e-4 unless a scale is set). If the prediction
    carries ``<band>_sigma`` bands, 68/95% interval coverage is added under ``coverage``.
    """
    from .io import read_reflectance
    from .metrics import interval_coverage, score_arrays

    pred = read_reflectance(prediction)
    true = read_reflectance(truth)
    n_bands = true.sizes["band"]
    if pred.sizes["band"] < n_bands:
        raise InputError(f"{prediction} has {pred.sizes['band']} bands but the truth {truth} has {n_bands}")
    if (pred.sizes["y"], pred.sizes["x"]) != (true.sizes["y"], true.sizes["x"]):
        raise InputError(
            f"{prediction} is {pred.sizes['y']} x {pred.sizes['x']} but {truth} is {true.sizes['y']} x {true.sizes['x']}"
        )
    names = [str(b) for b in pred.band.values[:n_bands]]
    mean = pred.values[:n_bands]
    result = score_arrays(mean, true.values, band_names=names)
    result.update(prediction=str(prediction), truth=str(truth))
    sigma_names = [f"{n}_sigma" for n in names]
    available = [str(b) for b in pred.band.values]
    if all(s in available for s in sigma_names):
        sigma = pred.sel(band=sigma_names).values
        valid = np.isfinite(mean) & np.isfinite(true.values) & np.isfinite(sigma)
        result["coverage"] = {str(k): v for k, v in interval_coverage(mean, sigma, true.values, valid).items()}
    return result
