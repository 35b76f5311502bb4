"""Honest progress (training, the hybrid's preparation, a bar on terminals, --quiet) and no
foreign warnings in normal output (issue #19, items 2 and 6)."""

from __future__ import annotations

import io
import logging
import time
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from stfuse.config import FusionConfig
from stfuse.fused import hybrid_predictor
from stfuse.fusion.refine.shipped import fit_hybrid_scales
from stfuse.fusion.refine.training import train_self_supervised, train_synthetic
from stfuse.sim.days import _synthetic_scene
from stfuse_cli.main import cli
from stfuse_cli.progress import progress_reporter


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, int, str]] = []

    def __call__(self, done: float, total: int, label: str) -> None:
        self.calls.append((done, total, label))

    def labels(self, word: str) -> list[tuple[float, int, str]]:
        return [c for c in self.calls if word in c[2]]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    fine, coarse = _synthetic_scene(3, 48)
    return fine[:2, :3].copy(), coarse[:2, :3].copy()


def test_self_supervised_training_reports_examples_steps_losses_and_scale_without_changing_the_model(scene):
    fine, coarse = scene
    options = dict(prior_fn="starfm", steps=4, eval_every=2, patch=16, batch=2, mc_samples=2, seed=1)
    seen = Recorder()
    observed = train_self_supervised(fine, coarse, progress=seen, **options)
    examples = seen.labels("examples")
    assert [c[:2] for c in examples] == [(1, 2), (2, 2)]  # 2 ordered pairs x 1 prior
    steps = seen.labels("step ")
    assert [c[0] for c in steps] == [1, 2, 3, 4] and {c[1] for c in steps} == {4}
    assert "loss " in steps[-1][2] and "val " in steps[-1][2] and "best " in steps[-1][2]
    assert seen.labels("variance scale")[-1][:2] == (2, 2)
    plain = train_self_supervised(fine, coarse, **options)  # the callback only observes
    assert _same_weights(observed, plain) and float(observed.variance_scale) == float(plain.variance_scale)


def test_synthetic_pretraining_reports_each_phase_without_changing_the_model():
    options = dict(n_scenes=2, n_val_scenes=1, size=48, steps=3, eval_every=2, patch=16, batch=2, mc_samples=2,
                   prior_fn=("starfm",))
    seen = Recorder()
    observed = train_synthetic(seed=5, progress=seen, **options)
    assert [c[:2] for c in seen.labels("simulating training scenes")] == [(1, 2), (2, 2)]
    assert [c[:2] for c in seen.labels("simulating validation scenes")] == [(1, 1)]
    assert [c[0] for c in seen.labels("step ")] == [1, 2, 3] and "val " in seen.labels("step ")[-1][2]
    assert seen.labels("fitting the variance scale")
    plain = train_synthetic(seed=5, **options)
    assert _same_weights(observed, plain) and observed.meta["variance_scales"] == plain.meta["variance_scales"]


def test_hybrid_calibration_reports_each_simulated_day():
    seen = Recorder()
    fit = fit_hybrid_scales(n_scenes=2, size=48, mc_samples=2, prior_fn="starfm", progress=seen)
    days = seen.labels("calibrating the hybrid")
    assert days and days[-1][0] == days[-1][1] and [c[0] for c in days] == list(range(1, days[-1][1] + 1))
    assert seen.calls[0][2].startswith("simulating 2 calibration scenes")
    assert fit["scales"] == fit_hybrid_scales(n_scenes=2, size=48, mc_samples=2, prior_fn="starfm")["scales"]


def test_hybrid_preparation_says_what_it_fits_on(scene, caplog):
    fine, coarse = scene
    times = np.array(["2023-06-06", "2023-06-22"], dtype="datetime64[ns]")
    dims = ("pair", "band", "y", "x")
    pair_fine = xr.DataArray(fine, dims=dims, coords={"pair": times})
    pair_coarse = xr.DataArray(coarse, dims=dims, coords={"pair": times})
    with caplog.at_level(logging.INFO, logger="stfuse"):
        hybrid_predictor(FusionConfig(method="auto", refine="shipped", mc_samples=2), "fitfc", pair_fine, pair_coarse)
    assert "fitting the hybrid's variance scale on 2023-06-06, 2023-06-22" in caplog.text


