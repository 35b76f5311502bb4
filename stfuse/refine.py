"""Learned refinement of a physics prior: a small residual CNN with a heteroscedastic head.

A prior (STARFM-family, :mod:`stfuse.prior`) predicts the fine image of a target day from
a pair (fine + coarse image of one day) and the coarse image of the target day. The
:class:`Refiner` looks at the prior's prediction together with the inputs and returns

- a **correction** added to the prior's mean, high-passed (its local 9 x 9 mean removed) so
  that the refiner redistributes reflectance within about a coarse pixel but leaves the
  prior's coarse-scale values, which the coarse image anchors, alone; and
- a per-pixel **log-variance** relative to the prior's variance (aleatoric uncertainty,
  trained with a Gaussian NLL),

with channel dropout (``Dropout2d``) usable at inference for Monte Carlo sampling (epistemic
uncertainty)::

    mean     = (1/N) sum_n mu_n                      (N = mc_samples forward passes)
    variance = s * [ (1/N) sum_n exp(logv_n)  +  Var_n(mu_n) ]
                     ^ aleatoric               ^ epistemic
    (s: the model's post-hoc variance scale, see stfuse.uncertainty.fit_variance_scale)

**Band agnostic.** The network sees one band at a time with shared weights: all inputs of
band ``b`` are standardised by the mean ``m_b`` of that band in the pair's fine image and
the larger of the standard deviations of the fine image and the target coarse image
(``s_b`` clamped to [0.005, 0.5]; channels clipped to +-10), outputs are de-standardised
the same way. Spectral context enters through a DeepSets-style mean over bands of hidden
features, so one set of weights serves 1..N bands in any order (3-band green/red/NIR
benchmarks and 6-band scenes alike). The per-band input channels (:data:`FEATURES`):
prior mean, pair fine, pair coarse, target coarse, coarse change, prior change, log prior
variance, fine detail (fine - 17x17 box mean), coarse-vs-fine residual at the pair date,
local spread of the coarse change, local regression slope of target coarse on pair coarse
(33x33, minus 1) and that slope times the fine detail, the image-wide spread of the coarse
change and of the coarse-vs-fine residual, absolute reflectance, and four validity masks.
NaN inputs are filled (prior -> fine + coarse change -> fine -> coarse target -> band mean)
and flagged in the masks; outputs are NaN where the prior is NaN.

**The hybrid** (:func:`predict_hybrid`, :func:`hybrid_arrays`; what ``stfuse predict --refine``
runs). The prior is an *ensemble* (:data:`ENSEMBLE`: Fit-FC and FSDAF) run once per pair; every
single-pair member prediction is refined, and the P x M members are combined with per-pixel
weights from the refined variances (the refiner judges which prior and which pair to trust
where). The mean keeps the priors' values (:data:`CORRECTION_WEIGHT` = 0: the correction of the
shipped weights made held-out simulated days and the real benchmark tasks worse); the variance
is that of the weighted mixture of the members with their prior variances
(``sum_k w_k (v_k + (mu_k - mu)^2)``), times a post-hoc scale per number of pairs fitted on
held-out simulated days (:func:`fit_hybrid_scales`, stored with the shipped weights). :func:`hybrid_fn` wraps it as a picklable tile function for
:func:`stfuse.tiling.predict_tiled` (catalog mode), with :func:`adapt_model` to adapt a model
once per scene.

**Pairs (refine).** The model refines *single-pair* predictions. With P pairs,
:func:`refine` takes one prior per pair (``prior_mean`` of shape (P, B, H, W)), refines each
with its own pair and combines the P refined Gaussians by inverse variance
(:func:`stfuse.uncertainty.combine_inverse_variance`, with an assumed error correlation,
default 0.4, the median over priors on synthetic scenes, because all members share the
target's coarse image). A single multi-pair prior (B, H, W) with P > 1 pairs is refined
once per pair and the results are averaged as an equal-weight mixture.

**Training.**

- :func:`train_synthetic` pretrains on scenes of :mod:`stfuse.synth` (random land cover,
  phenology, abrupt changes, clouds) with extra MODIS-vs-Landsat effects
  (:func:`_perturb_coarse`: biases, gains, persistent and spatially correlated coarse
  mismatch, noise), random band subsets, and priors drawn from :data:`SYNTHETIC_PRIORS`
  (STARFM, Fit-FC, FSDAF, additive) so that one set of weights serves every prior; the
  variance scale is fitted on validation scenes, overall and per prior. This makes the
  shipped weights ``stfuse/weights/refiner.pt`` (:func:`make_shipped_weights`,
  ``python -m stfuse.refine``).
- :func:`train_self_supervised` adapts a model to one scene using only its pairs: with
  pairs at dates A and B the prior predicts B from A (and A from B) and the refiner learns
  from the fine image of B (of A); random 48x48 patches with flips/rotations, early stopping
  on held-out tiles (the initial model counts, so it never ends worse there), and a variance
  scale fitted on the held-out tiles (one per member prior when given several). With one pair there is nothing to learn across time:
  the model is returned unchanged (the shipped weights).
- :func:`train_supervised` trains on explicit (prior, inputs, target) examples.
- :func:`predict_hybrid` does it all for a scene: optional self-supervision (P >= 2, with
  every member prior), then the ensemble hybrid above.
- :func:`make_shipped_weights` = :func:`train_synthetic` + :func:`add_hybrid_calibration`.

Every trainer is bit-for-bit reproducible on CPU for a given seed (deterministic algorithms,
a fixed intra-op thread count :data:`THREADS`, seeded generators).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, InputError

log = logging.getLogger("stfuse.refine")

try:  # torch is a hard dependency of stfuse, but keep `import stfuse.refine` cheap to fail clearly
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as exc:  # pragma: no cover
    raise ImportError("stfuse.refine needs torch (pip install torch)") from exc

PriorFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""A single-pair prior: ``prior_fn(fine (1,B,H,W), coarse (1,B,H,W), coarse_target (B,H,W)) -> (mean, var)``."""

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
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "refiner.pt"
THREADS = 1
"""Torch intra-op threads used by the trainers (bit-for-bit reproducibility needs a fixed count)."""


# ------------------------------------------------------------------------------------------
# Stand-in prior
# ------------------------------------------------------------------------------------------


