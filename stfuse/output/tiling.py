"""Halo-overlapping tiles: apply a prior over dask-chunked cubes with ``map_overlap``.

Each tile of ``tile x tile`` output pixels is computed from a block grown by ``halo`` pixels
on each side (the method's neighbourhood radius), so tiles are independent and the result
equals an untiled run for methods whose output at a pixel depends only on inputs within
``halo`` (STARFM, ESTARFM, Fit-FC; FSDAF's classification and unmixing are per tile).
At the image border no padding is invented (``boundary="none"``), which is what an untiled
run sees too.

Memory per task is about ``(2 P + 1) * B * (tile + 2 halo)^2 * 4`` bytes of input plus the
method's working set, independent of the scene size; :func:`tile_size_for` picks ``tile``
from a memory budget.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Iterator

import dask
import dask.array as da
import numpy as np
import xarray as xr

from stfuse.errors import InputError, RemoteServiceError

PredictFn = Callable[..., tuple[np.ndarray, np.ndarray]]
"""``fn(fine, coarse, coarse_target, **options) -> (mean, variance)`` on numpy arrays."""


def tile_size_for(memory_bytes: float, *, n_pairs: int, n_bands: int, halo: int, overhead: float = 12.0) -> int:
    """Largest tile side (multiple of 256, >= 256) whose working set fits ``memory_bytes``.

    ``overhead`` multiplies the raw input size to account for the method's temporaries.
    """
    layers = (2 * n_pairs + 1) * n_bands
    side = math.sqrt(memory_bytes / (4.0 * layers * overhead)) - 2 * halo
    return max(256, int(side // 256) * 256)


def _block_predict(block: np.ndarray, *, n_pairs: int, predict_fn: PredictFn, options: dict[str, Any],
                   only_block: bool = False) -> np.ndarray:
    """One tile: (2P+1, B, h, w) stacked inputs -> (2, B, h, w) stacked [mean, variance].

    ``only_block``: the image is this one tile, so no other task competes for the cores and
    torch may use all of them (dask tasks otherwise run torch single-threaded)."""
    import torch

    fine = block[:n_pairs]
    coarse = block[n_pairs : 2 * n_pairs]
    target = block[2 * n_pairs]
    previous = torch.get_num_threads()
    if only_block and previous == 1:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        mean, variance = predict_fn(fine, coarse, target, **options)
    finally:
        torch.set_num_threads(previous)
    return np.stack([mean, variance]).astype(np.float32)


def predict_tiled(
    fine: xr.DataArray,
    coarse: xr.DataArray,
    coarse_target: xr.DataArray,
    *,
    predict_fn: PredictFn,
    halo: int,
    tile: int = 1024,
    options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Lazy tiled prediction: ``mean`` and ``variance`` (band, y, x), dask-backed.

    ``fine``/``coarse``: (pair, band, y, x); ``coarse_target``: (band, y, x), numpy- or
    dask-backed. Nothing is computed until the result is.
    """
    if tile < 1 or halo < 0:
        raise InputError(f"tile must be >= 1 and halo >= 0 (got tile={tile}, halo={halo})")
    n_pairs = fine.sizes["pair"]
    halo = min(halo, max(fine.sizes["y"], fine.sizes["x"]))  # a halo past the image edge is the whole image
    fine = fine.transpose("pair", "band", "y", "x")
    coarse = coarse.transpose("pair", "band", "y", "x")
    target = coarse_target.transpose("band", "y", "x")
    layers = [fine.data, coarse.data, target.data[None]]
    stacked = da.concatenate([da.asarray(a, dtype=np.float32) for a in layers], axis=0)
    stacked = stacked.rechunk((stacked.shape[0], stacked.shape[1], tile, tile))
    depth = {0: 0, 1: 0, 2: min(halo, tile), 3: min(halo, tile)}
    if halo > tile:
        # map_overlap needs depth <= chunk size; grow chunks instead of failing.
        stacked = stacked.rechunk((stacked.shape[0], stacked.shape[1], halo, halo))
        depth = {0: 0, 1: 0, 2: halo, 3: halo}
    for axis in (2, 3):  # an axis in one chunk needs no overlap (and a narrow one cannot have it)
        if stacked.numblocks[axis] == 1:
            depth[axis] = 0
    grown = da.overlap.overlap(stacked, depth=depth, boundary="none")
    out_chunks = ((2,), grown.chunks[1], grown.chunks[2], grown.chunks[3])
    predicted = grown.map_blocks(
        _block_predict, dtype=np.float32, chunks=out_chunks, n_pairs=n_pairs, predict_fn=predict_fn, options=options or {},
        only_block=grown.npartitions == 1,
    )
    result = da.overlap.trim_internal(predicted, depth, boundary="none")
    coords = {k: v for k, v in target.coords.items() if set(v.dims) <= {"band", "y", "x"}}
    mean = xr.DataArray(result[0], dims=("band", "y", "x"), coords=coords)
    variance = xr.DataArray(result[1], dims=("band", "y", "x"), coords=coords)
    return xr.Dataset({"mean": mean, "variance": variance})


@contextlib.contextmanager
def dask_scheduler(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
    device: str = "cpu",
) -> Iterator[Any]:
    """Run the enclosed dask computations on the chosen scheduler; yields the Client or None.

    - ``None`` (default): dask's threaded scheduler with one thread per core (no start-up
      cost; torch limited to 1 thread per task so cores are not oversubscribed);
    - ``"local"``: a ``distributed.LocalCluster`` of ``workers`` processes x ``threads``
      threads with ``memory_limit`` per worker (spills instead of exhausting RAM);
    - ``"tcp://HOST:PORT"`` (or any address): an existing dask.distributed scheduler.
    """
    import torch

    if scheduler is None:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with dask.config.set(scheduler="threads", num_workers=threads or os.cpu_count() or 1):
                yield None
        finally:
            torch.set_num_threads(previous)
        return
    from distributed import Client, LocalCluster

    if scheduler == "local":
        n_workers = workers or max(1, (os.cpu_count() or 1) // (threads or 1))
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads or 1, memory_limit=memory_limit or "auto",
                               dashboard_address=":0", processes=True)
        client = Client(cluster)
        try:
            client.run(_limit_torch_threads)
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = Client(scheduler, timeout="5s")
    except (OSError, TimeoutError) as err:
        raise RemoteServiceError(f"cannot reach the dask scheduler at {scheduler}: {err}; is it running?") from None
    try:
        client.run(_limit_torch_threads)
        yield client
    finally:
        client.close()


def _limit_torch_threads() -> None:
    import torch

    torch.set_num_threads(1)
