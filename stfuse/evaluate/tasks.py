"""Benchmark tasks (``stfuse evaluate --task``): a ``MANIFEST.json`` task set as in
``../shared/benchmarks``, predicted with :func:`stfuse.predict_files` and scored as the
benchmarks' ``score.py`` does."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio

from stfuse.api import predict_files
from stfuse.data.catalog import parse_date
from stfuse.errors import InputError, MissingFileError
from stfuse.evaluate.files import evaluate_files

PathLike = str | os.PathLike[str]

# --------------------------------------------------------------------------- benchmark tasks


@dataclass(frozen=True)
class BenchmarkTask:
    """One task of a ``MANIFEST.json`` task set; paths resolved against the manifest's folder."""

    id: str
    pairs: tuple[tuple[Path, Path], ...]
    coarse: Path
    truth: Path
    date: str
    kind: str = ""


def _manifest_path(benchmarks: PathLike) -> Path:
    path = Path(benchmarks)
    if path.is_dir():
        path = path / "MANIFEST.json"
    if not path.is_file():
        raise MissingFileError(f"no benchmark manifest at {path}; give --benchmarks the folder holding MANIFEST.json")
    return path


def list_tasks(benchmarks: PathLike) -> list[str]:
    """Task ids of a task set (``benchmarks``: the folder holding ``MANIFEST.json``, or that file)."""
    return [t["id"] for t in _read_manifest(_manifest_path(benchmarks))]


def _read_manifest(path: Path) -> list[dict[str, Any]]:
    try:
        tasks = json.loads(path.read_text())["tasks"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise InputError(f"{path} is not a benchmark manifest (a JSON object with a 'tasks' list): {err}") from None
    if not isinstance(tasks, list):
        raise InputError(f"{path}: 'tasks' must be a list")
    return tasks


def load_task(benchmarks: PathLike, task_id: str) -> BenchmarkTask:
    """The task ``task_id`` of a task set; :class:`InputError` naming the known ids if absent."""
    path = _manifest_path(benchmarks)
    tasks = {str(t.get("id")): t for t in _read_manifest(path)}
    if task_id not in tasks:
        raise InputError(f"unknown task {task_id!r} in {path}; known: {', '.join(tasks)}")
    task = tasks[task_id]
    root = path.parent
    try:
        pairs = tuple((root / p["fine"], root / p["coarse"]) for p in task["pairs"])
        return BenchmarkTask(task_id, pairs, root / task["target"]["coarse"], root / task["truth"],
                             str(task["target"].get("date", "")), str(task.get("kind", "")))
    except (KeyError, TypeError) as err:
        raise InputError(f"task {task_id!r} in {path} lacks {err}; it needs pairs[].fine/.coarse, target.coarse, truth") from None


def evaluate_task(
    task_id: str,
    benchmarks: PathLike,
    *,
    method: str = "auto",
    out: PathLike | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    report_dir: PathLike | None = None,
    refine: str = "none",
    mc_samples: int = 8,
    seed: int = 0,
    command: str | None = None,
) -> dict[str, Any]:
    """Predict a benchmark task with :func:`stfuse.predict_files` and score it against its truth.

    ``benchmarks``: folder holding ``MANIFEST.json`` (read only). ``out``: where to keep the
    prediction (.tif); default a temporary file removed afterwards. ``report_dir``: also
    write the PNG/HTML report there (:func:`stfuse.evaluate.report.evaluation_report`). Returns
    :func:`evaluate_files`'s dict plus ``task`` and ``method`` (the one that ran, from the
    prediction's tags: ``auto`` runs ``blend``); ``prediction`` is None when
    the prediction was temporary. The numbers equal ``score.py PRED --task ID``. ``refine``,
    ``mc_samples``, ``seed``: the hybrid, as in :func:`stfuse.fuse`. ``command``: recorded in the report.
    """
    task = load_task(benchmarks, task_id)
    for label, file in [("truth", task.truth), ("target coarse", task.coarse), *[("pair", f) for pair in task.pairs for f in pair]]:
        if not file.is_file():
            raise MissingFileError(f"task {task_id}: {label} file {file} not found")
    try:
        date = parse_date(task.date, name="task date")
    except InputError:
        date = None  # synthetic tasks name their dates t1, t2, ...
    with contextlib.ExitStack() as stack:
        if out is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stfuse-task-")))
            pred_path = tmp / f"{task.id}.tif"
        else:
            pred_path = Path(out)
        predict_files(list(task.pairs), task.coarse, pred_path, method=method, date=date, device=device,
                      options=options, overwrite=overwrite, refine=refine, mc_samples=mc_samples, seed=seed)
        result = evaluate_files(pred_path, task.truth)
        with rasterio.open(pred_path) as src:
            used = src.tags().get("method", method)  # what ran: auto -> blend, a hybrid's member set
        if report_dir is not None:
            from stfuse.evaluate.report import evaluation_report

            evaluation_report(pred_path, task.truth, report_dir, title=f"stfuse {method} on task {task.id}", command=command,
                              result=result, overwrite=overwrite)
    result.update(task=task.id, method=used, prediction=str(out) if out is not None else None)
    return result
