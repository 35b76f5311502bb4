"""Training the refiner: the training loop, self-supervision on a scene's own pairs, and
pretraining on simulated scenes (:mod:`stfuse.sim.days`, from :mod:`stfuse.sim.synth`).

Every trainer is bit-for-bit reproducible on CPU for a given seed (:func:`deterministic`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stfuse.errors import InputError
from stfuse.fusion.refine.members import PriorFn, _prior_name, resolve_members, resolve_prior
from stfuse.fusion.refine.network import FORWARD_TILE, THREADS, Features, Refiner, _forward_tiled, _predict_single, build_features, load_model
from stfuse.fusion.uncertainty import fit_variance_scale
from stfuse.sim.days import _synthetic_scene

log = logging.getLogger("stfuse.fusion.refine")

Progress = Callable[[float, int, str], None]
"""``progress(done, total, label)``: called as training advances (it only observes: the
numbers are the same with or without it). Each phase (examples, steps, variance scale) counts
from 0 to its own total."""


# ------------------------------------------------------------------------------------------
# Training core
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def deterministic(seed: int, threads: int = THREADS) -> Iterator[None]:
    """Seeded, deterministic torch on CPU for the duration (restores threads/algorithms/RNG)."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(old_det)
            torch.set_num_threads(old_threads)


@dataclass
class _Sample:
    """One single-pair training example on a (B, H, W) scene: features, standardised target
    (B, H, W), its validity, and the rectangle origins patches may be drawn from."""

    feats: Features
    target_n: torch.Tensor
    valid: torch.Tensor
    allowed: np.ndarray | None = None  # (H, W) bool: pixels patches may cover (None = all)
    prior: str = ""  # name of the prior that made the example


def _make_sample(
    prior_mean: np.ndarray, prior_var: np.ndarray, fine: np.ndarray, coarse: np.ndarray, ct: np.ndarray, target: np.ndarray,
    allowed: np.ndarray | None = None,
) -> _Sample:
    feats = build_features(prior_mean, prior_var, fine, coarse, ct)
    tgt = torch.as_tensor(np.asarray(target, np.float32))
    valid = torch.isfinite(tgt) & feats.prior_valid
    target_n = torch.where(valid, (tgt - feats.center[:, None, None]) / feats.scale[:, None, None], torch.zeros(()))
    # learn the correction relative to the filled prior: target_n - base_n
    base_n = (feats.base - feats.center[:, None, None]) / feats.scale[:, None, None]
    return _Sample(feats, (target_n - base_n) * valid, valid, allowed)


def _loss(out: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, nll_weight: float = 1.0) -> torch.Tensor:
    """MSE of the correction + Gaussian NLL of the log-variance (mean detached), over valid pixels.

    out (N, B, 2, H, W); target, valid (N, B, H, W); all standardised units.
    """
    delta, logv = out[:, :, 0], out[:, :, 1]
    v = valid.float()
    n = v.sum().clamp_min(1.0)
    r = target - delta
    mse = (r * r * v).sum() / n
    nll = (0.5 * (logv + (r.detach() ** 2) * torch.exp(-logv)) * v).sum() / n
    return mse + nll_weight * nll


