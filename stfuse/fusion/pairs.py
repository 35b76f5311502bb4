"""Choosing fine/coarse pairs for each target day.

A *pair* is a day with both a usable fine (Landsat) image — clear fraction at least
``min_clear`` — and a coarse (MODIS) image. For a target day stfuse takes the nearest pair
on or before it and the nearest pair after it (``max_pairs=2``), or the single nearest
pair when only one side has one (or ``max_pairs=1``); ``max_pairs`` N > 2 adds the next
nearest days on either side. Pairs farther than ``max_gap_days`` are not used.

Gap filling (``max_fill``, default 3 in :class:`stfuse.config.FusionConfig`): each pair's
cloudy pixels take the clear pixels of the next farther usable days on the same side of the
target (:func:`fill_days`, nearest first), so a pixel's pair is its nearest clear observation
before (and after) the target, whatever the scene's clear fraction; :func:`fill_pair` composes
the fine and coarse images per pixel from the same date. A pair date clear at a pixel is used
there unchanged. With filling, a scene 5 % clear is worth using (``min_clear`` default 0.05):
it is the nearest observation where it is clear. How the defaults were chosen: docs/methods.md,
"Pairs and gap filling".

A single-pair day also gets an *evidence* date (:func:`evidence_day`): the usable pair day
nearest its pair, other than the target. The hybrid predicts the pair and that date from each
other to learn how large this scene's errors are (the variance scale that follows the scene).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence, TypeVar

from stfuse.errors import InputError

if TYPE_CHECKING:
    import xarray as xr


@dataclass(frozen=True)
class Plan:
    """Pairs chosen for one target day (``pairs`` sorted by date)."""

    target: dt.date
    pairs: tuple[dt.date, ...]
    evidence: dt.date | None = None
    """Single-pair days: the other clear date that tells how large the errors are (:func:`evidence_day`)."""
    fills: tuple[tuple[dt.date, ...], ...] = ()
    """Per pair (same order): the days whose clear pixels fill its cloudy ones, nearest first
    (:func:`fill_days`); empty: no filling."""
    series: bool = False
    """A time-series plan (``--method kalman``, :func:`series_plan`): ``pairs`` are every usable date."""

    @property
    def fill_dates(self) -> tuple[dt.date, ...]:
        """Every fill day of the plan, sorted."""
        return tuple(sorted({d for days in self.fills for d in days}))

    @property
    def max_gap_days(self) -> int:
        """Largest distance in days between the target and a pair (a series plan: between the
        target and the nearest date on the farther side, as for the two nearest pairs)."""
        if self.series:
            before = [(self.target - p).days for p in self.pairs if p <= self.target]
            after = [(p - self.target).days for p in self.pairs if p > self.target]
            return max(min(side) for side in (before, after) if side)
        return max(abs((p - self.target).days) for p in self.pairs)


def usable_pair_days(fine_clear: Mapping[dt.date, float], coarse_days: Iterable[dt.date], *, min_clear: float = 0.05) -> list[dt.date]:
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


def fill_days(target: dt.date, pair: dt.date, pair_days: Sequence[dt.date], *, max_fill: int,
              max_gap_days: int | None = None, exclude: Iterable[dt.date] = ()) -> tuple[dt.date, ...]:
    """Up to ``max_fill`` usable days farther from ``target`` than ``pair`` on its side (before/on
    or after), nearest first, within ``max_gap_days`` of the target; none of ``exclude`` (the
    day's other pairs)."""
    if not isinstance(max_fill, int) or isinstance(max_fill, bool) or max_fill < 0:
        raise InputError(f"max_fill must be a whole number >= 0, got {max_fill!r}")
    skip = set(exclude) | {pair}
    if pair <= target:
        side = sorted((d for d in pair_days if d < pair), reverse=True)
    else:
        side = sorted(d for d in pair_days if d > pair)
    side = [d for d in side if d not in skip and (max_gap_days is None or abs((d - target).days) <= max_gap_days)]
    return tuple(side[:max_fill])


def fill_pair(fine: "xr.DataArray", coarse: "xr.DataArray") -> tuple["xr.DataArray", "xr.DataArray", "xr.DataArray"]:
    """One gap-filled pair from a pair and its fill days (lazy if the inputs are).

    ``fine``, ``coarse``: (time, band, y, x), the pair's day first, then its fill days nearest
    first (:func:`fill_days`). Per pixel, the first day whose fine and coarse images are valid in
    every band gives both (the same date, so the pair's coarse change stays consistent); a pixel
    no day has keeps the pair's values. Returns ``(fine, coarse, filled)``: (band, y, x) float
    images with the pair day's coordinates, and (y, x) bool, True where a fill day was used.
    """
    out_fine, out_coarse = fine.isel(time=0), coarse.isel(time=0)
    have = out_fine.notnull().all("band") & out_coarse.notnull().all("band")
    first = have
    for k in range(1, fine.sizes["time"]):
        f, c = fine.isel(time=k), coarse.isel(time=k)
        ok = f.notnull().all("band") & c.notnull().all("band")
        use = (ok & ~have).variable
        out_fine = out_fine.copy(data=f.variable.where(use, out_fine.variable).transpose(*out_fine.dims).data)
        out_coarse = out_coarse.copy(data=c.variable.where(use, out_coarse.variable).transpose(*out_coarse.dims).data)
        have = have | ok
    return out_fine, out_coarse, (have & ~first).reset_coords(drop=True).rename("filled")


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


def plan_day(target: dt.date, pair_days: Sequence[dt.date], *, max_pairs: int = 2, max_gap_days: int | None = None,
             max_fill: int = 0) -> Plan:
    """The :class:`Plan` of ``target``: :func:`choose_pairs`, an :func:`evidence_day` when it has
    one pair, each pair's :func:`fill_days` (``max_fill``); ``pairs`` empty when none is usable."""
    pairs = choose_pairs(target, pair_days, max_pairs=max_pairs, max_gap_days=max_gap_days)
    evidence = evidence_day(pairs[0], target, pair_days) if len(pairs) == 1 else None
    fills = tuple(fill_days(target, p, pair_days, max_fill=max_fill, max_gap_days=max_gap_days, exclude=pairs)
                  for p in pairs) if max_fill else ()
    return Plan(target, pairs, evidence, fills if any(fills) else ())


def plan_days(targets: Sequence[dt.date], pair_days: Sequence[dt.date], *, max_pairs: int = 2, max_gap_days: int | None = None,
              max_fill: int = 0) -> list[Plan]:
    """A :class:`Plan` per target day (:func:`plan_day`); :class:`InputError` naming the range if
    no day has a pair."""
    plans = [plan_day(t, pair_days, max_pairs=max_pairs, max_gap_days=max_gap_days, max_fill=max_fill) for t in targets]
    plans = [p for p in plans if p.pairs]
    if not plans:
        span = f"{targets[0]}..{targets[-1]}" if targets else "the requested range"
        if max_gap_days is not None and targets and pair_days:
            raise InputError(max_gap_message(targets, pair_days, max_gap_days))
        raise InputError(
            f"no clear fine/coarse pair for any day in {span}"
            + (f" within {max_gap_days} days" if max_gap_days else "")
            + "; widen the date range, lower --min-clear, or raise --max-gap"
        )
    return plans


def max_gap_message(targets: Sequence[dt.date], pair_days: Sequence[dt.date], max_gap_days: int) -> str:
    """Why no day of ``targets`` has a pair within ``max_gap_days`` (``--max-gap``): the nearest
    of ``pair_days`` to any target and its distance, and what to raise ``--max-gap`` to."""
    gap, target, pair = min((abs((p - t).days), t, p) for t in targets for p in pair_days)
    span = f"{targets[0]}" if len(targets) == 1 else f"any day in {targets[0]}..{targets[-1]}"
    return (f"--max-gap {max_gap_days} (Python: max_gap_days={max_gap_days}) leaves no clear fine/coarse pair for {span}: "
            f"the nearest pair, {pair}, is {gap} days from {target}; raise --max-gap to at least {gap}, "
            "or leave it out to use pairs at any distance")


def series_plan(target: dt.date, pair_days: Sequence[dt.date], *, max_gap_days: int | None = None) -> Plan:
    """The plan of ``target`` for a time-series method (``--method kalman``): every usable day of
    ``pair_days`` (within ``max_gap_days`` of the target, if given) is a pair; no fill days (the
    method uses every clear pixel of every date itself), no evidence date."""
    days = tuple(sorted(d for d in pair_days if max_gap_days is None or abs((d - target).days) <= max_gap_days))
    return Plan(target, days, series=True)


def series_plans(targets: Sequence[dt.date], pair_days: Sequence[dt.date], *, max_gap_days: int | None = None) -> list[Plan]:
    """:func:`series_plan` of every target that has a usable day; :class:`InputError` when none has."""
    plans = [p for p in (series_plan(t, pair_days, max_gap_days=max_gap_days) for t in targets) if p.pairs]
    if not plans:
        span = f"{targets[0]}..{targets[-1]}" if targets else "the requested range"
        raise InputError(f"no clear fine/coarse pair for any day in {span}"
                         + (f" within {max_gap_days} days" if max_gap_days else "") + "; widen the date range or lower --min-clear")
    return plans


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from ``start`` to ``end`` inclusive; :class:`InputError` if reversed."""
    if end < start:
        raise InputError(f"the date range is reversed: start {start} is after end {end}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
