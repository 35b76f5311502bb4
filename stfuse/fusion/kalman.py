"""The time-series fusion engine (``--method kalman``): a per-pixel Kalman filter and smoother
over time on the fine-minus-driver difference.

Every clear fine (Landsat) date and every coarse (MODIS) day of a series enters each day's
prediction. The state of a pixel and band is ``d(t) = fine(t) - driver(t)``, the fine image's
deviation from a coarse-derived image on the fine grid: the coarse image itself (the plain
engine) or, by default, the coarse image unmixed by the fields' classes
(:mod:`stfuse.fusion.unmix`). ``d`` is a random walk::

    d(b) - d(a) ~ N(0, q0 |b - a| + q1 max(0, (driver(b) - driver(a))^2 - noise))
    y_k = fine(t_k) - driver(t_k) = d(t_k) + e_k,  e_k ~ N(0, r_fine + r_coarse(t_k))

observed on each fine date where the pixel is clear (``q1``: far dates count less where the
coarse signal changed in between, a flood or a harvest). The forward and backward filters over
the dates, each carried to the target day and combined (the RTS smoother's result at that day),
give the prediction and its variance::

    mean(t) = driver(t) + d(t | every fine date)
    var(t)  = P(t | every fine date) + r_coarse(t) + r_fine

``r_coarse(t)``: the coarse image's noise that day (a missing coarse value takes the coarse
series interpolated in time, with a larger variance); ``r_fine``: the fine sensor's noise and
everything else that makes one date's ``d`` differ from its neighbours' beyond the random walk
(the prediction is of a fine observation, which carries it too). With ``q`` small against ``r``
the filter averages many dates; with ``q`` large it interpolates between the nearest clear dates
on each side. It is the EFAST idea (Senty et al. 2024: time-weighted ``fine + coarse change`` over
all dates) with the weights and sigma set by the data instead of a fixed ``tau``.

How the parameters are estimated (:func:`fit_params`, per band, on the series itself: in a
holdout never on the withheld date):

- ``r_coarse``: the coarse series' day-to-day wobble: per pixel the second difference in
  time to the nearest valid days before and after, ``e = C(t) - (b C(t-a) + a C(t+b)) / (a+b)``,
  whose variance is ``r (1 + (a^2 + b^2) / (a + b)^2)`` for white noise; robustly
  (``1.4826 median |e|``) over the pixels of each day (:func:`coarse_noise`), so that the pixels
  that really changed do not count as noise, then the median over days (``per_day_noise`` keeps
  each day's). A scene-wide factor per day (view angle, atmosphere; :func:`wobble_gain`) is
  removed first (``wobble``, default).
- ``q0``, ``q1``, ``r_fine``: leave-one-date-out on the fine dates (:func:`fit_loo`): every date
  predicted from the others on a grid of ``q0 / r_fine`` and ``q1``, the lowest squared error
  wins; one factor then scales all three so that 95 % of those left-out errors lie inside the
  95 % interval. With two dates the grid cannot choose: :data:`DEFAULT_Q0`, :data:`DEFAULT_Q1`.

Missing data: a fine pixel that is NaN is simply not observed that date; a coarse pixel that is
NaN (cloud, a missing day) takes the linear interpolation in time between the nearest valid days
within ``max_interp`` days, its variance grown by the coarse signal's own change over the gap
(a Brownian bridge with the coarse series' rate ``q_coarse``); beyond that it stays NaN (the
fine date is not used there; the target pixel is not predicted).

Python: :func:`predict_series` (any list of days from a whole series). Catalog mode and the
holdout: :class:`KalmanPredictor` per day (:func:`kalman_predictor`, parameters fitted once per
set of dates on the central :data:`FIT_WINDOW` px). Pure functions on numpy arrays (T, B, H, W),
NaN = missing; the filters run in torch (CPU or CUDA), vectorised over pixels, rows in blocks so
that memory is bounded by block x time. docs/methods.md, "The time-series engine", has what
decided each default.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from stfuse.errors import InputError

FINE_NOISE = 0.005
"""The fine sensor's noise (reflectance), :data:`stfuse.data.sensors.LANDSAT_SR_NOISE`: the unit
``r_fine`` starts from in the leave-one-date-out fit (:func:`fit_loo`)."""
MAX_INTERP = 10
"""Coarse values are interpolated in time over gaps of at most this many days on each side."""
MAD = 1.4826


def day_numbers(days: Sequence[Any]) -> np.ndarray:
    """Day numbers (float, :meth:`datetime.date.toordinal`) of dates (``datetime.date``, ISO strings, ``numpy.datetime64``) or day numbers as float days."""
    out = []
    for d in days:
        if isinstance(d, dt.datetime):
            out.append(float(d.date().toordinal()))
        elif isinstance(d, dt.date):
            out.append(float(d.toordinal()))
        elif isinstance(d, str):
            out.append(float(dt.date.fromisoformat(d[:10]).toordinal()))
        elif isinstance(d, np.datetime64):
            out.append(float(d.astype("datetime64[D]").astype(np.int64)) + dt.date(1970, 1, 1).toordinal())
        else:
            out.append(float(d))
    return np.asarray(out, np.float64)


# --------------------------------------------------------------------------- coarse series


def _neighbours(valid: np.ndarray, t: np.ndarray, max_days: float) -> tuple[np.ndarray, np.ndarray]:
    """For a (T, ...) validity mask and day numbers ``t`` (T,): per element the index of the
    nearest valid day strictly before and strictly after (-1 where none within ``max_days``)."""
    n = valid.shape[0]
    prev = np.full(valid.shape, -1, np.int64)
    nxt = np.full(valid.shape, -1, np.int64)
    last = np.full(valid.shape[1:], -1, np.int64)
    for k in range(n):
        prev[k] = last
        last = np.where(valid[k], k, last)
    last = np.full(valid.shape[1:], -1, np.int64)
    for k in range(n - 1, -1, -1):
        nxt[k] = last
        last = np.where(valid[k], k, last)
    tt = t.reshape((-1,) + (1,) * (valid.ndim - 1))
    for arr, sign in ((prev, 1.0), (nxt, -1.0)):
        gap = sign * (tt - t[np.maximum(arr, 0)])
        arr[(arr >= 0) & (gap > max_days)] = -1
    return prev, nxt


def coarse_noise(coarse: np.ndarray, days: Sequence[Any], *, max_days: float = 3) -> np.ndarray:
    """The coarse series' noise variance per day and band (T, B), NaN where a day has too few
    pixels with valid neighbours: robust spread of the second difference to the nearest valid
    days (at most ``max_days`` away) on either side (module docstring). ``coarse`` (T, B, H, W)."""
    t = day_numbers(days)
    c = np.asarray(coarse, np.float32)
    valid = np.isfinite(c)
    prev, nxt = _neighbours(valid, t, max_days)
    out = np.full(c.shape[:2], np.nan)
    take = lambda idx: np.take_along_axis(c, np.maximum(idx, 0), axis=0)  # noqa: E731
    c_prev, c_next = take(prev), take(nxt)
    a = t[:, None, None, None] - t[np.maximum(prev, 0)]
    b = t[np.maximum(nxt, 0)] - t[:, None, None, None]
    ok = valid & (prev >= 0) & (nxt >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = (c - (b * c_prev + a * c_next) / (a + b)) / np.sqrt(1.0 + (a * a + b * b) / (a + b) ** 2)
    for k in range(c.shape[0]):
        for band in range(c.shape[1]):
            sel = ok[k, band]
            if sel.sum() >= 16:
                out[k, band] = (MAD * np.median(np.abs(e[k, band][sel]))) ** 2
    return out


def wobble_gain(coarse: np.ndarray, days: Sequence[Any], *, half_window: float = 8.0) -> np.ndarray:
    """A scene-wide multiplicative factor per day and band (T, B) of the coarse series (1 where
    unknown): ``exp(L(t) - L~(t))`` with ``L(t)`` the median over pixels of ``log C(t) - log
    Cref`` (``Cref`` the per-pixel median over days, so that clouds do not change which pixels
    count) and ``L~`` a local linear fit of ``L`` over the other days within ``half_window``
    days (the slow, real change). Divide the coarse images by it."""
    t = day_numbers(days)
    c = np.asarray(coarse, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        logc = np.log(np.where(c > 1e-3, c, np.nan))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = np.nanmedian(logc, axis=0)
            level = np.nanmedian((logc - ref).reshape(c.shape[0], c.shape[1], -1), axis=2)
    gain = np.ones(c.shape[:2])
    for band in range(c.shape[1]):
        have = np.isfinite(level[:, band])
        for k in np.flatnonzero(have):
            near = have & (np.abs(t - t[k]) <= half_window) & (np.arange(len(t)) != k)
            if near.sum() < 3:
                continue
            x, y = t[near] - t[k], level[near, band]
            design = np.stack([np.ones_like(x), x], axis=1)
            coef = np.linalg.lstsq(design, y, rcond=None)[0]
            gain[k, band] = math.exp(level[k, band] - coef[0])
    return gain


def coarse_rate(coarse: np.ndarray, days: Sequence[Any], noise: np.ndarray) -> np.ndarray:
    """Per band, the coarse signal's variance growth per day (B,): the robust spread of the
    difference between consecutive valid days (at most 3 apart) per day of gap, less the noise."""
    t = day_numbers(days)
    c = np.asarray(coarse, np.float32)
    out = np.zeros(c.shape[1])
    valid = np.isfinite(c)
    prev, _ = _neighbours(valid, t, 3)
    ok = valid & (prev >= 0)
    gap = t[:, None, None, None] - t[np.maximum(prev, 0)]
    diff = c - np.take_along_axis(c, np.maximum(prev, 0), axis=0)
    for band in range(c.shape[1]):
        sel = ok[:, band]
        if sel.sum() < 16:
            continue
        r = np.nanmedian(noise[:, band]) if np.isfinite(noise[:, band]).any() else 0.0
        rate = (MAD * np.median(np.abs(diff[:, band][sel] / np.sqrt(gap[:, band][sel])))) ** 2
        out[band] = max(rate - 2 * r, 0.0)
    return out


@dataclass(frozen=True)
class CoarseModel:
    """What is known about the coarse series: per day (day number, :func:`day_numbers`) and band its noise variance and
    scene-wide factor, and per band the rate ``q_coarse`` of its own change (for interpolation)."""

    noise: Mapping[float, tuple[float, ...]]
    gain: Mapping[float, tuple[float, ...]]
    q_coarse: tuple[float, ...]
    noise_default: tuple[float, ...]

    def noise_of(self, day: Any) -> np.ndarray:
        key = float(day_numbers([day])[0])
        return np.asarray(self.noise.get(key, self.noise_default), np.float64)

    def gain_of(self, day: Any) -> np.ndarray:
        key = float(day_numbers([day])[0])
        return np.asarray(self.gain.get(key, (1.0,) * len(self.q_coarse)), np.float64)


def _iso(day: Any) -> str:
    """A day as an ISO date (day numbers below 1 as numbers)."""
    number = day_numbers([day])[0]
    return dt.date.fromordinal(int(number)).isoformat() if number >= 1 else f"{number:g}"


def fit_coarse_model(coarse: np.ndarray, days: Sequence[Any], *, wobble: bool = False, per_day: bool = False) -> CoarseModel:
    """:class:`CoarseModel` of the coarse series ``coarse`` (T, B, H, W) on ``days``: the noise
    per day (``per_day``) or its median over days, the wobble factor per day (``wobble``; else 1)."""
    c = np.asarray(coarse, np.float32)
    gain = wobble_gain(c, days) if wobble else np.ones(c.shape[:2])
    corrected = c / gain[:, :, None, None].astype(np.float32)
    noise = coarse_noise(corrected, days)
    default = np.array([np.nanmedian(noise[:, b]) if np.isfinite(noise[:, b]).any() else 0.0 for b in range(c.shape[1])])
    rate = coarse_rate(corrected, days, noise)
    keys = [float(v) for v in day_numbers(days)]
    per = {key: tuple(float(v) for v in (np.where(np.isfinite(noise[k]), noise[k], default) if per_day else default))
           for k, key in enumerate(keys)}
    return CoarseModel(per, {key: tuple(float(g) for g in gain[k]) for k, key in enumerate(keys)},
                       tuple(float(v) for v in rate), tuple(float(v) for v in default))


def coarse_at(coarse: np.ndarray, days: Sequence[Any], wanted: Sequence[Any], model: CoarseModel, *,
              max_interp: float = MAX_INTERP) -> tuple[np.ndarray, np.ndarray]:
    """The coarse images of the ``wanted`` days (N, B, H, W) from the series ``coarse`` (T, B, H, W)
    on ``days``, divided by the day's wobble factor, and their noise variance (N, B, H, W):
    a valid value has its day's noise; a missing one (NaN, or a day not in ``days``) the linear
    interpolation between the nearest valid days within ``max_interp`` days on each side, with
    ``r (a^2 + b^2) / (a + b)^2 + q_coarse a b / (a + b)``; NaN beyond that."""
    t = day_numbers(days)
    want = day_numbers(wanted)
    c = np.asarray(coarse, np.float32) / np.stack([model.gain_of(d) for d in days]).astype(np.float32)[:, :, None, None]
    noise = np.stack([model.noise_of(d) for d in days])  # (T, B)
    out = np.full((len(want), *c.shape[1:]), np.nan, np.float32)
    var = np.full_like(out, np.nan)
    valid = np.isfinite(c)
    q_c = np.asarray(model.q_coarse, np.float64)[:, None, None]
    for i, w in enumerate(want):
        exact = np.flatnonzero(t == w)
        if exact.size:
            k = int(exact[0])
            out[i] = c[k]
            var[i] = np.where(valid[k], noise[k][:, None, None], np.nan)
        before = np.flatnonzero((t < w) & (t >= w - max_interp))[::-1]
        after = np.flatnonzero((t > w) & (t <= w + max_interp))
        if not before.size or not after.size:
            continue
        need = ~np.isfinite(out[i])
        if not need.any():
            continue
        vb, gb = np.full(c.shape[1:], np.nan, np.float32), np.full(c.shape[1:], np.nan)
        rb = np.full(c.shape[1:], np.nan)
        for k in before:  # nearest valid before, per pixel
            take = ~np.isfinite(vb) & valid[k]
            vb[take], gb[take] = c[k][take], (w - t[k])
            rb = np.where(take, noise[k][:, None, None], rb)
        va, ga = np.full(c.shape[1:], np.nan, np.float32), np.full(c.shape[1:], np.nan)
        ra = np.full(c.shape[1:], np.nan)
        for k in after:
            take = ~np.isfinite(va) & valid[k]
            va[take], ga[take] = c[k][take], (t[k] - w)
            ra = np.where(take, noise[k][:, None, None], ra)
        ok = need & np.isfinite(vb) & np.isfinite(va)
        a, b = gb, ga
        with np.errstate(invalid="ignore", divide="ignore"):
            interp = (b * vb + a * va) / (a + b)
            v = (b * b * rb + a * a * ra) / (a + b) ** 2 + q_c * a * b / (a + b)
        out[i] = np.where(ok, interp, out[i])
        var[i] = np.where(ok, v, var[i])
    return out, var.astype(np.float32)


# --------------------------------------------------------------------------- the filters


def _tensor(a: Any, dev: Any) -> Any:
    import torch

    a = np.asarray(a, np.float32)
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, np.float32)
    return torch.as_tensor(a, device=dev)


def _change2(c_a: Any, c_b: Any, rc_a: Any, rc_b: Any) -> Any:
    """Squared coarse change between two days less its noise (>= 0); where unknown, the band's
    mean over the known pixels (0 if none)."""
    import torch

    d = torch.clamp((c_b - c_a) ** 2 - rc_a - rc_b, min=0.0)
    known = torch.isfinite(d)
    if bool(known.all()):
        return d
    flat_d, flat_k = d.reshape(d.shape[0], -1), known.reshape(d.shape[0], -1)
    mean = torch.where(flat_k, flat_d, 0.0).sum(1) / flat_k.sum(1).clamp(min=1)
    return torch.where(known, d, mean.reshape((-1,) + (1,) * (d.dim() - 1)))


class _Model:
    """The random walk's process noise between two days: ``q0 |dt| + q1 (dC^2 - noise)`` per band
    (``q0``, ``q1`` (B,)); observations ``y`` (K, B, ...), their variance ``r`` (K, B, ...), the
    coarse values ``c`` and coarse noise ``rc`` (K, B, ...) on sorted days ``t`` (K,)."""

    def __init__(self, y: Any, r: Any, t: np.ndarray, c: Any, rc: Any, q0: Any, q1: Any) -> None:
        self.y, self.r, self.t, self.c, self.rc = y, r, t, c, rc
        shape = (-1,) + (1,) * (y.dim() - 2)
        self.q0, self.q1 = q0.reshape(shape), q1.reshape(shape)
        self.use_change = bool((q1 > 0).any())

    def q(self, t_a: float, c_a: Any, rc_a: Any, t_b: float, c_b: Any, rc_b: Any) -> Any:
        out = self.q0 * abs(float(t_b - t_a))
        if self.use_change:
            out = out + self.q1 * _change2(c_a, c_b, rc_a, rc_b)
        return out

    def step(self, k: int, j: int) -> Any:
        return self.q(self.t[k], self.c[k], self.rc[k], self.t[j], self.c[j], self.rc[j])

    def update(self, m: Any, p: Any, k: int) -> tuple[Any, Any]:
        import torch

        obs, noise = self.y[k], self.r[k]
        ok = torch.isfinite(obs) & torch.isfinite(noise)
        first = torch.isinf(p)
        gain = torch.where(first, torch.ones_like(p), p / (p + noise))
        m_new = torch.where(ok, torch.where(first, obs, m + gain * (obs - m)), m)
        p_new = torch.where(ok, torch.where(first, noise, p * noise / (p + noise)), p)
        return m_new, p_new

    def forward(self) -> list[tuple[Any, Any]]:
        """Filtered (mean, variance) after each observation, from the first on."""
        import torch

        m = torch.zeros_like(self.y[0])
        p = torch.full_like(self.y[0], float("inf"))
        out = []
        for k in range(len(self.t)):
            if k:
                p = p + self.step(k - 1, k)
            m, p = self.update(m, p, k)
            out.append((m, p))
        return out

    def backward(self) -> list[tuple[Any, Any]]:
        """Filtered (mean, variance) from each observation to the last (a diffuse start)."""
        import torch

        m = torch.zeros_like(self.y[0])
        p = torch.full_like(self.y[0], float("inf"))
        out: list[Any] = [None] * len(self.t)
        for k in range(len(self.t) - 1, -1, -1):
            if k < len(self.t) - 1:
                p = p + self.step(k + 1, k)
            m, p = self.update(m, p, k)
            out[k] = (m, p)
        return out


def _combine(fm: Any, fp: Any, bm: Any, bp: Any) -> tuple[Any, Any]:
    """Inverse-variance combination of two independent estimates (infinite variance: none)."""
    import torch

    wf = torch.where(torch.isinf(fp), torch.zeros_like(fp), 1.0 / fp)
    wb = torch.where(torch.isinf(bp), torch.zeros_like(bp), 1.0 / bp)
    total = wf + wb
    mean = (torch.where(wf > 0, fm, 0.0) * wf + torch.where(wb > 0, bm, 0.0) * wb) / total
    nan = torch.full_like(total, float("nan"))
    return torch.where(total > 0, mean, nan), torch.where(total > 0, 1.0 / total, nan)


def _sorted_inputs(y: np.ndarray, r: np.ndarray, obs_days: Sequence[Any], c: np.ndarray | None, rc: np.ndarray | None,
                   q0: Sequence[float], q1: Sequence[float] | None, dev: Any) -> _Model:
    t = day_numbers(obs_days)
    order = np.argsort(t, kind="stable")
    y = np.asarray(y, np.float32)[order]
    full = lambda a: np.broadcast_to(np.asarray(a, np.float32)[order].reshape(  # noqa: E731
        (len(t), y.shape[1]) + (1,) * (y.ndim - 2)) if np.asarray(a).ndim == 2 else np.asarray(a, np.float32)[order], y.shape)
    r = full(r)
    c = full(c) if c is not None else np.zeros_like(y)
    rc = full(rc) if rc is not None else np.zeros_like(y)
    q1 = np.zeros(y.shape[1]) if q1 is None else np.asarray(q1)
    return _Model(_tensor(y, dev), _tensor(r, dev), t[order], _tensor(c, dev), _tensor(rc, dev), _tensor(q0, dev), _tensor(q1, dev))


def smooth(y: np.ndarray, r: np.ndarray, obs_days: Sequence[Any], target_days: Sequence[Any], q0: Sequence[float], *,
           q1: Sequence[float] | None = None, c_obs: np.ndarray | None = None, rc_obs: np.ndarray | None = None,
           c_target: np.ndarray | None = None, rc_target: np.ndarray | None = None,
           device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The smoothed random walk at ``target_days``: ``(mean, variance)`` (N, B, ...) float32.

    ``y`` (K, B, ...) observations on ``obs_days`` (NaN: not observed there), ``r`` their noise
    variance (K, B, ...) or (K, B). Process noise between two days ``q0 |dt| + q1 (dC^2 - rc_a -
    rc_b)`` with ``dC`` the coarse change between them (``c_obs``, ``rc_obs`` on the observation
    days, ``c_target``, ``rc_target`` (N, B, ...) on the targets; ``q1`` None or 0: time only).
    Forward and backward filters over the observations in time order, each carried to the target
    day and combined by inverse variance (= the RTS smoother's result at that day; a diffuse start).
    NaN where no observation on either side. An observation on a target day counts."""
    import torch

    dev = torch.device(device)
    model = _sorted_inputs(y, r, obs_days, c_obs, rc_obs, q0, q1, dev)
    targets = day_numbers(target_days)
    shape = model.y.shape[1:]
    ct = _tensor(c_target, dev) if c_target is not None else torch.zeros((len(targets), *shape), device=dev)
    rct = _tensor(np.broadcast_to(np.asarray(rc_target, np.float32).reshape(
        (len(targets), shape[0]) + (1,) * (len(shape) - 1)) if np.asarray(rc_target).ndim == 2 else rc_target,
        (len(targets), *shape)), dev) if rc_target is not None else torch.zeros((len(targets), *shape), device=dev)
    back = model.backward()
    k_n = len(model.t)
    means = np.full((len(targets), *shape), np.nan, np.float32)
    variances = np.full_like(means, np.nan)
    fm = torch.zeros(shape, device=dev)
    fp = torch.full(shape, float("inf"), device=dev)
    done = 0
    for i in np.argsort(targets, kind="stable"):
        target = float(targets[i])
        while done < k_n and model.t[done] <= target:
            if done:
                fp = fp + model.step(done - 1, done)
            fm, fp = model.update(fm, fp, done)
            done += 1
        if done:
            pf = fp + model.q(model.t[done - 1], model.c[done - 1], model.rc[done - 1], target, ct[i], rct[i])
        else:
            pf = torch.full(shape, float("inf"), device=dev)
        if done < k_n:
            bm, bp = back[done]
            pb = bp + model.q(target, ct[i], rct[i], model.t[done], model.c[done], model.rc[done])
        else:
            bm, pb = torch.zeros(shape, device=dev), torch.full(shape, float("inf"), device=dev)
        mean, var = _combine(fm, pf, bm, pb)
        means[i], variances[i] = mean.cpu().numpy(), var.cpu().numpy()
    return means, variances


