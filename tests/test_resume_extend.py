"""`--resume` that users can build on (issue #28): a Zarr store grows to later and earlier days,
a resumed day counts as done only if it was made as this run asks, and the summary and the
store's metadata say what they hold. On the bundled sample_scenes, one band, the fastest prior."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
import zarr
from click.testing import CliRunner

from stfuse_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_scenes"
AREA = ["--bbox", "-98.868", "38.354", "-98.80", "38.407"]  # the sample's north-west quarter: fast
FAST = ["--bands", "red", "--method", "starfm", *AREA]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def predict(out: Path, start: str, end: str, *extra) -> str:
    result = run("predict", "--start", start, "--end", end, *FAST, "--format", "cog,zarr", "-o", out, *extra)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def one_shot(tmp_path_factory) -> Path:
    """2023-06-10 .. 2023-06-15 written in one run: what any resumed or extended run must equal."""
    out = tmp_path_factory.mktemp("one_shot")
    predict(out, "2023-06-10", "2023-06-15", "-q")
    return out


def cog_arrays(out: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for path in sorted(out.glob("stfuse_*.tif")):
        with rasterio.open(path) as src:
            arrays[path.name] = src.read()
    return arrays


def assert_store_equal(got: xr.Dataset, ref: xr.Dataset) -> None:
    np.testing.assert_array_equal(got.time.values, ref.time.values)
    assert (np.diff(got.time.values) > np.timedelta64(0)).all()  # ascending
    assert got.complete.values.all()
    for name in ("reflectance", "sigma", "quality"):
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=name)


def test_extend_store_to_later_days_equals_one_shot(tmp_path, one_shot):
    """4 days, then `--resume` with a later --end: 2 days appended to the store (which today
    crashed with BoundsCheckError after writing the new COGs); COGs and store = the one-shot run."""
    out = tmp_path / "out"
    predict(out, "2023-06-10", "2023-06-13", "-q")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("stfuse_*.tif")}
    said = predict(out, "2023-06-10", "2023-06-15", "--resume")
    assert "wrote 2 day(s), skipped 4 already complete (2023-06-10 .. 2023-06-15)" in said
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("stfuse_*.tif") if p.name in stamps} == stamps  # not recomputed
    got, ref = cog_arrays(out), cog_arrays(one_shot)
    assert got.keys() == ref.keys() and len(ref) == 6
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert_store_equal(xr.open_zarr(out / "stfuse.zarr"), xr.open_zarr(one_shot / "stfuse.zarr"))
    assert not list(out.glob(".stfuse.zarr.*"))  # no temporaries left


def test_extend_store_to_earlier_days_keeps_time_sorted(tmp_path, one_shot):
    """2 days, then `--resume` with an earlier --start: the store is rewritten sorted; the days
    it had keep their values and `complete` flags; all = the one-shot run's days."""
    out = tmp_path / "out"
    predict(out, "2023-06-12", "2023-06-13", "-q")
    said = predict(out, "2023-06-10", "2023-06-13", "--resume")
    assert "wrote 2 day(s), skipped 2 already complete (2023-06-10 .. 2023-06-13)" in said
    ref = xr.open_zarr(one_shot / "stfuse.zarr").isel(time=slice(0, 4))
    assert_store_equal(xr.open_zarr(out / "stfuse.zarr"), ref)
    assert not list(out.glob(".stfuse.zarr.*"))


def test_region_file_extends_to_a_later_end(tmp_path, one_shot):
    """The same from a region file (always resumed) whose `end:` moved on."""
    region, out = tmp_path / "r.yaml", tmp_path / "out"
    text = (f"catalog: {SAMPLE}\nbbox: [{', '.join(AREA[1:])}]\nstart: 2023-06-14\nend: {{end}}\nbands: [red]\nmethod: starfm\n"
            "format: [cog, zarr]\n")
    region.write_text(text.format(end="2023-06-14"))
    assert run("region", region, "-o", out, "-q").exit_code == 0
    region.write_text(text.format(end="2023-06-15"))
    again = run("region", region, "-o", out)
    assert again.exit_code == 0, again.output
    assert "wrote 1 day(s), skipped 1 already complete (2023-06-14 .. 2023-06-15)" in again.output
    assert_store_equal(xr.open_zarr(out / "stfuse.zarr"), xr.open_zarr(one_shot / "stfuse.zarr").isel(time=slice(4, 6)))


