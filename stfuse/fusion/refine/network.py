"""The refiner network: input features, the CNN, inference with Monte Carlo dropout, checkpoints.

Shapes: images are (B, H, W) per pair (reflectance, NaN = missing); the network sees one band at a
time with shared weights (see :mod:`stfuse.fusion.refine` for the design).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stfuse.errors import CheckpointError, InputError
from stfuse.fusion.uncertainty import combine_inverse_variance

FEATURES: tuple[str, ...] = (
    "prior",  # (mu - m) / s
    "fine",  # (f - m) / s
    "coarse",  # (c - m) / s
    "coarse_target",  # (ct - m) / s
    "coarse_change",  # (ct - c) / s
    "prior_change",  # (mu - f) / s
    "log_prior_var",  # log(v / s^2), clipped to [-14, 4]
    "fine_detail",  # (f - box17(f)) / s
    "coarse_residual",  # (c - box17(f)) / s
    "change_spread",  # local std (17x17) of (ct - c) / s
    "change_slope",  # local regression slope (33x33) of ct on c, minus 1, clipped to [-1.5, 1.5]
    "slope_detail",  # change_slope * fine_detail
    "scene_change_std",  # std over the image of coarse_change (constant per band)
    "scene_residual_std",  # std over the image of coarse_residual (constant per band)
    "level",  # 4 * f (absolute reflectance)
    "valid_fine",
    "valid_coarse",
    "valid_target",
    "valid_prior",
)
N_FEATURES = len(FEATURES)
_LOG_PRIOR_VAR = FEATURES.index("log_prior_var")
BOX = 17
"""Box window (fine pixels) of the coarse-scale features: about one 500 m MODIS pixel."""
REG_BOX = 33
"""Window of the local regression slope feature."""
MIN_SCALE, MAX_SCALE = 0.005, 0.5
"""Clamp of the per-band standardisation scale ``s_b`` (reflectance)."""
FEATURE_CLIP = 10.0
"""Standardised input channels are clipped to +-FEATURE_CLIP (no wild extrapolation)."""
ARCH_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "refiner.pt"
THREADS = 1
"""Torch intra-op threads used by the trainers (bit-for-bit reproducibility needs a fixed count)."""


# ------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------


def _box_1d(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Window sum of width k (odd) along ``dim`` (zero outside), via a float64 cumulative sum."""
    p = k // 2
    n = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [p + 1, p]
    cs = torch.cumsum(F.pad(x.double(), pad), dim=dim)
    return (cs.narrow(dim, k, n) - cs.narrow(dim, 0, n)).to(x.dtype)


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a k x k window (k odd), shrinking at the border; x (N, H, W)."""
    h, w = x.shape[-2:]
    ones_h = _box_1d(torch.ones((1, h, 1), dtype=x.dtype), k, 1)
    ones_w = _box_1d(torch.ones((1, 1, w), dtype=x.dtype), k, 2)
    return _box_1d(_box_1d(x, k, 2), k, 1) / (ones_h * ones_w)


def _masked_box(x: torch.Tensor, m: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of x over valid pixels (m) in a k x k window; the plain mean where no pixel is valid."""
    num = _box(x * m, k)
    den = _box(m, k)
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6), _box(x, k))


def _mean_std(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-band mean, std (float64) and count of finite pixels of (B, H, W)."""
    ok = torch.isfinite(a)
    n = ok.sum(dim=(1, 2)).double()
    a0 = torch.where(ok, a, torch.zeros(())).double()
    mean = a0.sum(dim=(1, 2)) / n.clamp_min(1)
    dev = torch.where(ok, (a.double() - mean[:, None, None]) ** 2, torch.zeros((), dtype=torch.float64))
    return mean, (dev.sum(dim=(1, 2)) / n.clamp_min(1)).sqrt(), n


def band_stats(
    fine: np.ndarray | torch.Tensor, coarse_target: np.ndarray | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band standardisation ``(m_b, s_b)`` (each (B,)): the mean of the fine image over
    finite pixels and the larger of the standard deviations of the fine image and of the
    coarse target image (so a large change does not blow up the standardised inputs),
    clamped to [MIN_SCALE, MAX_SCALE]; (0.1, 0.05) for an empty band. Inputs (B, H, W)."""
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32)) if isinstance(a, np.ndarray) else a.float()
    mean, std, n = _mean_std(t(fine))
    if coarse_target is not None:
        _, std_t, n_t = _mean_std(t(coarse_target))
        std = torch.where(n_t > 0, torch.maximum(std, std_t), std)
    std = std.clamp(MIN_SCALE, MAX_SCALE)
    mean = torch.where(n > 0, mean, torch.full_like(mean, 0.1))
    std = torch.where(n > 0, std, torch.full_like(std, 0.05))
    return mean.float(), std.float()


