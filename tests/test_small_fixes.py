"""Issue #28's "smaller" list: holdout tags, truncated files, grid and --max-gap messages, SAM
with one band, .gitignore."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from stfuse.errors import CorruptFileError, GridMismatchError, InputError
from stfuse.evaluate.metrics import format_table, sam, score_arrays, without_one_band_sam
from stfuse.fusion.pairs import plan_days
from stfuse.output.inspect import describe
from stfuse.output.io import check_same_grid, read_reflectance, write_prediction_cog
from stfuse_cli.main import cli

from conftest import write_tif

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_scenes"
TINY_BBOX = ("-98.8339", "38.3260", "-98.8119", "38.3433")  # ~ 64 x 64 px of the sample (UTM 14N)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


# --------------------------------------------------------------------------- holdout: method and tags


@pytest.fixture(scope="module")
def series_holdout(tmp_path_factory):
    """``--refine scene`` holdout of one band on a corner of the sample whose series model is made
    to fall back to the blend (as it does when the left-out dates do not favour other weights).
    Fast: every member is ``fine + coarse change`` (the members have their own tests)."""
    import torch

    import stfuse.fusion.refine.series as series
    from stfuse.evaluate.holdout import holdout, write_holdout
    from stfuse.fusion.prior.blend import change_baseline

    real_fit, real_members = series.fit_series, series.member_predictions

    def not_applied(examples, **kwargs):
        model = real_fit(examples, **kwargs)
        return None if model is None else replace(model, applied=False, weights=np.tile(series.BLEND_WEIGHTS, (len(model.weights), 1)))

    def change_members(fine, coarse, coarse_target, **kwargs):
        change = change_baseline(*(torch.from_numpy(np.asarray(a, np.float32)) for a in (fine, coarse, coarse_target))).numpy()
        return np.stack([change] * len(series.MEMBERS)), np.full(change.shape, 1e-4, np.float32)

    series.fit_series, series.member_predictions = not_applied, change_members
    try:
        result = holdout(catalog=SAMPLE, bbox=[float(v) for v in TINY_BBOX], start="2023-06-20", end="2023-06-23",
                         bands=["red"], refine="scene", mc_samples=1)
    finally:
        series.fit_series, series.member_predictions = real_fit, real_members
    out = tmp_path_factory.mktemp("holdout")
    write_holdout(result, out)
    return result, out


def test_holdout_day_whose_series_model_was_not_applied_is_tagged_blend(series_holdout):
    result, out = series_holdout
    assert [d.date for d in result.days] == [dt.date(2023, 6, 22)]
    day = result.days[0]
    assert day.method == "blend"
    assert "series model not applied" in day.tags["note"]
    rows = list(csv.DictReader(open(out / "holdout.csv", newline="")))
    assert {r["method"] for r in rows} == {"blend"}
    with rasterio.open(out / "predictions" / "holdout_2023-06-22.tif") as src:
        tags = src.tags()
    assert tags["method"] == "blend" and "series model not applied" in tags["note"]
    assert json.loads(tags["calibration"])["series"]["applied"] is False


def test_holdout_predictions_carry_the_tags_of_a_prediction(series_holdout):
    """calibration, options, items, catalog, quality, refine: as `stfuse predict` writes them."""
    _, out = series_holdout
    with rasterio.open(out / "predictions" / "holdout_2023-06-22.tif") as src:
        tags = src.tags()
    for key in ("stfuse_version", "torch_version", "created", "target_date", "pair_dates", "fine_items", "coarse_items",
                "catalog", "options", "quality", "calibration", "refine", "seed", "mc_samples"):
        assert key in tags, key
    assert json.loads(tags["options"]) == {}
    assert tags["refine"] == "scene" and tags["mc_samples"] == "1"
    fine_items, coarse_items = json.loads(tags["fine_items"]), json.loads(tags["coarse_items"])
    assert all(i.startswith(("LC08", "LC09")) for i in fine_items) and len(fine_items) >= len(json.loads(tags["pair_dates"]))
    assert all(i.startswith("MCD43A4") for i in coarse_items) and len(coarse_items) == len(fine_items) + 1
    assert "20230622" not in "".join(fine_items)  # never the withheld date
    quality = json.loads(tags["quality"])
    assert {"coarse_clear_fraction", "max_pair_gap_days", "changed_fraction", "warnings", "bits"} <= set(quality)
    assert Path(tags["catalog"]).name == "sample_scenes"


def test_holdout_with_one_band_reports_no_sam(series_holdout):
    result, out = series_holdout
    rows = list(csv.DictReader(open(out / "holdout.csv", newline="")))
    assert rows and all(r["sam_deg"] == "" for r in rows)
    assert result.summary()["mean_over_dates"]["all"]["sam_deg"] is None
    assert result.days[0].scores["sam_deg"] is None and result.days[0].scores["ergas"] is not None


# --------------------------------------------------------------------------- SAM


def test_sam_is_reported_absent_for_one_band():
    """score_arrays keeps score.py's number (parity: tests/test_metrics.py); what stfuse reports drops it."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.4, (2, 20, 20))
    pred = truth + rng.normal(0, 0.02, truth.shape)
    one, two = score_arrays(pred[:1], truth[:1]), score_arrays(pred, truth)
    assert one["sam_deg"] == pytest.approx(sam(pred[:1], truth[:1]))  # as score.py: about 0 whatever the error
    assert without_one_band_sam(one)["sam_deg"] is None
    assert without_one_band_sam(two)["sam_deg"] == pytest.approx(sam(pred, truth)) and two["sam_deg"] > 0
    assert "SAM n/a" in format_table(one) and "SAM n/a" not in format_table(two)
    json.dumps(one, allow_nan=False)  # None, not NaN: strict JSON


