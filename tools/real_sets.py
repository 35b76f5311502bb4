"""Real Landsat + MODIS sets for ``make bench``: leave-one-date-out tasks and their baselines.

Each set (:data:`REAL_SETS`) is three dates with a fine (Landsat) and a coarse (MODIS, already
on the fine grid) image each, read from ``../shared/benchmarks`` (never copied into the
project; a set whose folder is absent is skipped). :func:`build_tasks` makes, for every target
date, one one-pair task per other date and one two-pair task with both other dates (9 tasks
per set); :func:`write_manifest` writes them as a ``MANIFEST.json`` that
:func:`stfuse.evaluate.tasks.load_task` reads (absolute paths), with two extra fields per task:
``set`` and ``truth_scale``.

Units. Files are read with :func:`stfuse.output.io.read_reflectance` (integer x 1e-4, float as
is). ``truth_scale`` multiplies the fine images / truth / predictions (which come out in the
fine images' units) to give the units scores are reported in: 1 for estarfm-real and CIA
(reflectance), 1 for realset1 (Landsat Level-1 digital numbers x 1e-4 as read: not reflectance,
its RMSEs are in DN / 1e4), 1e-4 for Kranj (float reflectance x 1e4).

    .venv/bin/python tools/real_sets.py --manifest /tmp/real/MANIFEST.json   # write the 45 tasks
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
BASELINE = "fine+coarse-change"
"""``fine_p + (coarse_t - coarse_p)`` from the pair nearest in date, coarse images in the fine units."""
COPY_FINE = "copy-fine"
"""The fine image of the pair nearest in date."""
BASELINES = (BASELINE, COPY_FINE)


@dataclass(frozen=True)
class RealSet:
    """One real set: ``scenes`` are (ISO date, fine file, coarse file), paths relative to the
    benchmarks folder; ``folder`` must exist for the set to be used; ``truth_scale`` (module docstring)."""

    name: str
    folder: str
    scenes: tuple[tuple[str, str, str], ...]
    truth_scale: float
    units: str


_REALSET1 = "extra/realset1-3pair"
_KRANJ = "extra/kranj-series"
REAL_SETS: tuple[RealSet, ...] = (
    RealSet("estarfm-real", "estarfm-real", (
        ("2001-05-24", "estarfm-real/landsat_2001-05-24.tif", "estarfm-real/modis_2001-05-24.tif"),
        ("2001-07-11", "estarfm-real/landsat_2001-07-11.tif", "estarfm-real/modis_2001-07-11.tif"),
        ("2001-08-12", "estarfm-real/landsat_2001-08-12.tif", "estarfm-real/modis_2001-08-12.tif"),
    ), 1.0, "reflectance (int16 x 1e4 on disk)"),
    RealSet("cia", "extra/cia-3pair", (
        ("2001-10-08", "extra/cia-3pair/Landsat_ETM_20011008.tif", "extra/cia-3pair/MODIS_MOD09GA_20011008.tif"),
        ("2001-10-17", "extra/cia-3pair/Landsat_ETM_20011017.tif", "extra/cia-3pair/MODIS_MOD09GA_20011017.tif"),
        ("2001-11-02", "extra/cia-3pair/Landsat_ETM_20011102.tif", "extra/cia-3pair/MODIS_MOD09GA_20011102.tif"),
    ), 1.0, "reflectance (float 0-1 on disk)"),
    RealSet("realset1-nearest", _REALSET1, (  # 2016 DOY 220, 236, 243
        ("2016-08-07", f"{_REALSET1}/L_2016_220.tif", f"{_REALSET1}/M_2016_220-nearestneighbor.tif"),
        ("2016-08-23", f"{_REALSET1}/L_2016_236.tif", f"{_REALSET1}/M_2016_236-nearestneighbor.tif"),
        ("2016-08-30", f"{_REALSET1}/L_2016_243.tif", f"{_REALSET1}/M_2016_243-nearestneighbor.tif"),
    ), 1.0, "Landsat digital numbers / 1e4 (uint16 DN on disk; not reflectance)"),
    RealSet("realset1-bilinear", _REALSET1, (
        ("2016-08-07", f"{_REALSET1}/L_2016_220.tif", f"{_REALSET1}/M_2016_220-bilinear.tif"),
        ("2016-08-23", f"{_REALSET1}/L_2016_236.tif", f"{_REALSET1}/M_2016_236-bilinear.tif"),
        ("2016-08-30", f"{_REALSET1}/L_2016_243.tif", f"{_REALSET1}/M_2016_243-bilinear.tif"),
    ), 1.0, "Landsat digital numbers / 1e4 (uint16 DN on disk; not reflectance)"),
    RealSet("kranj", _KRANJ, (  # 2020 DOY 068, 077, 093: the dates with both sensors; Landsat with clouds as nodata
        ("2020-03-08", f"{_KRANJ}/landsat/unfilled/2020068_191-28_kranj.tif", f"{_KRANJ}/modis/filled/2020068_18-04_kranj.tif"),
        ("2020-03-17", f"{_KRANJ}/landsat/unfilled/2020077_190-28_kranj.tif", f"{_KRANJ}/modis/filled/2020077_18-04_kranj.tif"),
        ("2020-04-02", f"{_KRANJ}/landsat/unfilled/2020093_190-28_kranj.tif", f"{_KRANJ}/modis/filled/2020093_18-04_kranj.tif"),
    ), 1e-4, "reflectance (float x 1e4 on disk, scaled by 1e-4)"),
)


def available_sets(benchmarks: Path = DEFAULT_BENCHMARKS, names: list[str] | None = None) -> list[RealSet]:
    """The sets of :data:`REAL_SETS` (only ``names`` if given) whose folder and files exist under ``benchmarks``."""
    chosen = [s for s in REAL_SETS if names is None or s.name in names]
    return [s for s in chosen if (benchmarks / s.folder).is_dir()
            and all((benchmarks / f).is_file() for _, fine, coarse in s.scenes for f in (fine, coarse))]


def build_tasks(benchmarks: Path = DEFAULT_BENCHMARKS, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Leave-one-date-out tasks of every available set, as ``MANIFEST.json`` task dicts with
    absolute paths plus ``set`` and ``truth_scale``: per target date, a one-pair task from each
    other date, then a two-pair task from both (in date order). 3 dates -> 9 tasks per set, with
    ids ``<set>-t<target>-p<pairs>`` numbering the set's dates 1-3 in time order (``cia-t2-p13``)."""
    benchmarks = Path(benchmarks).resolve()
    tasks = []
    for real_set in available_sets(benchmarks, names):
        scenes = sorted(real_set.scenes)
        for target_index, (target_date, truth, target_coarse) in enumerate(scenes, start=1):
            others = [(k, s) for k, s in enumerate(scenes, start=1) if k != target_index]
            for chosen in [*([o] for o in others), others]:
                kind = "one-pair" if len(chosen) == 1 else "two-pair"
                task_id = f"{real_set.name}-t{target_index}-p{''.join(str(k) for k, _ in chosen)}"
                pair_scenes = [s for _, s in chosen]
                tasks.append({
                    "id": task_id, "kind": kind, "set": real_set.name, "truth_scale": real_set.truth_scale,
                    "pairs": [{"date": d, "fine": str(benchmarks / f), "coarse": str(benchmarks / c)} for d, f, c in pair_scenes],
                    "target": {"date": target_date, "coarse": str(benchmarks / target_coarse)},
                    "truth": str(benchmarks / truth),
                })
    return tasks


