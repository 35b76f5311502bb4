"""Shared, vectorised moving-window machinery for the STARFM-family priors.

Every STARFM-like method needs, for each output pixel ``c``, a sum over the pixels ``n``
of a square window centred on ``c`` of a quantity that depends on both the centre and
the neighbour (the neighbour is used only if it is *spectrally similar* to the centre).
Materialising all neighbourhoods at once (``unfold``) costs ``(2r+1)**2`` times the image
in memory, so the methods here instead:

1. cut the image into **row blocks** of ``block_rows`` rows (:func:`row_blocks`) and give
   each block a NaN-filled **halo** of ``r`` pixels (:func:`halo_block`), so peak memory
   depends on the block size, never on the image size;
2. loop in Python over the **window offsets** ``(dy, dx)`` (:func:`window_offsets`; a few
   hundred iterations, each one a handful of whole-block tensor operations, never a
   per-pixel loop) and take the neighbour image for that offset as a *view* of the halo
   block (:func:`shifted`), accumulating weighted sums in place.

Neighbours outside the image or missing (NaN) are excluded automatically: a comparison
with NaN is false, so their similarity mask is 0 (:func:`similar_mask`).

Everything works on the device and dtype of its inputs (CPU or CUDA, float32), and is
deterministic (no atomics, no random numbers).

Conventions: images are ``(..., H, W)`` tensors; ``radius`` ``r`` is the half window, the
window is ``2r+1`` pixels wide; distances are in pixels.

Typical use (a weighted mean of ``x`` over the similar neighbours of each pixel)::

    offsets = window_offsets(r, stride)
    for y0, y1 in row_blocks(H, block_rows):
        xh = halo_block(x, y0, y1, r)                       # (B, rows+2r, W+2r), NaN outside
        xc = centre(xh, r)                                  # (B, rows, W) view
        thr = local_std(xh, r) * (2 / n_classes)            # similarity threshold per pixel
        num = torch.zeros_like(xc); den = torch.zeros_like(xc); mask = torch.empty_like(xc)
        xz = torch.nan_to_num(xh)                           # quantities to sum: no NaN
        for o in offsets:
            similar_mask(shifted(xh, r, o.dy, o.dx), xc, thr, out=mask)   # float 0/1
            w = inverse_distance_weight(o.distance, r)
            num.addcmul_(shifted(xz, r, o.dy, o.dx), mask, value=w)
            den.add_(mask, alpha=w)
        out[:, y0:y1] = num / den

The STARFM/ESTARFM modules add a second level: per-pixel quantities are prepared for a
taller block and the offset loop runs over cache-sized chunks of it, with ``shifted``
applied to row slices ``xh[..., a : b + 2r, :]`` of the prepared halo block.

Threads: the prepared blocks are independent, so on CPU :func:`run_blocks` hands them to
one Python thread per torch thread, each running torch single-threaded. torch's own
intra-op parallelism splits every one of the thousands of small per-offset operations
and pays a fork/join for each (plus a thread wake-up with ``OMP_WAIT_POLICY=PASSIVE``);
when another process holds a core, every operation waits for the descheduled thread. With
whole blocks per thread the cores never wait for each other (measurements in
docs/benchmarks.md). Results do not depend on the number of threads.

Window sums (:func:`box_sum`, :func:`local_std`) use a cumulative sum along rows and a
fixed-order doubling sum across rows, in float64, so they are exact enough for
``E[x^2] - E[x]^2`` and identical whatever the block boundaries.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

__all__ = [
    "Offset",
    "window_offsets",
    "row_blocks",
    "halo_block",
    "shifted",
    "centre",
    "inverse_distance_weight",
    "box_sum",
    "local_std",
    "global_mean",
    "global_std",
    "similar_mask",
    "default_block_rows",
    "block_workers",
    "prep_blocks",
    "run_blocks",
]


@dataclass(frozen=True)
class Offset:
    """One neighbour position relative to the window centre.

    Attributes:
        dy: row offset in pixels (positive = below the centre).
        dx: column offset in pixels (positive = right of the centre).
        distance: Euclidean distance ``sqrt(dy**2 + dx**2)`` in pixels.
    """

    dy: int
    dx: int
    distance: float


def window_offsets(radius: int, stride: int = 1) -> list[Offset]:
    """Offsets of a square ``(2*radius+1)``-pixel window, optionally subsampled.

    With ``stride`` s > 1 only offsets whose row and column offsets are multiples of s are
    kept (a regular sparse sample of the window that always contains the centre ``(0, 0)``);
    the number of offsets drops from ``(2r+1)**2`` to about ``(2r/s+1)**2``.

    Args:
        radius: half window ``r`` in pixels (>= 0).
        stride: sampling step in pixels (>= 1).

    Returns:
        The offsets, row-major, centre included.
    """
    if radius < 0 or stride < 1:
        raise ValueError(f"need radius >= 0 and stride >= 1, got radius={radius}, stride={stride}")
    steps = list(range(-(radius // stride) * stride, radius + 1, stride))
    return [Offset(dy, dx, math.hypot(dy, dx)) for dy in steps for dx in steps]


def default_block_rows(width: int, planes: int, target_elements: int = 1 << 19) -> int:
    """A row-block height that keeps one block plane set near ``target_elements`` floats.

    ``planes`` is the number of (band x pair x quantity) planes the caller accumulates per
    pixel; blocks of about half a million float32 elements (2 MiB) per working tensor keep
    the per-offset operations cache-friendly while amortising the per-op overhead.
    """
    return max(8, min(512, target_elements // max(1, width * max(1, planes))))


def row_blocks(height: int, block_rows: int) -> Iterator[tuple[int, int]]:
    """Yield ``(y0, y1)`` half-open row ranges of at most ``block_rows`` rows covering ``height``."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    for y0 in range(0, height, block_rows):
        yield y0, min(height, y0 + block_rows)


