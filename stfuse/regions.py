"""Batch regions: YAML files naming an area, a date range and how to fuse it.

A region file (``regions/NAME.yaml``)::

    name: sample                 # defaults to the file name
    catalog: sample_scenes       # static catalog path (relative to the file), STAC API URL or provider name
    bbox: [-99.1, 40.0, -99.0, 40.1]   # lon/lat; or  aoi: path/to/area.geojson (relative to the file)
    start: 2023-06-10
    end: 2023-06-20
    method: starfm               # any `stfuse predict --method`
    format: [cog, zarr]          # outputs
    bands: [red, nir08]          # optional, default all
    refine: shipped              # optional: the hybrid (with method: auto), as `stfuse predict --refine`
    variance_scale: 1.3          # optional: your area's factor from `stfuse evaluate --holdout`

Every other key is a field of :class:`stfuse.Query`, :class:`stfuse.FusionConfig` or
:class:`stfuse.RunConfig` (``provider`` is another word for ``catalog``, ``format`` for
``formats``); an unknown key is refused with the valid ones listed. :func:`load_region`
validates a file into those objects; :func:`run_region` runs it resumably (days already
complete are skipped).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stfuse.api import predict
from stfuse.config import FusionConfig, Query, RunConfig, split_settings
from stfuse.data.sensors import PROVIDERS
from stfuse.errors import InputError, MissingFileError
from stfuse.fusion.quality import Thresholds

ALIASES = {"provider": "catalog", "format": "formats"}
"""Region-file words for request fields."""
NOT_IN_REGION = ("out_dir", "overwrite", "resume")
"""Fields a region file does not set: the run decides them (``stfuse region -o``, always resumable)."""


@dataclass(frozen=True)
class Region:
    """A validated region file: its ``name`` and the request objects of :func:`stfuse.predict`."""

    name: str
    query: Query
    fusion: FusionConfig
    run: RunConfig


def _valid_keys() -> list[str]:
    fields = {f.name for cls in (Query, FusionConfig, RunConfig) for f in dataclasses.fields(cls)} - set(NOT_IN_REGION)
    return sorted(fields | {"name", *ALIASES})


def load_region(path: str | os.PathLike[str]) -> Region:
    """A :class:`Region` from a YAML file; :class:`InputError` naming the file on bad content."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"region file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"region file {path} is not valid YAML: {err}") from None
    if not isinstance(spec, dict):
        raise InputError(f"region file {path} must be a mapping of keys ({', '.join(_valid_keys())})")
    unknown = sorted(set(map(str, spec)) - set(_valid_keys()))
    if unknown:
        raise InputError(f"region file {path} has unknown key {unknown[0]!r}; valid keys: {', '.join(_valid_keys())}")
    for key in ("start", "end"):
        if key not in spec:
            raise InputError(f"region file {path} needs {key}: YYYY-MM-DD")
    settings = {ALIASES.get(str(k), str(k)): v for k, v in spec.items()}
    name = str(settings.pop("name", path.stem))
    settings["start"], settings["end"] = str(settings["start"]), str(settings["end"])
    catalog = settings.get("catalog")
    if catalog is not None and not str(catalog).startswith(("http://", "https://")) and str(catalog) not in PROVIDERS:
        local = path.parent / str(catalog)
        settings["catalog"] = str(local if local.exists() else Path(str(catalog)))
    if "aoi" in settings:
        settings["aoi"] = str(path.parent / str(settings["aoi"]))
    if isinstance(settings.get("thresholds"), dict):  # the quality gates, as a mapping of Thresholds' fields
        known = [f.name for f in dataclasses.fields(Thresholds)]
        unknown = sorted(set(settings["thresholds"]) - set(known))
        if unknown:
            raise InputError(f"region file {path}: thresholds has no key {unknown[0]!r}; valid keys: {', '.join(known)}")
        settings["thresholds"] = Thresholds(**settings["thresholds"])
    for key in ("bbox", "bands", "formats"):
        if isinstance(settings.get(key), list):
            settings[key] = tuple(settings[key])
    query, fusion, run = split_settings(settings, where=f"region file {path}")
    try:
        return Region(name, Query(**query), FusionConfig(**fusion), RunConfig(**run))
    except TypeError as err:
        raise InputError(f"region file {path}: {err}") from None


def run_region(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, progress: Any = None, **overrides: Any) -> list[Path]:
    """Run a region file into ``out_dir``, resumably; returns the written paths. ``overrides``:
    fields of the request objects (e.g. ``scheduler="local"``)."""
    region = load_region(path)
    run = dataclasses.replace(region.run, out_dir=out_dir, resume=True)
    return predict(region.query, region.fusion, run, progress=progress, **overrides)