def write_manifest(tasks: list[dict[str, Any]], path: Path) -> Path:
    """Write ``tasks`` as a ``MANIFEST.json`` (``{"tasks": [...]}``) at ``path``; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tasks": tasks}, indent=1) + "\n")
    return path


def nearest_pair(task: dict[str, Any]) -> dict[str, Any]:
    """The task's pair nearest in date to its target (a tie goes to the earlier pair)."""
    target = dt.date.fromisoformat(task["target"]["date"])
    return min(task["pairs"], key=lambda p: (abs((dt.date.fromisoformat(p["date"]) - target).days), p["date"]))


def baseline_prediction(task: dict[str, Any], method: str = BASELINE) -> np.ndarray:
    """A baseline's (B, H, W) float32 prediction in the fine images' units (NaN = missing).

    ``copy-fine``: the nearest pair's fine image. ``fine+coarse-change``: ``fine_p + (coarse_t -
    coarse_p)`` with the nearest pair p, after mapping the coarse images into the fine units with
    :func:`stfuse.fusion.radiometry.fit_units` fitted on all the task's pairs, when it says the units
    differ (``applied``; the rule stfuse uses).
    """
    from stfuse.fusion.radiometry import fit_units
    from stfuse.output.io import read_reflectance

    pair = nearest_pair(task)
    fine = read_reflectance(pair["fine"]).values
    if method == COPY_FINE:
        return fine
    if method != BASELINE:
        raise ValueError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
    fines = np.stack([read_reflectance(p["fine"]).values for p in task["pairs"]])
    coarses = np.stack([read_reflectance(p["coarse"]).values for p in task["pairs"]])
    fit = fit_units(fines, coarses)
    # to_fine_units maps only when fit.applied (units differ), else returns its input unchanged
    coarse_target = fit.to_fine_units(read_reflectance(task["target"]["coarse"]).values)
    coarse_pair = fit.to_fine_units(read_reflectance(pair["coarse"]).values)
    return (fine + (coarse_target - coarse_pair)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", type=Path, default=DEFAULT_BENCHMARKS)
    parser.add_argument("--manifest", type=Path, required=True, help="where to write the MANIFEST.json")
    args = parser.parse_args(argv)
    tasks = build_tasks(args.benchmarks)
    write_manifest(tasks, args.manifest)
    print(f"wrote {len(tasks)} tasks of {len({t['set'] for t in tasks})} sets to {args.manifest}")


if __name__ == "__main__":
    main()
