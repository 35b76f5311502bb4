"""Gap filling against the two nearest pairs: leave-one-date-out on cloudy simulated seasons.

Writes simulated STAC catalogs (:func:`stfuse.sim.sample.write_sample_catalog`: a season with
Landsat 8 + 9 every 8 days and heavy clouds, plus the bundled sample) and runs
:func:`stfuse.evaluate.holdout.holdout` on each with several pair settings (``max_fill`` = fill
days per pair, ``min_clear``, ``max_pairs``). Prints a markdown table of RMSE per withheld date
(the dates every setting can withhold) and the 95 % coverage per setting, and the same comparison
on the real Kranj series (:func:`kranj`). It only reports; the default is read from the table
(docs/methods.md, "Pairs and gap filling"). ``make bench`` runs it (:func:`study`) for the section
"Gap filling" of docs/benchmarks.md.

    .venv/bin/python tools/fill_study.py [--work out/fill-study]     # prints the tables, ~5 min on 2 cores
    .venv/bin/python tools/bench.py --only fill --out docs/benchmarks.md   # the same into its section
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from stfuse.evaluate.holdout import holdout
from stfuse.sim.sample import write_sample_catalog
from stfuse.sim.synth import SceneSpec

SEASONS: dict[str, SceneSpec] = {
    "cloudy season A (seed 1, 40 % cloud)": SceneSpec(height=256, width=256, n_days=96, seed=1, landsat_revisit=8,
                                                      landsat_offset=3, cloud_fraction=0.4, change_day=50),
    "cloudy season B (seed 2, 30 % cloud, harvest)": SceneSpec(height=256, width=256, n_days=96, seed=2, landsat_revisit=8,
                                                               landsat_offset=2, cloud_fraction=0.3, change_day=40,
                                                               change_kind="harvest"),
}
SETTINGS: dict[str, dict[str, object]] = {
    "2 nearest (min-clear 0.3)": dict(max_pairs=2, max_fill=0, min_clear=0.3),
    "2 nearest, filled (min-clear 0.3, fill 3)": dict(max_pairs=2, max_fill=3, min_clear=0.3),
    "2 nearest (min-clear 0.05)": dict(max_pairs=2, max_fill=0, min_clear=0.05),
    "2 nearest, filled (min-clear 0.05, fill 3)": dict(max_pairs=2, max_fill=3, min_clear=0.05),
    "4 pairs, all pixels (min-clear 0.05)": dict(max_pairs=4, max_fill=0, min_clear=0.05),
    "3 pairs, filled (min-clear 0.05, fill 3)": dict(max_pairs=3, max_fill=3, min_clear=0.05),
    "4 pairs, filled (min-clear 0.05, fill 3)": dict(max_pairs=4, max_fill=3, min_clear=0.05),
}
BANDS = ("red", "nir08")


def run_catalog(name: str, catalog: Path) -> tuple[list[str], dict[str, float]]:
    """Holdout of every setting on ``catalog``: markdown lines and each setting's mean RMSE
    relative to the first setting's."""
    results = {}
    for label, settings in SETTINGS.items():
        t0 = time.perf_counter()
        results[label] = holdout(catalog=catalog, bands=list(BANDS), keep_arrays=True, **settings)
        print(f"{name}: {label}: {time.perf_counter() - t0:.0f} s", flush=True)
    lines, per_setting, inside = compare_holdouts(name, results, "setting")
    lines += _summary_rows(per_setting, inside)
    return lines, _ratios(per_setting)


def compare_holdouts(name: str, results: dict[str, Any], what: str) -> tuple[list[str], dict[str, list[float]], dict[str, list[float]]]:
    """A markdown table of holdout ``results`` (label -> :class:`~stfuse.evaluate.holdout.HoldoutResult`,
    arrays kept): RMSE per withheld date on the clear pixels every ``what`` (column) predicts.
    Returns ``(lines, rmses, inside)``: per label the RMSE and the 95 % coverage per date."""
    common = sorted(set.intersection(*({d.date for d in r.days} for r in results.values())))
    lines = [f"### {name}", "",
             f"RMSE (mean of red and NIR) per withheld date, on its clear pixels that every {what} predicts; bold: the lowest.", "",
             "| withheld date | clear | " + " | ".join(results) + " |", "|---" * (len(results) + 2) + "|"]
    rmses: dict[str, list[float]] = {label: [] for label in results}
    inside: dict[str, list[float]] = {label: [] for label in results}
    for day in common:
        got = {label: next(d for d in r.days if d.date == day) for label, r in results.items()}
        first = next(iter(got.values()))
        ok = np.isfinite(first.truth) & np.all([np.isfinite(d.mean) & np.isfinite(d.sigma) for d in got.values()], axis=0)
        row = {label: _rmse(d.mean, d.truth, ok) for label, d in got.items()}
        for label, d in got.items():
            rmses[label].append(row[label])
            inside[label].append(float(np.mean(np.abs(d.mean - d.truth)[ok] <= 1.959964 * d.sigma[ok])))
        best = min(row.values())
        lines.append(f"| {day} | {first.clear_fraction:.0%} | " + " | ".join(f"**{v:.5f}**" if v == best else f"{v:.5f}"
                                                                          for v in row.values()) + " |")
    return lines, rmses, inside


