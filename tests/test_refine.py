"""Tests of stfuse.fusion.refine: the refiner learns, its uncertainty is calibrated, it is reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, zoom

from stfuse.errors import CheckpointError, InputError
from stfuse.fusion.quality import QUALITY_BITS
from stfuse.fusion.refine import (
    DEFAULT_WEIGHTS,
    ENSEMBLE,
    FEATURES,
    HybridFn,
    Refiner,
    additive_prior,
    build_features,
    calibration_record,
    halo,
    hybrid_arrays,
    hybrid_fn,
    hybrid_variance_scale,
    load_checkpoint,
    load_model,
    mc_predict,
    predict_hybrid,
    refine,
    save_checkpoint,
    scene_variance_scale,
    train_self_supervised,
    train_supervised,
)
from stfuse.fusion.refine.hybrid import REAL_SCENE_FACTOR, output_variance
from stfuse.fusion.uncertainty import combine_weighted, coverage


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is fastest (and robust on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean((a - b) ** 2)))


def _fine(rng: np.random.Generator, bands: int, size: int, block: int = 8) -> np.ndarray:
    """Field-like fine reflectance (B, H, W): blocky classes (``block`` px fields) plus texture."""
    cls = zoom(rng.integers(0, 4, (1, size // block, size // block)), (1, block, block), order=0)[0]
    levels = rng.uniform(0.05, 0.4, (bands, 4))
    img = np.stack([levels[b][cls] for b in range(bands)])
    return (img + 0.01 * rng.standard_normal(img.shape)).astype(np.float32)


def _coarse(img: np.ndarray) -> np.ndarray:
    """A smooth MODIS-like version on the fine grid."""
    return gaussian_filter(img, (0, 6, 6)).astype(np.float32)


def _smooth_change(rng: np.random.Generator, bands: int, size: int, amp: float) -> np.ndarray:
    return (amp * gaussian_filter(rng.standard_normal((bands, size, size)), (0, 10, 10)) * 10).astype(np.float32)


def test_refiner_learns_a_known_residual_from_pairs_alone():
    """Fine reflectance changes only 40 % as much as the coarse change says; the additive prior
    over-shoots by 60 % of the coarse change. Self-supervision on two pairs learns to fix it.
    (The error is smooth, so the high-pass constraint of the shipped architecture is off.)"""
    rng = np.random.default_rng(0)
    size, bands = 96, 2
    f_a = _fine(rng, bands, size)
    c_a = _coarse(f_a)
    d_b = _smooth_change(rng, bands, size, 0.1)
    c_b = c_a + d_b
    f_b = f_a + 0.4 * d_b
    fine, coarse = np.stack([f_a, f_b]), np.stack([c_a, c_b])
    model = train_self_supervised(
        fine, coarse, init=Refiner(width=16, dropout=0.0, highpass=0), steps=100, batch=4, patch=32, lr=3e-3,
        eval_every=25, patience=10, time_limit=None, mc_samples=1,
    )
    assert model.meta["self_supervised"]["best_step"] > 0
    # a new target day with another coarse change
    d_t = _smooth_change(np.random.default_rng(1), bands, size, 0.1)
    ct, truth = c_a + d_t, f_a + 0.4 * d_t
    pm, pv = additive_prior(f_a[None], c_a[None], ct)
    mean, var = refine(pm, pv, f_a[None], c_a[None], ct, model=model, mc_samples=1)
    before, after = _rmse(pm, truth), _rmse(mean, truth)
    assert after < 0.5 * before, (before, after)
    assert mean.shape == var.shape == (bands, size, size) and np.all(var > 0)


def test_gaussian_nll_gives_calibrated_sigma():
    """Heteroscedastic noise: sd 0.003 on dark fields, 0.012 on bright ones."""
    rng = np.random.default_rng(2)
    size, bands = 64, 1

    def example(r: np.random.Generator):
        f = _fine(r, bands, size, block=16)
        c = _coarse(f)
        ct = c + 0.01
        pm, pv = additive_prior(f[None], c[None], ct)
        sd = np.where(f > 0.2, 0.012, 0.003).astype(np.float32)
        return pm, pv, f, c, ct, (pm + sd * r.standard_normal(pm.shape)).astype(np.float32), sd

    train = [example(rng)[:6] for _ in range(4)]
    model = train_supervised(train, steps=300, batch=8, patch=32, lr=1e-2, width=16, dropout=0.0)
    pm, pv, f, c, ct, truth, sd = example(np.random.default_rng(3))
    mean, var = refine(pm, pv, f[None], c[None], ct, model=model, mc_samples=1)
    cov = coverage(mean, var, truth, levels=(0.6827, 0.95))
    assert 0.60 < cov[0.6827] < 0.76, cov
    assert 0.90 < cov[0.95] < 0.985, cov
    sigma = np.sqrt(var)
    assert np.median(sigma[sd > 0.005]) > 3 * np.median(sigma[sd < 0.005])


def _random_head(model: Refiner, seed: int = 0) -> Refiner:
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        model.head.weight.copy_(0.3 * torch.randn(model.head.weight.shape, generator=g))
    return model


def _inputs(seed: int = 4, bands: int = 3, size: int = 40):
    rng = np.random.default_rng(seed)
    f = _fine(rng, bands, 48)[:, :size, :size]
    c = _coarse(f)
    ct = c + 0.02
    pm, pv = additive_prior(f[None], c[None], ct)
    return pm, pv, f, c, ct


def test_mc_dropout_epistemic_variance_and_deterministic_single_pass():
    model = _random_head(Refiner(width=16, dropout=0.2))
    pm, pv, f, c, ct = _inputs()
    parts = mc_predict(model, pm, pv, f, c, ct, mc_samples=8, seed=0)
    assert np.all(parts["epistemic"] > 0) and np.all(parts["aleatoric"] > 0)
    again = mc_predict(model, pm, pv, f, c, ct, mc_samples=8, seed=0)
    other = mc_predict(model, pm, pv, f, c, ct, mc_samples=8, seed=1)
    np.testing.assert_array_equal(parts["mean"], again["mean"])
    assert not np.array_equal(parts["mean"], other["mean"])
    one = mc_predict(model, pm, pv, f, c, ct, mc_samples=1, seed=0)
    one_b = mc_predict(model, pm, pv, f, c, ct, mc_samples=1, seed=99)
    np.testing.assert_array_equal(one["mean"], one_b["mean"])
    np.testing.assert_array_equal(one["aleatoric"], one_b["aleatoric"])
    assert np.all(one["epistemic"] == 0)
    # the total variance of refine() is the sum of the parts
    mean, var = refine(pm[None], pv[None], f[None], c[None], ct, model=model, mc_samples=8, seed=0)
    np.testing.assert_allclose(var, parts["aleatoric"] + parts["epistemic"], rtol=1e-5)
    np.testing.assert_allclose(mean, parts["mean"], rtol=1e-6)


def test_tiles_equal_untiled():
    model = _random_head(Refiner(width=8))
    pm, pv, f, c, ct = _inputs(size=40)
    a = refine(pm, pv, f[None], c[None], ct, model=model, mc_samples=3, tile=512)
    b = refine(pm, pv, f[None], c[None], ct, model=model, mc_samples=3, tile=16)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-4, atol=1e-10)
    assert halo() >= 24


def test_band_agnostic_and_nan_handling():
    model = _random_head(Refiner(width=8))
    for bands in (1, 3, 6):
        pm, pv, f, c, ct = _inputs(bands=bands)
        f[0, :5, :5] = np.nan  # a cloud in the pair's fine image
        pm[-1, 10:12, 10:12] = np.nan  # the prior cannot predict here
        mean, var = refine(pm, pv, f[None], c[None], ct, model=model, mc_samples=2)
        assert mean.shape == (bands, 40, 40)
        assert np.isnan(mean[-1, 10:12, 10:12]).all() and np.isnan(var[-1, 10:12, 10:12]).all()
        ok = np.isfinite(pm)
        assert np.isfinite(mean[ok]).all() and (var[ok] > 0).all()
    with pytest.raises(InputError, match="coarse_target"):
        refine(pm, pv, f[None], c[None], ct[:1], model=model)


def test_two_pairs_are_refined_per_pair_and_combined():
    model = Refiner(width=8)  # untrained: mean = prior, log-variance constant
    pm0, pv0, f0, c0, ct = _inputs(seed=5)
    pm1, pv1, f1, c1, _ = _inputs(seed=6)
    pm1 = f1 + (ct - c1)
    mean, var = refine(np.stack([pm0, pm1]), np.stack([pv0, pv1]), np.stack([f0, f1]), np.stack([c0, c1]), ct,
                       model=model, mc_samples=1, correlation=0.0)
    m0, v0 = refine(pm0, pv0, f0[None], c0[None], ct, model=model, mc_samples=1)
    m1, v1 = refine(pm1, pv1, f1[None], c1[None], ct, model=model, mc_samples=1)
    np.testing.assert_allclose(mean, (m0 / v0 + m1 / v1) / (1 / v0 + 1 / v1), rtol=1e-5)
    np.testing.assert_allclose(var, 1 / (1 / v0 + 1 / v1), rtol=1e-5)


def test_checkpoint_round_trip_and_wrong_bands_refused(tmp_path):
    model = _random_head(Refiner(width=8))
    path = save_checkpoint(model, tmp_path / "scene.pt", {"bands": ["green", "red", "nir08"], "band_agnostic": False})
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["bands"] == ["green", "red", "nir08"] and meta["config"]["features"] == list(FEATURES)
    loaded = load_checkpoint(path, bands=["green", "red", "nir08"])
    pm, pv, f, c, ct = _inputs()
    np.testing.assert_array_equal(
        refine(pm, pv, f[None], c[None], ct, model=model, mc_samples=1)[0],
        refine(pm, pv, f[None], c[None], ct, model=loaded, mc_samples=1)[0],
    )
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, bands=["red", "nir08", "swir16"])
    msg = str(err.value)
    assert "['green', 'red', 'nir08']" in msg and "['red', 'nir08', 'swir16']" in msg
    assert err.value.exit_code == 2
    # band-agnostic checkpoints take any bands
    path2 = save_checkpoint(model, tmp_path / "agnostic.pt", {"band_agnostic": True})
    load_checkpoint(path2, bands=["blue"])
    with pytest.raises(CheckpointError, match="not a stfuse refiner checkpoint"):
        (tmp_path / "junk.pt").write_bytes(b"not a zip")
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_training_is_bit_for_bit_reproducible(tmp_path):
    rng = np.random.default_rng(7)
    f = _fine(rng, 2, 48)
    c = _coarse(f)
    ct = c + _smooth_change(rng, 2, 48, 0.02)
    pm, pv = additive_prior(f[None], c[None], ct)
    ex = [(pm, pv, f, c, ct, f + 0.5 * (ct - c))]
    runs = [train_supervised(ex, steps=12, batch=4, patch=24, width=8, seed=s) for s in (3, 3, 4)]
    a, b, other = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)
    pa = save_checkpoint(runs[0], tmp_path / "a" / "refiner.pt", {"seed": 3})
    pb = save_checkpoint(runs[1], tmp_path / "b" / "refiner.pt", {"seed": 3})
    assert pa.read_bytes() == pb.read_bytes()


def test_shipped_weights_load_and_apply_to_3_and_6_bands():
    assert DEFAULT_WEIGHTS.is_file(), "run `make weights` to regenerate the shipped weights"
    assert DEFAULT_WEIGHTS.stat().st_size < 5_000_000
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    for key in ("seed", "command", "stfuse_version", "normalisation", "band_agnostic"):
        assert key in meta
    model = load_model(None, bands=["green", "red", "nir08"])
    assert model.n_params < 100_000
    for bands in (3, 6):
        pm, pv, f, c, ct = _inputs(bands=bands)
        mean, var = refine(pm, pv, f[None], c[None], ct, model=None, mc_samples=2)
        assert np.isfinite(mean).all() and (var > 0).all()


def test_predict_hybrid_one_pair_uses_shipped_weights_and_feature_count():
    pm, pv, f, c, ct = _inputs(bands=3)
    mean, var = predict_hybrid(f[None], c[None], ct, mc_samples=2)
    assert mean.shape == (3, 40, 40) and np.isfinite(var).all()
    feats = build_features(pm, pv, f, c, ct)
    assert feats.x.shape == (3, len(FEATURES), 40, 40)


def test_hybrid_weights_members_by_refined_variance_and_keeps_prior_means():
    """The ensemble: prior means weighted by the refined variances (with each member's variance scale),
    variance = the weighted mixture of the prior variances x the hybrid scale for 1 pair; correction
    weight 0 keeps the prior means."""
    pm, pv, f, c, ct = _inputs(bands=2, size=40)
    model = _random_head(Refiner(width=8))  # a non-zero correction, which weight 0 must drop
    model.meta = {"variance_scales": {"fitfc": 0.5, "fsdaf": 2.0}, "hybrid_variance_scales": {"1": 1.5, "2": 0.8}}
    fine, coarse = f[None], c[None]
    mean, var = hybrid_arrays(fine, coarse, ct, prior_fn="ensemble", model=model, mc_samples=1, correction_weight=0.0)
    from stfuse.fusion.prior import predict

    members = [predict(fine, coarse, ct, method=m) for m in ENSEMBLE]
    refined = [refine(m, v, fine, coarse, ct, model=model, mc_samples=1, prior=name)[1] for (m, v), name in zip(members, ENSEMBLE)]
    exp_mean, exp_var = combine_weighted(np.stack([m for m, _ in members]), np.stack(refined), np.stack([v for _, v in members]),
                                         spread=True)
    np.testing.assert_allclose(mean, exp_mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(var, 1.5 * exp_var, rtol=1e-5)
    assert hybrid_variance_scale(model, 1) == 1.5 and hybrid_variance_scale(model, 3) == 0.8
    record = calibration_record(model, 1)  # what the output tags say was applied
    assert record["variance_scale"] == 1.5 * REAL_SCENE_FACTOR and record["member_variance_scales"] == {"fitfc": 0.5, "fsdaf": 2.0}
    assert record["members_fitted_on"] == "simulated validation scenes"
    model.meta["self_supervised"] = {"pairs": 2}
    assert calibration_record(model, 2)["members_fitted_on"].startswith("held-out tiles of 2 pairs")
    # full correction moves the mean away from the prior ensemble
    full, _ = hybrid_arrays(fine, coarse, ct, prior_fn="ensemble", model=model, mc_samples=1, correction_weight=1.0)
    assert np.nanmax(np.abs(full - mean)) > 1e-4
    with pytest.raises(InputError, match="correction_weight"):
        hybrid_arrays(fine, coarse, ct, model=model, correction_weight=2.0)


def _two_pairs(seed: int = 11, size: int = 64):
    """Two pairs (fine, coarse) of a field-like scene, the second a brightened version, and a target coarse image."""
    rng = np.random.default_rng(seed)
    f1 = _fine(rng, 2, size)
    f2 = (1.1 * f1 + 0.01).astype(np.float32)
    fine = np.stack([f1, f2])
    coarse = np.stack([_coarse(f1), _coarse(f2)])
    return fine, coarse, _coarse((1.05 * f1 + 0.005).astype(np.float32))


def test_scene_variance_scale_is_fitted_on_the_pairs_predicting_each_other():
    """The scale the scene's own pairs ask for: pair 2 predicted from pair 1 and back (the single-pair
    hybrid at scale 1), scale fitted on those; noisier pairs (larger cross errors) ask for more. One pair: None."""
    from stfuse.fusion.uncertainty import fit_variance_scale

    fine, coarse, _ = _two_pairs()
    scale = scene_variance_scale(fine, coarse, mc_samples=1, seed=2)
    preds = [hybrid_arrays(fine[[a]], coarse[[a]], coarse[b], mc_samples=1, seed=2, variance_scale=1.0) for a, b in ((0, 1), (1, 0))]
    by_hand = fit_variance_scale(np.concatenate([m.ravel() for m, _ in preds]), np.concatenate([v.ravel() for _, v in preds]),
                                 np.concatenate([fine[1].ravel(), fine[0].ravel()]))
    assert scale == pytest.approx(by_hand, rel=1e-6)
    noisy = fine + 0.03 * np.random.default_rng(0).standard_normal(fine.shape).astype(np.float32)
    assert scene_variance_scale(noisy, coarse, mc_samples=1, seed=2) > 2 * scale
    assert scene_variance_scale(fine[:1], coarse[:1]) is None
    assert scene_variance_scale(fine[:, :, :8, :8], coarse[:, :, :8, :8]) is None  # too few pixels to judge


def test_two_pair_hybrid_variance_follows_the_scene_unless_adapted():
    """With 2 pairs the hybrid's variance scale = the model's scene factor x the scene's own scale
    (recorded in the calibration tag); a model adapted to the pairs, or one pair, keeps the fixed scale."""
    fine, coarse, ct = _two_pairs()
    model = _random_head(Refiner(width=8))
    model.meta = {"hybrid_variance_scales": {"1": 1.5, "2": 0.8}, "hybrid_scene_factor": 0.5}
    _, raw = hybrid_arrays(fine, coarse, ct, model=model, mc_samples=1, variance_scale=1.0)
    _, var = hybrid_arrays(fine, coarse, ct, model=model, mc_samples=1)
    scene = scene_variance_scale(fine, coarse, model=model, mc_samples=1)
    np.testing.assert_allclose(var, 0.5 * scene * raw, rtol=1e-5)
    record = calibration_record(model, 2, scene_scale=scene)
    assert record["variance_scale"] == pytest.approx(0.5 * scene * REAL_SCENE_FACTOR) and record["scene_scale"] == round(scene, 4)
    assert record["scene_factor"] == 0.5 and record["fitted_on"].startswith("this scene's pairs")
    _, one = hybrid_arrays(fine[:1], coarse[:1], ct, model=model, mc_samples=1, variance_scale=1.0)
    np.testing.assert_allclose(hybrid_arrays(fine[:1], coarse[:1], ct, model=model, mc_samples=1)[1], 1.5 * one, rtol=1e-5)
    model.meta["self_supervised"] = {"pairs": 2}
    np.testing.assert_allclose(hybrid_arrays(fine, coarse, ct, model=model, mc_samples=1)[1], 0.8 * raw, rtol=1e-5)
    assert calibration_record(model, 2, scene_scale=scene)["variance_scale"] == 0.8 * REAL_SCENE_FACTOR
    # tiles: HybridFn fits the scale once on the whole area and applies it to every tile
    fn = HybridFn("ensemble", _random_head(Refiner(width=8)), mc_samples=1)
    fn.model.meta = {"hybrid_variance_scales": {"1": 1.5, "2": 0.8}, "hybrid_scene_factor": 0.5}
    import xarray as xr

    assert fn.fit_scene(xr.DataArray(fine, dims=("pair", "band", "y", "x")), coarse) == pytest.approx(
        scene_variance_scale(fine, coarse, model=fn.model, mc_samples=1))
    _, tile_raw = hybrid_arrays(fine[..., :32, :32], coarse[..., :32, :32], ct[:, :32, :32], model=fn.model, mc_samples=1,
                                variance_scale=1.0)
    np.testing.assert_allclose(fn(fine[..., :32, :32], coarse[..., :32, :32], ct[:, :32, :32])[1],
                               output_variance(0.5 * fn.scene_scale * tile_raw), rtol=1e-5)


def test_one_pair_variance_follows_the_scene_from_an_evidence_date():
    """With one pair and a second clear date (catalog mode), the scale = the model's one-pair scene
    factor x the scale the pair and that date ask for predicting each other; without one (the arrays
    of a single pair) the fixed one-pair scale. Old checkpoints' `hybrid_scene_factor` counts for 2+ pairs."""
    import xarray as xr

    from stfuse.fusion.refine import scene_factor

    fine, coarse, ct = _two_pairs()
    meta = {"hybrid_variance_scales": {"1": 1.5, "2": 0.8}, "hybrid_scene_factors": {"1": 1.2, "2": 0.5}}
    fn = HybridFn("ensemble", _random_head(Refiner(width=8)), mc_samples=1)
    fn.model.meta = dict(meta)
    evidence = xr.DataArray(fine, dims=("pair", "band", "y", "x"))  # date 1 = evidence, date 2 = the day's pair
    scene = fn.fit_scene(evidence, coarse, n_pairs=1, dates=["2023-06-01", "2023-06-17"])
    assert scene == pytest.approx(scene_variance_scale(fine, coarse, model=fn.model, mc_samples=1))
    _, raw = hybrid_arrays(fine[1:], coarse[1:], ct, model=fn.model, mc_samples=1, variance_scale=1.0)
    np.testing.assert_allclose(fn(fine[1:], coarse[1:], ct)[1], output_variance(1.2 * scene * raw), rtol=1e-5)
    record = fn.calibration(1)
    assert record["variance_scale"] == pytest.approx(1.2 * scene * REAL_SCENE_FACTOR) and record["scene_factor"] == 1.2
    assert record["scene_dates"] == ["2023-06-01", "2023-06-17"] and record["fitted_on"].startswith("this day's pair")
    # the arrays of one pair hold no evidence: the fixed scale
    np.testing.assert_allclose(hybrid_arrays(fine[1:], coarse[1:], ct, model=fn.model, mc_samples=1)[1], 1.5 * raw, rtol=1e-5)
    assert fn.fit_scene(evidence[1:], coarse[1:], n_pairs=1) is None and fn.calibration(1)["variance_scale"] == 1.5 * REAL_SCENE_FACTOR
    # a model without a one-pair factor (older checkpoints) keeps the fixed scale with one pair
    fn.model.meta = {"hybrid_variance_scales": {"1": 1.5, "2": 0.8}, "hybrid_scene_factor": 0.5}
    assert scene_factor(fn.model, 1) is None and scene_factor(fn.model, 2) == 0.5
    assert fn.fit_scene(evidence, coarse, n_pairs=1) is None and fn.calibration(1)["variance_scale"] == 1.5 * REAL_SCENE_FACTOR


