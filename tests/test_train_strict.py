"""`stfuse train` on the user's pairs, and `--strict` quality gates, through the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import stfuse
from stfuse.config import FusionConfig, Query, RunConfig
from stfuse.errors import QualityError
from stfuse.fusion.quality import Thresholds
from stfuse_cli.main import cli

SAMPLE = Path(__file__).resolve().parents[1] / "sample_scenes"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_train_on_pairs_writes_a_checkpoint_for_those_bands(two_pairs, tmp_path):
    out = tmp_path / "mine.pt"
    args = ["train", "--method", "starfm", "--steps", "2", "-o", out]
    for fine, coarse in two_pairs:
        args += ["--pair", fine, coarse]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert out.exists() and f"wrote {out}" in result.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["bands"] == ["band1", "band2", "band3"] and meta["prior"] == "starfm"  # as predict names them (#28)
    assert meta["prior"] == "starfm" and len(meta["pairs"]) == 2
    again = run(*args)  # an existing checkpoint is not replaced silently
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output


def test_train_refuses_one_pair_and_mixed_modes(two_pairs, tmp_path):
    (fine, coarse), _ = two_pairs
    one = run("train", "--pair", fine, coarse, "-o", tmp_path / "x.pt")
    assert one.exit_code == 2 and "at least two pairs" in one.output
    both = run("train", "--synthetic", "--pair", fine, coarse, "-o", tmp_path / "x.pt")
    assert both.exit_code == 2 and "either --synthetic or" in both.output
    assert not (tmp_path / "x.pt").exists()


def test_strict_refuses_a_doubtful_day_and_leaves_no_file(tmp_path):
    """With strict, a day failing a gate raises QualityError before anything of it is written."""
    query = Query(catalog=SAMPLE, start="2023-06-10", end="2023-06-10", bands=("red",))
    never_clear_enough = Thresholds(min_coarse_clear=1.01)
    with pytest.raises(QualityError, match="refusing to predict 2023-06-10 \\(--strict\\).*only .* clear"):
        stfuse.predict(query, FusionConfig(strict=True, thresholds=never_clear_enough), RunConfig(out_dir=tmp_path))
    assert list(tmp_path.glob("stfuse_*")) == []
    written = stfuse.predict(query, FusionConfig(thresholds=never_clear_enough), RunConfig(out_dir=tmp_path / "flagged"))
    assert written and written[0].exists()  # without strict the day is written, its warning in the tags


def test_strict_flag_reaches_the_fusion_config(monkeypatch, tmp_path):
    seen = {}

    def fake_predict(query, fusion, run, progress=None):
        seen.update(query=query, fusion=fusion, run=run)
        return []

    monkeypatch.setattr("stfuse.api.predict", fake_predict)
    result = run("predict", "--strict", "--start", "2023-06-10", "--end", "2023-06-11", "--method", "starfm", "--window", "31", "--tile", "256",
                 "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert seen["fusion"].strict and seen["fusion"].window == 31 and seen["run"].tile == 256
    assert seen["query"].start == "2023-06-10" and seen["run"].out_dir == tmp_path / "o"
