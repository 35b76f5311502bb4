"""``stfuse region``: run a batch region file (resumable)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import quiet_opt
from .progress import progress_reporter


@click.command()
@click.argument("region_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), help="Output folder (default: out/regions/NAME).")
@click.option("--scheduler", help="Dask scheduler: 'local' or tcp://HOST:PORT (default: threads).")
@quiet_opt
def region(region_file: Path, out_dir: Path | None, scheduler: str | None, quiet: bool) -> None:
    """Fuse the area and dates of REGION_FILE (YAML; see regions/README.md).

    Resumable: days already complete in the outputs are skipped, so re-running after an
    interruption only computes what is missing.
    """
    from stfuse.regions import load_region, run_region

    name = load_region(region_file).name
    out_dir = out_dir or Path("out") / "regions" / name
    with progress_reporter(f"region {name}", quiet=quiet) as progress:
        outputs = run_region(region_file, out_dir, scheduler=scheduler, progress=progress)
    if not quiet:
        from .predict import summary

        click.echo(f"region {name}: {summary(outputs, out_dir)}")
