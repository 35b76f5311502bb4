"""``make report``: regenerate the README figures (docs/images) from the sample catalog.

    .venv/bin/python tools/report.py [OUT_DIR] [--work DIR] [--no-timeseries]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stfuse.evaluate.report import holdout_chart, holdout_report, quicklook_panel, reliability_diagram, timeseries_plot

PathLike = str | Path


def docs_images(out_dir: PathLike = "docs/images", *, work_dir: PathLike = "out/report", timeseries: bool = True) -> list[Path]:
    """Regenerate the README figures from sample_scenes (``make report``).

    Runs the holdout on the bundled sample (all bands, the default method) with its full report in
    ``work_dir``, then writes compact copies to ``out_dir``: ``quicklook.png``,
    ``reliability.png``, ``holdout_metrics.png`` and (``timeseries``) ``timeseries.png`` from
    a short ``stfuse predict`` run. Returns the figures written to ``out_dir``.
    """
    from stfuse.api import predict
    from stfuse.evaluate.holdout import holdout, write_holdout

    out_dir, work_dir = Path(out_dir), Path(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = holdout()
    write_holdout(result, work_dir, predictions=False, overwrite=True)
    holdout_report(result, work_dir, overwrite=True)
    day = max(result.days, key=lambda d: d.clear_fraction if len(d.pairs) == 2 else 0)
    pairs = " + ".join(p.isoformat() for p in day.pairs)
    written = [
        quicklook_panel(day.truth, day.mean, day.sigma, result.band_names, out_dir / "quicklook.png", max_px=200, panel_inches=2.4,
                        title=f"sample_scenes: Landsat {day.date} withheld, {day.method} from {pairs}"),
        reliability_diagram(*(np.concatenate([getattr(d, a).reshape(len(result.band_names), -1) for d in result.days], axis=1)
                              for a in ("mean", "sigma", "truth")),
                            result.band_names, out_dir / "reliability.png", title="sample_scenes holdout: reliability"),
        holdout_chart(result.rows(), out_dir / "holdout_metrics.png", title=f"sample_scenes holdout ({day.method})"),
    ]
    if timeseries:
        series = work_dir / "timeseries"
        predict(start="2023-06-01", end="2023-08-03", bands=["red", "nir08"], out_dir=series, overwrite=True)
        written.append(timeseries_plot(series, None, [(120, 80), (300, 260)], out_dir / "timeseries.png"))
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and write the figures; prints each file written."""
    parser = argparse.ArgumentParser(prog="tools/report.py", description=docs_images.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", default="docs/images")
    parser.add_argument("--work", default="out/report", help="folder for the full holdout report (default out/report)")
    parser.add_argument("--no-timeseries", action="store_true", help="skip the time-series figure (needs a predict run)")
    args = parser.parse_args(argv)
    for path in docs_images(args.out_dir, work_dir=args.work, timeseries=not args.no_timeseries):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
