"""``make bench``: accuracy and speed of every method on the shared benchmarks and a big scene.

Runs each (task, method) of ``../shared/benchmarks/MANIFEST.json`` through the real
local-file path (:func:`stfuse.api.predict_files`) in a child process, so that wall time
and peak resident memory (``ru_maxrss`` of that child alone) are its own; scores the
written COG with :mod:`stfuse.evaluate.metrics` (equal to the benchmarks' ``score.py``); then times
the priors on generated scenes of growing size, and the CLI's start-up cost (``stfuse --help``,
``import stfuse``, a local 400 x 400 x 3 prediction end to end), and scores every method on the
leave-one-date-out tasks of the real sets (``tools/real_sets.py``). Writes a Markdown report.

    .venv/bin/python tools/bench.py --out docs/benchmarks.md [--benchmarks DIR] [--sizes 1000,2000]
    .venv/bin/python tools/bench.py --only startup --out docs/benchmarks.md   # only the start-up section (~1 min),
                                                                               # replaced in place in --out
    .venv/bin/python tools/bench.py --only real [--no-hybrid] --out docs/benchmarks.md   # only the real sets
        # (tools/real_sets.py: 45 leave-one-date-out tasks), replaced in place in --out and its .json
    .venv/bin/python tools/bench.py --only fill --out docs/benchmarks.md   # only gap filling (tools/fill_study.py,
        # ~5 min), replaced in place in --out and its .json
    .venv/bin/python tools/bench.py --only series --out docs/benchmarks.md   # only the series model
        # (tools/series_study.py, ~10 min), replaced in place in --out and its .json
    .venv/bin/python tools/bench.py --only series-engine --out docs/benchmarks.md   # only the time-series engine
        # (tools/series_engine_study.py and its full-scene timing), replaced in place in --out and its .json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
BASELINES = ("copy-fine", "fine+coarse-change")


def _methods_for(task: dict[str, Any]) -> list[str]:
    methods = ["starfm", "fsdaf", "fitfc"]
    if len(task["pairs"]) == 2:
        methods.insert(1, "estarfm")
    return [*BASELINES, *methods]


def _baseline(task: dict[str, Any], root: Path, method: str, out: Path) -> None:
    """Trivial baselines: the pair's fine image, or fine + (coarse_target - coarse_pair)."""
    from stfuse.output.io import crs_of, read_reflectance, transform_of, write_prediction_cog

    pair = task["pairs"][0]
    fine = read_reflectance(root / pair["fine"])
    pred = fine.values
    if method == "fine+coarse-change":
        pred = pred + read_reflectance(root / task["target"]["coarse"]).values - read_reflectance(root / pair["coarse"]).values
    write_prediction_cog(out, pred, np.zeros_like(pred), band_names=[f"band{i + 1}" for i in range(pred.shape[0])],
                         crs=crs_of(fine), transform=transform_of(fine), overwrite=True)


def _child_task(task: dict[str, Any], root: Path, method: str, out: Path, device: str) -> dict[str, Any]:
    import torch

    from stfuse.api import predict_files
    from stfuse.fusion import prior

    torch.set_num_threads(os.cpu_count() or 1)
    if method not in BASELINES:  # import the method's module before timing
        prior.method_function(method)
    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    if method in BASELINES:
        _baseline(task, root, method, out)
    else:
        pairs = [(root / p["fine"], root / p["coarse"]) for p in task["pairs"]]
        predict_files(pairs, root / task["target"]["coarse"], out, method=method, device=device, overwrite=True)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, "load": load}


def _child_scene(size: int, bands: int, method: str, device: str) -> dict[str, Any]:
    """Time one prior on a generated (size x size x bands) scene with 1 or 2 pairs."""
    import torch

    from stfuse.fusion.prior import predict

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    n_pairs = 2 if method == "estarfm" else 1
    base = rng.random((bands, size, size), dtype=np.float32) * 0.3
    fine = np.stack([base + 0.01 * k for k in range(n_pairs)])
    coarse = fine + rng.normal(0, 0.005, fine.shape).astype(np.float32)
    target = base + 0.02
    load = os.getloadavg()[0]  # other processes on the cores inflate wall time, not CPU time
    start, cpu = time.perf_counter(), time.process_time()
    mean, _ = predict(fine, coarse, target, method=method, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "load": load, "finite": float(np.isfinite(mean).mean())}