def block_workers(device: torch.device) -> int:
    """Worker threads :func:`run_blocks` uses on ``device``: torch's intra-op thread count on
    CPU (1 inside dask tasks, which set it so), 1 on other devices (one stream)."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


def prep_blocks(height: int, min_rows: int, workers: int = 1) -> list[tuple[int, int]]:
    """Row blocks of near-equal heights for :func:`run_blocks`: about ``min_rows`` rows each
    (at least half that), their number a multiple of ``workers`` so the threads stay busy."""
    n = max(1, height // max(1, min_rows))
    n = -(-n // workers) * workers
    return list(row_blocks(height, -(-height // n)))


def run_blocks(work: Callable[[int, int], None], blocks: list[tuple[int, int]], device: torch.device) -> None:
    """Call ``work(y0, y1)`` for every block; on CPU spread over :func:`block_workers` threads.

    Each worker thread runs torch single-threaded, so the two (or more) cores work on
    different row blocks with no synchronisation per operation: torch's own intra-op
    parallelism pays a fork/join (and, with ``OMP_WAIT_POLICY=PASSIVE``, a thread wake-up) for
    every one of the thousands of small operations of a moving-window loop, and stalls
    whenever another process holds one of the cores. ``work`` must write disjoint outputs;
    results do not depend on the number of threads. torch's thread setting is restored.
    """
    workers = min(len(blocks), block_workers(device))
    if workers <= 1:
        for y0, y1 in blocks:
            work(y0, y1)
        return
    previous = torch.get_num_threads()
    grad = torch.is_grad_enabled()  # thread-local in torch: carry the caller's no_grad over

    def run(block: tuple[int, int]) -> None:
        with torch.set_grad_enabled(grad):
            work(*block)

    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for _ in pool.map(run, blocks):
                pass
    finally:
        torch.set_num_threads(previous)


def halo_block(x: torch.Tensor, y0: int, y1: int, radius: int, fill: float = float("nan")) -> torch.Tensor:
    """Rows ``y0:y1`` of ``x`` with a ``radius``-pixel halo on all four sides.

    Args:
        x: ``(..., H, W)`` image.
        y0, y1: the block's half-open row range.
        radius: halo width ``r`` in pixels.
        fill: value outside the image (NaN: excluded as neighbour downstream).

    Returns:
        A new contiguous ``(..., y1-y0+2r, W+2r)`` tensor (always a copy, never a view of
        ``x``: callers modify it in place); element ``[..., i, j]`` is ``x[..., y0-r+i, j-r]``
        where that lies inside the image, ``fill`` elsewhere.
    """
    height, width = x.shape[-2:]
    top, bottom = max(0, y0 - radius), min(height, y1 + radius)
    pad_top, pad_bottom = top - (y0 - radius), (y1 + radius) - bottom
    out = torch.empty((*x.shape[:-2], y1 - y0 + 2 * radius, width + 2 * radius), dtype=x.dtype, device=x.device)
    # copy the image part once and fill only the frame (F.pad fills everything, then copies)
    out[..., pad_top : pad_top + bottom - top, radius : radius + width] = x[..., top:bottom, :]
    out[..., :pad_top, :] = fill
    out[..., out.shape[-2] - pad_bottom :, :] = fill
    out[..., pad_top : pad_top + bottom - top, :radius] = fill
    out[..., pad_top : pad_top + bottom - top, radius + width :] = fill
    return out


def shifted(xh: torch.Tensor, radius: int, dy: int, dx: int) -> torch.Tensor:
    """View of a halo block shifted by ``(dy, dx)``: the neighbour image for that offset.

    ``shifted(xh, r, dy, dx)[..., i, j]`` is the value at block pixel ``(i+dy, j+dx)``;
    the result has the block's inner shape ``(..., rows, W)`` (no copy).
    """
    *lead, height, width = xh.shape
    st = xh.stride()
    # One as_strided instead of two slices: this runs for every offset, so its Python and
    # dispatch overhead counts (and is serialised by the GIL when blocks run on threads).
    offset = xh.storage_offset() + (radius + dy) * st[-2] + (radius + dx) * st[-1]
    return xh.as_strided((*lead, height - 2 * radius, width - 2 * radius), st, offset)


def centre(xh: torch.Tensor, radius: int) -> torch.Tensor:
    """The inner (non-halo) part of a halo block, as a view."""
    return shifted(xh, radius, 0, 0)


def inverse_distance_weight(distance: float, scale: float) -> float:
    """STARFM's relative spatial weight ``1 / D`` with ``D = 1 + d / A`` (Gao et al. 2006).

    Args:
        distance: distance ``d`` from the centre, pixels.
        scale: ``A``, the distance (pixels) at which the weight halves; ``inf`` disables it.
    """
    return 1.0 / (1.0 + distance / scale)


def box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the ``(2r+1)**2`` window of each *inner* pixel of a halo block.

    Args:
        x: ``(..., rows+2r, W+2r)`` halo block without NaN (zero-fill missing values first).
        radius: ``r``.

    Returns:
        ``(..., rows, W)`` window sums in float64: a cumulative sum along each full row
        (O(1) per pixel), then the ``2r+1`` row sums added in a fixed order that depends only
        on ``r`` (:func:`_sum_rows`: about ``2 log2(2r+1)`` additions instead of ``2r``). The
        result at a pixel depends only on its window, never on where the row block starts, so
        row-block processing reproduces whole-image processing exactly.
    """
    k = 2 * radius + 1
    c = x.to(torch.float64).cumsum(-1)
    h = torch.empty((*c.shape[:-1], c.shape[-1] - k + 1), dtype=c.dtype, device=c.device)
    h[..., 0] = c[..., k - 1]  # (..., rows+2r, W) horizontal window sums: c[j+k-1] - c[j-1]
    torch.sub(c[..., k:], c[..., : c.shape[-1] - k], out=h[..., 1:])
    return _sum_rows(h, k)


