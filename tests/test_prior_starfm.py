"""STARFM prior (stfuse.fusion.prior.starfm): exactness, NaN handling, variance, blocking, benchmarks.

Benchmark notes (defaults tuned on the shared benchmarks, 2 CPU cores):
window 31 sampled every 2 px, n_classes 8, local similarity threshold, spectral_eps 5e-4.
estarfm-real-1pair-early RMSE 0.0118 (starfm4py 0.0119, fine_t1 + coarse change 0.0124).
"""

from __future__ import annotations

import pytest
import torch

from stfuse.errors import InputError
from stfuse.fusion.prior.starfm import halo, starfm

from priorkit import (
    bench_task,
    blur,
    one_torch_thread,  # noqa: F401  (fixture used by pytestmark)
)
from priorkit import rmse_masked as rmse

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # results, not speed: one torch thread


# ----------------------------------------------------------------------------- helpers
def class_scene(height: int = 40, width: int = 44, bands: int = 2, seed: int = 0, n_classes: int = 4,
                block: int = 8) -> torch.Tensor:
    """Piecewise-constant ``(B, H, W)`` scene of well-separated classes in ``block`` patches."""
    g = torch.Generator().manual_seed(seed)
    gh, gw = -(-height // block), -(-width // block)
    labels = torch.randint(0, n_classes, (gh, gw), generator=g)
    labels = labels.repeat_interleave(block, 0).repeat_interleave(block, 1)[:height, :width]
    values = torch.linspace(0.05, 0.45, n_classes)[torch.randperm(n_classes, generator=g)]
    band_scale = torch.linspace(1.0, 0.6, bands).view(bands, 1, 1)
    return (values[labels].unsqueeze(0) * band_scale).float()


def shifted_pair(seed: int = 0, offset=(0.03, -0.02), height: int = 40, width: int = 44):
    """A class scene whose coarse image changes by a uniform per-band offset."""
    f = class_scene(height, width, seed=seed)
    c = blur(f) + 0.01  # coarse differs from fine (mixing + bias) but changes uniformly
    delta = torch.tensor(offset).view(-1, 1, 1)
    return f.unsqueeze(0), c.unsqueeze(0), c + delta, f + delta


# ----------------------------------------------------------------------------- behaviour
def test_uniform_offset_is_exact():
    fine, coarse, target, truth = shifted_pair()
    mean, var = starfm(fine, coarse, target)
    assert mean.shape == truth.shape and mean.dtype == torch.float32
    torch.testing.assert_close(mean, truth, rtol=0, atol=2e-6)
    # every neighbour predicts the same value: the variance is the floor (1e-6) up to float32
    # rounding of the second moment
    torch.testing.assert_close(var, torch.full_like(var, 1e-6), rtol=0.05, atol=0)


def test_uniform_offset_is_exact_with_two_pairs_and_full_window():
    f1, c1, t, truth = shifted_pair(seed=1)
    f2 = f1 + 0.02  # a second pair whose coarse image changed by the same amount
    c2 = c1 + 0.02
    mean, _ = starfm(torch.cat([f1, f2]), torch.cat([c1, c2]), t, stride=1, window=15, threshold="global")
    torch.testing.assert_close(mean, truth, rtol=0, atol=2e-6)


def test_uniform_scene_stays_uniform():
    fine = torch.full((1, 3, 30, 33), 0.2)
    coarse = torch.full((1, 3, 30, 33), 0.25)
    target = torch.full((3, 30, 33), 0.31)
    mean, var = starfm(fine, coarse, target)
    torch.testing.assert_close(mean, torch.full_like(target, 0.26), rtol=0, atol=1e-6)
    torch.testing.assert_close(var, torch.full_like(target, 1e-6), rtol=0.05, atol=0)


def test_cloudy_pair_pixels_give_finite_output():
    f, c, t, truth = shifted_pair(seed=2, height=48, width=48)
    f[0, :, 10:16, 12:20] = float("nan")  # cloud in the fine image of the pair
    c[0, :, 30:34, 5:9] = float("nan")  # and a gap in its coarse image
    mean, var = starfm(f, c, t)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    assert (var > 0).all()
    # under the cloud the prediction comes from similar neighbours: still close to the truth
    err = (mean - truth)[:, 10:16, 12:20].abs()
    assert float(err.median()) < 0.05


def test_all_pairs_missing_falls_back_to_coarse_target_with_large_variance():
    f, c, t, _ = shifted_pair(seed=3, height=60, width=60)
    f[:, :, 10:50, 10:50] = float("nan")  # larger than the window: no usable neighbour at the middle
    t[:, 45:60, 0:15] = float("nan")  # target coarse missing at a corner ...
    f[:, :, 44:60, 0:16] = float("nan")  # ... where the pair is missing too
    mean, var = starfm(f, c, t, window=15)
    mid = (slice(None), slice(25, 35), slice(25, 35))
    torch.testing.assert_close(mean[mid], t[mid])
    assert float(var[mid].min()) >= 0.05**2
    # NaN only where the target coarse image is missing too, and surely deep in that corner
    assert torch.isfinite(mean[torch.isfinite(t)]).all()
    assert torch.isnan(mean[:, 52:60, 0:8]).all()
    assert torch.equal(torch.isnan(var), torch.isnan(mean))
    assert (var[torch.isfinite(var)] >= 0).all()


def test_variance_nonnegative_and_larger_where_neighbours_disagree():
    g = torch.Generator().manual_seed(4)
    fine = torch.full((1, 1, 40, 80), 0.2)
    coarse = fine + 0.01
    target = coarse[0] + 0.05
    noise = 0.03 * torch.randn(1, 40, 40, generator=g)
    target[:, :, 40:] += noise  # right half: the neighbours' coarse changes disagree
    mean, var = starfm(fine, coarse, target, window=11)
    assert (var >= 1e-6).all()
    left, right = var[:, 5:35, 5:30], var[:, 5:35, 50:75]
    assert float(right.mean()) > 100 * float(left.mean())


def test_row_blocks_do_not_change_the_result():
    f, c, t, _ = shifted_pair(seed=5, height=37, width=41)
    g = torch.Generator().manual_seed(5)
    t = t + 0.02 * torch.rand(t.shape, generator=g)  # non-uniform change
    f[0, 0, 5:9, 5:9] = float("nan")
    for opts in ({}, {"threshold": "global", "filtering": "reference"}, {"filtering": "paper", "weighting": "log"}):
        big = starfm(f, c, t, block_rows=1000, **opts)
        small = starfm(f, c, t, block_rows=3, **opts)
        for a, b in zip(big, small):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_threads_do_not_change_the_result():
    """Row blocks run on one Python thread per torch thread (stfuse.fusion.prior._window.run_blocks)."""
    f, c, t, _ = shifted_pair(seed=4, height=150, width=41)
    t = t + 0.02 * torch.rand(t.shape, generator=torch.Generator().manual_seed(4))
    f[0, 1, 60:70, 5:9] = float("nan")
    for opts in ({}, {"threshold": "global", "filtering": "reference"}):
        one = starfm(f, c, t, **opts)
        torch.set_num_threads(2)  # the autouse fixture restores 1, then the caller's setting
        two = starfm(f, c, t, **opts)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        for a, b in zip(one, two):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_inputs_are_not_modified():
    """Unusable neighbours are masked in place in the halo blocks, which must be copies."""
    f, c, t, _ = shifted_pair(seed=3)
    f[0, 0, 3:6, 3:6] = float("nan")
    before = [x.clone() for x in (f, c, t)]
    for opts in ({"window": 1}, {"window": 5, "filtering": "paper"}):
        starfm(f, c, t, **opts)
    for x, y in zip((f, c, t), before):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)