def test_train_on_pairs_prints_steps_with_losses_and_quiet_prints_none(two_pairs, tmp_path):
    args = ["train", "--method", "starfm", "--steps", "3"]
    for fine, coarse in two_pairs:
        args += ["--pair", fine, coarse]
    result = run(*args, "-o", tmp_path / "a.pt")
    assert result.exit_code == 0, result.output
    steps = [ln for ln in result.output.splitlines() if "adapting to the pairs: step" in ln]
    assert steps and steps[-1].startswith("[3/3] ") and "loss " in steps[-1] and "val " in steps[-1]
    assert "adapting the refiner to 2 pairs" in result.output  # the INFO line of what is starting
    quiet = run(*args, "-q", "-o", tmp_path / "b.pt")
    assert quiet.exit_code == 0 and "step" not in quiet.output and "adapting" not in quiet.output


def test_terminal_bar_shows_fractions_eta_phases_and_info_lines(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    with progress_reporter("predicting days") as progress:
        progress(0.5, 2, "2023-06-10")  # half the tiles of the first day
        time.sleep(0.4)  # the bar redraws 10 times a second
        logging.getLogger("stfuse.fused").info("fitting the hybrid's variance scale on 2023-06-06")
        progress(1, 2, "2023-06-10")
        progress(1, 3, "training")  # a new phase restarts the bar
    text = err.getvalue()
    assert "predicting days 2023-06-10" in text and "eta" in text and "25%" in text
    assert "fitting the hybrid's variance scale on 2023-06-06" in text
    assert "1/3" in text and "33%" in text


def test_plain_lines_are_throttled_but_the_last_is_always_shown(capsys):
    with progress_reporter("training", every=3600) as progress:
        for step in range(1, 6):
            progress(step, 5, f"step {step}")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["[1/5] training step 1", "[5/5] training step 5"]


def test_plain_first_line_is_shown_on_a_freshly_booted_machine(capsys, monkeypatch):
    # time.monotonic() counts from boot on Linux: 5 s of uptime once hid the first line (issue #28)
    monkeypatch.setattr("stfuse_cli.progress.time.monotonic", lambda: 5.0)
    with progress_reporter("predicting days", every=30) as progress:
        for day in range(1, 4):
            progress(day, 3, f"day {day}")
    assert capsys.readouterr().err.splitlines() == ["[1/3] predicting days day 1", "[3/3] predicting days day 3"]


def test_root_quiet_silences_every_command(tmp_path):
    result = run("-q", "predict", "--start", "2023-06-13", "--end", "2023-06-13", "--bands", "red", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "predicting days" not in result.output


def _zarr_run(tmp_path, *flags):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as a fresh process would show them
        result = run(*flags, "predict", "--format", "cog,zarr", "--start", "2023-06-10", "--end", "2023-06-10",
                     "--bands", "red", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    return result, [str(w.message) for w in caught]


def test_no_foreign_warnings_in_normal_output_but_with_debug(tmp_path):
    result, caught = _zarr_run(tmp_path / "a")
    assert "Warning" not in result.output and not any("Consolidated metadata" in m for m in caught), caught
    _, debug = _zarr_run(tmp_path / "b", "--debug")
    assert any("Consolidated metadata" in m for m in debug)


def test_urllib3_retry_lines_are_hidden_unless_debug(tmp_path):
    logger = logging.getLogger("urllib3")
    level = logger.level
    try:
        run("predict", "--start", "2023-06-10", "--end", "2023-06-10", "--bands", "red", "-q", "-o", tmp_path / "a")
        assert not logger.isEnabledFor(logging.WARNING)
        logger.setLevel(logging.NOTSET)
        run("--debug", "info", tmp_path / "a" / "stfuse_2023-06-10.tif")
        assert logger.isEnabledFor(logging.WARNING)
    finally:
        logger.setLevel(level)