def test_hybrid_fn_is_a_picklable_tile_function_equal_to_the_whole_image():
    import pickle

    import xarray as xr

    from stfuse.output.tiling import predict_tiled

    pm, pv, f, c, ct = _inputs(bands=2, size=40)
    fn = hybrid_fn("ensemble", None, mc_samples=2, seed=3)
    assert isinstance(fn, HybridFn) and fn.halo >= halo() and fn.name == "fitfc+fsdaf+refiner"
    fn2 = pickle.loads(pickle.dumps(fn))
    dims = ("pair", "band", "y", "x")
    out = predict_tiled(xr.DataArray(f[None], dims=dims), xr.DataArray(c[None], dims=dims), xr.DataArray(ct, dims=dims[1:]),
                        predict_fn=fn2, halo=min(fn.halo, 40), tile=64)  # predict_tiled needs halo <= the image
    mean, var = fn(f[None], c[None], ct)
    again = hybrid_fn("ensemble", None, mc_samples=2, seed=3)(f[None], c[None], ct)
    np.testing.assert_array_equal(mean, again[0])  # deterministic for a seed
    np.testing.assert_array_equal(var, again[1])
    np.testing.assert_allclose(out["mean"].values, mean, rtol=1e-6)
    np.testing.assert_allclose(out["variance"].values, var, rtol=1e-6)
    assert np.isfinite(mean).all() and (var > 0).all()


