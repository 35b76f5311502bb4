"""``stfuse evaluate``: score a prediction file, a benchmark task, or a leave-one-date-out holdout."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import click

from .options import bands_opt, device_opt, given_flags, json_opt, mc_samples_opt, method_opt, overwrite_opt, quiet_opt, refine_opt, seed_opt
from .progress import progress_reporter

_CATALOG_FLAGS = ("catalog", "bbox", "aoi", "start", "end", "bands", "min_clear", "max_pairs", "max_fill", "max_gap_days", "crs",
                  "compare_unfilled")


@click.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path), metavar="[PREDICTION TRUTH]")
@click.option("--task", help="Benchmark task id from MANIFEST.json: predict it (with --method) and score it.")
@click.option("--benchmarks", type=click.Path(path_type=Path), help="Folder holding the task set's MANIFEST.json (read only).")
@click.option("--holdout", is_flag=True, help="Withhold each clear Landsat date of a catalog query in turn, predict it, score it.")
@click.option("--catalog", help="--holdout: static STAC catalog (path) or STAC API (URL or provider name). Default: sample_scenes.")
@click.option("--bbox", nargs=4, type=float, metavar="MINX MINY MAXX MAXY", help="--holdout: area in lon/lat degrees.")
@click.option("--aoi", type=click.Path(dir_okay=False, path_type=Path), help="--holdout: area as a GeoJSON file.")
@click.option("--start", help="--holdout: first day of the period, YYYY-MM-DD.")
@click.option("--end", help="--holdout: last day of the period, YYYY-MM-DD.")
@bands_opt
@method_opt
@click.option("--max-pairs", type=click.IntRange(1, None), default=2, show_default=True,
              help="--holdout: pairs per withheld date (more than 2: the next nearest dates too).")
@click.option("--fill", "max_fill", type=click.IntRange(0, None), default=3, show_default=True, metavar="N",
              help="--holdout: fill each pair's cloudy pixels from up to N farther dates (as predict --fill).")
@click.option("--compare-unfilled", is_flag=True,
              help="--holdout: also predict each date from its pairs without gap filling and report both RMSEs per date.")
@click.option("--min-clear", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="--holdout: minimum clear fraction of a Landsat date to be withheld or used as a pair.")
@click.option("--max-gap", "max_gap_days", type=int, help="--holdout: ignore pairs more than this many days away.")
@click.option("--crs", help="--holdout: grid CRS (default: the Landsat items' UTM zone).")
@click.option("--window", type=int, help="Moving-window size in fine pixels (odd; method default if unset).")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="--task: keep the prediction in this .tif. --holdout: folder for holdout.csv, predictions/ and the report.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write PNG figures and report.html to this folder.")
@click.option("--no-predictions", is_flag=True, help="--holdout: do not write the withheld dates' predictions (COGs) to -o.")
@click.option("--truth-qa", type=click.Path(dir_okay=False, path_type=Path),
              help="PREDICTION TRUTH: Landsat QA_PIXEL raster on the truth's grid; pixels it flags (fill, cloud, "
                   "dilated cloud, cirrus, shadow, snow) are not scored.")
@click.option("--no-truth-qa", is_flag=True, help="Score every truth pixel, also those the QA_PIXEL file beside the truth flags.")
@click.option("--force", is_flag=True,
              help="PREDICTION TRUTH: score although only one file has a CRS, and pair unnamed bands in order "
                   "when the prediction has as many reflectance bands as the truth.")
@refine_opt
@mc_samples_opt
@seed_opt
@device_opt
@overwrite_opt
@json_opt
@quiet_opt
@click.pass_context
def evaluate(ctx: click.Context, files: tuple[Path, ...], task: str | None, benchmarks: Path | None, holdout: bool,
             catalog: str | None, bbox: tuple[float, ...], aoi: Path | None, start: str | None, end: str | None,
             bands: list[str] | None, method: str, max_pairs: int, max_fill: int, compare_unfilled: bool, min_clear: float, max_gap_days: int | None,
             crs: str | None, window: int | None, output: Path | None, report_dir: Path | None, no_predictions: bool,
             truth_qa: Path | None, no_truth_qa: bool, force: bool, refine: str, mc_samples: int, seed: int, device: str, overwrite: bool, as_json: bool, quiet: bool) -> None:
    """Accuracy (RMSE, MAE, bias, CC, SSIM, PSNR per band; ERGAS, SAM) and 68/95% interval coverage.

    \b
    Three modes:
      stfuse evaluate PRED.tif TRUTH.tif                  # a prediction against a truth file
      stfuse evaluate --task estarfm-real-2pair --benchmarks ../shared/benchmarks [--method estarfm]
      stfuse evaluate --holdout -o report/                # sample_scenes, each Landsat date withheld
      stfuse evaluate --holdout --catalog planetary-computer --bbox ... --start ... --end ... -o report/

    PREDICTION TRUTH: bands are matched by name. The prediction's are its band descriptions
    (<band>_sigma and quality bands are never scored as reflectance); the truth's are --bands
    (its bands in order, e.g. --bands red,nir08), else its descriptions, else for one band its
    file name (red.tif, LC08_..._SR_B4.TIF). When either side has no names, bands are paired in
    order only if the prediction has exactly as many reflectance bands as the truth and both
    files are on one grid (as the benchmark tasks). The files must share CRS, transform and
    size; --force accepts a file without CRS. Cloudy truth pixels are left out: those flagged by
    --truth-qa, else by the QA_PIXEL file beside the truth (USGS or sample names; --no-truth-qa: none).
    The prediction's <band>_sigma bands give the interval coverage.
    --holdout writes DIR/holdout.csv (a row per date and band, plus band=all), DIR/holdout.json,
    DIR/predictions/*.tif and a report (PNGs + report.html) to -o DIR. --report DIR writes the figures and report.html.
    --holdout also fits a variance scale for the area on the withheld dates and reports the
    coverage it gives on dates it was not fitted on; apply it with
    `stfuse predict --variance-scale S`.
    """
    from stfuse.errors import InputError

    # --bands names the truth's bands with PREDICTION TRUTH; otherwise it is a --holdout flag
    catalog_given = given_flags(ctx, sorted(f for f in _CATALOG_FLAGS if not (files and f == "bands")))
    options = {"window": window} if window else None
    modes = [m for m, on in (("PREDICTION TRUTH", bool(files)), ("--task", task is not None), ("--holdout", holdout)) if on]
    if len(modes) > 1:
        raise InputError(f"give one of PREDICTION TRUTH, --task or --holdout, not {' and '.join(modes)}")
    if not files and (truth_qa is not None or no_truth_qa or force):
        flag = "truth-qa" if truth_qa is not None else "no-truth-qa" if no_truth_qa else "force"
        raise InputError(f"--{flag} applies only with PREDICTION TRUTH")
    if truth_qa is not None and no_truth_qa:
        raise InputError("give --truth-qa FILE or --no-truth-qa, not both")
    if not holdout and catalog_given:
        raise InputError(f"{catalog_given[0]} applies only with --holdout")
    if holdout:
        _holdout(catalog=catalog, bbox=bbox or None, aoi=aoi, start=start, end=end, bands=bands, method=method,
                 max_pairs=max_pairs, max_fill=max_fill, compare_unfilled=compare_unfilled, min_clear=min_clear, max_gap_days=max_gap_days, crs=crs, options=options,
                 refine=refine, mc_samples=mc_samples, seed=seed,
                 output=output, report_dir=report_dir, predictions=not no_predictions, device=device,
                 overwrite=overwrite, as_json=as_json, quiet=quiet, command=command_line(ctx))
        return
    if no_predictions:
        raise InputError("--no-predictions applies only with --holdout")
    if task is not None:
        if benchmarks is None:
            raise InputError("--task needs --benchmarks DIR, the folder holding MANIFEST.json (e.g. ../shared/benchmarks)")
        if output is not None and output.suffix.lower() not in (".tif", ".tiff"):
            raise InputError(f"with --task, -o is the prediction file and must end in .tif, got {output}")
        from stfuse.evaluate.tasks import evaluate_task

        result = evaluate_task(task, benchmarks, method=method, out=output, overwrite=overwrite,
                               device=device, options=options, report_dir=report_dir,
                               refine=refine, mc_samples=mc_samples, seed=seed, command=command_line(ctx))
        _print_scores(result, as_json, header=f"task {task}, method {result['method']}")
        if report_dir is not None and not as_json and not quiet:
            click.echo(f"wrote {report_dir / 'report.html'}")
        return
    if benchmarks is not None:
        raise InputError("--benchmarks applies only with --task")
    if len(files) != 2:
        raise InputError(f"give PREDICTION and TRUTH files ({len(files)} given), or --task ID, or --holdout")
    predicting = given_flags(ctx, ("device", "method", "window"))
    if predicting:
        raise InputError(f"{predicting[0]} applies to --task and --holdout (PREDICTION TRUTH scores an existing file)")
    if output is not None:
        raise InputError("-o applies to --task and --holdout; use --report DIR for figures of PREDICTION vs TRUTH")
    from stfuse.evaluate.files import evaluate_files

    prediction, truth = files
    from stfuse.evaluate.files import resolve_truth_qa

    truth_qa = resolve_truth_qa(truth, None if no_truth_qa else truth_qa or "auto")
    matching = {k: v for k, v in (("bands", bands), ("truth_qa", truth_qa), ("force", force)) if v}
    matching.setdefault("truth_qa", None)
    result = evaluate_files(prediction, truth, **matching)
    if report_dir is not None:
        from stfuse.evaluate.report import evaluation_report

        evaluation_report(prediction, truth, report_dir, result=result, overwrite=overwrite, command=command_line(ctx), **matching)
    matched = ", ".join(f"{b.get('name', b['band'])} = band {b['prediction_band']}" for b in result["bands"])
    qa = f"; {result['qa_masked_pixels']} truth pixels flagged by {truth_qa.name} left out" if truth_qa is not None else ""
    _print_scores(result, as_json, header=f"{prediction.name} vs {truth.name}, bands matched by {result['matched_by']}: {matched}{qa}")
    if report_dir is not None and not as_json and not quiet:
        click.echo(f"wrote {report_dir / 'report.html'}")


def command_line(ctx: click.Context) -> str:
    """The command as typed, rebuilt from what click parsed (arguments and the options given on
    the command line, in declaration order), shell-quoted: recorded in report.html."""
    words = ["stfuse", *ctx.command_path.split()[1:]]  # the console script, whatever the program name
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words += [str(v) for v in (value if isinstance(value, (tuple, list)) else (value,))]
            continue
        flag = max(param.opts, key=len)
        if isinstance(param, click.Option) and param.is_flag:
            words.append(flag if value else (max(param.secondary_opts, key=len) if param.secondary_opts else flag))
        elif isinstance(value, (tuple, list)) and param.nargs != 1:
            words += [flag, *map(str, value)]
        elif isinstance(value, (tuple, list)):  # multiple=True or a list-valued callback (--bands)
            words += [flag, ",".join(map(str, value))]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _print_scores(result: dict[str, Any], as_json: bool, header: str | None = None) -> None:
    from stfuse.evaluate.metrics import format_table, without_one_band_sam

    without_one_band_sam(result)  # a spectral angle needs 2+ bands
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    if header:
        click.echo(header)
    click.echo(format_table(result))
    if result.get("coverage"):
        cov = result["coverage"]
        click.echo("interval coverage: " + ", ".join(f"{float(k):.0%}: {v:.1%}" for k, v in cov.items()))


def _holdout(*, output: Path | None, report_dir: Path | None, predictions: bool, device: str, overwrite: bool,
             as_json: bool, quiet: bool, compare_unfilled: bool = False, command: str | None = None, **query: Any) -> None:
    from stfuse.errors import OutputError
    from stfuse.evaluate.holdout import format_holdout, holdout, write_holdout
    from stfuse.output.inspect import json_ready

    if query.get("bbox") and query.get("aoi"):
        from stfuse.errors import InputError

        raise InputError("give --bbox or --aoi, not both")
    if output is not None and (output / "holdout.csv").exists() and not overwrite:
        raise OutputError(f"{output / 'holdout.csv'} already exists; pass --overwrite to replace it")
    report_dir = report_dir or output
    with progress_reporter("withholding Landsat dates", quiet=quiet or as_json) as progress:
        result = holdout(**query, device=device, compare_unfilled=compare_unfilled, keep_arrays=report_dir is not None or (output is not None and predictions),
                         progress=progress)
    written = []
    if output is not None:
        written += write_holdout(result, output, predictions=predictions, overwrite=overwrite)
    if report_dir is not None:
        from stfuse.evaluate.report import holdout_report

        written.append(holdout_report(result, report_dir, overwrite=overwrite, command=command))
    if as_json:
        click.echo(json.dumps(json_ready({**result.summary(), "rows": result.rows(), "written": [str(p) for p in written]}), indent=1))
        return
    click.echo(format_holdout(result))
    if written and not quiet:
        click.echo(f"wrote {', '.join(str(p) for p in written if p.suffix in ('.csv', '.html'))} "
                   f"and {len(list(report_dir.glob('*.png'))) if report_dir else 0} figures ({result.seconds:.0f} s)")
