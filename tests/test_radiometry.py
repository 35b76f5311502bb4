"""Fine and coarse files in different units (reflectance x 1e4 beside 0-1, digital numbers):
:mod:`stfuse.fusion.radiometry` relates them at the pair dates and local-file mode predicts in
the fine images' units with the quality of same-unit inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from stfuse import predict_files
from stfuse.fusion.radiometry import SAME_UNITS, fit_units, harmonize
from stfuse.sim.days import _synthetic_scene

from conftest import write_tif


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """Fine (N, 3, 96, 96) reflectance (clouds filled) and MODIS-like coarse on the fine grid."""
    fine, coarse = _synthetic_scene(5, 96)
    fine, coarse = fine[:, 1:4], coarse[:, 1:4]
    return np.nan_to_num(fine, nan=float(np.nanmean(fine))), coarse


def test_same_units_are_left_alone(scene):
    fine, coarse = scene
    fit = fit_units(fine[:2], coarse[:2])
    assert not fit.applied
    assert all(SAME_UNITS[0] < g < SAME_UNITS[1] for g in fit.gain)
    pairs, target = coarse[:2], coarse[2]
    out, out_target, _ = harmonize(fine[:2], pairs, target)
    assert out is pairs and out_target is target


@pytest.mark.parametrize("gain,offset", [(1e4, 0.0), (2.2e4, 3000.0)])
def test_other_units_are_fitted(scene, gain, offset):
    """Fine images in reflectance x 1e4, or digital-number-like (gain and offset): the fitted
    coarse-per-fine gains are those of the same-unit fit divided by the units' gain, and mapping
    the coarse images into the fine units brings them to the fine images' scale."""
    fine, coarse = scene
    fit = fit_units(fine[:2] * gain + offset, coarse[:2])
    assert fit.applied
    np.testing.assert_allclose(np.asarray(fit.gain) * gain, fit_units(fine[:2], coarse[:2]).gain, rtol=1e-3)
    mapped = fit.to_fine_units(coarse[2])
    np.testing.assert_allclose(np.nanmean(mapped), np.nanmean(fine[2]) * gain + offset, rtol=0.1)


def test_fit_refuses_too_few_pixels():
    from stfuse.errors import InputError

    fine = np.full((1, 1, 5, 5), np.nan, np.float32)
    with pytest.raises(InputError, match="valid in both"):
        fit_units(fine, fine)


def test_local_files_in_other_units_predict_as_well(tmp_path, scene):
    """Landsat given as float reflectance x 1e4 beside MODIS 0-1 (as the Kranj series ships): the
    prediction comes out x 1e4 and, brought back to reflectance, scores within 5 % of the run on
    same-unit files; the fit is recorded in the tags."""
    fine, coarse = scene
    errors, tags = {}, {}
    for label, factor in (("same", 1.0), ("x1e4", 1e4)):
        paths = [write_tif(tmp_path / f"{label}_f{k}.tif", (fine[k] * factor).astype(np.float32)) for k in (0, 2)]
        coarse_paths = [write_tif(tmp_path / f"{label}_c{k}.tif", coarse[k]) for k in (0, 1, 2)]
        out = predict_files([(paths[0], coarse_paths[0]), (paths[1], coarse_paths[2])], coarse_paths[1], tmp_path / f"{label}.tif",
                            method="starfm")
        with rasterio.open(out) as src:
            pred = src.read(list(range(1, 4))) / factor
            tags[label] = json.loads(src.tags()["units"])
        errors[label] = float(np.sqrt(np.nanmean((pred - fine[1]) ** 2)))
    assert not tags["same"]["applied"] and tags["x1e4"]["applied"]
    assert errors["x1e4"] == pytest.approx(errors["same"], rel=0.05)
