"""Choosing fine/coarse pairs for each target day.

A *pair* is a day with both a usable fine (Landsat) image — clear fraction at least
``min_clear`` — and a coarse (MODIS) image. For a target day stfuse takes the nearest pair
on or before it and the nearest pair after it (``max_pairs=2``), or the single nearest
pair when only one side has one (or ``max_pairs=1``); ``max_pairs`` N > 2 adds the next
nearest days on either side. Pairs farther than ``max_gap_days`` are not used.

A single-pair day also gets an *evidence* date (:func:`evidence_day`): the usable pair day
nearest its pair, other than the target. The hybrid predicts the pair and that date from each
other to learn how large this scene's errors are (the variance scale that follows the scene).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, TypeVar

from stfuse.errors import InputError


@dataclass(frozen=True)
class Plan:
    """Pairs chosen for one target day (``pairs`` sorted by date)."""

    target: dt.date
    pairs: tuple[dt.date, ...]
    evidence: dt.date | None = None
    """Single-pair days: the other clear date that tells how large the errors are (:func:`evidence_day`)."""

    @property
    def max_gap_days(self) -> int:
        """Largest distance in days between the target and a pair."""
        return max(abs((p - self.target).days) for p in self.pairs)


def usable_pair_days(fine_clear: Mapping[dt.date, float], coarse_days: Iterable[dt.date], *, min_clear: float = 0.3) -> list[dt.date]:
    """Days with a fine image at least ``min_clear`` clear and a coarse image, sorted."""
    coarse = set(coarse_days)
    return sorted(d for d, clear in fine_clear.items() if clear >= min_clear and d in coarse)


def choose_pairs(target: dt.date, pair_days: Sequence[dt.date], *, max_pairs: int = 2, max_gap_days: int | None = None) -> tuple[dt.date, ...]:
    """Nearest pair before/on and nearest after ``target`` (see module docstring); may be empty.

    ``max_pairs`` 1: the nearer of the two; 2: both; N > 2: both, then the nearest remaining
    days on either side (by distance, the earlier on a tie) up to N, so that partly cloudy
    scenes fill each other's gaps (every prior combines its pairs per pixel, NaN-aware).
    """
    if not isinstance(max_pairs, int) or isinstance(max_pairs, bool) or max_pairs < 1:
        raise InputError(f"max_pairs must be a positive integer, got {max_pairs!r}")
    days = [d for d in pair_days if max_gap_days is None or abs((d - target).days) <= max_gap_days]
    before = [d for d in days if d <= target]
    after = [d for d in days if d > target]
    chosen = ([before[-1]] if before else []) + ([after[0]] if after else [])
    nearest = lambda ds: sorted(ds, key=lambda d: (abs((d - target).days), d))  # noqa: E731
    if len(chosen) > max_pairs:
        chosen = nearest(chosen)[:max_pairs]
    elif max_pairs > 2:
        chosen += nearest([d for d in days if d not in chosen])[: max_pairs - len(chosen)]
    return tuple(sorted(chosen))


Day = TypeVar("Day", dt.date, int)


def pairs_key(n_pairs: int) -> str:
    """Key of the tables kept per number of pairs (variance scales and factors): ``"1"`` for one
    pair, ``"2"`` for two or more."""
    return str(min(max(int(n_pairs), 1), 2))


def evidence_day(pair: Day, target: Day, pair_days: Sequence[Day]) -> Day | None:
    """The usable pair day nearest ``pair`` other than ``pair`` and ``target`` (the earlier on a
    tie); None when there is none. Not limited by ``max_gap_days``: it is not a pair of the day.
    Dates, or indices of a regular series (the simulated calibration days)."""
    others = [d for d in pair_days if d not in (pair, target)]
    return min(others, key=lambda d: (abs(d - pair), d)) if others else None


def plan_days(targets: Sequence[dt.date], pair_days: Sequence[dt.date], *, max_pairs: int = 2, max_gap_days: int | None = None) -> list[Plan]:
    """A :class:`Plan` per target day (with an :func:`evidence_day` when it has one pair);
    :class:`InputError` naming the range if no day has a pair."""
    plans = [Plan(t, choose_pairs(t, pair_days, max_pairs=max_pairs, max_gap_days=max_gap_days)) for t in targets]
    plans = [p if len(p.pairs) != 1 else Plan(p.target, p.pairs, evidence_day(p.pairs[0], p.target, pair_days))
             for p in plans if p.pairs]
    if not plans:
        span = f"{targets[0]}..{targets[-1]}" if targets else "the requested range"
        raise InputError(
            f"no clear fine/coarse pair for any day in {span}"
            + (f" within {max_gap_days} days" if max_gap_days else "")
            + "; widen the date range, lower --min-clear, or raise --max-gap"
        )
    return plans


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from ``start`` to ``end`` inclusive; :class:`InputError` if reversed."""
    if end < start:
        raise InputError(f"the date range is reversed: start {start} is after end {end}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
