"""``stfuse info``: what a prediction COG or Zarr store written by stfuse holds (like ``rio info``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import json_opt


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@json_opt
def info(path: Path, as_json: bool) -> None:
    """Describe PATH, a prediction .tif or a .zarr store written by stfuse.

    \b
      stfuse info out/stfuse_2023-06-14.tif
      stfuse info out/stfuse.zarr --json

    Size, CRS, transform and resolution, bands (description, dtype), nodata, tags; the
    percentage of pixels with each quality flag; min / median / max of each <band>_sigma band.
    For a Zarr store: the same per variable over its complete days, and which days are complete.
    """
    from stfuse.output.inspect import describe, format_description, json_ready

    description = describe(path)
    if as_json:
        click.echo(json.dumps(json_ready(description), indent=1))
    else:
        click.echo(format_description(description))