def _ratios(per_setting: dict[str, list[float]]) -> dict[str, float]:
    base = float(np.mean(per_setting[next(iter(per_setting))]))
    return {label: float(np.mean(v)) / base for label, v in per_setting.items()}


def _rmse(pred: np.ndarray, truth: np.ndarray, ok: np.ndarray) -> float:
    """Mean over bands of the RMSE on ``ok`` pixels."""
    return float(np.mean([np.sqrt(np.mean((pred[b] - truth[b])[ok[b]] ** 2)) for b in range(truth.shape[0])]))


def _summary_rows(per_setting: dict[str, list[float]], inside: dict[str, list[float]], blank: str = " |") -> list[str]:
    """Mean RMSE, its ratio to the first setting's and the 95 % coverage; ``blank``: the cells
    between the label and the settings."""
    base = np.mean(per_setting[next(iter(per_setting))])
    return [f"| mean |{blank} " + " | ".join(f"{np.mean(v):.5f}" for v in per_setting.values()) + " |",
            f"| ratio to the first column |{blank} " + " | ".join(f"{np.mean(v) / base:.3f}" for v in per_setting.values()) + " |",
            f"| 95 % coverage |{blank} " + " | ".join(f"{np.mean(v):.1%}" for v in inside.values()) + " |", ""]


KRANJ_AS: dict[str, str] = {
    "2 nearest (min-clear 0.3)": "nearest pair(s)", "2 nearest, filled (min-clear 0.3, fill 3)": "nearest, filled by the other date",
    "2 nearest (min-clear 0.05)": "nearest pair(s)", "2 nearest, filled (min-clear 0.05, fill 3)": "nearest, filled by the other date",
    "4 pairs, all pixels (min-clear 0.05)": "both other dates, every pixel",
    "3 pairs, filled (min-clear 0.05, fill 3)": "both other dates, every pixel",
    "4 pairs, filled (min-clear 0.05, fill 3)": "both other dates, every pixel",
}
"""What each setting is on Kranj's three dates (its clouds are small: every date is a usable pair;
three or four pairs are both other dates, with nothing left to fill from)."""


