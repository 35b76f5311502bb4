"""The default against the two trivial baselines on every real task (issue #32).

For every leave-one-date-out task of ``tools/real_sets.py`` (one and two pairs), the default
(``stfuse.predict_files`` without a method, as a user runs it) is scored against ``fine + coarse
change`` and the nearest fine image as is, on the pixels valid in the truth and in all three; the
table gives each task's ratio default / min(the two baselines), the method the default ran (its
``method`` tag: ``blend``, or ``nearest-fine`` for inputs that are not the same quantity), and
the 95 % interval coverage of its sigma.

    .venv/bin/python tools/baseline_study.py                          # prints the markdown tables
    .venv/bin/python tools/baseline_study.py --out docs/benchmarks.md  # replaces its section there
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))
import real_sets  # noqa: E402


def run_task(task: dict[str, Any], work: Path) -> dict[str, Any]:
    """One task: the default's prediction scored against both baselines."""
    import rasterio

    import stfuse
    from stfuse.output.io import read_reflectance

    out = work / f"{task['id']}.tif"
    t0 = time.perf_counter()
    stfuse.predict_files([(p["fine"], p["coarse"]) for p in task["pairs"]], task["target"]["coarse"], out, overwrite=True)
    seconds = time.perf_counter() - t0
    with rasterio.open(out) as src:
        data, tags = src.read().astype(np.float64), src.tags()
    bands = (data.shape[0] - 1) // 2
    mean, sigma = data[:bands], data[bands:2 * bands]
    truth = read_reflectance(task["truth"]).values.astype(np.float64)
    base = real_sets.baseline_prediction(task)
    copy = real_sets.baseline_prediction(task, real_sets.COPY_FINE)
    ok = np.isfinite(truth) & np.isfinite(mean) & np.isfinite(base) & np.isfinite(copy) & np.isfinite(sigma)
    scale = task["truth_scale"]
    rmse = lambda p: float(np.sqrt(np.mean(((p - truth) * scale)[ok] ** 2)))  # noqa: E731
    return {"id": task["id"], "set": task["set"], "kind": task["kind"], "method": tags.get("method"),
            "default": rmse(mean), "baseline": rmse(base), "copy_fine": rmse(copy),
            "ratio": rmse(mean) / min(rmse(base), rmse(copy)),
            "coverage95": float(np.mean(np.abs(mean - truth)[ok] <= 1.96 * sigma[ok])), "seconds": round(seconds, 2),
            "units": json.loads(tags.get("units", "{}"))}


def study(benchmarks: Path = real_sets.DEFAULT_BENCHMARKS) -> tuple[str, list[dict[str, Any]]]:
    """All tasks; returns (markdown tables, rows)."""
    logging.getLogger("stfuse").setLevel(logging.ERROR)  # the per-file scale warnings of the benchmark files
    work = Path(tempfile.mkdtemp(prefix="stfuse-baselines-"))
    rows = [run_task(task, work) for task in real_sets.build_tasks(benchmarks)]
    return markdown(rows), rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | pairs | default ran | default | fine + coarse change | nearest fine as is | default / min | 95 % cov. |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"**{r['ratio']:.3f}**" if r["ratio"] > 1.02 else f"{r['ratio']:.3f}"
        lines.append(f"| {r['id']} | {r['kind']} | {r['method']} | {r['default']:.5f} | {r['baseline']:.5f} | {r['copy_fine']:.5f} | "
                     f"{ratio} | {100 * r['coverage95']:.1f}% |")
    lines += ["", "| set | tasks | mean default / min | worst | tasks above 1.02 | mean 95 % coverage |", "|---|---|---|---|---|---|"]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    for name in sets:
        chosen = [r for r in rows if r["set"] == name]
        ratios = [r["ratio"] for r in chosen]
        lines.append(f"| {name} | {len(chosen)} | {np.mean(ratios):.3f} | {max(ratios):.3f} | {sum(x > 1.02 for x in ratios)} | "
                     f"{100 * np.mean([r['coverage95'] for r in chosen]):.1f}% |")
    all_ratios = [np.mean([r["ratio"] for r in rows if r["set"] == name]) for name in sets]
    lines.append(f"| mean over sets | {len(rows)} | {np.mean(all_ratios):.3f} | {max(r['ratio'] for r in rows):.3f} | "
                 f"{sum(r['ratio'] > 1.02 for r in rows)} | {100 * np.mean([r['coverage95'] for r in rows]):.1f}% |")
    return "\n".join(lines)


HEADING = "## The default against the trivial baselines, every real task (issue #32)"


def section(text: str, seconds: float, machine: str, command: str) -> str:
    """The docs/benchmarks.md section."""
    return "\n".join([
        "", HEADING, "",
        f"Measured {time.strftime('%Y-%m-%d')} with `{command}` ({seconds / 60:.1f} min) on: {machine}.",
        "Every leave-one-date-out task of `tools/real_sets.py` through `stfuse.predict_files` without a method (what a user",
        "runs); scored on the pixels valid in the truth and in the three predictions, RMSE in the set's units (realset1: DN",
        "/ 1e4). `default ran`: the output's method tag (`nearest-fine` where the inputs are not the same quantity,",
        "docs/methods.md \"Inputs that are not the same quantity\"). Bold: more than 2 % above the better trivial baseline.",
        "The \"Real sets\" section above was measured before issues #28 and #32 (realset1's default was the blend there,",
        "CIA's coarse_factor 16); this section is the default as it now runs.",
        "", text, ""])


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="replace this section of a benchmarks markdown file (and its .json key)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    text, rows = study()
    if args.out is None:
        print(text)
        return
    import bench

    markdown_text = section(text, time.perf_counter() - t0, bench.machine_description(), "tools/baseline_study.py --out docs/benchmarks.md")
    bench._write_section(args.out, HEADING, markdown_text, "baselines", {"rows": rows})


if __name__ == "__main__":
    main()
