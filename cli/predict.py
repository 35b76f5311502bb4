"""``stfuse predict``: catalog mode (default) and local-file mode (``--pair``/``--coarse``)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    OUTPUT_FLAGS,
    PAIR_FLAGS,
    QUERY_FLAGS,
    RUN_FLAGS,
    given_flags,
    method_options,
    overwrite_opt,
    pair_options,
    pop_fusion,
    pop_query,
    pop_run,
    query_options,
    quiet_opt,
    run_options,
)
from .progress import progress_reporter

LOCAL_FLAGS = ("pairs", "coarse_target", "target_date", "fine_qa", "coarse_qa", "no_qa")


@click.command()
@query_options
@click.option("--pair", "pairs", nargs=2, multiple=True, type=click.Path(path_type=Path), metavar="FINE COARSE",
              help="Local-file mode: a fine/coarse pair (repeat for 2 pairs). The fine files share one grid; a georeferenced coarse file "
                   "may be on its native grid (e.g. MODIS 463 m) and is resampled onto the fine grid (bilinear).")
@click.option("--coarse", "coarse_target", type=click.Path(path_type=Path), help="Local-file mode: coarse image of the target day (on the fine grid, or georeferenced on its own grid).")
@click.option("--date", "target_date", help="Local-file mode: target date for the STAC item, YYYY-MM-DD.")
@click.option("--fine-qa", "fine_qa", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="QA",
              help="Local-file mode: the Landsat QA_PIXEL file of each --pair's fine file, in --pair order (default: the one beside "
                   "it, ..._QA_PIXEL.TIF or <item>_qa_pixel.tif); its flagged pixels (cloud, shadow, cirrus, snow, fill) are masked.")
@click.option("--coarse-qa", "coarse_qa", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="QA",
              help="Local-file mode: a QA file for each coarse file, pairs' coarse files then --coarse, on that file's grid "
                   "(MCD43A4 mandatory quality, 0-1 good; or MOD09GA state_1km; default: the one beside a MODIS-named file).")
@click.option("--no-qa", "no_qa", is_flag=True, help="Local-file mode: use no QA file (by default the QA file beside each input masks it).")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), default=Path("out"), show_default=True,
              help="Output folder (catalog mode) or .tif file (local-file mode).")
@method_options
@pair_options
@run_options
@click.option("--strict", is_flag=True,
              help="Refuse days that fail a quality gate (mostly masked coarse image, far pairs, large change) instead of flagging them.")
@overwrite_opt
@quiet_opt
@click.pass_context
def predict(ctx: click.Context, output: Path, overwrite: bool, quiet: bool, pairs, coarse_target, target_date, fine_qa, coarse_qa,
            no_qa: bool, **params) -> None:
    """Predict daily 30 m reflectance with a per-pixel uncertainty band.

    \b
    Catalog mode (default) — search, load, predict every day, one COG per day:
      stfuse predict -o out/                       # bundled sample_scenes, offline
      stfuse predict --catalog planetary-computer --bbox -96.6 40.6 -96.4 40.8 \\
          --start 2023-06-01 --end 2023-06-30 -o out/
    \b
    Local-file mode — the classic STARFM workflow; coarse files on their own grid are resampled:
      stfuse predict --pair L_0524.tif M_0524.tif --coarse M_0711.tif -o pred.tif

    Outputs are float32 COGs (or --dtype int16, scaled by 1e-4): reflectance bands
    first, then <band>_sigma bands (1-sigma uncertainty), then a `quality` band of
    exact integer bit flags (1 coarse missing, 2 all pairs cloudy, 4 large change,
    8 observed: a Landsat date's clear pixel returned as is, sigma 0.005; 16 filled:
    a pair was cloudy there and a farther date filled it (--fill); never nodata),
    with a STAC item (.json) beside each file.
    """
    from stfuse.api import predict as run_catalog
    from stfuse.api import predict_files
    from stfuse.data.catalog import parse_date
    from stfuse.errors import InputError

    if pairs or coarse_target:
        if not (pairs and coarse_target):
            raise InputError("local-file mode needs both --pair FINE COARSE and --coarse TARGET")
        catalog_only = [f for f in RUN_FLAGS if f not in OUTPUT_FLAGS]
        wrong = given_flags(ctx, (*[f for f in QUERY_FLAGS if f != "bands"], *PAIR_FLAGS, *catalog_only, "strict"))
        if wrong:
            raise InputError(f"{wrong[0]} applies to catalog mode, not to local files (--pair/--coarse); drop it")
        bands = params.pop("bands")
        output_format = {k: params.pop(k) for k in OUTPUT_FLAGS}
        for key in (*QUERY_FLAGS, *PAIR_FLAGS, *RUN_FLAGS, "strict"):
            params.pop(key, None)
        if no_qa and (fine_qa or coarse_qa):
            raise InputError("--no-qa uses no QA file; drop it or drop --fine-qa/--coarse-qa")
        out = predict_files(list(pairs), coarse_target, output, pop_fusion(params), bands=bands, overwrite=overwrite,
                            date=parse_date(target_date, name="--date") if target_date else None, qa=not no_qa,
                            fine_qa=list(fine_qa) or None, coarse_qa=list(coarse_qa) or None, **output_format)
        if not quiet:
            click.echo(f"wrote {out} (+ {out.with_suffix('.json').name})")
        return
    wrong = given_flags(ctx, ("target_date", "fine_qa", "coarse_qa", "no_qa"))
    if wrong:
        raise InputError(f"{wrong[0]} applies to local-file mode (--pair/--coarse) only; catalog mode dates each day itself "
                         "and masks clouds with each item's QA asset")
    query = pop_query(params)
    fusion = pop_fusion(params, strict=params.pop("strict"))
    run = pop_run(params, out_dir=output, overwrite=overwrite)
    with progress_reporter("predicting days", quiet=quiet) as progress:
        outputs = run_catalog(query, fusion, run, progress=progress)
    if not quiet:
        click.echo(summary(outputs, output))


def summary(outputs, output: Path) -> str:
    """What a catalog run did, truthfully: days written now and days already complete, and the
    run's first .. last day (from ``outputs.days``, else the COG names)."""
    cogs = [p for p in outputs if p.suffix == ".tif"]
    stores = [str(p) for p in outputs if p.suffix == ".zarr"]
    run_days = [d.isoformat() for d in getattr(outputs, "days", ())] or [p.stem[7:] for p in cogs]
    days = f"{run_days[0]} .. {run_days[-1]}" if run_days else ""
    what = " and ".join(x for x in ("daily COGs with STAC items" if cogs else "", f"Zarr store {', '.join(stores)}" if stores else "") if x)
    skipped = getattr(outputs, "days_skipped", 0)
    done = f"wrote {outputs.days_written} day(s)" if hasattr(outputs, "days_written") else "wrote the days"
    return (f"{done}{f', skipped {skipped} already complete' if skipped else ''}{f' ({days})' if days else ''}: {what} in {output}/")
