"""Scoring a prediction file against a truth file (``stfuse evaluate PRED TRUTH``).

Accuracy metrics are :func:`stfuse.evaluate.metrics.score_arrays`; calibration is the observed
coverage of the 68 % and 95 % Gaussian intervals ``mean ± z sigma``. Reflectance is unitless (0..1).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stfuse.data.local import band_name_of_file, is_generic  # band_name_of_file re-exported: the band a file's name says
from stfuse.errors import InputError, MissingFileError

log = logging.getLogger("stfuse")

PathLike = str | os.PathLike[str]
COVERAGE_LEVELS: tuple[float, float] = (0.68, 0.95)
"""Nominal levels of the central intervals whose coverage is reported."""





# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class ScoredArrays:
    """A prediction and its truth as (band, y, x) float64 reflectance arrays (NaN = invalid).

    ``sigma`` is None when the prediction lacks a ``<band>_sigma`` band for a scored band.
    ``band_names``: the scored bands; ``prediction_bands``: the prediction's band number
    (1-based) scored against each truth band; ``matched_by``: ``"name"`` or ``"position"``;
    ``qa_masked``: truth pixels left out by ``truth_qa`` (None without one).
    """

    mean: np.ndarray
    truth: np.ndarray
    sigma: np.ndarray | None
    band_names: list[str]
    prediction_bands: tuple[int, ...] = ()
    matched_by: str = "position"
    qa_masked: int | None = None


@dataclass(frozen=True)
class _Raster:
    """One file read for scoring: (B, H, W) ``data`` and what matching needs to know of it."""

    path: Path
    data: np.ndarray
    descriptions: tuple[str | None, ...]
    crs: Any
    transform: Any

    @property
    def names(self) -> list[str]:
        """Band names as :func:`stfuse.output.io.read_reflectance` gives them (``b1, b2, ...`` if undescribed)."""
        return [d if d else f"b{i + 1}" for i, d in enumerate(self.descriptions)]





def _open_raster(path: PathLike) -> tuple[Path, Any]:
    import rasterio
    from rasterio.errors import RasterioIOError

    from stfuse.errors import CorruptFileError

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"input file not found: {path}")
    try:
        return path, rasterio.open(path)
    except RasterioIOError as err:
        raise CorruptFileError(f"cannot read {path} as a raster ({err}); is the file complete?") from None


def _read_raster(path: PathLike) -> _Raster:
    """(B, H, W) float64 reflectance of a GeoTIFF, NaN where nodata, with its descriptions and grid.

    The scale/offset rules of :func:`stfuse.output.io.read_reflectance`
    (:func:`stfuse.data.local.file_scaling`: tags, USGS Landsat C2 / MODIS names and the MTL file,
    else x 1e-4), in float64 as the benchmarks' ``score.py`` reads files, so that scores agree
    with it to rounding (float32 would differ by ~1e-8 reflectance).
    """
    from stfuse.data.local import file_scaling

    path, src = _open_raster(path)
    with src:
        raw = src.read()
        scaling = file_scaling(path, dtype=src.dtypes[0], scales=src.scales, offsets=src.offsets,
                               descriptions=src.descriptions, nodata=src.nodata)
        descriptions, crs, transform = tuple(src.descriptions), src.crs, src.transform
    data = raw.astype(np.float64) * scaling.scales[:, None, None] + scaling.offsets[:, None, None]
    if scaling.nodata is not None and not np.isnan(scaling.nodata):
        data[raw == scaling.nodata] = np.nan
    data[~np.isfinite(data)] = np.nan
    return _Raster(path, data, descriptions, crs, transform)


def _read_float64(path: PathLike) -> tuple[np.ndarray, list[str]]:
    """(B, H, W) float64 reflectance and band names of a GeoTIFF, NaN where nodata (:func:`_read_raster`)."""
    raster = _read_raster(path)
    return raster.data, raster.names


def _kind(description: str | None) -> str:
    """``"sigma"``, ``"quality"``, ``"unnamed"`` or ``"reflectance"`` for a band description."""
    text = (description or "").strip()
    if text.lower().endswith("_sigma"):
        return "sigma"
    if text.lower() == "quality":
        return "quality"
    return "unnamed" if is_generic(text) else "reflectance"


def _key(name: str) -> str:
    """The name bands are matched by: stfuse's band name for a band or alias, else ``name`` in lower case."""
    from stfuse.data.sensors import band_name

    return band_name(name) or name.strip().lower()


