"""`--dates` / `--every N`: predict selected days only (stfuse.config.Query.dates / every)."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from stfuse.config import Query
from stfuse.errors import InputError
from stfuse_cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def days(out):
    return sorted(p.stem[7:] for p in out.glob("stfuse_*.tif"))


def test_every_3_over_7_days_writes_days_1_4_7(tmp_path):
    out = tmp_path / "out"
    result = run("predict", "--start", "2023-06-10", "--end", "2023-06-16", "--every", "3", "--bands", "red", "--method", "starfm", "-o", out)
    assert result.exit_code == 0, result.output
    assert days(out) == ["2023-06-10", "2023-06-13", "2023-06-16"]
    assert "[3/3] predicting days 2023-06-16" in result.output


def test_dates_predicts_those_days_only(tmp_path):
    out = tmp_path / "out"
    result = run("predict", "--dates", "2023-06-14,2023-06-10", "--bands", "red", "-q", "-o", out)
    assert result.exit_code == 0, result.output
    assert days(out) == ["2023-06-10", "2023-06-14"]


def test_a_date_outside_the_data_is_refused_with_the_days_that_exist(tmp_path):
    result = run("predict", "--dates", "2023-07-30,2023-08-05", "--bands", "red", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "no coarse (MODIS) image on 2023-08-05" in result.output
    assert "days with data from 2023-07-30 to 2023-08-05: 2023-07-30 .. 2023-08-03" in result.output
    assert not (tmp_path / "out").exists() or not days(tmp_path / "out")


def test_query_validates_dates_and_every():
    q = Query(dates="2023-06-14, 2023-06-10,2023-06-14")
    assert q.dates == (dt.date(2023, 6, 10), dt.date(2023, 6, 14))
    assert (q.start, q.end) == (dt.date(2023, 6, 10), dt.date(2023, 6, 14))  # the range defaults to the dates
    assert Query(dates=[dt.date(2023, 6, 12)], start="2023-06-01").start == "2023-06-01"  # a given range is kept
    with pytest.raises(InputError, match="'2023-6-1' is not a date; write it as YYYY-MM-DD"):
        Query(dates="2023-6-1")
    with pytest.raises(InputError, match="date 2023-06-30 is outside the range asked for"):
        Query(dates="2023-06-30", end="2023-06-20")
    with pytest.raises(InputError, match="not both"):
        Query(dates="2023-06-10", every=2)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(InputError, match="every must be a whole number of days >= 1"):
            Query(every=bad)
    with pytest.raises(InputError, match="dates is empty"):
        Query(dates=" , ")


def test_select_days_counts_every_from_the_first_calendar_day():
    first = dt.date(2023, 6, 1)
    available = [first + dt.timedelta(days=i) for i in range(10) if i != 3]  # 06-04 has no coarse image
    assert Query(every=3).select_days(available, first) == [first, dt.date(2023, 6, 7), dt.date(2023, 6, 10)]
    assert Query().select_days(available, first) == available
    with pytest.raises(InputError, match=r"2023-06-04; days with data from 2023-06-01 to 2023-06-05: "
                                         r"2023-06-01 \.\. 2023-06-03, 2023-06-05 \.\. 2023-06-10"):
        Query(dates="2023-06-01,2023-06-04", end="2023-06-05").select_days(available, first)