def _augment(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    t = torch.rot90(t, k, dims=(-2, -1))
    return torch.flip(t, dims=(-1,)) if flip else t


def _draw_patch(rng: np.random.Generator, s: _Sample, patch: int, n_bands: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random patch (C, ...) of sample s: x (B, C, p, p), target (B, p, p), valid (B, p, p)."""
    _, _, h, w = s.feats.x.shape
    p = min(patch, h, w)
    for _ in range(50):
        y0 = int(rng.integers(0, h - p + 1))
        x0 = int(rng.integers(0, w - p + 1))
        if s.allowed is None or s.allowed[y0 : y0 + p, x0 : x0 + p].all():
            break
    sl = (slice(y0, y0 + p), slice(x0, x0 + p))
    x = s.feats.x[(slice(None), slice(None), *sl)]
    tg = s.target_n[(slice(None), *sl)]
    va = s.valid[(slice(None), *sl)]
    if n_bands is not None and n_bands < x.shape[0]:
        idx = torch.as_tensor(np.sort(rng.choice(x.shape[0], size=n_bands, replace=False)))
        x, tg, va = x[idx], tg[idx], va[idx]
    k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    return _augment(x, k, flip), _augment(tg, k, flip), _augment(va, k, flip)


def _val_loss(model: Refiner, samples: Sequence[_Sample], masks: Sequence[torch.Tensor | None]) -> float:
    """Mean MSE of the correction over the validation pixels (dropout off)."""
    tot, cnt = 0.0, 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s, m in zip(samples, masks):
            o = _forward_tiled(model, s.feats.x, FORWARD_TILE)[0]
            v = s.valid if m is None else (s.valid & m[None])
            r = (s.target_n - o[:, 0]) * v
            tot += float((r * r).sum())
            cnt += float(v.sum())
    model.train(was_training)
    return tot / max(cnt, 1.0)


def _train_loop(
    model: Refiner,
    samples: Sequence[_Sample],
    *,
    steps: int,
    batch: int,
    patch: int,
    lr: float,
    seed: int,
    val: tuple[Sequence[_Sample], Sequence[torch.Tensor | None]] | None = None,
    eval_every: int = 50,
    patience: int = 4,
    band_subsets: bool = False,
    weight_decay: float = 1e-4,
    time_limit: float | None = None,
    log_every: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Adam + cosine schedule on random patches; keeps the best state by validation MSE.

    Batches group samples of equal band count. Returns a history dict. ``progress(step, steps,
    label)`` after every step, the label with the recent training loss and the validation loss.
    """
    rng = np.random.default_rng(seed)
    by_bands: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_bands.setdefault(int(s.feats.x.shape[0]), []).append(i)
    groups = sorted(by_bands)
    sizes = np.array([len(by_bands[g]) for g in groups], np.float64)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(steps, 1))))
    best_state = copy.deepcopy(model.state_dict())
    best = _val_loss(model, *val) if val is not None else float("inf")
    hist: dict[str, Any] = {"val": [(0, best)], "train": [], "best_step": 0}
    bad = 0
    t0 = time.perf_counter()
    running = recent = 0.0
    step = 0
    for step in range(1, steps + 1):
        model.train()
        g = groups[int(rng.choice(len(groups), p=sizes / sizes.sum()))]
        nb = None
        if band_subsets and g > 1:
            nb = int(rng.integers(1, g + 1))
        xs, ts, vs = [], [], []
        for _ in range(batch):
            s = samples[by_bands[g][int(rng.integers(0, len(by_bands[g])))]]
            x, t, v = _draw_patch(rng, s, patch, nb)
            xs.append(x)
            ts.append(t)
            vs.append(v)
        x, t, v = torch.stack(xs), torch.stack(ts), torch.stack(vs)
        out = model(x)
        loss = _loss(out, t, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        last = float(loss.detach())
        running += last
        recent = last if step == 1 else 0.9 * recent + 0.1 * last  # for the progress display only
        if log_every and step % log_every == 0:
            log.info("step %d loss %.4f (%.1fs)", step, running / log_every, time.perf_counter() - t0)
            hist["train"].append((step, running / log_every))
            running = 0.0
        out_of_time = time_limit is not None and time.perf_counter() - t0 > time_limit
        if val is not None and (step % eval_every == 0 or step == steps or out_of_time):
            vl = _val_loss(model, *val)
            hist["val"].append((step, vl))
            if vl < best - 1e-6:
                best, bad = vl, 0
                best_state = copy.deepcopy(model.state_dict())
                hist["best_step"] = step
            else:
                bad += 1
                if bad >= patience:
                    if progress:
                        progress(steps, steps, _step_label(step, recent, hist, "stopped early: no better validation loss"))
                    break
        if progress:
            progress(step, steps, _step_label(step, recent, hist))
        if out_of_time:
            hist["stopped"] = "time_limit"
            break
    if val is not None:
        model.load_state_dict(best_state)
    else:
        hist["best_step"] = step
    hist["best_val"] = best
    hist["steps"] = step
    hist["seconds"] = time.perf_counter() - t0
    model.eval()
    return hist


def _step_label(step: int, recent: float, hist: dict[str, Any], note: str = "") -> str:
    """``step N: loss L, val V (best B)`` for the progress display."""
    text = f"step {step}: loss {recent:.4f}"
    if hist["val"] and math.isfinite(hist["val"][-1][1]):
        text += f", val {hist['val'][-1][1]:.4f}"
        if len(hist["val"]) > 1:
            text += f" (best {min(v for _, v in hist['val']):.4f})"
    return f"{text}; {note}" if note else text


def _fit_scale_on(model: Refiner, samples: Sequence[_Sample], masks: Sequence[torch.Tensor | None], mc_samples: int, seed: int,
                  progress: Progress | None = None, label: str = "fitting the variance scale") -> float:
    """Variance scale making the refined predictions of ``samples`` calibrated on ``masks``."""
    old = model.variance_scale.clone()
    model.variance_scale.fill_(1.0)
    preds, vars_, truths = [], [], []
    try:
        for i, (s, m) in enumerate(zip(samples, masks)):
            mean, var = _predict_single(model, s.feats, mc_samples=mc_samples, seed=seed + i)
            truth = s.feats.base + s.feats.scale[:, None, None] * s.target_n  # target_n is relative to base
            v = s.valid if m is None else (s.valid & m[None])
            preds.append(mean[v].numpy())
            vars_.append(var[v].numpy())
            truths.append(truth[v].numpy())
            if progress:
                progress(i + 1, len(samples), label)
    finally:
        model.variance_scale.copy_(old)
    if not preds:
        return 1.0
    return fit_variance_scale(np.concatenate(preds), np.concatenate(vars_), np.concatenate(truths))


def train_supervised(
    examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    init: Refiner | str | Path | None = None,
    steps: int = 200,
    batch: int = 8,
    patch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    width: int = 32,
    dropout: float = 0.1,
    highpass: int = 9,
    calibrate: bool = False,
    mc_samples: int = 8,
    threads: int = THREADS,
) -> Refiner:
    """Train a refiner on explicit examples (the building block of the other trainers).

    ``examples``: tuples ``(prior_mean, prior_var, fine, coarse, coarse_target, target)``,
    each (B, H, W) reflectance (NaN = missing); ``target`` is the fine image the refined
    prediction should match. ``init``: a :class:`Refiner` or checkpoint path to start from,
    or None for a fresh model of ``width``/``dropout``/``highpass``. Random ``patch`` px patches with flips
    and rotations, ``steps`` AdamW steps with cosine decay, no early stopping. With
    ``calibrate`` the variance scale is fitted on the training examples afterwards.
    Bit-for-bit reproducible on CPU for a given ``seed``.
    """
    with deterministic(seed, threads):
        model = (
            copy.deepcopy(load_model(init)) if init is not None else Refiner(width=width, dropout=dropout, highpass=highpass)
        )
        samples = [_make_sample(*ex) for ex in examples]
        hist = _train_loop(model, samples, steps=steps, batch=batch, patch=patch, lr=lr, seed=seed)
        if calibrate:
            model.variance_scale.fill_(_fit_scale_on(model, samples, [None] * len(samples), mc_samples, seed))
    model.meta = {"trained": "supervised", "steps": hist["steps"], "seed": seed}  # type: ignore[attr-defined]
    return model


# ------------------------------------------------------------------------------------------
# Self-supervised training on a scene's own pairs
# ------------------------------------------------------------------------------------------


def _holdout_mask(h: int, w: int, rng: np.random.Generator, frac: float = 0.25, tiles: int = 4) -> np.ndarray:
    """(H, W) bool: held-out tiles of a ``tiles`` x ``tiles`` grid (at least one)."""
    ty, tx = np.linspace(0, h, tiles + 1).astype(int), np.linspace(0, w, tiles + 1).astype(int)
    n = max(1, int(round(frac * tiles * tiles)))
    pick = rng.choice(tiles * tiles, size=n, replace=False)
    m = np.zeros((h, w), bool)
    for p in pick:
        i, j = divmod(int(p), tiles)
        m[ty[i] : ty[i + 1], tx[j] : tx[j + 1]] = True
    return m


def _cross_samples(fine: np.ndarray, coarse: np.ndarray, members: Sequence[tuple[str, Any]], *, allowed: np.ndarray,
                   progress: Progress | None = None) -> list[_Sample]:
    """Training examples of a scene's pairs predicting each other: for every ordered pair (i, j)
    and member prior, the prior's prediction of date j from pair i, with ``fine[j]`` as truth."""
    samples: list[_Sample] = []
    total = fine.shape[0] * (fine.shape[0] - 1) * len(members)
    for i in range(fine.shape[0]):
        for j in range(fine.shape[0]):
            if i == j:
                continue
            for name, prior in members:
                pm, pv = prior(fine[i : i + 1], coarse[i : i + 1], coarse[j])
                samples.append(_make_sample(pm, pv, fine[i], coarse[i], coarse[j], fine[j], allowed=allowed))
                samples[-1].prior = name
                if progress:
                    progress(len(samples), total, f"examples: the priors predicting one pair from another ({name})")
    return samples


def _calibrate_members(model: Refiner, samples: list[_Sample], masks: list[Any], members: Sequence[tuple[str, Any]],
                       mc_samples: int, seed: int, progress: Any) -> dict[str, float]:
    """Fit the model's variance scale on the held-out tiles (in place): with one member prior
    directly; with several one scale per member, the overall scale their geometric mean.
    Returns the per-member scales (empty with one member)."""
    per_prior: dict[str, float] = {}
    if len(members) == 1:
        model.variance_scale.fill_(_fit_scale_on(model, samples, masks, mc_samples, seed, progress))
        return per_prior
    for name, _ in members:
        sub = [k for k, smp in enumerate(samples) if smp.prior == name]
        per_prior[name] = _fit_scale_on(model, [samples[k] for k in sub], [masks[k] for k in sub], mc_samples, seed,
                                        progress, f"fitting the variance scale ({name})")
    model.variance_scale.fill_(float(np.exp(np.mean(np.log(list(per_prior.values()))))))
    return per_prior


def train_self_supervised(
    fine: np.ndarray,
    coarse: np.ndarray,
    *,
    prior_fn: PriorFn | str | None = None,
    init: Refiner | str | Path | None = None,
    steps: int = 160,
    batch: int = 6,
    patch: int = 48,
    lr: float = 5e-4,
    seed: int = 0,
    device: str = "cpu",
    holdout: float = 0.25,
    eval_every: int = 25,
    patience: int = 4,
    mc_samples: int = 8,
    time_limit: float | None = None,
    calibrate: bool = True,
    bands: Sequence[str] | None = None,
    threads: int = THREADS,
    progress: Progress | None = None,
) -> Refiner:
    """Adapt a refiner to one scene using only its pairs (never the target's fine image).

    ``fine``, ``coarse``: (P, B, H, W) the pairs (coarse on the fine grid), reflectance,
    NaN = missing. ``prior_fn``: single-pair prior (callable, :mod:`stfuse.fusion.prior` method
    name, or None/"additive" for :func:`additive_prior`). ``init``: starting model (None = the
    shipped weights; a path = a checkpoint).

    With P >= 2: for every ordered pair (i, j), ``prior_fn(fine[i], coarse[i], coarse[j])``
    predicts date j and the refiner learns from ``fine[j]`` (MSE of the mean + Gaussian NLL of
    the variance). Patches (``patch`` px, flips and rotations) come from ~75 % of the scene;
    the other tiles (``holdout``) measure validation MSE every ``eval_every`` steps: the best
    state (the initial model included, so fine-tuning never ends worse on held-out tiles)
    is kept, training stops after ``patience`` evaluations without improvement, after
    ``steps`` steps or after ``time_limit`` seconds (default None: a wall-clock limit makes the
    result depend on the machine's speed; 160 steps take about 90 s on one busy CPU core for
    400 x 400 x 3 with the two-member ensemble). With ``calibrate`` the variance scale is
    then fitted on the held-out tiles (MC dropout with ``mc_samples`` as at inference).

    With P = 1 there is no second date to learn from: the initial model is returned unchanged
    (documented fallback: the shipped, synthetically pretrained weights).

    Returns the adapted model (``model.meta`` has the training record; band-specific when
    ``bands`` are given). ``progress(done, total, label)``: examples, steps (with the training
    and validation loss), variance scale (:data:`Progress`; it does not change the result).
    """
    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    if fine.ndim != 4 or coarse.shape != fine.shape:
        raise InputError(f"fine {fine.shape} and coarse {coarse.shape} must both be (P, B, H, W)")
    base = load_model(init)
    model = copy.deepcopy(base)
    model.meta = dict(getattr(base, "meta", {}))  # type: ignore[attr-defined]
    if fine.shape[0] < 2:
        log.info("one pair: no self-supervision possible, using the initial (shipped) weights")
        return model
    members = resolve_members(prior_fn)
    rng = np.random.default_rng(seed)
    h, w = fine.shape[-2:]
    held = _holdout_mask(h, w, rng, frac=holdout)
    log.info("adapting the refiner to %d pairs (%s, self-supervised, up to %d steps)", fine.shape[0],
             ", ".join(name for name, _ in members), steps)
    with deterministic(seed, threads):
        samples = _cross_samples(fine, coarse, members, allowed=~held, progress=progress)
        masks = [torch.as_tensor(held)] * len(samples)
        model = model.to(device)
        hist = _train_loop(
            model, samples, steps=steps, batch=batch, patch=patch, lr=lr, seed=seed, val=(samples, masks),
            eval_every=eval_every, patience=patience, time_limit=time_limit, progress=progress,
        )
        per_prior = _calibrate_members(model, samples, masks, members, mc_samples, seed, progress) if calibrate else {}
    model.meta.update(  # type: ignore[attr-defined]
        {
            "variance_scales": per_prior if calibrate else model.meta.get("variance_scales", {}),  # type: ignore[attr-defined]
            "self_supervised": {
                "pairs": int(fine.shape[0]),
                "steps": hist["steps"],
                "best_step": hist["best_step"],
                "val_mse": hist["val"],
                "seconds": round(hist["seconds"], 1),
                "prior": _prior_name(prior_fn),
                "seed": seed,
                "variance_scale": float(model.variance_scale),
            },
            "band_agnostic": bands is None,
            "bands": list(bands) if bands is not None else None,
        }
    )
    log.info(
        "self-supervised: %d steps (best %d) in %.1fs, val MSE %.4f -> %.4f, variance scale %.3f",
        hist["steps"], hist["best_step"], hist["seconds"], hist["val"][0][1], hist["best_val"], float(model.variance_scale),
    )
    return model


# ------------------------------------------------------------------------------------------
# Synthetic pretraining
# ------------------------------------------------------------------------------------------


def _synthetic_samples(
    seeds: Sequence[int], priors: Sequence[PriorFn], size: int, max_gap_dates: int = 5, names: Sequence[str] = (),
    progress: Progress | None = None, label: str = "simulating scenes",
) -> list[_Sample]:
    """Up to 4 single-pair examples per scene, each with a prior drawn from ``priors``."""
    samples = []
    for n_done, sd in enumerate(seeds, start=1):
        fine, coarse = _synthetic_scene(sd, size)
        rng = np.random.default_rng([sd, 2])
        n = fine.shape[0]
        # band subset of this scene: green/red/nir (benchmark-like) or all 6 or a random subset
        r = rng.uniform()
        if r < 0.4:
            bidx = [1, 2, 3]
        elif r < 0.7:
            bidx = list(range(6))
        else:
            bidx = sorted(rng.choice(6, size=int(rng.integers(1, 6)), replace=False).tolist())
        fine, coarse = fine[:, bidx], coarse[:, bidx]
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j and abs(i - j) <= max_gap_dates]
        pick = rng.choice(len(pairs), size=min(4, len(pairs)), replace=False)
        for p in pick:
            i, j = pairs[int(p)]
            if np.isnan(fine[i]).mean() > 0.5 or np.isnan(fine[j]).mean() > 0.5:
                continue
            k = int(rng.integers(0, len(priors)))
            pm, pv = priors[k](fine[i : i + 1], coarse[i : i + 1], coarse[j])
            samples.append(_make_sample(pm, pv, fine[i], coarse[i], coarse[j], fine[j]))
            samples[-1].prior = names[k]
        if progress:
            progress(n_done, len(seeds), label)
    return samples