def test_shipped_weights_carry_hybrid_calibration():
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    scales = meta["hybrid_variance_scales"]
    assert set(scales) == {"1", "2"} and all(0.05 < v < 20 for v in scales.values())
    check = meta["hybrid_calibration"]["check"]
    assert set(check) == {"1", "2"} and all(0 < c["cov68"] < c["cov95"] <= 1 for c in check.values())


def test_catalog_predict_with_refiner_writes_hybrid_cogs(mini_catalog, tmp_path):
    """`stfuse predict --refine shipped` in catalog mode: the hybrid runs per day, tile by tile;
    sigma/mean differ from the prior's (`stfuse.predict`). The variance scale follows the scene:
    on a two-pair day (06-21) from its pairs, on a one-pair day (06-22, on its pair's date) from
    the pair and the nearest other clear date (06-06)."""
    import rasterio
    from click.testing import CliRunner

    from stfuse.api import predict
    from stfuse_cli.main import cli

    first, last = "2023-06-21", "2023-06-22"
    common = dict(catalog=mini_catalog, start=first, end=last, bands=["red", "nir08"], method="auto", tile=64)
    prior_cogs = predict(out_dir=tmp_path / "prior", **common)
    args = ["predict", "--catalog", mini_catalog, "--start", first, "--end", last, "--bands", "red,nir08", "--method", "auto",
            "--tile", "64", "--refine", "shipped", "--mc-samples", "2", "--seed", "5", "-o", tmp_path / "hybrid", "-q"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    shipped = load_model(None)
    n = 2
    seen = {}
    for prior_cog in prior_cogs:
        with rasterio.open(prior_cog) as a, rasterio.open(tmp_path / "hybrid" / prior_cog.name) as b:
            pa, pb = a.read(), b.read()
            tags = b.tags()
        assert np.isfinite(pb[: 2 * n]).all() and (pb[n : 2 * n] > 0).all()
        assert not np.allclose(pa[n : 2 * n], pb[n : 2 * n])  # sigma
        observed = (pb[2 * n].astype(int) & QUALITY_BITS["observed"]) != 0  # 06-22: a Landsat date, its clear pixels observed
        np.testing.assert_array_equal(pa[:n][:, observed], pb[:n][:, observed])
        if not observed.any():  # (06-22's other pixels are all cloudy in its only pair: the same fallback in both)
            assert not np.allclose(pa[:n], pb[:n])  # mean (Fit-FC + FSDAF ensemble instead of the auto prior)
        assert tags["refine"] == "shipped" and tags["seed"] == "5" and tags["mc_samples"] == "2"
        assert tags["method"] == "fitfc+fsdaf+refiner(shipped)"
        calibration = json.loads(tags["calibration"])  # the post-hoc variance scale applied, and what it was fitted on
        pair_dates = json.loads(tags["pair_dates"])
        n_pairs = len(pair_dates)
        seen[n_pairs] = calibration
        assert calibration["scene_factor"] == shipped.meta["hybrid_scene_factors"][str(min(n_pairs, 2))]
        assert calibration["scene_scale"] > 0
        assert calibration["variance_scale"] == pytest.approx(calibration["scene_factor"] * calibration["scene_scale"] * REAL_SCENE_FACTOR, rel=1e-3)
        assert "simulated" in calibration["fitted_on"] and set(calibration["member_variance_scales"]) == {"fitfc", "fsdaf"}
    assert seen[2]["scene_dates"] == ["2023-06-06", "2023-06-22"] and seen[2]["fitted_on"].startswith("this scene's pairs")
    assert seen[1]["scene_dates"] == ["2023-06-06", "2023-06-22"] and seen[1]["fitted_on"].startswith("this day's pair")
    assert seen[1]["scene_factor"] != seen[2]["scene_factor"]


def test_predict_uses_a_user_checkpoint_and_refuses_one_for_other_bands(tmp_path):
    """`stfuse predict --refine shipped --weights CKPT`: the checkpoint replaces the shipped weights
    (a copy of them gives identical output, a changed one a different output); a checkpoint made
    for other bands, or --weights without --refine, exits 2 and writes nothing."""
    import copy

    import rasterio
    from click.testing import CliRunner

    from stfuse.fusion.refine import load_model
    from stfuse_cli.main import cli

    from conftest import write_tif

    rng = np.random.default_rng(4)
    fine = np.kron(0.1 + 0.2 * rng.random((3, 8, 8)), np.ones((1, 8, 8))) + 0.01 * rng.random((3, 64, 64))
    coarse = np.kron(fine.reshape(3, 4, 16, 4, 16).mean(axis=(2, 4)), np.ones((1, 16, 16)))
    change = np.kron(0.05 * rng.random((3, 4, 4)), np.ones((1, 16, 16)))
    paths = [write_tif(tmp_path / f"{name}.tif", a.astype(np.float32))
             for name, a in (("fine", fine), ("coarse", coarse), ("target", coarse + change))]
    shipped = load_model(None)
    same = save_checkpoint(shipped, tmp_path / "same.pt", dict(shipped.meta))
    changed = copy.deepcopy(shipped)
    with torch.no_grad():
        for p in changed.parameters():
            p.mul_(0.5)
    other = save_checkpoint(changed, tmp_path / "other.pt", dict(shipped.meta))
    wrong = save_checkpoint(shipped, tmp_path / "wrong.pt", {**shipped.meta, "bands": ["red", "nir08", "swir16"], "band_agnostic": False})

    def run(out, *extra):
        args = ["predict", "--pair", paths[0], paths[1], "--coarse", paths[2], "--method", "auto", "--mc-samples", "2", "-o", out, *extra]
        return CliRunner().invoke(cli, [str(a) for a in args])

    def read(path):
        with rasterio.open(path) as src:
            return src.read(), src.tags()

    for name, extra in (("a", ()), ("b", ("--weights", same)), ("c", ("--weights", other))):
        result = run(tmp_path / f"{name}.tif", "--refine", "shipped", *extra)
        assert result.exit_code == 0, result.output
    (a, tags_a), (b, tags_b), (c, _) = (read(tmp_path / f"{n}.tif") for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert json.loads(tags_a["calibration"])["variance_scale"] == shipped.meta["hybrid_variance_scales"]["1"] * REAL_SCENE_FACTOR
    assert tags_b["weights"] == str(same) and np.isfinite(c).all()
    assert np.abs(a - c).max() > 1e-6  # the changed weights are really used
    result = run(tmp_path / "d.tif", "--refine", "shipped", "--weights", wrong)
    assert result.exit_code == 2 and "bands" in result.output and not (tmp_path / "d.tif").exists()
    result = run(tmp_path / "e.tif", "--weights", same)
    assert result.exit_code == 2 and "only used with --refine" in result.output and not (tmp_path / "e.tif").exists()


def test_predict_refine_scene_adapts_to_two_pairs_and_records_the_calibration(tmp_path):
    """`stfuse predict --pair .. --pair .. --refine scene`: the refiner is adapted to the two pairs
    (self-supervised), so the output differs from the shipped weights', and the tags say which
    variance calibration was applied and where it was fitted."""
    import rasterio
    from click.testing import CliRunner

    from stfuse_cli.main import cli

    from conftest import write_tif

    rng = np.random.default_rng(6)
    base = np.kron(0.1 + 0.2 * rng.random((2, 8, 8)), np.ones((1, 8, 8))) + 0.01 * rng.random((2, 64, 64))

    def coarse_of(a):
        return np.kron(a.reshape(2, 4, 16, 4, 16).mean(axis=(2, 4)), np.ones((1, 16, 16)))

    images = {"f1": base, "f2": 1.1 * base + 0.01, "target": 1.05 * base + 0.005}
    paths = {k: write_tif(tmp_path / f"{k}.tif", a.astype(np.float32)) for k, a in images.items()}
    paths.update({f"c{k[1:]}": write_tif(tmp_path / f"c{k[1:]}.tif", coarse_of(images[k]).astype(np.float32)) for k in ("f1", "f2")})
    paths["ct"] = write_tif(tmp_path / "ct.tif", coarse_of(images["target"]).astype(np.float32))
    out = {}
    for mode in ("shipped", "scene"):
        args = ["predict", "--pair", paths["f1"], paths["c1"], "--pair", paths["f2"], paths["c2"], "--coarse", paths["ct"],
                "--method", "auto", "--refine", mode, "--mc-samples", "2", "-o", tmp_path / f"{mode}.tif"]
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        with rasterio.open(tmp_path / f"{mode}.tif") as src:
            out[mode] = (src.read(), src.tags())
    (shipped, tags_shipped), (scene, tags_scene) = out["shipped"], out["scene"]
    assert tags_scene["method"] == "fitfc+fsdaf+refiner(scene)" and np.isfinite(scene).all()
    assert np.abs(scene[2:] - shipped[2:]).max() > 1e-6  # sigma from the adapted refiner's member weights
    cal_scene, cal_shipped = json.loads(tags_scene["calibration"]), json.loads(tags_shipped["calibration"])
    assert cal_scene["members_fitted_on"] == "held-out tiles of 2 pairs (self-supervised)"
    assert cal_shipped["members_fitted_on"] == "simulated validation scenes"
    assert cal_scene["member_variance_scales"] != cal_shipped["member_variance_scales"]
    shipped_model = load_model(None)
    assert cal_scene["variance_scale"] == hybrid_variance_scale(shipped_model, 2) * REAL_SCENE_FACTOR  # adapted: the fixed scale
    assert cal_shipped["scene_factor"] == shipped_model.meta["hybrid_scene_factors"]["2"]  # shipped: follows the scene
    assert cal_shipped["variance_scale"] == pytest.approx(cal_shipped["scene_factor"] * cal_shipped["scene_scale"] * REAL_SCENE_FACTOR, rel=1e-3)
    truth = images["target"]
    assert np.sqrt(np.mean((scene[:2] - truth) ** 2)) < np.sqrt(np.mean((images["f1"] - truth) ** 2))


def test_fuse_one_pair_scene_evidence_sets_the_variance_scale():
    """`stfuse.fuse(..., scene=(fine, coarse))` with one pair: sigma's scale is the shipped one-pair
    scene factor x the scale the pair and the other date ask for (dates in the tag); without `scene`
    the fixed one-pair scale. The mean does not change."""
    import xarray as xr

    from stfuse.api import fuse

    fine, coarse, ct = _two_pairs()
    times = np.array(["2023-06-01", "2023-06-17"], dtype="datetime64[ns]")
    dims = ("pair", "band", "y", "x")
    f = xr.DataArray(fine, dims=dims, coords={"pair": times})
    c = xr.DataArray(coarse, dims=dims, coords={"pair": times})
    target = xr.DataArray(ct, dims=dims[1:])
    common = dict(method="auto", refine="shipped", mc_samples=1)
    fixed = fuse(f[1:], c[1:], target, **common)
    scened = fuse(f[1:], c[1:], target, scene=(f, c), **common)
    cal_fixed, cal_scene = fixed.tags["calibration"], scened.tags["calibration"]
    shipped = load_model(None)
    assert cal_fixed["variance_scale"] == hybrid_variance_scale(shipped, 1) * REAL_SCENE_FACTOR and "scene_scale" not in cal_fixed
    assert cal_scene["scene_dates"] == ["2023-06-01", "2023-06-17"]
    assert cal_scene["scene_factor"] == shipped.meta["hybrid_scene_factors"]["1"]
    ratio = cal_scene["variance_scale"] / cal_fixed["variance_scale"]
    np.testing.assert_allclose(scened.sigma.values ** 2, ratio * fixed.sigma.values ** 2, rtol=1e-4)
    np.testing.assert_array_equal(scened.mean.values, fixed.mean.values)
