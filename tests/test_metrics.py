"""Tests of stfuse.evaluate.metrics: agreement with the reference scorer, known answers, calibration."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from stfuse.errors import InputError
from stfuse.evaluate.metrics import (
    METRIC_KEYS,
    band_metrics,
    ergas,
    format_table,
    interval_coverage,
    reliability_curve,
    sam,
    score_arrays,
    spearman_error_sigma,
)

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
MANIFEST = BENCH / "MANIFEST.json"
SCALE = 1e-4  # benchmark rasters are int16 reflectance x 10000


def _tasks() -> list:
    if not MANIFEST.is_file():
        return [pytest.param(None, id="no-benchmarks", marks=pytest.mark.skip(reason=f"{BENCH} absent"))]
    return [pytest.param(t, id=t["id"]) for t in json.loads(MANIFEST.read_text())["tasks"]]


TASKS = _tasks()


@pytest.fixture(scope="module")
def ref() -> ModuleType:
    """The reference scorer ``benchmarks/score.py``, imported from the shared folder."""
    path = BENCH / "score.py"
    if not path.is_file():
        pytest.skip(f"reference scorer {path} absent")
    spec = importlib.util.spec_from_file_location("stfuse_test_reference_score", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read_dn(path: Path) -> tuple[np.ndarray, dict]:
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile.copy()


def _write(path: Path, data: np.ndarray, profile: dict, nodata: float | None = None) -> Path:
    import rasterio

    prof = dict(profile, driver="GTiff", dtype=data.dtype.name, count=data.shape[0], nodata=nodata)
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        prof.pop(key, None)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
    return path


def _task_arrays(task: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(pred (B+1,H,W) float32 with a trailing sigma band, truth DN int16, truth reflectance, profile)."""
    pair = task["pairs"][0]
    fine1, _ = _read_dn(BENCH / pair["fine"])
    coarse1, _ = _read_dn(BENCH / pair["coarse"])
    coarse2, _ = _read_dn(BENCH / task["target"]["coarse"])
    truth_dn, profile = _read_dn(BENCH / task["truth"])
    change = (coarse2.astype(np.float64) - coarse1) * SCALE
    refl = fine1 * SCALE + change
    sigma = np.abs(change[:1]) + 0.01  # an extra "uncertainty" band the scorers must ignore
    pred = np.concatenate([refl, sigma]).astype(np.float32)
    return pred, truth_dn, truth_dn.astype(np.float64) * SCALE, profile


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _assert_same(ours: dict, theirs: dict) -> None:
    assert ours["invalid_pixels"] == theirs["invalid_pixels"]
    assert len(ours["bands"]) == len(theirs["bands"])
    for mine, ref_band in zip(ours["bands"], theirs["bands"]):
        assert mine["band"] == ref_band["band"]
        for k in METRIC_KEYS:
            assert _close(mine[k], ref_band[k]), (mine["band"], k, mine[k], ref_band[k])
    for k in METRIC_KEYS:
        assert _close(ours["mean"][k], theirs["mean"][k]), ("mean", k)
    assert _close(ours["ergas"], theirs["ergas"]), (ours["ergas"], theirs["ergas"])
    assert _close(ours["sam_deg"], theirs["sam_deg"]), (ours["sam_deg"], theirs["sam_deg"])


# --------------------------------------------------------------------------- reference agreement


@pytest.mark.parametrize("task", TASKS)
def test_agrees_with_reference_scorer(task: dict, ref: ModuleType, tmp_path: Path) -> None:
    pred, _, truth, profile = _task_arrays(task)
    pred_path = _write(tmp_path / "pred.tif", pred, profile)
    theirs = ref.score(str(pred_path), str(BENCH / task["truth"]))
    ours = score_arrays(pred, truth)
    _assert_same(ours, theirs)
    assert ours["invalid_pixels"] == 0
    assert json.loads(json.dumps(ours)) == ours  # plain Python numbers


