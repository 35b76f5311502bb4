"""``stfuse evaluate``: score a prediction against a truth image."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import json_opt


@click.command()
@click.argument("prediction", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@json_opt
def evaluate(prediction: Path, truth: Path, as_json: bool) -> None:
    """Per-band RMSE, MAE, bias, CC, SSIM, PSNR, and ERGAS, SAM of PREDICTION against TRUTH.

    The prediction's first bands are compared with the truth's bands in order; further
    bands (the *_sigma uncertainty bands) give the 68/95% interval coverage.
    """
    from stfuse.evaluation import evaluate_files
    from stfuse.metrics import format_table

    result = evaluate_files(prediction, truth)
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(format_table(result))
        if result.get("coverage"):
            cov = result["coverage"]
            click.echo("interval coverage: " + ", ".join(f"{float(k):.0%}: {v:.1%}" for k, v in cov.items()))
