"""``stfuse search``: what Landsat and MODIS items a query finds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import coarse_collection_opt, fine_collection_opt, json_opt


@click.command()
@click.option("--catalog", "--provider", "catalog", help="Static catalog path, STAC API URL or provider name (default: sample_scenes).")
@click.option("--bbox", nargs=4, type=float, metavar="MINX MINY MAXX MAXY", help="Area in lon/lat degrees.")
@click.option("--aoi", type=click.Path(dir_okay=False, path_type=Path), help="Area as a GeoJSON file.")
@click.option("--start", help="First day, YYYY-MM-DD.")
@click.option("--end", help="Last day, YYYY-MM-DD.")
@click.option("--max-cloud", type=click.FloatRange(0, 100), help="Only Landsat items with eo:cloud_cover at most this (%).")
@coarse_collection_opt
@fine_collection_opt
@json_opt
def search(catalog, bbox, aoi, start, end, max_cloud, coarse_collection, fine_collection, as_json) -> None:
    """List the fine (Landsat, HLS, Sentinel-2) and coarse (MODIS, VIIRS) items a query finds: date, sensor, platform,
    cloud cover and item id (``--json`` for machines)."""
    from stfuse.data import catalog as cat

    query = cat.SearchQuery(
        start=cat.parse_date(start, name="--start") if start else None,
        end=cat.parse_date(end, name="--end") if end else None,
        bbox=cat.check_bbox(bbox) if bbox else None,
        aoi=cat.read_aoi(aoi) if aoi else None,
        max_cloud=max_cloud,
    )
    collections = cat.query_collections(catalog, coarse_collection, fine_collection, start=query.start, end=query.end)
    found = cat.search(catalog, query, collections)
    rows = cat.item_rows(found)
    if not rows:
        cat.require_items(found, collections[0], catalog, query)  # raises, saying what was searched
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'date':10}  {'collection':15} {'sensor':6} {'platform':11} {'cloud %':>7}  id")
    for r in rows:
        cloud = "" if r["cloud_cover"] is None else f"{r['cloud_cover']:.1f}"
        click.echo(f"{r['date']:10}  {r['collection']:15} {r['sensor']:6} {r['platform']:11} {cloud:>7}  {r['id']}")
    click.echo(f"{sum(r['collection'] == collections[0] for r in rows)} fine and "
               f"{sum(r['collection'] != collections[0] for r in rows)} coarse items")
