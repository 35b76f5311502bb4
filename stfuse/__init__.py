"""stfuse: spatiotemporal fusion of Landsat and MODIS into daily 30 m reflectance with uncertainty.

Public API (torch and the I/O stack are imported lazily, so ``import stfuse`` is fast)::

    stfuse.open_fused(query, fusion)   # the lazy fused cube: xarray.Dataset (time, band, y, x)
    stfuse.predict(query, fusion, run) # catalog mode: the same cube written as COGs and/or Zarr
    stfuse.predict_files(...)          # local-file mode: pairs + target coarse GeoTIFFs -> one COG
    stfuse.fuse(...)                   # one day on labelled arrays in memory
    stfuse.evaluate_files(...)         # metrics of a prediction against a truth file
    stfuse.Query, stfuse.FusionConfig, stfuse.RunConfig   # the request objects (stfuse.config)

Every function also takes the request objects' fields as keyword arguments.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("stfuse")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# OpenMP threads that spin-wait collapse torch's throughput 10-100x when the cores are shared
# (other jobs, dask threads). Passive waiting costs nothing measurable on an idle machine.
# Must be set before torch is imported (stfuse imports torch lazily); users may override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_LAZY = {
    "open_fused": "stfuse.fused",
    "Query": "stfuse.config",
    "FusionConfig": "stfuse.config",
    "RunConfig": "stfuse.config",
    "predict": "stfuse.api",
    "predict_files": "stfuse.api",
    "fuse": "stfuse.api",
    "train_files": "stfuse.api",
    "FusionResult": "stfuse.api",
    "evaluate_files": "stfuse.evaluate.files",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stfuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
