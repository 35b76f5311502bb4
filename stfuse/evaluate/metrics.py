"""Accuracy and uncertainty-calibration metrics for fused reflectance.

Every function here works on in-memory numpy arrays of surface reflectance
(unitless, nominally 0..1; NaN marks an invalid pixel) and does no file I/O. The
accuracy metrics reproduce the reference scorer ``benchmarks/score.py``
number for number (same formulas, same float64 arithmetic), so
:func:`score_arrays` on arrays gives what ``score.py`` gives on the files.

Accuracy, per band (over pixels valid in both prediction and truth):

- **RMSE** root-mean-square error, reflectance units. **MAE** mean absolute
  error. **bias** mean of ``pred - truth`` (positive = prediction too bright).
- **CC** Pearson correlation coefficient of prediction and truth (-1..1).
- **SSIM** structural similarity (Wang et al., 2004) with a 7x7 uniform window,
  sample (n-1) covariance, K1=0.01, K2=0.03, as scikit-image's default; the
  border of 3 pixels is left out of the mean; ``data_range`` is the truth's
  max - min over valid pixels. Invalid prediction pixels are replaced by the
  truth (they then count as perfect agreement) because the windowed filter
  cannot skip holes.
- **PSNR** peak signal-to-noise ratio ``20 log10(data_range / RMSE)`` in dB
  (``inf`` for a perfect prediction).

Accuracy, over all bands (over pixels valid in every band):

- **ERGAS** (erreur relative globale adimensionnelle de synthèse)
  ``100 * ratio * sqrt(mean_b (RMSE_b / mean(truth_b))**2)`` with ``ratio`` the
  fine/coarse pixel-size ratio (30/500 for Landsat/MODIS). Lower is better,
  0 is perfect.
- **SAM** spectral angle mapper: the angle between the predicted and true
  spectra of a pixel, in degrees, averaged over pixels. Insensitive to
  brightness scaling; 0 is perfect. Meaningless with one band (a one-band
  "spectrum" has no angle: it is 0 whatever the error): :func:`score_arrays`
  keeps ``score.py``'s number for parity, and what stfuse reports
  (``stfuse evaluate``, the holdout) shows it absent (:func:`without_one_band_sam`:
  None, printed ``n/a``).

Uncertainty calibration (a prediction ``pred`` with a per-pixel Gaussian
standard deviation ``sigma``, both in reflectance units):

- :func:`interval_coverage` fraction of truth values inside the central
  interval ``pred ± z * sigma`` with ``z = Φ⁻¹((1 + level) / 2)``; a calibrated
  model covers 68 % at level 0.68 and 95 % at level 0.95. Lower coverage means
  over-confident (sigma too small), higher means under-confident.
- :func:`reliability_curve` that coverage over many levels: a calibrated model
  lies on the diagonal ``observed == expected``.
- :func:`spearman_error_sigma` Spearman rank correlation between ``|error|``
  and ``sigma``: positive when the model knows where it is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.ndimage import uniform_filter
from scipy.stats import norm, rankdata

from stfuse.errors import InputError

DEFAULT_RATIO: float = 30 / 500
"""Fine/coarse pixel-size ratio used by ERGAS: Landsat 30 m over MODIS 500 m."""

SSIM_WINDOW: int = 7
"""Side of the square uniform SSIM window, in pixels."""

METRIC_KEYS: tuple[str, ...] = ("rmse", "mae", "bias", "cc", "ssim", "psnr")
"""Per-band metric keys, in the order :func:`band_metrics` returns them."""

_NAN_BAND = dict.fromkeys(METRIC_KEYS, float("nan"))


# --------------------------------------------------------------------------- inputs


def _as_float(a: ArrayLike, name: str) -> np.ndarray:
    """``a`` as a float64 array; integer (DN) arrays are refused: units must be reflectance."""
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        if arr.dtype.kind in "iub":
            raise InputError(
                f"{name} has integer dtype {arr.dtype}; metrics take float reflectance (0..1). "
                "Scale digital numbers first, e.g. dn * 1e-4."
            )
        raise InputError(f"{name} has dtype {arr.dtype}; expected a float reflectance array.")
    return arr.astype(np.float64, copy=False)


def _as_cube(a: ArrayLike, name: str) -> np.ndarray:
    """(B, H, W) float64 view of ``a``; a 2-D (H, W) array becomes one band."""
    arr = _as_float(a, name)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{name} must have shape (bands, height, width); got {arr.shape}.")
    return arr


def _as_mask(mask: ArrayLike | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Boolean mask of ``shape`` (B, H, W) from None (all valid), (H, W) or (B' >= B, H, W)."""
    if mask is None:
        return np.ones(shape, bool)
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != shape[1:] or (m.shape[0] != 1 and m.shape[0] < shape[0]):
        raise InputError(
            f"{name} has shape {np.shape(mask)}; expected (height, width) = {shape[1:]} "
            f"or (bands, height, width) with at least {shape[0]} bands."
        )
    if m.shape[0] > shape[0]:
        m = m[: shape[0]]
    return np.broadcast_to(m, shape)