SYNTHETIC_PRIORS: tuple[str, ...] = ("starfm", "fitfc", "fsdaf", "additive")
"""Priors the shipped weights are trained with (one drawn per example): prior-agnostic weights."""


def train_synthetic(
    n_scenes: int = 96,
    seed: int = 0,
    *,
    prior_fn: PriorFn | str | None | Sequence[PriorFn | str | None] = SYNTHETIC_PRIORS,
    steps: int = 800,
    batch: int = 8,
    patch: int = 48,
    lr: float = 2e-3,
    size: int = 256,
    n_val_scenes: int = 16,
    width: int = 32,
    dropout: float = 0.1,
    highpass: int = 9,
    eval_every: int = 100,
    patience: int = 100,
    threads: int = THREADS,
    mc_samples: int = 8,
    progress: Progress | None = None,
) -> Refiner:
    """Pretrain a refiner on simulated scenes (:mod:`stfuse.sim.synth`), reproducibly on CPU.

    ``n_scenes`` training scenes of ``size`` x ``size`` px (scene seeds derived from ``seed``;
    default 256: trained on 128 px scenes, the two-pair hybrid was 3-4 % worse on held-out
    384 px simulated days, docs/methods.md), up to 4 single-pair examples each (pair date i -> target date j, |i - j| <= 5
    Landsat revisits, prior drawn from ``prior_fn``: one prior or a sequence, default :data:`SYNTHETIC_PRIORS`), plus ``n_val_scenes`` validation scenes;
    AdamW with cosine decay for ``steps`` steps of ``batch`` patches of ``patch`` px with random
    flips/rotations and random band subsets. The best state by validation MSE is kept, and its
    variance scale fitted on the validation scenes. Bit-for-bit reproducible on CPU for equal
    arguments (deterministic algorithms, ``threads`` intra-op threads). ``progress(done, total,
    label)``: scenes, steps (with the training and validation loss), variance scales
    (:data:`Progress`; it does not change the result).
    """
    t0 = time.perf_counter()
    names = list(prior_fn) if isinstance(prior_fn, (list, tuple)) else [prior_fn]
    priors = [resolve_prior(p) for p in names]
    with deterministic(seed, threads):
        ss = np.random.SeedSequence(seed)
        scene_seeds = [int(s.generate_state(1)[0]) for s in ss.spawn(n_scenes + n_val_scenes)]
        labels = [_prior_name(p) for p in names]
        train = _synthetic_samples(scene_seeds[:n_scenes], priors, size, names=labels, progress=progress,
                                   label="simulating training scenes")
        val = _synthetic_samples(scene_seeds[n_scenes:], priors, size, names=labels, progress=progress,
                                 label="simulating validation scenes")
        log.info("synthetic: %d train / %d val examples in %.1fs", len(train), len(val), time.perf_counter() - t0)
        model = Refiner(width=width, dropout=dropout, highpass=highpass)
        hist = _train_loop(
            model, train, steps=steps, batch=batch, patch=patch, lr=lr, seed=seed, val=(val, [None] * len(val)),
            eval_every=eval_every, patience=patience, band_subsets=True, log_every=50, progress=progress,
        )
        model.variance_scale.fill_(_fit_scale_on(model, val, [None] * len(val), mc_samples, seed, progress))
        per_prior = {}
        for name in sorted(set(labels)):
            sub = [v for v in val if v.prior == name]
            if sub:
                per_prior[name] = _fit_scale_on(model, sub, [None] * len(sub), mc_samples, seed, progress,
                                                f"fitting the variance scale ({name})")
    model.meta = {  # type: ignore[attr-defined]
        "trained": "synthetic",
        "variance_scales": per_prior,
        "n_scenes": n_scenes,
        "n_val_scenes": n_val_scenes,
        "seed": seed,
        "steps": hist["steps"],
        "best_step": hist["best_step"],
        "val_mse": hist["val"],
        "prior": [_prior_name(p) for p in names],
        "size": size,
        "batch": batch,
        "patch": patch,
        "lr": lr,
        "threads": threads,
        "seconds": round(time.perf_counter() - t0, 1),
        "band_agnostic": True,
        "bands": None,
    }
    return model
