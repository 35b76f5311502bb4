"""`--cache DIR`: loaded cubes kept as Zarr and reused, keyed by the query and the items found.

The re-run test runs `stfuse predict` twice as separate processes (as a user re-runs it; GDAL's
in-process HTTP cache plays no part) against a real STAC API and HTTP range server on
127.0.0.1, and counts the requests the asset server sees.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from stfuse.data.cube import COMPLETE, load_cubes
from stfuse.evaluate.holdout import load_catalog_cubes
from stfuse.sim.testing import rustac_executable

from conftest import MINI_SPEC as SPEC

DAY = SPEC.dates[8].isoformat()


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir()) if cache.exists() else []


def predict_process(catalog: str, out: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stfuse_cli", "predict", "--catalog", catalog, "--start", DAY, "--end", DAY,
                           "--bands", "red,nir08", "-o", str(out), "-q", "--cache", str(cache)],
                          capture_output=True, text=True, timeout=300)


def pixels(out: Path) -> tuple[np.ndarray, tuple]:
    """Pixels, and the grid and provenance tags that must not depend on the cache."""
    (tif,) = sorted(out.glob("stfuse_*.tif"))
    with rasterio.open(tif) as src:
        tags = src.tags()
        return src.read(), (src.crs.to_wkt(), tuple(src.transform), tags["fine_items"], tags["coarse_items"], tags["pair_dates"])


@pytest.mark.skipif(rustac_executable() is None, reason="rustac not installed (pip install rustac)")
def test_rerun_with_cache_reads_no_remote_cog(api, files, tmp_path):
    cache = tmp_path / "cache"
    before = files.faults.requests
    first = predict_process(api.url, tmp_path / "o1", cache)
    assert first.returncode == 0, first.stderr
    assert files.faults.range_requests > 0 and files.faults.requests > before  # the COGs were read over HTTP
    (entry,) = entries(cache)  # one complete entry, no temporary folder left
    assert (entry / COMPLETE).exists() and {p.name for p in entry.iterdir()} == {"fine.zarr", "coarse.zarr", COMPLETE}

    before = files.faults.requests
    second = predict_process(api.url, tmp_path / "o2", cache)
    assert second.returncode == 0, second.stderr
    assert files.faults.requests == before  # not one request to the asset server
    (data1, meta1), (data2, meta2) = pixels(tmp_path / "o1"), pixels(tmp_path / "o2")
    np.testing.assert_array_equal(data1, data2)
    assert meta1 == meta2
    assert entries(cache) == [entry]


def _bbox(mini_catalog: Path, shrink: float) -> tuple[float, float, float, float]:
    import pystac

    item = next(i for i in pystac.Catalog.from_file(str(mini_catalog / "catalog.json")).get_items(recursive=True)
                if i.collection_id == "landsat-c2-l2")
    x0, y0, x1, y1 = item.bbox
    dx, dy = (x1 - x0) * shrink, (y1 - y0) * shrink
    return (x0 + dx, y0 + dy, x1 - dx, y1 - dy)


def test_same_query_hits_other_bbox_misses(mini_catalog, tmp_path):
    cache = tmp_path / "cache"
    args = dict(catalog=mini_catalog, start=DAY, end=DAY, bands=["red"], cache=cache)
    a = load_cubes(bbox=_bbox(mini_catalog, 0.1), **args)
    assert not a.from_cache and a.cache_path is not None
    again = load_catalog_cubes(bbox=_bbox(mini_catalog, 0.1), **args)  # the holdout path shares the cache
    hit = load_cubes(bbox=_bbox(mini_catalog, 0.1), **args)
    assert hit.from_cache and hit.cache_path == a.cache_path
    xr.testing.assert_identical(hit.fine.compute().drop_vars("spatial_ref"), a.fine.compute().drop_vars("spatial_ref"))
    assert hit.fine.odc.geobox == a.fine.odc.geobox and hit.coarse.odc.geobox == a.coarse.odc.geobox
    assert list(hit.fine.item_id.values) == list(a.fine.item_id.values)
    assert again.fine_clear == dict(zip([np.datetime64(t, "D").item() for t in hit.fine.time.values],
                                        hit.fine.clear_fraction.values.tolist()))
    other = load_cubes(bbox=_bbox(mini_catalog, 0.2), **args)
    assert not other.from_cache and other.cache_path != a.cache_path
    assert len(entries(cache)) == 2
    assert not load_cubes(bbox=_bbox(mini_catalog, 0.1), **{**args, "bands": ["nir08"]}).from_cache


def test_changed_item_in_catalog_invalidates(mini_catalog, tmp_path):
    catalog = tmp_path / "catalog"
    shutil.copytree(mini_catalog, catalog)
    cache = tmp_path / "cache"
    args = dict(catalog=catalog, start=DAY, end=DAY, bands=["red"], cache=cache)
    first = load_cubes(**args)
    assert load_cubes(**args).from_cache
    path = next(p for p in (catalog / "landsat-c2-l2").rglob("*.json") if first.fine_items[0].id in p.name)
    doc = json.loads(path.read_text())
    doc["properties"]["updated"] = "2026-01-01T00:00:00Z"  # the provider reprocessed the scene
    path.write_text(json.dumps(doc))
    changed = load_cubes(**args)
    assert not changed.from_cache and changed.cache_path != first.cache_path


def test_interrupted_cache_write_leaves_nothing_that_looks_complete(mini_catalog, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    args = dict(catalog=mini_catalog, start=DAY, end=DAY, bands=["red"], cache=cache)
    real = xr.Dataset.to_zarr
    calls = []

    def interrupted(self, store, *a, **k):
        calls.append(store)
        if len(calls) == 2:  # fine written, then Ctrl-C while writing coarse
            raise KeyboardInterrupt
        return real(self, store, *a, **k)

    monkeypatch.setattr(xr.Dataset, "to_zarr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_cubes(**args)
    assert entries(cache) == []  # the temporary folder is gone, no entry
    monkeypatch.setattr(xr.Dataset, "to_zarr", real)
    # a folder at the entry's name without the completion marker is never trusted
    entry = load_cubes(**args).cache_path
    (entry / COMPLETE).unlink()
    redo = load_cubes(**args)
    assert not redo.from_cache and (entry / COMPLETE).exists()
    assert load_cubes(**args).from_cache
