"""``stfuse sample``: regenerate the simulated sample catalog."""

from __future__ import annotations

from pathlib import Path

import click

from .options import overwrite_opt


@click.command()
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("sample_scenes"), show_default=True, help="Folder for the catalog.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the simulator.")
@overwrite_opt
def sample(out_dir: Path, seed: int, overwrite: bool) -> None:
    """Write a simulated Landsat + MODIS STAC catalog of COGs (deterministic per seed).

    Commands run without --catalog use the default sample (seed 0): the checkout's sample_scenes/,
    else $STFUSE_SAMPLE_DIR or ~/.cache/stfuse/sample_scenes, written there on first use (about 20 s).
    """
    from dataclasses import replace

    from stfuse.sim.sample import write_sample_catalog
    from stfuse.sim.synth import SceneSpec

    path = write_sample_catalog(out_dir, replace(SceneSpec(), seed=seed), overwrite=overwrite)
    click.echo(f"wrote {path}")
