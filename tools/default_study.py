"""How the default prior was chosen: candidates scored on the simulator and every real set.

For each leave-one-date-out task of :mod:`real_sets` and each held-out simulated day
(:func:`stfuse.sim.days.simulated_days`, scenes disjoint from the calibration's), predicts with
STARFM, Fit-FC, FSDAF and ``fine + coarse change`` (coarse in the fine units as stfuse maps them)
and scores plain means of members. Prints, per set and number of pairs, each candidate's mean
RMSE divided by the baseline's (the nearest pair's ``fine + coarse change``), then the mean and
the worst ratio over the sets. Nothing here looks at a task's truth to choose anything: it only
reports; the rule in docs/methods.md ("Default method") reads the table.

    .venv/bin/python tools/default_study.py [--scenes 30] [--out docs/default-study.md]   # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_sets import build_tasks, nearest_pair  # noqa: E402

CANDIDATES: dict[str, tuple[str, ...]] = {
    "starfm": ("starfm",), "fitfc": ("fitfc",), "fsdaf": ("fsdaf",),
    "starfm+change": ("starfm", "change"), "fitfc+change": ("fitfc", "change"),
    "fitfc+fsdaf": ("fitfc", "fsdaf"), "fitfc+fsdaf+change (blend)": ("fitfc", "fsdaf", "change"),
    "starfm+fitfc+change": ("starfm", "fitfc", "change"), "all four": ("starfm", "fitfc", "fsdaf", "change"),
}


def _rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over bands of the per-band RMSE on pixels valid in both (as score.py)."""
    ok = np.isfinite(pred) & np.isfinite(truth)
    return float(np.mean([np.sqrt(np.mean((pred[b][ok[b]] - truth[b][ok[b]]) ** 2)) for b in range(truth.shape[0])]))


def _members(fine: np.ndarray, coarse: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    from stfuse.fusion import prior
    from stfuse.fusion.prior.blend import change_baseline

    out = {m: prior.predict(fine, coarse, target, method=m)[0] for m in ("starfm", "fitfc", "fsdaf")}
    out["change"] = change_baseline(*(torch.as_tensor(a) for a in (fine, coarse, target))).numpy()
    return out


def _score(members: dict[str, np.ndarray], baseline: np.ndarray, truth: np.ndarray, scale: float) -> dict[str, float]:
    row = {"baseline": _rmse(baseline * scale, truth * scale)}
    for name, parts in CANDIDATES.items():
        row[name] = _rmse(np.mean([members[p] for p in parts], axis=0) * scale, truth * scale)
    return row


def real_rows() -> list[tuple[str, dict[str, float]]]:
    """(set-and-pairs label, scores) per real task."""
    from stfuse.fusion.radiometry import harmonize
    from stfuse.output.io import read_reflectance

    rows = []
    for task in build_tasks():
        read = lambda p: read_reflectance(p).values  # noqa: E731
        fine = np.stack([read(p["fine"]) for p in task["pairs"]])
        coarse = np.stack([read(p["coarse"]) for p in task["pairs"]])
        coarse, target, _ = harmonize(fine, coarse, read(task["target"]["coarse"]))
        near = task["pairs"].index(nearest_pair(task))
        baseline = fine[near] + target - coarse[near]
        members = _members(fine, coarse, target)
        rows.append((f"{task['set']}, {len(task['pairs'])} pair(s)", _score(members, baseline, read(task["truth"]), task["truth_scale"])))
        print(task["id"], flush=True)
    return rows


def sim_rows(n_scenes: int) -> list[tuple[str, dict[str, float]]]:
    """Scores per held-out simulated day (one- and two-pair days of ``n_scenes`` scenes)."""
    from stfuse.sim.days import simulated_days

    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence([5, 99]).spawn(n_scenes)]
    rows = []
    for day in simulated_days(seeds, 128):
        # the pair whose coarse image is closest to the target's stands for "nearest in date"
        near = int(np.argmin([np.nanmean(np.abs(day.coarse_target - c)) for c in day.coarse]))
        baseline = day.fine[near] + day.coarse_target - day.coarse[near]
        members = _members(day.fine, day.coarse, day.coarse_target)
        rows.append((f"simulator, {day.fine.shape[0]} pair(s)", _score(members, baseline, day.truth, 1.0)))
    return rows


def markdown(rows: list[tuple[str, dict[str, float]]]) -> str:
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for label, row in rows:
        groups[label].append(row)
    names = list(CANDIDATES)
    lines = ["| set, pairs | tasks | baseline RMSE | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    ratios: dict[str, list[float]] = defaultdict(list)
    for label in sorted(groups):
        base = float(np.mean([r["baseline"] for r in groups[label]]))
        cells = []
        for n in names:
            ratio = float(np.mean([r[n] for r in groups[label]])) / base
            ratios[n].append(ratio)
            cells.append(f"{ratio:.3f}")
        lines.append(f"| {label} | {len(groups[label])} | {base:.5f} | " + " | ".join(cells) + " |")
    lines.append("| **mean over sets** | | | " + " | ".join(f"**{np.mean(ratios[n]):.3f}**" for n in names) + " |")
    lines.append("| **worst set** | | | " + " | ".join(f"**{np.max(ratios[n]):.3f}**" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tools/default_study.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=30, help="simulated scenes (one 1-pair and one 2-pair day each)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    table = markdown(real_rows() + sim_rows(args.scenes))
    print(table)
    if args.out:
        args.out.write_text("# Default method: candidates on the simulator and every real set\n\n"
                            "RMSE of each candidate (plain mean of its members) divided by the RMSE of `fine + coarse change` "
                            "(nearest pair), mean over the set's tasks. `python tools/default_study.py` wrote this file.\n\n" + table)


if __name__ == "__main__":
    main()
