"""The unmixed coarse driver of the time-series engine (:mod:`stfuse.fusion.kalman`, ``unmix``).

A coarse pixel mixes fields that change differently (a crop greening beside a forest that does
not): ``fine - coarse`` then changes in time although nothing happened to the field itself,
and a series method that carries ``fine - coarse`` from one date to another carries that error.
The unmixed driver takes the class structure of the fine images into every coarse day, as FSDAF's
unmixing step does for one pair (Zhu et al. 2016), but on every day of the series:

1. **Classes** (:func:`fit_classes`, :func:`assign_classes`): k-means (``n_classes``) on a
   per-pixel composite of the fine dates (the median of each band over the clear dates,
   standardised); centres fitted once on a window, every pixel (every tile) assigned to the
   nearest, so tiles agree. A pixel never clear has no class.
2. **Unmixing each coarse day** (:func:`unmix`): on the coarse grid (``factor`` x ``factor``
   fine-pixel blocks) the class fractions ``f_c`` and the block means ``C`` of the coarse image;
   per block, the class values ``x_c`` minimise over the blocks of a ``(2 radius + 1)^2`` window
   ``sum (C - sum_c f_c x_c)^2 + lam n sum_c (x_c - p_c)^2`` (``n`` the valid blocks in the
   window). ``prior="local"``: ``p_c`` = the block's own coarse value (``lam`` large: no unmixing,
   ``lam`` small: the local least-squares unmixing); ``prior="global"``: ``p_c`` = the scene's (the
   tile's) own unmixing of the day, used where the tile holds at least
   :data:`MIN_BLOCKS_PER_CLASS` valid blocks per class (else the local prior): class contrasts
   where a window alone cannot tell them. Tiles then differ slightly at their edges (like FSDAF).
3. **Driver** ``U``: each fine pixel takes its class's value, interpolated bilinearly between
   block centres; the block residual ``C - mean(U)`` is added back, interpolated likewise, so that
   ``U`` keeps the coarse image's values at the coarse scale. NaN where the coarse image is NaN.

The engine then smooths ``fine - U`` instead of ``fine - coarse`` and predicts ``U(t) + d(t)``.
Vectorised torch (CPU or CUDA); a block of ``(2 radius + 1)`` coarse pixels around a tile is
its halo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

N_CLASSES = 8
RADIUS = 2
LAM = 0.1
FACTOR = 16
MIN_BLOCKS_PER_CLASS = 4
"""``prior="global"`` needs this many valid coarse blocks per class (fewer: the scene-wide unmixing
is underdetermined, and the local prior is used)."""


@dataclass(frozen=True)
class Classes:
    """k-means centres (k, D) in standardised feature space, with the features' mean and
    standard deviation (D,), and which features (:func:`features_of`)."""

    centres: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    features: str = "composite"


def composite(fine: np.ndarray) -> np.ndarray:
    """(B, H, W): per pixel the median over the dates where it is clear of ``fine`` (K, B, H, W)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.asarray(fine, np.float32), axis=0)


def series_features(fine: np.ndarray, coarse: np.ndarray | None = None) -> np.ndarray:
    """(K * B, H, W): every date's fine image, a cloudy pixel taking the nearest clear date's value
    (the earlier on a tie) plus the coarse change between the two dates (with ``coarse`` (K, B, H, W)
    of the same dates): the pixel's whole season, so that fields of the same spectrum but another
    phenology fall in different classes. NaN where a pixel is never clear."""
    f = np.asarray(fine, np.float32)
    k_n = f.shape[0]
    out = f.copy()
    clear = np.isfinite(f)
    if coarse is not None:  # carry fine - coarse, not fine, from the nearest clear date
        c = np.asarray(coarse, np.float32)
        d = np.where(np.isfinite(c), f - c, np.nan)
        clear = np.isfinite(d)
        filled = series_features(np.where(clear, d, np.nan)).reshape(f.shape)
        out = np.where(np.isfinite(f), f, c + filled)
        return out.reshape(-1, *f.shape[2:])
    for k in range(k_n):
        for step in range(1, k_n):
            todo = ~np.isfinite(out[k])
            if not todo.any():
                break
            for j in (k - step, k + step):
                if 0 <= j < k_n:
                    take = todo & clear[j]
                    out[k][take] = f[j][take]
                    todo &= ~take
    return out.reshape(-1, *f.shape[2:])


