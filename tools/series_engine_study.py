"""The time-series engine (``--method kalman``) against the two nearest pairs and the time-weighted
``fine + coarse change``: leave-one-date-out over long series (issue #29).

Sets (each a fine series with clouds and a daily coarse series, on the fine grid):

- the simulated cloudy series of :data:`stfuse.sim.series.SERIES_SETS` (256 px, 160 days, a daily
  coarse sensor with wobble, gaps and clouds; Landsat every 8 or 16 days, 30-60 % cloud);
- Kranj (real, ``extra/kranj-series``: daily MODIS DOY 068-093, Landsat DOY 068, 077, 093 with
  clouds as NaN; DOY 100 has no MODIS day on either side and is not used);
- the bundled sample (``sample_scenes``, catalog mode: 64 MODIS days, 4 Landsat dates).

Every Landsat date with a coarse image and >= 5 % clear is withheld in turn and predicted from
the *other* dates only (their fine images, every coarse day; the kalman's ``q`` and ``r`` are
fitted on those other dates, never on the withheld one), then scored on its clear pixels that
every method predicts. Rows: ``2 nearest (blend)`` = the default (the two nearest pairs,
gap-filled from up to 3 farther dates each, the blend prior, its calibrated sigma; as catalog
mode plans a day), ``time-weighted change tau N`` (EFAST-like, all other dates, sigma = the
weighted spread of the candidates, uncalibrated), ``kalman`` variants. Columns: RMSE (mean over
bands), 95 % coverage of mean +- 1.96 sigma, seconds per predicted day (this machine).

    .venv/bin/python tools/series_engine_study.py [--sets sim,kranj,sample]   # prints the tables
    .venv/bin/python tools/bench.py --only series-engine --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BENCHMARKS = ROOT.parent / "shared" / "benchmarks"
BANDS = ("red", "nir08")
Z95 = 1.959964


@dataclass
class SeriesSet:
    """One set: ``fine`` (K, B, H, W) on ``fine_days`` (NaN: cloud), ``coarse`` (T, B, H, W) on
    ``coarse_days`` (NaN: missing), reflectance."""

    name: str
    fine_days: list[dt.date]
    fine: np.ndarray
    coarse_days: list[dt.date]
    coarse: np.ndarray
    note: str = ""


def simulated_sets(names: list[str] | None = None) -> list[SeriesSet]:
    from stfuse.sim.series import SERIES_SETS, simulate_series

    out = []
    for name, spec in SERIES_SETS.items():
        if names and name not in names:
            continue
        s = simulate_series(spec, bands=BANDS)
        out.append(SeriesSet(name, s.fine_dates, s.fine, s.days, s.coarse,
                             f"{spec.size} px, {spec.n_days} days, Landsat every {spec.landsat_revisit} days"))
    return out


def kranj_set(benchmarks: Path = DEFAULT_BENCHMARKS) -> SeriesSet | None:
    """Kranj: Landsat x 1e-4 (float x 1e4 on disk), MODIS as read (reflectance), bands red and NIR
    (b3, b4: the Landsat/MODIS files hold blue, green, red, NIR, SWIR1, SWIR2)."""
    from stfuse.output.io import read_reflectance

    folder = benchmarks / "extra" / "kranj-series"
    if not folder.exists():
        return None
    doy = lambda path: dt.date(2020, 1, 1) + dt.timedelta(days=int(Path(path).name[4:7]) - 1)  # noqa: E731
    modis = sorted(glob.glob(str(folder / "modis" / "filled" / "*.tif")))
    coarse_days = [doy(p) for p in modis]
    coarse = np.stack([read_reflectance(p).values[2:4] for p in modis]).astype(np.float32)
    landsat = [p for p in sorted(glob.glob(str(folder / "landsat" / "unfilled" / "*.tif"))) if doy(p) in set(coarse_days)]
    fine = np.stack([read_reflectance(p).values[2:4] * 1e-4 for p in landsat]).astype(np.float32)
    return SeriesSet("Kranj (real)", [doy(p) for p in landsat], fine, coarse_days, coarse,
                     f"45 x 44 px, {len(modis)} MODIS days, {len(landsat)} Landsat dates")


def sample_set() -> SeriesSet:
    import dask

    from stfuse.evaluate.holdout import load_catalog_cubes

    cubes = load_catalog_cubes(catalog=ROOT / "sample_scenes" / "catalog.json", bands=list(BANDS))
    fine, coarse = dask.compute(cubes.fine, cubes.coarse)
    day = lambda t: np.datetime64(t, "D").item()  # noqa: E731
    return SeriesSet("bundled sample", [day(t) for t in fine.time.values],
                     fine.reflectance.transpose("time", "band", "y", "x").values.astype(np.float32),
                     [day(t) for t in coarse.time.values],
                     coarse.reflectance.transpose("time", "band", "y", "x").values.astype(np.float32),
                     "400 px, 64 MODIS days, 4 Landsat dates (catalog cubes)")


# --------------------------------------------------------------------------- methods


def usable(s: SeriesSet, min_clear: float = 0.05) -> list[int]:
    """Indices of fine dates usable as pairs: >= ``min_clear`` clear and a coarse image that day."""
    have = {d for d, c in zip(s.coarse_days, s.coarse) if np.isfinite(c).any()}
    return [k for k, d in enumerate(s.fine_days) if d in have and np.isfinite(s.fine[k]).all(axis=0).mean() >= min_clear]


def coarse_of(s: SeriesSet, day: dt.date) -> np.ndarray:
    return s.coarse[s.coarse_days.index(day)]


def blend_nearest(s: SeriesSet, target: int, others: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The default: the two nearest pairs gap-filled from up to 3 farther dates each (as catalog mode)."""
    import xarray as xr

    from stfuse.fused import PriorPredictor
    from stfuse.fusion.pairs import fill_pair, plan_day

    day = s.fine_days[target]
    plan = plan_day(day, [s.fine_days[k] for k in others], max_pairs=2, max_fill=3)
    stack = lambda arrs: xr.DataArray(np.stack(arrs), dims=("time", "band", "y", "x"))  # noqa: E731
    fines, coarses = [], []
    for pair, fills in zip(plan.pairs, plan.fills or [()] * len(plan.pairs)):
        order = [pair, *fills]
        f, c, _ = fill_pair(stack([s.fine[s.fine_days.index(d)] for d in order]), stack([coarse_of(s, d) for d in order]))
        fines.append(f.values)
        coarses.append(c.values)
    predictor = PriorPredictor("blend", len(plan.pairs))
    mean, var = predictor(np.stack(fines), np.stack(coarses), coarse_of(s, day))
    return mean, np.sqrt(np.clip(var, 0, None) * predictor.variance_factor)


