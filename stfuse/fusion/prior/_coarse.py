"""Coarse/fine building blocks shared by FSDAF and Fit-FC (:mod:`.fsdaf`, :mod:`.fitfc`).

Block means between the fine grid and a coarse grid of ``f`` x ``f`` fine pixels, box sums,
NaN filling, thin-plate-spline upsampling of coarse fields, the similar-pixel filter, the
residual/variogram weights and the inverse-variance combination of per-pair predictions.
Tensors are (B, H, W) float reflectance on the fine grid unless said otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as Fn

from stfuse.errors import InputError

VAR_FLOOR = 1e-10
FAR = 1e16  # squared spectral distance that marks "not a candidate"
_TPS_CACHE: dict[tuple, torch.Tensor] = {}  # (f, m, device, dtype) -> TPS operator


def check_inputs(fine, coarse, coarse_target):
    """Validate shapes, return float32 tensors on the device of ``fine``."""
    for name, t, nd in (("fine", fine, 4), ("coarse", coarse, 4), ("coarse_target", coarse_target, 3)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if t.ndim != nd:
            raise InputError(f"{name} must have {nd} dimensions, got shape {tuple(t.shape)}")
    if fine.shape != coarse.shape:
        raise InputError(f"fine {tuple(fine.shape)} and coarse {tuple(coarse.shape)} must have the same shape")
    if tuple(coarse_target.shape) != tuple(fine.shape[1:]):
        raise InputError(f"coarse_target {tuple(coarse_target.shape)} must be (B, H, W) = {tuple(fine.shape[1:])}")
    if fine.shape[0] < 1 or fine.shape[1] < 1 or fine.shape[2] < 1 or fine.shape[3] < 1:
        raise InputError(f"empty input: fine has shape {tuple(fine.shape)}")
    dev = fine.device
    f = lambda t: t.to(device=dev, dtype=torch.float32)  # noqa: E731
    return f(fine), f(coarse), f(coarse_target)


def check_factor(coarse_factor):
    if not isinstance(coarse_factor, int) or isinstance(coarse_factor, bool) or coarse_factor < 1:
        raise InputError(f"coarse_factor must be a positive int (fine pixels per coarse pixel), got {coarse_factor!r}")


def box_sum(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum over the (2r+1)^2 window around each pixel of (C, H, W) ``x`` (outside = 0).

    Separable running sums in float64 (exact enough for any radius; cost independent of ``r``),
    one channel at a time to bound the float64 temporaries.
    """
    if r <= 0:
        return x.clone()
    out = torch.empty_like(x)
    for ch in range(x.shape[0]):
        y = x[ch].to(torch.float64)
        for dim in (0, 1):
            n = y.shape[dim]
            c = torch.cumsum(y, dim)
            c = torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c], dim)
            idx = torch.arange(n, device=x.device)
            y = c.index_select(dim, (idx + r + 1).clamp(max=n)) - c.index_select(dim, (idx - r).clamp(min=0))
            del c
        out[ch] = y.to(x.dtype)
    return out


def box_mean(x: torch.Tensor, r: int, weight: torch.Tensor | None = None):
    """NaN-aware (optionally weighted) mean over the (2r+1)^2 window; returns (mean, weight sum)."""
    ok = torch.isfinite(x)
    w = ok.to(x.dtype) if weight is None else torch.where(ok, weight, 0.0)
    s = box_sum(torch.where(ok, x, 0.0) * w, r)
    n = box_sum(w, r)
    return s / n, n


