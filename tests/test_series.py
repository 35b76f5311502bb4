"""`stfuse series`: a pixel's daily series with sigma from the outputs of `stfuse predict`."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform as warp_transform

from stfuse.errors import InputError
from stfuse.output.series import pixel_series
from stfuse_cli.main import cli

POINTS = [(-98.80, 38.35), (-98.75, 38.30)]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Three predicted sample days (red, nir08) as COGs and a Zarr store."""
    out = tmp_path_factory.mktemp("series") / "out"
    result = run("predict", "--format", "cog,zarr", "--start", "2023-06-12", "--end", "2023-06-14", "--bands", "red,nir08",
                 "-q", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def _at(path, lon, lat):
    """Every band of a COG at a lon/lat, read independently of stfuse.output.series."""
    with rasterio.open(path) as src:
        (x,), (y,) = warp_transform("EPSG:4326", src.crs, [lon], [lat])
        row, col = src.index(x, y)
        values = src.read(window=((row, row + 1), (col, col + 1)))[:, 0, 0]
        return row, col, dict(zip(src.descriptions, values.tolist()))


def test_csv_has_a_row_per_day_and_point_with_the_cogs_values(outputs, tmp_path):
    out = tmp_path / "series.csv"
    result = run("series", *[a for p in POINTS for a in ("--point", *p)], outputs, "-o", out)
    assert result.exit_code == 0, result.output
    assert "3 day(s) 2023-06-12 .. 2023-06-14 at 2 point(s)" in result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["date", "lon", "lat", "row", "col", "red", "red_sigma", "nir08", "nir08_sigma", "quality"]
    assert [(r["date"], float(r["lon"])) for r in rows] == [(d, lon) for d in ("2023-06-12", "2023-06-13", "2023-06-14")
                                                          for lon, _ in POINTS]
    for r in rows:
        row, col, truth = _at(outputs / f"stfuse_{r['date']}.tif", float(r["lon"]), float(r["lat"]))
        assert (int(r["row"]), int(r["col"])) == (row, col)
        for name in ("red", "red_sigma", "nir08", "nir08_sigma"):
            assert float(r[name]) == pytest.approx(truth[name], rel=1e-5)
        assert int(r["quality"]) == int(truth["quality"])
        assert 0 < float(r["red_sigma"]) < 0.2


def test_zarr_store_gives_the_same_series_as_the_cogs(outputs):
    cogs = pixel_series(outputs, POINTS, bands=["nir08"])
    store = pixel_series(outputs / "stfuse.zarr", POINTS, bands=["nir08"])
    assert [(r["date"], r["row"], r["col"]) for r in store] == [(r["date"], r["row"], r["col"]) for r in cogs]
    for a, b in zip(cogs, store):
        assert math.isclose(a["nir08"], b["nir08"], rel_tol=1e-6) and math.isclose(a["nir08_sigma"], b["nir08_sigma"], rel_tol=1e-6)


def test_point_outside_the_grid_is_refused_with_its_extent(outputs, tmp_path):
    result = run("series", "--point", "-96.5", "40.7", outputs, "-o", tmp_path / "s.csv")
    assert result.exit_code == 2
    assert "point (-96.5, 40.7) is outside the grid" in result.output and "covers lon -98.8" in result.output
    assert not (tmp_path / "s.csv").exists()
    with pytest.raises(InputError, match="not a lon/lat"):
        pixel_series(outputs, [(511600.0, 4250000.0)])
    with pytest.raises(InputError, match="band 'blue' is not in"):
        pixel_series(outputs, POINTS, bands=["blue"])


def test_png_of_the_series(outputs, tmp_path):
    png = tmp_path / "series.png"
    result = run("series", "--point", *POINTS[0], outputs, "-o", tmp_path / "s.csv", "--png", png)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert np.asarray(Image.open(png).convert("L")).std() > 5  # something is drawn
    again = run("series", "--point", *POINTS[0], outputs, "-o", tmp_path / "s.csv")
    assert again.exit_code == 2 and "already exists" in again.output
    zarr_png = run("series", "--point", *POINTS[0], outputs / "stfuse.zarr", "-o", tmp_path / "z.csv", "--png", tmp_path / "z.png")
    assert zarr_png.exit_code == 2 and "folder of daily COGs" in zarr_png.output