def features_of(fine: np.ndarray, kind: str, coarse: np.ndarray | None = None) -> np.ndarray:
    """The per-pixel features the classes are made of: ``composite`` (:func:`composite`) or ``series``
    (:func:`series_features`, with ``coarse`` of the same dates if given)."""
    return series_features(fine, coarse) if kind == "series" else composite(fine)


def fit_classes(fine: np.ndarray, n_classes: int = N_CLASSES, seed: int = 0, features: str = "composite",
                coarse: np.ndarray | None = None) -> Classes | None:
    """k-means centres of the features of ``fine`` (K, B, H, W) (``coarse`` of the same dates: see
    :func:`series_features`); None with too few clear pixels."""
    import torch

    from stfuse.fusion.prior.fsdaf import _kmeans

    comp = features_of(fine, features, coarse)
    x = comp.reshape(comp.shape[0], -1).T
    x = x[np.isfinite(x).all(axis=1)]
    if x.shape[0] < 10 * n_classes:
        return None
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    _, centres = _kmeans(torch.as_tensor((x - mean) / std, dtype=torch.float32), n_classes, seed=seed)
    return Classes(centres.numpy().astype(np.float32), mean.astype(np.float32), std.astype(np.float32), features)


def assign_classes(fine: np.ndarray, classes: Classes, coarse: np.ndarray | None = None) -> np.ndarray:
    """(H, W) int64 class of each pixel of ``fine`` (K, B, H, W) (nearest centre); -1 if never clear."""
    comp = features_of(fine, classes.features, coarse)
    b, h, w = comp.shape
    x = (comp.reshape(b, -1).T - classes.mean) / classes.std
    ok = np.isfinite(x).all(axis=1)
    labels = np.full(h * w, -1, np.int64)
    if ok.any():
        xs = x[ok]
        best = np.full(xs.shape[0], np.inf)
        arg = np.zeros(xs.shape[0], np.int64)
        for c, centre in enumerate(classes.centres):  # memory: one distance vector at a time
            d = ((xs - centre) ** 2).sum(axis=1)
            better = d < best
            best[better], arg[better] = d[better], c
        labels[ok] = arg
    return labels.reshape(h, w)


def _box(x: Any, r: int) -> Any:
    """Sum over a (2r+1)^2 window of the last two dims (zeros beyond the edges)."""
    import torch.nn.functional as fn

    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    out = fn.avg_pool2d(fn.pad(flat, (r, r, r, r)), 2 * r + 1, stride=1) * (2 * r + 1) ** 2
    return out.reshape(*lead, *x.shape[-2:])


def _upsample(x: Any, factor: int, h: int, w: int) -> Any:
    """Bilinear from block centres to the fine grid (..., hc, wc) -> (..., h, w) (edges clamped)."""
    import torch.nn.functional as fn

    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    up = fn.interpolate(flat, scale_factor=factor, mode="bilinear", align_corners=False)
    return up[..., :h, :w].reshape(*lead, h, w)


class _Bilinear:
    """Bilinear interpolation from block centres to the fine pixels (the same weights as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, edges clamped) as
    four gathers per pixel: of a (hc, wc) field, or of a (hc, wc, k) field at each pixel's class."""

    def __init__(self, h: int, w: int, hc: int, wc: int, factor: int, dev: Any) -> None:
        import torch

        def axis(n: int, nc: int) -> tuple[Any, Any, Any]:
            src = ((torch.arange(n, device=dev, dtype=torch.float32) + 0.5) / factor - 0.5).clamp(min=0)
            i0 = src.floor().long().clamp(max=nc - 1)
            return i0, (i0 + 1).clamp(max=nc - 1), src - i0
        (y0, y1, wy), (x0, x1, wx) = axis(h, hc), axis(w, wc)
        self.wc = wc
        self.index = [(a[:, None] * wc + b[None, :]).reshape(-1) for a in (y0, y1) for b in (x0, x1)]
        self.weight = [(p[:, None] * q[None, :]).reshape(-1) for p in (1 - wy, wy) for q in (1 - wx, wx)]
        self.shape = (h, w)

    def field(self, x: Any) -> Any:
        """(hc, wc) -> (h, w)."""
        flat = x.reshape(-1)
        return sum(wt * flat[ix] for ix, wt in zip(self.index, self.weight)).reshape(self.shape)

    def classes(self, x: Any, labels: Any) -> Any:
        """(hc, wc, k) at each pixel's class ``labels`` (h*w,) (clamped to 0..k-1) -> (h, w)."""
        k = x.shape[-1]
        flat = x.reshape(-1)
        return sum(wt * flat[ix * k + labels] for ix, wt in zip(self.index, self.weight)).reshape(self.shape)


