"""The lazy fused cube (stfuse.open_fused), the request objects and the one per-day path."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import rasterio

import stfuse
import stfuse.fused
from stfuse.config import FusionConfig, Query, RunConfig
from stfuse.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_scenes"
DAYS = dict(start="2023-06-10", end="2023-06-12")


@pytest.fixture
def counted(monkeypatch):
    """Count prior calls (one per tile: the sample's 400 x 400 px is one tile)."""
    calls: list[int] = []
    original = stfuse.fused.prior_predict

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(stfuse.fused, "prior_predict", counting)
    return calls


def test_open_fused_is_lazy_and_one_day_computes_one_day(counted):
    ds = stfuse.open_fused(Query(catalog=SAMPLE, bands=("red", "nir08"), **DAYS))
    assert dict(ds.sizes) == {"time": 3, "band": 2, "y": 400, "x": 400}
    assert ds.reflectance.dtype == np.float32 and ds.sigma.dtype == np.float32 and ds.quality.dtype == np.uint8
    assert ds.quality.dims == ("time", "y", "x")
    assert "nodata" not in ds.quality.attrs and "_FillValue" not in ds.quality.attrs  # flags: 0 = no flag (#28)
    assert "nodata" not in ds.reflectance.attrs  # the inputs' MODIS fill does not describe the output
    assert [str(t)[:10] for t in ds.time.values] == ["2023-06-10", "2023-06-11", "2023-06-12"]
    assert ds.pair_dates.values.tolist() == ["2023-06-06;2023-06-22"] * 3 and set(ds.method.values) == {"blend"}  # the default
    assert ds.odc.geobox.crs.epsg == 32614
    assert counted == []  # opening predicted nothing
    day = ds.sel(time="2023-06-11").compute()
    assert len(counted) == 1  # one day, one tile: the other two days were not predicted
    assert np.isfinite(day.reflectance.values).mean() > 0.99 and (day.sigma.values[np.isfinite(day.sigma.values)] > 0).all()


def test_open_fused_equals_predict_bit_for_bit(tmp_path):
    """stfuse.predict is open_fused's cube written out: the COG holds the same numbers."""
    query = Query(catalog=SAMPLE, start="2023-06-14", end="2023-06-14", bands=("green", "swir16"))
    fusion = FusionConfig(method="fsdaf", variance_scale=1.5)
    ds = stfuse.open_fused(query, fusion).isel(time=0).compute()
    (cog,) = stfuse.predict(query, fusion, RunConfig(out_dir=tmp_path))
    with rasterio.open(cog) as src:
        data = src.read()
        assert list(src.descriptions) == ["green", "swir16", "green_sigma", "swir16_sigma", "quality"]
    np.testing.assert_array_equal(data[:2], ds.reflectance.values)
    np.testing.assert_array_equal(data[2:4], ds.sigma.values)
    np.testing.assert_array_equal(data[4], ds.quality.values)


def test_keyword_settings_build_the_same_objects():
    a = stfuse.open_fused(catalog=SAMPLE, start="2023-06-10", end="2023-06-10", bands=["red"], method="fitfc", tile=256)
    b = stfuse.open_fused(Query(catalog=SAMPLE, start="2023-06-10", end="2023-06-10", bands=("red",)),
                          FusionConfig(method="fitfc"), RunConfig(tile=256))
    assert a.attrs["query"] == b.attrs["query"] and a.attrs["fusion"] == b.attrs["fusion"]
    assert a.reflectance.data.chunks == b.reflectance.data.chunks  # tiles of 256 px


@pytest.mark.parametrize("settings, message", [
    (dict(colour="red"), "unknown key 'colour'; valid keys: .*bands"),
    (dict(bbox=(1, 2, 3, 4), aoi={"type": "Point", "coordinates": [0, 0]}), "bbox or an aoi, not both"),
    (dict(bbox=(1, 2, 3)), "bbox must be 4 numbers"),
    (dict(method="starfn"), "unknown method 'starfn'"),
    (dict(weights="x.pt"), "only used with --refine"),
    (dict(variance_scale=0), "variance scale must be a positive number"),
    (dict(max_pairs=0), "max_pairs must be a positive integer"),
    (dict(min_clear=1.5), "between 0 and 1"),
    (dict(method="fsdaf", options={"windw": 5}), "method fsdaf has no option 'windw'; its options: .*window"),
    (dict(formats=("cog", "netcdf")), "unknown output format"),
    (dict(device="tpu"), "unknown device 'tpu'"),
])
def test_request_objects_refuse_bad_settings(settings, message):
    with pytest.raises(InputError, match=message):
        stfuse.config.resolve_configs(None, None, None, settings, where="test")


def test_request_objects_are_frozen_and_replaceable():
    fusion = FusionConfig(method="starfm", window=31)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fusion.method = "fsdaf"  # type: ignore[misc]
    assert dataclasses.replace(fusion, method="fsdaf").prior_options == {"window": 31}
    assert Query(bands=["red", "nir08"]).bands == ("red", "nir08")


def test_output_checks_come_before_any_search(tmp_path, monkeypatch):
    """An existing output or a .tif folder is refused before the catalog is searched."""
    def no_search(*args, **kwargs):
        raise AssertionError("searched")

    monkeypatch.setattr(stfuse.fused, "load_cubes", no_search)
    (tmp_path / "stfuse_2023-06-10.tif").write_bytes(b"x")
    with pytest.raises(stfuse.errors.OutputError, match="already exists; pass --overwrite"):
        stfuse.predict(out_dir=tmp_path)
    with pytest.raises(InputError, match="writes a folder of daily COGs"):
        stfuse.predict(out_dir=tmp_path / "pred.tif")


def test_predict_is_short_and_no_function_is_long():
    """The redesign's size rules: api.predict under 60 lines, no function over 100 lines outside
    the prior kernels (stfuse/fusion/prior)."""
    long = []
    for path in sorted((REPO / "stfuse").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if path.name == "api.py" and node.name == "predict":
                    assert lines < 60
                if lines > 100 and "prior" not in path.parts:
                    long.append(f"{path.relative_to(REPO)}:{node.name} ({lines} lines)")
    assert long == []


def test_dir_lists_the_api():
    for name in ("open_fused", "predict", "predict_files", "fuse", "evaluate_files", "Query", "FusionConfig", "RunConfig"):
        assert name in dir(stfuse)


def test_resume_says_what_it_did(tmp_path):
    """`--resume` reports written and skipped days truthfully (it once said 'wrote 64 COGs')."""
    from click.testing import CliRunner

    from stfuse_cli.main import cli

    args = ["predict", "--catalog", str(SAMPLE), "--start", "2023-06-10", "--end", "2023-06-11", "--bands", "red",
            "-o", str(tmp_path)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "wrote 2 day(s) (2023-06-10 .. 2023-06-11)" in first.output
    again = CliRunner().invoke(cli, [*args, "--resume"])
    assert again.exit_code == 0 and "wrote 0 day(s), skipped 2 already complete" in again.output


def test_a_resume_with_nothing_to_do_reads_no_image_data(tmp_path, monkeypatch):
    """A no-op --resume only searches and reads the Landsat clear fractions: no day is read or predicted."""
    query = Query(catalog=SAMPLE, start="2023-06-10", end="2023-06-11", bands=("red",))
    stfuse.predict(query, run=RunConfig(out_dir=tmp_path))
    reads = []
    monkeypatch.setattr(stfuse.fused.Fused, "read_days", lambda self, plans: reads.append(len(plans)))
    again = stfuse.predict(query, run=RunConfig(out_dir=tmp_path, resume=True))
    assert reads == [] and again.days_written == 0 and again.days_skipped == 2 and len(again) == 2


def test_region_file_takes_every_request_field_and_refuses_others(tmp_path):
    from stfuse.fusion.quality import Thresholds
    from stfuse.regions import load_region

    region = tmp_path / "r.yaml"
    region.write_text(f"catalog: {SAMPLE}\nstart: 2023-06-10\nend: 2023-06-12\nmethod: starfm\nwindow: 31\ntile: 256\nformat: zarr\n"
                      "thresholds: {{min_coarse_clear: 0.8}}\nstrict: true\n".replace("{{", "{").replace("}}", "}"))
    loaded = load_region(region)
    assert loaded.fusion.window == 31 and loaded.run.tile == 256 and loaded.run.formats == ("zarr",) and loaded.fusion.strict
    assert loaded.fusion.thresholds == Thresholds(min_coarse_clear=0.8) and loaded.name == "r"
    region.write_text("start: 2023-06-10\nend: 2023-06-12\nout_dir: x\n")
    with pytest.raises(InputError, match="unknown key 'out_dir'; valid keys: .*window"):
        load_region(region)
    region.write_text("start: 2023-06-10\nend: 2023-06-12\nthresholds: {min_clear: 1}\n")
    with pytest.raises(InputError, match="thresholds has no key 'min_clear'"):
        load_region(region)