def time_weighted(tau: float) -> Callable[[SeriesSet, int, list[int]], tuple[np.ndarray, np.ndarray]]:
    def run(s: SeriesSet, target: int, others: list[int]) -> tuple[np.ndarray, np.ndarray]:
        from stfuse.fusion.kalman import time_weighted_change

        day = s.fine_days[target]
        mean, var = time_weighted_change(s.fine[others], [s.fine_days[k] for k in others],
                                         np.stack([coarse_of(s, s.fine_days[k]) for k in others]), coarse_of(s, day), day, tau=tau)
        return mean, np.sqrt(var)
    return run


def kalman(**options: Any) -> Callable[[SeriesSet, int, list[int]], tuple[np.ndarray, np.ndarray]]:
    """The engine; the coarse series' model (noise, wobble: no fine image involved) fitted once per set."""
    coarse_models: dict[str, Any] = {}

    def run(s: SeriesSet, target: int, others: list[int]) -> tuple[np.ndarray, np.ndarray]:
        from stfuse.fusion.kalman import _central, fit_coarse_model, predict_series

        if s.name not in coarse_models:
            coarse_models[s.name] = fit_coarse_model(_central(s.coarse, 512), s.coarse_days, wobble=options.get("wobble", False),
                                                     per_day=options.get("per_day_noise", False))
        mean, var, params = predict_series(s.fine[others], [s.fine_days[k] for k in others], s.coarse, s.coarse_days,
                                           [s.fine_days[target]], coarse_model=coarse_models[s.name], **options)
        run.params.append(params)  # type: ignore[attr-defined]
        return mean[0], np.sqrt(var[0])
    run.params = []  # type: ignore[attr-defined]
    return run


BASELINES: dict[str, Callable[[], Callable[..., Any]]] = {
    "2 nearest (blend, default)": lambda: blend_nearest,
    "time-weighted change tau 5": lambda: time_weighted(5),
    "time-weighted change tau 10": lambda: time_weighted(10),
    "time-weighted change tau 20": lambda: time_weighted(20),
}
KALMAN: dict[str, dict[str, Any]] = {
    "kalman": {"unmix": False, "wobble": False},
    "kalman, wobble removed": {"unmix": False, "wobble": True},
    "kalman, unmixed (composite classes, local, lam 0.03)": {"unmix": True, "unmix_lam": 0.03, "unmix_features": "composite",
                                                             "unmix_prior": "local", "wobble": False},
    "kalman, unmixed (season classes, local, lam 0.01)": {"unmix": True, "unmix_lam": 0.01, "unmix_features": "series",
                                                          "unmix_prior": "local", "wobble": False},
    "kalman, unmixed (season classes, global, lam 0.1)": {"unmix": True, "unmix_lam": 0.1, "unmix_features": "series",
                                                          "unmix_prior": "global", "wobble": False},
    "kalman, unmixed (season classes, global, lam 0.1), wobble removed": {"unmix": True, "unmix_lam": 0.1, "unmix_features": "series",
                                                                          "unmix_prior": "global", "wobble": True},
}
"""The engine's candidate settings; the default is the leave-one-set-out choice (:func:`leave_one_set_out`)."""


