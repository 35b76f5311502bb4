"""report.html is self-contained: images embedded as data URIs, the command that made it, and for a
holdout the fitted variance scale with its leave-one-date-out coverage and the mean-over-dates table
(issue #19, item 7). The HTML is parsed, not grepped."""

from __future__ import annotations

import base64
import datetime as dt
import shlex
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stfuse.evaluate.holdout import HoldoutDay, HoldoutResult, score_day, variance_calibration
from stfuse.evaluate.report import holdout_report
from stfuse_cli.main import cli

from conftest import write_tif

BANDS = ["red", "green", "blue"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The parts of report.html the tests look at: image sources, tables (rows of cell texts), text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.pres: list[str] = []
        self.text: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._pre: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "pre":
            self._pre = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None
        elif tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data):
        self.text.append(data)
        for part in (self._cell, self._pre):
            if part is not None:
                part.append(data)


def assert_embedded(page: Page, n_images: int) -> None:
    assert len(page.images) == n_images
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]  # no <img src=> pointing to a file
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def fake_holdout(n_days: int = 3) -> HoldoutResult:
    """A holdout result built from arrays: truth, a prediction whose errors are twice its sigma."""
    rng = np.random.default_rng(7)
    days, checked = [], []
    for k in range(n_days):
        truth = (0.05 + 0.3 * rng.random((3, 40, 50))).astype(np.float32)
        sigma = np.full_like(truth, 0.01)
        mean = (truth + rng.normal(0, 0.02, truth.shape)).astype(np.float32)  # errors 2 sigma: scale ~4
        scores = score_day(mean, sigma, truth, None, BANDS)
        checked.append((mean.ravel(), sigma.ravel().astype(np.float64) ** 2, truth.ravel()))
        date = dt.date(2023, 6, 6) + dt.timedelta(days=16 * k)
        days.append(HoldoutDay(date, (date - dt.timedelta(days=16),), "starfm", 0.9, scores, truth, mean, sigma))
    return HoldoutResult(days, {dt.date(2023, 7, 24): "clear fraction 10% < min_clear 30%"}, BANDS, "starfm",
                         "sample_scenes", extra={"calibration": variance_calibration(checked)})


def test_holdout_report_embeds_images_and_shows_scale_and_means(tmp_path):
    result = fake_holdout()
    cal = result.extra["calibration"]
    assert 3.0 < cal["variance_scale"] < 5.0  # sanity of the fake: errors are 2 sigma
    page_path = holdout_report(result, tmp_path / "rep", command="stfuse evaluate --holdout -o rep/")
    page = Page(page_path.read_text())
    assert_embedded(page, 3 + 3)  # metrics, reliability, scatter + a quicklook per date
    for name in ("holdout_metrics.png", "reliability.png", "scatter.png"):  # the PNGs stay beside the page
        assert (tmp_path / "rep" / name).is_file()
    text = " ".join(page.text)
    assert f"--variance-scale {cal['variance_scale']:g}" in text
    # the scale's table: coverage as predicted and leave-one-date-out, as in holdout.json
    scale_rows = next(t for t in page.tables if t and t[0][0] == "sigma")
    loo = cal["coverage_leave_one_date_out"]
    assert scale_rows[1][1:] == [f"{cal['coverage_as_predicted']['0.68']:.1%}", f"{cal['coverage_as_predicted']['0.95']:.1%}"]
    assert scale_rows[2][1:] == [f"{loo['0.68']:.1%}", f"{loo['0.95']:.1%}"]
    # mean over dates: a row per band and "all", equal to summary()
    means = result.summary()["mean_over_dates"]
    table = next(t for t in page.tables if t and t[0][:2] == ["band", "RMSE"])
    assert [r[0] for r in table[1:]] == [*BANDS, "all"]
    for row in table[1:]:
        assert row[1] == f"{means[row[0]]['rmse']:.5f}"
        assert row[8] == f"{means[row[0]]['coverage_95']:.1%}"
    assert page.pres == ["stfuse evaluate --holdout -o rep/"]


def test_holdout_report_from_python_says_so(tmp_path):
    page = Page(holdout_report(fake_holdout(1), tmp_path / "rep").read_text())
    text = " ".join(page.text)
    assert "Called from Python" in text and "no leave-one-date-out check" in text
    assert_embedded(page, 3 + 1)


@pytest.fixture()
def scored_files(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(4)
    truth = (0.05 + 0.3 * rng.random((3, 48, 64))).astype(np.float32)
    sigma = np.full_like(truth, 0.01)
    mean = (truth + rng.normal(0, 0.01, truth.shape)).astype(np.float32)
    pred = write_tif(tmp_path / "my pred.tif", np.concatenate([mean, sigma]), nodata=float("nan"),
                     descriptions=BANDS + [f"{n}_sigma" for n in BANDS])
    truth_path = write_tif(tmp_path / "truth.tif", truth, nodata=float("nan"), descriptions=BANDS)
    return pred, truth_path


def test_cli_report_records_the_command_and_embeds_images(scored_files, tmp_path):
    pred, truth = scored_files
    report = tmp_path / "rep"
    args = ["evaluate", str(pred), str(truth), "--report", str(report), "--bands", "red,green,blue", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    page = Page((report / "report.html").read_text())
    assert_embedded(page, 3)  # quicklook, scatter, reliability
    (command,) = page.pres
    words = shlex.split(command)  # shell-quoted: the path with a space stays one word
    assert words[:4] == ["stfuse", "evaluate", str(pred), str(truth)]
    assert words[words.index("--report") + 1] == str(report)
    assert words[words.index("--bands") + 1] == "red,green,blue"
    assert "--quiet" in words or "-q" in words
    # the page alone is enough: moved elsewhere without its PNGs it still holds every image
    moved = tmp_path / "moved.html"
    (report / "report.html").rename(moved)
    assert_embedded(Page(moved.read_text()), 3)