def _synthetic_block(block_id: tuple[int, ...], *, tile: int, bands: int, layer: int) -> np.ndarray:
    """One (1, bands, tile, tile) block of a lazily generated scene (deterministic per block)."""
    rng = np.random.default_rng([layer > 0, block_id[2], block_id[3]])
    rows = np.arange(tile)[:, None] + block_id[2] * tile
    cols = np.arange(tile)[None, :] + block_id[3] * tile
    fields = ((rows // 40 * 7 + cols // 40 * 13) % 5).astype(np.float32)  # 1.2 km fields
    base = 0.05 + 0.06 * fields[None] * (1 + np.arange(bands, dtype=np.float32)[:, None, None] / bands)
    image = base + 0.005 * rng.standard_normal((bands, tile, tile), dtype=np.float32)
    if layer == 2:  # target day: a smooth change
        image = image + 0.02 + 0.01 * np.sin(cols / 300.0).astype(np.float32)[None]
    return image[None].astype(np.float32)


def _child_full_scene(size: int, bands: int, method: str, tile: int, out: Path) -> dict[str, Any]:
    """The tiled pipeline on a lazily generated (size x size x bands) scene, COG written tile by tile."""
    import dask.array as da
    import xarray as xr
    from affine import Affine
    from rasterio.crs import CRS

    from stfuse.fusion.prior import halo
    from stfuse.output.io import write_prediction_cog
    from stfuse.output.tiling import dask_scheduler, predict_tiled

    n = -(-size // tile)
    layers = [da.map_blocks(_synthetic_block, chunks=((1,), (bands,), (tile,) * n, (tile,) * n), dtype=np.float32,
                            tile=tile, bands=bands, layer=k)[:, :, :size, :size] for k in range(3)]
    dims4 = ("pair", "band", "y", "x")
    fine = xr.DataArray(layers[0], dims=dims4)
    coarse = xr.DataArray(layers[1], dims=dims4)
    target = xr.DataArray(layers[2][0], dims=("band", "y", "x"))
    start = time.perf_counter()
    with dask_scheduler(None):
        result = predict_tiled(fine, coarse, target, predict_fn=_ScenePrior(method), halo=halo(method), tile=tile)
        write_prediction_cog(out, result["mean"].data, da.sqrt(result["variance"].data), band_names=[f"b{i}" for i in range(bands)],
                             crs=CRS.from_epsg(32614), transform=Affine(30, 0, 300000, 0, -30, 4500000), overwrite=True)
    seconds = time.perf_counter() - start
    out.unlink(missing_ok=True)
    return {"seconds": seconds}


class _ScenePrior:
    """Picklable prior callable for tiles."""

    def __init__(self, method: str) -> None:
        self.method = method

    def __call__(self, fine: np.ndarray, coarse: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from stfuse.fusion.prior import predict

        return predict(fine, coarse, target, method=self.method)


def _run_child(args: list[str]) -> dict[str, Any]:
    """Run ``tools/bench.py --child ...`` in a fresh process; returns its JSON (incl. its peak RSS)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def full_scene(sizes: list[int], *, bands: int = 6, method: str = "starfm", tile: int = 1024) -> list[dict[str, Any]]:
    """Tiled end-to-end runs (generate lazily, predict in tiles, write the COG) per size."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            result = _run_child(["full", str(size), str(bands), method, str(tile), str(Path(tmp) / f"full_{size}.tif")])
            rows.append({"size": size, "bands": bands, "method": method, "tile": tile, "seconds": result["seconds"],
                         "mpx_per_s": size * size / 1e6 / result["seconds"], "peak_mb": result["peak_mb"]})
            print(f"full scene {size}x{size}x{bands} {method} tiled: {result['seconds']:.1f} s {rows[-1]['mpx_per_s']:.3f} Mpx/s "
                  f"peak {result['peak_mb']:.0f} MB", flush=True)
    return rows


STARTUP_HEADING = "## Start-up: CLI and a local 400 x 400 x 3 prediction end to end"


def _wall(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Wall seconds of ``cmd`` run ``runs`` times in fresh processes (output discarded; must succeed)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return times


def _import_times(cmd: list[str]) -> tuple[float, list[tuple[str, float]]]:
    """Run ``python -X importtime`` on ``cmd`` (a Python script and its arguments): total seconds
    spent importing top-level modules and the heaviest of them, [(module, seconds)]."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"importtime run of {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    top: list[tuple[str, float]] = []
    nested: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)$", line)
        if not m:
            continue
        depth, name, cumulative = len(m.group(3)) - 1, m.group(4), int(m.group(2)) / 1e6
        if depth == 0:
            top.append((name, cumulative))
        elif depth <= 3:  # what the top-level modules pull in (e.g. numpy via stfuse.data.sensors)
            nested[name] = max(nested.get(name, 0.0), cumulative)
    total = sum(t for _, t in top)
    heavy = sorted([*top, *nested.items()], key=lambda kv: -kv[1])
    return total, heavy


def _write_local_scene(folder: Path, size: int = 400, bands: int = 3) -> dict[str, Path]:
    """Two fine/coarse pairs and a target coarse image (``size`` x ``size`` x ``bands``, UTM 30 m,
    named bands): smooth fields plus noise, the coarse ones block-averaged 16 x 16 (480 m)."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    names = ["blue", "green", "red", "nir08", "swir16", "swir22"][:bands]

    def scene(shift: float) -> np.ndarray:
        base = np.stack([0.05 + 0.1 * b + 0.05 * np.sin(6 * xx + 3 * yy + b) for b in range(bands)])
        return (base + shift + rng.normal(0, 0.01, base.shape)).astype(np.float32)

    def coarse(fine: np.ndarray) -> np.ndarray:
        k = 16
        blocks = fine.reshape(bands, size // k, k, size // k, k).mean(axis=(2, 4))
        return np.repeat(np.repeat(blocks, k, axis=1), k, axis=2).astype(np.float32)

    paths = {}
    for name, shift in (("F1", 0.0), ("F2", 0.04), ("T", 0.02)):
        fine = scene(shift)
        for kind, data in (("L", fine), ("M", coarse(fine))):
            if name == "T" and kind == "L":
                continue
            path = folder / f"{kind}_{name}.tif"
            with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="float32",
                               crs="EPSG:32614", transform=Affine(30, 0, 500000, 0, -30, 4500000), nodata=float("nan")) as dst:
                dst.write(data)
                for i, band in enumerate(names, start=1):
                    dst.set_band_description(i, band)
            paths[f"{kind}_{name}"] = path
    return paths


def startup_benchmark(*, help_runs: int = 5, predict_runs: int = 3, size: int = 400) -> dict[str, Any]:
    """The CLI's start-up cost in fresh processes: ``stfuse --help`` and ``--version`` and
    ``python -c "import stfuse"`` (median of ``help_runs``), and a local-file prediction of a
    ``size`` x ``size`` x 3 scene end to end (``stfuse predict --pair F C --pair F C --coarse T -o
    out.tif``, median of ``predict_runs``) with the seconds it spends importing modules
    (``python -X importtime``) and the heaviest imports of ``--help``."""
    stfuse = str(Path(sys.executable).with_name("stfuse"))
    out: dict[str, Any] = {"load_start": f"{os.getloadavg()[0]:.1f}"}
    for key, cmd in (("help", [stfuse, "--help"]), ("version", [stfuse, "--version"]),
                     ("import_stfuse", [sys.executable, "-c", "import stfuse"]),
                     ("python", [sys.executable, "-c", "pass"])):
        times = _wall(cmd, help_runs)
        out[key] = {"median_s": statistics.median(times), "runs": [round(t, 3) for t in times]}
        print(f"{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}: median {out[key]['median_s']:.3f} s", flush=True)
    out["help_imports_s"], heavy = _import_times([stfuse, "--help"])
    out["help_heaviest"] = [(name, round(t, 3)) for name, t in heavy[:8]]
    with tempfile.TemporaryDirectory() as tmp:
        files = _write_local_scene(Path(tmp), size)
        base = ["predict", "--pair", str(files["L_F1"]), str(files["M_F1"]), "--pair", str(files["L_F2"]), str(files["M_F2"]),
                "--coarse", str(files["M_T"])]
        times = []
        for k in range(predict_runs):
            times += _wall([stfuse, *base, "-o", str(Path(tmp) / f"out_{k}.tif"), "-q"], 1)
        imports, heavy_predict = _import_times([stfuse, *base, "-o", str(Path(tmp) / "out_importtime.tif"), "-q"])
    median = statistics.median(times)
    out["predict"] = {"size": size, "bands": 3, "method": "starfm", "median_s": median, "runs": [round(t, 3) for t in times],
                      "imports_s": imports, "heaviest": [(name, round(t, 3)) for name, t in heavy_predict[:8]]}
    out["load_end"] = f"{os.getloadavg()[0]:.1f}"
    print(f"predict {size}x{size}x3 local files: median {median:.2f} s, of which imports {imports:.2f} s", flush=True)
    return out


def startup_markdown(result: dict[str, Any], machine: str, command: str) -> str:
    """The start-up section of docs/benchmarks.md."""
    pred = result["predict"]
    share = pred["imports_s"] / pred["median_s"] if pred["median_s"] else float("nan")
    heavy = ", ".join(f"{name} {t:.2f}" for name, t in result["help_heaviest"][:6])
    heavy_predict = ", ".join(f"{name} {t:.2f}" for name, t in pred["heaviest"][:6])
    lines = [
        "", STARTUP_HEADING, "",
        f"Measured {dt.date.today().isoformat()} with `{command}` on: {machine}. Load average (1 min) at start / end: "
        f"{result['load_start']} / {result['load_end']} (other jobs on the same cores inflate these wall times).",
        "Wall seconds of fresh processes (`subprocess`), median of the runs; imports measured with `python -X importtime` "
        "in one more run (its bookkeeping slows imports a little: the share is an upper bound).",
        "",
        "| what | median s | runs (s) |",
        "|---|---|---|",
    ]
    for key, label in (("python", "`python -c pass` (the interpreter alone)"), ("import_stfuse", '`python -c "import stfuse"`'),
                       ("version", "`stfuse --version`"), ("help", "`stfuse --help`")):
        lines.append(f"| {label} | {result[key]['median_s']:.3f} | {', '.join(f'{t:.3f}' for t in result[key]['runs'])} |")
    lines.append(f"| `stfuse predict --pair F1 C1 --pair F2 C2 --coarse T -o out.tif` ({pred['size']} x {pred['size']} x "
                 f"{pred['bands']}, {pred['method']}, COG written) | {pred['median_s']:.2f} | {', '.join(f'{t:.2f}' for t in pred['runs'])} |")
    lines += [
        "",
        f"Of the local prediction's {pred['median_s']:.2f} s, {pred['imports_s']:.2f} s ({share:.0%}) are imports "
        f"(heaviest, cumulative s: {heavy_predict}). `stfuse --help` spends {result['help_imports_s']:.2f} s importing "
        f"(heaviest: {heavy}).",
        "",
    ]
    return "\n".join(lines)


def replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with the Markdown section starting at ``heading`` (up to the next ``## `` heading)
    replaced by ``section``, or ``section`` appended when there is none."""
    start = text.find("\n" + heading)
    if start < 0:
        return text.rstrip("\n") + "\n" + section
    nxt = text.find("\n## ", start + 1)
    return text[:start] + section.rstrip("\n") + "\n" + (text[nxt:] if nxt >= 0 else "")


def machine_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{os.cpu_count()} CPU cores ({cpu}), {mem_gb:.0f} GiB RAM, GPU: {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def run(benchmarks: Path, sizes: list[int], devices: list[str]) -> dict[str, Any]:
    """Run everything; returns a JSON-able report."""
    from stfuse.evaluate.files import evaluate_files

    manifest = json.loads((benchmarks / "MANIFEST.json").read_text())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in manifest["tasks"]:
            for device in devices:
                for method in _methods_for(task):
                    if device != "cpu" and method in BASELINES:
                        continue
                    out = Path(tmp) / f"{task['id']}_{method}_{device}.tif"
                    timing = _run_child(["task", json.dumps(task), str(benchmarks), method, str(out), device])
                    scores = evaluate_files(out, benchmarks / task["truth"])
                    from rasterio import open as rio_open

                    with rio_open(out) as src:
                        pixels = src.width * src.height
                    rows.append({
                        "task": task["id"], "method": method, "device": device,
                        "rmse": scores["mean"]["rmse"], "ssim": scores["mean"]["ssim"], "cc": scores["mean"]["cc"],
                        "ergas": scores["ergas"], "sam": scores["sam_deg"],
                        "coverage95": (scores.get("coverage") or {}).get("0.95"),
                        "seconds": timing["seconds"], "mpx_per_s": pixels / 1e6 / max(timing["seconds"], 1e-9),
                        "peak_mb": timing["peak_mb"],
                    })
                    print(f"{task['id']:28s} {method:20s} {device:4s} rmse {rows[-1]['rmse']:.5f} ssim {rows[-1]['ssim']:.4f} "
                          f"{timing['seconds']:7.2f} s  {timing['peak_mb']:7.0f} MB", flush=True)
    scenes: list[dict[str, Any]] = []
    for device in devices:
        for size in sizes:
            for method in ("starfm", "estarfm", "fsdaf", "fitfc"):
                result = _run_child(["scene", str(size), "6", method, device])
                scenes.append({"size": size, "bands": 6, "method": method, "device": device, "seconds": result["seconds"],
                               "mpx_per_s": size * size / 1e6 / max(result["seconds"], 1e-9), "peak_mb": result["peak_mb"]})
                print(f"scene {size}x{size}x6 {method:8s} {device:4s} {result['seconds']:7.2f} s {scenes[-1]['mpx_per_s']:.3f} Mpx/s {result['peak_mb']:.0f} MB", flush=True)
    return {"machine": machine_description(), "date": dt.date.today().isoformat(), "tasks": rows, "scenes": scenes}


REFERENCE = """Reference implementations on the same 2-core machine (from the project's issues; not re-run here):

| estarfm-real task | method | RMSE | SSIM | seconds |
|---|---|---|---|---|
| 1pair-early | copy the pair's fine image | 0.0209 | 0.784 | 0 |
| 1pair-early | fine_t1 + (coarse_t2 - coarse_t1) | 0.0124 | 0.791 | 0 |
| 1pair-early | starfm4py (window 31) | 0.0119 | 0.802 | ~390 |
| 1pair-early | FSDAF.py (half-window 20) | 0.0116 | 0.799 | ~90 |
| 2pair | ESTARFM.py (half-window 25) | 0.0076 | 0.884 | ~290 |
"""


def to_markdown(report: dict[str, Any], command: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {report['date']} with `{command}` on: {report['machine']}.",
        f"Load average (1 min) at start / end: tasks and scenes {report.get('load', '?')}, full scenes "
        f"{report.get('full_scene_load', '?')}, hybrid {report.get('hybrid_load', '?')}.",
        "Scores are the mean over bands of the project's metrics (equal to `../shared/benchmarks/score.py`, tested);",
        "RMSE in reflectance units. Seconds are wall time of the whole local-file run (read, predict, write COG) in a",
        "fresh process; Mpx/s = million output 30 m pixels per second (all bands); peak MB = that process's max RSS.",
        "",
        "## Shared benchmark tasks",
        "",
        "| task | method | device | RMSE | SSIM | CC | ERGAS | SAM (deg) | 95% coverage | seconds | Mpx/s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["tasks"]:
        cov = "" if r["coverage95"] is None or r["method"] in BASELINES else f"{r['coverage95']:.1%}"
        lines.append(f"| {r['task']} | {r['method']} | {r['device']} | {r['rmse']:.5f} | {r['ssim']:.4f} | {r['cc']:.4f} | {r['ergas']:.3f} | "
                     f"{r['sam']:.3f} | {cov} | {r['seconds']:.2f} | {r['mpx_per_s']:.3f} | {r['peak_mb']:.0f} |")
    lines += ["", REFERENCE, "## Generated scenes (prior only, in memory, 6 bands)", "",
              "| size | method | device | seconds | Mpx/s | peak MB |", "|---|---|---|---|---|---|"]
    for s in report["scenes"]:
        lines.append(f"| {s['size']} x {s['size']} | {s['method']} | {s['device']} | {s['seconds']:.2f} | {s['mpx_per_s']:.3f} | {s['peak_mb']:.0f} |")
    if report.get("full_scene"):
        lines += ["", "## Full scenes, tiled end to end (generate lazily, STARFM in 1024 px tiles + halo, COG written tile by tile)", "",
                  "| size | bands | method | seconds | Mpx/s | peak RSS MB |", "|---|---|---|---|---|---|"]
        for r in report["full_scene"]:
            lines.append(f"| {r['size']} x {r['size']} | {r['bands']} | {r['method']} | {r['seconds']:.1f} | {r['mpx_per_s']:.3f} | {r['peak_mb']:.0f} |")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """## Notes

- Load: the machine's 1-minute load average at the start and end of each part is in the header; other
  jobs on the same cores inflate wall times (CPU seconds are in docs/benchmarks.json where recorded).
- Threads: torch's OpenMP threads spin-wait by default, which made 2-thread runs 10-100x slower whenever
  another process used the cores; stfuse sets `OMP_WAIT_POLICY=PASSIVE` (overridable) before importing torch.
- CPU priors run their row strips one per core, each with torch single-threaded
  (`stfuse.fusion.prior._window.run_blocks`): torch's own 2-thread parallelism split each of the ~130,000 small
  per-offset operations and synchronised after every one. Window sums use a fixed-order float64 doubling
  sum (about 9 additions per pixel for a 31 px window), STARFM writes its per-neighbour terms in place,
  ESTARFM computes its F-test critical values without importing scipy.stats (0.7 s per run). Results are
  unchanged (bit-identical for STARFM, within 3e-8 for ESTARFM; tests/test_prior_*.py).
- Inside dask tiles (full scenes) torch runs one thread per task and dask runs one task per core; an image
  that is a single tile runs its one task with every core (catalog-mode days of small areas).
- Peak memory of the tiled runs is set by the tile size and the number of tiles in flight, not by the scene:
  the 7,000 x 7,000 scene has 12x the pixels of the 2,000 x 2,000 one and about 2x its peak (dask graph,
  COG writer buffers).
"""


REAL_TASKS = ("estarfm-real-1pair-early", "estarfm-real-1pair-late", "estarfm-real-2pair")


def hybrid_benchmark(benchmarks: Path, *, tasks: tuple[str, ...] = REAL_TASKS, mc_samples: int = 8, seed: int = 0,
                     threads: int = 1) -> list[dict[str, Any]]:
    """The hybrid (prior ensemble + CNN refiner, :func:`stfuse.fusion.refine.predict_hybrid`) on the real tasks.

    In process, from the task's pairs and target coarse image only (the truth is read for
    scoring). Per task: every prior alone (``stfuse.fusion.prior.predict``), then the hybrid with the
    shipped weights and, with 2 pairs, adapted to the pairs (``scene``). Each row: RMSE/SSIM
    (mean over bands), 68/95 % interval coverage and Spearman rank correlation of |error| vs
    sigma (:func:`stfuse.fusion.uncertainty.calibration_report`), CPU seconds (``time.process_time``
    of this process, ``threads`` torch threads) and the best prior's name and RMSE.
    """
    import torch

    from stfuse.evaluate.metrics import score_arrays
    from stfuse.evaluate.tasks import load_task
    from stfuse.fusion.prior import predict as prior_predict
    from stfuse.fusion.prior.calibration import calibrated_variance
    from stfuse.fusion.refine import predict_hybrid
    from stfuse.fusion.uncertainty import calibration_report
    from stfuse.output.io import read_reflectance

    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    for task_id in tasks:
        task = load_task(benchmarks, task_id)
        fine = np.stack([read_reflectance(f).values for f, _ in task.pairs]).astype(np.float32)
        coarse = np.stack([read_reflectance(c).values for _, c in task.pairs]).astype(np.float32)
        target = read_reflectance(task.coarse).values.astype(np.float32)
        truth = read_reflectance(task.truth).values.astype(np.float32)

        def row(method: str, mean: np.ndarray, var: np.ndarray, seconds: float) -> dict[str, Any]:
            scores = score_arrays(mean, truth)
            cal = calibration_report(mean, var, truth)
            return {"task": task_id, "method": method, "rmse": scores["mean"]["rmse"], "ssim": scores["mean"]["ssim"],
                    "cov68": cal["cov68"], "cov95": cal["cov95"], "spearman": cal["spearman"], "seconds": seconds}

        priors = [m for m in ("starfm", "estarfm", "fsdaf", "fitfc") if m != "estarfm" or fine.shape[0] == 2]
        prior_rows = []
        for m in priors:
            t0 = time.process_time()
            mean, var = prior_predict(fine, coarse, target, method=m)
            var = calibrated_variance(m, fine.shape[0], var)  # spread and scaled, as stfuse.fuse outputs it
            prior_rows.append(row(m, mean, var, time.process_time() - t0))
        best = min(prior_rows, key=lambda r: r["rmse"])
        rows += prior_rows
        for mode in ("shipped", "scene") if fine.shape[0] >= 2 else ("shipped",):
            t0 = time.process_time()
            mean, var = predict_hybrid(fine, coarse, target, prior_fn="ensemble", self_supervised=(mode == "scene"),
                                       mc_samples=mc_samples, seed=seed)
            r = row(f"hybrid ({mode})", mean, var, time.process_time() - t0)
            r.update(best_prior=best["method"], best_prior_rmse=best["rmse"])
            rows.append(r)
            print(f"{task_id:28s} {r['method']:18s} rmse {r['rmse']:.5f} (best prior {best['method']} {best['rmse']:.5f}) "
                  f"ssim {r['ssim']:.4f} cov {r['cov68']:.1%}/{r['cov95']:.1%} rho {r['spearman']:.2f} {r['seconds']:.0f} s", flush=True)
    return rows


HYBRID_HEADING = "## Hybrid: prior ensemble + CNN refiner (real tasks, in process)"
PRIORS_HEADING = "## Priors' variance factors (held-out simulated days)"


def hybrid_markdown(rows: list[dict[str, Any]], calibration: dict[str, Any] | None = None) -> str:
    """The hybrid section of docs/benchmarks.md from :func:`hybrid_benchmark` rows (and the
    held-out simulated-day check stored with the shipped weights, ``calibration``)."""
    lines = ["", HYBRID_HEADING, "",
             "`hybrid_benchmark` in tools/bench.py (part of `make bench`): every prior alone, then `predict_hybrid` (Fit-FC + FSDAF",
             "ensemble weighted per pixel by the refiner) with the shipped weights and, with two pairs, adapted to the pairs",
             "(`scene`). Variance scale: shipped with two pairs, the scale the pairs ask for when predicting each other",
             "times a factor fitted on simulated days (`stfuse.fusion.refine.scene_variance_scale`); with one pair, or adapted, a",
             "fixed one fitted on simulated days (a task gives one pair and no other clear date; catalog mode uses one, see",
             "the simulated rows below). Only the pairs and the target's coarse image are used; the",
             "truth only scores. Variances as in stfuse's outputs: spread over one coarse pixel, priors' times their factor from",
             "simulated days (`stfuse.fusion.prior.calibration`), both times their real-scene factor. Coverage = fraction of truth pixels inside the central 68 % / 95 % intervals;",
             "rho = Spearman rank correlation of |error| and sigma. Seconds: CPU time of one thread.", "",
             "| task | method | RMSE | SSIM | 68% cov | 95% cov | rho | CPU s | beats best prior? |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = ""
        if "best_prior" in r:
            verdict = f"{'yes' if r['rmse'] < r['best_prior_rmse'] else 'no'} ({r['best_prior']} {r['best_prior_rmse']:.5f})"
        lines.append(f"| {r['task']} | {r['method']} | {r['rmse']:.5f} | {r['ssim']:.4f} | {r['cov68']:.1%} | {r['cov95']:.1%} | "
                     f"{r['spearman']:.2f} | {r['seconds']:.1f} | {verdict} |")
    if calibration:
        lines += ["", f"Held-out simulated days (stored with the shipped weights: {calibration.get('n_scenes')} scenes, seed "
                  f"{calibration.get('seed')}, variance scale fitted on the first half, checked on the other; in brackets the 90 %",
                  "bootstrap interval over check days, `stfuse.fusion.uncertainty.coverage_interval`; before the spread and the",
                  "real-scene factor that stfuse applies on top: docs/methods.md, \"Uncertainty on real scenes\", has them with both):", "",
                  "| pairs | days | 68% cov | 95% cov | rho | hybrid RMSE | members alone (mean RMSE) |", "|---|---|---|---|---|---|---|"]

        def cov(c: dict[str, float], name: str) -> str:
            ci = f" ({c[name + '_lo']:.1%}-{c[name + '_hi']:.1%})" if name + "_lo" in c else ""
            return f"{c[name]:.1%}{ci}"

        for p, c in sorted((calibration.get("check") or {}).items()):
            alone = ", ".join(f"{k[5:]} {v:.5f}" for k, v in sorted(c.items()) if k.startswith("rmse_"))
            lines.append(f"| {p} | {c.get('days', 0):.0f} | {cov(c, 'cov68')} | {cov(c, 'cov95')} | {c['spearman']:.2f} | "
                         f"{c['rmse']:.5f} | {alone or c.get('best_prior_rmse', float('nan'))} |")
        for p, c in sorted((calibration.get("check_scene") or {}).items()):
            lines.append(f"| {p}, scale follows the scene | {c.get('days', 0):.0f} | {cov(c, 'cov68')} | {cov(c, 'cov95')} | "
                         f"{c['spearman']:.2f} | (as above) | median scene scale {c.get('scene_scale_median', float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def prior_calibration_markdown(stored: dict[str, Any]) -> str:
    """Table of the priors' variance factors and their check on held-out simulated days
    (``stfuse/fusion/prior/variance_scales.json``, :func:`stfuse.fusion.prior.calibration.fit_scales`)."""
    from stfuse.fusion.prior.calibration import REAL_SCENE_SIGMA_FACTORS

    if not stored.get("scales"):
        return ""
    lines = ["", PRIORS_HEADING, "",
             f"`make calibration` (`stfuse.fusion.prior.calibration`): one factor per method and number of pairs, fitted on "
             f"{stored.get('n_scenes', 0) // 2} simulated scenes", f"(seed {stored.get('seed')}, the hybrid's calibration scenes), "
             "checked on the other half; coverage of the 68 % / 95 % intervals of the spread variance (one coarse pixel,",
             "`stfuse.fusion.uncertainty.spread_variance`) before the factor, with it, and with the real-scene factor on top",
             "(sigma x " + ", ".join(f"{k:g} {m}" for m, k in REAL_SCENE_SIGMA_FACTORS.items())
             + ", as stfuse outputs it; docs/methods.md, \"Uncertainty on real scenes\").", "",
             "| method | pairs | factor | check days | RMSE | raw 68% / 95% | calibrated 68% / 95% | as output 68% / 95% |",
             "|---|---|---|---|---|---|---|---|"]
    for method, by_pairs in sorted(stored["scales"].items()):
        for n_pairs, factor in sorted(by_pairs.items()):
            c = stored["check"][method][n_pairs]
            output = (f"{c['real_factor_cov68']:.1%} / {c['real_factor_cov95']:.1%}" if "real_factor_cov95" in c else "")
            lines.append(f"| {method} | {n_pairs} | {factor:g} | {c['days']} | {c['rmse']:.5f} | {c['raw_cov68']:.1%} / "
                         f"{c['raw_cov95']:.1%} | {c['cov68']:.1%} / {c['cov95']:.1%} | {output} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- real sets, leave-one-date-out

REAL_HEADING = "## Real sets, leave-one-date-out"
REAL_PRIORS = ("starfm", "estarfm", "fsdaf", "fitfc")
REAL_STFUSE = (*REAL_PRIORS, "default", "hybrid")
"""stfuse runs of the real-set tasks (through :func:`stfuse.api.predict_files`); the rest are baselines."""


def _sibling(name: str) -> Any:
    """A sibling script of tools/ (not a package) as a module."""
    import importlib

    tools = str(Path(__file__).resolve().parent)
    if tools not in sys.path:
        sys.path.append(tools)  # last: tools/ never shadows an installed module
    return importlib.import_module(name)


def _real_sets() -> Any:
    """``tools/real_sets.py``: task definitions and baselines."""
    return _sibling("real_sets")


FILL_HEADING = "## Gap filling: every clear observation counts (leave-one-date-out, issue #20)"


def fill_benchmark(benchmarks: Path) -> dict[str, Any]:
    """``tools/fill_study.py``'s study: ``{"markdown": per-set tables, "ratios": {set: {setting: ratio}},
    "seconds": ...}``."""
    t0 = time.perf_counter()
    text, ratios = _sibling("fill_study").study(Path(tempfile.mkdtemp(prefix="stfuse-fill-")), benchmarks)
    return {"markdown": text, "ratios": ratios, "seconds": round(time.perf_counter() - t0, 1)}


def study_markdown(heading: str, intro: list[str], result: dict[str, Any], machine: str, command: str) -> str:
    """A study's section of docs/benchmarks.md: heading, when/how/where measured, ``intro``, its markdown."""
    return "\n".join([heading, "", f"Measured {dt.date.today().isoformat()} with `{command}` ({result['seconds'] / 60:.1f} min) on: {machine}.",
                      *intro, "", result["markdown"], ""])


def fill_markdown(result: dict[str, Any], machine: str, command: str) -> str:
    """The gap-filling section of docs/benchmarks.md."""
    return study_markdown(FILL_HEADING, [
        "Each withheld Landsat date is predicted from the other dates with the default prior (blend) and scored on its clear",
        "pixels (`stfuse.evaluate.holdout`, bands red and NIR; Kranj: 6 bands on arrays, as catalog mode composes the pairs).",
        "Sets: two simulated cloudy seasons (256 x 256 px, 96 days, Landsat every 8 days, 30-40 % mean cloud; a flood, a",
        "harvest), the bundled sample and the real Kranj series (Landsat clouds as nodata). Settings: `--max-pairs`,",
        "`--fill` (fill days per pair) and `--min-clear`; the default is `2 nearest, filled (min-clear 0.05, fill 3)`",
        "(docs/methods.md, \"Pairs and gap filling\")."], result, machine, command)


SERIES_HEADING = "## The series model: `--refine scene` learned on the scene's own dates (leave-one-date-out, issue #20)"


def series_benchmark() -> dict[str, Any]:
    """``tools/series_study.py``'s study: ``{"markdown", "results": {set: {method: {rmse, coverage95, seconds}}}, "seconds"}``."""
    t0 = time.perf_counter()
    text, results = _sibling("series_study").study(Path(tempfile.mkdtemp(prefix="stfuse-series-")))
    return {"markdown": text, "results": results, "seconds": round(time.perf_counter() - t0, 1)}


def series_markdown(result: dict[str, Any], machine: str, command: str) -> str:
    """The series-model section of docs/benchmarks.md."""
    return study_markdown(SERIES_HEADING, [
        "Each withheld Landsat date is predicted from the other dates (`stfuse.evaluate.holdout`, bands red and NIR, default",
        "pairs and gap filling) and scored on its clear pixels. `series (--refine scene)` fits its member weights and sigma's",
        "scale for each withheld date on the *other* dates only (docs/methods.md, \"The series model\"). Sets: three simulated",
        "six-date seasons (256 x 256 px, 48 days, Landsat every 8 days, 30 % cloud) and the bundled sample (4 dates)."],
        result, machine, command)


SERIES_ENGINE_HEADING = "## The time-series engine: `--method kalman`, every date in every day (leave-one-date-out, issue #29)"


def series_engine_benchmark(benchmarks: Path) -> dict[str, Any]:
    """``tools/series_engine_study.py``'s study and the full-scene timing of the engine:
    ``{"markdown", "results", "full_scene", "seconds"}``."""
    t0 = time.perf_counter()
    study = _sibling("series_engine_study")
    text, results = study.study(benchmarks)
    timing = study.full_scene_timing()
    return {"markdown": text + "\n" + study.timing_markdown(timing), "results": results, "full_scene": timing,
            "seconds": round(time.perf_counter() - t0, 1)}


def series_engine_markdown(result: dict[str, Any], machine: str, command: str) -> str:
    """The time-series engine's section of docs/benchmarks.md."""
    return study_markdown(SERIES_ENGINE_HEADING, [
        "Each Landsat date with a MODIS day and >= 5 % clear is withheld and predicted from the *other* dates, scored on its",
        "clear pixels that every method predicts (bands red and NIR). Rows: the default (`2 nearest (blend)`: the two nearest",
        "pairs gap-filled, the blend prior), the time-weighted `fine + coarse change` over all dates (EFAST-like, weights",
        "exp(-|dt|/tau); its sigma the weighted spread of the candidates, uncalibrated) and the engine's variants (their `q`,",
        "`r` and sigma's scale fitted on the other dates only). Sets: three simulated cloudy series (`stfuse.sim.series`, 256 px,",
        "160 days, daily coarse sensor with wobble, gaps and clouds), the real Kranj series (daily MODIS, 3 Landsat dates) and",
        "the bundled sample (catalog cubes, 4 dates). How it works and what decided the defaults: docs/methods.md,",
        "\"The time-series engine\"."], result, machine, command)


def _write_section(out: Path, heading: str, markdown: str, key: str, raw_value: dict[str, Any]) -> None:
    """Replace section ``heading`` of ``out`` with ``markdown`` and key ``key`` of the .json beside it."""
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(replace_section(text, heading, markdown))
    raw_path = out.with_suffix(".json")
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    raw_path.write_text(json.dumps({**raw, key: raw_value}, indent=1))
    print(f"wrote the section {heading!r} of {out} and the key {key} of {raw_path}")


def _real_methods(task: dict[str, Any], hybrid: bool) -> list[str]:
    """Methods run on a real-set task: baselines, priors (ESTARFM with two pairs), default, hybrid."""
    priors = [m for m in REAL_PRIORS if m != "estarfm" or len(task["pairs"]) == 2]
    return [*_real_sets().BASELINES, *priors, "default", *(["hybrid"] if hybrid else [])]


def _child_real_task(task: dict[str, Any], out_dir: Path, methods: list[str], device: str) -> dict[str, Any]:
    """Predict one real-set task with each method into ``out_dir/<method>.tif`` (baselines: reflectance
    bands and zero sigma; stfuse: :func:`stfuse.api.predict_files`, whose ``method`` tag is kept).
    Returns ``{"methods": {method: {seconds, cpu_seconds, method_used} or {error}}, "load"}``."""
    import rasterio
    import torch

    from stfuse.api import predict_files
    from stfuse.output.io import crs_of, read_reflectance, transform_of, write_prediction_cog

    real_sets = _real_sets()
    torch.set_num_threads(os.cpu_count() or 1)
    pairs = [(Path(p["fine"]), Path(p["coarse"])) for p in task["pairs"]]
    target = dt.date.fromisoformat(task["target"]["date"])
    settings: dict[str, dict[str, Any]] = {m: {"method": m} for m in REAL_PRIORS}
    settings.update(default={}, hybrid={"method": "auto", "refine": "shipped"})
    load, results = os.getloadavg()[0], {}
    for method in methods:
        out = out_dir / f"{method}.tif"
        start, cpu = time.perf_counter(), time.process_time()
        try:
            if method in real_sets.BASELINES:
                pred = real_sets.baseline_prediction(task, method)
                grid = read_reflectance(pairs[0][0])
                write_prediction_cog(out, pred, np.zeros_like(pred), band_names=[f"band{i + 1}" for i in range(pred.shape[0])],
                                     crs=crs_of(grid), transform=transform_of(grid), overwrite=True)
                used = method
            else:
                predict_files(pairs, Path(task["target"]["coarse"]), out, date=target, device=device, overwrite=True, **settings[method])
                with rasterio.open(out) as src:
                    used = src.tags().get("method", "?")
        except Exception as err:  # one method's failure is a result, not the end of the benchmark
            results[method] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            continue
        results[method] = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, "method_used": used}
    return {"methods": results, "load": load}


def score_real_task(task: dict[str, Any], predictions: dict[str, Path]) -> tuple[dict[str, dict[str, Any]], int]:
    """Scores of each method's prediction file against the task's truth, all brought to reporting
    units with ``truth_scale``, on the pixels valid in the truth and in every prediction (so all
    methods are scored on one set of pixels). Returns ({method: {rmse, bias, ssim, cov68, cov95}},
    number of scored pixels); coverage only for stfuse's methods (NaN for baselines)."""
    from stfuse.evaluate.files import calibration, read_scored_pair
    from stfuse.evaluate.metrics import score_arrays
    from stfuse.output.io import read_reflectance

    scale = float(task["truth_scale"])
    truth = read_reflectance(task["truth"]).values.astype(np.float64) * scale
    arrays = {}
    for method, path in predictions.items():  # reflectance and matching sigma bands, as `stfuse evaluate` reads them
        pair = read_scored_pair(path, task["truth"], force=True)
        arrays[method] = (pair.mean * scale, None if pair.sigma is None else pair.sigma * scale)
    common = np.isfinite(truth).all(axis=0)
    for mean, _ in arrays.values():
        common &= np.isfinite(mean).all(axis=0)
    scores = {}
    for method, (mean, sigma) in arrays.items():
        mean_scores = score_arrays(mean, truth, truth_valid=common)["mean"]
        coverage = calibration(mean, sigma, truth, common) if sigma is not None and method in REAL_STFUSE else {}
        scores[method] = {"rmse": mean_scores["rmse"], "bias": mean_scores["bias"], "ssim": mean_scores["ssim"],
                          "cov68": coverage.get("0.68", float("nan")), "cov95": coverage.get("0.95", float("nan"))}
    return scores, int(common.sum())


def real_sets_benchmark(benchmarks: Path, *, hybrid: bool = True, names: list[str] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Every leave-one-date-out task of the real sets (``tools/real_sets.py``): each task in one
    fresh process that writes every method's prediction, then scored here (:func:`score_real_task`).
    ``hybrid``: also run the hybrid (slowest). Returns ``{"rows": [...], "sets", "skipped", ...}``
    with one row per (task, method): RMSE, bias, SSIM (mean over bands, reporting units), 68/95 %
    coverage (stfuse's methods), seconds and CPU seconds of the run, or ``error``."""
    real_sets = _real_sets()
    tasks = real_sets.build_tasks(benchmarks, names)
    present = [s.name for s in real_sets.available_sets(benchmarks, names)]
    skipped = [s.name for s in real_sets.REAL_SETS if (names is None or s.name in names) and s.name not in present]
    if skipped:
        print(f"real sets skipped (not found under {benchmarks}): {', '.join(skipped)}", flush=True)
    load_start, rows = f"{os.getloadavg()[0]:.1f}", []
    with tempfile.TemporaryDirectory(prefix="stfuse-real-") as tmp:
        for task in tasks:
            out_dir = Path(tmp) / task["id"]
            out_dir.mkdir()
            methods = _real_methods(task, hybrid)
            ran = _run_child(["real", json.dumps(task), str(out_dir), ",".join(methods), device])["methods"]
            done = {m: out_dir / f"{m}.tif" for m in methods if "error" not in ran[m]}
            scores, scored_pixels = score_real_task(task, done)
            for method in methods:
                rows.append({"set": task["set"], "task": task["id"], "kind": task["kind"], "pairs": [p["date"] for p in task["pairs"]],
                             "target": task["target"]["date"], "method": method, "scored_pixels": scored_pixels,
                             **ran[method], **scores.get(method, {})})
            print(f"{task['id']:26s} " + " ".join(f"{m} {scores[m]['rmse']:.5f}" if m in scores else f"{m} ERROR" for m in methods),
                  flush=True)
            shutil.rmtree(out_dir)
    return {"date": dt.date.today().isoformat(), "machine": machine_description(), "device": device, "hybrid": hybrid,
            "sets": {s.name: {"truth_scale": s.truth_scale, "units": s.units} for s in real_sets.available_sets(benchmarks, names)},
            "skipped": skipped, "load": f"{load_start} / {os.getloadavg()[0]:.1f}", "rows": rows}


def _mean(values: list[float]) -> float:
    """Mean of the finite values (None and NaN left out); NaN when there are none."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _real_set_tables(rows: list[dict[str, Any]], methods: list[str]) -> list[str]:
    """One set's RMSE table (best of each row in bold, a ``mean`` row) and 95 % coverage table."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    by = {(r["task"], r["method"]): r for r in rows}
    header = ["baseline" if m == _real_sets().BASELINE else m for m in methods]
    lines = ["| task | pairs | target | " + " | ".join(header) + " |", "|---|---|---|" + "---|" * len(methods)]
    for task in tasks:
        first = next(r for r in rows if r["task"] == task)
        rmse = {m: by[(task, m)].get("rmse", float("nan")) for m in methods if (task, m) in by}
        best = min((v for v in rmse.values() if np.isfinite(v)), default=None)
        cells = []
        for m in methods:
            if (task, m) not in by:
                cells.append("")
            elif "error" in by[(task, m)]:
                cells.append("error")
            else:
                cells.append(f"**{rmse[m]:.5f}**" if rmse[m] == best else f"{rmse[m]:.5f}")
        lines.append(f"| {task} | {', '.join(first['pairs'])} | {first['target']} | " + " | ".join(cells) + " |")
    two_pair = [t for t in tasks if len(next(r for r in rows if r["task"] == t)["pairs"]) == 2]
    for label, chosen in (("mean", tasks), ("mean, two-pair tasks", two_pair)):
        means = [_mean([by[(t, m)].get("rmse") for t in chosen if (t, m) in by]) for m in methods]
        lines.append(f"| {label} | | | " + " | ".join(f"{v:.5f}" for v in means) + " |")
    stfuse = [m for m in ("default", "hybrid") if m in methods]
    if stfuse:
        lines += ["", "95 % interval coverage (nominal 95 %):", "", "| task | " + " | ".join(stfuse) + " |", "|---|" + "---|" * len(stfuse)]
        for task in tasks:
            lines.append(f"| {task} | " + " | ".join(f"{by[(task, m)].get('cov95', float('nan')):.1%}" for m in stfuse) + " |")
        lines.append("| mean | " + " | ".join(f"{_mean([by[(t, m)].get('cov95') for t in tasks]):.1%}" for m in stfuse) + " |")
    return lines


def _real_summary(rows: list[dict[str, Any]], methods: list[str], sets: list[str], label: str,
                  keep: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The summary table of mean RMSE per set over the task rows ``keep`` accepts, with each
    method's ratio to the baseline's mean RMSE on the same tasks and the mean over sets."""
    baseline = _real_sets().BASELINE
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for name in sets:
        rmse = {(r["task"], r["method"]): r.get("rmse", float("nan")) for r in rows if r["set"] == name and keep(r)}
        summary[name] = {}
        for m in methods:
            tasks = [t for (t, mm) in rmse if mm == m and np.isfinite(rmse[(t, m)]) and np.isfinite(rmse.get((t, baseline), float("nan")))]
            mean = _mean([rmse[(t, m)] for t in tasks])
            summary[name][m] = (mean, mean / _mean([rmse[(t, baseline)] for t in tasks]) if tasks else float("nan"))
    lines = ["", f"### Summary, {label}: mean RMSE per set (in brackets: ratio to the baseline's mean RMSE on the same tasks)", "",
             "| set | " + " | ".join("baseline" if m == baseline else m for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for name in sets:
        lines.append(f"| {name} | " + " | ".join(f"{summary[name][m][0]:.5f} ({summary[name][m][1]:.2f})" for m in methods) + " |")
    lines.append("| mean over sets | " + " | ".join(f"{_mean([summary[n][m][0] for n in sets]):.5f} ({_mean([summary[n][m][1] for n in sets]):.2f})"
                                                  for m in methods) + " |")
    return [*lines, ""]


def real_sets_markdown(result: dict[str, Any], command: str) -> str:
    """The real-set section of docs/benchmarks.md from :func:`real_sets_benchmark`'s result."""
    rows = result["rows"]
    methods = [m for m in [*_real_sets().BASELINES, *REAL_STFUSE] if any(r["method"] == m for r in rows)]
    default_used: dict[str, set[str]] = {}
    for r in rows:
        if r["method"] == "default" and "method_used" in r:
            default_used.setdefault(r["kind"], set()).add(r["method_used"])
    default_note = "; ".join(f"{'/'.join(sorted(v))} on {k} tasks" for k, v in sorted(default_used.items())) or "no task"
    if len(default_used) > 1 and len({frozenset(v) for v in default_used.values()}) == 1:
        default_note = f"{'/'.join(sorted(next(iter(default_used.values()))))} on every task"
    hybrid_note = "" if "hybrid" in methods else " (not run here: `--no-hybrid`)"
    lines = ["", REAL_HEADING, "",
             f"Measured {result['date']} with `{command}` on: {result['machine']}. Load average (1 min) at start / end: {result['load']}.",
             "Sets and tasks: `tools/real_sets.py` (read from `../shared/benchmarks`, never copied): per set three dates, for each",
             "target date one task from each other date (one pair) and one from both (two pairs); `t<k>` / `p<k>` in the id number",
             "the set's dates in time order. Every task runs in a fresh process through `stfuse.predict_files` (local-file mode,",
             f"device {result.get('device', 'cpu')}). baseline = fine + coarse change from the pair nearest in date (a tie: the earlier),",
             "coarse images mapped into the fine units by `stfuse.fusion.radiometry.fit_units` on the task's pairs when it finds the",
             "units differ (realset1, Kranj); copy-fine = that pair's fine image; default = `predict_files` without a method (it ran",
             f"{default_note}); hybrid = `refine=\"shipped\", method=\"auto\"`{hybrid_note}.",
             "Scores: mean over bands, on the pixels valid in the truth and in every method's prediction (Kranj: clouds are nodata),",
             "predictions and truth multiplied by the set's `truth_scale`: RMSE in reflectance, except realset1, whose Landsat",
             "files are digital numbers: its RMSEs are in DN / 1e4. Bold: the lowest RMSE of the row."]
    if result.get("skipped"):
        lines += ["", f"Skipped (not found): {', '.join(result['skipped'])}."]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    for name in sets:
        set_rows = [r for r in rows if r["set"] == name]
        units = result.get("sets", {}).get(name, {}).get("units", "")
        lines += ["", f"### {name}" + (f": {units}" if units else ""), "", *_real_set_tables(set_rows, methods)]
        errors = [f"{r['task']} {r['method']}: {r['error']}" for r in set_rows if "error" in r]
        if errors:
            lines += ["", "Errors: " + "; ".join(errors)]
    lines += _real_summary(rows, methods, sets, "all tasks", lambda r: True)
    lines += _real_summary(rows, methods, sets, "two-pair tasks", lambda r: len(r["pairs"]) == 2)
    lines += ["Mean over sets: the mean of the sets' mean RMSEs (mixed units: realset1 is in DN / 1e4) and the mean of their",
              "ratios (unit-free; each set counts once). ESTARFM runs on two-pair tasks only: compare it on the second table.", ""]
    stfuse = [m for m in REAL_STFUSE if m in methods]
    if stfuse:
        lines += ["### Summary: 95 % interval coverage per set (mean over the set's tasks; target 90-98 %)", "",
                  "| set | " + " | ".join(stfuse) + " |", "|---|" + "---|" * len(stfuse)]
        for name in sets:
            lines.append(f"| {name} | " + " | ".join(
                f"{_mean([r.get('cov95') for r in rows if r['set'] == name and r['method'] == m]):.1%}" for m in stfuse) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        kind, rest = argv[1], argv[2:]
        if kind == "task":
            task, root, method, out, device = json.loads(rest[0]), Path(rest[1]), rest[2], Path(rest[3]), rest[4]
            result = _child_task(task, root, method, out, device)
        elif kind == "full":
            result = _child_full_scene(int(rest[0]), int(rest[1]), rest[2], int(rest[3]), Path(rest[4]))
        elif kind == "real":
            result = _child_real_task(json.loads(rest[0]), Path(rest[1]), rest[2].split(","), rest[3])
        else:
            result = _child_scene(int(rest[0]), int(rest[1]), rest[2], rest[3])
        result["peak_mb"] = _peak_rss_mb()
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--benchmarks", type=Path, default=DEFAULT_BENCHMARKS)
    parser.add_argument("--sizes", default="1000,2000", help="generated scene sizes (pixels per side)")
    parser.add_argument("--full-scene", default="2000,7000", help="sizes of the tiled end-to-end run (STARFM, COG written); empty to skip")
    parser.add_argument("--only", choices=["startup", "real", "fill", "series", "series-engine", "hybrid", "priors"],
                        help="run only this part and replace its section in --out in place (the rest of the file is kept; "
                             "real: also its key in the .json beside --out)")
    parser.add_argument("--no-hybrid", action="store_true", help="real sets: skip the hybrid (the slowest method)")
    parser.add_argument("--real-sets", default="", help="real sets: only these (comma-separated names of tools/real_sets.py)")
    args = parser.parse_args(argv)
    real_names = [n for n in args.real_sets.split(",") if n] or None
    if args.only == "real":
        command = "tools/bench.py --only real" + (" --no-hybrid" if args.no_hybrid else "") + (f" --real-sets {args.real_sets}" if real_names else "")
        real = real_sets_benchmark(args.benchmarks, hybrid=not args.no_hybrid, names=real_names)
        text = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(replace_section(text, REAL_HEADING, real_sets_markdown(real, command)))
        raw_path = args.out.with_suffix(".json")
        raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
        raw_path.write_text(json.dumps({**raw, "real_sets": real}, indent=1))
        print(f"wrote the real-set section of {args.out} and the key real_sets of {raw_path}")
        return
    if args.only == "fill":
        fill = fill_benchmark(args.benchmarks)
        _write_section(args.out, FILL_HEADING, fill_markdown(fill, machine_description(), "tools/bench.py --only fill"),
                       "gap_filling", {k: v for k, v in fill.items() if k != "markdown"})
        return
    if args.only == "series":
        series = series_benchmark()
        _write_section(args.out, SERIES_HEADING, series_markdown(series, machine_description(), "tools/bench.py --only series"),
                       "series_model", {k: v for k, v in series.items() if k != "markdown"})
        return
    if args.only == "series-engine":
        engine = series_engine_benchmark(args.benchmarks)
        _write_section(args.out, SERIES_ENGINE_HEADING,
                       series_engine_markdown(engine, machine_description(), "tools/bench.py --only series-engine"),
                       "series_engine", {k: v for k, v in engine.items() if k != "markdown"})
        return
    if args.only in ("hybrid", "priors"):
        text = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
        if args.only == "hybrid":
            from stfuse.fusion.refine import load_model

            section = hybrid_markdown(hybrid_benchmark(args.benchmarks), getattr(load_model(None), "meta", {}).get("hybrid_calibration"))
            text = replace_section(text, HYBRID_HEADING, section)
        else:
            from stfuse.fusion.prior.calibration import SCALES_PATH

            text = replace_section(text, PRIORS_HEADING, prior_calibration_markdown(json.loads(SCALES_PATH.read_text())))
        args.out.write_text(text)
        print(f"wrote the {args.only} section of {args.out}")
        return
    if args.only == "startup":
        startup = startup_benchmark()
        text = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(replace_section(text, STARTUP_HEADING,
                                            startup_markdown(startup, machine_description(), "tools/bench.py --only startup")))
        print(f"wrote the start-up section of {args.out}")
        return
    if not (args.benchmarks / "MANIFEST.json").exists():
        sys.exit(f"benchmarks not found at {args.benchmarks}; pass --benchmarks DIR")
    import torch

    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    def load() -> str:
        return f"{os.getloadavg()[0]:.1f}"

    before = load()
    report = run(args.benchmarks, [int(s) for s in args.sizes.split(",") if s], devices)
    report["load"], before = f"{before} / {load()}", load()
    report["full_scene"] = full_scene([int(s) for s in args.full_scene.split(",") if s])
    report["full_scene_load"], before = f"{before} / {load()}", load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report["hybrid"] = hybrid_benchmark(args.benchmarks)
    report["hybrid_load"] = f"{before} / {load()}"
    report["real_sets"] = real_sets_benchmark(args.benchmarks, hybrid=not args.no_hybrid, names=real_names)
    fill = fill_benchmark(args.benchmarks)
    report["gap_filling"] = {k: v for k, v in fill.items() if k != "markdown"}
    series = series_benchmark()
    report["series_model"] = {k: v for k, v in series.items() if k != "markdown"}
    engine = series_engine_benchmark(args.benchmarks)
    report["series_engine"] = {k: v for k, v in engine.items() if k != "markdown"}
    report["startup"] = startup_benchmark()
    from stfuse.fusion.prior.calibration import SCALES_PATH
    from stfuse.fusion.refine import load_model

    args.out.write_text(to_markdown(report, "make bench")
                        + hybrid_markdown(report["hybrid"], getattr(load_model(None), "meta", {}).get("hybrid_calibration"))
                        + prior_calibration_markdown(json.loads(SCALES_PATH.read_text()) if SCALES_PATH.exists() else {})
                        + real_sets_markdown(report["real_sets"], "make bench")
                        + fill_markdown(fill, report["machine"], "make bench")
                        + series_markdown(series, report["machine"], "make bench")
                        + series_engine_markdown(engine, report["machine"], "make bench")
                        + startup_markdown(report["startup"], report["machine"], "make bench"))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
