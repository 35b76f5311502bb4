"""Property tests of the local-file path: random shapes, nodata patterns and dtypes never crash
with anything but a StfuseError, and never give NaN where the target's coarse image is valid."""

from __future__ import annotations

import numpy as np
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stfuse
from stfuse.errors import StfuseError

from conftest import write_tif

DTYPES = {"int16": -9999, "uint16": 0, "float32": -1.0}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(5, 40),
    width=st.integers(5, 40),
    bands=st.integers(1, 3),
    pairs=st.integers(1, 2),
    dtype=st.sampled_from(sorted(DTYPES)),
    missing=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.6)),
    method=st.sampled_from(["starfm", "auto", "fsdaf", "fitfc"]),
    seed=st.integers(0, 2**16),
)
def test_local_predict_never_crashes_and_fills_valid_target(tmp_path_factory, height, width, bands, pairs, dtype, missing, method, seed):
    tmp = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    nodata = DTYPES[dtype]

    def image(name: str, frac_missing: float, offset: float = 0.0) -> tuple:
        refl = np.clip(0.05 + 0.4 * rng.random((bands, height, width)) + offset, 0, 1)
        data = refl.astype(np.float32) if dtype == "float32" else np.round(refl * 10000).astype(dtype)
        holes = rng.random((height, width)) < frac_missing
        data[:, holes] = nodata
        return write_tif(tmp / f"{name}.tif", data, nodata=nodata), holes

    pair_paths = []
    for k in range(pairs):
        fine, _ = image(f"fine{k}", missing[0])
        coarse, _ = image(f"coarse{k}", missing[1] / 2)
        pair_paths.append((fine, coarse))
    target, target_holes = image("target", missing[2], offset=0.02)
    out = tmp / "pred.tif"
    try:
        stfuse.predict_files(pair_paths, target, out, method=method)
    except StfuseError:
        assert not out.exists()
        return
    with rasterio.open(out) as src:
        result = src.read()
    mean, sigma = result[:bands], result[bands : 2 * bands]
    assert np.isfinite(mean[:, ~target_holes]).all(), "NaN where the target coarse image is valid"
    assert np.isfinite(sigma[np.isfinite(mean)]).all() and (sigma[np.isfinite(sigma)] >= 0).all()
