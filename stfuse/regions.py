"""Batch regions: YAML files naming an area, a date range and how to fuse it.

A region file (``regions/NAME.yaml``)::

    name: sample                 # defaults to the file name
    catalog: sample_scenes       # static catalog path, STAC API URL or provider name
    bbox: [-99.1, 40.0, -99.0, 40.1]   # lon/lat; or  aoi: path/to/area.geojson (relative to the file)
    start: 2023-06-10
    end: 2023-06-20
    method: starfm               # any `stfuse predict --method`
    format: [cog, zarr]          # outputs
    bands: [red, nir08]          # optional, default all
    refine: shipped              # optional: the hybrid (with method: auto), as `stfuse predict --refine`
    variance_scale: 1.3          # optional: your area's factor from `stfuse evaluate --holdout`

:func:`load_region` validates it into keyword arguments of :func:`stfuse.predict`;
:func:`run_region` runs it resumably (days already complete are skipped).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stfuse.errors import InputError, MissingFileError

_PASSED = ("bands", "max_pairs", "min_clear", "max_gap_days", "crs", "tile", "refine", "mc_samples", "seed", "variance_scale")
"""Keys passed as they are to :func:`stfuse.predict` (checked there)."""
_KEYS = {"name", "catalog", "provider", "bbox", "aoi", "start", "end", "method", "format", *_PASSED}


def load_region(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Keyword arguments for :func:`stfuse.predict` from a region YAML file, plus ``name``."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"region file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"region file {path} is not valid YAML: {err}") from None
    if not isinstance(spec, dict):
        raise InputError(f"region file {path} must be a mapping of keys ({', '.join(sorted(_KEYS))})")
    unknown = set(spec) - _KEYS
    if unknown:
        raise InputError(f"region file {path} has unknown key {sorted(unknown)[0]!r}; known: {', '.join(sorted(_KEYS))}")
    for key in ("start", "end"):
        if key not in spec:
            raise InputError(f"region file {path} needs {key}: YYYY-MM-DD")
    kwargs: dict[str, Any] = {
        "catalog": spec.get("catalog", spec.get("provider")),
        "start": str(spec["start"]),
        "end": str(spec["end"]),
        "method": spec.get("method", "starfm"),
    }
    if kwargs["catalog"] is not None and not str(kwargs["catalog"]).startswith(("http://", "https://")):
        local = (path.parent / str(kwargs["catalog"]))
        from stfuse.data.sensors import PROVIDERS

        if str(kwargs["catalog"]) not in PROVIDERS:
            kwargs["catalog"] = str(local if local.exists() else Path(str(kwargs["catalog"])))
    if "bbox" in spec:
        kwargs["bbox"] = spec["bbox"]
    if "aoi" in spec:
        kwargs["aoi"] = str(path.parent / str(spec["aoi"]))
    formats = spec.get("format", ["cog"])
    kwargs["formats"] = [formats] if isinstance(formats, str) else list(formats)
    for key in _PASSED:
        if key in spec:
            kwargs[key] = spec[key]
    kwargs["name"] = str(spec.get("name", path.stem))
    return kwargs


def run_region(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], **overrides: Any) -> list[Path]:
    """Run a region file into ``out_dir`` with ``resume=True``; returns the written paths."""
    from stfuse.api import predict

    kwargs = load_region(path)
    kwargs.pop("name")
    kwargs.update(overrides)
    kwargs.setdefault("resume", True)
    return predict(out_dir=out_dir, **kwargs)