@pytest.mark.parametrize("task", TASKS)
def test_agrees_with_reference_scorer_on_invalid_pixels(task: dict, ref: ModuleType, tmp_path: Path) -> None:
    pred, truth_dn, truth_orig, profile = _task_arrays(task)
    bands, h, w = truth_orig.shape
    rng = np.random.default_rng(7)
    # NaN in the prediction: a block in band 1 and scattered pixels in every band
    pred[0, h // 4 : h // 4 + 9, w // 3 : w // 3 + 13] = np.nan
    pred[:bands][rng.random((bands, h, w)) < 0.01] = np.nan
    # a nodata value in the prediction file, and nodata in a copy of the truth
    pred_nodata = -9999.0
    pred[:bands][rng.random((bands, h, w)) < 0.005] = pred_nodata
    truth_dn = truth_dn.copy()
    truth_dn[:, h // 2 : h // 2 + 5, : w // 5] = -9999
    truth_dn[rng.random(truth_dn.shape) < 0.003] = -9999
    truth = truth_dn.astype(np.float64) * SCALE

    pred_path = _write(tmp_path / "pred_nan.tif", pred, profile, nodata=pred_nodata)
    truth_path = _write(tmp_path / "truth_nodata.tif", truth_dn, profile, nodata=-9999)
    theirs = ref.score(str(pred_path), str(truth_path))
    ours = score_arrays(pred, truth, pred_valid=pred != pred_nodata, truth_valid=truth_dn != -9999)
    _assert_same(ours, theirs)
    assert ours["invalid_pixels"] > 0

    # NaN-only prediction holes (no masks): the same as the reference too
    pred2 = np.where(pred == pred_nodata, np.nan, pred).astype(np.float32)
    pred2_path = _write(tmp_path / "pred_nan_only.tif", pred2, profile)
    theirs2 = ref.score(str(pred2_path), str(BENCH / task["truth"]))
    _assert_same(score_arrays(pred2, truth_orig), theirs2)


def test_format_table_matches_reference_output(
    ref: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = next((p.values[0] for p in TASKS if p.values[0] and p.values[0]["truth"].startswith("estarfm")), None)
    if task is None:
        pytest.skip("no multi-band benchmark task")
    pred, _, truth, profile = _task_arrays(task)
    pred[1, 10:20, 10:20] = np.nan
    pred_path = _write(tmp_path / "pred.tif", pred, profile)
    monkeypatch.setattr(sys, "argv", ["score.py", str(pred_path), str(BENCH / task["truth"])])
    ref.main()
    printed = capsys.readouterr().out
    assert format_table(score_arrays(pred, truth)) + "\n" == printed

    named = format_table(score_arrays(pred, truth, band_names=["green", "red", "nir08"]))
    lines = named.splitlines()
    assert [ln.split()[0] for ln in lines[1:5]] == ["green", "red", "nir08", "mean"]
    assert len({len(ln) for ln in lines[:5]}) == 1  # aligned columns


# --------------------------------------------------------------------------- known answers


def _scene(seed: int = 0, shape: tuple[int, int, int] = (3, 40, 50)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=shape), axis=1), axis=2)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return 0.05 + 0.4 * smooth + 0.01 * rng.random(shape)


def test_identical_arrays_are_perfect() -> None:
    x = _scene()
    r = score_arrays(x, x)
    for b in r["bands"]:
        assert b["rmse"] == 0 and b["mae"] == 0 and b["bias"] == 0
        assert b["cc"] == pytest.approx(1, abs=1e-12)
        assert b["ssim"] == pytest.approx(1, abs=1e-12)
        assert b["psnr"] == math.inf
    assert r["ergas"] == 0
    assert r["sam_deg"] == pytest.approx(0, abs=1e-3)  # score.py's 1e-12 guard leaves ~1e-4 deg
    assert r["invalid_pixels"] == 0


def test_constant_offset_gives_bias_and_rmse() -> None:
    x = _scene(1)
    for offset in (0.02, -0.035):
        r = score_arrays(x + offset, x)
        for i, b in enumerate(r["bands"]):
            assert b["bias"] == pytest.approx(offset, abs=1e-12)
            assert b["rmse"] == pytest.approx(abs(offset), abs=1e-12)
            assert b["mae"] == pytest.approx(abs(offset), abs=1e-12)
            assert b["cc"] == pytest.approx(1, abs=1e-12)
            dr = x[i].max() - x[i].min()
            assert b["psnr"] == pytest.approx(20 * np.log10(dr / abs(offset)))
            assert b["ssim"] < 1


def test_sam_of_scaled_spectra_is_zero_and_orthogonal_is_90() -> None:
    x = _scene(2)
    k = np.random.default_rng(3).uniform(0.5, 2.0, x.shape[1:])
    assert sam(x * k, x) == pytest.approx(0, abs=1e-3)
    assert score_arrays(x * k, x)["sam_deg"] == pytest.approx(0, abs=1e-3)
    a = np.zeros((2, 4, 4))
    b = np.zeros((2, 4, 4))
    a[0], b[1] = 0.3, 0.2
    assert sam(a, b) == pytest.approx(90)


def test_ergas_known_answer() -> None:
    mu = np.array([0.05, 0.1, 0.3])
    off = np.array([0.01, -0.01, 0.03])
    truth = np.broadcast_to(mu[:, None, None], (3, 20, 20)).copy()
    pred = truth + off[:, None, None]
    expected = 100 * (30 / 500) * np.sqrt(np.mean((np.abs(off) / mu) ** 2))
    assert ergas(pred, truth) == pytest.approx(expected, rel=1e-12)
    assert ergas(pred, truth, ratio=1.0) == pytest.approx(expected * 500 / 30, rel=1e-12)


def test_invalid_pixels_counted_once_per_location_and_extra_bands_ignored() -> None:
    x = _scene(4)
    pred = np.concatenate([x, np.full((1, *x.shape[1:]), 0.01)])  # sigma band
    pred[0, 5, 6] = np.nan
    pred[2, 5, 6] = np.nan
    pred[1, 7, 8] = np.inf
    mask = np.ones(x.shape[1:], bool)
    mask[0, 0] = False
    r = score_arrays(pred, x, pred_valid=mask)
    assert r["invalid_pixels"] == 3
    assert r["bands"][0]["rmse"] == 0
    assert [b["band"] for b in r["bands"]] == [1, 2, 3]
    # invalid pixels hidden from the per-band metrics
    assert score_arrays(pred[:3], x, truth_valid=np.isfinite(pred[:3]))["invalid_pixels"] == 2


def test_band_metrics_basics() -> None:
    x = _scene(5)[0]
    y = x + 0.01
    m = band_metrics(y, x)
    assert set(m) == set(METRIC_KEYS)
    assert band_metrics(y, x, data_range=1.0)["psnr"] == pytest.approx(40.0)
    valid = np.zeros_like(x, bool)
    assert all(math.isnan(v) for v in band_metrics(y, x, valid).values())
    # a NaN truth pixel is left out; the SSIM stays finite
    xt = x.copy()
    xt[3, 3] = np.nan
    m2 = band_metrics(y, xt)
    assert m2["rmse"] == pytest.approx(0.01) and math.isfinite(m2["ssim"])
    # a 2-D array is one band
    assert score_arrays(y, x)["bands"][0]["rmse"] == pytest.approx(m["rmse"])


def test_input_errors() -> None:
    x = _scene(6)
    with pytest.raises(InputError, match="shape mismatch"):
        score_arrays(x[:, :10], x)
    with pytest.raises(InputError, match="shape mismatch"):
        score_arrays(x[:2], x)
    with pytest.raises(InputError, match="integer"):
        score_arrays((x * 1e4).astype(np.int16), x)
    with pytest.raises(InputError, match="band_names"):
        score_arrays(x, x, band_names=["red"])
    with pytest.raises(InputError, match="pred_valid"):
        score_arrays(x, x, pred_valid=np.ones((5, 5), bool))
    with pytest.raises(ValueError):  # InputError is a ValueError
        band_metrics(x, x[0])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    bands=st.integers(1, 3),
    h=st.integers(7, 16),
    w=st.integers(7, 16),
    scale=st.floats(0.001, 0.2),
)
def test_metric_invariants(seed: int, bands: int, h: int, w: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.01, 0.6, (bands, h, w))
    pred = truth + rng.normal(0, scale, truth.shape)
    r = score_arrays(pred, truth)
    for b in r["bands"]:
        assert abs(b["bias"]) <= b["mae"] + 1e-15 <= b["rmse"] + 2e-15
        assert -1 - 1e-9 <= b["cc"] <= 1 + 1e-9
        assert -1 - 1e-9 <= b["ssim"] <= 1 + 1e-9
    assert r["ergas"] >= 0 and 0 <= r["sam_deg"] <= 180
    swapped = score_arrays(truth, pred)
    assert swapped["sam_deg"] == pytest.approx(r["sam_deg"])