# --------------------------------------------------------------------------- per band


def ssim(x: ArrayLike, y: ArrayLike, data_range: float, win: int = SSIM_WINDOW) -> float:
    """Mean structural similarity of two complete images, as ``score.py`` computes it.

    ``x``, ``y``: (H, W) float arrays without holes (fill invalid pixels first).
    ``data_range``: dynamic range of the reference, reflectance units.
    Uniform ``win`` x ``win`` window, sample covariance (n / (n - 1)), K1 = 0.01,
    K2 = 0.03; the ``(win - 1) / 2`` pixel border is excluded from the mean.
    Returns a unitless value in [-1, 1] (1 = identical).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    k1, k2 = 0.01, 0.03
    n = win * win
    cov_norm = n / (n - 1)
    ux, uy = uniform_filter(x, win), uniform_filter(y, win)
    uxx, uyy, uxy = uniform_filter(x * x, win), uniform_filter(y * y, win), uniform_filter(x * y, win)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def band_metrics(
    pred: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    *,
    data_range: float | None = None,
) -> dict[str, float]:
    """Accuracy of one band: ``{"rmse", "mae", "bias", "cc", "ssim", "psnr"}``.

    ``pred``, ``truth``: (H, W) float reflectance (0..1); NaN/inf = invalid.
    ``valid``: optional (H, W) bool, False = leave the pixel out; it is combined
    with the finiteness of both arrays.
    ``data_range``: reflectance range for SSIM and PSNR; default the truth's
    max - min over valid pixels (as ``score.py``).

    rmse, mae, bias are in reflectance units; cc and ssim are unitless; psnr is
    in dB (``inf`` when rmse is 0). SSIM is computed on the whole image with
    invalid prediction pixels replaced by the truth. With no valid pixel every
    value is NaN.
    """
    p = _as_float(pred, "pred")
    t = _as_float(truth, "truth")
    if p.ndim != 2 or p.shape != t.shape:
        raise InputError(
            f"pred and truth must be (height, width) arrays of the same shape; got {p.shape} and {t.shape}."
        )
    m = np.isfinite(p) & np.isfinite(t)
    if valid is not None:
        v = np.asarray(valid).astype(bool, copy=False)
        if v.shape != p.shape:
            raise InputError(f"valid has shape {v.shape}; expected {p.shape}.")
        m &= v
    if not m.any():
        return dict(_NAN_BAND)
    pm, tm = p[m], t[m]
    e = pm - tm
    dr = float(tm.max() - tm.min()) if data_range is None else float(data_range)
    # The windowed SSIM needs complete images: invalid prediction pixels take the
    # truth's value (as score.py); a non-finite truth pixel takes the mean of the
    # valid truth on both sides, so it also counts as agreement.
    tf = t
    if not np.isfinite(t).all():
        tf = np.where(np.isfinite(t), t, float(np.mean(tm)))
    pf = np.where(m, p, tf)
    rmse = float(np.sqrt(np.mean(e**2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        cc = float(np.corrcoef(pm, tm)[0, 1]) if pm.size > 1 else float("nan")
        psnr = float(20 * np.log10(dr / rmse)) if rmse > 0 else float("inf")
    return dict(
        rmse=rmse,
        mae=float(np.mean(np.abs(e))),
        bias=float(np.mean(e)),
        cc=cc,
        ssim=ssim(pf, tf, dr),
        psnr=psnr,
    )


# --------------------------------------------------------------------------- all bands


def _cube_pair(
    pred: ArrayLike, truth: ArrayLike, valid: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, t, valid) as (B, H, W) float64/bool with extra prediction bands dropped."""
    p, t = _as_cube(pred, "pred"), _as_cube(truth, "truth")
    if p.shape[0] > t.shape[0]:
        p = p[: t.shape[0]]
    if p.shape != t.shape:
        raise InputError(f"shape mismatch: prediction {p.shape} vs truth {t.shape}.")
    v = _as_mask(valid, t.shape, "valid") & np.isfinite(p) & np.isfinite(t)
    return p, t, v


