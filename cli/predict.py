"""``stfuse predict``: catalog mode (default) and local-file mode (``--pair``/``--coarse``)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (bands_opt, cache_opt, coarse_collection_opt, device_opt, mc_samples_opt, method_opt, overwrite_opt, quiet_opt,
                      refine_opt, seed_opt, variance_scale_opt)
from .progress import progress_reporter


@click.command()
@click.option("--catalog", help="Static STAC catalog (path) or STAC API (URL or provider name). Default: the bundled sample_scenes.")
@click.option("--bbox", nargs=4, type=float, metavar="MINX MINY MAXX MAXY", help="Area in lon/lat degrees.")
@click.option("--aoi", type=click.Path(dir_okay=False, path_type=Path), help="Area as a GeoJSON file (instead of --bbox).")
@click.option("--start", help="First day to predict, YYYY-MM-DD (default: start of the data).")
@click.option("--end", help="Last day to predict, YYYY-MM-DD (default: end of the data).")
@click.option("--pair", "pairs", nargs=2, multiple=True, type=click.Path(path_type=Path), metavar="FINE COARSE", help="Local-file mode: a fine/coarse pair (repeat for 2 pairs).")
@click.option("--coarse", "coarse_target", type=click.Path(path_type=Path), help="Local-file mode: coarse image of the target day.")
@click.option("--date", "target_date", help="Local-file mode: target date for the STAC item, YYYY-MM-DD.")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), default=Path("out"), show_default=True, help="Output folder (catalog mode) or .tif file (local-file mode).")
@bands_opt
@method_opt
@click.option("--window", type=int, help="Moving-window size in fine pixels (odd; method default if unset).")
@click.option("--max-pairs", type=click.IntRange(1, 2), default=2, show_default=True, help="Pairs per target day (nearest before and after).")
@click.option("--min-clear", type=click.FloatRange(0, 1), default=0.3, show_default=True, help="Minimum clear fraction for a Landsat image to serve as a pair.")
@click.option("--max-gap", "max_gap_days", type=int, help="Ignore pairs more than this many days from the target.")
@click.option("--crs", help="Output CRS (default: the Landsat items' UTM zone).")
@click.option("--format", "formats", default="cog", show_default=True, help="Catalog mode outputs: cog, zarr or cog,zarr.")
@click.option("--resume", is_flag=True, help="Skip days already complete in the outputs; recompute incomplete ones.")
@click.option("--tile", type=click.IntRange(64), default=1024, show_default=True, help="Tile side in pixels (plus the method's halo) for dask.")
@click.option("--scheduler", help="Dask scheduler: 'local' for a LocalCluster, or tcp://HOST:PORT of an existing cluster (default: threads).")
@click.option("--workers", type=int, help="LocalCluster worker processes (with --scheduler local).")
@click.option("--threads", type=int, help="Threads (per worker).")
@click.option("--memory-limit", help="Memory per LocalCluster worker, e.g. 4GB.")
@refine_opt
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Refiner checkpoint from `stfuse train` to use instead of the shipped weights (with --refine).")
@mc_samples_opt
@seed_opt
@variance_scale_opt
@click.option("--strict", is_flag=True, help="Refuse days that fail a quality gate (mostly masked coarse image, far pairs, large change) instead of flagging them.")
@device_opt
@overwrite_opt
@quiet_opt
@cache_opt
@coarse_collection_opt
def predict(catalog, bbox, aoi, start, end, pairs, coarse_target, target_date, output, bands, method, window, max_pairs, min_clear, max_gap_days, crs, formats, resume, tile, scheduler, workers, threads, memory_limit, refine, weights, mc_samples, seed, variance_scale, strict, device, overwrite, quiet, cache, coarse_collection) -> None:
    """Predict daily 30 m reflectance with a per-pixel uncertainty band.

    \b
    Catalog mode (default) — search, load, predict every day, one COG per day:
      stfuse predict -o out/                       # bundled sample_scenes, offline
      stfuse predict --catalog planetary-computer --bbox -96.6 40.6 -96.4 40.8 \\
          --start 2023-06-01 --end 2023-06-30 -o out/
    \b
    Local-file mode — the classic STARFM workflow on rasters sharing one grid:
      stfuse predict --pair L_0524.tif M_0524.tif --coarse M_0711.tif -o pred.tif

    Outputs are float32 COGs: reflectance bands first, then <band>_sigma bands
    (1-sigma uncertainty), then a `quality` band of bit flags (1 coarse missing,
    2 all pairs cloudy, 4 large change), with a STAC item (.json) beside each file.
    """
    from stfuse.api import predict as run_catalog, predict_files
    from stfuse.data.catalog import parse_date
    from stfuse.errors import InputError

    device = _resolve_device(device)
    options = {"window": window} if window else None
    if pairs or coarse_target:
        if not (pairs and coarse_target):
            raise InputError("local-file mode needs both --pair FINE COARSE and --coarse TARGET")
        out = predict_files(
            list(pairs), coarse_target, output, method=method, bands=bands,
            date=parse_date(target_date, name="--date") if target_date else None,
            device=device, options=options, refine=refine, mc_samples=mc_samples, seed=seed, weights=weights,
            variance_scale=variance_scale, overwrite=overwrite,
        )
        if not quiet:
            click.echo(f"wrote {out} (+ {out.with_suffix('.json').name})")
        return
    if bbox and aoi:
        raise InputError("give --bbox or --aoi, not both")
    with progress_reporter("predicting days", quiet=quiet) as progress:
        outputs = run_catalog(
            catalog=catalog, bbox=bbox or None, aoi=aoi, start=start, end=end, bands=bands, out_dir=output,
            method=method, max_pairs=max_pairs, min_clear=min_clear, max_gap_days=max_gap_days, crs=crs,
            device=device, options=options, formats=[f.strip() for f in formats.split(",") if f.strip()],
            overwrite=overwrite, resume=resume, tile=tile, scheduler=scheduler, workers=workers, threads=threads,
            memory_limit=memory_limit, strict=strict, progress=progress, cache=cache, coarse_collection=coarse_collection, refine=refine, mc_samples=mc_samples,
            seed=seed, weights=weights, variance_scale=variance_scale,
        )
    if not quiet:
        cogs = [p for p in outputs if p.suffix == ".tif"]
        if cogs:
            click.echo(f"wrote {len(cogs)} daily COGs ({cogs[0].name} .. {cogs[-1].name}) with STAC items to {output}/")
        for store in (p for p in outputs if p.suffix == ".zarr"):
            click.echo(f"wrote Zarr store {store}")


def _resolve_device(device: str) -> str:
    if device == "cpu":
        return device
    import torch

    from stfuse.errors import InputError

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return "cpu"
