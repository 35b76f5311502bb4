"""stfuse FSDAF against the FSDAF.py port, side by side (issue #32; docs/methods.md, FSDAF section).

Tasks: the abrupt-change scenes of :mod:`stfuse.sim.abrupt` (flood and harvest, blocky and smooth
coarse images) and every one-pair task of the real sets (``tools/real_sets.py``: estarfm-real, CIA,
realset1 with nearest and bilinear MODIS, Kranj). Per task: ``fine + coarse change`` (the pair's fine
image plus the coarse change, coarse images mapped into the fine units where they differ, as
``tools/real_sets.py`` does), the port, and stfuse FSDAF (``stfuse.fusion.prior.fsdaf.fsdaf``) with the
same inputs and the same coarse factor (16; CIA 10: 50 m Landsat, 500 m MODIS). Scores: RMSE per band
over the pixels valid in the truth and in the pair's fine image, mean over bands, in the units of
``tools/real_sets.py`` (reflectance; realset1 DN / 1e4).

The port is never part of stfuse: give the folder holding its ``fsdaf_core.py``, ``isodata.py``,
``utils.py`` and ``array_bounds_fix.py`` (Petrichor-Wu/FSDAF-Batch-Processing-Code-Framework) and a
Python that has its packages (numpy, scipy, statsmodels, idlwrap, pyyaml, and rasterio for the I/O
shim below)::

    .venv/bin/python tools/fsdaf_port_study.py --port /tmp/fsdaf_port --port-python /tmp/fsdaf_port/venv/bin/python

Without ``--port`` (or when the folder is absent) the port column is skipped. The port runs
unmodified through :data:`DRIVER` (writes the inputs as GeoTIFFs x 1e4, calls its ``process_fsdaf``
with its shipped parameters, reads the result); where ``osgeo.gdal`` is not importable a minimal
stand-in on rasterio (:data:`GDAL_SHIM`: file I/O only) is put on its path. Port results are cached
under ``--cache`` (they take 10-60 s each on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

PORT_PARAMS = dict(w=25, num_similar_pixel=30, min_class=8.0, max_class=15, num_pure=20, DN_min=-2000,
                   DN_max=10000.0, block_size=40, background=-28672, background_band=1, I=40, maxStdv=150,
                   minDis=50, minS=30, M=0.05)
"""The port's ``parameters_fsdaf.yaml`` as shipped, but ``scale_factor`` (the coarse factor) and
``DN_max`` (65535 for realset1's digital numbers) per task."""

FACTORS = {"cia": 10}
"""Coarse factor per real set (default 16: 480 m MODIS blocks on a 30 m grid)."""

DRIVER = r'''
import logging, os, sys, tempfile
import numpy as np, rasterio, yaml
port, npz, out, params = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
shim = sys.argv[5] if len(sys.argv) > 5 else ""
try:
    from osgeo import gdal  # noqa: F401
except ImportError:
    sys.path.insert(0, shim)
sys.path.insert(0, port)
from fsdaf_core import process_fsdaf
d = np.load(npz)
tmp = tempfile.mkdtemp()
def write(name, a):
    p = os.path.join(tmp, name)
    with rasterio.open(p, "w", driver="GTiff", width=a.shape[2], height=a.shape[1], count=a.shape[0], dtype="float32") as dst:
        dst.write(a.astype(np.float32))
    return p
paths = [write(n + ".tif", d[n]) for n in ("fine", "coarse", "target")]
pf = os.path.join(tmp, "parameters_fsdaf.yaml")
with open(pf, "w") as f:
    f.write(yaml.safe_dump(eval(params)))
logging.basicConfig(level=logging.ERROR)
ok = process_fsdaf(*paths, os.path.join(tmp, "out.tif"), pf, os.path.join(tmp, "temp"), logging.getLogger("port"))
with rasterio.open(os.path.join(tmp, "out.tif")) as src:
    np.save(out, src.read().astype(np.float32))
'''

GDAL_SHIM = r'''
"""Minimal osgeo.gdal stand-in on rasterio for the FSDAF port: file I/O only."""
import numpy as np, rasterio
from affine import Affine
GA_ReadOnly, GA_Update, GDT_Float32 = 0, 1, "float32"
def PushErrorHandler(*a): pass
def UseExceptions(): pass
class Band:
    def __init__(self, ds, i): self.ds, self.i = ds, i
    def ReadAsArray(self): return self.ds.data[self.i].copy()
    def WriteArray(self, a, xoff=0, yoff=0):
        a = np.asarray(a); self.ds.data[self.i, yoff:yoff + a.shape[0], xoff:xoff + a.shape[1]] = a; self.ds.flush()
    def GetScale(self): return 1.0
    def GetOffset(self): return 0.0
    def GetNoDataValue(self): return None
class Dataset:
    def __init__(self, data, path=None, gt=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), proj=""):
        self.data, self.path, self.gt, self.proj = data, path, tuple(gt), proj
    RasterXSize = property(lambda s: s.data.shape[2])
    RasterYSize = property(lambda s: s.data.shape[1])
    RasterCount = property(lambda s: s.data.shape[0])
    def GetRasterBand(self, i): return Band(self, i - 1)
    def GetGeoTransform(self): return self.gt
    def GetProjection(self): return self.proj
    def SetGeoTransform(self, gt): self.gt = tuple(gt); self.flush()
    def SetProjection(self, p): self.proj = p or ""; self.flush()
    def flush(self):
        if self.path is None: return
        prof = dict(driver="GTiff", width=self.RasterXSize, height=self.RasterYSize, count=self.RasterCount,
                    dtype=self.data.dtype, transform=Affine.from_gdal(*self.gt))
        if self.proj: prof["crs"] = self.proj
        with rasterio.open(self.path, "w", **prof) as dst: dst.write(self.data)
def Open(path, mode=GA_ReadOnly):
    with rasterio.open(path) as src:
        data, gt, proj = src.read(), src.transform.to_gdal(), (src.crs.to_wkt() if src.crs else "")
    return Dataset(data, path if mode == GA_Update else None, gt, proj)
class Driver:
    def __init__(self, name): self.name = name
    def Create(self, path, x, y, nb, dtype=GDT_Float32):
        ds = Dataset(np.zeros((nb, y, x), dtype), None if self.name == "MEM" else path); ds.flush(); return ds
    def CreateCopy(self, path, src, strict=0):
        ds = Dataset(src.data.copy(), path, src.gt, src.proj); ds.flush(); return ds
def GetDriverByName(name): return Driver(name)
'''


# ----------------------------------------------------------------------------------------------
# tasks
# ----------------------------------------------------------------------------------------------

def abrupt_tasks(seeds=(1, 2, 3), kinds=("flood", "harvest"), coarse_kinds=("blocky", "smooth")) -> list[dict[str, Any]]:
    """Abrupt-change tasks as dicts (``id``, ``set``, arrays, ``factor``, ``scale``)."""
    from stfuse.sim.abrupt import abrupt_task

    out = []
    for coarse in coarse_kinds:
        for kind in kinds:
            for seed in seeds:
                t = abrupt_task(seed, kind=kind, coarse=coarse)
                out.append(dict(id=f"sim-{t.name}", set=f"sim-abrupt-{coarse}", fine=t.fine_pair, coarse=t.coarse_pair,
                                target=t.coarse_target, truth=t.truth, factor=t.factor, scale=1.0, dn_max=10000.0))
    return out


def real_tasks(sets: list[str] | None = None) -> list[dict[str, Any]]:
    """Every one-pair task of the real sets (``tools/real_sets.py``), coarse images in the fine units."""
    import real_sets

    from stfuse.fusion.radiometry import fit_units
    from stfuse.output.io import read_reflectance

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task in real_sets.build_tasks(names=sets):
            if task["kind"] != "one-pair":
                continue
            read = lambda p: read_reflectance(p).values.astype(np.float32)  # noqa: E731
            pair = task["pairs"][0]
            fine, coarse = read(pair["fine"]), read(pair["coarse"])
            fit = fit_units(fine[None], coarse[None])
            coarse, target = fit.to_fine_units(coarse), fit.to_fine_units(read(task["target"]["coarse"]))
            truth = read(task["truth"])
            big = float(np.nanmax(fine)) * float(task["truth_scale"]) > 1.5  # realset1: Landsat digital numbers / 1e4
            out.append(dict(id=task["id"], set=task["set"], fine=fine[None], coarse=coarse[None], target=target,
                            truth=truth, factor=FACTORS.get(task["set"], 16), scale=float(task["truth_scale"]),
                            dn_max=65535.0 if big else 10000.0))
    return out


def score(pred: np.ndarray, task: dict[str, Any]) -> float:
    """RMSE per band over pixels valid in the truth and the pair's fine image, mean over bands."""
    truth = task["truth"]
    ok = np.isfinite(truth) & np.isfinite(task["fine"][0])
    err = np.where(ok, pred - truth, np.nan)
    return float(np.mean(np.sqrt(np.nanmean(err ** 2, axis=(1, 2))))) * task["scale"]


def baseline(task: dict[str, Any]) -> np.ndarray:
    return task["fine"][0] + task["target"] - task["coarse"][0]


def run_stfuse(task: dict[str, Any], **options) -> np.ndarray:
    import torch

    from stfuse.fusion.prior.fsdaf import fsdaf

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    options.setdefault("coarse_factor", task["factor"])
    mean, _ = fsdaf(t(task["fine"]), t(task["coarse"]), t(task["target"]), **options)
    return mean.numpy()


def run_port(task: dict[str, Any], port: Path, python: str, cache: Path) -> np.ndarray | None:
    """The port's prediction (reflectance / the fine units), cached as ``<cache>/<id>.npy``."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{task['id']}.npy"
    if out.exists():
        return np.load(out)
    with tempfile.TemporaryDirectory() as tmp:
        shim = Path(tmp) / "shim"
        (shim / "osgeo").mkdir(parents=True)
        (shim / "osgeo" / "__init__.py").write_text("")
        (shim / "osgeo" / "gdal.py").write_text(GDAL_SHIM)
        driver = Path(tmp) / "driver.py"
        driver.write_text(DRIVER)
        npz = Path(tmp) / "in.npz"
        background = PORT_PARAMS["background"]
        # the port's units: reflectance x 1e4 (realset1: digital numbers); its nodata: the value
        # `background` in its first band (its classification skips those pixels)
        k = 1e4 * task["scale"]
        fine = np.where(np.isfinite(task["fine"][0]).all(0), task["fine"][0] * k, background)
        np.savez(npz, fine=fine, coarse=np.nan_to_num(task["coarse"][0] * k), target=np.nan_to_num(task["target"] * k))
        params = dict(PORT_PARAMS, scale_factor=int(task["factor"]), DN_max=float(task["dn_max"]))
        res = subprocess.run([python, str(driver), str(port), str(npz), str(out), repr(params), str(shim)],
                             capture_output=True, text=True)
        if res.returncode != 0 or not out.exists():
            print(f"port failed on {task['id']}:\n{res.stderr[-2000:]}", file=sys.stderr)
            return None
    pred = np.load(out) / (1e4 * task["scale"])  # back to the fine images' units
    np.save(out, pred.astype(np.float32))
    return pred


# ----------------------------------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "before": dict(residual_weight="variogram"),
    "after": {},
}
"""stfuse FSDAF options compared: ``before`` = the defaults before issue #32, ``after`` = the defaults now."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=Path, help="folder with the port's fsdaf_core.py (skipped when absent)")
    ap.add_argument("--port-python", default=sys.executable, help="Python with the port's packages")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "fsdaf_port_study")
    ap.add_argument("--only", choices=("sim", "real"), help="only the simulated or the real tasks")
    ap.add_argument("--sets", nargs="*", help="real sets (default: all available)")
    ap.add_argument("--json", type=Path, help="write the per-task scores here")
    args = ap.parse_args(argv)
    port = args.port if args.port is not None and (args.port / "fsdaf_core.py").is_file() else None
    if args.port is not None and port is None:
        print(f"no fsdaf_core.py in {args.port}: port column skipped", file=sys.stderr)
    tasks = []
    if args.only != "real":
        tasks += abrupt_tasks()
    if args.only != "sim":
        tasks += real_tasks(args.sets)
    rows = []
    names = list(VARIANTS)
    print("| task | fine + coarse change | FSDAF.py | " + " | ".join(f"stfuse {n}" for n in names) + " | " +
          " | ".join(f"{n} / port" for n in names) + " |")
    print("|---" * (3 + 2 * len(names)) + "|")
    for task in tasks:
        row = dict(id=task["id"], set=task["set"], baseline=score(baseline(task), task))
        p = run_port(task, port, args.port_python, args.cache) if port else None
        row["port"] = score(p, task) if p is not None else None
        if row["port"] is not None and row["port"] > 10 * row["baseline"]:
            row["port_diverged"], row["port"] = row["port"], None  # e.g. its OLS unmixing on a harvest scene
        for n in names:
            t0 = time.perf_counter()
            row[n] = score(run_stfuse(task, **VARIANTS[n]), task)
            row[f"{n}_s"] = time.perf_counter() - t0
        rows.append(row)
        fmt = lambda v: "-" if v is None else f"{v:.5f}"  # noqa: E731
        ratios = [fmt(None) if row["port"] is None else f"{row[n] / row['port']:.3f}" for n in names]
        print(f"| {row['id']} | {fmt(row['baseline'])} | {fmt(row['port'])} | " + " | ".join(fmt(row[n]) for n in names)
              + " | " + " | ".join(ratios) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