def kranj(benchmarks: Path) -> tuple[list[str], dict[str, float]]:
    """Kranj (real, Landsat clouds as nodata): each date withheld, predicted by the default prior
    from its nearest pair(s), from them gap-filled by the other date, and from both others at every pixel."""
    import xarray as xr

    from stfuse.fusion.pairs import fill_pair, plan_day
    from stfuse.fusion.prior import predict
    from stfuse.fusion.prior.calibration import calibration_record
    from stfuse.fusion.radiometry import harmonize
    from stfuse.output.io import read_reflectance

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_sets import REAL_SETS  # noqa: E402

    spec = next(s for s in REAL_SETS if s.name == "kranj")
    if not (benchmarks / spec.folder).exists():
        return ["### kranj (real)", "", "not found under " + str(benchmarks), ""], {}
    dates = [dt.date.fromisoformat(d) for d, _, _ in spec.scenes]
    fine = np.stack([read_reflectance(benchmarks / f).values for _, f, _ in spec.scenes])
    coarse = np.stack([read_reflectance(benchmarks / c).values for _, _, c in spec.scenes])
    scale = 1e-4
    labels = ("nearest pair(s)", "nearest, filled by the other date", "both other dates, every pixel")
    lines = ["### kranj (real; 45 x 44 px, Landsat clouds as nodata)", "",
             "RMSE (mean of 6 bands, reflectance) per withheld date on pixels every setting predicts; default prior (blend).", "",
             "| withheld date | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    per_setting: dict[str, list[float]] = {k: [] for k in labels}
    inside: dict[str, list[float]] = {k: [] for k in labels}
    for t, target in enumerate(dates):
        others = [k for k in range(len(dates)) if k != t]
        plan = plan_day(target, [dates[k] for k in others], max_fill=3)  # as catalog mode plans the day
        nearest = [dates.index(d) for d in plan.pairs]
        c, ct, _ = harmonize(fine[others], coarse[others], coarse[t])  # coarse in the fine units, fitted on the pairs
        fine_o = {k: fine[k] for k in others}
        coarse_o = {k: c[others.index(k)] for k in others}
        runs = {labels[0]: (np.stack([fine_o[k] for k in nearest]), np.stack([coarse_o[k] for k in nearest]))}
        filled_f, filled_c = [], []
        stack = lambda arrs: xr.DataArray(np.stack(arrs), dims=("time", "band", "y", "x"))  # noqa: E731
        for k, fills in zip(nearest, plan.fills or [()] * len(nearest)):
            order = [k, *(dates.index(d) for d in fills)]
            ff, cc, _ = fill_pair(stack([fine_o[j] for j in order]), stack([coarse_o[j] for j in order]))
            filled_f.append(ff.values)
            filled_c.append(cc.values)
        runs[labels[1]] = (np.stack(filled_f), np.stack(filled_c))
        runs[labels[2]] = (np.stack([fine_o[k] for k in others]), np.stack([coarse_o[k] for k in others]))
        preds = {}
        for label, (pf, pc) in runs.items():
            mean, var = predict(pf, pc, ct, method="blend")
            preds[label] = (mean, np.sqrt(var * calibration_record("blend", pf.shape[0])["variance_scale"]))
        truth = fine[t]
        ok = np.isfinite(truth) & np.all([np.isfinite(m) & np.isfinite(s) for m, s in preds.values()], axis=0)
        rmses = {label: _rmse(m * scale, truth * scale, ok) for label, (m, _) in preds.items()}
        for label, (m, sd) in preds.items():
            per_setting[label].append(rmses[label])
            inside[label].append(float(np.mean(np.abs(m - truth)[ok] <= 1.959964 * sd[ok])))
        best = min(rmses.values())
        lines.append(f"| {target} | " + " | ".join(f"**{v:.5f}**" if v == best else f"{v:.5f}" for v in rmses.values()) + " |")
    lines += _summary_rows(per_setting, inside, blank="")
    ratios = _ratios(per_setting)
    return lines, {label: ratios[KRANJ_AS[label]] for label in SETTINGS}


def study(work: Path = Path("out/fill-study"), benchmarks: Path | None = None) -> tuple[str, dict[str, dict[str, float]]]:
    """Run every set (simulated seasons written under ``work``, the bundled sample, Kranj from
    ``benchmarks`` when present): ``(markdown, ratios)`` with ``ratios[set][setting]`` the mean RMSE
    relative to the first setting (2 nearest, min-clear 0.3)."""
    root = Path(__file__).resolve().parent.parent
    sections: list[str] = []
    ratios: dict[str, dict[str, float]] = {}
    for name, spec in SEASONS.items():
        catalog = write_sample_catalog(work / name.split(" (")[0].replace(" ", "-"), spec, overwrite=True)
        lines, ratios[name.split(" (")[0]] = run_catalog(name, catalog)
        sections += lines
    lines, ratios["bundled sample"] = run_catalog("bundled sample (sample_scenes)", root / "sample_scenes" / "catalog.json")
    sections += lines
    lines, kranj_ratios = kranj(benchmarks or root.parent / "shared" / "benchmarks")
    sections += lines
    if kranj_ratios:
        ratios["Kranj (real)"] = kranj_ratios
    return "\n".join([*summary_lines(ratios), *sections]), ratios


def summary_lines(ratios: dict[str, dict[str, float]]) -> list[str]:
    """A table: per setting, its ratio on each set, the mean over sets and the worst set."""
    sets = list(ratios)
    lines = ["Mean RMSE per set relative to the first setting (lower is better); each set counts once.", "",
             "| setting | " + " | ".join(sets) + " | mean | worst |", "|---" * (len(sets) + 3) + "|"]
    for label in SETTINGS:
        values = [ratios[s][label] for s in sets]
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} | {max(values):.3f} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("out/fill-study"))
    args = parser.parse_args()
    print(study(args.work)[0])


if __name__ == "__main__":
    main()
