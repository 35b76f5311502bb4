"""Known-answer tests of the scene simulator (stfuse.sim.synth)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from scipy import ndimage

from stfuse.data.sensors import BANDS, LANDSAT_QA
from stfuse.errors import InputError
from stfuse.sim.synth import (
    BARE,
    CLASS_NAMES,
    CROP_EARLY,
    CROP_LATE,
    FOREST,
    URBAN,
    WATER,
    SceneSpec,
    block_mean,
    decode_landsat,
    encode_landsat,
    psf_pad,
    qa_pixel,
    simulate,
    upsample_bilinear,
)

SPEC = SceneSpec(height=128, width=128, n_days=40, landsat_revisit=8, landsat_offset=2, change_day=20)
RED, NIR = BANDS.index("red"), BANDS.index("nir08")


@pytest.fixture(scope="module")
def scene():
    return simulate(SPEC)


def ndvi(x: np.ndarray) -> np.ndarray:
    return (x[NIR] - x[RED]) / (x[NIR] + x[RED])


def test_deterministic_per_seed():
    spec = SceneSpec(height=64, width=64, n_days=12, landsat_revisit=4, landsat_offset=1, change_day=6)
    one, two = simulate(spec), simulate(spec)
    np.testing.assert_array_equal(two.classes, one.classes)
    np.testing.assert_array_equal(two.truth_day(7), one.truth_day(7))
    np.testing.assert_array_equal(two.coarse, one.coarse)
    np.testing.assert_array_equal(two.landsat_dn, one.landsat_dn)
    np.testing.assert_array_equal(two.landsat_qa, one.landsat_qa)
    other = simulate(dataclasses.replace(spec, seed=1))
    assert (other.classes != one.classes).mean() > 0.3
    assert not np.allclose(other.coarse_clean, one.coarse_clean)
    assert (other.landsat_qa != one.landsat_qa).any()


def test_shapes_dtypes_and_dates(scene):
    h, w = SPEC.height // SPEC.coarse_factor, SPEC.width // SPEC.coarse_factor
    n = len(SPEC.landsat_days)
    assert n == 5 and scene.landsat_days == (2, 10, 18, 26, 34)
    assert scene.classes.shape == (128, 128) and scene.classes.dtype == np.uint8
    assert scene.change_mask.shape == (128, 128) and scene.change_mask.dtype == bool
    assert scene.truth_day(0).shape == (6, 128, 128) and scene.truth_day(0).dtype == np.float32
    assert scene.truth_days([0, 5]).shape == (2, 6, 128, 128)
    assert scene.coarse.shape == (40, 6, h, w) and scene.coarse.dtype == np.float32
    assert scene.coarse_quality.shape == (40, h, w) and scene.coarse_quality.dtype == np.uint8
    assert scene.landsat_dn.shape == (n, 6, 128, 128) and scene.landsat_dn.dtype == np.uint16
    assert scene.landsat_qa.shape == (n, 128, 128) and scene.landsat_qa.dtype == np.uint16
    assert scene.coarse_on_fine(3).shape == (6, 128, 128)
    assert len(scene.dates) == 40 and scene.dates[0].isoformat() == SPEC.start
    assert all((b - a).days == 1 for a, b in zip(scene.dates[:-1], scene.dates[1:]))
    assert [d.platform for d in scene.landsat][:2] == ["landsat-8", "landsat-9"]
    with pytest.raises(InputError):
        scene.truth_day(40)


def test_full_truth_cube_matches_days():
    small = simulate(SceneSpec(height=32, width=32, n_days=6, landsat_revisit=3, landsat_offset=0, change_day=3))
    assert small.truth.shape == (6, 6, 32, 32)
    np.testing.assert_array_equal(small.truth[4], small.truth_day(4))


def test_reflectance_ranges_and_class_spectra(scene):
    truth = scene.truth_day(0)
    assert np.isfinite(truth).all() and truth.min() > 0 and truth.max() < 1
    present = set(np.unique(scene.classes).tolist())
    assert {WATER, FOREST, CROP_EARLY, CROP_LATE} <= present and len(present) >= 5
    mean = {c: truth[:, scene.classes == c].mean(axis=1) for c in present}
    assert mean[WATER][NIR] < 0.05 and mean[WATER][BANDS.index("swir16")] < 0.03
    assert mean[FOREST][NIR] > 3 * mean[FOREST][RED]  # vegetation: low red, high nir
    assert mean[CROP_EARLY][NIR] > 3 * mean[CROP_EARLY][RED]  # green on 1 June
    for flat in {URBAN, BARE} & present:  # urban / bare: flat-ish spectra
        assert abs(mean[flat][NIR] - mean[flat][RED]) < 0.12
    # within-class texture: not flat
    assert truth[NIR, scene.classes == CROP_LATE].std() > 0.01


def test_crop_phenologies_differ(scene):
    days = range(0, SPEC.n_days, 3)
    curves = {c: np.array([ndvi(scene.truth_day(d))[(scene.classes == c) & ~scene.change_mask].mean() for d in days])
              for c in (CROP_EARLY, CROP_LATE, FOREST)}
    assert curves[CROP_EARLY][0] - curves[CROP_EARLY][-1] > 0.3  # senescence in June
    assert curves[CROP_LATE][-1] - curves[CROP_LATE][0] > 0.3  # green-up in June
    assert np.corrcoef(curves[CROP_EARLY], curves[CROP_LATE])[0, 1] < -0.9
    assert np.ptp(curves[FOREST]) < 0.05  # forest is stable


def test_coarse_is_psf_aggregated_truth(scene):
    f, sigma, pad = SPEC.coarse_factor, SPEC.psf_sigma * SPEC.coarse_factor, psf_pad(SPEC)
    for day in (0, 25):
        blurred = ndimage.gaussian_filter(scene.padded_window.truth(day), sigma=(0, sigma, sigma), mode="nearest", truncate=4)
        expected = block_mean(blurred[:, pad:pad + SPEC.height, pad:pad + SPEC.width], f)
        np.testing.assert_allclose(scene.coarse_clean[day], expected, atol=5e-4)
        # the PSF matters: plain block means differ noticeably
        assert np.abs(scene.coarse_clean[day] - block_mean(scene.truth_day(day), f)).max() > 0.01
    residual = scene.coarse - scene.coarse_clean - scene.coarse_bias[:, :, None, None]
    good = np.broadcast_to((scene.coarse_quality == 0)[:, None], residual.shape)
    assert abs(np.std(residual[good]) - SPEC.coarse_noise) < 0.0005
    assert np.isnan(scene.coarse).any() == (scene.coarse_quality == 255).any()
    assert np.isnan(scene.coarse[np.broadcast_to((scene.coarse_quality == 255)[:, None], residual.shape)]).all()
    assert 0 < np.std(scene.coarse_bias) < 3 * SPEC.coarse_bias


def test_misregistration_shifts_the_coarse_footprint():
    spec = dataclasses.replace(SPEC, n_days=3, landsat_offset=0, change_day=None, misregistration_px=4.0)
    shifted = simulate(spec)
    pad = psf_pad(spec)
    sigma = spec.psf_sigma * spec.coarse_factor
    blurred = ndimage.gaussian_filter(shifted.padded_window.truth(1), sigma=(0, sigma, sigma), mode="nearest", truncate=4)
    expected = block_mean(blurred[:, pad + 4:pad + 4 + spec.height, pad + 4:pad + 4 + spec.width], spec.coarse_factor)
    np.testing.assert_allclose(shifted.coarse_clean[1], expected, atol=5e-4)


def test_bilinear_upsampling():
    coarse = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    fine = upsample_bilinear(coarse, 4)
    assert fine.shape == (1, 12, 16)
    np.testing.assert_allclose(block_mean(fine, 4)[:, 1:-1, 1:-1], coarse[:, 1:-1, 1:-1], atol=1e-5)  # linear ramps kept
    np.testing.assert_allclose(fine[0, 6, 2:14], 4.5 + (np.arange(2, 14) + 0.5) / 4 - 0.5, atol=1e-5)
    np.testing.assert_allclose(upsample_bilinear(np.full((2, 2), 0.3, np.float32), 8), 0.3, rtol=1e-6)


def test_landsat_dn_encoding():
    refl = np.array([[-0.1, 0.0, 0.25, 1.2]], np.float32)
    dn = encode_landsat(refl)
    np.testing.assert_array_equal(dn, [[3636, 7273, 16364, 50909]])
    np.testing.assert_allclose(decode_landsat(dn), refl, atol=2e-5)
    assert np.isnan(decode_landsat(np.array([0], np.uint16)))[0]


def test_qa_bits_match_masks(scene):
    for date in scene.landsat:
        qa = date.qa.astype(np.int64)
        bit = lambda b: ((qa >> b) & 1).astype(bool)  # noqa: E731
        assert (bit(0) == date.fill).all()
        assert (qa[date.fill] == 1).all() and (date.dn[:, date.fill] == 0).all()
        assert (date.dn[:, ~date.fill] > 0).all()
        live = ~date.fill
        assert (bit(3)[live] == date.cloud[live]).all()
        assert (bit(1)[live] == date.dilated[live]).all()
        assert (bit(4)[live] == date.shadow[live]).all()
        assert (bit(2)[live] == date.cirrus[live]).all()
        assert (bit(6)[live] == ~(date.cloud | date.dilated)[live]).all()
        assert (bit(7)[live] == (scene.classes_at(date.day) == WATER)[live]).all()
        assert not (date.cloud & date.dilated).any() and not (date.shadow & (date.cloud | date.dilated)).any()
        if date.cloud.any():  # the dilated ring hugs the clouds (within 3 px)
            near_cloud = ndimage.distance_transform_edt(~date.cloud)
            near_cloud_or_fill = ndimage.distance_transform_edt(~(date.cloud | date.fill))
            assert (near_cloud_or_fill[date.dilated] <= 3).all()
            assert date.dilated[(near_cloud > 0) & (near_cloud <= 3) & live].all()


def test_known_qa_values():
    f = np.zeros((1, 6), bool)
    t = lambda *i: np.isin(np.arange(6), i)[None]  # noqa: E731
    qa = qa_pixel(fill=t(5), cloud=t(1), dilated=t(2), shadow=t(3), cirrus=t(4), water=t(0) | f)
    assert qa.tolist() == [[21952, 22280, 21762, 23888, 54596, 1]]


def test_qa_flags_where_observation_differs_from_truth(scene):
    covers = [d.cloud_cover for d in scene.landsat]
    assert covers[0] < 10 and max(covers) > 35  # one mostly clear date, one quite cloudy
    assert any(d.fill.mean() > 0.05 for d in scene.landsat)  # a scene-edge fill band
    assert any(d.shadow.any() for d in scene.landsat) and any(d.cirrus.any() for d in scene.landsat)
    noise = SPEC.landsat_noise * 1.3
    for k, date in enumerate(scene.landsat):
        refl = scene.landsat_reflectance(k, masked=False)
        err = np.abs(refl - scene.truth_day(date.day))
        valid = scene.landsat_valid(k)
        assert valid.any()
        assert err[:, valid].max() < 6.5 * noise  # unflagged pixels are truth + noise
        assert np.isnan(scene.landsat_reflectance(k)[:, ~valid]).all()
        if date.cloud.any():
            assert err[:, date.cloud].mean() > 0.1
        if date.shadow.any():
            assert (refl[NIR, date.shadow] < scene.truth_day(date.day)[NIR, date.shadow]).mean() > 0.9
        assert (LANDSAT_QA.bad_mask(date.qa) == ~valid).all()


def test_flood_changes_class_at_change_day(scene):
    mask, day = scene.change_mask, SPEC.change_day
    assert 0.01 < mask.mean() < 0.3
    assert (scene.classes_at(day - 1)[mask] != WATER).all()
    assert (scene.classes_at(day)[mask] == WATER).all()
    np.testing.assert_array_equal(scene.classes_at(day)[~mask], scene.classes[~mask])
    before, after = scene.truth_day(day - 1), scene.truth_day(day)
    jump = np.abs(after - before).sum(axis=0)
    assert after[NIR, mask].mean() < 0.1 and before[NIR, mask].mean() > 0.15
    assert np.median(jump[mask]) > 0.3 and np.median(jump[~mask]) < 0.02
    # MODIS sees it: coarse pixels mostly flooded get darker in the NIR
    flooded = block_mean(mask.astype(np.float32), SPEC.coarse_factor) > 0.5
    if flooded.any():
        assert (scene.coarse_clean[day, NIR][flooded] < scene.coarse_clean[day - 1, NIR][flooded] - 0.05).all()


def test_harvest_change():
    harvest = simulate(dataclasses.replace(SPEC, height=96, width=96, n_days=14, change_kind="harvest", change_day=12, seed=3))
    mask = harvest.change_mask
    assert mask.any()
    assert np.isin(harvest.classes[mask], (CROP_EARLY, CROP_LATE)).all()
    assert (harvest.classes_at(12)[mask] == BARE).all() and (harvest.classes_at(11)[mask] != BARE).all()
    assert ndvi(harvest.truth_day(12))[mask].mean() < 0.25


def test_no_change():
    quiet = simulate(dataclasses.replace(SPEC, n_days=10, change_day=None))
    assert not quiet.change_mask.any()
    np.testing.assert_array_equal(quiet.classes_at(9), quiet.classes)


def test_windows_are_consistent(scene):
    big = scene.window(-20, -12, SPEC.height + 40, SPEC.width + 30)
    np.testing.assert_array_equal(big.classes[20:-20, 12:-18], scene.classes)
    np.testing.assert_allclose(big.truth(25)[:, 20:-20, 12:-18], scene.truth_day(25), atol=1e-5)
    np.testing.assert_array_equal(big.change_mask[20:-20, 12:-18], scene.change_mask)


def test_spec_validation():
    with pytest.raises(InputError, match="multiples of coarse_factor"):
        SceneSpec(height=100)
    with pytest.raises(InputError):
        SceneSpec(change_day=64)
    with pytest.raises(InputError):
        SceneSpec(start="June 1")
    with pytest.raises(InputError):
        SceneSpec(change_kind="fire")  # type: ignore[arg-type]


def test_default_scene_is_fast_and_complete():
    start = time.perf_counter()
    full = simulate(SceneSpec())
    elapsed = time.perf_counter() - start
    assert full.coarse.shape == (64, 6, 25, 25) and len(full.landsat) == 4
    assert set(np.unique(full.classes).tolist()) == set(range(len(CLASS_NAMES)))
    # ~1 s on an idle 2-core machine; the bound only catches pathological slowdowns
    assert elapsed < 30, f"simulate(SceneSpec()) took {elapsed:.1f} s"
