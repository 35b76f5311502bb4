"""Scale: tiled STARFM equals untiled; a real dask.distributed cluster on 127.0.0.1 via --scheduler."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner
from scipy.ndimage import gaussian_filter

from stfuse.fusion.prior import halo, predict
from stfuse.output.tiling import predict_tiled
from stfuse.sim.testing import free_port
from stfuse_cli.main import cli


def landscape(size: int, bands: int, seed: int) -> np.ndarray:
    """(bands, size, size) float32 reflectance with field-like structure."""
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.random((size, size)), 6)
    classes = np.digitize(base, np.quantile(base, [0.25, 0.5, 0.75]))
    levels = 0.05 + 0.3 * rng.random((bands, 4))
    texture = 0.01 * rng.standard_normal((bands, size, size))
    return (levels[:, classes] + texture).astype(np.float32)


def test_tiled_starfm_equals_untiled_1000():
    size, bands = 1000, 2
    fine = landscape(size, bands, 0)[None]
    coarse = gaussian_filter(fine, (0, 0, 8, 8)).astype(np.float32)
    target = (coarse[0] + 0.02 + 0.01 * np.sin(np.arange(size) / 90)[None, None, :]).astype(np.float32)
    fine[0, :, 100:140, 200:260] = np.nan  # a cloud
    mean, variance = predict(fine, coarse, target, method="starfm")
    dims4, dims3 = ("pair", "band", "y", "x"), ("band", "y", "x")
    tiled = predict_tiled(xr.DataArray(fine, dims=dims4), xr.DataArray(coarse, dims=dims4), xr.DataArray(target, dims=dims3),
                          predict_fn=lambda f, c, t: predict(f, c, t, method="starfm"), halo=halo("starfm"), tile=256).compute()
    assert np.isfinite(mean).all()
    assert float(np.abs(tiled["mean"].values - mean).max()) < 1e-5
    assert float(np.abs(tiled["variance"].values - variance).max()) < 1e-5


@pytest.fixture(scope="module")
def cluster():
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask_cli = str(Path(sys.executable).parent / "dask")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0", "--no-show"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    for _ in range(2):
        procs.append(subprocess.Popen([dask_cli, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                       "--memory-limit", "2GB"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
    from distributed import Client

    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(address, timeout="2s") as client:
                if len(client.scheduler_info()["workers"]) == 2:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            pytest.fail("dask cluster did not start")
        time.sleep(0.5)
    yield address
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        p.wait(20)


def test_predict_on_existing_cluster_equals_local(cluster, tmp_path):
    args = ["predict", "--start", "2023-06-15", "--end", "2023-06-16", "--bands", "red,nir08", "--tile", "128", "-q"]
    local = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    remote = CliRunner().invoke(cli, [*args, "--scheduler", cluster, "-o", str(tmp_path / "remote")])
    assert remote.exit_code == 0, remote.output
    for name in ("stfuse_2023-06-15.tif", "stfuse_2023-06-16.tif"):
        with rasterio.open(tmp_path / "local" / name) as a, rasterio.open(tmp_path / "remote" / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    from distributed import Client

    with Client(cluster) as client:  # the work really ran on the cluster's workers
        executed = client.run(lambda dask_worker: dask_worker.state.transition_counter)
        assert len(executed) == 2 and all(count > 0 for count in executed.values())