def _fmt(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _describe_transform(t: Any) -> str:
    return f"origin ({_fmt(t.c)}, {_fmt(t.f)}), pixel {_fmt(t.a)} x {_fmt(t.e)}"


def _same_transform(a: Any, b: Any) -> bool:
    """Same pixel size and rotation (to 1e-6 of a pixel) and same origin (to 1/100 of a pixel)."""
    size = max(abs(a.a), abs(a.e), abs(a.b), abs(a.d), 1e-12)
    pixel = all(abs(x - y) <= 1e-6 * size for x, y in zip((a.a, a.b, a.d, a.e), (b.a, b.b, b.d, b.e)))
    return pixel and abs(a.c - b.c) <= 0.01 * size and abs(a.f - b.f) <= 0.01 * size


def _check_grid(first: _Raster, second: _Raster, *, force: bool = False) -> bool:
    """Raise unless two rasters lie on one grid: CRS (both the same, or neither), shape, transform.

    ``force`` accepts a CRS on one side only (and skips the transform when that file has no
    georeferencing at all). Returns True when the grid was fully checked, False when ``force``
    let a missing CRS pass. :class:`stfuse.errors.CRSError` / :class:`GridMismatchError` (exit 2).
    """
    from stfuse.errors import CRSError, GridMismatchError

    checked = True
    if (first.crs is None) != (second.crs is None):
        missing, present = (first, second) if first.crs is None else (second, first)
        if not force:
            raise CRSError(
                f"{missing.path} has no CRS but {present.path} is in {present.crs}, so stfuse cannot check that they "
                f"cover the same place; georeference it (gdal_edit.py -a_srs {present.crs}) or pass --force to score them as one grid"
            )
        checked = False
    elif first.crs is not None and first.crs != second.crs:
        raise CRSError(f"{first.path} is in {first.crs} but {second.path} is in {second.crs}; reproject one onto the other's grid (gdalwarp) first")
    if first.data.shape[1:] != second.data.shape[1:]:
        (h1, w1), (h2, w2) = first.data.shape[1:], second.data.shape[1:]
        raise GridMismatchError(f"{first.path} is {h1} x {w1} pixels but {second.path} is {h2} x {w2}; score files on one grid")
    if not checked and (first.transform.is_identity or second.transform.is_identity):
        return False  # one file has no georeferencing at all: nothing to compare
    if not _same_transform(first.transform, second.transform):
        raise GridMismatchError(
            f"{first.path} and {second.path} are not on the same grid: {_describe_transform(first.transform)} vs "
            f"{_describe_transform(second.transform)}; resample one onto the other's grid (gdalwarp) first"
        )
    return checked


def _truth_qa_mask(path: PathLike, truth: _Raster, *, force: bool) -> np.ndarray:
    """(H, W) bool, True where a Landsat QA_PIXEL raster on the truth's grid flags the pixel
    (:data:`stfuse.data.sensors.LANDSAT_QA`: fill, dilated cloud, cirrus, cloud, shadow, snow)."""
    from stfuse.data.sensors import LANDSAT_QA

    path, src = _open_raster(path)
    with src:
        if src.count != 1 or not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InputError(f"--truth-qa {path} must be a single-band integer Landsat QA_PIXEL raster, "
                             f"got {src.count} band(s) of {src.dtypes[0]}")
        qa = _Raster(path, src.read(), tuple(src.descriptions), src.crs, src.transform)
    _check_grid(truth, qa, force=force)
    return LANDSAT_QA.bad_mask(qa.data[0])


def resolve_truth_qa(truth: PathLike, truth_qa: PathLike | str | None) -> Path | None:
    """The truth's QA file: ``truth_qa`` itself, or with ``"auto"`` the Landsat QA_PIXEL file
    beside the truth (:func:`stfuse.data.local.qa_file_beside`; a log line names it), or None."""
    from stfuse.data.local import qa_file_beside

    if truth_qa is None:
        return None
    if str(truth_qa) != "auto":
        return Path(truth_qa)
    beside = qa_file_beside(truth)
    if beside is None or "qa_pixel" not in beside.path.name.lower():
        return None
    log.info("truth %s: masking its cloudy pixels with %s found beside it (--no-truth-qa to score every pixel)",
             Path(truth).name, beside.path.name)
    return beside.path


def read_scored_pair(prediction: PathLike, truth: PathLike, *, bands: Sequence[str] | None = None,
                     truth_qa: PathLike | str | None = "auto", force: bool = False) -> ScoredArrays:
    """Read a prediction GeoTIFF and its truth for scoring, as float64 reflectance, matching bands.

    Both files must lie on one grid (:func:`_check_grid`). The prediction's bands are
    named by their descriptions: ``<band>_sigma`` and ``quality`` bands are never scored as
    reflectance. The truth's bands are named by ``bands`` (stfuse names or aliases, in file
    order) if given, else by their descriptions, else, for a single band, by the file name
    (:func:`band_name_of_file`); a truth band described as ``*_sigma`` or ``quality`` is refused.

    Matching rule: when the truth's bands and the prediction's reflectance bands all have names
    (``b1``, ``band2`` are no names), each truth band is scored against the prediction band of
    its name (aliases count: ``nir`` = ``nir08``). Otherwise the bands are paired in order, but
    only if the prediction has exactly as many reflectance bands as the truth and either the
    grid was fully checked or ``force`` is given (the benchmark tasks: unnamed truths, same
    grid). Anything else raises :class:`InputError` saying what to pass.

    ``truth_qa``: a Landsat QA_PIXEL raster on the truth grid; flagged truth pixels become NaN.
    ``"auto"`` (the default): the QA_PIXEL file beside the truth when there is one
    (:func:`resolve_truth_qa`); None: every truth pixel is scored. The prediction's ``<band>_sigma`` bands of the scored bands, when all present, are ``sigma``.
    """
    from stfuse.data.sensors import check_bands, did_you_mean

    truth_qa = resolve_truth_qa(truth, truth_qa)
    pred, true = _read_raster(prediction), _read_raster(truth)
    checked = _check_grid(pred, true, force=force)
    n_truth = true.data.shape[0]

    for i, description in enumerate(true.descriptions):
        if _kind(description) in ("sigma", "quality"):
            raise InputError(f"band {i + 1} of truth {true.path} is {description!r}, an uncertainty or quality band, not "
                             "reflectance; give a reflectance file (e.g. a Landsat surface-reflectance band) as TRUTH")
    if bands is not None:
        truth_names: list[str] | None = list(check_bands(bands))
        if len(truth_names) != n_truth:
            raise InputError(f"--bands names {len(truth_names)} band(s) ({','.join(truth_names)}) but truth {true.path} has {n_truth}")
    else:
        truth_names = [_key(d) if _kind(d) == "reflectance" else None for d in true.descriptions]
        if n_truth == 1 and truth_names[0] is None:
            truth_names = [band_name_of_file(true.path)]
        if any(n is None for n in truth_names):
            truth_names = None

    kinds = [_kind(d) for d in pred.descriptions]
    reflectance = [i for i, k in enumerate(kinds) if k in ("reflectance", "unnamed")]
    if not reflectance:
        raise InputError(f"prediction {pred.path} has no reflectance bands (it has {', '.join(pred.names)})")
    pred_named = all(kinds[i] == "reflectance" for i in reflectance)
    pred_keys = [_key(pred.names[i]) for i in reflectance]

    if truth_names is not None and pred_named:
        matched_by, indices = "name", []
        for name in truth_names:
            if name not in pred_keys:
                raise InputError(
                    f"truth {true.path} holds band {name!r} but prediction {pred.path} has no such band (its reflectance bands: "
                    f"{', '.join(pred_keys)}){did_you_mean(name, pred_keys)}; if the truth's bands are named otherwise, give them with --bands"
                )
            indices.append(reflectance[pred_keys.index(name)])
        names = [pred.names[i] for i in indices]
    elif len(reflectance) == n_truth and (checked or force):
        matched_by, indices = "position", reflectance
        names = truth_names if truth_names is not None else [pred.names[i] for i in indices]
    elif truth_names is None:
        why = "no band descriptions" + (", and its file name names no band" if n_truth == 1 else "")
        example = ",".join(["red", "nir08", "green", "blue", "swir16", "swir22"][:n_truth])
        raise InputError(
            f"cannot tell which bands truth {true.path} holds ({why}) to match them with the {len(reflectance)} reflectance "
            f"band(s) of prediction {pred.path} ({', '.join(pred.names[i] for i in reflectance)}); give the truth's bands in order, "
            f"e.g. --bands {example}"
        )
    else:
        raise InputError(
            f"prediction {pred.path} has {len(reflectance)} reflectance band(s) without names ({', '.join(pred.names[i] for i in reflectance)}) "
            f"for the {n_truth} band(s) of truth {true.path} ({', '.join(truth_names)}); cannot tell which to score: "
            "give the prediction band descriptions (e.g. write it with stfuse)"
        )

    sigma_of = {_key(pred.names[i][: -len("_sigma")]): i for i, k in enumerate(kinds) if k == "sigma"}
    sigma_idx = [sigma_of.get(_key(pred.names[i])) for i in indices]
    sigma = pred.data[sigma_idx] if all(s is not None for s in sigma_idx) else None
    truth_data, qa_masked = true.data, None
    if truth_qa is not None:
        bad = _truth_qa_mask(truth_qa, true, force=force)
        truth_data = truth_data.copy()
        truth_data[:, bad] = np.nan
        qa_masked = int(bad.sum())
    return ScoredArrays(pred.data[list(indices)], truth_data, sigma, [str(n) for n in names],
                        tuple(i + 1 for i in indices), matched_by, qa_masked)


def calibration(mean: np.ndarray, sigma: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Interval coverage at :data:`COVERAGE_LEVELS` (keys ``"0.68"``, ``"0.95"``) of arrays of one shape.

    ``mean``, ``sigma``, ``truth``: reflectance; ``valid``: optional bool mask. NaN when no pixel is valid.
    """
    from stfuse.evaluate.metrics import interval_coverage

    ok = np.isfinite(mean) & np.isfinite(truth) & np.isfinite(sigma)
    if valid is not None:
        ok &= valid
    return {str(k): v for k, v in interval_coverage(mean, sigma, truth, ok, levels=COVERAGE_LEVELS).items()}


def evaluate_files(prediction: PathLike, truth: PathLike, *, bands: Sequence[str] | None = None,
                   truth_qa: PathLike | str | None = "auto", force: bool = False) -> dict[str, Any]:
    """Metrics of a prediction GeoTIFF against a truth GeoTIFF on the same grid.

    Bands are matched by name, or in order when names are missing and the counts and grid
    agree (the rule of :func:`read_scored_pair`, which also explains ``bands``, ``truth_qa`` and
    ``force``). Units: reflectance; integer files are read as x 1e-4 unless a scale is set. Each
    band entry gets ``prediction_band`` (the prediction's band number scored), the result
    ``matched_by`` (``"name"``/``"position"``); with a truth QA file (given, or found beside the
    truth with ``"auto"``), ``truth_qa`` and ``qa_masked_pixels``. If the
    prediction carries ``<band>_sigma`` bands, 68/95% interval coverage is added under ``coverage``.
    """
    from stfuse.evaluate.metrics import score_arrays

    truth_qa = resolve_truth_qa(truth, truth_qa)
    arrays = read_scored_pair(prediction, truth, bands=bands, truth_qa=truth_qa, force=force)
    result = score_arrays(arrays.mean, arrays.truth, band_names=arrays.band_names)
    for entry, number in zip(result["bands"], arrays.prediction_bands):
        entry["prediction_band"] = number
    result.update(prediction=str(prediction), truth=str(truth), matched_by=arrays.matched_by)
    if truth_qa is not None:
        result.update(truth_qa=str(truth_qa), qa_masked_pixels=arrays.qa_masked)
    if arrays.sigma is not None:
        result["coverage"] = calibration(arrays.mean, arrays.sigma, arrays.truth)
    return result
