"""Halo-overlapping tiles give the untiled answer for local methods."""

from __future__ import annotations

import numpy as np
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import uniform_filter

from stfuse.output.tiling import predict_tiled, tile_size_for


def box_prior(fine, coarse, target, size=5):
    """A local stand-in prior: (size x size) box-filtered fine + coarse change; radius size // 2."""
    mean = uniform_filter(np.nan_to_num(fine[0]), size=(1, size, size), mode="constant") + target - coarse[0]
    return mean, mean**2


def arrays(rng, bands, height, width, pairs=1):
    dims4, dims3 = ("pair", "band", "y", "x"), ("band", "y", "x")
    return (
        xr.DataArray(rng.random((pairs, bands, height, width), dtype=np.float32), dims=dims4),
        xr.DataArray(rng.random((pairs, bands, height, width), dtype=np.float32), dims=dims4),
        xr.DataArray(rng.random((bands, height, width), dtype=np.float32), dims=dims3),
    )


@settings(max_examples=15, deadline=None)
@given(height=st.integers(8, 90), width=st.integers(8, 90), tile=st.integers(4, 40), size=st.sampled_from([1, 3, 5, 7]))
def test_tiled_equals_untiled(height, width, tile, size):
    fine, coarse, target = arrays(np.random.default_rng(height * width), 2, height, width)
    tiled = predict_tiled(fine, coarse, target, predict_fn=box_prior, halo=size // 2, tile=tile, options={"size": size})
    expected, _ = box_prior(fine.values, coarse.values, target.values, size=size)
    np.testing.assert_allclose(tiled["mean"].values, expected, atol=1e-6)


def test_too_small_halo_is_detectably_different():
    """The test above can fail: with halo smaller than the radius, tile seams differ."""
    fine, coarse, target = arrays(np.random.default_rng(0), 1, 64, 64)
    tiled = predict_tiled(fine, coarse, target, predict_fn=box_prior, halo=0, tile=16, options={"size": 5})
    expected, _ = box_prior(fine.values, coarse.values, target.values, size=5)
    assert np.abs(tiled["mean"].values - expected).max() > 1e-3


def test_result_is_lazy_and_tile_size_from_budget():
    import dask.array as da

    fine, coarse, target = arrays(np.random.default_rng(0), 1, 32, 32)
    result = predict_tiled(fine, coarse, target, predict_fn=box_prior, halo=2, tile=16)
    assert isinstance(result["mean"].data, da.Array)
    small = tile_size_for(1e9, n_pairs=2, n_bands=6, halo=15)
    big = tile_size_for(8e9, n_pairs=2, n_bands=6, halo=15)
    assert 256 <= small < big and small % 256 == 0
