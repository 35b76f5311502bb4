"""``--refine scene`` in local-file mode with many pairs whose coarse files are on their native grid
(issue #29: ``starfm() got an unexpected keyword argument 'coarse_factor'``).

The coarse files are 480 m block means on their own grid; stfuse resamples them onto the 30 m fine
grid and adds ``options["coarse_factor"] = 16`` (:func:`stfuse.api._native_coarse_factor`). The
series model passes the options to each member (Fit-FC, FSDAF, STARFM, the refiner's priors) and
STARFM takes no ``coarse_factor``: each member must get only the options its function takes.

Cost: local mode predicts each pair from all the others, so the series' examples cost
``n (n - 1)`` pair predictions (each: Fit-FC, FSDAF, STARFM, and the refiner member's own Fit-FC +
FSDAF per pair plus its CNN with 8 Monte Carlo samples). Measured with this test's images
(64 x 64 px) on 2 shared CPU cores: 6 pairs 19 s (load 5), 8 pairs 78-84 s (load 7-9), 10 pairs
91 s (load 5), 18 pairs 352 s (load 5-7); of the 18 pairs' run (profiled) the examples took 284 s, 80 % of it the refiner
member (its CNN 62 %, its per-pair priors 18 %), the Fit-FC, FSDAF and STARFM members 20 %. So
the CLI test runs :data:`N_PAIRS` pairs, and the crash with 18 pairs is checked on the members
(:func:`test_members_take_their_own_options_with_18_pairs`).
"""

from __future__ import annotations

import json
import time

import numpy as np
import rasterio
from affine import Affine
from click.testing import CliRunner

from stfuse.fusion.refine.members import options_for
from stfuse.fusion.refine.series import MEMBERS, member_predictions, series_halo
from stfuse_cli.main import cli

CRS = "EPSG:32633"
FINE = Affine(30, 0, 400000, 0, -30, 5000000)
NATIVE = Affine(480, 0, 400000, 0, -480, 5000000)
SIZE, FACTOR = 64, 16
BANDS = ("red", "nir08")
N_PAIRS = 7
"""Pairs of the CLI test: as many as run in about a minute on a shared, loaded 2-core machine."""


def _write(path, data: np.ndarray, transform: Affine):
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype="float32", crs=CRS,
                       transform=transform, nodata=float("nan")) as dst:
        dst.write(data.astype(np.float32))
        dst.descriptions = BANDS
    return path


def _scene(n_dates: int) -> list[np.ndarray]:
    """Fine images (2, SIZE, SIZE) of ``n_dates`` dates: smooth fields, a seasonal change that
    differs between two halves of the scene, and a little fine texture."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    rng = np.random.default_rng(0)
    base = np.stack([0.08 + 0.04 * np.sin(2 * np.pi * x) * np.cos(np.pi * y) + 0.03 * x,
                     0.30 + 0.08 * np.cos(2 * np.pi * y) * np.sin(np.pi * x) + 0.05 * y])
    texture = rng.normal(0, 0.004, base.shape).astype(np.float32)
    images = []
    for t in range(n_dates):
        season = np.sin(np.pi * t / max(n_dates - 1, 1))
        change = np.stack([-0.02 * season * (x > 0.5), 0.08 * season * (0.5 + y)])
        images.append((base + change + texture).astype(np.float32))
    return images


def _native(image: np.ndarray) -> np.ndarray:
    b, h, w = image.shape
    return image.reshape(b, h // FACTOR, FACTOR, w // FACTOR, FACTOR).mean(axis=(2, 4))


def test_members_take_their_own_options_with_18_pairs():
    """The options local mode adds for native-grid coarse files reach every member that takes
    them and no other (18 pairs, a 32 px tile: the members alone, no CNN)."""
    assert options_for("starfm", {"coarse_factor": 16, "seed": 3}) == {}
    assert options_for("fitfc", {"coarse_factor": 16, "seed": 3}) == {"coarse_factor": 16, "seed": 3}
    assert options_for("auto", {"coarse_factor": 8}) == {"coarse_factor": 8}
    assert options_for("starfm", None) == {}

    class NoRefiner:  # the refiner member's place: its own tests cover it
        halo = 0

        def __call__(self, fine, coarse, target):
            return fine.mean(0), np.full(fine.shape[1:], 1e-4, np.float32)

    images = _scene(19)
    up = lambda a: np.repeat(np.repeat(_native(a), FACTOR, 1), FACTOR, 2)[:, :32, :32]  # noqa: E731
    fine = np.stack([im[:, :32, :32] for im in images[:18]])
    coarse = np.stack([up(im) for im in images[:18]])
    members, variance = member_predictions(fine, coarse, up(images[18]), hybrid=NoRefiner(),
                                           prior_options={"coarse_factor": FACTOR})
    assert members.shape == (len(MEMBERS), 2, 32, 32) and variance.shape == (2, 32, 32)
    assert np.isfinite(members).all()
    assert series_halo(NoRefiner(), {"coarse_factor": FACTOR}) > 0


def test_cli_refine_scene_with_native_grid_coarse_and_many_pairs(tmp_path):
    """``stfuse predict --pair F C ... --coarse T --refine scene`` with the coarse files on their
    native 480 m grid: runs, and the output's tags record the series model and the coarse factor."""
    images = _scene(N_PAIRS + 1)
    args = []
    for k, image in enumerate(images[:N_PAIRS]):
        args += ["--pair", str(_write(tmp_path / f"L{k}.tif", image, FINE)), str(_write(tmp_path / f"M{k}.tif", _native(image), NATIVE))]
    target = _write(tmp_path / "T.tif", _native(images[N_PAIRS]), NATIVE)
    out = tmp_path / "series.tif"
    start = time.perf_counter()
    result = CliRunner().invoke(cli, ["predict", *args, "--coarse", str(target), "-o", str(out), "--refine", "scene"])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        tags, mean = src.tags(), src.read([1, 2])
    assert tags["method"] == "series(fitfc+fsdaf+change+refiner+starfm)"
    assert json.loads(tags["options"]) == {"coarse_factor": FACTOR}
    record = json.loads(tags["calibration"])["series"]
    assert record["dates"] == [f"pair {k + 1}" for k in range(N_PAIRS)]
    assert record["members"] == list(MEMBERS)
    assert np.isfinite(mean).mean() > 0.95
    truth = images[N_PAIRS]
    assert float(np.sqrt(np.nanmean((mean - truth) ** 2))) < 0.03
    print(f"{N_PAIRS} pairs, {SIZE} x {SIZE} px: {seconds:.1f} s")