@dataclass
class DayScore:
    day: dt.date
    clear: float
    rmse: dict[str, float]
    coverage: dict[str, float]
    seconds: dict[str, float]
    n: int


def run_set(s: SeriesSet, methods: dict[str, Callable[[], Callable[..., Any]]], log: Callable[[str], None] = print) -> list[DayScore]:
    """Leave-one-date-out on ``s`` with every method; scores per withheld date."""
    ok_dates = usable(s)
    out = []
    runners = {label: make() for label, make in methods.items()}
    for target in ok_dates:
        others = [k for k in ok_dates if k != target]
        truth = s.fine[target]
        preds, secs = {}, {}
        for label, run in runners.items():
            t0 = time.perf_counter()
            preds[label] = run(s, target, others)
            secs[label] = time.perf_counter() - t0
        ok = np.isfinite(truth) & np.all([np.isfinite(m) & np.isfinite(sd) for m, sd in preds.values()], axis=0)
        rmse = {label: float(np.mean([np.sqrt(np.mean((m[b] - truth[b])[ok[b]] ** 2)) for b in range(truth.shape[0])]))
                for label, (m, _) in preds.items()}
        cov = {label: float(np.mean(np.abs(m - truth)[ok] <= Z95 * sd[ok])) for label, (m, sd) in preds.items()}
        clear = float(np.isfinite(truth).all(axis=0).mean())
        out.append(DayScore(s.fine_days[target], clear, rmse, cov, secs, int(ok.sum())))
        log(f"{s.name} {s.fine_days[target]} ({clear:.0%} clear): " + ", ".join(f"{k} {v:.5f}" for k, v in rmse.items()))
    return out


