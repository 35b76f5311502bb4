"""Options shared by several commands, defined once (as rasterio's rio does)."""

from __future__ import annotations

from pathlib import Path

import click

from stfuse.data.bands import BANDS


def _split_bands(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    from stfuse.data.sensors import check_bands
    from stfuse.errors import BandError

    bands = [b.strip() for b in value.split(",") if b.strip()]
    try:
        return list(check_bands(bands))
    except BandError as err:
        raise click.BadParameter(str(err), ctx, param) from None


bands_opt = click.option(
    "--bands",
    callback=_split_bands,
    help=f"Comma-separated bands to fuse (default: all of {','.join(BANDS)}).",
)
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
method_opt = click.option(
    "--method",
    type=click.Choice(["auto", "blend", "starfm", "estarfm", "fsdaf", "fitfc", "kalman"]),
    default="auto",
    show_default=True,
    help="Physics prior. auto = blend: the mean of Fit-FC, FSDAF and fine + coarse change (the best mean over the "
    "simulator and the real test sets, better than fine + coarse change on each; 3-4x the time of starfm). "
    "starfm, fsdaf, fitfc: one method (1 or more pairs); estarfm: 2 pairs (days with 1 pair fall back to starfm). "
    "kalman: the time-series engine, every clear Landsat date and every MODIS day in each day's prediction (a Kalman "
    "smoother of fine minus coarse; catalog mode and --holdout only; --max-pairs/--fill do not apply).",
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
    type=click.Choice(["modis-43A4-061", "modis-09GA-061", "VNP43IA4", "VJ143IA4", "VNP43MA4", "VJ143MA4"]),
    help="Coarse collection: modis-43A4-061 (MCD43A4 NBAR; the default for dates up to 2026-08-31, the end of MODIS), "
    "modis-09GA-061 (MOD09GA daily), or VIIRS NBAR: VNP43IA4/VJ143IA4 (500 m: red, nir08, swir16), VNP43MA4/VJ143MA4 "
    "(1 km, six bands); after 2026-08-31 the default is VNP43IA4 when it has every band asked for, else VNP43MA4.",
)
fine_collection_opt = click.option(
    "--fine-collection",
    type=click.Choice(["landsat-c2-l2", "hls2-l30", "hls2-s30", "sentinel-2-l2a", "sentinel-2-c1-l2a"]),
    help="Fine collection: landsat-c2-l2 (default), HLS v2 hls2-l30/hls2-s30, or Sentinel-2 L2A sentinel-2-l2a/sentinel-2-c1-l2a "
    "(30 m grid; Sentinel-2 averaged from 10/20 m, its baseline 04.00 offset taken from each item).",
)
refine_opt = click.option(
    "--refine", type=click.Choice(["none", "shipped", "scene"]), default="none", show_default=True,
    help="Hybrid prior + CNN refiner: shipped weights, or learned on the scene (scene). scene with --method auto and "
    "3+ usable Landsat dates (catalog mode): each usable date is predicted from the others and the weights of "
    "Fit-FC, FSDAF, fine + coarse change, the shipped hybrid and STARFM, and sigma's scale, are fitted on those dates "
    "(kept only if they beat the default blend on dates left out; tag `calibration`: series); otherwise scene "
    "adapts the refiner to 2 pairs. With --method auto the prior is the Fit-FC + FSDAF ensemble. With shipped weights, sigma's "
    "scale is fitted on the pairs predicting each other (one pair, catalog mode: the pair and the nearest other "
    "clear date; tag `calibration`: scene_scale, scene_dates).",
)
mc_samples_opt = click.option("--mc-samples", type=click.IntRange(1, 256), default=8, show_default=True,
                              help="Monte Carlo dropout passes of the refiner.")
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Random seed (refiner training and dropout; k-means).")
variance_scale_opt = click.option(
    "--variance-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
    help="Extra factor on the predicted variance (sigma^2). By default the method's own calibration factor (fitted "
    "on simulated days; the hybrid's fitted on the pairs) is applied and recorded in the `calibration` tag; this "
    "multiplies the variance on top of it (1 = no extra factor), e.g. by the scale `stfuse evaluate --holdout` fits "
    "on withheld Landsat dates for your area. Recorded in the `calibration` tag too.",
)


# --------------------------------------------------------------------------- option groups
# Each group is declared once and builds one request object of stfuse.config, so `predict`,
# `evaluate --holdout` and `search` read the same flags the same way.


def _apply(*decorators):
    def wrap(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return wrap


QUERY_FLAGS = ("catalog", "bbox", "aoi", "start", "end", "bands", "crs", "coarse_collection", "fine_collection", "dates", "every")
query_options = _apply(
    click.option("--catalog", help="Static STAC catalog (path) or STAC API (URL or provider name). Default: the bundled sample_scenes."),
    click.option("--bbox", nargs=4, type=float, metavar="MINX MINY MAXX MAXY", help="Area in lon/lat degrees."),
    click.option("--aoi", type=click.Path(dir_okay=False, path_type=Path), help="Area as a GeoJSON file (instead of --bbox)."),
    click.option("--start", help="First day, YYYY-MM-DD (default: start of the data)."),
    click.option("--end", help="Last day, YYYY-MM-DD (default: end of the data)."),
    bands_opt,
    click.option("--crs", help="Output grid CRS (default: the Landsat items' UTM zone)."),
    coarse_collection_opt,
    fine_collection_opt,
    click.option("--dates", metavar="YYYY-MM-DD,...",
                 help="Predict only these days, comma-separated (--start/--end default to the first/last of them)."),
    click.option("--every", type=click.IntRange(1), metavar="N",
                 help="Predict every N-th day from --start (or the start of the data): 1 = every day."),
)

PAIR_FLAGS = ("max_pairs", "max_fill", "min_clear", "max_gap_days", "observed")
pair_options = _apply(
    click.option("--max-pairs", type=click.IntRange(1, None), default=2, show_default=True,
                 help="Pairs per target day: the nearest before and after; more than 2 adds the next nearest dates on either side, "
                 "used at every pixel (time grows with the number of pairs; for cloudy scenes --fill does better, "
                 "docs/methods.md)."),
    click.option("--fill", "max_fill", type=click.IntRange(0, None), default=3, show_default=True,
                 metavar="N", help="Fill each pair's cloudy pixels from up to N farther Landsat dates on the same side of the "
                 "target, nearest first, so every pixel's pair is its nearest clear observation (quality bit 16); 0: no filling."),
    click.option("--min-clear", type=click.FloatRange(0, 1), default=0.05, show_default=True,
                 help="Minimum clear fraction for a Landsat image to serve as a pair (or fill one)."),
    click.option("--max-gap", "max_gap_days", type=int, help="Ignore pairs more than this many days from the target."),
    click.option("--observed/--no-observed", default=True, show_default=True,
                 help="On a Landsat date, return its clear pixels as observed (sigma 0.005, quality bit 8) and predict only "
                 "the cloudy ones; --no-observed predicts every pixel."),
)

METHOD_FLAGS = ("method", "window", "refine", "weights", "mc_samples", "seed", "variance_scale", "device")
method_options = _apply(
    method_opt,
    click.option("--window", type=int, help="Moving-window size in fine pixels (odd; method default if unset)."),
    refine_opt,
    click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
                 help="Refiner checkpoint from `stfuse train` to use instead of the shipped weights (with --refine)."),
    mc_samples_opt,
    seed_opt,
    variance_scale_opt,
    device_opt,
)

RUN_FLAGS = ("formats", "resume", "tile", "scheduler", "workers", "threads", "memory_limit", "cache", "dtype", "compress")
OUTPUT_FLAGS = ("dtype", "compress")
"""Run flags that local-file mode takes too."""
run_options = _apply(
    click.option("--format", "formats", default="cog", show_default=True, help="Catalog mode outputs: cog, zarr or cog,zarr."),
    click.option("--resume", is_flag=True, help="Skip days already complete in the outputs; recompute incomplete ones."),
    click.option("--tile", type=click.IntRange(64), default=1024, show_default=True, help="Tile side in pixels (plus the method's halo) for dask."),
    click.option("--scheduler", help="Dask scheduler: 'local' for a LocalCluster, or tcp://HOST:PORT of an existing cluster (default: threads)."),
    click.option("--workers", type=int, help="LocalCluster worker processes (with --scheduler local)."),
    click.option("--threads", type=int, help="Threads (per worker)."),
    click.option("--memory-limit", help="Memory per LocalCluster worker, e.g. 4GB."),
    cache_opt,
    click.option("--dtype", type=click.Choice(["float32", "int16"]), default="float32", show_default=True,
                 help="Output data type. int16: reflectance and sigma x 10000 with the band scale 1e-4 set (GDAL/rasterio "
                 "users get reflectance with the scale), nodata -32768; about half the size. quality stays exact flags."),
    click.option("--compress", type=click.Choice(["zstd", "deflate", "lzw", "none"]), default="zstd", show_default=True,
                 help="COG compression (zstd at level 1; deflate for older GDAL readers)."),
)


def pop_query(params: dict):
    """A :class:`stfuse.Query` from the query flags in ``params`` (removed from it)."""
    from stfuse.config import Query

    values = {k: params.pop(k) for k in QUERY_FLAGS if k in params}
    values["bbox"] = values.get("bbox") or None
    return Query(**values)


def pop_fusion(params: dict, **extra):
    """A :class:`stfuse.FusionConfig` from the pair and method flags in ``params`` (removed from it)."""
    from stfuse.config import FusionConfig

    values = {k: params.pop(k) for k in (*PAIR_FLAGS, *METHOD_FLAGS) if k in params}
    return FusionConfig(**values, **extra)


def pop_run(params: dict, **extra):
    """A :class:`stfuse.RunConfig` from the run flags in ``params`` (removed from it)."""
    from stfuse.config import RunConfig

    values = {k: params.pop(k) for k in RUN_FLAGS if k in params}
    if isinstance(values.get("formats"), str):
        values["formats"] = tuple(f.strip() for f in values["formats"].split(",") if f.strip())
    return RunConfig(**values, **extra)


def given_flags(ctx: click.Context, names) -> list[str]:
    """The flags among ``names`` that the user typed (not defaults), as ``--flag-name``."""
    source = click.core.ParameterSource.COMMANDLINE
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    return [flags[n] for n in names if n in flags and ctx.get_parameter_source(n) == source]