def test_resume_with_other_bands_recomputes_cogs(tmp_path, caplog):
    """`--resume --bands nir08` over red COGs: not "skipped 2 already complete" (today) but
    recomputed, with the reason logged; the COGs then hold nir08."""
    out = tmp_path / "out"
    days = ["--start", "2023-06-12", "--end", "2023-06-13", "--method", "starfm", *AREA]
    assert run("predict", *days, "--bands", "red", "-o", out, "-q").exit_code == 0
    with caplog.at_level(logging.INFO, logger="stfuse"):
        result = run("predict", *days, "--bands", "nir08", "-o", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "wrote 2 day(s) (2023-06-12 .. 2023-06-13)" in result.output and "skipped" not in result.output
    assert "2023-06-12: bands differ (red vs nir08); recomputing" in caplog.text
    for path in sorted(out.glob("stfuse_*.tif")):
        with rasterio.open(path) as src:
            assert src.descriptions == ("nir08", "nir08_sigma", "quality")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stfuse"):  # and a matching rerun skips them
        result = run("predict", *days, "--bands", "nir08", "-o", out, "--resume")
    assert "wrote 0 day(s), skipped 2 already complete" in result.output and "recomputing" not in caplog.text


def test_resume_refuses_a_store_of_other_bands_settings_or_grid_before_writing(tmp_path):
    """A store that cannot be continued is refused (exit 2, what to do) before any COG is written."""
    out = tmp_path / "out"
    predict(out, "2023-06-13", "2023-06-13", "-q")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    later = ["--start", "2023-06-13", "--end", "2023-06-14", "--format", "cog,zarr", "-o", out, "--resume"]
    for extra, match in [
        (["--bands", "nir08", "--method", "starfm", *AREA], "holds bands red, this run asks for nir08"),
        (["--bands", "red", "--method", "fitfc", *AREA], "other settings (method starfm vs fitfc"),
        (["--bands", "red", "--method", "starfm", *AREA, "--dtype", "int16"], "holds float32 values, this run asks for --dtype int16"),
        (["--bands", "red", "--method", "starfm"], "on another grid"),  # the whole sample
    ]:
        result = run("predict", *later, *extra)
        assert result.exit_code == 2, result.output
        assert match in result.output and "another folder" in result.output and "Traceback" not in result.output
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before, extra  # nothing written


def test_zarr_only_summary_names_the_days(tmp_path):
    result = run("predict", "--start", "2023-06-20", "--end", "2023-06-21", *FAST, "--format", "zarr", "-o", tmp_path / "z")
    assert result.exit_code == 0, result.output
    assert "wrote 2 day(s) (2023-06-20 .. 2023-06-21): Zarr store" in result.output


def test_zarr_quality_declares_no_nodata(tmp_path, one_shot):
    """`quality` holds flags (0 = no flag): no nodata/_FillValue in its attributes, so readers
    do not mask 0 or any other flag value; after an int16 store is rewritten for an earlier day
    too (which keeps the day it had as it was)."""
    out = tmp_path / "out"
    predict(out, "2023-06-15", "2023-06-15", "--dtype", "int16", "-q")
    had = xr.open_zarr(out / "stfuse.zarr", mask_and_scale=False).compute()
    predict(out, "2023-06-14", "2023-06-15", "--dtype", "int16", "--resume", "-q")
    grown = xr.open_zarr(out / "stfuse.zarr", mask_and_scale=False)
    assert grown.reflectance.dtype == np.int16 and grown.complete.values.tolist() == [True, True]
    for name in ("reflectance", "sigma", "quality"):
        np.testing.assert_array_equal(grown[name].isel(time=1).values, had[name].isel(time=0).values, err_msg=name)
    for store in (one_shot / "stfuse.zarr", out / "stfuse.zarr"):
        ds = xr.open_zarr(store)
        assert ds.quality.dtype == np.uint8
        assert not {"nodata", "_FillValue", "missing_value"} & set(ds.quality.attrs), ds.quality.attrs
        assert "_FillValue" not in ds.quality.encoding
        assert not {"nodata", "_FillValue", "missing_value"} & set(zarr.open_group(str(store), mode="r")["quality"].attrs)
        assert ds.quality.rio.nodata is None
