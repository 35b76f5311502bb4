"""FSDAF prior (stfuse.fusion.prior.fsdaf): synthetic behaviour and the shared benchmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stfuse.errors import InputError
from stfuse.fusion.prior._coarse import similar_filter
from stfuse.fusion.prior.fsdaf import fsdaf, halo

from priorkit import F, block_mean, t
from priorkit import load_task as _load
from priorkit import rmse_nan as rmse
from priorkit import rmse_ssim as _rmse_ssim
from priorkit import voronoi_scene as scene

# -------------------------------------------------------------------------------------------------
# synthetic behaviour
# -------------------------------------------------------------------------------------------------

def test_uniform_change_is_reproduced():
    _, fine1 = scene()
    rng = np.random.default_rng(5)
    coarse1 = block_mean(fine1, F) + rng.normal(0, 0.01, fine1.shape).astype(np.float32)  # any coarse image
    offset = np.array([0.02, -0.01, 0.05], np.float32)[:, None, None]
    mean, var = fsdaf(t(fine1[None]), t(coarse1[None]), t(coarse1 + offset), coarse_factor=F)
    np.testing.assert_allclose(mean.numpy(), fine1 + offset, atol=2e-6)
    assert mean.dtype == torch.float32 and var.dtype == torch.float32
    assert torch.all(var >= 0)


def test_pure_class_change_is_recovered_by_unmixing():
    cls, fine1 = scene()
    change = np.zeros((3, 3), np.float32)
    change[0] = [0.0, -0.02, 0.15]  # only vegetation changes
    fine2 = fine1 + change[cls].transpose(2, 0, 1)
    coarse1, coarse2 = block_mean(fine1, F), block_mean(fine2, F)
    mean, var = fsdaf(t(fine1[None]), t(coarse1[None]), t(coarse2), coarse_factor=F, n_classes=3)
    pred = mean.numpy()
    base = fine1 + coarse2 - coarse1
    # mixed coarse pixels: where the classes meet
    mixed = np.zeros(cls.shape, bool)
    for c in range(3):
        frac = block_mean((cls == c).astype(np.float32)[None], F)[0]
        mixed |= (frac > 0.05) & (frac < 0.95)
    assert mixed.mean() > 0.3
    assert rmse(pred, fine2) < 0.002
    assert rmse(pred[:, mixed], fine2[:, mixed]) < 0.1 * rmse(base[:, mixed], fine2[:, mixed])
    assert torch.all(var >= 0) and torch.isfinite(var).all()


def test_deterministic_given_seed():
    rng = np.random.default_rng(3)
    fine1 = rng.random((2, 3, 48, 40), dtype=np.float32) * 0.3
    coarse = rng.random((2, 3, 48, 40), dtype=np.float32) * 0.3
    target = rng.random((3, 48, 40), dtype=np.float32) * 0.3
    a = fsdaf(t(fine1), t(coarse), t(target), coarse_factor=F, seed=7)
    b = fsdaf(t(fine1), t(coarse), t(target), coarse_factor=F, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.all(a[1] >= 0)


def test_similar_filter_row_blocks_match():
    rng = np.random.default_rng(0)
    ref, vals = t(rng.random((3, 37, 29))), t(rng.random((2, 37, 29)))
    m1, v1 = similar_filter(ref, vals, 4, 10, block_elems=1 << 24)
    m2, v2 = similar_filter(ref, vals, 4, 10, block_elems=200)  # one row at a time
    torch.testing.assert_close(m1, m2, rtol=0, atol=1e-6)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-6)
    # brute force at one pixel
    y, x = 17, 11
    win = ref[:, y - 4:y + 5, x - 4:x + 5].reshape(3, -1)
    d = ((win - ref[:, y, x][:, None]) ** 2).sum(0)
    idx = torch.argsort(d)[:10]
    oy, ox = idx // 9 - 4, idx % 9 - 4
    w = 1 / (1 + torch.sqrt((oy**2 + ox**2).float()) / 2)
    exp = (vals[:, y - 4:y + 5, x - 4:x + 5].reshape(2, -1)[:, idx] * w).sum(1) / w.sum()
    torch.testing.assert_close(m1[:, y, x], exp)


def test_bad_inputs_raise():
    x = torch.zeros(1, 2, 16, 16)
    with pytest.raises(InputError):
        fsdaf(x, torch.zeros(1, 2, 16, 15), torch.zeros(2, 16, 16))
    with pytest.raises(InputError):
        fsdaf(x, x, torch.zeros(3, 16, 16))
    with pytest.raises(InputError):
        fsdaf(x, x, torch.zeros(2, 16, 16), coarse_factor=0)
    with pytest.raises(InputError):
        fsdaf(x, x, torch.zeros(2, 16, 16), residual="bogus")
    assert halo() >= 20 and halo(window=3, coarse_factor=4, tps_neighbours=1) == 3 + 8 + 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_cuda_parity():
    cls, fine1 = scene()
    change = np.zeros((3, 3), np.float32)
    change[0] = [0.0, -0.02, 0.15]
    fine2 = fine1 + change[cls].transpose(2, 0, 1)
    args = (t(fine1[None]), t(block_mean(fine1, F)[None]), t(block_mean(fine2, F)))
    mc, vc = fsdaf(*args, coarse_factor=F)
    mg, vg = fsdaf(*(a.cuda() for a in args), coarse_factor=F)
    assert mg.device.type == "cuda"
    torch.testing.assert_close(mg.cpu(), mc, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(vg.cpu(), vc, atol=1e-5, rtol=1e-2)


# -------------------------------------------------------------------------------------------------
# shared benchmarks
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(benchmarks, manifest):
    out = {}
    for tid in ("estarfm-real-1pair-early", "estarfm-real-1pair-late", "estarfm-real-2pair", "starfm-sim-test3"):
        fine, coarse, target, truth = _load(benchmarks, manifest[tid])
        mean, var = fsdaf(t(fine), t(coarse), t(target))
        assert torch.isfinite(mean).all() and torch.all(var >= 0)
        baselines = []
        for p in range(fine.shape[0]):
            baselines.append(_rmse_ssim(benchmarks, fine[p], truth)[0])
            baselines.append(_rmse_ssim(benchmarks, fine[p] + target - coarse[p], truth)[0])
        out[tid] = (_rmse_ssim(benchmarks, mean.numpy(), truth), min(baselines))
    return out


@pytest.mark.parametrize("tid", ["estarfm-real-1pair-early", "estarfm-real-1pair-late", "estarfm-real-2pair"])
def test_benchmark_beats_trivial_baselines(results, tid):
    (r, _), best_baseline = results[tid]
    assert r < best_baseline, (tid, r, best_baseline)


def test_benchmark_levels(results):
    # measured: 1pair-early 0.0113 / 0.797, late 0.0066, 2pair 0.0065 (FSDAF.py: 0.0116 / 0.799)
    (r, s), _ = results["estarfm-real-1pair-early"]
    assert r <= 0.0116 and s >= 0.79
    assert results["estarfm-real-1pair-late"][0][0] <= 0.0070
    assert results["estarfm-real-2pair"][0][0] <= 0.0068


def test_benchmark_shape_change(results):
    # starfm-sim-test3: coarse difference 0.066; a simple STARFM (window 31) 0.048; FSDAF 0.021
    (r, _), best_baseline = results["starfm-sim-test3"]
    assert r < 0.03 and r < 0.5 * best_baseline


# -------------------------------------------------------------------------------------------------
# abrupt land-cover change (issue #32): the coarse residual of a flood is signal, not noise
# -------------------------------------------------------------------------------------------------


def test_residual_weights_keep_abrupt_change_and_shrink_noise():
    from stfuse.fusion.prior._coarse import variogram_weight
    from stfuse.fusion.prior.fsdaf import _residual_weights, _robust_nugget

    rng = np.random.default_rng(0)
    sigma = 0.004
    noise = torch.from_numpy(rng.normal(0, sigma, (2, 24, 24)).astype(np.float32))
    # pure noise: the robust nugget is the noise variance, and most of the residual is shrunk
    nug = _robust_nugget(noise)
    assert torch.allclose(nug, torch.full_like(nug, sigma**2), rtol=0.35)
    rw, w = _residual_weights(noise)
    assert torch.all(w >= rw[:, None, None]) and torch.all(w <= 1)
    assert float((w * noise).pow(2).mean()) < 0.5 * float(noise.pow(2).mean())  # measured 0.39
    # a patchy flood: scattered coarse pixels (10 %) drop by 12 sigma. The classical nugget takes
    # it for noise (the per-band weight shrinks the flood by more than half); the robust one does not
    flood = noise.clone()
    mask = torch.from_numpy(rng.random((24, 24)) < 0.1)
    flood[:, mask] -= 12 * sigma
    assert torch.all(_robust_nugget(flood) < 2.5 * nug)  # measured 1.8x
    assert float(variogram_weight(flood).max()) < 0.5
    _, wf = _residual_weights(flood)
    assert float(wf[:, mask].min()) > 0.97
    # a smooth (noise-free) residual is kept whole
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    smooth = (0.01 * torch.sin(yy / 5) * torch.cos(xx / 7))[None]
    assert torch.allclose(_residual_weights(smooth)[1], torch.ones_like(smooth))


def _band_rmse(a, b) -> float:
    """RMSE per band, mean over bands (as in docs/methods.md)."""
    return float(np.mean(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2, axis=(1, 2)))))


@pytest.fixture(scope="module")
def abrupt_scores():
    from stfuse.sim.abrupt import abrupt_task

    out = {}
    for coarse in ("blocky", "smooth"):
        for seed in (1, 2, 3):
            task = abrupt_task(seed, kind="flood", coarse=coarse)
            args = (t(task.fine_pair), t(task.coarse_pair), t(task.coarse_target))
            new = fsdaf(*args, coarse_factor=task.factor)[0].numpy()
            old = fsdaf(*args, coarse_factor=task.factor, residual_weight="variogram")[0].numpy()
            out[coarse, seed] = tuple(_band_rmse(p, task.truth) for p in (new, old, task.baseline()))
    return out


def test_abrupt_flood_blocky_coarse_close_to_the_baseline(abrupt_scores):
    # measured (2026-12-08): FSDAF / (fine + coarse change) = 1.047, 1.039, 1.035 on the blocky
    # (16 px nearest-neighbour) flood scenes; with the per-band variogram weight alone (before
    # issue #32): 1.295, 1.227, 1.173; the FSDAF.py port: 1.036, 1.100, 1.113
    for seed in (1, 2, 3):
        new, old, base = abrupt_scores["blocky", seed]
        assert new < 1.07 * base, (seed, new, base)
        assert new < 0.92 * old, (seed, new, old)


def test_abrupt_flood_smooth_coarse(abrupt_scores):
    # measured: 1.151, 1.143, 1.130 of the baseline with bilinear coarse images (the baseline uses
    # the smooth coarse change inside each coarse pixel; FSDAF works on coarse-pixel means, as the
    # port does: 1.124, 1.134, 1.177); the variogram weight alone: 1.251, 1.223, 1.189
    for seed in (1, 2, 3):
        new, old, base = abrupt_scores["smooth", seed]
        assert new < 1.2 * base and new < 0.98 * old, (seed, new, old, base)


def test_abrupt_simulator_covers_parts_of_coarse_pixels():
    from stfuse.sim.abrupt import abrupt_task

    a = abrupt_task(2, kind="flood", coarse="blocky")
    assert a.fine_pair.shape == a.coarse_pair.shape == (1, 3, 256, 256) and a.truth.shape == a.coarse_target.shape == (3, 256, 256)
    assert np.array_equal(a.truth, abrupt_task(2, kind="flood", coarse="blocky").truth)  # deterministic
    f = a.factor
    blocks = a.coarse_target.reshape(3, 256 // f, f, 256 // f, f)
    assert np.all(blocks == blocks[:, :, :1, :, :1])  # nearest-neighbour blocks
    frac = a.change_mask.reshape(256 // f, f, 256 // f, f).mean((1, 3))
    assert 0.15 < a.change_mask.mean() < 0.35 and ((frac > 0.05) & (frac < 0.95)).mean() > 0.2  # parts of coarse pixels
    nir = a.bands.index("nir08")
    assert a.truth[nir][a.change_mask].mean() < 0.1 < a.fine_pair[0, nir][a.change_mask].mean()  # land -> water
    s = abrupt_task(2, kind="harvest", coarse="smooth", bands=("red", "nir08", "swir16", "swir22"), factor=20, size=300)
    assert s.fine_pair.shape == (1, 4, 300, 300) and s.factor == 20 and 0 < s.change_mask.mean() < 0.5
    assert np.mean(np.diff(s.coarse_target, axis=-1) == 0) < 0.2  # smooth