def ergas(
    pred: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    *,
    ratio: float = DEFAULT_RATIO,
) -> float:
    """ERGAS of a multi-band prediction (unitless, 0 = perfect).

    ``pred``: (B' >= B, H, W) float reflectance, extra bands ignored; ``truth``:
    (B, H, W); ``valid``: optional (H, W) or (B, H, W) bool. ``ratio``: fine/coarse
    pixel-size ratio (30/500 for Landsat/MODIS).

    ``100 * ratio * sqrt(mean_b (RMSE_b / mean(truth_b))**2)`` where RMSE_b is
    over the pixels valid in band b and mean(truth_b) over the pixels valid in
    every band (as ``score.py``). NaN when no pixel is valid.
    """
    p, t, v = _cube_pair(pred, truth, valid)
    allv = v.all(axis=0)
    if not allv.any():
        return float("nan")
    terms = []
    for b in range(t.shape[0]):
        e = p[b][v[b]] - t[b][v[b]]
        rmse = float(np.sqrt(np.mean(e**2)))
        with np.errstate(divide="ignore", invalid="ignore"):
            terms.append((rmse / np.mean(t[b][allv])) ** 2)
    return float(100 * ratio * np.sqrt(np.mean(terms)))


def sam(pred: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> float:
    """Mean spectral angle between predicted and true spectra, in degrees (0 = perfect).

    ``pred``: (B' >= B, H, W) float reflectance, extra bands ignored; ``truth``:
    (B, H, W); ``valid``: optional (H, W) or (B, H, W) bool. Averaged over the
    pixels valid in every band; invariant to scaling a pixel's spectrum by a
    positive factor. NaN when no pixel is valid.
    """
    p, t, v = _cube_pair(pred, truth, valid)
    allv = v.all(axis=0)
    if not allv.any():
        return float("nan")
    pp, tt = p[:, allv], t[:, allv]
    cos = (pp * tt).sum(0) / (np.linalg.norm(pp, axis=0) * np.linalg.norm(tt, axis=0) + 1e-12)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())


