"""`stfuse evaluate PREDICTION TRUTH` matches bands by name and refuses files it cannot score (issue #19).

Small GeoTIFFs written here: a prediction laid out as stfuse writes it (6 reflectance bands,
6 ``<band>_sigma`` bands, ``quality``) and truths that name their band in different ways.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner

from stfuse.data.sensors import BANDS
from stfuse.errors import CRSError, GridMismatchError, InputError
from stfuse.evaluate.files import band_name_of_file, evaluate_files, read_scored_pair
from stfuse_cli.main import cli

from conftest import write_tif

H, W = 24, 32
Z68 = 0.994457883209753  # two-sided 68 % Gaussian interval, in sigmas
RED = BANDS.index("red")


@pytest.fixture()
def scene(tmp_path) -> dict:
    """A 13-band prediction (reflectance, sigma, quality) whose red band is truth + N(0, 0.01);
    every other reflectance band is far off (0.9), so scoring any of them as red shows at once."""
    rng = np.random.default_rng(19)
    truth = (0.05 + 0.3 * rng.random((H, W))).astype(np.float32)
    mean = np.full((len(BANDS), H, W), 0.9, np.float32)
    mean[RED] = truth + rng.normal(0, 0.01, truth.shape).astype(np.float32)
    sigma = np.full_like(mean, 0.01)
    quality = np.zeros((1, H, W), np.float32)
    names = [*BANDS, *(f"{b}_sigma" for b in BANDS), "quality"]
    pred = write_tif(tmp_path / "pred.tif", np.concatenate([mean, sigma, quality]), nodata=float("nan"), descriptions=names)
    return {"pred": pred, "mean": mean, "sigma": sigma, "truth": truth, "dir": tmp_path}


def direct_scores(mean: np.ndarray, sigma: np.ndarray, truth: np.ndarray, ok: np.ndarray | None = None) -> dict:
    """RMSE, bias, pixel count and 68 % coverage of one band, computed here (float64)."""
    ok = np.isfinite(truth) if ok is None else ok
    e = mean.astype(np.float64)[ok] - truth.astype(np.float64)[ok]
    return {"rmse": float(np.sqrt(np.mean(e**2))), "bias": float(np.mean(e)), "n": int(ok.sum()),
            "cov68": float(np.mean(np.abs(e) <= Z68 * sigma.astype(np.float64)[ok]))}


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


def test_single_band_red_truth_is_scored_against_red_only(scene):
    """The issue's first case: the old code scored the prediction's first band (blue) against red."""
    truth_path = write_tif(scene["dir"] / "red.tif", scene["truth"])  # no band description: the file name says red
    result = evaluate_files(scene["pred"], truth_path)
    want = direct_scores(scene["mean"][RED], scene["sigma"][RED], scene["truth"])
    assert [b["name"] for b in result["bands"]] == ["red"] and result["matched_by"] == "name"
    assert result["bands"][0]["prediction_band"] == RED + 1
    assert math.isclose(result["bands"][0]["rmse"], want["rmse"], rel_tol=1e-9)
    assert math.isclose(result["bands"][0]["bias"], want["bias"], rel_tol=1e-9, abs_tol=1e-12)
    assert result["invalid_pixels"] == 0 and want["rmse"] < 0.02
    assert math.isclose(result["coverage"]["0.68"], want["cov68"], abs_tol=1e-12)

    described = write_tif(scene["dir"] / "truth.tif", scene["truth"], descriptions=["red"])  # named by its description
    assert evaluate_files(scene["pred"], described)["bands"][0]["rmse"] == result["bands"][0]["rmse"]


def test_landsat_asset_file_names_give_the_band_and_the_c2_scale(scene):
    """A USGS Landsat C2 L2 asset (uint16 DN, no scale in the file) is read as DN x 2.75e-5 - 0.2,
    and its band number names the band for its platform (OLI B4 = red; ETM+ B4 = nir08)."""
    dn = np.round((scene["truth"].astype(np.float64) + 0.2) / 2.75e-5).astype(np.uint16)
    dn[0, :5] = 0  # nodata
    name = "LC08_L2SP_029033_20230606_20230613_02_T1_SR_B4.TIF"
    truth_path = write_tif(scene["dir"] / name, dn)
    result = evaluate_files(scene["pred"], truth_path)
    truth = dn * 2.75e-5 - 0.2
    truth[0, :5] = np.nan
    want = direct_scores(scene["mean"][RED], scene["sigma"][RED], truth)
    assert [b["name"] for b in result["bands"]] == ["red"] and result["invalid_pixels"] == 5
    assert math.isclose(result["bands"][0]["rmse"], want["rmse"], rel_tol=1e-9)
    assert band_name_of_file("LE07_L2SP_029033_20010711_20200917_02_T1_SR_B4.TIF") == "nir08"
    assert band_name_of_file("LT05_L2SP_029033_20010711_20200917_02_T1_SR_B7.TIF") == "swir22"
    assert band_name_of_file("scene_nir.tif") == "nir08" and band_name_of_file("landsat_2001-07-11.tif") is None


def test_truth_without_crs_needs_force(scene):
    """The issue's second case: a UTM prediction against a file without CRS must not be scored silently."""
    truth_path = write_tif(scene["dir"] / "other_red.tif", scene["truth"], crs=None)
    with pytest.raises(CRSError, match=r"other_red.tif has no CRS but .*pred.tif is in EPSG:32614.*--force"):
        evaluate_files(scene["pred"], truth_path)
    forced = evaluate_files(scene["pred"], truth_path, force=True)
    assert [b["name"] for b in forced["bands"]] == ["red"]
    assert math.isclose(forced["bands"][0]["rmse"], direct_scores(scene["mean"][RED], scene["sigma"][RED], scene["truth"])["rmse"],
                        rel_tol=1e-9)