def leave_one_out(model: _Model) -> tuple[Any, Any]:
    """Each observation day predicted from all the others: ``(mean, variance of d)`` (K, B, ...)."""
    import torch

    fwd, back = model.forward(), model.backward()
    k_n = len(model.t)
    inf = torch.full_like(model.y[0], float("inf"))
    zero = torch.zeros_like(model.y[0])
    means, variances = [], []
    for k in range(k_n):
        fm, pf = (fwd[k - 1][0], fwd[k - 1][1] + model.step(k - 1, k)) if k else (zero, inf)
        bm, pb = (back[k + 1][0], back[k + 1][1] + model.step(k + 1, k)) if k < k_n - 1 else (zero, inf)
        m, v = _combine(fm, pf, bm, pb)
        means.append(m)
        variances.append(v)
    return torch.stack(means), torch.stack(variances)


# --------------------------------------------------------------------------- parameters


Q0_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
"""Candidate ``q0 / r_fine`` (per day) of the leave-one-date-out fit."""
Q1_GRID = (0.0, 0.3, 1.0, 3.0, 10.0, 30.0)
"""Candidate ``q1`` (process noise per squared coarse change) of the leave-one-date-out fit."""
DEFAULT_Q0, DEFAULT_Q1 = 0.1, 1.0
"""Used where the series cannot tell (fewer than three fine dates: every choice predicts one date
from the other alike); set by leave-one-set-out (docs/methods.md, "Time-series engine")."""
SAMPLE_PIXELS = 20000


