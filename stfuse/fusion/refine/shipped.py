"""The shipped weights: pretraining plus the hybrid's variance calibration on held-out simulated
days, stored in ``stfuse/weights/refiner.pt`` (``make weights`` = ``stfuse train --synthetic --seed 0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from stfuse import __version__
from stfuse.fusion.refine.hybrid import hybrid_arrays, scene_variance_scale
from stfuse.fusion.refine.members import CORRECTION_WEIGHT, ENSEMBLE, resolve_members
from stfuse.fusion.refine.network import DEFAULT_WEIGHTS, Refiner, load_model, save_checkpoint
from stfuse.fusion.refine.training import Progress, deterministic, train_synthetic
from stfuse.fusion.uncertainty import calibration_report, coverage_interval, fit_variance_scale
from stfuse.sim.days import calibration_days


def fit_hybrid_scales(
    model: Refiner | str | Path | None = None,
    *,
    n_scenes: int = 24,
    seed: int = 1,
    size: int = 128,
    prior_fn: Any = "ensemble",
    mc_samples: int = 8,
    correction_weight: float = CORRECTION_WEIGHT,
    variance: str = "mixture",
    method: str = "coverage_pair",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit the hybrid's post-hoc variance scales on held-out simulated days.

    ``n_scenes`` synthetic scenes (seeds from ``SeedSequence(seed)``, disjoint from the
    training scenes of seed 0 and each other) give single-pair and two-pair days
    (:func:`simulated_days`, :class:`SimulatedDay`); the hybrid (:func:`hybrid_arrays`, scale 1) predicts each; the
    scale for 1 and for 2 pairs is fitted (:func:`stfuse.fusion.uncertainty.fit_variance_scale`,
    ``method``: by default the compromise between the 68 % and 95 % levels) on
    the first half of the scenes and the coverage with it reported on the second half.
    Returns ``{"scales": {"1": s1, "2": s2}, "check": {"1": {...}, "2": {...}}}`` (check:
    :func:`stfuse.fusion.uncertainty.calibration_report`, ``cov68_lo/hi`` and ``cov95_lo/hi``: the
    90 % bootstrap interval over check days (:func:`stfuse.fusion.uncertainty.coverage_interval`), the mean RMSE over the check days of the
    hybrid, of each member prior alone (``rmse_<name>``) and the best of those).

    The scale that follows the scene: on each day the scale the scene asks for
    (:func:`scene_variance_scale`: with two pairs the pairs predicting each other, with one the
    pair and the nearest other clear date, :class:`SimulatedDay` ``evidence``) is computed too;
    ``scene_factors`` ``{"1": f1, "2": f2}`` (scale = factor x scene scale) are fitted on the
    first half and checked on the second (``check_scene``; days without a scene scale use the
    fixed one). ``progress(done, total, label)`` per simulated day (it does not change the result).
    """
    mdl = load_model(model)
    members = resolve_members(prior_fn)
    result: dict[str, Any] = {"scales": {}, "check": {}, "n_scenes": n_scenes, "seed": seed, "size": size}
    with deterministic(seed):
        if progress:
            progress(0, 1, f"simulating {n_scenes} calibration scenes")
        parts = calibration_days(n_scenes, seed, size)
        preds: dict[str, dict[str, list[np.ndarray]]] = {}
        n_days, done = sum(len(examples) for examples in parts.values()), 0
        for split, examples in parts.items():
            for f, c, ct, truth, evidence in examples:
                done += 1
                if progress:
                    progress(done, n_days, "calibrating the hybrid's sigma on simulated days")
                key = f"{split}{min(f.shape[0], 2)}"
                m, v = hybrid_arrays(f, c, ct, prior_fn=prior_fn, model=mdl, mc_samples=mc_samples, seed=seed,
                                     correction_weight=correction_weight, variance_scale=1.0, variance=variance)
                d = preds.setdefault(key, {"m": [], "v": [], "t": [], "rmse": [], "scene": [], **{name: [] for name, _ in members}})
                for name, prior in members:  # each member prior alone (all pairs, as stfuse.fusion.prior.predict)
                    d[name].append(float(np.sqrt(np.nanmean((prior(f, c, ct)[0] - truth) ** 2))))
                ok = np.isfinite(m) & np.isfinite(truth)
                d["m"].append(m[ok]); d["v"].append(v[ok]); d["t"].append(truth[ok])
                d["rmse"].append(float(np.sqrt(np.mean((m[ok] - truth[ok]) ** 2))))
                # the scale this day's scene asks for: its pairs (two pairs) or its pair and the
                # nearest other clear date (one pair) predicting each other (None: too few valid pixels)
                scene = (f, c) if f.shape[0] >= 2 else evidence
                d["scene"].append(None if scene is None else scene_variance_scale(*scene, prior_fn=prior_fn, model=mdl,
                                                                                 mc_samples=mc_samples, seed=seed))

    def check_report(days: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
        """calibration_report of check days (mean, scaled variance, truth), with the bootstrap interval over days."""
        rep = calibration_report(*(np.concatenate([d[i] for d in days]) for i in range(3)))
        ci = coverage_interval(days, seed=seed)
        for level, name in ((0.6827, "cov68"), (0.95, "cov95")):
            rep[f"{name}_lo"], rep[f"{name}_hi"] = ci[level]
        return rep

    for p in ("1", "2"):
        fit, chk = preds.get(f"fit{p}"), preds.get(f"check{p}")
        if not fit or not chk:
            continue
        s = fit_variance_scale(np.concatenate(fit["m"]), np.concatenate(fit["v"]), np.concatenate(fit["t"]), method=method)  # type: ignore[arg-type]
        rep = check_report([(m, s * v, t) for m, v, t in zip(chk["m"], chk["v"], chk["t"])])
        rep.update(days=len(chk["rmse"]), rmse=float(np.mean(chk["rmse"])),
                   best_prior_rmse=min(float(np.mean(chk[name])) for name, _ in members),
                   **{f"rmse_{name}": float(np.mean(chk[name])) for name, _ in members})
        result["scales"][p] = s
        result["check"][p] = rep
        if any(e is not None for e in fit["scene"]):
            # scale that follows the scene: factor * scene scale, the factor fitted on the fit days
            used = [i for i, e in enumerate(fit["scene"]) if e is not None]
            factor = fit_variance_scale(np.concatenate([fit["m"][i] for i in used]),
                                        np.concatenate([fit["scene"][i] * fit["v"][i] for i in used]),
                                        np.concatenate([fit["t"][i] for i in used]), method=method)  # type: ignore[arg-type]
            day_scales = [factor * e if e is not None else s for e in chk["scene"]]
            rep = check_report([(m, k * v, t) for m, v, t, k in zip(chk["m"], chk["v"], chk["t"], day_scales)])
            rep.update(days=len(day_scales), scene_scale_median=float(np.median([e for e in chk["scene"] if e is not None])))
            result.setdefault("scene_factors", {})[p] = factor
            result.setdefault("check_scene", {})[p] = rep
    return result


HYBRID_CALIBRATION: dict[str, Any] = {"n_scenes": 160, "seed": 1, "size": 128, "method": "coverage_pair", "variance": "mixture"}
"""Settings of the hybrid variance calibration stored with the shipped weights."""


def add_hybrid_calibration(model: Refiner, *, progress: Progress | None = None) -> Refiner:
    """Fit :func:`fit_hybrid_scales` (:data:`HYBRID_CALIBRATION`) and record the scales
    (rounded to 4 significant digits) and the held-out check in ``model.meta``."""
    fit = fit_hybrid_scales(model, **HYBRID_CALIBRATION, progress=progress)
    round4 = lambda x: float(f"{x:.4g}")
    model.meta["hybrid_variance_scales"] = {k: round4(v) for k, v in fit["scales"].items()}  # type: ignore[attr-defined]
    if "scene_factors" in fit:
        model.meta["hybrid_scene_factors"] = {k: round4(v) for k, v in fit["scene_factors"].items()}  # type: ignore[attr-defined]
    model.meta["hybrid_calibration"] = {  # type: ignore[attr-defined]
        **HYBRID_CALIBRATION,
        "prior": list(ENSEMBLE),
        "correction_weight": CORRECTION_WEIGHT,
        "check": {p: {k: round4(v) for k, v in rep.items()} for p, rep in fit["check"].items()},
        **({"check_scene": {p: {k: round4(v) for k, v in rep.items()} for p, rep in fit["check_scene"].items()}}
           if "check_scene" in fit else {}),
    }
    return model


def make_shipped_weights(path: str | Path = DEFAULT_WEIGHTS, *, seed: int = 0, progress: Progress | None = None,
                         **kwargs: Any) -> Path:
    """Regenerate the shipped weights: ``train_synthetic(seed=seed, **kwargs)`` saved to ``path``
    with metadata (stfuse and torch versions, the command). ``make weights``. ``progress(done,
    total, label)``: each phase's advance (it does not change the weights, nor the recorded command)."""
    model = train_synthetic(seed=seed, progress=progress, **kwargs)
    add_hybrid_calibration(model, progress=progress)
    meta = dict(model.meta)  # type: ignore[attr-defined]
    meta.update(
        {
            "stfuse_version": __version__,
            "torch_version": torch.__version__,
            "command": f"python -m stfuse.refine --seed {seed}"  # the shipped file's label, kept for a byte-identical `make weights`
            + "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(kwargs.items())),
            "function": f"stfuse.refine.make_shipped_weights(seed={seed}"  # as recorded in the shipped file
            + "".join(f", {k}={v!r}" for k, v in sorted(kwargs.items())) + ")",
            "make": "make weights = stfuse train --synthetic --seed 0 -o stfuse/weights/refiner.pt --overwrite",
            "data": (
                "simulated scenes only (stfuse.synth via stfuse.refine._synthetic_scene, MODIS-like perturbations): "  # label as in the shipped file
                "training/validation scene seeds from numpy SeedSequence(seed).spawn(n_scenes + n_val_scenes); hybrid "
                "calibration scenes from SeedSequence([hybrid_calibration.seed, 77]).spawn(hybrid_calibration.n_scenes)"
            ),
        }
    )
    meta.pop("seconds", None)  # keep the file identical between equal runs
    return save_checkpoint(model, path, meta)