def test_unnamed_truth_bands_are_not_matched_with_sigma_or_extra_bands(scene):
    """A 4-band truth without names (another scene, no CRS) against 6 reflectance bands: refused even
    with --force, never pairing bands 4.. with sigma; --bands names them."""
    stack = np.stack([scene["truth"]] * 4)
    truth_path = write_tif(scene["dir"] / "scene.tif", stack, crs=None)
    with pytest.raises(InputError, match=r"cannot tell which bands truth .*scene.tif holds .*--bands red,nir08,green,blue"):
        evaluate_files(scene["pred"], truth_path, force=True)
    named = evaluate_files(scene["pred"], truth_path, force=True, bands=["red", "nir", "green", "blue"])
    assert [b["name"] for b in named["bands"]] == ["red", "nir08", "green", "blue"]
    assert [b["prediction_band"] for b in named["bands"]] == [3, 4, 2, 1]
    with pytest.raises(InputError, match=r"--bands names 2 band\(s\) \(red,nir08\) but truth .*scene.tif has 4"):
        evaluate_files(scene["pred"], truth_path, force=True, bands=["red", "nir08"])


def test_different_transform_is_refused(scene):
    shifted = Affine(30, 0, 500000 + 90, 0, -30, 4500000)
    truth_path = write_tif(scene["dir"] / "red.tif", scene["truth"], transform=shifted)
    with pytest.raises(GridMismatchError, match=r"not on the same grid: origin \(500000, 4500000\), pixel 30 x -30 vs "
                                                r"origin \(500090, 4500000\), pixel 30 x -30"):
        evaluate_files(scene["pred"], truth_path)
    coarser = write_tif(scene["dir"] / "red60.tif", scene["truth"], transform=Affine(60, 0, 500000, 0, -60, 4500000))
    with pytest.raises(GridMismatchError, match="pixel 30 x -30 vs origin .*pixel 60 x -60"):
        evaluate_files(scene["pred"], coarser)
    with pytest.raises(GridMismatchError, match=r"is 24 x 32 pixels but .* is 24 x 31"):
        evaluate_files(scene["pred"], write_tif(scene["dir"] / "narrow_red.tif", scene["truth"][:, :-1]))
    with pytest.raises(CRSError, match=r"is in EPSG:32614 but .* is in EPSG:32615"):
        evaluate_files(scene["pred"], write_tif(scene["dir"] / "utm15_red.tif", scene["truth"], crs="EPSG:32615"))


@pytest.mark.parametrize("names", [["red_sigma"], ["quality"], ["red", "red_sigma"]])
def test_sigma_or_quality_truth_bands_are_refused(scene, names):
    truth_path = write_tif(scene["dir"] / "t.tif", np.stack([scene["truth"]] * len(names)), descriptions=names)
    with pytest.raises(InputError, match=rf"band {len(names)} of truth .*t.tif is '{names[-1]}', an uncertainty or quality band"):
        evaluate_files(scene["pred"], truth_path)


