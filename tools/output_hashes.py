"""Hash the pixels of stfuse outputs, to check that a refactor leaves them bit-identical.

    python tools/output_hashes.py DIR [DIR ...] > hashes.json

Every ``*.tif`` under each folder is hashed band by band (raw bytes of the pixel data, in band
order, with the band descriptions and dtype), and every Zarr array under ``*.zarr`` likewise.
Tags are left out on purpose: they carry the creation time. Compare two runs with ``diff``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def tif_hash(path: Path) -> str:
    import rasterio

    digest = hashlib.sha256()
    with rasterio.open(path) as src:
        digest.update(json.dumps([src.dtypes, src.descriptions, src.crs.to_wkt() if src.crs else None,
                                  tuple(src.transform)]).encode())
        digest.update(src.read().tobytes())
    return digest.hexdigest()[:16]


def zarr_hashes(path: Path) -> dict[str, str]:
    import numpy as np
    import zarr

    group = zarr.open_group(str(path), mode="r")
    out = {}
    for name, array in sorted(group.arrays()):
        out[f"{path.name}/{name}"] = hashlib.sha256(np.ascontiguousarray(array[...]).tobytes()).hexdigest()[:16]
    return out


def main(folders: list[str]) -> None:
    result: dict[str, str] = {}
    for folder in folders:
        root = Path(folder)
        for tif in sorted(root.rglob("*.tif")):
            result[str(tif.relative_to(root.parent))] = tif_hash(tif)
        for store in sorted(root.rglob("*.zarr")):
            result.update({f"{root.name}/{k}": v for k, v in zarr_hashes(store).items()})
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
