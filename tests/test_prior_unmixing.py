"""Behaviour FSDAF and Fit-FC share (both work from coarse change resolved on the fine grid):
a uniform scene stays uniform, and missing pixels are handled, with per-method accuracy bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stfuse.fusion.prior.fitfc import fitfc
from stfuse.fusion.prior.fsdaf import fsdaf

from priorkit import F, block_mean, t
from priorkit import rmse_nan as rmse
from priorkit import voronoi_scene as scene


@pytest.mark.parametrize("method", [fsdaf, fitfc], ids=["fsdaf", "fitfc"])
def test_uniform_scene_stays_uniform(method):
    fine1 = np.full((1, 3, 40, 48), 0.1, np.float32)
    coarse1 = np.full_like(fine1, 0.12)
    target = np.full((3, 40, 48), 0.15, np.float32)
    mean, var = method(t(fine1), t(coarse1), t(target), coarse_factor=F)
    np.testing.assert_allclose(mean.numpy(), 0.13, atol=1e-6)
    assert float(var.max()) < 1e-8 and float(var.min()) >= 0


@pytest.mark.parametrize("method, clear_rmse, cloud_variance_ratio", [(fsdaf, 0.01, 10), (fitfc, 0.02, 2)], ids=["fsdaf", "fitfc"])
def test_nan_pixels_are_handled(method, clear_rmse, cloud_variance_ratio):
    cls, fine1 = scene()
    change = np.zeros((3, 3), np.float32)
    change[0] = [0.0, -0.02, 0.15]
    fine2 = fine1 + change[cls].transpose(2, 0, 1)
    coarse1, coarse2 = block_mean(fine1, F), block_mean(fine2, F)
    cloud = np.zeros(cls.shape, bool)
    cloud[20:40, 30:55] = True
    f1 = fine1.copy()
    f1[:, cloud] = np.nan
    c1 = coarse1.copy()
    c1[:, 60:70, 0:12] = np.nan
    c2 = coarse2.copy()
    c2[:, 80:, 80:] = np.nan
    mean, var = method(t(f1[None]), t(c1[None]), t(c2), coarse_factor=F)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all() and torch.all(var >= 0)
    m, v = mean.numpy(), var.numpy()
    assert rmse(m[:, ~cloud], fine2[:, ~cloud]) < clear_rmse
    # under the cloud: a coarse-based guess, flagged by a larger variance
    assert np.median(v[:, cloud]) > cloud_variance_ratio * np.median(v[:, ~cloud])
    # a second, clear pair fills the cloud through the inverse-variance combination
    mean2, _ = method(t(np.stack([f1, fine1])), t(np.stack([c1, coarse1])), t(c2), coarse_factor=F)
    assert rmse(mean2.numpy()[:, cloud], fine2[:, cloud]) < 0.5 * rmse(m[:, cloud], fine2[:, cloud])
    # nothing to predict from: NaN
    mean3, var3 = method(t(fine1[None]), t(coarse1[None]), t(np.full_like(coarse2, np.nan)), coarse_factor=F)
    assert torch.isnan(mean3).all() and torch.isnan(var3).all()