def table(s: SeriesSet, scores: list[DayScore]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Markdown: per withheld date the RMSE of every method, then mean RMSE, ratio, coverage, s/day."""
    labels = list(scores[0].rmse)
    lines = [f"### {s.name}", "", f"{s.note}. RMSE (mean of {', '.join(BANDS)}) per withheld date on its clear pixels "
             "that every method predicts; bold: the lowest.", "",
             "| withheld date | clear | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for d in scores:
        best = min(d.rmse.values())
        lines.append(f"| {d.day} | {d.clear:.0%} | " + " | ".join(f"**{v:.5f}**" if v == best else f"{v:.5f}"
                                                           for v in d.rmse.values()) + " |")
    summary = {label: {"rmse": float(np.mean([d.rmse[label] for d in scores])),
                       "coverage": float(np.mean([d.coverage[label] for d in scores])),
                       "seconds": float(np.mean([d.seconds[label] for d in scores])),
                       "worst_vs_default": float(max(d.rmse[label] / d.rmse[labels[0]] for d in scores))} for label in labels}
    base = summary[labels[0]]["rmse"]
    lines += ["| mean RMSE | | " + " | ".join(f"{summary[k]['rmse']:.5f}" for k in labels) + " |",
              "| ratio to 2 nearest | | " + " | ".join(f"{summary[k]['rmse'] / base:.3f}" for k in labels) + " |",
              "| worst date vs 2 nearest | | " + " | ".join(f"{summary[k]['worst_vs_default']:.3f}" for k in labels) + " |",
              "| 95 % coverage | | " + " | ".join(f"{summary[k]['coverage']:.1%}" for k in labels) + " |",
              "| seconds per day | | " + " | ".join(f"{summary[k]['seconds']:.2f}" for k in labels) + " |", ""]
    return lines, summary


def leave_one_set_out(summaries: dict[str, dict[str, dict[str, float]]], candidates: list[str], base: str) -> dict[str, Any]:
    """Choose among the kalman ``candidates`` by leave-one-set-out: for each set, the candidate with
    the lowest mean ratio (RMSE / ``base``'s) over the *other* sets, scored on the set; and the
    choice over all sets (the default). ``summaries``: set -> method -> summary of :func:`table`."""
    sets = list(summaries)
    ratio = {c: {s: summaries[s][c]["rmse"] / summaries[s][base]["rmse"] for s in sets} for c in candidates}
    held = {}
    for s in sets:
        others = [o for o in sets if o != s] or sets
        pick = min(candidates, key=lambda c: float(np.mean([ratio[c][o] for o in others])))
        held[s] = {"chosen": pick, "ratio": ratio[pick][s], "coverage": summaries[s][pick]["coverage"]}
    default = min(candidates, key=lambda c: float(np.mean([ratio[c][s] for s in sets])))
    return {"ratios": ratio, "held_out": held, "default": default}


def study(benchmarks: Path = DEFAULT_BENCHMARKS, which: tuple[str, ...] = ("sim", "kranj", "sample"),
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> tuple[str, dict[str, Any]]:
    """Every set, every method: ``(markdown, results)``; ``results["sets"][set][method]`` the summary
    (rmse, coverage, seconds, worst_vs_default), ``results["selection"]`` the leave-one-set-out choice."""
    methods: dict[str, Callable[[], Callable[..., Any]]] = dict(BASELINES)
    for label, options in KALMAN.items():
        methods[label] = (lambda o=options: kalman(**o))
    sections, summaries = [], {}
    for s in load_sets(list(which), benchmarks):
        lines, summaries[s.name] = table(s, run_set(s, methods, log=log))
        sections += lines
    base = next(iter(BASELINES))
    selection = leave_one_set_out(summaries, list(KALMAN), base)
    return "\n".join([*summary_lines(summaries, selection, base), *sections]), {"sets": summaries, "selection": selection}


def summary_lines(summaries: dict[str, dict[str, dict[str, float]]], selection: dict[str, Any], base: str) -> list[str]:
    """The tables at the top of the section: per set the rows the issue asks for, and the leave-one-set-out choice."""
    sets = list(summaries)
    default = selection["default"]
    best_tw = {s: min((k for k in summaries[s] if k.startswith("time-weighted")), key=lambda k: summaries[s][k]["rmse"]) for s in sets}
    lines = ["Per set (mean over its withheld dates): RMSE, 95 % coverage, seconds per day; `target` = the engine's RMSE over",
             "min(2 nearest, best time-weighted change) (issue #29: <= 0.9), `worst date` = its largest ratio to 2 nearest on",
             f"one date (<= 1.02). The engine: `{default}` (the leave-one-set-out choice over all sets, below).", "",
             "| set | 2 nearest (blend) | best time-weighted change | kalman (default) | target ratio | worst date | kalman 95 % coverage | s/day blend / tw / kalman |",
             "|---|---|---|---|---|---|---|---|"]
    for s in sets:
        b, t, k = summaries[s][base], summaries[s][best_tw[s]], summaries[s][default]
        lines.append(f"| {s} | {b['rmse']:.5f} | {t['rmse']:.5f} ({best_tw[s].replace('time-weighted change ', '')}) | {k['rmse']:.5f} | "
                     f"{k['rmse'] / min(b['rmse'], t['rmse']):.3f} | {k['worst_vs_default']:.3f} | {k['coverage']:.1%} | "
                     f"{b['seconds']:.2f} / {t['seconds']:.2f} / {k['seconds']:.2f} |")
    cands = list(selection["ratios"])
    lines += ["", "Engine variants, mean RMSE relative to 2 nearest per set; last columns: leave-one-set-out (the variant chosen on",
              "the other sets, its ratio on the set).", "",
              "| variant | " + " | ".join(sets) + " | mean |", "|---" * (len(sets) + 2) + "|"]
    for c in cands:
        vals = [selection["ratios"][c][s] for s in sets]
        lines.append(f"| {c}{' (default)' if c == default else ''} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.mean(vals):.3f} |")
    held = selection["held_out"]
    lines += ["| chosen without the set | " + " | ".join(f"{held[s]['ratio']:.3f} ({held[s]['chosen'].replace('kalman', '').strip(', ') or 'plain'})"
                                                      for s in sets) + " | |", ""]
    return lines


def load_sets(which: list[str], benchmarks: Path = DEFAULT_BENCHMARKS) -> list[SeriesSet]:
    sets: list[SeriesSet] = []
    if "sim" in which:
        sets += simulated_sets()
    if "kranj" in which:
        k = kranj_set(benchmarks)
        if k is not None:
            sets.append(k)
    if "sample" in which:
        sets.append(sample_set())
    return sets


def _child_timing(size: int, n_dates: int, bands: int, unmix: bool) -> dict[str, Any]:
    """One day of the engine as catalog mode runs it on one tile: ``size`` x ``size`` px (plus the
    halo), ``n_dates`` fine dates every 8 days, ``bands`` bands; parameters fitted first (not timed)."""
    import resource

    from stfuse.fusion.kalman import KalmanPredictor, fit_params, kalman_halo

    rng = np.random.default_rng(0)
    halo = kalman_halo({"unmix": unmix})
    side = size + 2 * halo
    days = [dt.date(2023, 4, 1) + dt.timedelta(days=8 * k) for k in range(n_dates)]
    target = days[n_dates // 2] + dt.timedelta(days=3)
    y, x = np.mgrid[0:side, 0:side] / 40.0
    texture = (0.05 * np.sin(y) * np.cos(x)).astype(np.float32)
    coarse = np.empty((n_dates, bands, side, side), np.float32)
    fine = np.empty_like(coarse)
    for k in range(n_dates):
        for b in range(bands):
            level = 0.1 + 0.02 * b + 0.03 * np.sin(k / 4.0)
            coarse[k, b] = level + rng.normal(0, 0.004, (side, side)).astype(np.float32) * 0.2
            fine[k, b] = coarse[k, b] + texture + rng.normal(0, 0.005, (side, side)).astype(np.float32)
        fine[k, :, rng.random((side, side)) < 0.4] = np.nan  # 40 % cloud
    sub = slice(0, min(side, 256))
    params = fit_params(fine[:, :, sub, sub], days, coarse[:, :, sub, sub], days, unmix=unmix)
    predictor = KalmanPredictor(params, days, target)
    t0 = time.perf_counter()
    mean, var = predictor(fine, coarse, coarse[n_dates // 2])
    seconds = time.perf_counter() - t0
    assert np.isfinite(mean).mean() > 0.5
    return {"size": size, "halo": halo, "dates": n_dates, "bands": bands, "unmix": unmix, "seconds": round(seconds, 2),
            "mpx_per_s": round(size * size / seconds / 1e6, 3),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)}


def full_scene_timing(runs: tuple[tuple[bool, int], ...] = ((False, 1024), (False, 2048), (True, 1024)), n_dates: int = 20,
                      bands: int = 6) -> list[dict[str, Any]]:
    """Per (unmixed?, tile size) of ``runs``, one day of the engine in a child process: seconds,
    Mpx/s, peak memory, and the extrapolation to a 7000 x 7000 x ``bands`` scene (the unmixed
    driver at 2048 px needs about 15 GB: not run on this 24 GB machine)."""
    import json
    import subprocess

    rows = []
    for unmix, size in runs:
        if True:
            out = subprocess.run([sys.executable, __file__, "--child-timing", str(size), str(n_dates), str(bands), str(int(unmix))],
                                 capture_output=True, text=True)
            if out.returncode:
                rows.append({"size": size, "unmix": unmix, "failed": f"exit code {out.returncode}: {out.stderr.strip()[-200:]}"})
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["full_scene_minutes"] = round(7000 * 7000 / (row["mpx_per_s"] * 1e6) / 60, 1)
            rows.append(row)
    return rows


def timing_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["### Speed and memory: one full-scene day", "",
             "One day of `--method kalman` as catalog mode runs it, on one tile of a generated series (20 fine dates, 40 % cloud,",
             "6 bands; the parameters fitted beforehand, once per query, not timed), in a child process for its peak memory; a",
             "7000 x 7000 x 6 scene is 49 such 1024 px tiles (tiles run one after the other on this machine: the time adds up,",
             "the memory does not). Extrapolated from the tiles, not run at 7000 px.", "",
             "| variant | tile (+ halo) | seconds | Mpx/s | peak memory | 7000 x 7000 x 6 day (extrapolated) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {'unmixed' if r['unmix'] else 'plain'} | {r['size']} | failed: {r['failed']} | | | |")
            continue
        lines.append(f"| {'unmixed' if r['unmix'] else 'plain'} | {r['size']} (+{r['halo']}) | {r['seconds']:.1f} | {r['mpx_per_s']:.3f} | "
                     f"{r['peak_mb']:.0f} MB | {r['full_scene_minutes']:.1f} min |")
    return "\n".join([*lines, ""])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-timing":
        import json

        size, n_dates, bands, unmix = (int(v) for v in sys.argv[2:6])
        print(json.dumps(_child_timing(size, n_dates, bands, bool(unmix))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="sim,kranj,sample")
    parser.add_argument("--timing", action="store_true", help="only the full-scene timing")
    args = parser.parse_args()
    if args.timing:
        print(timing_markdown(full_scene_timing()))
        return
    print(study(which=tuple(args.sets.split(",")))[0])


if __name__ == "__main__":
    main()