@dataclass
class Features:
    """Network input of one single-pair prediction. x: (B, C, H, W); center/scale: (B,);
    base: (B, H, W) the filled prior (reflectance) the correction is added to;
    prior_valid: (B, H, W) bool."""

    x: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    base: torch.Tensor
    prior_valid: torch.Tensor


def build_features(
    prior_mean: np.ndarray | torch.Tensor,
    prior_var: np.ndarray | torch.Tensor,
    fine: np.ndarray | torch.Tensor,
    coarse: np.ndarray | torch.Tensor,
    coarse_target: np.ndarray | torch.Tensor,
    *,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Features:
    """Per-band input channels (:data:`FEATURES`) of one single-pair prediction.

    All arguments (B, H, W) reflectance (variance in reflectance^2), NaN = missing.
    ``stats``: optional ``(center, scale)`` (B,) overriding :func:`band_stats` of ``fine``
    (give the whole scene's stats when processing tiles of it). The two ``scene_*`` channels
    are statistics over the whole array given (a tile gives slightly different values).
    """
    t = lambda a: (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a, np.float32))).float()
    mu, var, f, c, ct = map(t, (prior_mean, prior_var, fine, coarse, coarse_target))
    shape = f.shape
    for name, a in (("prior_mean", mu), ("prior_var", var), ("coarse", c), ("coarse_target", ct)):
        if a.shape != shape:
            raise InputError(f"{name} has shape {tuple(a.shape)}; expected {tuple(shape)} like the fine image")
    center, scale = stats if stats is not None else band_stats(f, ct)
    cb, sb = center[:, None, None], scale[:, None, None]
    vf, vc, vt, vp = (torch.isfinite(a) for a in (f, c, ct, mu))
    vp = vp & torch.isfinite(var)
    # fill chain for the fine image and both coarse images
    f0 = torch.where(vf, f, torch.where(vc, c, torch.where(vt, ct, cb.expand(shape))))
    c0 = torch.where(vc, c, f0)
    t0 = torch.where(vt, ct, c0)
    base = torch.where(vp, mu, f0 + (t0 - c0))
    fn, cn, tn, bn = ((a - cb) / sb for a in (f0, c0, t0, base))
    dc = tn - cn
    lv = torch.where(vp & (var > 0), torch.log(var.clamp_min(1e-12) / sb**2), torch.full((), 4.0)).clamp(-14.0, 4.0)
    mf = vf.float()
    box_f = _masked_box(fn, mf, BOX)
    detail = (fn - box_f) * mf
    resid = (cn - box_f) * (vc.float())
    mdc = (vc & vt).float()
    m1 = _masked_box(dc, mdc, BOX)
    m2 = _masked_box(dc * dc, mdc, BOX)
    spread = (m2 - m1 * m1).clamp_min(0).sqrt()
    # local regression slope of ct on c
    ac, at_ = _box(cn, REG_BOX), _box(tn, REG_BOX)
    cov = _box(cn * tn, REG_BOX) - ac * at_
    vv = _box(cn * cn, REG_BOX) - ac * ac
    slope = (cov / (vv + 0.05)).clamp(-0.5, 2.5) - 1.0

    def image_std(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        n = m.sum(dim=(1, 2)).clamp_min(1.0)
        mu_ = (a * m).sum(dim=(1, 2)) / n
        sd = (((a - mu_[:, None, None]) ** 2) * m).sum(dim=(1, 2)) / n
        return sd.sqrt().clamp(0, 10)[:, None, None].expand(shape)

    scene_dc = image_std(dc, mdc)
    scene_res = image_std(resid, (vc & vf).float())
    x = torch.stack(
        [
            bn,
            fn,
            cn,
            tn,
            dc,
            bn - fn,
            lv,
            detail,
            resid,
            spread,
            slope,
            slope * detail,
            scene_dc,
            scene_res,
            4.0 * (f0.clamp(-0.1, 1.5)),
            mf,
            vc.float(),
            vt.float(),
            vp.float(),
        ],
        dim=1,
    )
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).clamp(-FEATURE_CLIP, FEATURE_CLIP)
    return Features(x=x.contiguous(), center=center, scale=scale, base=base, prior_valid=vp)