def _sum_rows(h: torch.Tensor, k: int) -> torch.Tensor:
    """Sums of ``k`` consecutive rows of ``h`` (``(..., n+k-1, W)`` -> ``(..., n, W)``).

    Binary decomposition: ``s_2m[i] = s_m[i] + s_m[i+m]`` (sums of ``m`` rows) are built by
    doubling and the result adds the ``s_m`` of the set bits of ``k`` at increasing
    offsets. Each output row is the same fixed-order sum of its own ``k`` input rows.
    """
    rows = h.shape[-2] - k + 1
    out: torch.Tensor | None = None
    offset, m, s = 0, 1, h
    while True:
        if k & m:
            part = s[..., offset : offset + rows, :]
            out = part.clone() if out is None else out.add_(part)
            offset += m
        if 2 * m > k:
            break
        s = s[..., : s.shape[-2] - m, :] + s[..., m:, :]
        m *= 2
    assert out is not None
    return out


def local_std(xh: torch.Tensor, radius: int) -> torch.Tensor:
    """NaN-aware population standard deviation over each inner pixel's window.

    Args:
        xh: ``(..., rows+2r, W+2r)`` halo block, NaN = missing.
        radius: ``r``.

    Returns:
        ``(..., rows, W)`` standard deviation of the valid window values (0 where fewer
        than two are valid). Planes are processed one at a time (float64 temporaries of one
        plane only).
    """
    lead = xh.shape[:-2]
    planes = xh.reshape(-1, *xh.shape[-2:])
    rows, width = xh.shape[-2] - 2 * radius, xh.shape[-1] - 2 * radius
    out = torch.empty((planes.shape[0], rows, width), dtype=xh.dtype, device=xh.device)
    moments = torch.empty((3, *xh.shape[-2:]), dtype=torch.float64, device=xh.device)
    for i, plane in enumerate(planes):
        valid = torch.isfinite(plane)
        moments[0].copy_(valid)
        moments[1].copy_(plane).masked_fill_(~valid, 0.0)
        torch.mul(moments[1], moments[1], out=moments[2])
        n, s1, s2 = box_sum(moments, radius)  # one pass for count, sum and sum of squares
        n_safe = n.clamp_min(1.0)
        mean = s1.div_(n_safe)
        var = s2.div_(n_safe).sub_(mean * mean).clamp_min_(0.0)
        var.masked_fill_(n < 2, 0.0)
        out[i] = var.sqrt_()
    return out.reshape(*lead, rows, width)