# --------------------------------------------------------------------------- calibration


def _calibrated(n: int = 100_000, seed: int = 12345) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0.0, 0.5, n)
    sigma = rng.uniform(0.005, 0.05, n)
    truth = pred + rng.normal(0.0, 1.0, n) * sigma
    return pred, sigma, truth


def test_coverage_of_calibrated_gaussian() -> None:
    pred, sigma, truth = _calibrated()
    cov = interval_coverage(pred, sigma, truth)
    assert set(cov) == {0.68, 0.95}
    assert cov[0.68] == pytest.approx(0.68, abs=0.01)
    assert cov[0.95] == pytest.approx(0.95, abs=0.01)


def test_coverage_drops_when_sigma_is_halved() -> None:
    pred, sigma, truth = _calibrated()
    cov = interval_coverage(pred, sigma / 2, truth)
    for level in (0.68, 0.95):
        # |e| <= z * sigma / 2  <=>  |Z| <= z / 2
        expected = 2 * norm.cdf(norm.ppf((1 + level) / 2) / 2) - 1
        assert cov[level] == pytest.approx(expected, abs=0.01)
    assert cov[0.68] == pytest.approx(0.38, abs=0.015)
    assert cov[0.95] == pytest.approx(0.68, abs=0.015)


def test_reliability_curve_is_diagonal_when_calibrated() -> None:
    pred, sigma, truth = _calibrated()
    expected, observed = reliability_curve(pred, sigma, truth)
    assert expected.shape == observed.shape == (19,)
    np.testing.assert_allclose(expected, np.linspace(0.05, 0.95, 19))
    assert np.max(np.abs(observed - expected)) < 0.01
    assert np.all(np.diff(observed) >= 0)
    # over-confident model: the curve sits below the diagonal
    _, low = reliability_curve(pred, sigma / 2, truth)
    assert np.all(low < expected)


