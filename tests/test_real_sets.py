"""Real-set benchmark tasks of ``make bench`` (tools/real_sets.py and its section in tools/bench.py):
task building, the baselines, scoring on a common pixel mask, and the Markdown section."""

from __future__ import annotations

import collections
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from stfuse.evaluate.tasks import load_task
from stfuse.fusion.radiometry import fit_units
from stfuse.output.io import write_prediction_cog

from conftest import BENCHMARKS, write_tif

TOOLS = Path(__file__).resolve().parents[1] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.append(str(TOOLS))
real_sets = importlib.import_module("real_sets")
bench = importlib.import_module("bench")


@pytest.fixture(scope="module")
def all_sets() -> Path:
    """../shared/benchmarks when it holds every real set (``extra/`` included); skips otherwise."""
    if not (BENCHMARKS / "extra").is_dir():
        pytest.skip("../shared/benchmarks/extra is not available")
    missing = {s.name for s in real_sets.REAL_SETS} - {s.name for s in real_sets.available_sets(BENCHMARKS)}
    if missing:
        pytest.skip(f"real sets missing under {BENCHMARKS}: {', '.join(sorted(missing))}")
    return BENCHMARKS


def test_tasks_of_every_set(all_sets: Path, tmp_path: Path) -> None:
    tasks = real_sets.build_tasks(all_sets)
    assert len(tasks) == 45 and len({t["id"] for t in tasks}) == 45
    assert collections.Counter(t["set"] for t in tasks) == {s.name: 9 for s in real_sets.REAL_SETS}
    for t in tasks:
        pair_dates = [p["date"] for p in t["pairs"]]
        assert t["target"]["date"] not in pair_dates and pair_dates == sorted(set(pair_dates))
        assert t["kind"] == ("two-pair" if len(pair_dates) == 2 else "one-pair")
        assert t["truth_scale"] == (1e-4 if t["set"] == "kranj" else 1.0)
        files = [t["truth"], t["target"]["coarse"], *[p[k] for p in t["pairs"] for k in ("fine", "coarse")]]
        assert all(Path(f).is_absolute() and Path(f).is_file() for f in files)
    for name in {t["set"] for t in tasks}:
        set_tasks = [t for t in tasks if t["set"] == name]
        assert sum(t["kind"] == "two-pair" for t in set_tasks) == 3
        dates = {t["target"]["date"] for t in set_tasks}
        for t in set_tasks:  # a two-pair task's pairs are exactly the two other dates
            if t["kind"] == "two-pair":
                assert {p["date"] for p in t["pairs"]} == dates - {t["target"]["date"]}
    # the written manifest is one stfuse's own task loader reads (absolute paths stay absolute)
    manifest = real_sets.write_manifest(tasks, tmp_path / "MANIFEST.json")
    loaded = load_task(manifest.parent, "kranj-t3-p12")
    assert loaded.truth == Path(tasks[-1]["truth"]) and loaded.kind == "two-pair" and len(loaded.pairs) == 2


def test_absent_sets_are_skipped(tmp_path: Path) -> None:
    assert real_sets.build_tasks(tmp_path) == []
    transform = Affine(30, 0, 0, 0, -30, 12000)
    for date, fine, coarse in real_sets.REAL_SETS[0].scenes:  # estarfm-real only, as tiny fakes
        for k, name in enumerate((fine, coarse)):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            write_tif(tmp_path / name, np.full((3, 4, 4), 500 + k, np.int16), crs=None, transform=transform)
    tasks = real_sets.build_tasks(tmp_path)
    assert len(tasks) == 9 and {t["set"] for t in tasks} == {"estarfm-real"}
    assert real_sets.build_tasks(tmp_path, ["cia"]) == []


def test_nearest_pair_tie_goes_to_the_earlier() -> None:
    task = {"pairs": [{"date": "2020-01-01"}, {"date": "2020-01-21"}], "target": {"date": "2020-01-11"}}
    assert real_sets.nearest_pair(task)["date"] == "2020-01-01"
    task["target"]["date"] = "2020-01-12"
    assert real_sets.nearest_pair(task)["date"] == "2020-01-21"