def test_truth_qa_leaves_out_flagged_pixels(scene):
    """Known answer: the prediction is 0.5 off wherever QA_PIXEL flags cloud, shadow, cirrus,
    dilated cloud or fill; with --truth-qa the score equals the score of the clear pixels."""
    pred = scene["mean"].copy()
    qa = np.full((H, W), 1 << 6, np.uint16)  # clear
    for (row, bit) in [(0, 3), (1, 4), (2, 2), (3, 1), (4, 0)]:  # cloud, shadow, cirrus, dilated cloud, fill
        qa[row, :] |= 1 << bit
    qa[5, :4] = (1 << 7) | (1 << 6)  # water: clear, scored
    bad = np.zeros((H, W), bool)
    bad[:5] = True
    pred[RED][bad] += 0.5
    names = [*BANDS, *(f"{b}_sigma" for b in BANDS), "quality"]
    pred_path = write_tif(scene["dir"] / "cloudy_pred.tif", np.concatenate([pred, scene["sigma"], np.zeros((1, H, W), np.float32)]),
                          nodata=float("nan"), descriptions=names)
    truth_path = write_tif(scene["dir"] / "red.tif", scene["truth"])
    qa_path = write_tif(scene["dir"] / "qa_pixel.tif", qa, nodata=1)
    masked = evaluate_files(pred_path, truth_path, truth_qa=qa_path)
    want = direct_scores(pred[RED], scene["sigma"][RED], scene["truth"], ok=~bad)
    assert masked["qa_masked_pixels"] == int(bad.sum()) == masked["invalid_pixels"] == 5 * W
    assert math.isclose(masked["bands"][0]["rmse"], want["rmse"], rel_tol=1e-9) and want["rmse"] < 0.02
    assert math.isclose(masked["coverage"]["0.68"], want["cov68"], abs_tol=1e-12)
    assert evaluate_files(pred_path, truth_path)["bands"][0]["rmse"] > 0.2  # without the mask the clouds count
    arrays = read_scored_pair(pred_path, truth_path, truth_qa=qa_path)
    assert np.isnan(arrays.truth[0][bad]).all() and np.isfinite(arrays.truth[0][~bad]).all()
    wrong_grid = write_tif(scene["dir"] / "qa_other.tif", qa, transform=Affine(30, 0, 600000, 0, -30, 4500000))
    with pytest.raises(GridMismatchError, match="qa_other.tif are not on the same grid"):
        evaluate_files(pred_path, truth_path, truth_qa=wrong_grid)


def test_unnamed_bands_pair_in_order_only_with_equal_counts_on_one_grid(tmp_path):
    """The benchmark rule: truth without descriptions (and no CRS) against a prediction of as many
    reflectance bands (plus sigma) on the same grid, paired in order; one band fewer is refused."""
    rng = np.random.default_rng(3)
    truth = np.round(rng.random((3, H, W)) * 3000).astype(np.int16)
    mean = (truth * 1e-4 + rng.normal(0, 0.01, truth.shape)).astype(np.float32)
    names = ["band1", "band2", "band3"]
    pred_path = write_tif(tmp_path / "p.tif", np.concatenate([mean, np.full_like(mean, 0.01)]), crs=None, nodata=float("nan"),
                          descriptions=[*names, *(f"{n}_sigma" for n in names)])
    truth_path = write_tif(tmp_path / "landsat_2001-07-11.tif", truth, crs=None)
    result = evaluate_files(pred_path, truth_path)
    assert result["matched_by"] == "position" and [b["name"] for b in result["bands"]] == names
    rmse = np.sqrt(np.mean((mean.astype(np.float64) - truth * 1e-4) ** 2, axis=(1, 2)))
    assert np.allclose([b["rmse"] for b in result["bands"]], rmse, rtol=1e-9) and "coverage" in result
    two = write_tif(tmp_path / "two.tif", truth[:2], crs=None)
    with pytest.raises(InputError, match=r"cannot tell which bands truth .*two.tif holds \(no band descriptions\).*"
                                         r"3 reflectance band\(s\) of prediction"):
        evaluate_files(pred_path, two)


def test_cli_refuses_with_exit_2_and_one_line(scene):
    truth_path = write_tif(scene["dir"] / "red.tif", scene["truth"], crs=None)
    result = run(scene["pred"], truth_path)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ") and "--force" in result.output
    shifted = write_tif(scene["dir"] / "shifted_red.tif", scene["truth"], transform=Affine(30, 0, 500030, 0, -30, 4500000))
    result = run(scene["pred"], shifted)
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "not on the same grid" in result.output
    sigma_truth = write_tif(scene["dir"] / "s.tif", scene["truth"], descriptions=["red_sigma"])
    result = run(scene["pred"], sigma_truth)
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "'red_sigma'" in result.output
    result = run("--truth-qa", truth_path, "--holdout")
    assert result.exit_code == 2 and "--truth-qa applies only with PREDICTION TRUTH" in result.output


def test_cli_scores_by_name_with_force_and_bands(scene):
    truth_path = write_tif(scene["dir"] / "scene.tif", scene["truth"], crs=None)
    result = run(scene["pred"], truth_path, "--force", "--bands", "red", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    want = direct_scores(scene["mean"][RED], scene["sigma"][RED], scene["truth"])
    assert [(b["name"], b["prediction_band"]) for b in scores["bands"]] == [("red", RED + 1)]
    assert math.isclose(scores["bands"][0]["rmse"], want["rmse"], rel_tol=1e-9)
    text = run(scene["pred"], truth_path, "--force", "--bands", "red")
    assert text.exit_code == 0 and "bands matched by name: red = band 3" in text.output
    bad = run(scene["pred"], truth_path, "--force", "--bands", "rde")
    assert bad.exit_code == 2 and "unknown band 'rde'" in bad.output
