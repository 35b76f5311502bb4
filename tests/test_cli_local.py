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
        assert src.count == 7
        assert src.descriptions == ("band1", "band2", "band3", "band1_sigma", "band2_sigma", "band3_sigma", "quality")
        assert np.isnan(src.nodata)
        assert src.tags()["method"] == "blend"  # the default (auto)
        pred = src.read()
    # uniform +0.03 change: carried over everywhere (the priors blend similar fields, so not exactly per pixel)
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
        args[3] = write_tif(tmp_path / "small.tif", np.ones((3, 32, 32), np.int16), crs=None)  # georeferenced ones are resampled
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


def test_variance_scale_multiplies_the_variance_and_is_recorded(tmp_path):
    """`--variance-scale 4`: sigma doubles, the mean is unchanged, the tag records it; 0 is refused."""
    rng = np.random.default_rng(3)
    fine = (0.1 + 0.2 * rng.random((2, 48, 48))).astype(np.float32)
    coarse = np.kron(fine.reshape(2, 6, 8, 6, 8).mean(axis=(2, 4)), np.ones((1, 8, 8))).astype(np.float32)
    paths = [write_tif(tmp_path / f"{n}.tif", a) for n, a in (("f", fine), ("c", coarse), ("t", coarse + 0.02))]
    outs = {}
    for scale in ("1", "4"):
        out = tmp_path / f"pred_{scale}.tif"
        result = run("predict", "--pair", paths[0], paths[1], "--coarse", paths[2], "--variance-scale", scale, "-o", out)
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as src:
            outs[scale] = (src.read(), src.tags())
    (plain, tags_plain), (scaled, tags_scaled) = outs["1"], outs["4"]
    np.testing.assert_array_equal(scaled[:2], plain[:2])
    assert (plain[2:] > 0).any()
    np.testing.assert_allclose(scaled[2:], 2 * plain[2:], rtol=1e-6)
    cal_plain, cal_scaled = json.loads(tags_plain["calibration"]), json.loads(tags_scaled["calibration"])
    assert "user_variance_scale" not in cal_plain and cal_scaled == {**cal_plain, "user_variance_scale": 4.0}
    result = run("predict", "--pair", paths[0], paths[1], "--coarse", paths[2], "--variance-scale", "0", "-o", tmp_path / "z.tif")
    assert result.exit_code == 2 and "--variance-scale" in result.output and not (tmp_path / "z.tif").exists()
    from stfuse.api import predict_files
    from stfuse.errors import InputError

    with pytest.raises(InputError, match="variance scale must be a positive number"):
        predict_files([(paths[0], paths[1])], paths[2], tmp_path / "n.tif", variance_scale=float("nan"))
    assert not (tmp_path / "n.tif").exists()
