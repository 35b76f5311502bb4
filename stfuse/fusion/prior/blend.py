"""The ``blend`` prior: Fit-FC, FSDAF and ``fine + coarse change``, averaged.

Each member fails somewhere: Fit-FC and FSDAF lost to the trivial ``fine + (coarse_target -
coarse_pair)`` on small or fast-changing real scenes (Kranj, CIA's last date), the trivial
prediction loses to both on most others. Their errors are far from perfectly correlated, so
their mean beats each member on the mean over the simulator and all real sets, and keeps the
``fine + coarse change`` baseline as a member it is never far from (docs/methods.md, "Default
method"). Equal weights: weights from cross-prediction between the pairs (how well each member
predicts one pair from another) gained 0.3 % RMSE on the real and simulated two-pair days and
cost three times the time, so they are not used.

``change`` member with P pairs: per pair ``fine_p + coarse_target - coarse_p``, weighted per
band by ``1 / mean|coarse_target - coarse_p|`` (the pair whose coarse image changed least counts
most). Variance: the mean of the two priors' variances plus the spread of the three members
around their mean (where they disagree the prediction is less certain).

Tensors as in :mod:`stfuse.fusion.prior`: fine/coarse (P, B, H, W), coarse_target (B, H, W).
"""

from __future__ import annotations

import torch

from stfuse.fusion.prior import _coarse as co
from stfuse.fusion.prior.fitfc import fitfc
from stfuse.fusion.prior.fitfc import halo as fitfc_halo
from stfuse.fusion.prior.fsdaf import fsdaf
from stfuse.fusion.prior.fsdaf import halo as fsdaf_halo


def halo(*, coarse_factor: int = 16, **_: object) -> int:
    """Neighbourhood radius (fine pixels): the larger of Fit-FC's and FSDAF's."""
    return max(fitfc_halo(coarse_factor=coarse_factor), fsdaf_halo(coarse_factor=coarse_factor))


def change_baseline(fine: torch.Tensor, coarse: torch.Tensor, coarse_target: torch.Tensor) -> torch.Tensor:
    """``fine + coarse change`` with P pairs, (B, H, W): per pair ``fine_p + coarse_target - coarse_p``,
    weighted per band by ``1 / mean|coarse_target - coarse_p|``; NaN where no pair gives a value."""
    per_pair = fine + coarse_target.unsqueeze(0) - coarse
    change = (coarse_target.unsqueeze(0) - coarse).abs()
    ok = torch.isfinite(change)
    mean_change = torch.where(ok, change, 0.0).sum((2, 3)) / ok.sum((2, 3)).clamp_min(1)  # (P, B)
    weight = (1.0 / mean_change.clamp_min(1e-6))[:, :, None, None].expand_as(per_pair)
    valid = torch.isfinite(per_pair)
    weight = torch.where(valid, weight, 0.0)
    total = weight.sum(0)
    value = torch.where(valid, per_pair, 0.0).mul(weight).sum(0) / total.clamp_min(1e-30)
    return torch.where(total > 0, value, float("nan"))


def nearest_fine(fine: torch.Tensor, coarse: torch.Tensor, coarse_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest fine image as is, the second trivial baseline: the fine image of the pair whose
    coarse image is closest to the target's (mean over bands of the mean squared difference relative
    to the band's mean square; one pair for all bands, as a date is one image), other pairs filling
    its missing pixels in that order. Variance per band: the mean squared
    coarse change from that pair to the target, the error a no-change prediction makes as the
    coarse sensor sees it. (mean, variance) (B, H, W) float32. Used by the default for inputs that
    are not the same quantity (:func:`stfuse.fusion.radiometry.same_quantity`); the choice is
    global, so call it on the whole image, not on tiles."""
    fine, coarse, coarse_target = co.check_inputs(fine, coarse, coarse_target)
    change = coarse_target.unsqueeze(0) - coarse  # (P, B, H, W)
    ok = torch.isfinite(change)
    mse = torch.where(ok, change ** 2, 0.0).sum((2, 3)) / ok.sum((2, 3)).clamp_min(1)  # (P, B)
    mse = torch.where(ok.any((2, 3)), mse, float("inf"))
    target_ok = torch.isfinite(coarse_target)
    power = torch.where(target_ok, coarse_target ** 2, 0.0).sum((1, 2)) / target_ok.sum((1, 2)).clamp_min(1)  # (B,)
    distance = (mse / power.clamp_min(1e-12)).mean(1)  # (P,)
    mean = torch.full_like(coarse_target, float("nan"))
    for p in torch.argsort(distance).tolist():
        mean = torch.where(torch.isfinite(mean), mean, fine[p])
    best = int(torch.argmin(distance))
    variance = torch.where(torch.isfinite(mean), mse[best][:, None, None].expand_as(mean), float("nan"))
    return mean.contiguous(), variance.contiguous()


def blend(
    fine: torch.Tensor,
    coarse: torch.Tensor,
    coarse_target: torch.Tensor,
    *,
    coarse_factor: int = 16,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of Fit-FC, FSDAF (default options but ``coarse_factor``, ``seed``) and
    :func:`change_baseline`; (mean, variance) (B, H, W) float32 (module docstring).

    A pixel where a member has no value takes the mean of the others.
    """
    fine, coarse, coarse_target = co.check_inputs(fine, coarse, coarse_target)
    co.check_factor(coarse_factor)
    with torch.no_grad():
        fit_mean, fit_var = fitfc(fine, coarse, coarse_target, coarse_factor=coarse_factor)
        fsd_mean, fsd_var = fsdaf(fine, coarse, coarse_target, coarse_factor=coarse_factor, seed=seed)
        members = torch.stack([fit_mean, fsd_mean, change_baseline(fine, coarse, coarse_target)])
        valid = torch.isfinite(members)
        count = valid.sum(0)
        mean = torch.where(valid, members, 0.0).sum(0) / count.clamp_min(1)
        spread = torch.where(valid, (members - mean.unsqueeze(0)) ** 2, 0.0).sum(0) / count.clamp_min(1)
        variances = torch.stack([fit_var, fsd_var])
        var_ok = torch.isfinite(variances)
        prior_var = torch.where(var_ok, variances, 0.0).sum(0) / var_ok.sum(0).clamp_min(1)
        has = count > 0
        mean = torch.where(has, mean, float("nan"))
        variance = torch.where(has, prior_var + spread, float("nan"))
    return mean.contiguous(), variance.contiguous()
