"""Options shared by several commands, defined once (as rasterio's rio does)."""

from __future__ import annotations

from pathlib import Path

import click

from stfuse.data.sensors import BANDS


def _split_bands(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    bands = [b.strip() for b in value.split(",") if b.strip()]
    unknown = [b for b in bands if b not in BANDS]
    if unknown:
        raise click.BadParameter(f"unknown band {unknown[0]!r}; choose from {', '.join(BANDS)}", ctx, param)
    return bands


bands_opt = click.option(
    "--bands",
    callback=_split_bands,
    help=f"Comma-separated bands to fuse (default: all of {','.join(BANDS)}).",
)
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
method_opt = click.option(
    "--method",
    type=click.Choice(["starfm", "estarfm", "fsdaf", "fitfc", "auto"]),
    default="starfm",
    show_default=True,
    help="Physics prior: starfm (1+ pairs), estarfm (2 pairs), fsdaf / fitfc (1 pair), auto (by pairs).",
)
device_opt = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where torch runs; auto uses CUDA when available.",
)
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress output.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
cache_opt = click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the loaded Landsat/MODIS cubes in this folder (Zarr) and reuse them when the same query "
    "finds the same items again, so a re-run reads no remote COG. Entries are never deleted: "
    "remove the folder (or old entries in it) to free space.",
)
coarse_collection_opt = click.option(
    "--coarse-collection",
    type=click.Choice(["modis-43A4-061", "modis-09GA-061"]),
    help="Coarse (MODIS) collection: modis-43A4-061 (MCD43A4 NBAR, default) or modis-09GA-061 (MOD09GA daily).",
)
refine_opt = click.option(
    "--refine", type=click.Choice(["none", "shipped", "scene"]), default="none", show_default=True,
    help="Hybrid prior + CNN refiner: shipped weights, or adapted to the pairs (scene, with 2 pairs). "
    "With --method auto the prior is the Fit-FC + FSDAF ensemble (recommended). With shipped weights, sigma's "
    "scale is fitted on the pairs predicting each other (one pair, catalog mode: the pair and the nearest other "
    "clear date; tag `calibration`: scene_scale, scene_dates).",
)
mc_samples_opt = click.option("--mc-samples", type=click.IntRange(1, 256), default=8, show_default=True,
                              help="Monte Carlo dropout passes of the refiner.")
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Random seed (refiner training and dropout; k-means).")
variance_scale_opt = click.option(
    "--variance-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
    help="Multiply the predicted variance (sigma^2) by this factor: a calibration for your area, e.g. the "
    "scale `stfuse evaluate --holdout` fits on withheld Landsat dates. Recorded in the output tags.",
)