def test_tile_with_halo_matches_whole_image():
    f, c, t, _ = shifted_pair(seed=6, height=48, width=40)
    t = t + 0.02 * torch.rand(t.shape, generator=torch.Generator().manual_seed(6))
    opts = {"window": 11}
    h = halo(**opts)
    whole, _ = starfm(f, c, t, **opts)
    y0, y1, x0, x1 = 20, 34, 10, 30
    sl = (slice(y0 - h, y1 + h), slice(x0 - h, x1 + h))
    tile, _ = starfm(f[..., sl[0], sl[1]], c[..., sl[0], sl[1]], t[..., sl[0], sl[1]], **opts)
    torch.testing.assert_close(tile[:, h:-h, h:-h], whole[:, y0:y1, x0:x1], rtol=0, atol=1e-7)


def test_halo_and_validation():
    assert halo() == 15 and halo(window=51) == 25
    f, c, t, _ = shifted_pair()
    with pytest.raises(InputError):
        starfm(f, c[..., :-1], t)
    with pytest.raises(InputError):
        starfm(f[0], c[0], t)
    with pytest.raises(InputError):
        starfm(f, c, t[:1])
    with pytest.raises(InputError):
        starfm(f, c, t, filtering="bogus")
    with pytest.raises(InputError):
        starfm(f, c, t, spectral_eps=0)


def test_deterministic():
    f, c, t, _ = shifted_pair(seed=7)
    t = t + 0.02 * torch.rand(t.shape, generator=torch.Generator().manual_seed(7))
    a = starfm(f, c, t)
    b = starfm(f, c, t)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# ----------------------------------------------------------------------------- benchmarks
def test_benchmark_one_pair_early_rmse():
    fine, coarse, target, truth, valid = bench_task("estarfm-real-1pair-early")
    mean, var = starfm(fine, coarse, target)
    assert torch.isfinite(mean).all() and (var >= 0).all()
    assert rmse(mean, truth, valid) <= 0.0119  # starfm4py (window 31): 0.0119


@pytest.mark.parametrize("task", ["estarfm-real-1pair-early", "estarfm-real-1pair-late", "estarfm-real-2pair"])
def test_benchmark_beats_trivial_baselines(task):
    fine, coarse, target, truth, valid = bench_task(task)
    mean, _ = starfm(fine, coarse, target)
    ours = rmse(mean, truth, valid)
    copy = min(rmse(fine[k], truth, valid) for k in range(fine.shape[0]))
    change = min(rmse(fine[k] + target - coarse[k], truth, valid) for k in range(fine.shape[0]))
    assert ours < copy and ours < change, (ours, copy, change)


def test_benchmark_uniform_change_simulation_is_reproduced():
    fine, coarse, target, truth, valid = bench_task("starfm-sim-test1")
    mean, _ = starfm(fine, coarse, target)
    assert rmse(mean, truth, valid) < 0.005  # values 0.05..0.4; fine + coarse change: 0.064


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_cuda_parity():
    f, c, t, _ = shifted_pair(seed=8, height=64, width=70)
    t = t + 0.02 * torch.rand(t.shape, generator=torch.Generator().manual_seed(8))
    f[0, :, 3:9, 4:12] = float("nan")
    cpu = starfm(f, c, t)
    gpu = starfm(f.cuda(), c.cuda(), t.cuda())
    assert gpu[0].device.type == "cuda"
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5, equal_nan=True)