def _read(path: str) -> np.ndarray:
    """(B, H, W) float64 of a float file as on disk, NaN where nodata."""
    with rasterio.open(path) as src:
        data, nodata = src.read().astype(np.float64), src.nodata
    data[data == np.float32(nodata)] = np.nan
    return data


def test_kranj_baseline_by_hand(all_sets: Path) -> None:
    task = next(t for t in real_sets.build_tasks(all_sets, ["kranj"]) if t["id"] == "kranj-t3-p12")
    early, late = task["pairs"]
    assert real_sets.nearest_pair(task) == late  # 2020-04-02 is 16 days from 2020-03-17, 25 from 2020-03-08
    fines = np.stack([_read(p["fine"]) for p in task["pairs"]])
    coarses = np.stack([_read(p["coarse"]) for p in task["pairs"]])
    fit = fit_units(fines.astype(np.float32), coarses.astype(np.float32))
    gain = np.asarray(fit.gain)[:, None, None]
    assert fit.applied and np.all((gain > 5e-5) & (gain < 2e-4))  # MODIS 0-1 per Landsat reflectance x 1e4
    expected = _read(late["fine"]) + (_read(task["target"]["coarse"]) - _read(late["coarse"])) / gain  # offsets cancel
    got = real_sets.baseline_prediction(task)
    assert got.shape == expected.shape == (6, 44, 45)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))  # clouds of the pair's fine image stay NaN
    np.testing.assert_allclose(got, expected, rtol=0, atol=0.05)  # x 1e4 units: 5e-6 reflectance (float32 rounding)
    np.testing.assert_array_equal(real_sets.baseline_prediction(task, real_sets.COPY_FINE), _read(late["fine"]).astype(np.float32))


def test_methods_per_task() -> None:
    one, two = {"pairs": [{}]}, {"pairs": [{}, {}]}
    assert bench._real_methods(one, True) == ["fine+coarse-change", "copy-fine", "starfm", "fsdaf", "fitfc", "default", "hybrid"]
    assert bench._real_methods(two, False) == ["fine+coarse-change", "copy-fine", "starfm", "estarfm", "fsdaf", "fitfc", "default"]


def test_scores_on_the_pixels_every_prediction_has(tmp_path: Path) -> None:
    truth = np.full((2, 8, 8), 1000.0, np.float32)
    truth[:, 0, 0] = np.nan
    write_tif(tmp_path / "truth.tif", truth, nodata=float("nan"))
    good, holed = truth + 10, truth + 20
    holed[:, 7, 7] = np.nan
    grid = {"crs": "EPSG:32614", "transform": Affine(30, 0, 500000, 0, -30, 4500000), "overwrite": True}
    write_prediction_cog(tmp_path / "base.tif", good, np.zeros_like(good), band_names=["b1x", "b2x"], **grid)
    write_prediction_cog(tmp_path / "starfm.tif", holed, np.full_like(holed, 20.0), band_names=["b1x", "b2x"], **grid)
    task = {"truth": str(tmp_path / "truth.tif"), "truth_scale": 1e-4}
    scores, scored = bench.score_real_task(task, {"fine+coarse-change": tmp_path / "base.tif", "starfm": tmp_path / "starfm.tif"})
    assert scored == 62  # 64 less the truth's hole and the prediction's
    assert scores["fine+coarse-change"]["rmse"] == pytest.approx(1e-3) and scores["starfm"]["bias"] == pytest.approx(2e-3)
    assert np.isnan(scores["fine+coarse-change"]["cov95"])  # no coverage for baselines
    # |error| = 1 sigma: outside the 68 % interval (z = 0.994), inside the 95 % one (z = 1.96)
    assert scores["starfm"]["cov68"] == 0.0 and scores["starfm"]["cov95"] == 1.0