def _plane_moments(x: torch.Tensor, second: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count, sum and sum of squares (float64) of the finite values of each ``(H, W)`` plane
    (the sum of squares only with ``second``, else zeros).

    Planes are reduced one at a time so the temporary memory is one plane, not the image.
    """
    lead = x.shape[:-2]
    planes = x.reshape(-1, *x.shape[-2:])
    n = torch.empty(planes.shape[0], dtype=torch.float64, device=x.device)
    s1 = torch.empty_like(n)
    s2 = torch.zeros_like(n)
    for i, plane in enumerate(planes):
        valid = torch.isfinite(plane)
        z = torch.where(valid, plane, torch.zeros((), dtype=plane.dtype, device=plane.device))
        n[i] = valid.sum()
        s1[i] = z.sum(dtype=torch.float64)
        if second:
            s2[i] = (z * z).sum(dtype=torch.float64)
    return n.reshape(lead), s1.reshape(lead), s2.reshape(lead)


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of the finite values of each ``(H, W)`` plane of ``(..., H, W)`` (0 where none), float64."""
    n, s1, _ = _plane_moments(x, second=False)
    return s1 / n.clamp_min(1.0)


def global_std(x: torch.Tensor) -> torch.Tensor:
    """Population standard deviation of the finite values of each ``(H, W)`` plane.

    Args:
        x: ``(..., H, W)``.

    Returns:
        ``(...)`` standard deviations in ``x.dtype`` (0 for planes without finite values).
    """
    n, s1, s2 = _plane_moments(x)
    mean = s1 / n.clamp_min(1.0)
    var = s2 / n.clamp_min(1.0) - mean * mean
    return var.clamp_min(0.0).sqrt().to(x.dtype)


def similar_mask(
    neighbour: torch.Tensor,
    centre_value: torch.Tensor,
    threshold: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """Spectral-similarity mask ``|F(n) - F(c)| <= threshold`` as a float 0/1 tensor, in place.

    A float mask is both faster to build than a bool one and directly usable in
    ``addcmul_``. NaN on either side gives 0 (the neighbour is excluded); ``<=`` makes the
    centre similar to itself even where the threshold is 0 (a uniform window).

    Args:
        neighbour: ``(..., rows, W)`` neighbour values (a :func:`shifted` view).
        centre_value: ``(..., rows, W)`` centre values.
        threshold: broadcastable to ``(..., rows, W)``: similarity threshold (same units).
        out: preallocated float ``(..., rows, W)`` tensor receiving the mask.

    Returns:
        ``out``.
    """
    torch.sub(neighbour, centre_value, out=out)
    out.abs_()
    return torch.le(out, threshold, out=out)