def score_arrays(
    pred: ArrayLike,
    truth: ArrayLike,
    pred_valid: ArrayLike | None = None,
    truth_valid: ArrayLike | None = None,
    *,
    ratio: float = DEFAULT_RATIO,
    band_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score a prediction against the truth exactly as ``benchmarks/score.py`` does.

    ``pred``: (B' >= B, H, W) float reflectance (0..1), NaN = invalid; bands after
    the truth's B (e.g. uncertainty) are ignored. ``truth``: (B, H, W) float
    reflectance. A 2-D (H, W) array is one band. ``pred_valid`` / ``truth_valid``:
    optional bool masks, (H, W) or (bands, H, W), False = invalid (e.g. nodata);
    they are combined with finiteness. ``ratio``: ERGAS fine/coarse ratio.
    ``band_names``: optional B names, stored as ``"name"`` in each band entry.

    Returns ``{"bands": [{"band": 1.., ["name"], "rmse", "mae", "bias", "cc",
    "ssim", "psnr"}, ...], "mean": {metric: mean over bands}, "invalid_pixels":
    pixels invalid in any band, "ergas", "sam_deg"}`` with plain Python numbers
    (JSON-ready; ``sam_deg`` as ``score.py`` gives it, also for one band: see
    :func:`without_one_band_sam`). ``score.py``'s ``prediction``/``truth`` path keys are absent.
    """
    p, t = _as_cube(pred, "pred"), _as_cube(truth, "truth")
    if p.shape[0] > t.shape[0]:  # extra bands (e.g. uncertainty) follow the reflectance bands
        p = p[: t.shape[0]]
    if p.shape != t.shape:
        raise InputError(f"shape mismatch: prediction {p.shape} vs truth {t.shape}.")
    pv = _as_mask(pred_valid, p.shape, "pred_valid") & np.isfinite(p)
    tv = _as_mask(truth_valid, t.shape, "truth_valid") & np.isfinite(t)
    if band_names is not None and len(band_names) != t.shape[0]:
        raise InputError(f"band_names has {len(band_names)} names for {t.shape[0]} truth bands.")
    valid = pv & tv
    bands: list[dict[str, Any]] = []
    for b in range(t.shape[0]):
        entry: dict[str, Any] = {"band": b + 1}
        if band_names is not None:
            entry["name"] = str(band_names[b])
        entry.update(band_metrics(p[b], t[b], valid[b]))
        bands.append(entry)
    return {
        "bands": bands,
        "invalid_pixels": int((~valid).any(axis=0).sum()),
        "mean": {k: float(np.mean([e[k] for e in bands])) for k in METRIC_KEYS},
        "ergas": ergas(p, t, valid, ratio=ratio),
        "sam_deg": sam(p, t, valid),
    }


def without_one_band_sam(result: dict[str, Any]) -> dict[str, Any]:
    """A :func:`score_arrays` result as stfuse reports it: ``sam_deg`` None when only one band was
    scored (a spectral angle needs 2+ bands; with one it is 0 whatever the error), else unchanged.
    Modifies and returns ``result``."""
    if len(result.get("bands", ())) < 2:
        result["sam_deg"] = None
    return result


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table ``score.py`` prints, for a :func:`score_arrays` result.

    One row per band (its ``name`` when present, else its number), a ``mean`` row,
    then ERGAS, SAM and the invalid-pixel count. No trailing newline.
    """
    labels = [str(b.get("name") or b["band"]) for b in result["bands"]]
    w = max([4, *map(len, labels)])
    lines = [f"{'band':>{w}} {'RMSE':>8} {'MAE':>8} {'bias':>8} {'CC':>7} {'SSIM':>7} {'PSNR':>7}"]
    rows = [(lab, b) for lab, b in zip(labels, result["bands"])] + [("mean", result["mean"])]
    for lab, m in rows:
        lines.append(
            f"{lab:>{w}} {m['rmse']:8.5f} {m['mae']:8.5f} {m['bias']:8.5f} "
            f"{m['cc']:7.4f} {m['ssim']:7.4f} {m['psnr']:7.2f}"
        )
    sam_text = "n/a (one band)" if result.get("sam_deg") is None else f"{result['sam_deg']:.3f} deg"
    lines.append(
        f"ERGAS {result['ergas']:.4f}  SAM {sam_text}  "
        f"invalid pixels {result['invalid_pixels']}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- calibration


def _abs_error_sigma(
    pred: ArrayLike, sigma: ArrayLike, truth: ArrayLike, valid: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """1-D ``|truth - pred|`` and ``sigma`` over valid, finite pixels."""
    p, s, t = _as_float(pred, "pred"), _as_float(sigma, "sigma"), _as_float(truth, "truth")
    try:
        p, s, t = np.broadcast_arrays(p, s, t)
        ok = np.isfinite(p) & np.isfinite(s) & np.isfinite(t)
        if valid is not None:
            ok &= np.broadcast_to(np.asarray(valid).astype(bool, copy=False), ok.shape)
    except ValueError as exc:
        raise InputError(
            f"pred {np.shape(pred)}, sigma {np.shape(sigma)}, truth {np.shape(truth)} and valid "
            f"{None if valid is None else np.shape(valid)} must have the same (broadcastable) shape."
        ) from exc
    s = s[ok]
    if (s < 0).any():
        raise InputError(f"sigma has {int((s < 0).sum())} negative values; a standard deviation is >= 0.")
    return np.abs(t[ok] - p[ok]), s


def _z(levels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    lv = np.atleast_1d(np.asarray(levels, np.float64))
    if lv.ndim != 1 or not ((lv > 0) & (lv < 1)).all():
        raise InputError(f"levels must lie strictly between 0 and 1; got {levels!r}.")
    return lv, norm.ppf((1 + lv) / 2)


def _coverage(err: np.ndarray, s: np.ndarray, z: np.ndarray) -> np.ndarray:
    if err.size == 0:
        return np.full(z.shape, np.nan)
    return np.array([np.count_nonzero(err <= zi * s) / err.size for zi in z])


def interval_coverage(
    pred: ArrayLike,
    sigma: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    levels: Sequence[float] = (0.68, 0.95),
) -> dict[float, float]:
    """Observed coverage of central Gaussian prediction intervals.

    ``pred``, ``sigma``, ``truth``: arrays of one (broadcastable) shape, e.g.
    (B, H, W), reflectance units; ``sigma`` is the predicted standard deviation
    (>= 0). ``valid``: optional bool mask of that shape. Non-finite pixels are
    left out. For each ``level`` in (0, 1) returns the fraction of pixels with
    ``|truth - pred| <= z * sigma``, ``z = norm.ppf((1 + level) / 2)`` (NaN when
    no pixel is valid). A calibrated model returns ``~level``.
    """
    err, s = _abs_error_sigma(pred, sigma, truth, valid)
    lv, z = _z(levels)
    return {float(level): float(c) for level, c in zip(lv, _coverage(err, s, z))}


def reliability_curve(
    pred: ArrayLike,
    sigma: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    levels: ArrayLike = np.linspace(0.05, 0.95, 19),
) -> tuple[np.ndarray, np.ndarray]:
    """Reliability diagram of Gaussian intervals: ``(expected, observed)``.

    Same inputs as :func:`interval_coverage`. ``expected``: the nominal levels,
    shape (L,); ``observed``: the fraction of truth inside ``pred ± z * sigma``
    at each level, shape (L,). Calibrated: ``observed ≈ expected``; below the
    diagonal = over-confident.
    """
    err, s = _abs_error_sigma(pred, sigma, truth, valid)
    lv, z = _z(levels)
    return lv, _coverage(err, s, z)


def spearman_error_sigma(
    pred: ArrayLike,
    sigma: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    *,
    max_samples: int = 1_000_000,
    seed: int = 0,
) -> float:
    """Spearman rank correlation between ``|truth - pred|`` and ``sigma`` (-1..1).

    Same inputs as :func:`interval_coverage`. Positive when larger predicted
    uncertainty goes with larger errors. When more than ``max_samples`` pixels are
    valid a random subset of that size is used, drawn with ``seed`` so the result
    is deterministic. NaN with fewer than 2 pixels or a constant input.
    """
    err, s = _abs_error_sigma(pred, sigma, truth, valid)
    if err.size > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(err.size, size=max_samples, replace=False))
        err, s = err[idx], s[idx]
    if err.size < 2:
        return float("nan")
    re, rs = rankdata(err), rankdata(s)
    re -= re.mean()
    rs -= rs.mean()
    den = np.sqrt((re * re).sum() * (rs * rs).sum())
    return float((re * rs).sum() / den) if den > 0 else float("nan")


__all__ = [
    "DEFAULT_RATIO",
    "METRIC_KEYS",
    "SSIM_WINDOW",
    "band_metrics",
    "ergas",
    "format_table",
    "interval_coverage",
    "reliability_curve",
    "sam",
    "score_arrays",
    "spearman_error_sigma",
    "ssim",
    "without_one_band_sam",
]