# ------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------


class _CrossBand(nn.Module):
    """Concatenate each band's features with their mean over the bands (DeepSets context)."""

    def forward(self, h: torch.Tensor, n_bands: int) -> torch.Tensor:
        nb, c, hh, ww = h.shape
        g = h.view(nb // n_bands, n_bands, c, hh, ww)
        ctx = g.mean(dim=1, keepdim=True).expand_as(g)
        return torch.cat([g, ctx], dim=2).view(nb, 2 * c, hh, ww)


class Refiner(nn.Module):
    """Residual CNN refining one band-standardised single-pair prediction (band agnostic).

    Input ``x``: (N, B, C, H, W) with C = :data:`N_FEATURES` channels per band (see
    :func:`build_features`); N independent images of B bands each (shared weights over
    bands; spectral context via the mean over bands of hidden features). Output:
    (N, B, 2, H, W): channel 0 the correction of the standardised prior, channel 1 the
    log-variance of the standardised target (aleatoric), soft-clamped to (-10, 6).

    Layout (``width`` channels, SiLU): conv3x3 -> [cross-band] conv3x3 -> dropout ->
    conv3x3 (dilation 2) -> dropout -> conv3x3 (dilation 4) -> [cross-band] conv1x1 ->
    dropout -> conv1x1 -> 2, plus a linear 1x1 path from the inputs (and their band mean)
    straight to the outputs (learns linear relations fast). With ``highpass`` = k > 1 the
    correction has its local k x k mean removed: the refiner redistributes reflectance
    within about a coarse pixel but leaves the prior's coarse-scale values (anchored by the
    coarse image) alone, which guards against sensor differences the synthetic training
    data do not cover. With ``max_correction`` = m > 0 the correction is softly bounded by m
    prior standard deviations (``m sigma tanh(delta / (m sigma))``): inputs unlike anything
    seen in training cannot move the prior far. With ``relative_variance`` the log-variance
    output is the prior's log-variance plus a learned term. Receptive field 17 x 17 pixels (+ k - 1) (plus the 33 x 33 windows of
    the input features). Dropout is channel dropout (``Dropout2d``, rate ``dropout``): random
    in training mode, off in eval mode, or given explicitly as ``masks`` (Monte Carlo
    sampling with masks shared by all tiles of an image). The last layer starts at zero: an
    untrained model returns the prior mean with log-variance ``init_logvar``.
    About 44k parameters with ``width=32``.
    """

    def __init__(
        self,
        width: int = 32,
        dropout: float = 0.1,
        init_logvar: float = -2.5,
        highpass: int = 9,
        relative_variance: bool = True,
        max_correction: float = 3.0,
    ) -> None:
        super().__init__()
        self.width, self.dropout_p, self.highpass = width, dropout, int(highpass)
        self.relative_variance = bool(relative_variance)
        self.max_correction = float(max_correction)
        if self.highpass and self.highpass % 2 == 0:
            raise InputError(f"highpass window must be odd or 0, got {highpass}")
        w = width
        self.conv1 = nn.Conv2d(N_FEATURES, w, 3, padding=1)
        self.cross = _CrossBand()
        self.conv2 = nn.Conv2d(2 * w, w, 3, padding=1)
        self.conv3 = nn.Conv2d(w, w, 3, padding=2, dilation=2)
        self.conv4 = nn.Conv2d(w, w, 3, padding=4, dilation=4)
        self.conv5 = nn.Conv2d(2 * w, w, 1)
        self.head = nn.Conv2d(w, 2, 1)
        self.skip = nn.Conv2d(2 * N_FEATURES, 2, 1, bias=False)  # linear path: input (+ band mean) -> output
        self.act = nn.SiLU()
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.skip.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([0.0, 0.0 if relative_variance else init_logvar + 2.0]))
        self.register_buffer("variance_scale", torch.tensor(1.0))

    def _drop(self, z: torch.Tensor, i: int, masks: Sequence[torch.Tensor] | None) -> torch.Tensor:
        if masks is not None:
            return z * masks[i]
        return F.dropout2d(z, self.dropout_p, training=self.training) if self.dropout_p > 0 else z

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Layers before the first dropout: (N, B, C, H, W) -> (hidden (N*B, width, H, W),
        linear part (N*B, 2, H, W), correction bound (N*B, 1, H, W) or None)."""
        n, b, c, h, w = x.shape
        x2 = x.reshape(n * b, c, h, w)
        lin = self.skip(self.cross(x2, b))
        lv = x2[:, _LOG_PRIOR_VAR : _LOG_PRIOR_VAR + 1]
        if self.relative_variance:  # the log-variance output is relative to the prior's
            lin = lin + F.pad(lv, (0, 0, 0, 0, 1, 0))
        bound = self.max_correction * torch.exp(0.5 * lv) if self.max_correction > 0 else None
        z = self.act(self.conv1(x2))
        return self.act(self.conv2(self.cross(z, b))), lin, bound

    def rest(
        self,
        zl: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
        n_bands: int,
        masks: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Layers from the first dropout on: trunk output -> (N, B, 2, H, W)."""
        z, lin, bound = zl
        z = self._drop(z, 0, masks)
        z = self.act(self.conv3(z))
        z = self._drop(z, 1, masks)
        z = self.act(self.conv4(z))
        z = self.act(self.conv5(self.cross(z, n_bands)))
        z = self._drop(z, 2, masks)
        out = self.head(z) + lin
        delta = out[:, :1]
        if self.highpass > 1:  # keep coarse-scale values of the prior: remove the local mean of the correction
            k = self.highpass
            delta = delta - F.avg_pool2d(delta, k, stride=1, padding=k // 2, count_include_pad=False)
        if bound is not None:  # |correction| < max_correction prior sigmas (soft)
            delta = bound * torch.tanh(delta / bound)
        if self.relative_variance:
            logv = 10.0 * torch.tanh((out[:, 1:] + 4.0) / 10.0) - 4.0  # soft clamp to (-14, 6)
        else:
            logv = 8.0 * torch.tanh(out[:, 1:] / 8.0) - 2.0  # soft clamp to (-10, 6)
        nb, _, h, w = out.shape
        return torch.cat([delta, logv], dim=1).view(nb // n_bands, n_bands, 2, h, w)

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        return self.rest(self.trunk(x), x.shape[1], masks)

    def sample_masks(self, n_images: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Explicit dropout masks (3 tensors (n_images, width, 1, 1), scaled by 1 / (1 - p))."""
        keep = 1.0 - self.dropout_p
        return [
            torch.bernoulli(torch.full((n_images, self.width, 1, 1), keep), generator=generator) / keep
            for _ in range(3)
        ]

    @property
    def radius(self) -> int:
        """Receptive radius (pixels) of the network on its input features."""
        return RECEPTIVE_RADIUS + (self.highpass // 2 if self.highpass > 1 else 0)

    def config(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "dropout": self.dropout_p,
            "highpass": self.highpass,
            "relative_variance": self.relative_variance,
            "max_correction": self.max_correction,
            "arch_version": ARCH_VERSION,
            "features": list(FEATURES),
        }

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


RECEPTIVE_RADIUS = 1 + 1 + 2 + 4  # conv1, conv2, conv3 (d2), conv4 (d4)


def halo(highpass: int = 9) -> int:
    """Neighbourhood radius (fine pixels) one refined pixel depends on: network receptive field
    (with its ``highpass`` window) plus the 33x33 feature windows (use it as the tile halo).
    Band statistics are per image: pass the scene's ``stats`` to :func:`refine` when tiling
    to avoid seams."""
    return RECEPTIVE_RADIUS + highpass // 2 + REG_BOX // 2 + BOX // 2


FORWARD_TILE = 128
"""Tile side (pixels, plus the receptive radius) of the refiner's forward passes. Results do not
depend on it; 128 keeps each activation under glibc's 32 MB mmap limit so memory is reused instead
of being mapped and page-faulted afresh (1pair-early hybrid: 16.0 s wall with 512, 10.4 s with 128,
identical output)."""


def _forward_tiled(
    model: Refiner, x: torch.Tensor, tile: int, masks: Sequence[Sequence[torch.Tensor] | None] = (None,)
) -> list[torch.Tensor]:
    """``model(x[None], masks=m)[0]`` for each ``m`` in ``masks``, computed on overlapping tiles
    (halo = receptive radius, so equal to an untiled run) with the trunk shared by all masks.
    x (B, C, H, W) -> list of (B, 2, H, W)."""
    b, _, h, w = x.shape
    r = model.radius + 1
    outs = [torch.empty((b, 2, h, w), dtype=x.dtype, device=x.device) for _ in masks]
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(y0 - r, 0), max(x0 - r, 0)
            yb, xb = min(y1 + r, h), min(x1 + r, w)
            z = model.trunk(x[None, :, :, ya:yb, xa:xb])
            for out, m in zip(outs, masks):
                o = model.rest(z, b, m)[0]
                out[:, :, y0:y1, x0:x1] = o[:, :, y0 - ya : y0 - ya + (y1 - y0), x0 - xa : x0 - xa + (x1 - x0)]
    return outs


def _predict_single(
    model: Refiner, feats: Features, *, mc_samples: int, seed: int, tile: int = FORWARD_TILE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined (mean, variance) in reflectance units (B, H, W) of one single-pair prediction."""
    parts = _predict_parts(model, feats, mc_samples=mc_samples, seed=seed, tile=tile)
    return parts["mean"], parts["aleatoric"] + parts["epistemic"]


def _predict_parts(
    model: Refiner, feats: Features, *, mc_samples: int, seed: int, tile: int = FORWARD_TILE
) -> dict[str, torch.Tensor]:
    """Refined mean and its aleatoric / epistemic variances (reflectance units, (B, H, W)).

    ``mc_samples`` > 1: Monte Carlo dropout with masks drawn from ``seed``; the mean is the
    mean of the sample means, aleatoric the mean of the sample variances, epistemic the
    (unbiased) variance of the sample means. ``mc_samples`` <= 1: dropout off,
    deterministic, epistemic 0. Both variances include the model's variance scale.
    """
    x = feats.x
    n = max(int(mc_samples), 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if n > 1:
                gen = torch.Generator().manual_seed(int(seed))
                masks = [[m.to(x.device) for m in model.sample_masks(x.shape[0], gen)] for _ in range(n)]
            else:
                masks = [None]
            outs = _forward_tiled(model, x, tile, masks)
    finally:
        model.train(was_training)
    m = torch.stack([o[:, 0] for o in outs])
    mean_n = m.mean(0)
    alea_n = torch.stack([torch.exp(o[:, 1]) for o in outs]).mean(0)
    epi_n = m.var(0, unbiased=True) if n > 1 else torch.zeros_like(mean_n)
    s = feats.scale[:, None, None].to(x.device)
    k = (s * s) * model.variance_scale.to(alea_n)
    nan = torch.full((), float("nan"), device=x.device)
    keep = lambda a: torch.where(feats.prior_valid, a, nan)
    return {"mean": keep(feats.base + s * mean_n), "aleatoric": keep(k * alea_n), "epistemic": keep(k * epi_n)}


def mc_predict(
    model: Refiner,
    prior_mean: np.ndarray,
    prior_var: np.ndarray,
    fine: np.ndarray,
    coarse: np.ndarray,
    coarse_target: np.ndarray,
    *,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """One single-pair refinement with its uncertainty parts: ``{"mean", "aleatoric", "epistemic"}``.

    All inputs (B, H, W) (one pair). Outputs (B, H, W) float32: the refined mean, the mean
    predicted (aleatoric) variance and the variance of the Monte Carlo dropout means
    (epistemic; 0 with ``mc_samples=1``). The total variance is their sum.
    """
    feats = build_features(prior_mean, prior_var, fine, coarse, coarse_target)
    feats = Features(*(a.to(device) for a in (feats.x, feats.center, feats.scale, feats.base, feats.prior_valid)))
    parts = _predict_parts(model.to(device), feats, mc_samples=mc_samples, seed=seed)
    return {k: v.cpu().numpy().astype(np.float32) for k, v in parts.items()}


# ------------------------------------------------------------------------------------------
# Inference
# ------------------------------------------------------------------------------------------


def _check_shapes(prior_mean: np.ndarray, prior_var: np.ndarray, fine: np.ndarray, coarse: np.ndarray, ct: np.ndarray) -> None:
    if fine.ndim != 4 or coarse.shape != fine.shape:
        raise InputError(f"fine_pair {fine.shape} and coarse_pair {coarse.shape} must both be (P, B, H, W)")
    if ct.shape != fine.shape[1:]:
        raise InputError(f"coarse_target has shape {ct.shape}; expected (B, H, W) = {fine.shape[1:]}")
    if prior_mean.shape not in (fine.shape, fine.shape[1:]) or prior_var.shape != prior_mean.shape:
        raise InputError(
            f"prior_mean {prior_mean.shape} / prior_var {prior_var.shape} must both be (B, H, W) = {fine.shape[1:]} "
            f"or one prior per pair (P, B, H, W) = {fine.shape}"
        )


def refine(
    prior_mean: np.ndarray,
    prior_var: np.ndarray,
    fine_pair: np.ndarray,
    coarse_pair: np.ndarray,
    coarse_target: np.ndarray,
    *,
    model: Refiner | str | Path | None = None,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    correlation: float = 0.4,
    stats: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    tile: int = FORWARD_TILE,
    prior: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Refine a prior prediction: returns ``(mean, variance)`` (B, H, W) float32 numpy.

    ``prior_mean``, ``prior_var``: (P, B, H, W) one single-pair prior per pair (preferred),
    or (B, H, W) one prior (single pair, or a multi-pair prior such as ESTARFM).
    ``fine_pair``, ``coarse_pair``: (P, B, H, W) the pairs (coarse on the fine grid);
    ``coarse_target``: (B, H, W). Reflectance 0..1, NaN = missing.
    ``model``: a :class:`Refiner`, a checkpoint path, or None for the shipped weights.
    ``mc_samples``: Monte Carlo dropout passes; 1 = deterministic, dropout off (aleatoric
    variance only). ``seed`` seeds the dropout masks. ``correlation``: assumed error
    correlation of the per-pair refined predictions when P > 1 (see
    :func:`stfuse.fusion.uncertainty.combine_inverse_variance`). ``stats``: optional per-pair
    ``(center, scale)`` arrays (B,) for tiled processing (default: :func:`band_stats` of each
    pair's fine image and the coarse target).
    ``prior``: name of the prior that made ``prior_mean`` (e.g. ``"fitfc"``): when the model
    has a variance scale for that prior (``model.meta["variance_scales"]``, fitted per prior
    on synthetic validation scenes) it replaces the model's overall variance scale.

    With P > 1 and per-pair priors: each is refined with its own pair, then combined by inverse
    variance. With P > 1 and one (B, H, W) prior: refined once with each pair as context and
    averaged as an equal-weight mixture (mean of means; mean of variances plus the variance
    of the means).
    """
    mdl = load_model(model) if not isinstance(model, Refiner) else model
    mdl = mdl.to(device)
    factor = 1.0
    scales = getattr(mdl, "meta", {}).get("variance_scales") or {}
    if prior is not None and prior in scales and float(mdl.variance_scale) > 0:
        factor = float(scales[prior]) / float(mdl.variance_scale)
    pm = np.asarray(prior_mean, np.float32)
    pv = np.asarray(prior_var, np.float32)
    f = np.asarray(fine_pair, np.float32)
    c = np.asarray(coarse_pair, np.float32)
    ct = np.asarray(coarse_target, np.float32)
    _check_shapes(pm, pv, f, c, ct)
    n_pairs = f.shape[0]
    per_pair = pm.ndim == 4
    means, variances = [], []
    for k in range(n_pairs):
        st = None
        if stats is not None:
            st = (torch.as_tensor(np.asarray(stats[k][0], np.float32)), torch.as_tensor(np.asarray(stats[k][1], np.float32)))
        feats = build_features(pm[k] if per_pair else pm, pv[k] if per_pair else pv, f[k], c[k], ct, stats=st)
        feats = Features(*(a.to(device) for a in (feats.x, feats.center, feats.scale, feats.base, feats.prior_valid)))
        mean, var = _predict_single(mdl, feats, mc_samples=mc_samples, seed=seed + 7919 * k, tile=tile)
        means.append(mean.cpu().numpy())
        variances.append(var.cpu().numpy() * np.float32(factor))
    if n_pairs == 1:
        return means[0].astype(np.float32), variances[0].astype(np.float32)
    m, v = np.stack(means), np.stack(variances)
    if per_pair:
        return combine_inverse_variance(m, v, correlation=correlation)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(m, axis=0)
        var = np.nanmean(v, axis=0) + np.nanvar(m, axis=0)
    return mean.astype(np.float32), var.astype(np.float32)


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


def save_checkpoint(model: Refiner, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (weights, architecture config, ``meta``) to ``path`` (a torch zip file).

    ``meta`` keys used on loading: ``bands`` (list of band names the weights are trained
    for, or None), ``band_agnostic`` (bool, default True: any bands accepted). Also
    recorded: the normalisation scheme and the feature list. Writes a JSON copy of the
    metadata beside it (``path`` with suffix ``.json``). Bytes depend only on the weights and
    ``meta`` (no timestamps), so equal trainings give identical files.
    """
    path = Path(path)
    meta = dict(meta or {})
    meta.setdefault("band_agnostic", True)
    meta.setdefault("bands", None)
    meta["normalisation"] = {
        "scheme": "per band: (x - mean(fine_b)) / clamp(max(std(fine_b), std(coarse_target_b)))",
        "feature_clip": FEATURE_CLIP,
        "min_scale": MIN_SCALE,
        "max_scale": MAX_SCALE,
        "box": BOX,
        "reg_box": REG_BOX,
    }
    meta["config"] = model.config()
    meta["variance_scale"] = float(model.variance_scale)
    meta["n_params"] = model.n_params
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta_json": json.dumps(meta, sort_keys=True)}, path)
    meta_out = dict(meta)
    meta_out["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(meta_out, indent=1, sort_keys=True) + "\n")
    return path


def load_checkpoint(path: str | Path, *, bands: Sequence[str] | None = None) -> Refiner:
    """Load a :class:`Refiner` saved by :func:`save_checkpoint`; metadata in ``model.meta``.

    ``bands``: the band names of the data the model will see. A band-specific checkpoint
    (``meta["band_agnostic"]`` false) whose bands differ is refused with
    :class:`~stfuse.errors.CheckpointError`; band-agnostic checkpoints accept any bands.
    A checkpoint of another architecture version or feature list is refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"refiner checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(blob["meta_json"])
        state = blob["state_dict"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(f"{path} is not a stfuse refiner checkpoint ({exc})") from exc
    cfg = meta.get("config", {})
    if cfg.get("arch_version") != ARCH_VERSION or cfg.get("features") != list(FEATURES):
        raise CheckpointError(
            f"{path} was made for refiner architecture {cfg.get('arch_version')} with features "
            f"{cfg.get('features')}; this stfuse expects architecture {ARCH_VERSION} with {list(FEATURES)}. "
            "Retrain it (stfuse.fusion.refine.train_synthetic) or use the shipped weights."
        )
    if bands is not None and not meta.get("band_agnostic", True):
        expected = list(meta.get("bands") or [])
        found = [str(b) for b in bands]
        if expected != found:
            raise CheckpointError(
                f"{path} is band-specific: trained for bands {expected} but the data has bands {found}. "
                "Use a checkpoint trained on these bands, or the band-agnostic shipped weights."
            )
    model = Refiner(
        width=int(cfg.get("width", 32)),
        dropout=float(cfg.get("dropout", 0.1)),
        highpass=int(cfg.get("highpass", 0)),
        relative_variance=bool(cfg.get("relative_variance", False)),
        max_correction=float(cfg.get("max_correction", 0.0)),
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the refiner architecture ({exc})") from exc
    model.meta = meta  # type: ignore[attr-defined]
    model.eval()
    return model


_DEFAULT_CACHE: dict[str, Refiner] = {}


def load_model(model: Refiner | str | Path | None = None, *, bands: Sequence[str] | None = None) -> Refiner:
    """A :class:`Refiner`: ``model`` itself, the checkpoint at path ``model``, or (None) the
    shipped weights ``stfuse/weights/refiner.pt`` (a fresh copy each call)."""
    if isinstance(model, Refiner):
        return model
    if model is None:
        key = str(DEFAULT_WEIGHTS)
        if key not in _DEFAULT_CACHE:
            if not DEFAULT_WEIGHTS.is_file():
                raise CheckpointError(
                    f"the shipped refiner weights {DEFAULT_WEIGHTS} are missing; regenerate them with "
                    "`make weights` (stfuse.fusion.refine.make_shipped_weights)"
                )
            _DEFAULT_CACHE[key] = load_checkpoint(DEFAULT_WEIGHTS, bands=bands)
        m = copy.deepcopy(_DEFAULT_CACHE[key])
        m.meta = copy.deepcopy(getattr(_DEFAULT_CACHE[key], "meta", {}))  # type: ignore[attr-defined]
        return m
    return load_checkpoint(model, bands=bands)
