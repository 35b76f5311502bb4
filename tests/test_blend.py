"""The ``blend`` prior (the default): its baseline member, its mean, and its behaviour on coarse
images as users get them (blocky, smooth), on simulated scenes with known truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stfuse.fusion import prior
from stfuse.fusion.prior.blend import change_baseline
from stfuse.sim.days import _simulate_raw, _synthetic_scene
from stfuse.sim.synth import upsample_bilinear


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2)))


def _baseline(fine: np.ndarray, coarse: np.ndarray, target: np.ndarray) -> np.ndarray:
    return change_baseline(torch.as_tensor(fine), torch.as_tensor(coarse), torch.as_tensor(target)).numpy()


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    b, h, w = x.shape
    return x.reshape(b, h // f, f, w // f, f).mean(axis=(2, 4))


def _clear_dates(fine: np.ndarray, limit: float = 0.05) -> list[int]:
    return [i for i in range(fine.shape[0]) if np.isnan(fine[i]).mean() < limit]


def test_change_baseline_with_one_pair_is_fine_plus_coarse_change():
    rng = np.random.default_rng(0)
    fine, coarse, target = (rng.random(s, dtype=np.float32) for s in ((1, 2, 8, 8), (1, 2, 8, 8), (2, 8, 8)))
    np.testing.assert_allclose(_baseline(fine, coarse, target), fine[0] + target - coarse[0], rtol=1e-6)


def test_change_baseline_trusts_the_pair_whose_coarse_image_changed_least():
    rng = np.random.default_rng(1)
    fine = rng.random((2, 1, 8, 8), dtype=np.float32)
    target = rng.random((1, 8, 8), dtype=np.float32)
    coarse = np.stack([target + 0.001, target + 0.3])  # pair 0 barely changed, pair 1 a lot
    out = _baseline(fine, coarse, target)
    # weights 1/0.001 : 1/0.3 -> pair 0 carries 99.7 %
    np.testing.assert_allclose(out, 0.99668 * (fine[0] - 0.001) + 0.00332 * (fine[1] - 0.3), atol=1e-4)
    coarse[0, 0, 0, 0] = np.nan  # a pixel pair 0 lacks comes from pair 1 alone
    assert _baseline(fine, coarse, target)[0, 0, 0] == pytest.approx(fine[1, 0, 0, 0] - 0.3, abs=1e-6)


def test_blend_is_the_mean_of_fitfc_fsdaf_and_the_baseline():
    fine, coarse = _synthetic_scene(6, 48)
    fine, coarse = fine[:, 1:4], coarse[:, 1:4]
    i, j = _clear_dates(fine)[:2]
    args = (fine[[i]], coarse[[i]], coarse[j])
    mean, var = prior.predict(*args, method="blend")
    members = [prior.predict(*args, method=m)[0] for m in ("fitfc", "fsdaf")] + [_baseline(*args)]
    np.testing.assert_allclose(mean, np.mean(members, axis=0), atol=1e-6)
    assert np.all(var >= np.var(members, axis=0) - 1e-9)  # the members' spread is part of the variance
    assert prior.method_for_day("auto", 1) == prior.method_for_day("auto", 2) == "blend"


def test_blend_stays_near_the_baseline_where_the_priors_fail():
    """A 48 px scene (3 x 3 coarse pixels) where Fit-FC and FSDAF both lose to fine + coarse change:
    the baseline member holds the blend close to it (within 10 %), far below the failing priors' mean."""
    fine, coarse = _synthetic_scene(0, 48)
    fine, coarse = fine[:, 1:4], coarse[:, 1:4]
    i, j = _clear_dates(fine)[:2]
    args = (fine[[i]], coarse[[i]], coarse[j])
    base = _rmse(_baseline(*args), fine[j])
    fitfc, fsdaf = (_rmse(prior.predict(*args, method=m)[0], fine[j]) for m in ("fitfc", "fsdaf"))
    blend = _rmse(prior.predict(*args, method="blend")[0], fine[j])
    assert fitfc > 1.1 * base and fsdaf > 1.1 * base  # the priors' assumptions fail here
    assert blend < 1.1 * base
    assert blend < (fitfc + fsdaf) / 2


@pytest.mark.parametrize("seed", [1, 3])
def test_blocky_and_smooth_coarse_images_give_the_same_quality(seed):
    """The same MODIS-like images given nearest-neighbour (blocky) or bilinear (smooth) on the
    fine grid: the blend's RMSE differs by less than 5 %."""
    fine, native, factor = _simulate_raw(seed, 96)
    fine, native = fine[:, 1:4], native[:, 1:4]
    i, j = _clear_dates(fine, 0.2)[:2]
    errors = {}
    for kind, coarse in (("blocky", np.repeat(np.repeat(native, factor, axis=-2), factor, axis=-1)),
                         ("smooth", upsample_bilinear(native, factor))):
        mean, _ = prior.predict(fine[[i]], coarse[[i]], coarse[j], method="blend", coarse_factor=factor)
        errors[kind] = _rmse(mean, fine[j])
    assert errors["blocky"] == pytest.approx(errors["smooth"], rel=0.05)


def test_blend_adds_no_bias_over_the_coarse_pixels():
    """Coarse images that are exact block means of the fine ones: averaged over the coarse pixels,
    the blend matches the target coarse image to 1 % of the change between the dates, where STARFM
    is off by 8 %. (Matching each coarse pixel exactly, as ``fine + coarse change`` does, made the
    real sets worse: docs/methods.md, "Default method".)"""
    fine, _, factor = _simulate_raw(1, 96)
    fine = np.nan_to_num(fine[:, 1:4], nan=float(np.nanmean(fine)))
    native = np.stack([_block_mean(f, factor) for f in fine])
    coarse = np.repeat(np.repeat(native, factor, axis=-2), factor, axis=-1)
    change = np.abs(native[1] - native[0]).mean()
    bias = {}
    for method, options in (("blend", {"coarse_factor": factor}), ("starfm", {})):
        mean, _ = prior.predict(fine[[0]], coarse[[0]], coarse[1], method=method, **options)
        bias[method] = abs(float((_block_mean(mean, factor) - native[1]).mean()))
    assert change > 0.005
    assert bias["blend"] < 0.01 * change
    assert bias["starfm"] > 4 * bias["blend"]
