"""Moving-window machinery shared by the STARFM-family priors (stfuse.fusion.prior._window):
window sums and standard deviations against direct numpy references, and the row-block
threading (results independent of the thread count, torch's thread setting restored)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from stfuse.fusion.prior import _window as win


def direct_window_sums(x: np.ndarray, r: int) -> np.ndarray:
    """Sum over the (2r+1)^2 window of each inner pixel of a halo block, by brute force."""
    k = 2 * r + 1
    rows, width = x.shape[-2] - 2 * r, x.shape[-1] - 2 * r
    out = np.zeros((*x.shape[:-2], rows, width))
    for dy in range(k):
        for dx in range(k):
            out += x[..., dy : dy + rows, dx : dx + width]
    return out


@pytest.mark.parametrize("r", [0, 1, 2, 3, 7, 12, 25])
def test_box_sum_equals_direct_window_sums(r):
    g = torch.Generator().manual_seed(r)
    x = torch.rand(2, 9 + 2 * r, 13 + 2 * r, generator=g, dtype=torch.float64) - 0.3
    got = win.box_sum(x, r)
    assert got.shape == (2, 9, 13) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), direct_window_sums(x.numpy(), r), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 31, 51, 64])
def test_sum_rows_is_a_fixed_order_sum_of_its_own_rows(k):
    h = torch.rand(k + 20, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    whole = win._sum_rows(h, k)
    np.testing.assert_allclose(whole.numpy(), np.stack([h[i : i + k].sum(0).numpy() for i in range(21)]), rtol=1e-13)
    # every output row depends only on its own k input rows: any slice reproduces it bit for bit
    for start in (0, 3, 11):
        part = win._sum_rows(h[start : start + k + 5], k)
        assert torch.equal(part, whole[start : start + 6])


def test_local_std_equals_numpy_nanstd_over_each_window():
    r = 3
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 8 + 2 * r, 10 + 2 * r, generator=g) * 0.4
    x[0, 4:7, 5:9] = float("nan")
    x[1, :, : 2 * r + 1] = float("nan")  # whole windows missing: std 0
    got = win.local_std(x, r).numpy()
    xn = x.numpy().astype(np.float64)
    expected = np.zeros_like(got)
    for p in range(3):
        for i in range(8):
            for j in range(10):
                w = xn[p, i : i + 2 * r + 1, j : j + 2 * r + 1]
                w = w[np.isfinite(w)]
                expected[p, i, j] = w.std() if w.size >= 2 else 0.0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert (got[1, :, 0] == 0).all()


@pytest.mark.parametrize("radius", [0, 1, 4, 20])
def test_halo_block_equals_constant_padding(radius):
    x = torch.rand(2, 3, 17, 11, generator=torch.Generator().manual_seed(radius))
    padded = torch.nn.functional.pad(x, (radius,) * 4, value=-7.0)
    for y0, y1 in ((0, 17), (0, 5), (5, 9), (12, 17), (16, 17)):
        block = win.halo_block(x, y0, y1, radius, fill=-7.0)
        assert torch.equal(block, padded[..., y0 : y1 + 2 * radius, :])
    assert torch.isnan(win.halo_block(x, 0, 3, max(radius, 1))[..., 0, :]).all()  # default fill: NaN
    # always a copy: the priors fill masked values into it in place, never into the caller's input
    assert win.halo_block(x, 0, 17, radius).untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


def test_prep_blocks_cover_the_rows_in_balanced_blocks():
    for height, min_rows, workers in ((2000, 60, 2), (400, 100, 2), (37, 60, 2), (1000, 64, 1), (5, 8, 4)):
        blocks = win.prep_blocks(height, min_rows, workers)
        assert blocks[0][0] == 0 and blocks[-1][1] == height
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
        sizes = [y1 - y0 for y0, y1 in blocks]
        assert max(sizes) - min(sizes) <= max(sizes) // 2 + 1
        if height >= workers * min_rows:
            assert len(blocks) % workers == 0 and min(sizes) >= min_rows // 2


def test_run_blocks_uses_single_threaded_workers_and_restores_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[tuple[int, int, int]] = []
        out = torch.zeros(40)

        def work(y0: int, y1: int) -> None:
            assert not torch.is_grad_enabled()  # the caller's no_grad holds in the workers
            seen.append((threading.get_ident(), torch.get_num_threads(), y0))
            out[y0:y1] = torch.arange(y0, y1, dtype=out.dtype) * 2

        with torch.no_grad():
            win.run_blocks(work, win.prep_blocks(40, 5, 2), torch.device("cpu"))
        assert torch.equal(out, torch.arange(40, dtype=out.dtype) * 2)
        assert len(seen) == 8 and sorted(y0 for *_, y0 in seen) == list(range(0, 40, 5))
        assert all(n == 1 for _, n, _ in seen)  # one intra-op thread per worker
        assert all(ident != threading.get_ident() for ident, *_ in seen)
        assert torch.get_num_threads() == 2  # restored for the caller
    finally:
        torch.set_num_threads(before)


def test_run_blocks_runs_inline_with_one_thread_and_propagates_errors():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        idents = []
        win.run_blocks(lambda y0, y1: idents.append(threading.get_ident()), [(0, 1), (1, 2)], torch.device("cpu"))
        assert idents == [threading.get_ident()] * 2
        torch.set_num_threads(2)

        def fail(y0: int, y1: int) -> None:
            raise ValueError(f"block {y0}")

        with pytest.raises(ValueError, match="block"):
            win.run_blocks(fail, [(0, 1), (1, 2)], torch.device("cpu"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