def additive_prior(
    fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray, *, window: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """The simplest prior: ``fine + (coarse_target - coarse)`` per pair (a stand-in for STARFM).

    ``fine``, ``coarse``: (P, B, H, W) reflectance, NaN = missing; ``coarse_target`` (B, H, W).
    Variance per pair: the local (``window`` x ``window``) variance of ``fine - coarse`` (how
    much fine detail the coarse change cannot describe) plus ``0.002^2``. With P > 1 the
    pairs are combined by inverse variance. Returns float32 ``(mean, variance)`` (B, H, W).
    """
    from scipy.ndimage import uniform_filter

    from .uncertainty import combine_inverse_variance

    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    ct = np.asarray(coarse_target, np.float32)
    if fine.ndim != 4 or fine.shape != coarse.shape or ct.shape != fine.shape[1:]:
        raise InputError(
            f"additive_prior: fine {fine.shape} and coarse {coarse.shape} must be (P, B, H, W) and "
            f"coarse_target {ct.shape} (B, H, W)"
        )
    means, variances = [], []
    for k in range(fine.shape[0]):
        mean = fine[k] + (ct - coarse[k])
        r = fine[k] - coarse[k]
        ok = np.isfinite(r)
        r0 = np.where(ok, r, 0.0).astype(np.float64)
        n = uniform_filter(ok.astype(np.float64), (1, window, window), mode="nearest")
        m1 = uniform_filter(r0, (1, window, window), mode="nearest")
        m2 = uniform_filter(r0 * r0, (1, window, window), mode="nearest")
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.maximum(m2 / n - (m1 / n) ** 2, 0.0) + 0.002**2
        means.append(mean)
        variances.append(np.where(np.isfinite(mean), var, np.nan))
    if len(means) == 1:
        return means[0].astype(np.float32), variances[0].astype(np.float32)
    return combine_inverse_variance(np.stack(means), np.stack(variances))


def resolve_prior(prior_fn: PriorFn | str | None, **options: Any) -> PriorFn:
    """A callable single-pair prior from a callable, a method name of :mod:`stfuse.prior`
    (``"starfm"``, ``"fitfc"``, ...) or ``"additive"`` / None (:func:`additive_prior`)."""
    if prior_fn is None or prior_fn == "additive":
        return lambda f, c, t: additive_prior(f, c, t, **options)
    if isinstance(prior_fn, str):
        from . import prior as _prior

        method = prior_fn
        _prior.method_function(method)  # raises InputError for unknown names
        return lambda f, c, t: _prior.predict(f, c, t, method=method, **options)
    if callable(prior_fn):
        return prior_fn
    raise InputError(f"prior_fn must be a callable, a method name or 'additive'; got {prior_fn!r}")


ENSEMBLE: tuple[str, ...] = ("fitfc", "fsdaf")
"""Members of the ``"ensemble"`` prior of the hybrid: each pair is predicted by every member,
each prediction refined, and all are combined by inverse variance (the two priors with the
lowest RMSE on the real benchmark tasks; their errors are partly independent)."""


CORRECTION_WEIGHT = 0.0
"""Default weight of the refiner's mean correction in the hybrid (0 = keep the prior means,
1 = full correction). Measured on the real benchmark tasks (docs/methods.md): the shipped
weights' correction does not carry over from simulated to real scenes (0.5 and 1 raised the
RMSE of the two-pair ensemble from 0.00634 to 0.00647 / 0.00666), while the refiner's
per-pixel variance is what weights the ensemble members and pairs; so the default keeps the
means and uses the refiner for the uncertainty. A documented choice among {0, 0.5, 1}."""


def resolve_members(prior_fn: Any, **options: Any) -> list[tuple[str, PriorFn]]:
    """``[(name, single-pair prior), ...]``: ``"ensemble"`` / ``"auto"`` -> :data:`ENSEMBLE`,
    a list/tuple -> each of its entries, anything else -> itself (see :func:`resolve_prior`)."""
    if isinstance(prior_fn, str) and prior_fn in ("ensemble", "auto"):
        prior_fn = ENSEMBLE
    if isinstance(prior_fn, (list, tuple)):
        if not prior_fn:
            raise InputError("the list of priors is empty; give at least one prior (e.g. 'fitfc')")
        return [(_prior_name(p), resolve_prior(p, **options)) for p in prior_fn]
    return [(_prior_name(prior_fn), resolve_prior(prior_fn, **options))]


def _prior_name(prior_fn: Any) -> str:
    if prior_fn is None:
        return "additive"
    if isinstance(prior_fn, str):
        return prior_fn
    if isinstance(prior_fn, (list, tuple)):
        return "+".join(_prior_name(p) for p in prior_fn)
    keywords = getattr(prior_fn, "keywords", None)  # functools.partial(stfuse.prior.predict, method=...)
    if isinstance(keywords, dict) and isinstance(keywords.get("method"), str):
        return keywords["method"]
    return getattr(prior_fn, "__name__", type(prior_fn).__name__)


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
    :func:`stfuse.uncertainty.combine_inverse_variance`). ``stats``: optional per-pair
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
    from .uncertainty import combine_inverse_variance

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
            "Retrain it (stfuse.refine.train_synthetic) or use the shipped weights."
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
                    "`python -m stfuse.refine` (stfuse.refine.make_shipped_weights)"
                )
            _DEFAULT_CACHE[key] = load_checkpoint(DEFAULT_WEIGHTS, bands=bands)
        m = copy.deepcopy(_DEFAULT_CACHE[key])
        m.meta = copy.deepcopy(getattr(_DEFAULT_CACHE[key], "meta", {}))  # type: ignore[attr-defined]
        return m
    return load_checkpoint(model, bands=bands)


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
) -> dict[str, Any]:
    """Adam + cosine schedule on random patches; keeps the best state by validation MSE.

    Batches group samples of equal band count. Returns a history dict.
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
    running = 0.0
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
        running += float(loss.detach())
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
                    break
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


def _fit_scale_on(model: Refiner, samples: Sequence[_Sample], masks: Sequence[torch.Tensor | None], mc_samples: int, seed: int) -> float:
    """Variance scale making the refined predictions of ``samples`` calibrated on ``masks``."""
    from .uncertainty import fit_variance_scale

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
) -> Refiner:
    """Adapt a refiner to one scene using only its pairs (never the target's fine image).

    ``fine``, ``coarse``: (P, B, H, W) the pairs (coarse on the fine grid), reflectance,
    NaN = missing. ``prior_fn``: single-pair prior (callable, :mod:`stfuse.prior` method
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
    ``bands`` are given).
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
    with deterministic(seed, threads):
        samples: list[_Sample] = []
        for i in range(fine.shape[0]):
            for j in range(fine.shape[0]):
                if i == j:
                    continue
                for name, prior in members:
                    pm, pv = prior(fine[i : i + 1], coarse[i : i + 1], coarse[j])
                    samples.append(_make_sample(pm, pv, fine[i], coarse[i], coarse[j], fine[j], allowed=~held))
                    samples[-1].prior = name
        masks = [torch.as_tensor(held)] * len(samples)
        model = model.to(device)
        hist = _train_loop(
            model, samples, steps=steps, batch=batch, patch=patch, lr=lr, seed=seed, val=(samples, masks),
            eval_every=eval_every, patience=patience, time_limit=time_limit,
        )
        per_prior: dict[str, float] = {}
        if calibrate and len(members) == 1:
            model.variance_scale.fill_(_fit_scale_on(model, samples, masks, mc_samples, seed))
        elif calibrate:  # one scale per member prior on the held-out tiles; overall: their geometric mean
            for name, _ in members:
                sub = [k for k, smp in enumerate(samples) if smp.prior == name]
                per_prior[name] = _fit_scale_on(model, [samples[k] for k in sub], [masks[k] for k in sub], mc_samples, seed)
            model.variance_scale.fill_(float(np.exp(np.mean(np.log(list(per_prior.values()))))))
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


def _simulate_raw(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray, int]:
    """One random :mod:`stfuse.synth` scene: Landsat-like fine images (N, 6, H, W) at its Landsat
    dates (NaN under clouds), the noise-free MODIS-like PSF aggregates (N, 6, h, w) of those
    dates, and the coarse factor. Scene parameters (season, field size, PSF, misregistration,
    abrupt change, clouds, Landsat noise) are drawn from ``seed``."""
    from .synth import SceneSpec, simulate

    rng = np.random.default_rng([seed, 1])
    factor = int(rng.choice([12, 16, 16, 16, 20]))
    size = (size // factor) * factor
    start_doy = int(rng.integers(60, 250))
    start = (np.datetime64("2023-01-01") + np.timedelta64(start_doy, "D")).astype(str)
    spec = SceneSpec(
        height=size,
        width=size,
        n_days=72,
        start=str(start),
        seed=int(rng.integers(0, 2**31 - 1)),
        landsat_revisit=16,
        landsat_offset=int(rng.integers(0, 16)),
        coarse_factor=factor,
        cloud_fraction=float(rng.choice([0.0, 0.0, 0.03, 0.08])),
        misregistration_px=float(rng.uniform(-0.4, 0.4) * factor),
        change_day=int(rng.integers(10, 70)) if rng.uniform() < 0.5 else None,
        change_kind=str(rng.choice(["flood", "harvest"])),  # type: ignore[arg-type]
        psf_sigma=float(rng.uniform(0.3, 0.8)),
        field_size_px=float(rng.uniform(8, 45)),
        landsat_noise=float(rng.uniform(0.002, 0.006)),
        coarse_noise=0.0,
        coarse_bias=0.0,
        coarse_gap_days=0.0,
        edge_fill=False,
    )
    scene = simulate(spec)
    days = list(scene.landsat_days)
    fine = np.stack([scene.landsat_reflectance(k) for k in range(len(days))]).astype(np.float32)
    return fine, scene.coarse[days].astype(np.float32), factor


def _perturb_coarse(coarse_native: np.ndarray, factor: int, seed: int) -> np.ndarray:
    """MODIS-vs-Landsat sensor effects on clean coarse images (N, B, h, w), then bilinear
    resampling to the fine grid (N, B, h*f, w*f). Per scene, with random strengths: a
    persistent per-band bias, per-date per-band bias and gain, a persistent relative mismatch
    per coarse pixel (geometry/BRDF), per-date relative noise that is spatially correlated
    over 0.5-2.5 coarse pixels (atmosphere, view angle), and white noise per coarse pixel;
    a quarter of the scenes are resampled by nearest neighbour (blocky) instead of bilinear."""
    from scipy.ndimage import gaussian_filter

    from .synth import upsample_bilinear

    rng = np.random.default_rng([seed, 3])
    c = coarse_native.astype(np.float64)
    n, b = c.shape[:2]
    u = rng.uniform
    bias = rng.normal(0, u(0, 0.008), size=(1, b, 1, 1)) + rng.normal(0, u(0.0005, 0.004), size=(n, b, 1, 1))
    gain = 1.0 + rng.normal(0, u(0, 0.015), size=(n, b, 1, 1))
    persist = rng.normal(0, u(0, 0.06), size=(1, b) + c.shape[2:])
    corr = gaussian_filter(rng.standard_normal(c.shape), (0, 0, *(2 * [u(0.5, 2.5)])), mode="wrap")
    corr /= corr.std(axis=(2, 3), keepdims=True) + 1e-12
    rel = corr * u(0.0, 0.06) + rng.normal(0, u(0.0, 0.03), size=c.shape)
    white = rng.normal(0, u(0.001, 0.005), size=c.shape)
    c = c * gain * (1.0 + persist + rel) + bias + white
    if u() < 0.25:  # some users resample MODIS by nearest neighbour: blocky coarse images
        return np.repeat(np.repeat(c.astype(np.float32), factor, axis=-2), factor, axis=-1)
    return upsample_bilinear(c.astype(np.float32), factor)


def _synthetic_scene(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Fine (N, 6, H, W) and perturbed coarse-on-fine (N, 6, H, W) images of one synthetic scene."""
    fine, coarse_native, factor = _simulate_raw(seed, size)
    return fine, _perturb_coarse(coarse_native, factor, seed)


def _synthetic_samples(
    seeds: Sequence[int], priors: Sequence[PriorFn], size: int, max_gap_dates: int = 5, names: Sequence[str] = ()
) -> list[_Sample]:
    """Up to 4 single-pair examples per scene, each with a prior drawn from ``priors``."""
    samples = []
    for sd in seeds:
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
) -> Refiner:
    """Pretrain a refiner on simulated scenes (:mod:`stfuse.synth`), reproducibly on CPU.

    ``n_scenes`` training scenes of ``size`` x ``size`` px (scene seeds derived from ``seed``;
    default 256: trained on 128 px scenes, the two-pair hybrid was 3-4 % worse on held-out
    384 px simulated days, docs/methods.md), up to 4 single-pair examples each (pair date i -> target date j, |i - j| <= 5
    Landsat revisits, prior drawn from ``prior_fn``: one prior or a sequence, default :data:`SYNTHETIC_PRIORS`), plus ``n_val_scenes`` validation scenes;
    AdamW with cosine decay for ``steps`` steps of ``batch`` patches of ``patch`` px with random
    flips/rotations and random band subsets. The best state by validation MSE is kept, and its
    variance scale fitted on the validation scenes. Bit-for-bit reproducible on CPU for equal
    arguments (deterministic algorithms, ``threads`` intra-op threads).
    """
    t0 = time.perf_counter()
    names = list(prior_fn) if isinstance(prior_fn, (list, tuple)) else [prior_fn]
    priors = [resolve_prior(p) for p in names]
    with deterministic(seed, threads):
        ss = np.random.SeedSequence(seed)
        scene_seeds = [int(s.generate_state(1)[0]) for s in ss.spawn(n_scenes + n_val_scenes)]
        labels = [_prior_name(p) for p in names]
        train = _synthetic_samples(scene_seeds[:n_scenes], priors, size, names=labels)
        val = _synthetic_samples(scene_seeds[n_scenes:], priors, size, names=labels)
        log.info("synthetic: %d train / %d val examples in %.1fs", len(train), len(val), time.perf_counter() - t0)
        model = Refiner(width=width, dropout=dropout, highpass=highpass)
        hist = _train_loop(
            model, train, steps=steps, batch=batch, patch=patch, lr=lr, seed=seed, val=(val, [None] * len(val)),
            eval_every=eval_every, patience=patience, band_subsets=True, log_every=50,
        )
        model.variance_scale.fill_(_fit_scale_on(model, val, [None] * len(val), mc_samples, seed))
        per_prior = {}
        for name in sorted(set(labels)):
            sub = [v for v in val if v.prior == name]
            if sub:
                per_prior[name] = _fit_scale_on(model, sub, [None] * len(sub), mc_samples, seed)
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


def simulated_days(seeds: Sequence[int], size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Held-out synthetic days, green/red/NIR: per scene one single-pair example (pair i ->
    target j, 1-3 revisits apart) and one two-pair example (pairs i < j < k around target j),
    as ``(fine (P,3,H,W), coarse (P,3,H,W), coarse_target (3,H,W), truth (3,H,W))``."""
    out = []
    for sd in seeds:
        fine, coarse = _synthetic_scene(sd, size)
        fine, coarse = fine[:, 1:4], coarse[:, 1:4]
        rng = np.random.default_rng([sd, 5])
        n = fine.shape[0]
        clear = [i for i in range(n) if np.isnan(fine[i]).mean() < 0.2]
        if len(clear) < 3:
            continue
        j = int(rng.choice(clear[1:-1]))
        before = [i for i in clear if i < j][-3:]
        after = [i for i in clear if i > j][:3]
        i, k = int(rng.choice(before)), int(rng.choice(after))
        single = int(rng.choice([i, k]))
        out.append((fine[[single]], coarse[[single]], coarse[j], fine[j]))
        out.append((fine[[i, k]], coarse[[i, k]], coarse[j], fine[j]))
    return out


def calibration_days(n_scenes: int, seed: int, size: int) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """The held-out simulated days of the variance calibrations (the hybrid's and the priors'):
    :func:`simulated_days` of ``SeedSequence([seed, 77]).spawn(n_scenes)`` (disjoint from the
    training scenes of seed 0), ``{"fit": first half, "check": second half}``."""
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence([seed, 77]).spawn(n_scenes)]
    half = len(seeds) // 2
    return {"fit": simulated_days(seeds[:half], size), "check": simulated_days(seeds[half:], size)}


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
) -> dict[str, Any]:
    """Fit the hybrid's post-hoc variance scales on held-out simulated days.

    ``n_scenes`` synthetic scenes (seeds from ``SeedSequence(seed)``, disjoint from the
    training scenes of seed 0 and each other) give single-pair and two-pair days
    (:func:`simulated_days`); the hybrid (:func:`hybrid_arrays`, scale 1) predicts each; the
    scale for 1 and for 2 pairs is fitted (:func:`stfuse.uncertainty.fit_variance_scale`,
    ``method``: by default the compromise between the 68 % and 95 % levels) on
    the first half of the scenes and the coverage with it reported on the second half.
    Returns ``{"scales": {"1": s1, "2": s2}, "check": {"1": {...}, "2": {...}}}`` (check:
    :func:`stfuse.uncertainty.calibration_report`, ``cov68_lo/hi`` and ``cov95_lo/hi``: the
    90 % bootstrap interval over check days (:func:`stfuse.uncertainty.coverage_interval`), the mean RMSE over the check days of the
    hybrid, of each member prior alone (``rmse_<name>``) and the best of those).

    The scale that follows the scene (two pairs): on each two-pair day the scale its own pairs
    ask for (:func:`scene_variance_scale`, the pairs predicting each other) is computed too;
    ``scene_factor`` (scale = factor x scene scale) is fitted on the first half and checked on
    the second (``check_scene``; days without a scene scale use the fixed one).
    """
    from .uncertainty import calibration_report, coverage_interval, fit_variance_scale

    mdl = load_model(model)
    members = resolve_members(prior_fn)
    result: dict[str, Any] = {"scales": {}, "check": {}, "n_scenes": n_scenes, "seed": seed, "size": size}
    with deterministic(seed):
        parts = calibration_days(n_scenes, seed, size)
        preds: dict[str, dict[str, list[np.ndarray]]] = {}
        for split, examples in parts.items():
            for f, c, ct, truth in examples:
                key = f"{split}{min(f.shape[0], 2)}"
                m, v = hybrid_arrays(f, c, ct, prior_fn=prior_fn, model=mdl, mc_samples=mc_samples, seed=seed,
                                     correction_weight=correction_weight, variance_scale=1.0, variance=variance)
                d = preds.setdefault(key, {"m": [], "v": [], "t": [], "rmse": [], **{name: [] for name, _ in members}})
                for name, prior in members:  # each member prior alone (all pairs, as stfuse.prior.predict)
                    d[name].append(float(np.sqrt(np.nanmean((prior(f, c, ct)[0] - truth) ** 2))))
                ok = np.isfinite(m) & np.isfinite(truth)
                d["m"].append(m[ok]); d["v"].append(v[ok]); d["t"].append(truth[ok])
                d["rmse"].append(float(np.sqrt(np.mean((m[ok] - truth[ok]) ** 2))))
                if f.shape[0] >= 2:  # the scale this day's own pairs ask for (None: too few valid pixels)
                    d.setdefault("scene", []).append(scene_variance_scale(f, c, prior_fn=prior_fn, model=mdl,
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
        if p == "2" and fit.get("scene") and any(e is not None for e in fit["scene"]):
            # scale that follows the scene: factor * scene scale, the factor fitted on the fit days
            used = [i for i, e in enumerate(fit["scene"]) if e is not None]
            factor = fit_variance_scale(np.concatenate([fit["m"][i] for i in used]),
                                        np.concatenate([fit["scene"][i] * fit["v"][i] for i in used]),
                                        np.concatenate([fit["t"][i] for i in used]), method=method)  # type: ignore[arg-type]
            day_scales = [factor * e if e is not None else s for e in chk["scene"]]
            rep = check_report([(m, k * v, t) for m, v, t, k in zip(chk["m"], chk["v"], chk["t"], day_scales)])
            rep.update(days=len(day_scales), scene_scale_median=float(np.median([e for e in chk["scene"] if e is not None])))
            result["scene_factor"] = factor
            result["check_scene"] = {p: rep}
    return result


HYBRID_CALIBRATION: dict[str, Any] = {"n_scenes": 160, "seed": 1, "size": 128, "method": "coverage_pair", "variance": "mixture"}
"""Settings of the hybrid variance calibration stored with the shipped weights."""


def add_hybrid_calibration(model: Refiner) -> Refiner:
    """Fit :func:`fit_hybrid_scales` (:data:`HYBRID_CALIBRATION`) and record the scales
    (rounded to 4 significant digits) and the held-out check in ``model.meta``."""
    fit = fit_hybrid_scales(model, **HYBRID_CALIBRATION)
    round4 = lambda x: float(f"{x:.4g}")
    model.meta["hybrid_variance_scales"] = {k: round4(v) for k, v in fit["scales"].items()}  # type: ignore[attr-defined]
    if "scene_factor" in fit:
        model.meta["hybrid_scene_factor"] = round4(fit["scene_factor"])  # type: ignore[attr-defined]
    model.meta["hybrid_calibration"] = {  # type: ignore[attr-defined]
        **HYBRID_CALIBRATION,
        "prior": list(ENSEMBLE),
        "correction_weight": CORRECTION_WEIGHT,
        "check": {p: {k: round4(v) for k, v in rep.items()} for p, rep in fit["check"].items()},
        **({"check_scene": {p: {k: round4(v) for k, v in rep.items()} for p, rep in fit["check_scene"].items()}}
           if "check_scene" in fit else {}),
    }
    return model


def make_shipped_weights(path: str | Path = DEFAULT_WEIGHTS, *, seed: int = 0, **kwargs: Any) -> Path:
    """Regenerate the shipped weights: ``train_synthetic(seed=seed, **kwargs)`` saved to ``path``
    with metadata (stfuse and torch versions, the command). ``python -m stfuse.refine``."""
    from . import __version__

    model = train_synthetic(seed=seed, **kwargs)
    add_hybrid_calibration(model)
    meta = dict(model.meta)  # type: ignore[attr-defined]
    meta.update(
        {
            "stfuse_version": __version__,
            "torch_version": torch.__version__,
            "command": f"python -m stfuse.refine --seed {seed}"
            + "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(kwargs.items())),
            "function": f"stfuse.refine.make_shipped_weights(seed={seed}"
            + "".join(f", {k}={v!r}" for k, v in sorted(kwargs.items())) + ")",
            "make": "make weights = stfuse train --synthetic --seed 0 -o stfuse/weights/refiner.pt --overwrite",
            "data": (
                "simulated scenes only (stfuse.synth via stfuse.refine._synthetic_scene, MODIS-like perturbations): "
                "training/validation scene seeds from numpy SeedSequence(seed).spawn(n_scenes + n_val_scenes); hybrid "
                "calibration scenes from SeedSequence([hybrid_calibration.seed, 77]).spawn(hybrid_calibration.n_scenes)"
            ),
        }
    )
    meta.pop("seconds", None)  # keep the file identical between equal runs
    return save_checkpoint(model, path, meta)


# ------------------------------------------------------------------------------------------
# All together
# ------------------------------------------------------------------------------------------


def hybrid_variance_scale(model: Refiner, n_pairs: int, scene_scale: float | None = None) -> float:
    """Post-hoc variance factor of the hybrid for ``n_pairs`` pairs (1 or 2+).

    With 2+ pairs and a ``scene_scale`` (:func:`scene_variance_scale`: the scale the scene's own
    cross-pair predictions need), for a model that was not adapted to the scene: the model's
    ``hybrid_scene_factor`` (fitted on held-out simulated days, :func:`fit_hybrid_scales`) times
    ``scene_scale``. Otherwise the fixed factor fitted on held-out simulated days
    (``model.meta["hybrid_variance_scales"]``); 1.0 when the model has none."""
    meta = getattr(model, "meta", {}) or {}
    if scene_scale is not None and uses_scene_calibration(model, n_pairs):
        return float(meta["hybrid_scene_factor"]) * float(scene_scale)
    scales = meta.get("hybrid_variance_scales") or {}
    value = scales.get(str(min(max(int(n_pairs), 1), 2)))
    return float(value) if value else 1.0


def uses_scene_calibration(model: Refiner, n_pairs: int) -> bool:
    """Whether the hybrid's variance scale follows the scene (:func:`hybrid_variance_scale`)
    for ``n_pairs`` pairs with ``model``: 2+ pairs, a model with a ``hybrid_scene_factor`` and
    not adapted to the scene (an adapted model has seen the cross-pair predictions in training)."""
    meta = getattr(model, "meta", {}) or {}
    return n_pairs >= 2 and bool(meta.get("hybrid_scene_factor")) and not meta.get("self_supervised")


SCENE_WINDOW = 512
"""Side (fine px) of the central window :func:`scene_variance_scale` predicts on (bounded cost)."""
MIN_SCENE_PIXELS = 4096
"""Fewest valid values (pixels x bands) of the cross-pair predictions for a scene scale."""


def central_window(height: int, width: int, window: int = SCENE_WINDOW) -> tuple[slice, slice]:
    """(rows, cols) slices of the central ``window`` x ``window`` px of a ``height`` x ``width`` image."""
    r0, c0 = max((height - window) // 2, 0), max((width - window) // 2, 0)
    return slice(r0, r0 + window), slice(c0, c0 + window)


def scene_variance_scale(
    fine: np.ndarray,
    coarse: np.ndarray,
    *,
    prior_fn: Any = "ensemble",
    model: Refiner | str | Path | None = None,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    prior_options: dict[str, Any] | None = None,
    window: int = SCENE_WINDOW,
) -> float | None:
    """The variance scale the scene's own pairs ask for: each pair predicted from its neighbour
    in time, both ways (the single-pair hybrid, :func:`hybrid_arrays` at scale 1, on the central
    ``window`` x ``window`` px), scored against that pair's fine image, and the scale fitted
    on those predictions (:func:`stfuse.uncertainty.fit_variance_scale`, 68 %/95 % compromise).

    ``fine``, ``coarse``: (P, B, H, W) reflectance in time order (NaN = missing). Returns None
    with one pair or fewer than :data:`MIN_SCENE_PIXELS` valid values. Costs 2 (P - 1)
    single-pair hybrid runs on the window.
    """
    from .uncertainty import fit_variance_scale

    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    if fine.ndim != 4 or fine.shape[0] < 2:
        return None
    rows, cols = central_window(*fine.shape[-2:], window)
    fine, coarse = fine[..., rows, cols], coarse[..., rows, cols]
    mdl = load_model(model)
    preds, variances, truths = [], [], []
    for a in range(fine.shape[0] - 1):
        for src, dst in ((a, a + 1), (a + 1, a)):
            m, v = hybrid_arrays(fine[src : src + 1], coarse[src : src + 1], coarse[dst], prior_fn=prior_fn, model=mdl,
                                 mc_samples=mc_samples, seed=seed, device=device, variance_scale=1.0,
                                 prior_options=prior_options)
            ok = np.isfinite(m) & np.isfinite(v) & np.isfinite(fine[dst])
            preds.append(m[ok]); variances.append(v[ok]); truths.append(fine[dst][ok])
    if sum(p.size for p in preds) < MIN_SCENE_PIXELS:
        return None
    return fit_variance_scale(np.concatenate(preds), np.concatenate(variances), np.concatenate(truths))


def calibration_record(model: Refiner, n_pairs: int, members: Sequence[str] | None = None,
                       scene_scale: float | None = None) -> dict[str, Any]:
    """What calibrated the hybrid's variance for ``n_pairs`` pairs, for output tags:
    ``{"variance_scale", "fitted_on", "member_variance_scales", ...}``. ``variance_scale``: the
    post-hoc factor applied (:func:`hybrid_variance_scale` with ``scene_scale``; then also
    ``scene_scale`` and ``scene_factor``); ``member_variance_scales``: the refiner's per-prior
    scales, fitted on held-out tiles of the pairs when the model was adapted to them (``scene``,
    ``stfuse train --pair``), else on simulated validation scenes; only those of ``members``
    (prior names) when given."""
    meta = getattr(model, "meta", {}) or {}
    cal = meta.get("hybrid_calibration") or {}
    adapted = meta.get("self_supervised")
    follows_scene = scene_scale is not None and uses_scene_calibration(model, n_pairs)
    if follows_scene:
        fitted_on = (f"this scene's pairs, each predicted from its neighbour in time (scale {scene_scale:.4g}), times a "
                     f"factor fitted on held-out simulated days ({cal.get('n_scenes')} scenes, seed {cal.get('seed')})")
    elif cal:
        fitted_on = (f"held-out simulated days ({cal.get('n_scenes')} scenes, seed {cal.get('seed')}; "
                     f"{cal.get('method')} on the 68 % and 95 % levels)")
    else:
        fitted_on = "none (scale 1)"
    return {
        "variance_scale": hybrid_variance_scale(model, n_pairs, scene_scale),
        "fitted_on": fitted_on,
        **({"scene_scale": round(float(scene_scale), 4), "scene_factor": float(meta["hybrid_scene_factor"])}  # type: ignore[arg-type]
           if follows_scene else {}),
        "member_variance_scales": {k: round(float(v), 4) for k, v in (meta.get("variance_scales") or {}).items()
                                   if members is None or k in members},
        "members_fitted_on": (f"held-out tiles of {adapted.get('pairs')} pairs (self-supervised)" if adapted
                              else "simulated validation scenes"),
    }


def hybrid_arrays(
    fine: np.ndarray,
    coarse: np.ndarray,
    coarse_target: np.ndarray,
    *,
    prior_fn: Any = "ensemble",
    model: Refiner | str | Path | None = None,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    correlation: float = 0.4,
    correction_weight: float = CORRECTION_WEIGHT,
    variance_scale: float | None = None,
    prior_options: dict[str, Any] | None = None,
    variance: str = "mixture",
) -> tuple[np.ndarray, np.ndarray]:
    """The hybrid for one target day with a given model (no training): ``(mean, variance)``.

    For every pair k and every member prior m (:func:`resolve_members`: ``"ensemble"`` =
    :data:`ENSEMBLE`): the single-pair prior ``prior_m(fine[k], coarse[k], coarse_target)``
    is refined (:func:`refine`, with the member's variance scale), its correction weighted by
    ``correction_weight``. The P x M predictions are combined with weights from the refined
    variances (the refiner judges, per pixel, which prior and pair to trust):

    - ``variance="mixture"`` (default, :func:`stfuse.uncertainty.combine_weighted` with
      ``spread``): the variance of the weighted mixture of the members with their *prior*
      variances, ``sum_k w_k (v_k + (mu_k - mu)^2)`` (not shrunk by combining; the members'
      disagreement adds to it);
    - ``variance="prior"``: the same without the disagreement term;
    - ``variance="refined"``: inverse-variance combination of the refined Gaussians with
      error ``correlation`` (:func:`stfuse.uncertainty.combine_inverse_variance`);

    then multiplied by ``variance_scale`` (default :func:`hybrid_variance_scale` of the model
    for P pairs: with 2+ pairs the scale the scene's own cross-pair predictions need
    (:func:`scene_variance_scale` on these arrays) times a factor fitted on held-out simulated
    days, with one pair a fixed scale fitted on held-out simulated days). The default was chosen because its
    coverage came closest to nominal on both held-out simulated and real days
    (docs/methods.md). Shapes as
    :func:`predict_hybrid`.
    """
    from .uncertainty import combine_inverse_variance, combine_weighted

    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    ct = np.asarray(coarse_target, np.float32)
    if fine.ndim != 4 or coarse.shape != fine.shape or ct.shape != fine.shape[1:]:
        raise InputError(f"fine {fine.shape} / coarse {coarse.shape} must be (P, B, H, W) and coarse_target {ct.shape} (B, H, W)")
    if not 0.0 <= correction_weight <= 1.0:
        raise InputError(f"correction_weight must lie in [0, 1]; got {correction_weight}")
    mdl = load_model(model)
    members = resolve_members(prior_fn, **(prior_options or {}))
    means, prior_vars, refined_vars = [], [], []
    for k in range(fine.shape[0]):
        for i, (name, prior) in enumerate(members):
            pm, pv = (np.asarray(a, np.float32) for a in prior(fine[k : k + 1], coarse[k : k + 1], ct))
            m, v = refine(pm, pv, fine[k : k + 1], coarse[k : k + 1], ct, model=mdl, mc_samples=mc_samples,
                          seed=seed + 7919 * k + 104729 * i, device=device, prior=name)
            if correction_weight != 1.0:
                m = (pm + np.float32(correction_weight) * (m - pm)).astype(np.float32)
            means.append(m)
            prior_vars.append(pv)
            refined_vars.append(v)
    if variance == "refined":
        mean, var = combine_inverse_variance(np.stack(means), np.stack(refined_vars), correlation=correlation)
    elif variance in ("mixture", "prior"):
        mean, var = combine_weighted(np.stack(means), np.stack(refined_vars), np.stack(prior_vars), spread=variance == "mixture")
    else:
        raise InputError(f"unknown variance model {variance!r}; use mixture, prior or refined")
    if variance_scale is None:
        scene = (scene_variance_scale(fine, coarse, prior_fn=prior_fn, model=mdl, mc_samples=mc_samples, seed=seed,
                                      device=device, prior_options=prior_options)
                 if uses_scene_calibration(mdl, fine.shape[0]) else None)
        variance_scale = hybrid_variance_scale(mdl, fine.shape[0], scene)
    return mean.astype(np.float32), (var * np.float32(variance_scale)).astype(np.float32)


def adapt_model(
    fine: np.ndarray,
    coarse: np.ndarray,
    *,
    prior_fn: Any = "ensemble",
    init: Refiner | str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    **train_options: Any,
) -> Refiner:
    """Adapt a model once to a scene's pairs (:func:`train_self_supervised` with every member
    prior of ``prior_fn``), to be applied afterwards tile by tile (:func:`hybrid_fn`). With one
    pair the initial model (shipped weights) comes back unchanged. Keeps the initial model's
    hybrid variance scales."""
    base = load_model(init)
    model = train_self_supervised(fine, coarse, prior_fn=prior_fn, init=base, seed=seed, device=device, **train_options)
    scales = (getattr(base, "meta", {}) or {}).get("hybrid_variance_scales")
    if scales is not None:
        model.meta.setdefault("hybrid_variance_scales", scales)  # type: ignore[attr-defined]
    return model


class HybridFn:
    """Picklable ``fn(fine, coarse, target) -> (mean, variance)`` running :func:`hybrid_arrays`
    with a fixed model: the ``predict_fn`` of :func:`stfuse.tiling.predict_tiled`, with
    ``halo`` = :attr:`halo`. Tiles are refined with their own band statistics (small seams
    are possible at tile edges; the halo covers the priors' and the refiner's neighbourhoods).
    The variance scale is one for the whole area: call :meth:`fit_scene` with the area's pairs
    first to have it follow the scene (2+ pairs), else the fixed simulated-day scale applies."""

    def __init__(
        self,
        prior: str | Sequence[str] = "ensemble",
        model: Refiner | str | Path | None = None,
        *,
        mc_samples: int = 8,
        seed: int = 0,
        device: str = "cpu",
        correlation: float = 0.4,
        correction_weight: float = CORRECTION_WEIGHT,
        prior_options: dict[str, Any] | None = None,
    ) -> None:
        self.prior = prior if isinstance(prior, str) else tuple(prior)
        resolve_members(self.prior, **(prior_options or {}))  # fail early on unknown names
        self.model = load_model(model)
        self.mc_samples, self.seed, self.device = int(mc_samples), int(seed), device
        self.correlation, self.correction_weight = float(correlation), float(correction_weight)
        self.prior_options = dict(prior_options or {})
        self.scene_scale: float | None = None  # set by fit_scene; tiles never fit their own

    def fit_scene(self, fine: Any, coarse: Any) -> float | None:
        """Fit the scene's variance scale once, from the whole area's pairs (``(P, B, H, W)``
        arrays or DataArrays with dims pair, band, y, x; only the central
        :data:`SCENE_WINDOW` px are read): :func:`scene_variance_scale` when
        :func:`uses_scene_calibration`, else nothing. Returns it (None when not used)."""
        n_pairs = int(fine.sizes["pair"] if hasattr(fine, "sizes") else fine.shape[0])
        self.scene_scale = None
        if uses_scene_calibration(self.model, n_pairs):
            arrays = []
            for a in (fine, coarse):
                if hasattr(a, "isel"):
                    a = a.transpose("pair", "band", "y", "x")
                    rows, cols = central_window(a.sizes["y"], a.sizes["x"])
                    a = a.isel(y=rows, x=cols).values
                arrays.append(np.asarray(a, np.float32))
            self.scene_scale = scene_variance_scale(*arrays, prior_fn=self.prior, model=self.model,
                                                    mc_samples=self.mc_samples, seed=self.seed, device=self.device,
                                                    prior_options=self.prior_options)
        return self.scene_scale

    @property
    def name(self) -> str:
        return hybrid_name(self.prior)

    @property
    def halo(self) -> int:
        return hybrid_halo(self.prior, self.model, **self.prior_options)

    def calibration(self, n_pairs: int) -> dict[str, Any]:
        """The variance calibration applied with ``n_pairs`` pairs (:func:`calibration_record`)."""
        return calibration_record(self.model, n_pairs, [name for name, _ in resolve_members(self.prior, **self.prior_options)],
                                  scene_scale=self.scene_scale)

    def __call__(self, fine: np.ndarray, coarse: np.ndarray, coarse_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return hybrid_arrays(
            fine, coarse, coarse_target, prior_fn=self.prior, model=self.model, mc_samples=self.mc_samples, seed=self.seed,
            device=self.device, correlation=self.correlation, correction_weight=self.correction_weight,
            prior_options=self.prior_options,
            variance_scale=hybrid_variance_scale(self.model, int(np.asarray(fine).shape[0]), self.scene_scale),
        )


def hybrid_name(prior: Any) -> str:
    """The method label of the hybrid on ``prior`` (as in output tags), e.g. ``fitfc+fsdaf+refiner``."""
    return f"{_prior_name(ENSEMBLE if prior in ('ensemble', 'auto') else prior)}+refiner"


def hybrid_fn(
    prior_method: str | Sequence[str] = "ensemble",
    model: Refiner | str | Path | None = None,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    **kwargs: Any,
) -> HybridFn:
    """A tile-friendly hybrid predictor (:class:`HybridFn`); ``model`` may come from
    :func:`adapt_model` (adapted once per scene) or be None (shipped weights)."""
    return HybridFn(prior_method, model, mc_samples=mc_samples, seed=seed, device=device, **kwargs)


def hybrid_halo(prior: str | Sequence[str] = "ensemble", model: Refiner | str | Path | None = None, **prior_options: Any) -> int:
    """Tile halo (fine pixels) of the hybrid: the largest member prior's halo plus the refiner's
    (:func:`halo`). Callable priors count as 0."""
    from . import prior as _prior

    names = list(ENSEMBLE) if prior in ("ensemble", "auto") else ([prior] if isinstance(prior, str) else list(prior))
    prior_halo = max((_prior.halo(n, **prior_options) for n in names if isinstance(n, str) and n in _prior.METHODS), default=0)
    mdl = model if isinstance(model, Refiner) else load_model(model)
    return int(prior_halo) + halo(mdl.highpass if mdl.highpass > 1 else 0)


def predict_hybrid(
    fine: np.ndarray,
    coarse: np.ndarray,
    coarse_target: np.ndarray,
    *,
    prior_fn: Any = "ensemble",
    model: Refiner | str | Path | None = None,
    self_supervised: bool = True,
    mc_samples: int = 8,
    seed: int = 0,
    device: str = "cpu",
    correlation: float = 0.4,
    correction_weight: float = CORRECTION_WEIGHT,
    train_options: dict[str, Any] | None = None,
    prior_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prior + refiner for one target day: returns ``(mean, variance)`` (B, H, W) float32.

    ``fine``, ``coarse``: (P, B, H, W) pairs; ``coarse_target`` (B, H, W); reflectance, NaN =
    missing. ``prior_fn``: ``"ensemble"`` (default: :data:`ENSEMBLE`, Fit-FC + FSDAF), a
    :mod:`stfuse.prior` method name, a list of them, a callable single-pair prior, or
    None/"additive". ``model``: starting refiner (None = shipped weights). With P >= 2 and
    ``self_supervised`` the model is first adapted to the pairs (:func:`adapt_model`;
    ``train_options`` passed on; about 2.5 CPU minutes in all for 400 x 400 x 3). Then
    :func:`hybrid_arrays`: every pair x member prior refined, combined by inverse variance
    (error ``correlation``), the refiner's correction weighted by ``correction_weight``, the
    variance calibrated by the model's hybrid variance scale (:func:`hybrid_variance_scale`:
    with 2+ pairs and a model not adapted here, it follows the scene). Figures on the real benchmark
    tasks: docs/benchmarks.md (hybrid section) and docs/methods.md.
    """
    fine = np.asarray(fine, np.float32)
    coarse = np.asarray(coarse, np.float32)
    mdl = load_model(model)
    if self_supervised and fine.shape[0] >= 2:
        mdl = adapt_model(fine, coarse, prior_fn=prior_fn, init=mdl, seed=seed, device=device, **(train_options or {}))
    return hybrid_arrays(
        fine, coarse, coarse_target, prior_fn=prior_fn, model=mdl, mc_samples=mc_samples, seed=seed, device=device,
        correlation=correlation, correction_weight=correction_weight, prior_options=prior_options,
    )


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Regenerate the shipped refiner weights (stfuse/weights/refiner.pt).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--n-scenes", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    a = ap.parse_args(argv)
    kwargs = {k: v for k, v in (("n_scenes", a.n_scenes), ("steps", a.steps)) if v is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = make_shipped_weights(a.out, seed=a.seed, **kwargs)
    print(path, path.stat().st_size, "bytes")


__all__ = [
    "CORRECTION_WEIGHT",
    "ENSEMBLE",
    "FEATURES",
    "Features",
    "HybridFn",
    "adapt_model",
    "add_hybrid_calibration",
    "calibration_days",
    "calibration_record",
    "simulated_days",
    "fit_hybrid_scales",
    "hybrid_arrays",
    "hybrid_fn",
    "hybrid_halo",
    "hybrid_name",
    "hybrid_variance_scale",
    "resolve_members",
    "PriorFn",
    "Refiner",
    "additive_prior",
    "band_stats",
    "build_features",
    "deterministic",
    "halo",
    "load_checkpoint",
    "load_model",
    "make_shipped_weights",
    "mc_predict",
    "predict_hybrid",
    "refine",
    "resolve_prior",
    "save_checkpoint",
    "train_self_supervised",
    "train_supervised",
    "train_synthetic",
]

if __name__ == "__main__":
    _main()
