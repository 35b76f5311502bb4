"""stfuse: spatiotemporal fusion of Landsat and MODIS into daily 30 m reflectance with uncertainty.

Public API (torch and the I/O stack are imported lazily, so ``import stfuse`` is fast)::

    stfuse.predict(...)          # catalog mode: search, load, predict every day, write COGs
    stfuse.predict_files(...)    # local-file mode: pairs + target coarse GeoTIFFs -> one COG
    stfuse.fuse(...)             # the pure core on labelled arrays
    stfuse.evaluate_files(...)   # metrics of a prediction against a truth file
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
    "predict": "stfuse.api",
    "predict_files": "stfuse.api",
    "fuse": "stfuse.api",
    "FusionResult": "stfuse.api",
    "evaluate_files": "stfuse.evaluate.files",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stfuse' has no attribute {name!r}")
