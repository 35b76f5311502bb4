""""Nothing found" messages say what was searched, with real values (no ``between .. and ..``
placeholders for open dates), and what the catalog does hold, so the user knows what to ask
(issue #19, item 6). On the sample catalog (sample_scenes) with an area or dates that miss it."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from click.testing import CliRunner

from stfuse.data import catalog as cat
from stfuse.errors import EmptySearchError
from stfuse_cli.main import cli

FINE, COARSE = "landsat-c2-l2", "modis-43A4-061"
MISS_BBOX = (10.0, 10.0, 10.1, 10.1)  # the sample is in Kansas


@pytest.fixture(scope="module")
def holdings() -> dict[str, tuple[dt.date, dt.date, tuple[float, ...]]]:
    """Each sample collection's first and last item day and the union of item bboxes, read independently."""
    out = {}
    for collection in (FINE, COARSE):
        items = cat.search(None, cat.SearchQuery(), [collection])[collection]
        days = [cat.item_time(i).date() for i in items]
        boxes = [i.bbox for i in items]
        out[collection] = (min(days), max(days), (min(b[0] for b in boxes), min(b[1] for b in boxes),
                                                  max(b[2] for b in boxes), max(b[3] for b in boxes)))
    return out


def message(query: cat.SearchQuery, collection: str = FINE, source=None, **kw) -> str:
    found = cat.search(source, query, [collection])
    with pytest.raises(EmptySearchError) as err:
        cat.require_items(found, collection, source, query, **kw)
    return str(err.value)


def assert_holdings_named(text: str, collection: str, holdings) -> None:
    first, last, bounds = holdings[collection]
    assert f"{collection} items span {first} to {last}" in text
    shown = [float(v) for v in re.search(r"lon/lat bbox \[([^\]]+)\]", text).group(1).split(",")]
    assert shown == pytest.approx(bounds, abs=1e-4)


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (None, None, "at any date"),
        (dt.date(2030, 1, 1), None, "from 2030-01-01 on"),
        (None, dt.date(2001, 6, 30), "up to 2001-06-30"),
        (dt.date(2030, 1, 1), dt.date(2030, 2, 1), "between 2030-01-01 and 2030-02-01"),
    ],
)
def test_open_dates_are_named_not_dotted(start, end, words, holdings):
    bbox = MISS_BBOX if start is None and end is None else None  # something must miss
    text = message(cat.SearchQuery(start=start, end=end, bbox=bbox))
    assert ".." not in text
    assert words in text
    assert_holdings_named(text, FINE, holdings)
    assert text.endswith("ask for dates and an area inside that")


def test_area_that_misses_names_the_bbox_and_the_catalogs_area(holdings):
    text = message(cat.SearchQuery(start=dt.date(2023, 6, 1), end=dt.date(2023, 6, 30), bbox=MISS_BBOX), COARSE)
    assert f"no {COARSE} items in sample_scenes for bbox [10.0, 10.0, 10.1, 10.1] between 2023-06-01 and 2023-06-30" in text
    assert_holdings_named(text, COARSE, holdings)


def test_wider_pair_search_is_described_with_real_dates():
    asked = cat.SearchQuery(start=dt.date(2030, 1, 1))
    text = message(asked, searched=cat.SearchQuery(start=dt.date(2029, 11, 14)))
    assert "(pairs searched from 2029-11-14 on)" in text and ".." not in text


def test_collection_the_catalog_lacks_lists_what_it_has():
    text = message(cat.SearchQuery(), "modis-09GA-061")
    assert "it holds no modis-09GA-061 items at all, only landsat-c2-l2, modis-43A4-061" in text
    assert text.endswith("use a catalog that has them")


def test_api_search_names_the_collection_extent(api):
    text = message(cat.SearchQuery(bbox=MISS_BBOX), FINE, source=api.url)
    assert f"no {FINE} items in {api.url} for bbox [10.0, 10.0, 10.1, 10.1] at any date" in text
    assert f"its {FINE} collection's items span" in text and ".." not in text


@pytest.mark.parametrize(
    "args",
    [
        ["search", "--bbox", *map(str, MISS_BBOX)],
        ["search", "--start", "2030-01-01"],
        ["predict", "--start", "2030-01-01", "-o", "{tmp}/out"],
    ],
)
def test_cli_nothing_found(args, tmp_path, holdings):
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and ".." not in result.output
    assert_holdings_named(" ".join(result.output.split()), FINE, holdings)  # click may wrap lines
