"""`stfuse predict --pair ... --coarse ...` (local-file mode) through the CLI, as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from stfuse_cli.main import cli

from conftest import write_tif


@pytest.fixture()
def scene(tmp_path):
    """A 3-band 64x64 scene of 8x8-pixel fields (coarse = fine); the target day adds +0.03 everywhere."""
    rng = np.random.default_rng(1)
    fields = (0.1 + 0.2 * rng.random((3, 8, 8))).astype(np.float32)
    fine = np.repeat(np.repeat(fields, 8, axis=1), 8, axis=2)
    coarse = fine.copy()
    paths = {
        "fine": write_tif(tmp_path / "fine_t1.tif", np.round(fine * 10000).astype(np.int16), nodata=-9999),
        "coarse1": write_tif(tmp_path / "coarse_t1.tif", np.round(coarse * 10000).astype(np.int16), nodata=-9999),
        "coarse2": write_tif(tmp_path / "coarse_t2.tif", np.round((coarse + 0.03) * 10000).astype(np.int16), nodata=-9999),
    }
    return paths, fine


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_local_mode_writes_valid_cog_with_sigma_bands(scene, tmp_path):
    paths, fine = scene
    out = tmp_path / "out" / "pred.tif"
    result = run("predict", "--pair", paths["fine"], paths["coarse1"], "--coarse", paths["coarse2"], "-o", out, "--date", "2001-07-11")
    assert result.exit_code == 0, result.output
    assert cog_validate(str(out))[0]
    with rasterio.open(out) as src:
        assert src.count == 6
        assert src.descriptions == ("band1", "band2", "band3", "band1_sigma", "band2_sigma", "band3_sigma")
        assert np.isnan(src.nodata)
        assert src.tags()["method"] == "starfm"
        pred = src.read()
    # uniform +0.03 change: carried over everywhere (STARFM blends similar fields, so not exactly per pixel)
    assert abs(float(np.mean(pred[:3] - fine)) - 0.03) < 1e-3
    np.testing.assert_allclose(pred[:3], fine + 0.03, atol=0.01)
    assert (pred[3:] >= 0).all()
    item = json.loads(out.with_suffix(".json").read_text())
    assert item["properties"]["datetime"].startswith("2001-07-11") and item["assets"]["data"]["href"] == "pred.tif"


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "input file not found"),
        ("shape", "resample the coarse images"),
        ("band", "unknown band 'purple'"),
        ("exists", "already exists; pass --overwrite"),
        ("half", "needs both --pair"),
    ],
)
def test_bad_input_one_line_exit_2_no_output(scene, tmp_path, case, match):
    paths, _ = scene
    out = tmp_path / "pred.tif"
    args = ["predict", "--pair", paths["fine"], paths["coarse1"], "--coarse", paths["coarse2"], "-o", out]
    if case == "missing":
        args[3] = tmp_path / "nope.tif"
    elif case == "shape":
        args[3] = write_tif(tmp_path / "small.tif", np.ones((3, 32, 32), np.int16))
    elif case == "band":
        args += ["--bands", "red,purple"]
    elif case == "exists":
        out.write_bytes(b"keep me")
    elif case == "half":
        args = ["predict", "--pair", paths["fine"], paths["coarse1"], "-o", out]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert match in result.output
    assert "Traceback" not in result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) <= 3  # click usage errors print a usage line + hint; ours print one line
    if case == "exists":
        assert out.read_bytes() == b"keep me"
    else:
        assert not out.exists()
