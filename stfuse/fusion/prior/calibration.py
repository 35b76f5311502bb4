"""Variance calibration of the priors alone: one factor per method and number of pairs.

Each prior's variance is a neighbour spread (how much the similar pixels' predictions
disagree). It ranks errors well but its scale is off, badly for STARFM and ESTARFM (a 95 %
interval held about 55-70 % of the truth on simulated days). :func:`fit_scales` fits a factor
``s`` (``v_calibrated = s * spread(v)``, :func:`stfuse.fusion.uncertainty.spread_variance` over one
coarse pixel, :func:`stfuse.fusion.uncertainty.fit_variance_scale`, the 68 %/95 % compromise) per method and number of pairs on held-out simulated days, the same 160 scenes the
hybrid is calibrated on (:func:`stfuse.fusion.refine.fit_hybrid_scales`): fitted on the first 80,
checked on the other 80. Real scenes ask for more (:data:`REAL_SCENE_SIGMA_FACTORS`). The
factors ship in ``variance_scales.json`` beside this module;
``make calibration`` (``tools/calibration.py``) regenerates it bit for bit.

:func:`variance_scale` is what :func:`stfuse.fuse` and :func:`stfuse.predict` multiply a
prior's variance by (the hybrid has its own scale); :func:`calibration_record` is what they
write to the ``calibration`` tag. :func:`stfuse.fusion.prior.predict` itself stays uncalibrated.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from stfuse import __version__
from stfuse.fusion.pairs import pairs_key
from stfuse.fusion.prior import predict
from stfuse.fusion.uncertainty import coverage, fit_variance_scale, spread_radius, spread_record, spread_variance
from stfuse.sim.days import calibration_days

SCALES_PATH = Path(__file__).resolve().with_name("variance_scales.json")
SETTINGS: dict[str, Any] = {"n_scenes": 160, "seed": 1, "size": 128, "method": "coverage_pair"}
"""Scenes of the fit (the same as the hybrid's calibration) and the fitting rule."""


@functools.lru_cache(maxsize=1)
def _stored() -> dict[str, Any]:
    return json.loads(SCALES_PATH.read_text()) if SCALES_PATH.exists() else {}


REAL_SCENE_SIGMA_FACTORS: dict[str, float] = {"blend": 1.15, "fitfc": 1.25, "fsdaf": 1.2, "estarfm": 2.15, "starfm": 1.525}
"""Factor ``k`` on each prior's sigma on top of the simulated-day factor (``k^2`` on the variance,
:func:`real_scene_factor`): on real scenes errors are heavier-tailed than on the simulator. Each
chosen on the simulator and the five real sets together: the ``k`` (grid 0.9-3.0, step 0.025) that
puts the most of the seven sets' 95 % coverages inside 90-98 %, then the one whose worst coverage
lies furthest inside (docs/methods.md, "Uncertainty on real scenes"), never on one task's truth.
Only the blend (the default) gets every set inside 90-98 %; a single prior's own spread is shaped
too differently from scene to scene."""


def real_scene_factor(method: str) -> float:
    """The variance factor ``k^2`` of prior ``method`` for real scenes (1.0 for an unknown method)."""
    k = REAL_SCENE_SIGMA_FACTORS.get(method, 1.0)
    return round(k * k, 6)


def simulated_scale(method: str, n_pairs: int) -> float:
    """The factor fitted on simulated days for prior ``method`` with ``n_pairs`` pairs (2 for 2
    or more); 1.0 when none was fitted (an unknown method, or ``variance_scales.json`` missing)."""
    value = (_stored().get("scales", {}).get(method) or {}).get(pairs_key(n_pairs))
    return float(value) if value else 1.0


def variance_scale(method: str, n_pairs: int) -> float:
    """The factor a prior's spread variance is multiplied by: :func:`simulated_scale` times
    :func:`real_scene_factor` (1.0 when none was fitted)."""
    fitted = method in _stored().get("scales", {})
    return simulated_scale(method, n_pairs) * real_scene_factor(method) if fitted else 1.0


def calibrated_variance(method: str, n_pairs: int, variance: np.ndarray, options: dict[str, Any] | None = None) -> np.ndarray:
    """A prior's raw variance (B, H, W) as stfuse outputs it: spread over one coarse pixel
    (:func:`stfuse.fusion.uncertainty.spread_variance`, the whole array; the prior's ``options``
    give the coarse factor) times :func:`variance_scale`."""
    return spread_variance(variance, spread_radius(options)) * np.float32(variance_scale(method, n_pairs))


def calibration_record(method: str, n_pairs: int) -> dict[str, Any]:
    """``{"variance_scale", "fitted_on", ...}`` for the output tags of a prior-only prediction."""
    stored = _stored()
    fitted = method in stored.get("scales", {})
    if not fitted:
        return {"variance_scale": 1.0, "fitted_on": "none (scale 1)"}
    return {
        "variance_scale": variance_scale(method, n_pairs),
        "fitted_on": (f"held-out simulated days ({stored.get('n_scenes')} scenes, seed {stored.get('seed')}; "
                      f"{stored.get('method')} on the 68 % and 95 % levels, default options), times a real-scene factor "
                      "chosen on the simulator and five real sets"),
        "simulated_scale": simulated_scale(method, n_pairs),
        "real_scene_factor": real_scene_factor(method),
        "spread": spread_record(),
    }


PRIORS: tuple[str, ...] = ("starfm", "fitfc", "fsdaf", "blend", "estarfm")
"""The priors fitted (ESTARFM only with two pairs)."""


def fit_scales(n_scenes: int = 160, seed: int = 1, size: int = 128, method: str = "coverage_pair",
               priors: tuple[str, ...] = PRIORS) -> dict[str, Any]:
    """Fit and check the factors on simulated days.

    Scenes: :func:`stfuse.sim.days.calibration_days` (one single-pair and one two-pair day per
    scene; green, red, NIR; the first half to fit, the second to check). Methods: ``priors`` (STARFM,
    Fit-FC, FSDAF, the blend with one and two pairs, ESTARFM with two), all with default options. Returns ``{"scales": {method: {"1": s, "2": s}}, "check": {method:
    {"1": {...}, ...}}, **settings}``; a check holds the days, the RMSE and the 68/95 % coverage
    before (``raw_cov68``/``raw_cov95``) and after (``cov68``/``cov95``) the factor, and with
    :func:`real_scene_factor` on top (``real_factor_cov68``/``real_factor_cov95``, as stfuse outputs it).
    """
    parts: dict[tuple[str, str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for split, days in calibration_days(n_scenes, seed, size).items():
        for fine, coarse, target, truth, _ in days:
            n_pairs = pairs_key(fine.shape[0])
            for name in (p for p in priors if p != "estarfm" or fine.shape[0] == 2):
                mean, var = predict(fine, coarse, target, method=name)
                var = spread_variance(var, spread_radius())  # as stfuse.fused.PriorPredictor outputs it
                ok = np.isfinite(mean) & np.isfinite(var) & np.isfinite(truth)
                parts.setdefault((name, n_pairs, split), []).append((mean[ok], var[ok], truth[ok]))
    round4 = lambda x: float(f"{x:.4g}")
    result: dict[str, Any] = {"scales": {}, "check": {}, "n_scenes": n_scenes, "seed": seed, "size": size, "method": method}
    for (name, n_pairs, split) in sorted(parts):
        if split != "fit" or (name, n_pairs, "check") not in parts:
            continue
        m, v, t = (np.concatenate([d[i] for d in parts[(name, n_pairs, "fit")]]) for i in range(3))
        s = round4(fit_variance_scale(m, v, t, method=method))  # type: ignore[arg-type]
        check = parts[(name, n_pairs, "check")]
        m, v, t = (np.concatenate([d[i] for d in check]) for i in range(3))
        raw, cal, real = (coverage(m, f * v, t, levels=(0.6827, 0.95)) for f in (1.0, s, s * real_scene_factor(name)))
        result["scales"].setdefault(name, {})[n_pairs] = s
        result["check"].setdefault(name, {})[n_pairs] = {
            "days": len(check), "rmse": round4(float(np.mean([np.sqrt(np.mean((a - c) ** 2)) for a, _, c in check]))),
            "raw_cov68": round4(raw[0.6827]), "raw_cov95": round4(raw[0.95]),
            "cov68": round4(cal[0.6827]), "cov95": round4(cal[0.95]),
            "real_factor_cov68": round4(real[0.6827]), "real_factor_cov95": round4(real[0.95]),
        }
    return result


def write_scales(path: str | Path = SCALES_PATH, **settings: Any) -> Path:
    """:func:`fit_scales` (``SETTINGS`` overridden by ``settings``) written as JSON to ``path``."""
    result = fit_scales(**{**SETTINGS, **settings})
    result["stfuse_version"] = __version__
    # the label the shipped file was made with; kept so that `make calibration` reproduces it byte for byte
    result["command"] = "python -m stfuse.prior.calibration (make calibration)"
    path = Path(path)
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    _stored.cache_clear()
    return path

