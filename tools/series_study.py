"""``--refine scene`` on the series against the shipped refiner and the priors (leave-one-date-out).

Writes three simulated six-date seasons (256 px, 48 days, Landsat every 8 days, 30 % cloud; two
with a flood, one with a harvest) and runs :func:`stfuse.evaluate.holdout.holdout` on each and on
the bundled sample with: the default prior (``blend``), each single prior (Fit-FC, FSDAF, STARFM),
the hybrid with the shipped weights (``--refine shipped``) and the series model (``--refine scene``:
:mod:`stfuse.fusion.refine.series`, fitted for each withheld date on the other dates only).
Prints a markdown table per set (RMSE per withheld date on the pixels every method predicts, 95 %
coverage, seconds) and a summary. It only reports (docs/methods.md, "The series model").

    .venv/bin/python tools/series_study.py [--work out/series-study]   # ~8 min on 2 cores
    .venv/bin/python tools/bench.py --only series --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from stfuse.evaluate.holdout import holdout
from stfuse.sim.sample import write_sample_catalog
from stfuse.sim.synth import SceneSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fill_study import _summary_rows, compare_holdouts  # noqa: E402

SEASONS: dict[str, SceneSpec] = {
    f"season {seed} ({kind})": SceneSpec(height=256, width=256, n_days=48, seed=seed, landsat_revisit=8, landsat_offset=3,
                                         cloud_fraction=0.3, change_day=25, change_kind=kind)
    for seed, kind in ((1, "flood"), (2, "harvest"), (3, "flood"))
}
METHODS: dict[str, dict[str, str]] = {
    "blend (default)": dict(method="auto", refine="none"),
    "Fit-FC": dict(method="fitfc", refine="none"),
    "FSDAF": dict(method="fsdaf", refine="none"),
    "STARFM": dict(method="starfm", refine="none"),
    "hybrid, shipped": dict(method="auto", refine="shipped"),
    "series (--refine scene)": dict(method="auto", refine="scene"),
}
PRIORS = ("blend (default)", "Fit-FC", "FSDAF", "STARFM")
BANDS = ("red", "nir08")


def run_catalog(name: str, catalog: Path) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Every method's holdout on ``catalog``: markdown lines and per method ``rmse`` (mean over
    the withheld dates), ``coverage95`` and ``seconds``."""
    results, seconds = {}, {}
    for label, settings in METHODS.items():
        t0 = time.perf_counter()
        results[label] = holdout(catalog=catalog, bands=list(BANDS), keep_arrays=True, **settings)
        seconds[label] = time.perf_counter() - t0
        print(f"{name}: {label}: {seconds[label]:.0f} s", flush=True)
    lines, rmses, inside = compare_holdouts(name, results, "method")
    lines += [*_summary_rows(rmses, inside)[:-1],  # mean, ratio to the default (the first column), coverage
              "| seconds (all dates) | | " + " | ".join(f"{seconds[label]:.0f}" for label in results) + " |", ""]
    return lines, {label: {"rmse": float(np.mean(rmses[label])), "coverage95": float(np.mean(inside[label])),
                           "seconds": seconds[label]} for label in results}


def study(work: Path = Path("out/series-study")) -> tuple[str, dict[str, dict[str, dict[str, float]]]]:
    """Every set (simulated seasons written under ``work``, the bundled sample): ``(markdown, results)``."""
    root = Path(__file__).resolve().parent.parent
    sections: list[str] = []
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, spec in SEASONS.items():
        catalog = write_sample_catalog(work / name.split(" (")[0].replace(" ", "-"), spec, overwrite=True)
        lines, results[name] = run_catalog(name, catalog)
        sections += lines
    lines, results["bundled sample (4 dates)"] = run_catalog("bundled sample (4 dates)", root / "sample_scenes" / "catalog.json")
    sections += lines
    return "\n".join([*summary_lines(results), *sections]), results


def summary_lines(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Per set: mean RMSE relative to the default of the best single prior, the shipped hybrid and
    the series model, and the series model's 95 % coverage."""
    lines = ["Mean RMSE over the withheld dates relative to the default prior (lower is better).", "",
             "| set | best prior | shipped hybrid | series (--refine scene) | series 95 % coverage |", "|---|---|---|---|---|"]
    for name, r in results.items():
        base = r["blend (default)"]["rmse"]
        best = min(PRIORS, key=lambda p: r[p]["rmse"])
        lines.append(f"| {name} | {r[best]['rmse'] / base:.3f} ({best}) | {r['hybrid, shipped']['rmse'] / base:.3f} | "
                     f"{r['series (--refine scene)']['rmse'] / base:.3f} | {r['series (--refine scene)']['coverage95']:.1%} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("out/series-study"))
    args = parser.parse_args()
    print(study(args.work)[0])


if __name__ == "__main__":
    main()