def unmix(coarse: np.ndarray, labels: np.ndarray, n_classes: int, *, factor: int = FACTOR, radius: int = RADIUS,
          lam: float = LAM, prior: str = "local", device: str = "cpu") -> np.ndarray:
    """The unmixed driver (module docstring) of coarse images ``coarse`` (N, B, H, W) on the fine
    grid, NaN = missing, with the fine pixels' ``labels`` (H, W) (-1: no class): (N, B, H, W) float32."""
    import torch
    import torch.nn.functional as fn

    dev = torch.device(device)
    c = torch.as_tensor(np.asarray(coarse, np.float32), device=dev)
    n_d, n_b, h, w = c.shape
    hc, wc = -(-h // factor), -(-w // factor)
    pad = (0, wc * factor - w, 0, hc * factor - h)
    lab = torch.as_tensor(np.asarray(labels), device=dev)
    onehot = torch.stack([(lab == k).float() for k in range(n_classes)])  # (k, H, W)
    frac = fn.avg_pool2d(fn.pad(onehot, pad)[None], factor)[0] * (factor * factor)
    count = fn.avg_pool2d(fn.pad(torch.ones(1, h, w, device=dev), pad)[None], factor)[0] * (factor * factor)
    frac = frac / count.clamp(min=1)  # (k, hc, wc): fractions of the fine pixels in each block
    valid_px = torch.isfinite(c)
    csum = fn.avg_pool2d(fn.pad(torch.where(valid_px, c, 0.0), pad).reshape(-1, 1, hc * factor, wc * factor), factor)
    cnt = fn.avg_pool2d(fn.pad(valid_px.float(), pad).reshape(-1, 1, hc * factor, wc * factor), factor)
    cb = (csum / cnt.clamp(min=1e-6)).reshape(n_d, n_b, hc, wc)
    ok = (cnt.reshape(n_d, n_b, hc, wc) * (factor * factor) >= 0.5 * count)  # at least half the block valid
    cb = torch.where(ok, cb, torch.zeros_like(cb))
    okf = ok.float()
    eye = torch.eye(n_classes, device=dev)
    out = torch.full_like(c, float("nan"))
    pair = frac[:, None] * frac[None, :]  # (k, k, hc, wc)
    classed = lab >= 0
    flat_labels = lab.clamp(min=0).reshape(-1)
    bilinear = _Bilinear(h, w, hc, wc, factor, dev)
    for n in range(n_d):
        for b in range(n_b):
            v = okf[n, b]
            if not bool(v.any()):
                continue
            a = _box(pair * v, radius).permute(2, 3, 0, 1)  # (hc, wc, k, k)
            rhs = _box(frac * (cb[n, b] * v), radius).permute(1, 2, 0)  # (hc, wc, k)
            nv = _box(v, radius).clamp(min=1.0)
            centre = torch.where(ok[n, b], cb[n, b], _box(cb[n, b] * v, radius) / nv)  # a block without data: its window's mean
            reg = (lam * nv)[..., None, None] * eye
            if prior == "global" and float(v.sum()) >= MIN_BLOCKS_PER_CLASS * n_classes:
                # towards the scene's own unmixing of the day (a small ridge towards its mean)
                a0 = (pair * v).sum((-2, -1))
                b0 = (frac * (cb[n, b] * v)).sum((-2, -1))
                level = (cb[n, b] * v).sum() / v.sum()
                eps = 1e-3 * torch.trace(a0).clamp(min=1e-6)
                x0 = torch.linalg.solve(a0 + eps * eye, b0 + eps * level)
                target = x0.expand(*centre.shape, n_classes)
            else:  # towards the block's own coarse value (no unmixing); also where the scene is too small to unmix
                target = centre[..., None].expand(*centre.shape, n_classes)
            x = torch.linalg.solve(a + reg, (rhs + (lam * nv)[..., None] * target)[..., None])[..., 0]  # (hc, wc, k)
            u = torch.where(classed, bilinear.classes(x, flat_labels), bilinear.field(centre))
            umean = fn.avg_pool2d(fn.pad(u, pad)[None, None], factor)[0, 0] * (factor * factor) / count[0].clamp(min=1)
            resid = centre - umean
            out[n, b] = torch.where(valid_px[n, b], u + bilinear.field(resid), torch.full_like(u, float("nan")))
    return out.cpu().numpy()


__all__ = ["Classes", "assign_classes", "composite", "fit_classes", "unmix"]