@dataclass(frozen=True)
class KalmanParams:
    """The engine's parameters per band: ``q0`` (variance per day of ``d``'s random walk),
    ``q1`` (variance per squared coarse change), ``r_fine`` (observation noise of ``d`` beyond
    the coarse noise), the :class:`CoarseModel`, and how they were estimated (``fit``)."""

    q0: tuple[float, ...]
    q1: tuple[float, ...]
    r_fine: tuple[float, ...]
    coarse: CoarseModel
    fit: Mapping[str, Any] = field(default_factory=dict)
    classes: Any = None
    """With the unmixed driver (:mod:`stfuse.fusion.unmix`): its :class:`~stfuse.fusion.unmix.Classes`."""
    unmix: Mapping[str, Any] | None = None
    """With the unmixed driver: ``n_classes``, ``factor``, ``radius``, ``lam``; None: the coarse images as they are."""

    @property
    def halo(self) -> int:
        """Fine pixels of context each output pixel needs (the unmixing window; 0 without it)."""
        return 0 if self.unmix is None else (int(self.unmix["radius"]) + 1) * int(self.unmix["factor"])

    def labels(self, fine: np.ndarray, coarse: np.ndarray) -> np.ndarray | None:
        """The class of each pixel (H, W) from ``fine`` and ``coarse`` (K, B, H, W) of the observation
        days (:func:`stfuse.fusion.unmix.assign_classes`); None without the unmixed driver."""
        if self.unmix is None or self.classes is None:
            return None
        from stfuse.fusion.unmix import assign_classes

        return assign_classes(fine, self.classes, coarse)

    def driver(self, coarse: np.ndarray, labels: np.ndarray | None, *, device: str = "cpu") -> np.ndarray:
        """The images ``d`` is taken against: ``coarse`` (N, B, H, W) as it is, or unmixed with the
        pixels' classes ``labels`` (:meth:`labels`, :func:`stfuse.fusion.unmix.unmix`)."""
        if self.unmix is None or self.classes is None or labels is None:
            return coarse
        from stfuse.fusion.unmix import unmix

        return unmix(coarse, labels, len(self.classes.centres), factor=int(self.unmix["factor"]), radius=int(self.unmix["radius"]),
                     lam=float(self.unmix["lam"]), prior=str(self.unmix.get("prior", "local")), device=device)

    def record(self, band_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-ready summary for the output tags (``calibration``)."""
        names = list(band_names) if band_names is not None else [str(b) for b in range(len(self.q0))]
        per = lambda values: {n: float(f"{v:.4g}") for n, v in zip(names, values)}  # noqa: E731
        return {"method": "kalman", "q_per_day": per(self.q0), "q_per_coarse_change2": per(self.q1),
                "r_fine": per(self.r_fine), "r_coarse": per(self.coarse.noise_default),
                "q_coarse": per(self.coarse.q_coarse), "unmix": dict(self.unmix) if self.unmix else None,
                "estimator": dict(self.fit)}


def fit_loo(y: np.ndarray, r_coarse: np.ndarray, c: np.ndarray, obs_days: Sequence[Any], *, device: str = "cpu",
            q0_grid: Sequence[float] = Q0_GRID, q1_grid: Sequence[float] = Q1_GRID, default: tuple[float, float] = (DEFAULT_Q0, DEFAULT_Q1),
            coverage: float = 0.95, sample: int = SAMPLE_PIXELS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """``q0``, ``q1``, ``r_fine`` per band by leave-one-date-out on the series itself.

    ``y`` (K, B, H, W) observed differences on ``obs_days``, ``r_coarse`` their coarse noise
    variance and ``c`` their coarse values (K, B, H, W). On up to ``sample`` pixels observed on
    at least two dates, every date is predicted from the others (:func:`leave_one_out`) for each
    ``q0 / r_fine`` in ``q0_grid`` and ``q1`` in ``q1_grid``, with ``r_fine`` = the fine noise;
    the pair with the lowest mean squared error wins (within 0.2 % of it, the one nearest the
    ``default``; with two dates every pair predicts alike and the default stays). Then all three
    are scaled by one factor so that ``coverage`` of the left-out errors lie within the interval
    (their variance: the filter's plus the coarse and fine noise)."""
    import torch

    k_n, n_b = y.shape[:2]
    flat = lambda a: np.asarray(a, np.float32).reshape(k_n, n_b, -1)  # noqa: E731
    yf, rcf, cf = flat(y), flat(np.broadcast_to(r_coarse, y.shape)), flat(c)
    rng = np.random.default_rng(seed)
    q0 = np.zeros(n_b)
    q1 = np.zeros(n_b)
    r_fine = np.full(n_b, FINE_NOISE ** 2)
    record: dict[str, Any] = {"estimator": "leave-one-date-out", "q0_grid": list(q0_grid), "q1_grid": list(q1_grid),
                              "dates": k_n, "bands": []}
    t = day_numbers(obs_days)
    dev = torch.device(device)
    for b in range(n_b):
        seen = np.isfinite(yf[:, b]).sum(axis=0)
        pixels = np.flatnonzero(seen >= 2)
        if pixels.size > sample:
            pixels = np.sort(rng.choice(pixels, sample, replace=False))
        info: dict[str, Any] = {"pixels": int(pixels.size)}
        if pixels.size < 16 or k_n < 2:
            q0[b], q1[b] = default[0] * r_fine[b], default[1]
            info["note"] = "too few observed pixels: defaults"
            record["bands"].append(info)
            continue
        yb, rcb, cb = yf[:, b:b + 1, pixels], rcf[:, b:b + 1, pixels], cf[:, b:b + 1, pixels]
        r0 = FINE_NOISE ** 2

        def loo(rho0: float, rho1: float, r0: float = r0) -> tuple[np.ndarray, np.ndarray]:
            model = _sorted_inputs(yb, rcb + r0, t, cb, rcb, [rho0 * r0], [rho1], dev)
            m, v = leave_one_out(model)
            order = np.argsort(t, kind="stable")
            inv = np.empty_like(order)
            inv[order] = np.arange(k_n)
            return m.cpu().numpy()[inv], v.cpu().numpy()[inv]

        scores = {}
        for rho0 in q0_grid:
            for rho1 in q1_grid:
                m, _ = loo(rho0, rho1)
                err = (m - yb)[np.isfinite(m) & np.isfinite(yb)]
                scores[(rho0, rho1)] = float(np.mean(err ** 2)) if err.size else float("inf")
        best = min(scores.values())
        near = [key for key, v in scores.items() if v <= best * 1.002]
        dist = lambda key: abs(np.log10(key[0] + 1e-3) - np.log10(default[0] + 1e-3)) + abs(  # noqa: E731
            np.log10(key[1] + 1e-2) - np.log10(default[1] + 1e-2))
        rho0, rho1 = min(near, key=dist)
        m, v = loo(rho0, rho1)
        ok = np.isfinite(m) & np.isfinite(yb)
        z = np.abs(m - yb)[ok] / np.sqrt((v + rcb + r0)[ok])
        from scipy.stats import norm

        scale = (np.quantile(z, coverage) / norm.ppf(0.5 + coverage / 2)) ** 2 if z.size >= 16 else 1.0
        scale = float(np.clip(scale, 0.05, 400.0))
        r_fine[b] = r0 * scale
        q0[b] = rho0 * r0 * scale
        q1[b] = rho1 * scale
        info.update(q0_over_r=rho0, q1_chosen=rho1, scale=round(scale, 4), loo_rmse=round(float(np.sqrt(best)), 6),
                    loo_rmse_default=round(float(np.sqrt(scores.get(tuple(default), float("nan")))), 6))
        record["bands"].append(info)
    return q0, q1, r_fine, record


def fit_params(fine: np.ndarray, fine_days: Sequence[Any], coarse: np.ndarray, coarse_days: Sequence[Any], *,
               wobble: bool = False, per_day_noise: bool = False, max_interp: float = MAX_INTERP,
               window: int | None = 256, coarse_model: CoarseModel | None = None, device: str = "cpu",
               unmix: bool = False, n_classes: int = 8, coarse_factor: int = 16, unmix_radius: int = 2, unmix_lam: float = 0.1,
               unmix_features: str = "composite", unmix_prior: str = "local",
               **loo_options: Any) -> KalmanParams:
    """:class:`KalmanParams` from a series: ``fine`` (K, B, H, W) on ``fine_days``, ``coarse``
    (T, B, H, W) on ``coarse_days`` (module docstring). Estimated on the central ``window`` x
    ``window`` pixels (None: all). ``coarse_model``: reuse one fitted on the same coarse series.
    ``unmix``: take ``d`` against the unmixed driver (:mod:`stfuse.fusion.unmix`: ``n_classes``,
    ``coarse_factor``, ``unmix_radius``, ``unmix_lam``) instead of the coarse images."""
    fine = _central(np.asarray(fine, np.float32), window)
    coarse = _central(np.asarray(coarse, np.float32), window)
    model = coarse_model or fit_coarse_model(coarse, coarse_days, wobble=wobble, per_day=per_day_noise)
    c_obs, v_obs = coarse_at(coarse, coarse_days, fine_days, model, max_interp=max_interp)
    classes, settings = None, None
    if unmix:
        from stfuse.fusion.unmix import fit_classes

        classes = fit_classes(fine, n_classes, features=unmix_features, coarse=c_obs)
        if classes is not None:
            settings = {"n_classes": len(classes.centres), "factor": int(coarse_factor), "radius": int(unmix_radius),
                        "lam": float(unmix_lam), "features": unmix_features, "prior": unmix_prior}
    draft = KalmanParams((0.0,), (0.0,), (0.0,), model, {}, classes, settings)
    driver = draft.driver(c_obs, draft.labels(fine, c_obs), device=device)
    q0, q1, r, record = fit_loo(fine - driver, v_obs, driver, fine_days, device=device, **loo_options)
    record.update(wobble=wobble, coarse_noise="day" if per_day_noise else "median", window=window,
                  fine_dates=[_iso(d) for d in fine_days])
    return KalmanParams(tuple(float(v) for v in q0), tuple(float(v) for v in q1), tuple(float(v) for v in r), model, record,
                        classes, settings)


def _central(a: np.ndarray, window: int | None) -> np.ndarray:
    if window is None:
        return a
    h, w = a.shape[-2:]
    r0, c0 = max((h - window) // 2, 0), max((w - window) // 2, 0)
    return a[..., r0:r0 + window, c0:c0 + window]


# --------------------------------------------------------------------------- predictions


def predict_series(fine: np.ndarray, fine_days: Sequence[Any], coarse: np.ndarray, coarse_days: Sequence[Any],
                   targets: Sequence[Any], *, params: KalmanParams | None = None, device: str = "cpu", block: int = 128,
                   **fit_options: Any) -> tuple[np.ndarray, np.ndarray, KalmanParams]:
    """Predict the fine images of ``targets`` (days) from a whole series: ``(mean, variance, params)``,
    mean and variance (N, B, H, W) float32 (NaN where not predictable).

    ``fine`` (K, B, H, W) reflectance on ``fine_days`` (NaN: cloud); ``coarse`` (T, B, H, W) on the
    fine grid on ``coarse_days`` (every coarse day available; NaN: missing). ``params``: given, or
    fitted on this series (:func:`fit_params` with :data:`DEFAULT_OPTIONS` updated by ``fit_options``;
    ``unmix=False, wobble=False``: the plain engine). A target that is itself a fine
    date is predicted from its own observation too: leave it out of ``fine`` to withhold it.
    Rows are processed in blocks of ``block`` (memory: about 4 x block x width x (K + N) x B floats)."""
    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    if fine.ndim != 4 or coarse.ndim != 4 or fine.shape[1:] != coarse.shape[1:]:
        raise InputError(f"fine {fine.shape} and coarse {coarse.shape} must be (time, band, y, x) on the same grid")
    if len(fine_days) != fine.shape[0] or len(coarse_days) != coarse.shape[0]:
        raise InputError("give one day per fine and per coarse image")
    if params is None:
        params = fit_params(fine, fine_days, coarse, coarse_days, device=device, **{**DEFAULT_OPTIONS, **fit_options})
    h = fine.shape[2]
    mean = np.full((len(targets), *fine.shape[1:]), np.nan, np.float32)
    var = np.full_like(mean, np.nan)
    halo = params.halo
    if halo:  # blocks on the coarse grid, grown by the unmixing window: the same result as one block
        factor = int(params.unmix["factor"])  # type: ignore[index]
        block = max(factor, block // factor * factor)
    for r0 in range(0, h, block):
        lo, hi = max(r0 - halo, 0), min(r0 + block + halo, h)
        m, v = predict_block(fine[:, :, lo:hi], fine_days, coarse[:, :, lo:hi], coarse_days, targets, params, device=device)
        keep = slice(r0 - lo, r0 - lo + min(block, h - r0))
        mean[:, :, r0:r0 + block], var[:, :, r0:r0 + block] = m[:, :, keep], v[:, :, keep]
    return mean, var, params


def predict_block(fine: np.ndarray, fine_days: Sequence[Any], coarse: np.ndarray, coarse_days: Sequence[Any],
                  targets: Sequence[Any], params: KalmanParams, *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_series` on one block with known ``params``: ``(mean, variance)`` (N, B, h, w)."""
    c_obs, v_obs = coarse_at(coarse, coarse_days, fine_days, params.coarse)
    c_t, v_t = coarse_at(coarse, coarse_days, targets, params.coarse)
    labels = params.labels(fine, c_obs)
    c_obs, c_t = params.driver(c_obs, labels, device=device), params.driver(c_t, labels, device=device)
    return predict_from(fine - c_obs, v_obs, c_obs, fine_days, c_t, v_t, targets, params, device=device)


def predict_from(d_obs: np.ndarray, v_obs: np.ndarray, c_obs: np.ndarray, obs_days: Sequence[Any], c_t: np.ndarray,
                 v_t: np.ndarray, targets: Sequence[Any], params: KalmanParams, *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The prediction from the observed differences ``d_obs`` (K, B, ...) with coarse noise ``v_obs``
    and coarse values ``c_obs`` on ``obs_days``, and the targets' coarse values ``c_t`` and noise
    ``v_t`` (N, B, ...): ``(c_t + d, P + v_t + r_fine)``, NaN where either is unknown."""
    r_fine = np.asarray(params.r_fine, np.float32).reshape((1, -1) + (1,) * (np.ndim(d_obs) - 2))
    d, p = smooth(d_obs, v_obs + r_fine, obs_days, targets, params.q0, q1=params.q1, c_obs=c_obs, rc_obs=v_obs,
                  c_target=c_t, rc_target=v_t, device=device)
    mean = c_t + d
    var = p + v_t + r_fine
    bad = ~(np.isfinite(mean) & np.isfinite(var))
    mean[bad], var[bad] = np.nan, np.nan
    return mean.astype(np.float32), var.astype(np.float32)


# --------------------------------------------------------------------------- catalog mode


FIT_WINDOW = 256
"""Side (fine px) of the central window the parameters are fitted on in catalog mode."""
DEFAULT_OPTIONS: dict[str, Any] = {"wobble": True, "unmix": True, "unmix_features": "series", "unmix_prior": "global", "unmix_lam": 0.1}
"""The engine's defaults (``FusionConfig.options`` and :func:`predict_series`'s keywords override
them): the coarse series' daily factor removed, ``d`` taken against the unmixed driver with
classes from the pixels' seasons and the tile's own unmixing as the prior. Chosen by
leave-one-set-out over three simulated series, Kranj and the bundled sample (docs/methods.md,
"The time-series engine"); ``{"unmix": False, "wobble": False}`` is the plain engine."""
OPTIONS: tuple[str, ...] = ("wobble", "per_day_noise", "max_interp", "unmix", "n_classes", "coarse_factor", "unmix_radius",
                             "unmix_lam", "unmix_features", "unmix_prior")
"""Options of ``--method kalman`` (``FusionConfig.options``): remove the coarse series' scene-wide
factor per day (``wobble``), keep each day's coarse noise (``per_day_noise``), the longest
interpolation in time of a missing coarse value, days (``max_interp``)."""


class KalmanPredictor:
    """One day of the engine in catalog mode (a :class:`stfuse.fused.Predictor`): called per tile
    with the fine and coarse images of every usable date (``obs_days``, the plan's pairs) and the
    target's coarse image. ``params`` were fitted once on the series (:func:`kalman_params`)."""

    name = "kalman"
    variance_factor = 1.0  # the leave-one-date-out fit scales the variance itself

    def __init__(self, params: KalmanParams, obs_days: Sequence[Any], target: Any, band_names: Sequence[str] | None = None,
                 device: str = "cpu") -> None:
        self.params, self.obs_days, self.target = params, [_iso(d) for d in obs_days], _iso(target)
        self.band_names, self.device = list(band_names) if band_names is not None else None, device

    @property
    def halo(self) -> int:
        return self.params.halo

    def calibration(self) -> dict[str, Any]:
        return {**self.params.record(self.band_names), "variance_scale": 1.0,
                "fitted_on": "the series' own fine dates, each predicted from the others (leave-one-date-out)",
                "fine_dates_used": list(self.obs_days)}

    rows: int = 128
    """The filter runs on blocks of this many rows of the tile (memory: about 10 x rows x width x dates x bands floats)."""

    def __call__(self, fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fine = np.asarray(fine, np.float32)
        gains = np.stack([self.params.coarse.gain_of(d) for d in self.obs_days]).astype(np.float32)[:, :, None, None]
        c_obs = np.asarray(coarse, np.float32) / gains
        noise = np.stack([self.params.coarse.noise_of(d) for d in self.obs_days]).astype(np.float32)[:, :, None, None]
        c_t = np.asarray(coarse_target, np.float32)[None] / self.params.coarse.gain_of(self.target).astype(np.float32)[None, :, None, None]
        noise_t = self.params.coarse.noise_of(self.target).astype(np.float32)[None, :, None, None]
        labels = self.params.labels(fine, c_obs)
        c_obs, c_t = self.params.driver(c_obs, labels, device=self.device), self.params.driver(c_t, labels, device=self.device)
        h = fine.shape[2]
        mean = np.full(fine.shape[1:], np.nan, np.float32)
        var = np.full_like(mean, np.nan)
        for r0 in range(0, h, self.rows):
            rows = slice(r0, min(r0 + self.rows, h))
            co, ct = c_obs[:, :, rows], c_t[:, :, rows]
            v_obs = np.where(np.isfinite(co), noise, np.float32(np.nan))
            v_t = np.where(np.isfinite(ct), noise_t, np.float32(np.nan))
            m, v = predict_from(fine[:, :, rows] - co, v_obs, co, self.obs_days, ct, v_t, [self.target], self.params, device=self.device)
            mean[:, rows], var[:, rows] = m[0], v[0]
        return mean, var


def kalman_halo(options: Mapping[str, Any] | None = None) -> int:
    """The halo (fine px) of ``--method kalman`` with ``options`` (:data:`OPTIONS`; defaults
    :data:`DEFAULT_OPTIONS`): the unmixing window, 0 without it."""
    opts = {**DEFAULT_OPTIONS, **dict(options or {})}
    return (int(opts.get("unmix_radius", 2)) + 1) * int(opts.get("coarse_factor", 16)) if opts.get("unmix") else 0


def kalman_predictor(fusion: Any, fine: Any, coarse: Any, plan: Any, *, memo: dict[Any, Any] | None = None) -> KalmanPredictor:
    """The :class:`KalmanPredictor` of one day's ``plan`` (:func:`stfuse.fusion.pairs.series_plan`:
    its pairs are the dates used) from the cubes' reflectance (time, band, y, x), ``fusion`` a
    :class:`~stfuse.config.FusionConfig`; the parameters are fitted once per set of dates (kept in
    ``memo``: every day of a query shares them; a holdout's withheld date is never among them)."""
    memo = {} if memo is None else memo
    options = {**DEFAULT_OPTIONS, **dict(fusion.options or {})}
    key = ("kalman-params", tuple(plan.pairs), tuple(sorted(options.items())))
    if key not in memo:
        memo[key] = kalman_params(fine, coarse, list(plan.pairs), device=fusion.device, memo=memo, **options)
    return KalmanPredictor(memo[key], plan.pairs, plan.target, band_names=[str(b) for b in fine.band.values], device=fusion.device)


def kalman_params(fine: Any, coarse: Any, obs_days: Sequence[Any], *, device: str = "cpu", window: int = FIT_WINDOW,
                  memo: dict[Any, Any] | None = None, **fit_options: Any) -> KalmanParams:
    """:func:`fit_params` on the central ``window`` px of labelled cubes (xarray (time, band, y, x)
    reflectance): ``fine`` at ``obs_days`` (NaN where not clear), ``coarse`` on all its days. The
    coarse model is kept in ``memo`` per set of coarse days (a holdout refits ``q`` and ``r`` per
    withheld date, never the coarse model)."""
    memo = {} if memo is None else memo
    h, w = fine.sizes["y"], fine.sizes["x"]
    rows = slice(max((h - window) // 2, 0), max((h - window) // 2, 0) + window)
    cols = slice(max((w - window) // 2, 0), max((w - window) // 2, 0) + window)
    day = lambda t: np.datetime64(t, "D").item()  # noqa: E731
    coarse_days = [day(t) for t in coarse.time.values]
    key = ("kalman-coarse", tuple(coarse_days), fit_options.get("wobble", False), fit_options.get("per_day_noise", False))
    if key not in memo:
        values = np.asarray(coarse.isel(y=rows, x=cols).transpose("time", "band", "y", "x").values, np.float32)
        memo[key] = (values, fit_coarse_model(values, coarse_days, wobble=fit_options.get("wobble", False),
                                              per_day=fit_options.get("per_day_noise", False)))
    coarse_values, model = memo[key]
    times = [np.datetime64(d, "ns") for d in obs_days]
    fine_values = np.asarray(fine.sel(time=times).isel(y=rows, x=cols).transpose("time", "band", "y", "x").values, np.float32)
    options = {k: v for k, v in fit_options.items() if k not in ("wobble", "per_day_noise")}
    options.setdefault("max_interp", MAX_INTERP)
    return fit_params(fine_values, list(obs_days), coarse_values, coarse_days, window=None, coarse_model=model, device=device,
                      wobble=fit_options.get("wobble", False), per_day_noise=fit_options.get("per_day_noise", False), **options)


def time_weighted_change(fine: np.ndarray, fine_days: Sequence[Any], coarse_at_fine: np.ndarray, coarse_target: np.ndarray,
                         target: Any, *, tau: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """The EFAST-like baseline: ``sum_k w_k (F_k + C(t) - C_k) / sum_k w_k`` over the fine dates
    clear at a pixel, ``w_k = exp(-|t - t_k| / tau)``; variance the weighted spread of the
    candidates. ``fine``, ``coarse_at_fine`` (K, B, H, W), ``coarse_target`` (B, H, W)."""
    t = day_numbers(fine_days)
    w = np.exp(-np.abs(t - day_numbers([target])[0]) / tau).astype(np.float64)
    cand = np.asarray(fine, np.float64) + np.asarray(coarse_target, np.float64)[None] - np.asarray(coarse_at_fine, np.float64)
    ok = np.isfinite(cand)
    wk = np.where(ok, w[:, None, None, None], 0.0)
    total = wk.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, cand, 0.0).__mul__(wk).sum(axis=0) / total
        var = (wk * np.where(ok, cand - mean[None], 0.0) ** 2).sum(axis=0) / total
    mean[total == 0] = np.nan
    var[total == 0] = np.nan
    return mean.astype(np.float32), var.astype(np.float32)


__all__ = ["CoarseModel", "KalmanParams", "KalmanPredictor", "kalman_params", "kalman_predictor", "coarse_at", "coarse_noise", "day_numbers", "fit_coarse_model", "fit_loo", "fit_params",
           "leave_one_out", "predict_block", "predict_from", "predict_series", "smooth", "time_weighted_change", "wobble_gain"]