def block_mean(x: torch.Tensor, f: int):
    """NaN-aware mean of (C, H, W) ``x`` over f x f blocks -> ((C, Hc, Wc) mean, valid count)."""
    C, H, W = x.shape
    Hc, Wc = -(-H // f), -(-W // f)
    xp = Fn.pad(x, (0, Wc * f - W, 0, Hc * f - H), value=float("nan"))
    ok = torch.isfinite(xp)
    s = torch.where(ok, xp, 0.0).reshape(C, Hc, f, Wc, f).sum((2, 4))
    n = ok.reshape(C, Hc, f, Wc, f).sum((2, 4)).to(x.dtype)
    return s / n, n


def block_expand(xc: torch.Tensor, f: int, H: int, W: int) -> torch.Tensor:
    """Nearest (block) expansion of (C, Hc, Wc) to (C, H, W)."""
    return xc.repeat_interleave(f, -2).repeat_interleave(f, -1)[..., :H, :W]


def fill_nan(x: torch.Tensor, max_iter: int | None = None) -> torch.Tensor:
    """Fill NaNs of (C, h, w) by repeated 3x3 means of the valid neighbours (grows into gaps)."""
    x = x.clone()
    it = 0
    limit = max_iter if max_iter is not None else max(x.shape[-2:]) + 1
    while it < limit:
        bad = ~torch.isfinite(x)
        if not bool(bad.any()):
            break
        m, n = box_mean(x, 1)
        grow = bad & (n > 0)
        if not bool(grow.any()):
            break
        x = torch.where(grow, m, x)
        it += 1
    return x


def tps_operator(f: int, m: int, device, dtype) -> torch.Tensor:
    """(f*f, (2m+1)^2) map from the coarse values around a coarse pixel to its f x f fine pixels.

    Exact interpolating thin-plate spline (phi(r) = r^2 log r, affine term) through the
    (2m+1)^2 coarse-pixel centres, evaluated at the fine-pixel centres of the central coarse pixel.
    """
    key = (f, m, str(device), dtype)
    M = _TPS_CACHE.get(key)
    if M is not None:
        return M
    g = torch.arange(-m, m + 1, dtype=torch.float64)
    py, px = torch.meshgrid(g, g, indexing="ij")
    p = torch.stack([py.reshape(-1), px.reshape(-1)], 1)
    n = p.shape[0]

    def phi(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return torch.where(d2 > 0, 0.5 * d2 * torch.log(torch.where(d2 > 0, d2, 1.0)), 0.0)

    P = torch.cat([torch.ones(n, 1, dtype=torch.float64), p], 1)
    L = torch.zeros(n + 3, n + 3, dtype=torch.float64)
    L[:n, :n] = phi(p, p)
    L[:n, n:] = P
    L[n:, :n] = P.T
    s = (torch.arange(f, dtype=torch.float64) - (f - 1) / 2) / f
    qy, qx = torch.meshgrid(s, s, indexing="ij")
    q = torch.stack([qy.reshape(-1), qx.reshape(-1)], 1)
    E = torch.cat([phi(q, p), torch.ones(f * f, 1, dtype=torch.float64), q], 1)
    M = (E @ torch.linalg.solve(L, torch.eye(n + 3, dtype=torch.float64)[:, :n])).to(device=device, dtype=dtype)
    _TPS_CACHE[key] = M
    return M


def tps_upsample(xc: torch.Tensor, f: int, H: int, W: int, m: int = 3) -> torch.Tensor:
    """Local thin-plate-spline interpolation of NaN-free (C, Hc, Wc) coarse values to (C, H, W)."""
    C, Hc, Wc = xc.shape
    if f == 1:
        return xc[:, :H, :W].clone()
    M = tps_operator(f, m, xc.device, xc.dtype)
    xp = Fn.pad(xc.unsqueeze(0), (m, m, m, m), mode="replicate")[0]
    cols = Fn.unfold(xp.unsqueeze(1), 2 * m + 1)  # (C, (2m+1)^2, Hc*Wc)
    out = torch.matmul(M, cols)  # (C, f*f, Hc*Wc)
    out = out.reshape(C, f, f, Hc, Wc).permute(0, 3, 1, 4, 2).reshape(C, Hc * f, Wc * f)
    return out[:, :H, :W].contiguous()


def similar_filter(ref: torch.Tensor, vals: torch.Tensor, window: int, n_similar: int, *, stride: int = 1,
                    block_elems: int = 1 << 24, want_var: bool = True, groups: torch.Tensor | None = None,
                    group_tol: torch.Tensor | None = None):
    """Distance-weighted mean (and variance) of ``vals`` over the ``n_similar`` pixels most similar to
    each pixel in ``ref`` (sum of squared band differences) within a (2 window + 1)^2 window.

    Candidates are every ``stride``-th pixel of the window (plus the centre). Weights are
    1 / (1 + d / (window / 2)) (d = distance in pixels); ties at the n-th distance are all kept.
    ``ref`` (B, H, W), ``vals`` (C, H, W); pixels with NaN ``ref`` or ``vals`` are never similar
    pixels and get NaN. Rows are processed in blocks of at most ``block_elems`` candidate
    distances (peak extra memory ~ 2 * 4 * block_elems bytes). With ``groups`` (H, W) integer
    labels, pixels of another group than the centre's are candidates only if their squared
    spectral distance is at most ``group_tol`` (H, W) (default 0). Returns (mean, variance or None).
    """
    B, H, W = ref.shape
    C = vals.shape[0]
    valid = torch.isfinite(ref).all(0) & torch.isfinite(vals).all(0)
    w = int(window)
    if w <= 0:
        return torch.where(valid, vals, float("nan")), (torch.zeros_like(vals) if want_var else None)
    s = max(1, int(stride))
    offs = [(dy, dx) for dy in range(-w, w + 1, s) for dx in range(-w, w + 1, s)]
    if (0, 0) not in offs:
        offs.append((0, 0))
    K = len(offs)
    sw = torch.tensor([1.0 / (1.0 + math.hypot(dy, dx) / (w / 2.0)) for dy, dx in offs],
                      dtype=vals.dtype, device=vals.device)
    # invalid pixels are put far away in spectral space: never similar unless fewer than n valid
    # candidates exist, and then cut by the threshold clamp below
    far = FAR ** 0.5 / 4.0
    refz = torch.where(valid, ref, 0.0)
    refp = Fn.pad(torch.where(valid, ref, far).unsqueeze(0), (w, w, w, w), value=far)[0]
    valp = Fn.pad(torch.where(valid, vals, 0.0).unsqueeze(0), (w, w, w, w))[0]
    valp2 = valp * valp if want_var else None
    if groups is not None:
        gp = Fn.pad(groups.to(ref.dtype)[None, None], (w, w, w, w), value=-1.0)[0, 0]
        gc = groups.to(ref.dtype)
        gt = torch.zeros_like(gc) if group_tol is None else group_tol.to(ref.dtype)
    rows = max(1, min(H, block_elems // max(1, K * W)))
    k = min(int(n_similar), K)
    mean = torch.empty_like(vals)
    var = torch.empty_like(vals) if want_var else None
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        h = r1 - r0
        cen = refz[:, r0:r1]
        D = torch.empty((K, h, W), dtype=ref.dtype, device=ref.device)
        tmp = torch.empty((B, h, W), dtype=ref.dtype, device=ref.device)
        for i, (dy, dx) in enumerate(offs):
            torch.sub(refp[:, r0 + w + dy:r1 + w + dy, w + dx:w + dx + W], cen, out=tmp)
            tmp.square_()
            torch.sum(tmp, 0, out=D[i])
            if groups is not None:
                other = gp[r0 + w + dy:r1 + w + dy, w + dx:w + dx + W] != gc[r0:r1]
                D[i].masked_fill_(other & (D[i] > gt[r0:r1]), FAR)
        tau = torch.topk(D, k, dim=0, largest=False, sorted=False).values.amax(0).clamp_(max=FAR / 64.0)
        wt = (D <= tau).to(vals.dtype).mul_(sw[:, None, None])
        del D, tmp
        den = wt.sum(0)
        num = torch.zeros((C, h, W), dtype=vals.dtype, device=vals.device)
        num2 = torch.zeros_like(num) if want_var else None
        for i, (dy, dx) in enumerate(offs):
            sl = (slice(None), slice(r0 + w + dy, r1 + w + dy), slice(w + dx, w + dx + W))
            num.addcmul_(wt[i], valp[sl])
            if want_var:
                num2.addcmul_(wt[i], valp2[sl])
        del wt
        mu = num / den
        mean[:, r0:r1] = mu
        if want_var:
            var[:, r0:r1] = (num2 / den - mu * mu).clamp_min(0.0)
    mean = torch.where(valid, mean, float("nan"))
    if want_var:
        var = torch.where(valid, var, float("nan"))
    return mean, var


def variogram_weight(R: torch.Tensor) -> torch.Tensor:
    """Per-band weight ``1 - nugget / variance`` of (B, h, w) coarse residuals, in [0, 1].

    Semivariances ``gamma(L)`` at lags of 2 and 3 coarse pixels (rows and columns pooled); the
    nugget is their linear extrapolation to lag 0, ``3 gamma(2) - 2 gamma(3)``, floored at 0. Lag 1
    is skipped because coarse-sensor noise is correlated over about one coarse pixel (overlapping
    point spread functions, resampling to the fine grid), which would hide it in the signal.
    Grids smaller than 4 x 4 coarse pixels get weight 1.
    """
    B = R.shape[0]
    out = torch.ones(B, dtype=R.dtype, device=R.device)
    if min(R.shape[-2:]) < 4:
        return out

    def gamma(L):
        a = (R[:, :, L:] - R[:, :, :-L]).reshape(B, -1)
        b = (R[:, L:, :] - R[:, :-L, :]).reshape(B, -1)
        d = torch.cat([a, b], 1)
        ok = torch.isfinite(d)
        return 0.5 * torch.where(ok, d * d, 0.0).sum(1) / ok.sum(1).clamp_min(1)

    g2, g3 = gamma(2), gamma(3)
    flat = R.reshape(B, -1)
    ok = torch.isfinite(flat)
    n = ok.sum(1).clamp_min(1)
    mu = torch.where(ok, flat, 0.0).sum(1) / n
    v = torch.where(ok, (flat - mu[:, None]) ** 2, 0.0).sum(1) / n
    nug = (3.0 * g2 - 2.0 * g3).clamp_min(0.0)
    return torch.where(v > 1e-12, (1.0 - nug / v.clamp_min(1e-30)).clamp(0.0, 1.0), out)


def combine_pairs(means: list[torch.Tensor], variances: list[torch.Tensor]):
    """Inverse-variance combination per pixel and band (NaN predictions are left out).

    Variance: ``1 / sum(1 / v_p)`` plus the inverse-variance-weighted spread of the per-pair
    predictions around the combination (their errors are correlated: same target coarse image).
    """
    if len(means) == 1:
        return means[0], variances[0]
    num = torch.zeros_like(means[0])
    den = torch.zeros_like(means[0])
    ivs = []
    for m, v in zip(means, variances):
        ok = torch.isfinite(m) & torch.isfinite(v)
        iv = torch.where(ok, 1.0 / (v.clamp_min(0.0) + VAR_FLOOR), 0.0)
        num += torch.where(ok, m, 0.0) * iv
        den += iv
        ivs.append(iv)
    has = den > 0
    mean = torch.where(has, num / torch.where(has, den, 1.0), float("nan"))
    spread = torch.zeros_like(mean)
    for m, iv in zip(means, ivs):
        spread += torch.where(iv > 0, iv * (torch.nan_to_num(m) - torch.nan_to_num(mean)) ** 2, 0.0)
    var = torch.where(has, ((1.0 + spread) / torch.where(has, den, 1.0) - VAR_FLOOR).clamp_min(0.0), float("nan"))
    return mean, var


def nearest_pair(coarse: torch.Tensor, coarse_target: torch.Tensor) -> int:
    """Index of the pair whose coarse image is closest (mean |dC|) to the target's."""
    d = (coarse - coarse_target.unsqueeze(0)).abs()
    ok = torch.isfinite(d)
    score = torch.where(ok, d, 0.0).sum((1, 2, 3)) / ok.sum((1, 2, 3)).clamp_min(1)
    score = torch.where(ok.any((1, 2, 3)), score, torch.full_like(score, float("inf")))
    return int(torch.argmin(score))


def value_range(F1: torch.Tensor):
    """Per-band clipping range [min(0, min F1), max(1, max F1)] as (B, 1, 1) tensors."""
    B = F1.shape[0]
    flat = F1.reshape(B, -1)
    ok = torch.isfinite(flat)
    lo = torch.where(ok, flat, float("inf")).min(1).values.clamp(max=0.0)
    hi = torch.where(ok, flat, float("-inf")).max(1).values.clamp(min=1.0)
    lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))
    hi = torch.where(torch.isfinite(hi), hi, torch.ones_like(hi))
    return lo[:, None, None], hi[:, None, None]


def residual_energy(R: torch.Tensor, rw: torch.Tensor) -> torch.Tensor:
    """Variance term (B, Hc, Wc) of an observed coarse residual ``R`` (B, Hc, Wc), compensated with
    weight ``rw`` (B,): its mean square over the 3 x 3 neighbouring coarse pixels (where the coarse
    data disagree with the model, signal or noise) plus ``rw (2 - rw)`` times its scene mean
    square. With ``rw = s / (s + n)`` (signal s, noise n) the error of the compensated coarse
    residual is ``rw n`` and the unseen within-coarse-pixel part is taken as large as the signal
    ``rw (s + n)``: together ``rw (2 - rw) (s + n)``."""
    r2 = R * R
    ok = torch.isfinite(r2)
    g = torch.where(ok, r2, 0.0).sum((1, 2)) / ok.sum((1, 2)).clamp_min(1)
    loc, n = box_mean(r2, 1)
    loc = torch.where(n > 0, loc, g[:, None, None].expand_as(loc))
    k = (rw * (2.0 - rw)).clamp_min(0.0)[:, None, None]
    return loc + k * g[:, None, None]


def coarse_fallback(F1, c1, c2, f, H, W, tps_m, radius):
    """Prediction for pixels without a valid fine value: bias-corrected TPS of the coarse target,
    with the local mean squared misfit of the same prediction at t1 as its variance.

    Without any fine/coarse pixel pair at t1 to measure that misfit, the variance is the coarse
    target's own variance over a 3 x 3 coarse-pixel window plus its scene variance (we know
    nothing about the fine-scale detail)."""
    B = F1.shape[0]
    sp2 = tps_upsample(fill_nan(c2), f, H, W, tps_m)
    diff = F1 - tps_upsample(fill_nan(c1), f, H, W, tps_m)
    ok = torch.isfinite(diff)
    cnt = ok.sum((1, 2))
    bias = torch.where(ok, diff, 0.0).sum((1, 2)) / cnt.clamp_min(1)
    dev2 = torch.where(ok, (diff - bias[:, None, None]) ** 2, 0.0)
    gvar = dev2.sum((1, 2)) / cnt.clamp_min(1)
    lvar, n = box_mean(torch.where(ok, dev2, float("nan")), radius)
    lvar = torch.where(n > 0, lvar, gvar[:, None, None].expand(B, H, W))
    # no t1 information at all: the spread of the coarse target itself
    c2f = torch.where(torch.isfinite(c2), c2, float("nan"))
    m1, _ = box_mean(c2f, 1)
    m2, _ = box_mean(c2f * c2f, 1)
    flat = c2f.reshape(B, -1)
    okc = torch.isfinite(flat)
    mu = torch.where(okc, flat, 0.0).sum(1) / okc.sum(1).clamp_min(1)
    sv = torch.where(okc, (flat - mu[:, None]) ** 2, 0.0).sum(1) / okc.sum(1).clamp_min(1)
    blind = block_expand(torch.nan_to_num((m2 - m1 * m1).clamp_min(0.0)) + sv[:, None, None], f, H, W)
    var = torch.where((cnt > 0)[:, None, None], lvar, blind)
    return sp2 + bias[:, None, None], var
