"""Shared fixtures: tiny georeferenced rasters and the shared benchmarks location."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "benchmarks"


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    """Path of ../shared/benchmarks; skips the test when it is absent."""
    if not (BENCHMARKS / "MANIFEST.json").exists():
        pytest.skip("../shared/benchmarks is not available")
    return BENCHMARKS


@pytest.fixture(scope="session")
def manifest(benchmarks: Path) -> dict[str, dict]:
    """Benchmark tasks by id."""
    return {t["id"]: t for t in json.loads((benchmarks / "MANIFEST.json").read_text())["tasks"]}


def write_tif(path: Path, data: np.ndarray, *, crs: str | None = "EPSG:32614", transform: Affine | None = None,
              nodata: float | None = None, descriptions: list[str] | None = None, scale: float | None = None) -> Path:
    """Write (B, H, W) ``data`` as a GeoTIFF with the given georeferencing."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    transform = transform or Affine(30, 0, 500000, 0, -30, 4500000)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype,
                       crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, name)
        if scale is not None:
            dst.scales = [scale] * count
    return path


from stfuse.sim.synth import SceneSpec  # noqa: E402

MINI_SPEC = SceneSpec(height=64, width=64, n_days=24, seed=7, cloud_fraction=0.15, change_day=12)
"""A small simulated scene (64 x 64 px, 24 days) for catalog/API tests."""


@pytest.fixture(scope="session")
def mini_catalog(tmp_path_factory) -> Path:
    """A static STAC catalog of :data:`MINI_SPEC` written by the sample writer."""
    from stfuse.sim.sample import write_sample_catalog

    root = tmp_path_factory.mktemp("mini")
    write_sample_catalog(root, MINI_SPEC, overwrite=True)
    return root


@pytest.fixture(scope="session")
def files(mini_catalog):
    """A loopback HTTP range server over the mini catalog."""
    from stfuse.sim.testing import serve_files

    with serve_files(mini_catalog) as server:
        yield server


@pytest.fixture(scope="session")
def api(mini_catalog, files, tmp_path_factory):
    """A real STAC API (rustac) on 127.0.0.1 with the mini catalog's items, assets over HTTP."""
    from stfuse.sim.testing import http_items, rustac_executable, serve_stac_api

    if rustac_executable() is None:
        pytest.skip("rustac not installed (pip install rustac)")
    paths = http_items(mini_catalog / "catalog.json", files.url, mini_catalog, tmp_path_factory.mktemp("items"))
    with serve_stac_api(paths) as server:
        yield server


@pytest.fixture()
def two_pairs(tmp_path):
    """Two 3-band 48 x 48 pairs of 8 x 8 px fields on disk (fine = coarse, integer x 1e4); the
    second date is brighter by 0.03. A list of (fine path, coarse path)."""
    rng = np.random.default_rng(2)
    fields = (0.1 + 0.2 * rng.random((3, 6, 6))).astype(np.float32)
    fine = np.repeat(np.repeat(fields, 8, axis=1), 8, axis=2)
    out = []
    for k, shift in enumerate((0.0, 0.03)):
        data = np.round((fine + shift) * 10000).astype(np.int16)
        out.append((write_tif(tmp_path / f"L{k}.tif", data, nodata=-9999), write_tif(tmp_path / f"M{k}.tif", data, nodata=-9999)))
    return out
