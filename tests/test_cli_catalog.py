"""`stfuse predict` in catalog mode on the bundled sample_scenes, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from stfuse_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_scenes"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def truth_item(day: str) -> pystac.Item:
    catalog = pystac.Catalog.from_file(str(SAMPLE / "catalog.json"))
    return next(i for i in catalog.get_items(recursive=True) if i.collection_id == "stfuse-truth" and i.datetime.date().isoformat() == day)


def test_predict_sample_days_with_truth_check(tmp_path):
    out = tmp_path / "out"
    result = run("predict", "--start", "2023-06-13", "--end", "2023-06-14", "--bands", "red,nir08", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    tifs = sorted(out.glob("stfuse_*.tif"))
    assert [p.name for p in tifs] == ["stfuse_2023-06-13.tif", "stfuse_2023-06-14.tif"]
    path = tifs[1]
    assert cog_validate(str(path))[0]
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32614 and src.res == (30.0, 30.0) and np.isnan(src.nodata)
        assert src.descriptions == ("red", "nir08", "red_sigma", "nir08_sigma", "quality")
        tags = src.tags()
        assert json.loads(tags["pair_dates"]) == ["2023-06-06", "2023-06-22"]
        assert json.loads(tags["quality"])["bits"] == {"coarse_missing": 1, "fine_missing": 2, "large_change": 4, "observed": 8, "filled": 16}
        pred, sigma, flags = src.read()[:2], src.read()[2:4], src.read(5)
        bounds = src.bounds
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    assert [i.id for i in collection.get_items()] == ["stfuse_2023-06-13", "stfuse_2023-06-14"]
    item = pystac.Item.from_file(str(path.with_suffix(".json")))
    assert item.datetime.date().isoformat() == "2023-06-14" and item.properties["stfuse:pair_dates"] == ["2023-06-06", "2023-06-22"]

    # accuracy against the simulator's truth for that day (a truth item of the sample)
    truth = truth_item("2023-06-14")
    with rasterio.open(truth.assets["reflectance"].get_absolute_href()) as src:
        assert tuple(src.bounds) == tuple(bounds)
        names = list(src.descriptions)
        scale, offset = src.scales[0], src.offsets[0]
        t = src.read([names.index("red") + 1, names.index("nir08") + 1]).astype(np.float32) * scale + offset
    ok = np.isfinite(pred)
    rmse = float(np.sqrt(np.mean((pred[ok] - t[ok]) ** 2)))
    assert ok.mean() > 0.95 and rmse < 0.03
    assert (sigma[np.isfinite(sigma)] >= 0).all()
    assert set(np.unique(flags)) <= set(range(8)) | set(range(16, 24)) and (flags == 0).mean() > 0.5  # 8: not a Landsat day


def test_zarr_output_opens_with_crs(tmp_path):
    out = tmp_path / "z"
    result = run("predict", "--start", "2023-06-20", "--end", "2023-06-21", "--bands", "red", "--format", "zarr", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(out / "stfuse.zarr")
    assert ds.reflectance.dims == ("time", "band", "y", "x") and ds.sizes["time"] == 2
    assert bool(ds.complete.all()) and np.isfinite(ds.reflectance.values).mean() > 0.95
    import rioxarray  # noqa: F401

    assert ds.rio.crs.to_epsg() == 32614


def test_variance_scale_applies_to_cog_and_zarr(tmp_path):
    """`--variance-scale 4` in catalog mode: sigma doubles in the COG and the Zarr store, the mean
    is unchanged, and the COG's tags record the scale."""
    day = ["--start", "2023-06-20", "--end", "2023-06-20", "--bands", "red"]
    assert run("predict", *day, "-o", tmp_path / "plain", "-q").exit_code == 0
    result = run("predict", *day, "--variance-scale", "4", "--format", "cog,zarr", "-o", tmp_path / "scaled", "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "plain" / "stfuse_2023-06-20.tif") as a, rasterio.open(tmp_path / "scaled" / "stfuse_2023-06-20.tif") as b:
        plain, scaled, tags = a.read(), b.read(), b.tags()
    np.testing.assert_array_equal(scaled[0], plain[0])
    ok = np.isfinite(plain[1])
    assert (plain[1][ok] > 0).mean() > 0.5
    np.testing.assert_allclose(scaled[1][ok], 2 * plain[1][ok], rtol=1e-6)
    assert json.loads(tags["calibration"])["user_variance_scale"] == 4.0
    ds = xr.open_zarr(tmp_path / "scaled" / "stfuse.zarr")
    np.testing.assert_allclose(ds.sigma.isel(time=0, band=0).values[ok], scaled[1][ok], rtol=1e-6)


@pytest.mark.parametrize(
    "args, code, match",
    [
        (["--start", "2023-06-20", "--end", "2023-06-10"], 2, "reversed"),
        (["--start", "20230610"], 2, "not an ISO 8601 date"),
        (["--bbox", "10", "10", "10.1", "10.1"], 2, "no landsat-c2-l2 items"),
        (["--bbox", "10", "95", "11", "96"], 2, "not within lon -180..180"),
        (["--min-clear", "0.99", "--start", "2023-06-10", "--end", "2023-06-11"], 2, "no clear fine/coarse pair"),
        (["--bands", "red,purple"], 2, "unknown band 'purple'"),
        (["--format", "netcdf"], 2, "unknown output format"),
        (["--catalog", "nowhere/catalog.json"], 2, "catalog not found"),
        (["--coarse-collection", "modis-09GA-061"], 2, "no modis-09GA-061 items"),  # the sample has MCD43A4 only
    ],
)
def test_catalog_mode_bad_input(tmp_path, args, code, match):
    out = tmp_path / "out"
    result = run("predict", *args, "-o", out, "-q")
    assert result.exit_code == code, result.output
    assert match in result.output and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_existing_outputs_refused_then_overwritten(tmp_path):
    out = tmp_path / "out"
    args = ["predict", "--start", "2023-06-10", "--end", "2023-06-10", "--bands", "red", "-o", out, "-q"]
    assert run(*args).exit_code == 0
    first = (out / "stfuse_2023-06-10.tif").stat().st_mtime_ns
    again = run(*args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert (out / "stfuse_2023-06-10.tif").stat().st_mtime_ns == first
    assert run(*args, "--overwrite").exit_code == 0


def _cli_process(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "stfuse_cli", "predict", "--start", "2023-06-08", "--end", "2023-06-13", "--bands", "red,nir08",
           "--format", "cog,zarr", "--method", "starfm", "-o", str(out), *extra]  # the fastest prior: resume is tested
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _read_all(out: Path) -> dict[str, np.ndarray]:
    arrays = {p.name: rasterio.open(p).read() for p in sorted(out.glob("stfuse_*.tif"))}
    arrays["zarr"] = xr.open_zarr(out / "stfuse.zarr").reflectance.values
    return arrays


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    reference, interrupted = tmp_path / "ref", tmp_path / "int"
    proc = _cli_process(reference, "-q")
    assert proc.wait(300) == 0, proc.stderr.read().decode()

    proc = _cli_process(interrupted)
    deadline = time.monotonic() + 300
    while not list(interrupted.glob("stfuse_*.tif")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    finished = sorted(interrupted.glob("stfuse_*.tif"))
    assert 0 < len(finished) < 6, "the kill should land mid-run"
    for path in finished:  # anything that looks complete is complete
        assert cog_validate(str(path))[0]
    complete = xr.open_zarr(interrupted / "stfuse.zarr").complete.values
    assert not complete.all()

    proc = _cli_process(interrupted, "--resume", "-q")
    assert proc.wait(300) == 0, proc.stderr.read().decode()
    assert not list(interrupted.glob(".*partial*"))  # a later run leaves no temporaries of its own
    ref, got = _read_all(reference), _read_all(interrupted)
    assert ref.keys() == got.keys() and len(ref) == 7
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


def test_region_file_runs_and_resumes(tmp_path):
    region = tmp_path / "r.yaml"
    region.write_text(f"name: tiny\ncatalog: {SAMPLE}\nstart: 2023-06-10\nend: 2023-06-11\nbands: [red]\nformat: [cog, zarr]\n")
    out = tmp_path / "out"
    first = run("region", region, "-o", out, "-q")
    assert first.exit_code == 0, first.output
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("stfuse_*.tif")}
    assert len(stamps) == 2
    again = run("region", region, "-o", out)
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("stfuse_*.tif")} == stamps  # nothing recomputed
    assert "wrote 0 day(s), skipped 2 already complete" in again.output  # days, not files


def test_region_file_passes_calibration_options(tmp_path):
    """`variance_scale` (and the other predict options) in a region file reach `stfuse.predict`."""
    from stfuse.regions import load_region

    region = tmp_path / "r.yaml"
    region.write_text(f"catalog: {SAMPLE}\nstart: 2023-06-10\nend: 2023-06-10\nbands: [red]\nvariance_scale: 4\nseed: 3\n")
    assert load_region(region).fusion.variance_scale == 4 and load_region(region).fusion.seed == 3
    result = run("region", region, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "stfuse_2023-06-10.tif") as src:
        assert json.loads(src.tags()["calibration"])["user_variance_scale"] == 4
    region.write_text(f"catalog: {SAMPLE}\nstart: 2023-06-10\nend: 2023-06-10\nvariance_scale: -1\n")
    result = run("region", region, "-o", tmp_path / "bad", "-q")
    assert result.exit_code == 2 and "variance scale must be a positive number" in result.output


def test_plain_progress_logs_each_day_once(tmp_path):
    """Without a terminal (logs, CI) progress is one line per finished day, in order."""
    result = run("predict", "--start", "2023-06-13", "--end", "2023-06-14", "--bands", "red", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "predicting days" in ln]
    assert lines == ["[1/2] predicting days 2023-06-13", "[2/2] predicting days 2023-06-14"]