def test_cli_evaluate_one_band_prints_sam_as_absent(tmp_path):
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.05, 0.4, (1, 24, 24)).astype(np.float32)
    t = write_tif(tmp_path / "truth.tif", truth, descriptions=["red"])
    p = write_tif(tmp_path / "pred.tif", truth + 0.01, descriptions=["red"])
    text = run("evaluate", p, t)
    assert text.exit_code == 0, text.output
    assert "SAM n/a" in text.output
    as_json = run("evaluate", p, t, "--json")
    assert json.loads(as_json.output)["sam_deg"] is None


# --------------------------------------------------------------------------- truncated files


def _cog(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    mean = rng.uniform(0.05, 0.4, (3, 600, 600)).astype(np.float32)
    path = tmp_path / "day.tif"
    write_prediction_cog(path, mean, np.full_like(mean, 0.01), band_names=["red", "green", "blue"], crs="EPSG:32614",
                         transform=Affine(30, 0, 500000, 0, -30, 4500000), tags={"method": "blend"},
                         extra_bands={"quality": np.zeros((600, 600), np.uint8)})
    return path


def _cut(path: Path, fraction: float, name: str) -> Path:
    data = path.read_bytes()
    cut = path.with_name(name)
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


@pytest.mark.parametrize("fraction", [0.5, 0.995])
def test_info_and_quicklook_say_a_truncated_cog_is_incomplete(tmp_path, fraction):
    cut = _cut(_cog(tmp_path), fraction, "cut.tif")
    for args in (["info", cut], ["quicklook", cut, "-o", tmp_path / "cut.png"], ["quicklook", cut, "-o", tmp_path / "small.png",
                                                                                  "--max-size", "64"]):
        line = one_error_line(run(*args), CorruptFileError.exit_code)
        assert "cut.tif" in line and "incomplete or corrupt" in line, line
    assert not (tmp_path / "cut.png").exists() and not (tmp_path / "small.png").exists()
    with pytest.raises(CorruptFileError, match="cut.tif is incomplete"):
        describe(cut)


def test_info_notices_truncation_of_a_file_without_sigma_or_quality_bands(tmp_path):
    """A plain reflectance GeoTIFF (no band that info summarises) cut short: info reads none of its
    pixels for statistics, and must still notice."""
    rng = np.random.default_rng(3)
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=2, dtype="float32", tiled=True,
                       blockxsize=128, blockysize=128, crs="EPSG:32614", transform=Affine(30, 0, 500000, 0, -30, 4500000)) as dst:
        dst.write(rng.uniform(0, 1, (2, 512, 512)).astype(np.float32))
    line = one_error_line(run("info", _cut(path, 0.6, "plain_cut.tif")), 2)
    assert "plain_cut.tif is incomplete or corrupt" in line


def test_complete_files_still_pass(tmp_path):
    path = _cog(tmp_path)
    result = run("info", path)
    assert result.exit_code == 0, result.output
    assert run("quicklook", path, "-o", tmp_path / "ok.png").exit_code == 0
    untiled = write_tif(tmp_path / "strips.tif", np.ones((2, 40, 50), np.int16))  # striped, not tiled
    assert run("info", untiled).exit_code == 0


# --------------------------------------------------------------------------- fine files on two grids


