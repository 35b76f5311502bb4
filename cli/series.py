"""``stfuse series``: a pixel's daily series with sigma from the outputs of ``stfuse predict``."""

from __future__ import annotations

from pathlib import Path

import click

from .options import bands_opt, overwrite_opt, quiet_opt


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--point", "points", nargs=2, type=float, multiple=True, required=True, metavar="LON LAT",
              help="A point in lon/lat degrees (repeat for several).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV to write: date, lon, lat, row, col, then <band> and <band>_sigma per band, and quality.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the series (prediction ± 1 sigma) as a PNG (from a folder of daily COGs).")
@click.option("--catalog", help="With --png: draw this catalog's clear Landsat observations as dots "
                                "(the catalog predicted from; 'sample' for the bundled sample_scenes).")
@bands_opt
@overwrite_opt
@quiet_opt
def series(source: Path, points, output: Path, png: Path | None, catalog: str | None, bands, overwrite: bool, quiet: bool) -> None:
    """Daily reflectance, sigma and quality flags at points of SOURCE (the -o folder of
    `stfuse predict`, one of its COGs, or its stfuse.zarr), as CSV and optionally a PNG.

    \b
      stfuse series --point -98.80 38.35 out/ -o series.csv --png series.png
      stfuse series --point -98.80 38.35 --point -98.75 38.30 out/stfuse.zarr -o series.csv
    """
    from stfuse.errors import OutputError
    from stfuse.output.series import pixel_series, series_plot, write_series_csv

    if png is not None and png.exists() and not overwrite:  # every output check before any reading
        raise OutputError(f"{png} already exists; pass --overwrite to replace it")
    if output.exists() and not overwrite:
        raise OutputError(f"{output} already exists; pass --overwrite to replace it")
    rows = pixel_series(source, list(points), bands=bands)
    if png is not None:  # before the CSV: a source that cannot be drawn leaves nothing behind
        series_plot(source, list(points), png, bands=bands, observations=catalog is not None,
                    catalog=None if catalog in (None, "sample") else catalog)
    path = write_series_csv(rows, output, overwrite=overwrite)
    if not quiet:
        days = sorted({r["date"] for r in rows})
        click.echo(f"wrote {path} ({len(days)} day(s) {days[0]} .. {days[-1]} at {len(points)} point(s))"
                   + (f" and {png}" if png is not None else ""))
