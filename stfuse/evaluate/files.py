"""Scoring a prediction file against a truth file (``stfuse evaluate PRED TRUTH``).

Accuracy metrics are :func:`stfuse.evaluate.metrics.score_arrays`; calibration is the observed
coverage of the 68 % and 95 % Gaussian intervals ``mean ± z sigma``. Reflectance is unitless (0..1).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from stfuse.errors import DataUnavailableError, InputError, MissingFileError

log = logging.getLogger("stfuse")

PathLike = str | os.PathLike[str]
COVERAGE_LEVELS: tuple[float, float] = (0.68, 0.95)
"""Nominal levels of the central intervals whose coverage is reported."""





# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class ScoredArrays:
    """A prediction and its truth as (band, y, x) float64 reflectance arrays (NaN = invalid).

    ``sigma`` is None when the prediction has no ``<band>_sigma`` bands.
    """

    mean: np.ndarray
    truth: np.ndarray
    sigma: np.ndarray | None
    band_names: list[str]


def _read_float64(path: PathLike) -> tuple[np.ndarray, list[str]]:
    """(B, H, W) float64 reflectance and band names of a GeoTIFF, NaN where nodata.

    The rules of :func:`stfuse.output.io.read_reflectance` (integer data x band scale + offset, else
    x 1e-4), in float64 as the benchmarks' ``score.py`` reads files, so that scores agree with
    it to rounding (float32 would differ by ~1e-8 reflectance).
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    from stfuse.errors import CorruptFileError
    from stfuse.output.io import DEFAULT_INTEGER_SCALE

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"input file not found: {path}")
    try:
        with rasterio.open(path) as src:
            raw = src.read()
            integer = np.issubdtype(np.dtype(src.dtypes[0]), np.integer)
            scales = np.asarray([s if s not in (None, 1.0) else (DEFAULT_INTEGER_SCALE if integer else 1.0) for s in src.scales])
            offsets = np.asarray([o or 0.0 for o in src.offsets], np.float64)
            names = [d if d else f"b{i + 1}" for i, d in enumerate(src.descriptions)]
            nodata = src.nodata
    except RasterioIOError as err:
        raise CorruptFileError(f"cannot read {path} as a raster ({err}); is the file complete?") from None
    data = raw.astype(np.float64) * scales[:, None, None] + offsets[:, None, None]
    if nodata is not None and not np.isnan(nodata):
        data[raw == nodata] = np.nan
    data[~np.isfinite(data)] = np.nan
    return data, names


def read_scored_pair(prediction: PathLike, truth: PathLike) -> ScoredArrays:
    """Read a prediction GeoTIFF and its truth (same grid) for scoring, as float64 reflectance.

    The prediction's first bands are matched with the truth's bands in order; its
    ``<band>_sigma`` bands, when all present, are returned as ``sigma``.
    """
    pred, pred_names = _read_float64(prediction)
    true, _ = _read_float64(truth)
    n_bands = true.shape[0]
    if pred.shape[0] < n_bands:
        raise InputError(f"{prediction} has {pred.shape[0]} bands but the truth {truth} has {n_bands}")
    if pred.shape[1:] != true.shape[1:]:
        raise InputError(f"{prediction} is {pred.shape[1]} x {pred.shape[2]} but {truth} is {true.shape[1]} x {true.shape[2]}")
    names = pred_names[:n_bands]
    sigma_names = [f"{n}_sigma" for n in names]
    sigma = pred[[pred_names.index(s) for s in sigma_names]] if all(s in pred_names for s in sigma_names) else None
    return ScoredArrays(pred[:n_bands], true, sigma, names)


def calibration(mean: np.ndarray, sigma: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Interval coverage at :data:`COVERAGE_LEVELS` (keys ``"0.68"``, ``"0.95"``) of arrays of one shape.

    ``mean``, ``sigma``, ``truth``: reflectance; ``valid``: optional bool mask. NaN when no pixel is valid.
    """
    from stfuse.evaluate.metrics import interval_coverage

    ok = np.isfinite(mean) & np.isfinite(truth) & np.isfinite(sigma)
    if valid is not None:
        ok &= valid
    return {str(k): v for k, v in interval_coverage(mean, sigma, truth, ok, levels=COVERAGE_LEVELS).items()}


def evaluate_files(prediction: PathLike, truth: PathLike) -> dict[str, Any]:
    """Metrics of a prediction GeoTIFF against a truth GeoTIFF (same grid).

    The first bands of ``prediction`` are compared with the truth's bands in order (units:
    reflectance; integer files are read as x 1e-4 unless a scale is set). If the prediction
    carries ``<band>_sigma`` bands, 68/95% interval coverage is added under ``coverage``.
    """
    from stfuse.evaluate.metrics import score_arrays

    arrays = read_scored_pair(prediction, truth)
    result = score_arrays(arrays.mean, arrays.truth, band_names=arrays.band_names)
    result.update(prediction=str(prediction), truth=str(truth))
    if arrays.sigma is not None:
        result["coverage"] = calibration(arrays.mean, arrays.sigma, arrays.truth)
    return result