def _pairs(tmp_path: Path, second_fine_transform: Affine, size=(32, 32)):
    ones = np.full((2, 32, 32), 1000, np.int16)
    f1 = write_tif(tmp_path / "L_a.tif", ones, descriptions=["red", "nir08"])
    f2 = write_tif(tmp_path / "L_b.tif", np.full((2, *size), 1100, np.int16), transform=second_fine_transform, descriptions=["red", "nir08"])
    c = [write_tif(tmp_path / f"M_{k}.tif", ones, descriptions=["red", "nir08"]) for k in range(3)]
    return ["predict", "--pair", f1, c[0], "--pair", f2, c[1], "--coarse", c[2], "-o", tmp_path / "out.tif"]


@pytest.mark.parametrize("case", ["shifted", "other size"])
def test_fine_files_on_two_grids_are_told_to_resample_the_fine_images(tmp_path, case):
    moved = Affine(30, 0, 500000 + 30 * 7, 0, -30, 4500000)
    args = _pairs(tmp_path, moved if case == "shifted" else Affine(30, 0, 500000, 0, -30, 4500000), size=(32, 32) if case == "shifted" else (40, 32))
    line = one_error_line(run(*args), GridMismatchError.exit_code)
    assert "L_b.tif" in line and "L_a.tif" in line
    advice = line.split("; ", 1)[1]
    assert advice.startswith("the fine images must share one grid: resample"), line
    assert "--like" in line and "gdalwarp -tr 30 30 -te 500000 4499040 500960 4500000" in line
    assert not (tmp_path / "out.tif").exists()


def test_check_same_grid_advice_follows_the_role_or_the_pixel_size(tmp_path):
    a = read_reflectance(write_tif(tmp_path / "a.tif", np.ones((1, 32, 32), np.float32)))
    b = read_reflectance(write_tif(tmp_path / "b.tif", np.ones((1, 30, 32), np.float32)))
    coarse = read_reflectance(write_tif(tmp_path / "c.tif", np.ones((1, 2, 2), np.float32), transform=Affine(480, 0, 500000, 0, -480, 4500000)))
    with pytest.raises(GridMismatchError, match=r"; the fine images must share one grid"):
        check_same_grid({"a": a, "b": b})
    with pytest.raises(GridMismatchError, match=r"; resample the coarse images to the fine grid first .* \(if both are fine"):
        check_same_grid({"a": a, "c": coarse})
    with pytest.raises(GridMismatchError, match=r"; resample the coarse images to the fine grid first \(e.g. gdalwarp -tr 30 30 -r bilinear\)$"):
        check_same_grid({"a": a, "b": b}, role="coarse")
    with pytest.raises(GridMismatchError, match=r"; the fine images must share one grid.* and give that file instead$"):
        check_same_grid({"a": a, "c": coarse}, role="fine")


# --------------------------------------------------------------------------- --max-gap


def test_max_gap_with_no_pair_near_enough_names_the_option_and_the_distance(tmp_path):
    line = one_error_line(run("predict", "--start", "2023-06-12", "--end", "2023-06-12", "--max-gap", "5", "--bands", "red",
                              "-o", tmp_path / "out"), 2)
    assert "--max-gap 5" in line and "max_gap_days=5" in line
    assert "2023-06-06, is 6 days from 2023-06-12" in line and "at least 6" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_plan_days_names_max_gap_and_the_nearest_pair():
    days = [dt.date(2023, 6, 6), dt.date(2023, 6, 22)]
    with pytest.raises(InputError, match=r"--max-gap 3 \(Python: max_gap_days=3\).*any day in 2023-06-12..2023-06-14: "
                                         r"the nearest pair, 2023-06-06, is 6 days from 2023-06-12; raise --max-gap to at least 6"):
        plan_days([dt.date(2023, 6, 12), dt.date(2023, 6, 13), dt.date(2023, 6, 14)], days, max_gap_days=3)
    with pytest.raises(InputError, match="lower --min-clear"):  # no pair at all: the old message
        plan_days([dt.date(2023, 6, 12)], [], max_gap_days=3)
    assert plan_days([dt.date(2023, 6, 12)], days, max_gap_days=6)[0].pairs == (dt.date(2023, 6, 6),)


# --------------------------------------------------------------------------- .gitignore


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs git and the checkout")
def test_gitignore_ignores_what_the_readme_commands_leave_in_the_root_only():
    ignored = ["M_0524.tif", "pred_0708.tif", "pred_0708.json", "report/", "report_series/", "series.csv", "series.png",
               "mine.pt", "mine.json", "day.png", "my_scenes/"]
    kept = ["tests/M_0524.tif", "docs/series.md", "stfuse/output/series.py", "cli/series.py", "docs/report/x.md", "mine.py"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *ignored, *kept], cwd=REPO, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(ignored)