def test_calibration_respects_valid_mask_and_nan() -> None:
    pred, sigma, truth = _calibrated(10_000)
    bad_truth = truth.copy()
    bad_truth[:5000] = pred[:5000] + 100.0  # far outside any interval
    valid = np.arange(pred.size) >= 5000
    assert interval_coverage(pred, sigma, bad_truth, valid) == interval_coverage(
        pred[5000:], sigma[5000:], truth[5000:]
    )
    nan_truth = np.where(valid, truth, np.nan)
    assert interval_coverage(pred, sigma, nan_truth) == interval_coverage(pred[5000:], sigma[5000:], truth[5000:])
    assert math.isnan(interval_coverage(pred, sigma, truth, np.zeros(pred.size, bool))[0.68])
    with pytest.raises(InputError, match="negative"):
        interval_coverage(pred, -sigma, truth)
    with pytest.raises(InputError, match="levels"):
        interval_coverage(pred, sigma, truth, levels=(0.5, 1.0))


def test_spearman_error_sigma() -> None:
    pred, sigma, truth = _calibrated()
    rho = spearman_error_sigma(pred, sigma, truth)
    assert rho > 0.3
    # sigma unrelated to the error: no correlation
    shuffled = np.random.default_rng(1).permutation(sigma)
    assert abs(spearman_error_sigma(pred, shuffled, truth)) < 0.02
    # deterministic subsampling, close to the full value
    sub1 = spearman_error_sigma(pred, sigma, truth, max_samples=20_000)
    sub2 = spearman_error_sigma(pred, sigma, truth, max_samples=20_000)
    assert sub1 == sub2
    assert sub1 == pytest.approx(rho, abs=0.03)
    # works on images, too
    img = [a.reshape(4, 250, 100) for a in (pred, sigma, truth)]
    assert spearman_error_sigma(*img) == pytest.approx(rho, abs=1e-12)
    assert math.isnan(spearman_error_sigma(pred[:1], sigma[:1], truth[:1]))
