"""``stfuse quicklook``: a PNG of any raster (a prediction, a Landsat or truth file)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import overwrite_opt


@click.command()
@click.argument("raster", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write (default: RASTER with suffix .png).")
@click.option("--bands", help="1 or 3 comma-separated band names or 1-based numbers, e.g. nir08,red,green or 4,3,2.")
@click.option("--percentiles", nargs=2, type=float, default=(2.0, 98.0), show_default=True, metavar="LOW HIGH",
              help="Stretch: these percentiles of the valid pixels map to black and white.")
@click.option("--max-size", type=click.IntRange(16), default=2048, show_default=True,
              help="Longest side of the PNG in pixels (the raster is decimated to fit).")
@overwrite_opt
def quicklook(raster: Path, output: Path | None, bands: str | None, percentiles: tuple[float, float], max_size: int,
              overwrite: bool) -> None:
    """Write a PNG of RASTER: true colour when it has red, green and blue bands, else its first band in grey.

    \b
      stfuse quicklook out/stfuse_2023-06-14.tif -o day.png
      stfuse quicklook out/stfuse_2023-06-14.tif -o nir.png --bands nir08,red,green
    One PNG pixel per raster pixel (decimated above --max-size); nodata is transparent.
    Needs the report extra: pip install 'stfuse[report]'.
    """
    from stfuse.evaluate.report import quicklook as render

    out = output or raster.with_suffix(".png")
    names = [b.strip() for b in bands.split(",") if b.strip()] if bands else None
    path = render(raster, out, bands=names, percentiles=percentiles, max_size=max_size, overwrite=overwrite)
    click.echo(f"wrote {path}")
