"""Shared helpers of the prior tests (tests/test_prior_*.py): scenes, benchmark readers, scores."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


@pytest.fixture
def one_torch_thread():
    """Run single-threaded: these tests check results, not speed, and torch's thread pool
    slows many small operations down badly when the CPU cores are shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blur(x: torch.Tensor, k: int = 9) -> torch.Tensor:
    """Box blur of ``(..., H, W)``: a stand-in for coarse pixels resampled to the fine grid."""
    shape = x.shape
    y = torch.nn.functional.avg_pool2d(x.reshape(-1, 1, *shape[-2:]), k, 1, k // 2, count_include_pad=False)
    return y.reshape(shape)


def bench_task(task_id: str):
    """``fine, coarse, target`` tensors and ``truth, valid`` arrays of a shared benchmark task,
    read as score.py reads them; skips when the benchmarks are absent."""
    manifest = BENCH / "MANIFEST.json"
    if not manifest.exists():
        pytest.skip(f"shared benchmarks not found at {BENCH}")
    rasterio = pytest.importorskip("rasterio")
    task = {t["id"]: t for t in json.loads(manifest.read_text())["tasks"]}[task_id]

    def read(rel: str):
        with rasterio.open(BENCH / rel) as d:
            a = d.read().astype("float64")
            valid = np.ones(a.shape, bool)
            if d.nodata is not None and not np.isnan(d.nodata):
                valid &= a != d.nodata
            if np.issubdtype(np.dtype(d.dtypes[0]), np.integer):
                scales = [s if s not in (None, 1.0) else 1e-4 for s in d.scales]
                a = a * np.asarray(scales)[:, None, None] + np.asarray(d.offsets)[:, None, None]
        return a, valid & np.isfinite(a)

    def tensor(rel: str) -> torch.Tensor:
        a, valid = read(rel)
        return torch.from_numpy(np.where(valid, a, np.nan).astype(np.float32))

    fine = torch.stack([tensor(p["fine"]) for p in task["pairs"]])
    coarse = torch.stack([tensor(p["coarse"]) for p in task["pairs"]])
    return (fine, coarse, tensor(task["target"]["coarse"]), *read(task["truth"]))


def rmse_masked(pred, truth: np.ndarray, valid: np.ndarray) -> float:
    """Mean over bands of the per-band RMSE exactly as score.py computes it."""
    p = np.asarray(pred, dtype=np.float32).astype("float64")
    ok = valid & np.isfinite(p)
    return float(np.mean([np.sqrt(np.mean((p[b][ok[b]] - truth[b][ok[b]]) ** 2)) for b in range(truth.shape[0])]))


F = 8  # coarse factor of the synthetic scenes


REFL = np.array([[0.05, 0.04, 0.30],  # vegetation
                 [0.12, 0.15, 0.22],  # soil
                 [0.03, 0.02, 0.01]], np.float32)  # water


def patch_classes(H: int = 96, W: int = 96, n_seeds: int = 30, seed: int = 0) -> np.ndarray:
    """Irregular class patches (Voronoi cells of random seeds, 3 classes), not aligned to the grid."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, [H, W], (n_seeds, 2))
    lab = rng.integers(0, 3, n_seeds)
    lab[:3] = [0, 1, 2]
    yy, xx = np.mgrid[0:H, 0:W]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    return lab[d.argmin(-1)]


def rmse_nan(a, b) -> float:
    return float(np.sqrt(np.nanmean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))

def block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """(..., H, W) -> block means expanded back to (..., H, W) (a perfect coarse sensor)."""
    *lead, H, W = x.shape
    m = x.reshape(*lead, H // f, f, W // f, f).mean((-3, -1))
    return np.repeat(np.repeat(m, f, -2), f, -1)


def voronoi_scene(noise: float = 0.002, seed: int = 0):
    cls = patch_classes(seed=seed)
    rng = np.random.default_rng(seed + 1)
    fine1 = (REFL[cls].transpose(2, 0, 1) + rng.normal(0, noise, (3,) + cls.shape)).astype(np.float32)
    return cls, fine1


def t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, np.float32))


def read_scaled(path):
    with rasterio.open(path) as d:
        return d.read().astype(np.float64) * 1e-4


def load_task(benchmarks, task):
    fine = np.stack([read_scaled(benchmarks / p["fine"]) for p in task["pairs"]])
    coarse = np.stack([read_scaled(benchmarks / p["coarse"]) for p in task["pairs"]])
    return fine, coarse, read_scaled(benchmarks / task["target"]["coarse"]), read_scaled(benchmarks / task["truth"])


def rmse_ssim(benchmarks, pred, truth):
    """Mean over bands of RMSE and SSIM, as score.py computes them."""
    spec = importlib.util.spec_from_file_location("bench_score", benchmarks / "score.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    p = np.asarray(pred, np.float64)
    valid = np.isfinite(p) & np.isfinite(truth)
    r, s = [], []
    for b in range(truth.shape[0]):
        m = valid[b]
        e = p[b][m] - truth[b][m]
        r.append(float(np.sqrt(np.mean(e**2))))
        dr = float(truth[b][m].max() - truth[b][m].min())
        s.append(score.ssim(np.where(valid[b], p[b], truth[b]), truth[b], dr))
    return float(np.mean(r)), float(np.mean(s))
