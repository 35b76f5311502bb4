"""ESTARFM prior (stfuse.fusion.prior.estarfm): exactness, NaN handling, variance, blocking, benchmarks.

Benchmark notes (defaults tuned on the shared benchmark, 2 CPU cores): window 51 (the
reference's half window 25) sampled every 3 px, n_classes 8, local similarity threshold.
estarfm-real-2pair RMSE 0.0072, SSIM 0.889 (reference ESTARFM.py: 0.0076, 0.884).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stfuse.errors import InputError
from stfuse.fusion.prior.estarfm import _f_critical, estarfm, halo

from priorkit import (
    bench_task,
    blur,
    one_torch_thread,  # noqa: F401  (fixture used by pytestmark)
)
from priorkit import rmse_masked as rmse

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # results, not speed: one torch thread


# ----------------------------------------------------------------------------- helpers


def textured(height: int = 40, width: int = 44, bands: int = 3, seed: int = 0) -> torch.Tensor:
    """A ``(B, H, W)`` scene of patches plus per-pixel texture, reflectance ~0.05..0.5."""
    g = torch.Generator().manual_seed(seed)
    patches = torch.rand(bands, height // 8 + 1, width // 8 + 1, generator=g) * 0.35 + 0.08
    base = patches.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :height, :width]
    return (base + 0.02 * torch.rand(bands, height, width, generator=g)).float()


def offset_scene(seed: int = 0, d13=(0.01, -0.005, 0.015), d12=(0.03, -0.02, 0.04), height: int = 40,
                 width: int = 44, coarse_is_fine: bool = False):
    """Two pairs and a target whose coarse images differ by uniform per-band offsets."""
    f1 = textured(height, width, seed=seed)
    c1 = f1.clone() if coarse_is_fine else blur(f1) + 0.01
    d13 = torch.tensor(d13).view(-1, 1, 1)
    d12 = torch.tensor(d12).view(-1, 1, 1)
    fine = torch.stack([f1, f1 + d13])
    coarse = torch.stack([c1, c1 + d13])
    return fine, coarse, c1 + d12, f1 + d12


# ----------------------------------------------------------------------------- behaviour
def test_uniform_offset_is_exact():
    fine, coarse, target, truth = offset_scene()
    mean, var = estarfm(fine, coarse, target)
    assert mean.shape == truth.shape and mean.dtype == torch.float32
    torch.testing.assert_close(mean, truth, rtol=0, atol=2e-6)
    torch.testing.assert_close(var, torch.full_like(var, 1e-6), rtol=0.05, atol=0)


def test_uniform_offset_is_exact_with_regression_and_full_window():
    # coarse == fine and a large t1->t3 change: the regression runs and its slope is 1
    fine, coarse, target, truth = offset_scene(seed=1, d13=(0.05, 0.04, -0.06), coarse_is_fine=True)
    mean, _ = estarfm(fine, coarse, target, window=15, stride=1, threshold="global")
    torch.testing.assert_close(mean, truth, rtol=0, atol=1e-5)


def test_uniform_scene_stays_uniform():
    fine = torch.stack([torch.full((2, 30, 33), 0.2), torch.full((2, 30, 33), 0.24)])
    coarse = fine + 0.03
    target = torch.full((2, 30, 33), 0.30)
    mean, var = estarfm(fine, coarse, target)
    torch.testing.assert_close(mean, torch.full_like(target, 0.27), rtol=0, atol=1e-6)
    assert float(var.max()) < 2e-6 and float(var.min()) > 0


def test_cloudy_pair_pixels_give_finite_output():
    fine, coarse, target, truth = offset_scene(seed=2, height=48, width=48)
    fine[0, :, 10:16, 12:20] = float("nan")  # cloud in the first fine image
    fine[1, :, 30:36, 30:44] = float("nan")  # another in the second
    coarse[1, :, 2:5, 40:44] = float("nan")  # a gap in a coarse image
    mean, var = estarfm(fine, coarse, target)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all() and (var > 0).all()
    # under each cloud the other pair (or the similar pixels) still predicts well
    for sl in ((slice(None), slice(10, 16), slice(12, 20)), (slice(None), slice(30, 36), slice(30, 44))):
        assert float((mean - truth)[sl].abs().max()) < 0.02


def test_one_pair_clouded_over_a_large_area_uses_the_other_pair():
    fine, coarse, target, truth = offset_scene(seed=3, height=80, width=80)
    fine[0, :, 5:75, 5:75] = float("nan")  # much larger than the window
    mean, _ = estarfm(fine, coarse, target, window=15)
    torch.testing.assert_close(mean[:, 30:50, 30:50], truth[:, 30:50, 30:50], rtol=0, atol=1e-5)


def test_all_pairs_missing_falls_back_to_coarse_target_with_large_variance():
    fine, coarse, target, _ = offset_scene(seed=4, height=60, width=60)
    fine[:, :, 10:50, 10:50] = float("nan")
    target[:, 45:60, 0:15] = float("nan")
    fine[:, :, 44:60, 0:16] = float("nan")
    mean, var = estarfm(fine, coarse, target, window=15)
    mid = (slice(None), slice(25, 35), slice(25, 35))
    torch.testing.assert_close(mean[mid], target[mid])
    assert float(var[mid].min()) >= 0.05**2
    assert torch.isfinite(mean[torch.isfinite(target)]).all()
    assert torch.isnan(mean[:, 52:60, 0:8]).all()
    assert torch.equal(torch.isnan(var), torch.isnan(mean))


def test_variance_nonnegative_and_larger_where_neighbours_disagree():
    fine, coarse, target, _ = offset_scene(seed=5, height=40, width=80)
    noise = 0.03 * torch.randn(3, 40, 40, generator=torch.Generator().manual_seed(5))
    target[:, :, 40:] += noise  # right half: the similar pixels' coarse changes disagree
    mean, var = estarfm(fine, coarse, target, window=11, stride=1)
    assert (var > 0).all()
    left, right = var[:, 5:35, 5:30], var[:, 5:35, 50:75]
    assert float(right.mean()) > 10 * float(left.mean())


def test_row_blocks_do_not_change_the_result():
    fine, coarse, target, _ = offset_scene(seed=6, height=37, width=41)
    target = target + 0.03 * torch.rand(target.shape, generator=torch.Generator().manual_seed(6))
    coarse[1] += 0.04 * torch.rand(coarse[1].shape, generator=torch.Generator().manual_seed(7))
    fine[0, 0, 5:9, 5:9] = float("nan")
    for opts in ({}, {"threshold": "global", "stride": 1, "window": 13}):
        big = estarfm(fine, coarse, target, block_rows=1000, **opts)
        small = estarfm(fine, coarse, target, block_rows=4, **opts)
        for a, b in zip(big, small):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_threads_do_not_change_the_result():
    """Row blocks run on one Python thread per torch thread (stfuse.fusion.prior._window.run_blocks)."""
    fine, coarse, target, _ = offset_scene(seed=5, height=130, width=41)
    target = target + 0.03 * torch.rand(target.shape, generator=torch.Generator().manual_seed(5))
    fine[1, 0, 70:75, 5:9] = float("nan")
    one = estarfm(fine, coarse, target, window=21)
    torch.set_num_threads(2)  # the autouse fixture restores 1, then the caller's setting
    two = estarfm(fine, coarse, target, window=21)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("significance", [0.05, 0.01, 0.001, 0.2])
def test_f_critical_values_equal_scipy(significance):
    """The F(1, df) critical values are computed without importing scipy.stats (0.7 s)."""
    stats = pytest.importorskip("scipy.stats")
    ours = _f_critical(significance, 1200)
    assert ours[0] == np.inf and ours.shape == (1201,)
    np.testing.assert_allclose(ours[1:], stats.f.ppf(1 - significance, 1, np.arange(1, 1201)), rtol=1e-9)


def test_tile_with_halo_matches_whole_image():
    fine, coarse, target, _ = offset_scene(seed=8, height=48, width=40)
    target = target + 0.03 * torch.rand(target.shape, generator=torch.Generator().manual_seed(8))
    opts = {"window": 11, "stride": 1}
    h = halo(**opts)
    whole, _ = estarfm(fine, coarse, target, **opts)
    y0, y1, x0, x1 = 20, 34, 10, 30
    sl = (slice(y0 - h, y1 + h), slice(x0 - h, x1 + h))
    tile, _ = estarfm(fine[..., sl[0], sl[1]], coarse[..., sl[0], sl[1]], target[..., sl[0], sl[1]], **opts)
    # the shifts that condition the float32 sums are per-image means: equal up to rounding
    torch.testing.assert_close(tile[:, h:-h, h:-h], whole[:, y0:y1, x0:x1], rtol=0, atol=1e-5)


def test_needs_exactly_two_pairs_and_valid_inputs():
    assert halo() == 25 and halo(window=31) == 15
    fine, coarse, target, _ = offset_scene()
    with pytest.raises(InputError, match="exactly 2"):
        estarfm(fine[:1], coarse[:1], target)
    with pytest.raises(InputError, match="exactly 2"):
        estarfm(torch.cat([fine, fine[:1]]), torch.cat([coarse, coarse[:1]]), target)
    with pytest.raises(InputError):
        estarfm(fine, coarse[..., :-1], target)
    with pytest.raises(InputError):
        estarfm(fine, coarse, target, threshold="bogus")


def test_deterministic():
    fine, coarse, target, _ = offset_scene(seed=9)
    target = target + 0.03 * torch.rand(target.shape, generator=torch.Generator().manual_seed(9))
    a = estarfm(fine, coarse, target)
    b = estarfm(fine, coarse, target)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# ----------------------------------------------------------------------------- benchmarks
def test_benchmark_two_pair_rmse_and_baselines():
    fine, coarse, target, truth, valid = bench_task("estarfm-real-2pair")
    mean, var = estarfm(fine, coarse, target)
    assert torch.isfinite(mean).all() and (var >= 0).all()
    ours = rmse(mean, truth, valid)
    assert ours <= 0.0076  # reference ESTARFM.py (half window 25): 0.0076
    copy = min(rmse(fine[k], truth, valid) for k in range(2))
    change = min(rmse(fine[k] + target - coarse[k], truth, valid) for k in range(2))
    both = rmse((fine + target - coarse).mean(0), truth, valid)
    assert ours < min(copy, change, both), (ours, copy, change, both)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_cuda_parity():
    fine, coarse, target, _ = offset_scene(seed=10, height=64, width=70)
    target = target + 0.03 * torch.rand(target.shape, generator=torch.Generator().manual_seed(10))
    fine[0, :, 3:9, 4:12] = float("nan")
    cpu = estarfm(fine, coarse, target)
    gpu = estarfm(fine.cuda(), coarse.cuda(), target.cuda())
    assert gpu[0].device.type == "cuda"
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5, equal_nan=True)
