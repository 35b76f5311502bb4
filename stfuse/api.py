"""The documented Python API: what ``stfuse predict`` does, as functions.

- :func:`predict` — catalog mode: search a STAC catalog/API, load both sensors on one 30 m
  grid, choose pairs per day, predict every day in the range, write a COG (+ STAC item) per day
  and/or a Zarr store. It is :func:`stfuse.open_fused`'s cube plus the writers.
- :func:`predict_files` — local-file mode: the classic STARFM-family workflow on GeoTIFFs
  on one grid (georeferenced, or a plain pixel grid without CRS); georeferenced coarse files
  may come on their native grid and are resampled onto the fine one.
- :func:`fuse` — one day on labelled arrays in memory.

Every function takes the request objects of :mod:`stfuse.config` (:class:`~stfuse.config.Query`,
:class:`~stfuse.config.FusionConfig`, :class:`~stfuse.config.RunConfig`) and/or their fields as
keyword arguments, and ends in the one per-day path, :func:`stfuse.fused.predict_day`.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import dask
import numpy as np
import xarray as xr

from stfuse import __version__
from stfuse.config import FusionConfig, Query, RunConfig, resolve_configs, split_settings
from stfuse.data.bands import band_name
from stfuse.data.local import QAFile, qa_file_beside, qa_rule_for
from stfuse.errors import CRSError, DataUnavailableError, GridMismatchError, InputError, MissingFileError, OutputError
from stfuse.fused import (
    PriorPredictor,
    calibration_tag,
    hybrid_predictor,
    load_base_model,
    plan_fused,
    predict_day,
    provenance,
    series_predictor,
    uses_series,
)
from stfuse.fusion.prior import METHODS, changed_fraction, choose_method, method_for_day, method_function
from stfuse.fusion.quality import QUALITY_BITS, quality_band
from stfuse.fusion.radiometry import fit_units, same_quantity
from stfuse.output.io import (
    bounds_in,
    bounds_of,
    check_output_format,
    check_same_grid,
    crs_of,
    grids_overlap,
    on_same_grid,
    pixel_size_ratio,
    read_reflectance,
    resample_to_grid,
    select_bands,
    transform_of,
    write_prediction_cog,
    write_stac_item,
)
from stfuse.output.writers import ProgressCallback, check_output_dir, write_fused

log = logging.getLogger("stfuse")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class FusionResult:
    """One predicted day: ``mean``/``sigma`` (band, y, x) float32 reflectance."""

    mean: xr.DataArray
    sigma: xr.DataArray
    method: str
    tags: dict[str, Any] = field(default_factory=dict)


def _fusion_config(fusion: FusionConfig | None, settings: dict[str, Any], where: str) -> FusionConfig:
    """A :class:`FusionConfig` from an object and/or its fields as keyword arguments only."""
    query, fields, run = split_settings(settings, where=where)
    if query or run:
        raise InputError(f"{where} takes fusion settings only, not {sorted({**query, **run})[0]!r}")
    return replace(fusion or FusionConfig(), **fields)


def fuse(fine: xr.DataArray, coarse: xr.DataArray, coarse_target: xr.DataArray, fusion: FusionConfig | None = None, *,
         scene: tuple[xr.DataArray, xr.DataArray] | None = None, **settings: Any) -> FusionResult:
    """Predict fine reflectance on the target day from pairs, in memory.

    ``fine``, ``coarse``: (pair, band, y, x) float32 reflectance, NaN = missing, the coarse
    images already on the fine grid. ``coarse_target``: (band, y, x). ``fusion``: a
    :class:`~stfuse.config.FusionConfig` and/or its fields as keywords (``method="fsdaf"``,
    ``refine="shipped"``, ``options={"window": 31}``, ``variance_scale=1.3``, ...). Returns
    mean and sigma (one standard deviation) with the target's coordinates; the tags record the
    method and the variance calibration applied (the prior's factor fitted on simulated days or
    the hybrid's, times ``variance_scale``). ``method="auto"`` (the default) is ``blend``, the mean
    of Fit-FC, FSDAF and ``fine + coarse change``; with a refiner it (and ``estarfm``) uses the
    Fit-FC + FSDAF ensemble. ``scene``: ``(fine, coarse)`` (pair, band, y,
    x) the hybrid's variance scale is fitted on, in time order; with one pair, the pair and
    another clear date (:func:`stfuse.fusion.pairs.evidence_day`; what catalog mode uses).
    ``refine="scene"`` with the default method and 3+ pairs: the series model
    (:mod:`stfuse.fusion.refine.series`), fitted on each pair predicted from the others.
    """
    fusion = _fusion_config(fusion, settings, "fuse")
    n_pairs, method = fine.sizes["pair"], fusion.method
    if method == "auto" and fusion.refine == "none":
        method = choose_method(n_pairs, changed_fraction(coarse.values, coarse_target.values))
    if method == "estarfm" and n_pairs != 2 and fusion.refine == "none":
        raise InputError(f"method estarfm needs exactly 2 pairs, got {n_pairs}; use starfm or auto")
    if fusion.refine == "none":
        predictor: Any = PriorPredictor(method, n_pairs, fusion.device, fusion.prior_options)
    else:
        base = load_base_model(fusion, [str(b) for b in coarse_target.band.values])
        dates = None
        if scene is not None and "pair" in scene[0].coords and np.issubdtype(scene[0]["pair"].dtype, np.datetime64):
            dates = [str(np.datetime_as_string(t, "D")) for t in scene[0]["pair"].values]
        predictor = series_predictor(fusion, fine, coarse, None, n_pairs, base_model=base) if uses_series(fusion, n_pairs) else None
        if predictor is None:
            predictor = hybrid_predictor(fusion, method_for_day(method, n_pairs, hybrid=True), fine, coarse, base_model=base,
                                         scene=None if scene is None else (scene[0], scene[1], dates))
    return fuse_with(predictor, fine, coarse, coarse_target, fusion)


def fuse_with(predictor: Any, fine: xr.DataArray, coarse: xr.DataArray, coarse_target: xr.DataArray,
              fusion: FusionConfig) -> FusionResult:
    """One day in memory with a prepared :class:`~stfuse.fused.Predictor` (what :func:`fuse`
    ends in; the holdout's series days too): inputs as :func:`fuse`, the whole image one tile."""
    mean, sigma = predict_day(fine, coarse, coarse_target, predictor, halo=predictor.halo,
                              variance_factor=predictor.variance_factor * fusion.variance_scale)
    mean, sigma = dask.compute(mean, sigma)
    template = coarse_target.transpose("band", "y", "x")
    tags = {"method": predictor.name, "options": fusion.prior_options, "refine": fusion.refine, "seed": fusion.seed,
            "calibration": calibration_tag(predictor.calibration(), fusion.variance_scale)}
    return FusionResult(template.copy(data=mean.values.astype(np.float32)), template.copy(data=sigma.values.astype(np.float32)),
                        predictor.name, tags)


def _undescribed(names: Sequence[str]) -> bool:
    """True for the names :func:`stfuse.output.io.read_reflectance` gives bands without a description (``b1, b2, ...``)."""
    return all(re.fullmatch(r"b\d+", n) for n in names)


def _qa_for(path: PathLike, explicit: PathLike | None, use_qa: bool, resolution: str) -> QAFile | None:
    """The QA file that masks ``path``: ``explicit`` if given, else (``use_qa``) the one beside it."""
    if explicit is not None:
        if not Path(explicit).exists():
            raise MissingFileError(f"QA file not found: {explicit}")
        return QAFile(Path(explicit), qa_rule_for(explicit, resolution=resolution))
    return qa_file_beside(path) if use_qa else None


def _name_bands(arrays: dict[str, xr.DataArray], fine_labels: Sequence[str], bands: Sequence[str] | None) -> dict[str, xr.DataArray]:
    """Give every input the same band names, then select ``bands``.

    Files whose bands have no names (``b1, b2, ...``: e.g. a MODIS file warped by hand) take the
    names of the first named fine file (else of any named file) when they have as many bands,
    else the ``bands`` requested, in file order. Named files are put in the reference's band order.
    :class:`InputError` when the counts or the names do not agree."""
    named = {label: [str(b) for b in a.band.values] for label, a in arrays.items() if not _undescribed([str(b) for b in a.band.values])}
    ref_label = next((label for label in fine_labels if label in named), next(iter(named), None))
    ref = named.get(ref_label) if ref_label is not None else None
    out: dict[str, xr.DataArray] = {}
    for label, array in arrays.items():
        names = [str(b) for b in array.band.values]
        if label not in named:
            if ref is not None and len(ref) == len(names):
                array = array.assign_coords(band=list(ref))
                log.info("%s has no band names; named its bands %s after %s", label, ",".join(ref), ref_label)
            elif bands is not None and len(bands) == len(names):
                array = array.assign_coords(band=[band_name(b) or b for b in bands])
            elif bands is not None:
                raise InputError(f"{label} has {len(names)} undescribed bands but {len(bands)} --bands names were given; "
                                 f"give one name per band ({len(names)}), in file order")
            elif ref is not None:
                raise InputError(f"{label} has {len(names)} band(s) without names but {ref_label} has {len(ref)} ({', '.join(ref)}); "
                                 "give files with the same bands, or name them with --bands")
        elif ref is not None and bands is None and names != ref:
            if sorted(names) != sorted(ref):
                raise InputError(f"{label} holds bands {', '.join(names)} but {ref_label} holds {', '.join(ref)}; give files of the same "
                                 "bands, or choose the common ones with --bands")
            array = array.sel(band=list(ref))
        out[label] = array if bands is None else select_bands(array, bands)
    return out


def read_local_inputs(fine: Sequence[PathLike], coarse: Sequence[PathLike], *, bands: Sequence[str] | None = None,
                      qa: bool = True, fine_qa: Sequence[PathLike] | None = None,
                      coarse_qa: Sequence[PathLike] | None = None) -> tuple[dict[str, xr.DataArray], dict[str, float]]:
    """Read local-file inputs as (band, y, x) float32 reflectance, keyed by path, all on the
    grid of ``fine[0]`` with the same band names; returns them and the coarse/fine pixel-size
    ratio of every coarse file that was resampled onto the fine grid.

    Each file is read by :func:`stfuse.output.io.read_reflectance` (scale/offset from its tags,
    USGS/MODIS name or MTL file). Its cloudy pixels are masked (NaN) with its QA file before any
    resampling: ``fine_qa``/``coarse_qa`` (one per fine/coarse file, in order) if given, else,
    with ``qa``, the QA file beside it as the provider ships it
    (:func:`stfuse.data.local.qa_file_beside`: ``..._QA_PIXEL.TIF``, ``<item>_qa_pixel.tif``,
    MCD43A4 mandatory quality). Band names: :func:`_name_bands`.
    """
    for given, files, what in ((fine_qa, fine, "fine"), (coarse_qa, coarse, "coarse")):
        if given and len(given) != len(files):
            raise InputError(f"give one --{what}-qa per {what} file: {len(given)} QA file(s) for {len(files)} {what} file(s)")
    arrays: dict[str, xr.DataArray] = {}
    for files, explicit, resolution in ((fine, fine_qa, "fine"), (coarse, coarse_qa, "coarse")):
        for i, path in enumerate(files):
            if str(path) in arrays:
                continue
            mask = _qa_for(path, explicit[i] if explicit else None, qa, resolution)
            array = read_reflectance(path, qa=mask)
            if mask is not None:
                share = float(np.isnan(array.values).mean())
                log.info("%s: masked with %s (%.1f %% of pixels missing or flagged)", path, mask.path.name, 100 * share)
            arrays[str(path)] = array
    fine_labels = [str(f) for f in fine]
    arrays = _name_bands(arrays, fine_labels, bands)
    if all(_undescribed([str(b) for b in a.band.values]) for a in arrays.values()):  # no names anywhere
        arrays = {label: a.assign_coords(band=[f"band{i + 1}" for i in range(a.sizes["band"])]) for label, a in arrays.items()}
    check_same_grid({label: arrays[label] for label in dict.fromkeys(fine_labels)}, role="fine")
    ratios = _coarse_onto_fine_grid(arrays, fine_labels[0], [str(c) for c in coarse])
    check_same_grid(arrays, role="coarse")
    for label, array in arrays.items():
        if not np.isfinite(array.values).any():
            raise DataUnavailableError(f"{label} has no valid pixels (all nodata or flagged by its QA file); check the file")
    return arrays, ratios


REFLECTANCE_RANGE = (-0.05, 1.2)
"""Output reflectance outside this range on more than :data:`OUT_OF_RANGE_SHARE` of the pixels
means the inputs' units were probably misread (a warning says so)."""
OUT_OF_RANGE_SHARE = 0.01


def check_reflectance_range(values: np.ndarray, what: str) -> float:
    """Warn (naming ``what``) when more than 1 % of the finite ``values`` leave
    :data:`REFLECTANCE_RANGE`; returns that share."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0
    lo, hi = REFLECTANCE_RANGE
    share = float(((finite < lo) | (finite > hi)).mean())
    if share > OUT_OF_RANGE_SHARE:
        log.warning("%s: %.1f %% of the reflectance values are outside %g..%g (median %.4g): the inputs' scale or units are "
                    "probably misread; check each file's scale/offset (stfuse info FILE) or set them (gdal_edit.py -scale S -offset O)",
                    what, 100 * share, lo, hi, float(np.median(finite)))
    return share


def _coarse_onto_fine_grid(arrays: dict[str, xr.DataArray], fine_label: str, coarse_labels: Sequence[str]) -> dict[str, float]:
    """Resample (in ``arrays``, in place) each coarse input not on the grid of ``arrays[fine_label]``
    onto it; returns label -> coarse/fine pixel-size ratio of those resampled.

    Coarse inputs already on the fine grid, and any on another grid where neither has a CRS, are
    left as they are (:func:`~stfuse.output.io.check_same_grid` judges them). Raises
    :class:`~stfuse.errors.CRSError` when exactly one of the two has a CRS and
    :class:`~stfuse.errors.GridMismatchError` when the extents do not overlap.
    """
    ref = arrays[fine_label]
    ref_crs = crs_of(ref)
    ratios: dict[str, float] = {}
    for label in dict.fromkeys(coarse_labels):
        array = arrays[label]
        if label in ratios or on_same_grid(array, ref):
            continue
        crs = crs_of(array)
        if crs is None and ref_crs is None:
            continue
        if crs is None or ref_crs is None:
            missing, present = (label, fine_label) if crs is None else (fine_label, label)
            shape, ref_shape = (array.sizes["y"], array.sizes["x"]), (ref.sizes["y"], ref.sizes["x"])
            where = (f"{label} is {shape[0]} x {shape[1]} pixels but {fine_label} is {ref_shape[0]} x {ref_shape[1]}" if shape != ref_shape else
                     f"{label} is not on the same grid as {fine_label} (transforms {tuple(transform_of(array))[:6]} vs {tuple(transform_of(ref))[:6]})")
            raise CRSError(f"{where}, and {missing} has no CRS but {present} does, so it cannot be resampled onto the fine grid; georeference "
                           "it (e.g. gdal_edit.py -a_srs EPSG:XXXX) or resample the coarse images to the fine grid first "
                           "(e.g. gdalwarp -tr 30 30 -r bilinear)")
        if not grids_overlap(array, ref):
            left, bottom, right, top = bounds_in(array, ref)
            hint = (f"; it is in {crs.to_string()} and {fine_label} in {ref_crs.to_string()}: if both show the same place one CRS is wrong, "
                    "fix it or reproject to one CRS first" if crs != ref_crs else "; check that the files show the same place")
            raise GridMismatchError(f"{label} is not on the same grid as {fine_label} and does not overlap it: its bounds "
                                    f"({left:.10g}, {bottom:.10g}, {right:.10g}, {top:.10g}) vs ({', '.join(f'{v:.10g}' for v in bounds_of(ref))}) "
                                    f"(left, bottom, right, top in {ref_crs.to_string()}){hint}")
        ratios[label] = pixel_size_ratio(array, ref)
        arrays[label] = resample_to_grid(array, ref, resampling="bilinear")
        log.info("resampled %s from its own grid (%d x %d pixels, %.4g x the fine pixel size) onto the fine grid of %s (bilinear)",
                 label, array.sizes["y"], array.sizes["x"], ratios[label], fine_label)
    return ratios


NOMINAL_COARSE_PIXEL_M = 480.0
"""Coarse pixel (m) assumed for coarse files already resampled onto a fine grid in metres:
MODIS/VIIRS 500 m products' effective pixel. Chosen on the real sets: on the 30 m sets
(estarfm-real, Kranj) coarse_factor 16 (480 m) beat 15 (463 m) and 17 (500 m) by 0.3-0.7 % mean
RMSE; applied without retuning to CIA's 50 m grid (factor 10 instead of 16) it kept the RMSE
(0.883 vs 0.886 of the better trivial baseline) and raised 95 % coverage from 90.9 to 92.5 %."""


def _grid_coarse_factor(fine: xr.DataArray) -> int | None:
    """``round(NOMINAL_COARSE_PIXEL_M / fine pixel size)`` for a fine grid in a projected CRS in
    metres; None when the pixel size is not known in metres (no CRS, degrees)."""
    crs = crs_of(fine)
    if crs is None or not crs.is_projected or (crs.linear_units or "").lower() not in ("metre", "meter", "m"):
        return None
    transform = transform_of(fine)
    pixel = (abs(transform.a) * abs(transform.e)) ** 0.5
    return max(1, round(NOMINAL_COARSE_PIXEL_M / pixel)) if pixel > 0 else None


def _native_coarse_factor(fusion: FusionConfig, ratios: dict[str, float], target_label: str,
                          fine: xr.DataArray | None = None) -> FusionConfig:
    """``fusion`` with ``options["coarse_factor"]`` from the pixel sizes when the method's function
    takes ``coarse_factor`` and the user did not set it: max(1, round(coarse/fine pixel size)) when
    coarse inputs were resampled (``ratios``, from :func:`_coarse_onto_fine_grid`; the target's
    ratio if it was resampled, else the first pair's); else, for coarse files already on a fine
    grid in metres, ``round(480 m / fine pixel)`` (:func:`_grid_coarse_factor`: 16 at 30 m, 10 at
    50 m, 19 at 25 m, 7 at 70 m); else unchanged (the methods' 16)."""
    if "coarse_factor" in fusion.options:
        return fusion
    name = choose_method(1) if fusion.method == "auto" else fusion.method  # as check_method_options
    if name not in METHODS or "coarse_factor" not in inspect.signature(method_function(name)).parameters:
        return fusion
    if not ratios:
        factor = _grid_coarse_factor(fine) if fine is not None else None
        if factor is None:
            return fusion
        log.info("coarse_factor %d (a %g m coarse pixel on this %g m fine grid) for method %s", factor, NOMINAL_COARSE_PIXEL_M,
                 abs(transform_of(fine).a), fusion.method)
        return replace(fusion, options={**fusion.options, "coarse_factor": factor})
    factors = {label: max(1, round(ratio)) for label, ratio in ratios.items()}
    factor = factors.get(target_label, next(iter(factors.values())))
    if len(set(factors.values())) > 1:
        log.warning("coarse files have different pixel sizes (coarse_factor %s); using %d; give options={'coarse_factor': N} to choose",
                    factors, factor)
    log.info("coarse_factor %d (coarse pixel / fine pixel) for method %s", factor, fusion.method)
    return replace(fusion, options={**fusion.options, "coarse_factor": factor})


def _nearest_fine(fine: xr.DataArray, coarse: xr.DataArray, coarse_target: xr.DataArray, fusion: FusionConfig,
                  relative_offset: Sequence[float]) -> tuple[FusionResult, dict[str, Any]]:
    """The default's choice for inputs that are not the same quantity
    (:func:`stfuse.fusion.radiometry.same_quantity`): the nearest fine image as is
    (:func:`stfuse.fusion.prior.blend.nearest_fine`), sigma from the coarse change; and the
    ``choice`` tag saying what was chosen and why."""
    import torch

    from stfuse.fusion.prior.blend import nearest_fine

    as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a.values, dtype=np.float32))  # noqa: E731
    with torch.no_grad():
        mean, variance = nearest_fine(as_tensor(fine), as_tensor(coarse), as_tensor(coarse_target))
    sigma = np.sqrt(variance.numpy() * fusion.variance_scale).astype(np.float32)
    why = (f"the fine and coarse files are not the same quantity (units differ and the fine images carry a large dark offset: "
           f"median offset {float(np.median(relative_offset)):.2f} of the mean coarse value, below -0.5; e.g. digital numbers "
           "beside surface reflectance), so coarse changes do not carry over; the nearest fine image is returned as is")
    log.warning("%s (give --method to predict with a prior anyway)", why)
    template = coarse_target.transpose("band", "y", "x")
    record = {"variance_scale": 1.0, "method": "mean squared coarse change since the chosen pair, per band"}
    tags = {"method": "nearest-fine", "options": {}, "refine": "none", "seed": fusion.seed,
            "calibration": calibration_tag(record, fusion.variance_scale)}
    result = FusionResult(template.copy(data=mean.numpy()), template.copy(data=sigma), "nearest-fine", tags)
    return result, {"method": "nearest-fine", "instead_of": "blend", "why": why}


def predict_files(pairs: Sequence[tuple[PathLike, PathLike]], coarse: PathLike, out: PathLike, fusion: FusionConfig | None = None,
                  *, bands: Sequence[str] | None = None, date: dt.date | None = None, overwrite: bool = False,
                  dtype: str = "float32", compress: str = "zstd", qa: bool = True, fine_qa: Sequence[PathLike] | None = None,
                  coarse_qa: Sequence[PathLike] | None = None, **settings: Any) -> Path:
    """Local-file mode: predict ``coarse``'s day from (fine, coarse) pair files; write ``out``.

    The fine files must share one grid (same shape and transform; all with the same CRS or all
    without). A coarse file (pair or target) may come on its native grid (e.g. MODIS 463 m
    sinusoidal or 500 m UTM): when it and the fine grid both have a CRS and their extents overlap,
    it is resampled onto the fine grid (bilinear; NaN where it does not reach), and methods that
    take ``coarse_factor`` (fitfc, fsdaf, blend, auto) get ``round(coarse pixel / fine pixel)``
    unless ``options`` sets it (recorded in the ``options`` tag). Without a CRS on both it must
    already be on the fine grid. Scale and offset: the file's tags, else its USGS Landsat C2 or
    MODIS name (and the MTL file beside it), else reflectance x 10000 with a warning
    (:mod:`stfuse.data.local`). Cloudy pixels: each file's QA file beside it as the provider
    ships it (``..._QA_PIXEL.TIF``, ``<item>_qa_pixel.tif``, MCD43A4 mandatory quality) masks it
    before anything else; ``fine_qa``/``coarse_qa`` give them explicitly (one per ``pairs`` fine
    file / per coarse file: the pairs' coarse files, then ``coarse``), ``qa=False`` uses none
    (:func:`read_local_inputs`). Coarse files in other units (digital numbers, x 10000) are mapped
    into the fine units by a per-band fit on the pairs' clear pixels
    (:func:`stfuse.fusion.radiometry.fit_units`; the ``units`` tag). Writes the layout of catalog mode: a COG with the reflectance bands, then ``<band>_sigma`` bands, then
    ``quality`` (bit flags, :func:`stfuse.fusion.quality.quality_band` of the inputs), tags
    with the ``stfuse_version``, and a STAC item beside it (``out`` with suffix ``.json``).
    Bands are named by the inputs' descriptions or file names (``..._SR_B4.TIF`` = ``red``,
    ``..._Nadir_Reflectance_Band2.tif`` = ``nir08``); files without names take the fine files'
    names; ``bands`` selects among them, or names the bands of files without any (otherwise
    ``band1, band2, ...``). ``dtype``
    (``float32`` or ``int16``) and ``compress`` (``zstd``, ``deflate``, ``lzw``, ``none``): as
    :class:`~stfuse.config.RunConfig`. Returns the COG path. ``fusion`` and keywords as :func:`fuse`.
    """
    fusion = _fusion_config(fusion, settings, "predict_files")
    check_output_format(dtype, compress)
    if not pairs:
        raise InputError("give at least one pair: --pair FINE.tif COARSE.tif")
    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"output {out} must be a GeoTIFF path ending in .tif")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite (Python: overwrite=True) to replace it")
    arrays, ratios = read_local_inputs([f for f, _ in pairs], [*(c for _, c in pairs), coarse], bands=bands, qa=qa,
                                       fine_qa=fine_qa, coarse_qa=coarse_qa)
    fusion = _native_coarse_factor(fusion, ratios, str(coarse), arrays[str(pairs[0][0])])
    fine = xr.concat([arrays[str(f)] for f, _ in pairs], dim="pair")
    coarse_pairs = xr.concat([arrays[str(c)] for _, c in pairs], dim="pair")
    target = arrays[str(coarse)]
    units = fit_units(fine.values, coarse_pairs.values)  # e.g. Landsat x 1e4 or digital numbers beside MODIS 0-1
    units.report(log)
    same, relative_offset = same_quantity(units, coarse_pairs.values)
    if units.applied:
        coarse_pairs, target = coarse_pairs.copy(data=units.to_fine_units(coarse_pairs.values)), target.copy(data=units.to_fine_units(target.values))
    band_names = [str(b) for b in target.band.values]
    choice: dict[str, Any] = {}
    if not same and fusion.method == "auto" and fusion.refine == "none":
        result, choice = _nearest_fine(fine, coarse_pairs, target, fusion, relative_offset)
    else:
        result = fuse(fine, coarse_pairs, target, fusion)
    if all(arrays[str(f)].attrs.get("unit", "reflectance") == "reflectance" for f, _ in pairs):
        check_reflectance_range(result.mean.values, f"prediction {out}")
    flags = quality_band(fine, coarse_pairs, target, change_threshold=fusion.thresholds.change_threshold).values
    ref = arrays[str(pairs[0][0])]
    crs, transform = crs_of(ref), transform_of(ref)
    tags = provenance(result.method, {"inputs": {"pairs": [[str(f), str(c)] for f, c in pairs], "coarse_target": str(coarse)},
                                      "options": fusion.prior_options, "refine": fusion.refine, "seed": fusion.seed,
                                      "mc_samples": fusion.mc_samples, **({"weights": str(fusion.weights)} if fusion.weights else {}),
                                      "calibration": result.tags["calibration"], "quality": {"bits": QUALITY_BITS},
                                      "units": {**units.record(), "relative_offset": [round(r, 4) for r in relative_offset],
                                                "same_quantity": same},
                                      **({"choice": choice} if choice else {})})
    write_prediction_cog(out, result.mean.values, result.sigma.values, band_names=band_names, crs=crs, transform=transform, tags=tags,
                         extra_bands={"quality": flags}, dtype=dtype, compress=compress, overwrite=overwrite)
    write_stac_item(out.with_suffix(".json"), item_id=out.stem, asset_path=out,
                    datetime=dt.datetime.combine(date, dt.time(12)) if date else None, band_names=band_names, crs=crs,
                    transform=transform, shape=(ref.sizes["y"], ref.sizes["x"]), extra_bands=("quality",), dtype=dtype,
                    properties={"stfuse:method": result.method, "stfuse:version": __version__}, overwrite=True)
    return out


def predict(query: Query | None = None, fusion: FusionConfig | None = None, run: RunConfig | None = None, *,
            progress: ProgressCallback | None = None, **settings: Any) -> list[Path]:
    """Catalog mode: predict every day of ``query`` and write the outputs; returns the written
    paths (COGs in date order, then the Zarr store).

    ``query``, ``fusion``, ``run``: :class:`~stfuse.config.Query` (catalog, area, dates, bands;
    default: the bundled ``sample_scenes`` and its extent), :class:`~stfuse.config.FusionConfig`
    (method, pairs, refiner, uncertainty, device) and :class:`~stfuse.config.RunConfig` (output
    folder, formats ``cog``/``zarr``, resume, tiles, dask scheduler, cache); or their fields as
    keywords (``stfuse.predict(start="2023-06-10", end="2023-06-20", out_dir="out")``).
    Each day is :func:`stfuse.open_fused`'s day, computed tile by tile: a COG
    ``out_dir/stfuse_YYYY-MM-DD.tif`` (reflectance, ``<band>_sigma``, ``quality``) with a STAC
    item, and/or ``out_dir/stfuse.zarr``. Doubtful days (:mod:`stfuse.fusion.quality`) carry
    warnings in their tags, or are refused with ``strict``. ``progress(done, total, label)`` is
    called as days and tiles finish.
    """
    query, fusion, run = resolve_configs(query, fusion, run, settings, where="stfuse.predict")
    check_output_dir(Path(run.out_dir), run.formats, overwrite=run.overwrite, resume=run.resume)
    if progress:
        progress(0, 1, "searching and loading")
    fused = plan_fused(query, fusion, run)  # the writer reads the days it computes into memory
    return write_fused(fused, progress=progress)


def train_files(pairs: Sequence[tuple[PathLike, PathLike]], out: PathLike, *, method: str = "ensemble",
                init: PathLike | None = None, seed: int = 0, steps: int | None = None, overwrite: bool = False,
                progress: ProgressCallback | None = None, bands: Sequence[str] | None = None, qa: bool = True,
                fine_qa: Sequence[PathLike] | None = None, coarse_qa: Sequence[PathLike] | None = None) -> Path:
    """Adapt the CNN refiner to your own pairs (GeoTIFFs on one grid, 2 or more) and write a
    checkpoint ``out`` (.pt, with a .json beside it) for ``--weights``/``weights=``.

    Each pair predicts the others through ``method``'s prior(s) (``ensemble``: Fit-FC + FSDAF,
    or one of starfm, fsdaf, fitfc) and the refiner learns the correction
    (:func:`stfuse.fusion.refine.adapt_model`), starting from ``init`` (default: the shipped
    weights). The checkpoint records the bands and refuses others later. ``progress(done, total,
    label)``: examples, steps with the training and validation loss, variance scale; it does not
    change the result. The files are read as :func:`predict_files` reads them (scale, QA masks,
    band names, coarse files on their native grid, units: ``bands``, ``qa``, ``fine_qa``,
    ``coarse_qa`` alike), so the checkpoint's bands are the names ``predict_files`` gives the
    same files.
    """
    from stfuse.fusion.refine import adapt_model, save_checkpoint

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite (Python: overwrite=True) to replace it")
    if len(pairs) < 2:
        raise InputError("self-supervised training needs at least two pairs (it predicts one pair from another)")
    arrays, _ = read_local_inputs([f for f, _ in pairs], [c for _, c in pairs], bands=bands, qa=qa, fine_qa=fine_qa,
                                  coarse_qa=coarse_qa)
    fine = np.stack([arrays[str(f)].values for f, _ in pairs])
    coarse = np.stack([arrays[str(c)].values for _, c in pairs])
    units = fit_units(fine, coarse)
    units.report(log)
    coarse = units.to_fine_units(coarse)
    bands = [str(b) for b in arrays[str(pairs[0][0])].band.values]
    model = adapt_model(fine, coarse, prior_fn=method, init=init, seed=seed, bands=bands, progress=progress,
                        **({"steps": steps} if steps else {}))
    meta = {**getattr(model, "meta", {}), "bands": bands, "band_agnostic": False, "seed": seed, "prior": method,
            "pairs": [[str(f), str(c)] for f, c in pairs]}
    meta.pop("sha256", None)
    return save_checkpoint(model, out, meta)


__all__ = ["FusionResult", "fuse", "predict", "predict_files", "train_files"]