def _fake_result() -> dict:
    rows = []
    for set_name, scale in (("alpha", 1.0), ("beta", 2.0)):
        for task, pairs in (("t1-p2", ["d2"]), ("t1-p3", ["d3"]), ("t1-p23", ["d2", "d3"])):
            methods = bench._real_methods({"pairs": pairs}, True)
            for k, method in enumerate(methods):
                row = {"set": set_name, "task": f"{set_name}-{task}", "kind": "two-pair" if len(pairs) == 2 else "one-pair",
                       "pairs": pairs, "target": "d1", "method": method, "method_used": "blend" if method == "default" else method,
                       "rmse": scale * (0.02 if method == "fine+coarse-change" else 0.01 + 0.001 * k), "bias": 0.0, "cov95": 0.9}
                if set_name == "beta" and method == "fsdaf" and task == "t1-p3":
                    row = {k: v for k, v in row.items() if k not in ("rmse", "method_used")} | {"error": "InputError: broken"}
                rows.append(row)
    return {"date": "2026-01-01", "machine": "a test machine", "device": "cpu", "load": "0.1 / 0.2", "rows": rows,
            "sets": {"alpha": {"units": "reflectance"}}, "skipped": ["gamma"]}


def test_markdown_section() -> None:
    text = bench.real_sets_markdown(_fake_result(), "tools/bench.py --only real")
    assert text.lstrip().startswith(bench.REAL_HEADING)
    assert "`tools/bench.py --only real` on: a test machine" in text and "Skipped (not found): gamma." in text
    assert "### alpha: reflectance" in text and "### beta" in text and "blend on every task" in text
    assert "| alpha-t1-p2 | d2 | d1 | 0.02000 | **0.01100** | 0.01200 |  | 0.01300 |" in text  # no ESTARFM with one pair
    assert "Errors: beta-t1-p3 fsdaf: InputError: broken" in text and "| error |" in text
    summary = text[text.index("### Summary"):]
    # alpha: baseline 0.02, copy-fine 0.011 (0.55); beta: everything doubled, ratios equal
    assert "| alpha | 0.02000 (1.00) | 0.01100 (0.55) |" in summary and "| beta | 0.04000 (1.00) | 0.02200 (0.55) |" in summary
    assert "| mean over sets | 0.03000 (1.00) | 0.01650 (0.55) |" in summary
    assert "| alpha-t1-p23 | 90.0% | 90.0% |" in text
    two_pair = text[text.index("### Summary, two-pair tasks"):]  # ESTARFM compared on its own tasks
    assert "| alpha | 0.02000 (1.00) | 0.01100 (0.55) | 0.01200 (0.60) | 0.01300 (0.65) |" in two_pair
    coverage = text[text.index("### Summary: 95 % interval coverage"):]
    assert "| set | starfm | estarfm | fsdaf | fitfc | default | hybrid |" in coverage
    assert "| alpha | 90.0% | 90.0% | 90.0% | 90.0% | 90.0% | 90.0% |" in coverage and "| beta | 90.0% |" in coverage
    # --only real replaces the section in place, keeping what follows it
    doc = "# Benchmarks\n\n## Before\n\nkeep\n" + bench.REAL_HEADING + "\n\nstale rows\n\n## After\n\nkeep too\n"
    new = bench.replace_section(doc, bench.REAL_HEADING, text)
    assert "stale rows" not in new and "keep too" in new and new.index("## Before") < new.index(bench.REAL_HEADING) < new.index("## After")


def test_default_sigma_holds_95_percent_intervals_on_the_real_kranj_series(all_sets: Path, tmp_path: Path) -> None:
    """Kranj (real Landsat + MODIS, 45 x 44 px, clouds as nodata): the default's 95 % intervals hold
    90-98 % of the truth (mean over its 9 leave-one-date-out tasks, scored as `make bench` scores them).
    With the simulated-day factors alone they held 84 %: the variance sat on the wrong pixels."""
    import datetime as dt

    from stfuse.api import predict_files

    tasks = real_sets.build_tasks(all_sets, ["kranj"])
    assert len(tasks) == 9
    coverages = []
    for task in tasks:
        out = tmp_path / f"{task['id']}.tif"
        predict_files([(Path(p["fine"]), Path(p["coarse"])) for p in task["pairs"]], Path(task["target"]["coarse"]), out,
                      date=dt.date.fromisoformat(task["target"]["date"]))
        scores, scored = bench.score_real_task(task, {"default": out})
        assert scored > 500
        coverages.append(scores["default"]["cov95"])
    assert 0.90 <= float(np.mean(coverages)) <= 0.98, coverages
