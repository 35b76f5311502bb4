"""Pair selection around target days."""

import datetime as dt

import pytest

from stfuse.errors import InputError
from stfuse.fusion.pairs import choose_pairs, date_range, evidence_day, plan_days, usable_pair_days

D = dt.date


def test_nearest_before_and_after():
    days = [D(2023, 6, 1), D(2023, 6, 17), D(2023, 7, 3)]
    assert choose_pairs(D(2023, 6, 10), days) == (D(2023, 6, 1), D(2023, 6, 17))
    assert choose_pairs(D(2023, 6, 17), days) == (D(2023, 6, 17), D(2023, 7, 3))
    assert choose_pairs(D(2023, 6, 10), days, max_pairs=1) == (D(2023, 6, 17),)
    assert choose_pairs(D(2023, 8, 1), days) == (D(2023, 7, 3),)
    assert choose_pairs(D(2023, 8, 1), days, max_gap_days=10) == ()


def test_usable_pairs_need_clear_fine_and_coarse():
    clear = {D(2023, 6, 1): 0.9, D(2023, 6, 17): 0.1, D(2023, 7, 3): 0.8}
    assert usable_pair_days(clear, [D(2023, 6, 1), D(2023, 6, 17)], min_clear=0.3) == [D(2023, 6, 1)]


def test_no_pair_and_reversed_range_errors():
    with pytest.raises(InputError, match="no clear fine/coarse pair"):
        plan_days([D(2023, 6, 1)], [], max_pairs=2)
    with pytest.raises(InputError, match="reversed"):
        date_range(D(2023, 6, 2), D(2023, 6, 1))
    assert len(date_range(D(2023, 6, 1), D(2023, 6, 30))) == 30


def test_single_pair_days_get_the_nearest_other_clear_date_as_evidence():
    """A one-pair day's evidence date: the usable pair day nearest its pair, never the pair or the
    target, the earlier on a tie, not limited by max_gap (it is not a pair); two-pair days get none."""
    days = [D(2023, 6, 1), D(2023, 6, 17), D(2023, 7, 3), D(2023, 7, 19)]
    assert evidence_day(D(2023, 7, 19), D(2023, 7, 25), days) == D(2023, 7, 3)
    assert evidence_day(D(2023, 6, 17), D(2023, 6, 20), days) == D(2023, 6, 1)  # 16 days either side: the earlier
    assert evidence_day(D(2023, 6, 17), D(2023, 7, 3), days) == D(2023, 6, 1)  # the target's own pair day is not evidence
    assert evidence_day(D(2023, 6, 1), D(2023, 6, 5), [D(2023, 6, 1)]) is None
    plans = plan_days([D(2023, 6, 10), D(2023, 7, 25), D(2023, 8, 20), D(2023, 9, 30)], days, max_gap_days=40)
    assert [(p.pairs, p.evidence) for p in plans] == [
        ((D(2023, 6, 1), D(2023, 6, 17)), None),
        ((D(2023, 7, 19),), D(2023, 7, 3)),
        ((D(2023, 7, 19),), D(2023, 7, 3)),
    ]
    one = plan_days([D(2023, 6, 10)], days, max_pairs=1)[0]
    assert one.pairs == (D(2023, 6, 17),) and one.evidence == D(2023, 6, 1)


def test_more_than_two_pairs_add_the_next_nearest_on_either_side():
    days = [D(2023, 5, 16), D(2023, 6, 1), D(2023, 6, 17), D(2023, 7, 3), D(2023, 7, 19)]
    target = D(2023, 6, 10)
    assert choose_pairs(target, days, max_pairs=3) == (D(2023, 6, 1), D(2023, 6, 17), D(2023, 7, 3))  # 7-3 (23 d) before 5-16 (25 d)
    assert choose_pairs(target, days, max_pairs=4) == (D(2023, 5, 16), D(2023, 6, 1), D(2023, 6, 17), D(2023, 7, 3))
    assert choose_pairs(target, days, max_pairs=9) == tuple(days)
    assert choose_pairs(target, days, max_pairs=4, max_gap_days=24) == (D(2023, 6, 1), D(2023, 6, 17), D(2023, 7, 3))
    assert choose_pairs(D(2023, 8, 1), days, max_pairs=3) == (D(2023, 6, 17), D(2023, 7, 3), D(2023, 7, 19))  # one side only
    with pytest.raises(InputError, match="positive integer"):
        choose_pairs(target, days, max_pairs=0)


def test_catalog_days_with_three_pairs(tmp_path):
    """--max-pairs 3 on the sample: a day between two Landsat dates gets the third nearest too, and
    every prior combines the three per pixel."""
    import numpy as np

    import stfuse
    from stfuse.config import FusionConfig, Query
    from stfuse.sim.sample import sample_dir

    ds = stfuse.open_fused(Query(catalog=sample_dir(), start="2023-06-14", end="2023-06-14", bands=("red",)),
                           FusionConfig(method="starfm", max_pairs=3))
    assert ds.pair_dates.values.tolist() == ["2023-06-06;2023-06-22;2023-07-08"]
    day = ds.isel(time=0).compute()
    assert np.isfinite(day.reflectance.values).mean() > 0.99
