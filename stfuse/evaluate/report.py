"""Figures and an HTML page that show what a prediction looks like and how good it is.

Everything renders with matplotlib's Agg canvas on a bare :class:`matplotlib.figure.Figure`
(no pyplot, no display, no global backend change), so it runs on headless servers.

- :func:`quicklook` — one output file as a PNG (true colour or one band, percentile stretch);
- :func:`quicklook_panel` — truth | prediction | abs error | sigma side by side, true- and
  false-colour rows, shared colour scales;
- :func:`scatter_density` — hexbin of predicted vs true reflectance per band;
- :func:`reliability_diagram` — expected vs observed interval coverage
  (:func:`stfuse.evaluate.metrics.reliability_curve`);
- :func:`holdout_chart` — metrics by withheld date (:func:`stfuse.evaluate.holdout.holdout`);
- :func:`timeseries_plot` — reflectance/NDVI over time at a few pixels of a folder of daily
  COGs, with the sigma band shaded and the Landsat observations as dots;
- :func:`evaluation_report`, :func:`holdout_report` — the PNGs plus ``report.html``.

``tools/report.py`` (``make report``) regenerates the README figures with these functions.
Arrays are (band, y, x) float reflectance (0..1) with NaN for missing pixels.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from stfuse import __version__
from stfuse.data import catalog as cat
from stfuse.data.cube import load_fine, read_errors
from stfuse.data.sensors import PROVIDERS
from stfuse.errors import CorruptFileError, InputError, MissingFileError, OutputError
from stfuse.evaluate.files import evaluate_files, read_scored_pair
from stfuse.evaluate.holdout import HoldoutResult, format_holdout
from stfuse.evaluate.metrics import reliability_curve
from stfuse.output.io import DEFAULT_INTEGER_SCALE, atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("stfuse")

PathLike = str | os.PathLike[str]
DPI = 100
PERCENTILES: tuple[float, float] = (2.0, 98.0)
"""Default display stretch: these percentiles of the valid values map to black and white."""
TRUE_COLOUR = ("red", "green", "blue")
FALSE_COLOUR = ("nir08", "red", "green")
_BAND_COLOURS = {"blue": "tab:blue", "green": "tab:green", "red": "tab:red", "nir08": "tab:purple",
                 "swir16": "tab:brown", "swir22": "tab:olive"}


# --------------------------------------------------------------------------- helpers


REPORT_EXTRA_HINT = "pip install 'stfuse[report]'"


def require_matplotlib() -> None:
    """Check that the ``report`` extra (matplotlib, which brings pillow) is installed; every
    figure and PNG here calls it first. :class:`InputError` with the install command if not."""
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as err:
        raise InputError(f"figures and quicklooks need matplotlib and pillow ({err.name or 'one of them'} is missing): "
                         f"{REPORT_EXTRA_HINT}") from None


def _figure(width: float, height: float) -> "Figure":
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: "Figure", path: PathLike, *, overwrite: bool = True, colours: int = 256) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically (written beside it, then renamed).

    The image is reduced to an adaptive palette of ``colours`` (no dithering): figures of
    noisy imagery stay a few hundred KB instead of several MB. File mode follows the umask.
    """
    from PIL import Image

    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB")
    if colours:
        image = image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_path(path, overwrite=overwrite) as tmp:
        image.save(tmp, format="PNG", optimize=True)
        _umask_mode(tmp)
    return path


def _umask_mode(path: Path) -> None:
    """Give ``path`` the usual mode for new files (0666 minus the umask); temp files are 0600."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _step(shape: tuple[int, ...], max_px: int) -> int:
    return max(1, math.ceil(max(shape[-2:]) / max_px))


def stretch_limits(arrays: Sequence[np.ndarray], percentiles: tuple[float, float] = PERCENTILES) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) display limits over the finite values of all ``arrays``.

    ``arrays``: (C, H, W) arrays with the same C. Returns two (C,) arrays; high > low always.
    """
    channels = arrays[0].shape[0]
    lo, hi = np.zeros(channels), np.ones(channels)
    for c in range(channels):
        values = np.concatenate([np.asarray(a[c], np.float64).ravel() for a in arrays])
        values = values[np.isfinite(values)]
        if values.size:
            lo[c], hi[c] = np.percentile(values, percentiles)
        if not hi[c] > lo[c]:
            hi[c] = lo[c] + 1e-6
    return lo, hi


def to_display(array: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(C, H, W) with C = 1 or 3 -> (H, W, 4) RGBA float 0..1, stretched; NaN -> transparent."""
    a = (np.asarray(array, np.float64) - lo[:, None, None]) / (hi - lo)[:, None, None]
    rgb = np.clip(np.moveaxis(a, 0, -1), 0, 1)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    alpha = np.isfinite(rgb).all(axis=-1, keepdims=True).astype(np.float64)
    return np.concatenate([np.nan_to_num(rgb), alpha], axis=-1)


def composites(band_names: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Displays available for ``band_names``: ``[(label, band indices)]``.

    True colour (red, green, blue) and false colour (nir08, red, green) when their bands are
    present; otherwise the first band as greyscale.
    """
    names = list(band_names)
    out = []
    for label, wanted in (("true colour", TRUE_COLOUR), ("false colour", FALSE_COLOUR)):
        if all(b in names for b in wanted):
            out.append((f"{label} ({','.join(wanted)})", [names.index(b) for b in wanted]))
    return out or [(names[0], [0])]


def _rms(array: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    """RMS over the bands ``idx`` of a (B, H, W) array -> (H, W)."""
    return np.sqrt(np.mean(np.asarray(array, np.float64)[list(idx)] ** 2, axis=0))


def _pool(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def _subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray | slice:
    if n <= max_points:
        return slice(None)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


# --------------------------------------------------------------------------- one file


def _read_display(path: Path, bands: Sequence[str] | None, max_size: int) -> tuple[np.ndarray, list[str]]:
    """Read the display bands of ``path`` (decimated to at most ``max_size`` px) as reflectance."""
    if not path.exists():
        raise MissingFileError(f"input file not found: {path}")
    from stfuse.output.inspect import check_complete, read_errors_named

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise CorruptFileError(f"cannot read {path} as a raster ({err}); is the file complete?") from None
    with src, read_errors_named(path):
        check_complete(src, path)  # a decimated read of a truncated COG may touch only its (complete) overviews
        names = [d or f"b{i + 1}" for i, d in enumerate(src.descriptions)]
        reflectance = [n for n in names if not n.endswith("_sigma") and n != "quality"] or names
        if bands:
            chosen = []
            for b in bands:
                if b in names:
                    chosen.append(names.index(b))
                elif str(b).isdigit() and 1 <= int(b) <= src.count:
                    chosen.append(int(b) - 1)
                else:
                    raise InputError(f"band {b!r} not in {path} (it has {', '.join(names)}; or give 1-based numbers)")
            if len(chosen) not in (1, 3):
                raise InputError(f"--bands takes 1 band (greyscale) or 3 (r,g,b), got {len(chosen)}: {','.join(map(str, bands))}")
        elif all(b in reflectance for b in TRUE_COLOUR):
            chosen = [names.index(b) for b in TRUE_COLOUR]
        else:
            chosen = [names.index(reflectance[0])]
        step = _step((src.height, src.width), max_size)
        shape = (len(chosen), math.ceil(src.height / step), math.ceil(src.width / step))
        raw = src.read([i + 1 for i in chosen], out_shape=shape, resampling=Resampling.nearest)
        data = raw.astype(np.float64)
        if src.nodata is not None and not np.isnan(src.nodata):
            data[raw == src.nodata] = np.nan
        if np.issubdtype(raw.dtype, np.integer):
            scales = np.array([src.scales[i] if src.scales[i] not in (None, 1.0) else DEFAULT_INTEGER_SCALE for i in chosen])
            offsets = np.array([src.offsets[i] or 0.0 for i in chosen])
            data = data * scales[:, None, None] + offsets[:, None, None]
    return data, [names[i] for i in chosen]


def quicklook(
    path: PathLike,
    out_png: PathLike,
    *,
    bands: Sequence[str] | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    max_size: int = 2048,
    overwrite: bool = True,
) -> Path:
    """Write a PNG of a raster: true colour if it has red/green/blue bands, else its first band grey.

    ``bands``: 1 or 3 band names (descriptions) or 1-based numbers to show instead.
    Each channel is stretched between the ``percentiles`` of its valid pixels; nodata/NaN is
    transparent. The PNG has one pixel per raster pixel, decimated so that neither side
    exceeds ``max_size``. Returns ``out_png``.
    """
    require_matplotlib()
    from PIL import Image

    path, out_png = Path(path), Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise InputError(f"quicklook output {out_png} must end in .png")
    if not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise InputError(f"percentiles {percentiles} must be increasing within 0..100")
    data, _ = _read_display(path, bands, max_size)
    lo, hi = stretch_limits([data], percentiles)
    rgba = (to_display(data, lo, hi) * 255).round().astype(np.uint8)
    with atomic_path(out_png, overwrite=overwrite) as tmp:
        Image.fromarray(rgba, "RGBA").save(tmp, format="PNG", optimize=True)
        _umask_mode(tmp)
    return out_png


# --------------------------------------------------------------------------- panels


def quicklook_panel(
    truth: np.ndarray,
    mean: np.ndarray,
    sigma: np.ndarray | None,
    band_names: Sequence[str],
    out_png: PathLike,
    *,
    title: str = "",
    max_px: int = 400,
    panel_inches: float = 3.0,
) -> Path:
    """Truth | prediction | abs error | sigma side by side; one row per display (:func:`composites`).

    Truth and prediction share one stretch (from the truth); abs error and sigma share one
    colour scale per row (0 .. 98th percentile of both), in reflectance; with several bands
    in a row they are the RMS over those bands. Images are decimated to ``max_px`` px.
    """
    require_matplotlib()
    from matplotlib import colormaps

    step = _step(truth.shape, max_px)
    t, m = truth[:, ::step, ::step], mean[:, ::step, ::step]
    s = sigma[:, ::step, ::step] if sigma is not None else None
    rows = composites(band_names)
    cols = 4 if s is not None else 3
    fig = _figure(panel_inches * cols + 0.8, panel_inches * len(rows) + (0.5 if title else 0.2))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    cmap = colormaps["magma"].with_extremes(bad=(0.85, 0.85, 0.85, 1))
    for r, (label, idx) in enumerate(rows):
        lo, hi = stretch_limits([t[idx]])
        err = _rms(m - t, idx)
        spread = _rms(s, idx) if s is not None else None
        vmax = float(np.nanpercentile(_pool([err] + ([spread] if spread is not None else [])), 98)) if np.isfinite(err).any() else 1.0
        vmax = vmax if vmax > 0 else 1e-3
        images = [("truth", to_display(t[idx], lo, hi)), ("prediction", to_display(m[idx], lo, hi))]
        for c, (name, img) in enumerate(images):
            axes[r, c].imshow(img, interpolation="nearest")
            axes[r, c].set_title(f"{name}\n{label}", fontsize=9)
        mappable = axes[r, 2].imshow(np.ma.masked_invalid(err), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        axes[r, 2].set_title("|prediction - truth|", fontsize=9)
        if spread is not None:
            axes[r, 3].imshow(np.ma.masked_invalid(spread), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            axes[r, 3].set_title("sigma (1 s.d.)", fontsize=9)
        fig.colorbar(mappable, ax=axes[r, 2:], shrink=0.8, label="reflectance")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor((0.85, 0.85, 0.85))
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, out_png)


def scatter_density(
    truth: np.ndarray,
    mean: np.ndarray,
    band_names: Sequence[str],
    out_png: PathLike,
    *,
    valid: np.ndarray | None = None,
    title: str = "",
    max_points: int = 200_000,
    gridsize: int = 60,
) -> Path:
    """Hexbin density of predicted vs true reflectance, one panel per band, with the 1:1 line.

    ``truth``, ``mean``: (B, H, W) or (B, N) reflectance; ``valid``: optional bool mask of
    the same shape or (H, W). At most ``max_points`` random pixels per band are drawn (seeded);
    RMSE/bias in the panel are over all valid pixels.
    """
    require_matplotlib()
    from matplotlib.colors import LogNorm

    n_bands = len(band_names)
    cols = {1: 1, 2: 2, 4: 2}.get(n_bands, 3)
    rows = math.ceil(n_bands / cols)
    fig = _figure(3.2 * cols, 3.0 * rows + (0.4 if title else 0))
    axes = fig.subplots(rows, cols, squeeze=False)
    for b, name in enumerate(band_names):
        ax = axes[b // cols, b % cols]
        t, m = np.asarray(truth[b], np.float64).ravel(), np.asarray(mean[b], np.float64).ravel()
        ok = np.isfinite(t) & np.isfinite(m)
        if valid is not None:
            v = np.asarray(valid)
            ok &= (v[b] if v.ndim == np.ndim(truth) else v).ravel().astype(bool)
        t, m = t[ok], m[ok]
        if t.size == 0:
            ax.text(0.5, 0.5, "no valid pixel", ha="center", va="center", transform=ax.transAxes)
        else:
            err = m - t
            pick = _subsample(t.size, max_points)
            lo, hi = np.percentile(np.concatenate([t, m]), [0.2, 99.8])
            pad = 0.03 * (hi - lo or 1)
            ext = (lo - pad, hi + pad)
            hb = ax.hexbin(t[pick], m[pick], gridsize=gridsize, extent=(*ext, *ext), cmap="viridis", norm=LogNorm(), mincnt=1)
            ax.plot(ext, ext, color="k", lw=0.8, ls="--")
            ax.set_xlim(ext)
            ax.set_ylim(ext)
            ax.set_aspect("equal")
            ax.text(0.03, 0.97, f"RMSE {np.sqrt(np.mean(err ** 2)):.4f}\nbias {np.mean(err):+.4f}\nn {t.size}",
                    transform=ax.transAxes, va="top", fontsize=7, bbox=dict(fc="white", alpha=0.9, lw=0))
            cbar = fig.colorbar(hb, ax=ax, shrink=0.8)
            cbar.set_label("pixels", fontsize=7)
            cbar.ax.tick_params(labelsize=7)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("true reflectance", fontsize=8)
        ax.set_ylabel("predicted reflectance", fontsize=8)
        ax.tick_params(labelsize=7)
    for b in range(n_bands, rows * cols):
        axes[b // cols, b % cols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, out_png)


def reliability_diagram(
    mean: np.ndarray,
    sigma: np.ndarray,
    truth: np.ndarray,
    band_names: Sequence[str],
    out_png: PathLike,
    *,
    valid: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Expected vs observed coverage of the Gaussian intervals ``mean ± z sigma``, per band and all bands.

    Shapes as :func:`scatter_density`; uses :func:`stfuse.evaluate.metrics.reliability_curve`. Points
    below the diagonal: over-confident (sigma too small); above: under-confident.
    """
    levels = np.linspace(0.05, 0.95, 19)
    fig = _figure(4.6, 4.4)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1, label="calibrated")
    ax.fill_between([0, 1], [0, 0], [0, 1], color="tab:red", alpha=0.06, lw=0)
    ax.text(0.62, 0.18, "over-confident\n(sigma too small)", fontsize=8, color="tab:red", ha="center")
    ax.text(0.3, 0.82, "under-confident", fontsize=8, color="tab:blue", ha="center")
    ok = np.isfinite(mean) & np.isfinite(sigma) & np.isfinite(truth)
    if valid is not None:
        ok &= np.broadcast_to(np.asarray(valid, bool), ok.shape)
    for b, name in enumerate(band_names):
        exp, obs = reliability_curve(mean[b], sigma[b], truth[b], ok[b], levels=levels)
        ax.plot(exp, obs, marker=".", ms=4, lw=1, color=_BAND_COLOURS.get(name), label=name)
    exp, obs = reliability_curve(mean, sigma, truth, ok, levels=levels)
    ax.plot(exp, obs, marker="o", ms=4, lw=2.2, color="k", label="all bands")
    for level in (0.68, 0.95):
        i = int(np.argmin(np.abs(levels - level)))
        ax.annotate(f"{obs[i]:.0%}", (exp[i], obs[i]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("expected coverage (nominal interval level)")
    ax.set_ylabel("observed coverage (truth inside interval)")
    ax.set_title(title or "reliability of the uncertainty band", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


def holdout_chart(rows: Sequence[dict[str, Any]], out_png: PathLike, *, title: str = "") -> Path:
    """RMSE, bias and 95 % interval coverage by withheld date, a line per band (``all`` in black).

    ``rows``: :meth:`stfuse.evaluate.holdout.HoldoutResult.rows` (or ``holdout.csv`` read back).
    """
    require_matplotlib()
    from matplotlib.dates import AutoDateLocator, DateFormatter

    panels = [("rmse", "RMSE (reflectance)", None), ("bias", "bias (pred - truth)", 0.0),
              ("coverage_95", "interval coverage (95 %; 68 % dashed)", 0.95)]
    fig = _figure(9.5, 3.2 + (0.3 if title else 0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    bands = list(dict.fromkeys(str(r["band"]) for r in rows))
    for ax, (key, label, ref) in zip(axes, panels):
        for band in bands:
            sel = [r for r in rows if str(r["band"]) == band]
            dates = [dt.date.fromisoformat(str(r["date"])) for r in sel]
            values = [float(r[key]) if r[key] not in (None, "") else np.nan for r in sel]
            style = dict(color="k", lw=2.2, marker="o") if band == "all" else dict(color=_BAND_COLOURS.get(band), lw=1, marker=".")
            ax.plot(dates, values, label=band, **style)
        if ref is not None:
            ax.axhline(ref, color="0.4", ls="--", lw=1)
        if key == "coverage_95":
            sel = [r for r in rows if str(r["band"]) == "all"]
            ax.plot([dt.date.fromisoformat(str(r["date"])) for r in sel],
                    [float(r["coverage_68"]) if r["coverage_68"] not in (None, "") else np.nan for r in sel],
                    color="k", lw=1.5, ls="--", marker="s", ms=4, label="all, 68 %")
            ax.axhline(0.68, color="0.4", ls=":", lw=1)
            ax.set_ylim(0, 1.02)
        ax.set_title(label, fontsize=9)
        all_dates = sorted({dt.date.fromisoformat(str(r["date"])) for r in rows})
        if len(all_dates) <= 8:
            ax.set_xticks(all_dates)
        else:
            ax.xaxis.set_major_locator(AutoDateLocator(maxticks=6))
        ax.xaxis.set_major_formatter(DateFormatter("%m-%d"))
        ax.tick_params(labelsize=8)
        ax.set_xlabel("withheld Landsat date", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- time series


_DAY_FILE = re.compile(r"stfuse_(\d{4}-\d{2}-\d{2})\.tif$")


def _ndvi(red: np.ndarray, nir: np.ndarray, s_red: np.ndarray | None = None, s_nir: np.ndarray | None = None):
    """NDVI and its 1-sigma by first-order propagation (independent red/NIR errors)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        total = nir + red
        ndvi = (nir - red) / total
        if s_red is None or s_nir is None:
            return ndvi, None
        sigma = np.sqrt((2 * red / total**2 * s_nir) ** 2 + (2 * nir / total**2 * s_red) ** 2)
    return ndvi, sigma


def _landsat_at(pixels: Sequence[tuple[int, int]], src_meta: dict[str, Any], bands: Sequence[str], catalog: PathLike | None,
                first: dt.date, last: dt.date) -> tuple[list[dt.date], np.ndarray]:
    """Landsat reflectance (time, band, pixel) at ``pixels`` of the prediction grid, clear pixels only."""
    from odc.geo.geobox import GeoBox

    rows = [p[0] for p in pixels]
    cols = [p[1] for p in pixels]
    r0, r1, c0, c1 = min(rows), max(rows) + 1, min(cols), max(cols) + 1
    geobox = GeoBox((src_meta["height"], src_meta["width"]), src_meta["transform"], src_meta["crs"].to_wkt())[r0:r1, c0:c1]
    bbox = transform_bounds(src_meta["crs"], "EPSG:4326", *geobox.boundingbox)
    provider = PROVIDERS.get(str(catalog)) if catalog is not None else None
    fine_id = str(provider["fine"]) if provider else "landsat-c2-l2"
    found = cat.search(catalog, cat.SearchQuery(start=first, end=last, bbox=cat.check_bbox(bbox)), [fine_id])
    items = found.get(fine_id) or []
    if not items:
        return [], np.empty((0, len(bands), len(pixels)))
    fine = load_fine(items, bands=bands, geobox=geobox)
    with read_errors():
        values = fine.reflectance.values  # (time, band, y, x): small window
    days = [np.datetime64(t, "D").item() for t in fine.time.values]
    picked = values[:, :, [r - r0 for r in rows], [c - c0 for c in cols]]
    return days, picked


def read_pixel_series(files: Sequence[tuple[str, Path]], bands: Sequence[str], pixels: Sequence[tuple[int, int]],
                      shape: tuple[int, int]) -> tuple[list[dt.date], np.ndarray, np.ndarray]:
    """Values and sigmas of ``bands`` at ``pixels`` (row, col) in daily COGs ``files`` ((ISO day,
    path) in date order): ``(days, values, sigmas)``, arrays (day, band, pixel), NaN where absent.
    Every file must be ``shape`` (height, width) and hold the bands."""
    days: list[dt.date] = []
    values = np.full((len(files), len(bands), len(pixels)), np.nan)
    sigmas = np.full_like(values, np.nan)
    for t, (day, path) in enumerate(files):
        days.append(dt.date.fromisoformat(day))
        with rasterio.open(path) as src:
            desc = list(src.descriptions)
            if (src.height, src.width) != tuple(shape):
                raise InputError(f"{path} is {src.height} x {src.width}, not {shape[0]} x {shape[1]} like {files[0][1]}")
            def pixel(index: int, window: Window) -> float:  # reflectance: x band scale + offset, NaN at nodata
                raw = src.read(index + 1, window=window)[0, 0]
                if src.nodata is not None and not np.isnan(src.nodata) and raw == src.nodata:
                    return np.nan
                return float(raw) * (src.scales[index] or 1.0) + (src.offsets[index] or 0.0)

            for j, b in enumerate(bands):
                if b not in desc:
                    raise InputError(f"{path} has no band {b!r}; all the daily files must have the same bands")
                for k, (row, col) in enumerate(pixels):
                    window = Window(col, row, 1, 1)
                    values[t, j, k] = pixel(desc.index(b), window)
                    if f"{b}_sigma" in desc:
                        sigmas[t, j, k] = pixel(desc.index(f"{b}_sigma"), window)
    return days, values, sigmas


def timeseries_plot(
    pred_dir: PathLike,
    catalog: PathLike | None,
    pixels: Sequence[tuple[int, int]],
    out_png: PathLike,
    *,
    bands: Sequence[str] | None = None,
    observations: bool = True,
    n_sigma: float = 1.0,
    title: str = "",
) -> Path:
    """Reflectance (and NDVI) over time at a few pixels of a folder of daily ``stfuse predict`` COGs.

    ``pred_dir``: holds ``stfuse_YYYY-MM-DD.tif`` (reflectance bands, then ``<band>_sigma``).
    ``pixels``: (row, col) positions in that grid. ``catalog``: the catalog predicted from
    (None = bundled sample_scenes, as ``stfuse predict``); its clear Landsat observations at
    the pixels are drawn as dots (``observations=False`` skips the search). ``bands``: bands to
    plot (default red and nir08 when present, else all). Lines are the prediction, the shaded
    band ``± n_sigma`` sigma. With red and nir08 an NDVI column is added (sigma propagated to
    first order). One row per pixel.
    """
    require_matplotlib()
    from matplotlib.dates import DateFormatter

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise MissingFileError(f"prediction folder {pred_dir} not found; give the -o folder of `stfuse predict`")
    files = sorted((m.group(1), p) for p in pred_dir.iterdir() if (m := _DAY_FILE.search(p.name)))
    if not files:
        raise InputError(f"{pred_dir} has no stfuse_YYYY-MM-DD.tif files; run `stfuse predict -o {pred_dir}` first")
    if not pixels:
        raise InputError("give at least one pixel (row, col)")
    with rasterio.open(files[0][1]) as src:
        meta = dict(height=src.height, width=src.width, transform=src.transform, crs=src.crs)
        names = [d or f"b{i + 1}" for i, d in enumerate(src.descriptions)]
    for row, col in pixels:
        if not (0 <= row < meta["height"] and 0 <= col < meta["width"]):
            raise InputError(f"pixel (row {row}, col {col}) is outside the {meta['height']} x {meta['width']} grid of {files[0][1]}")
    reflectance = [n for n in names if not n.endswith("_sigma") and n != "quality"]
    if bands:
        unknown = [b for b in bands if b not in reflectance]
        if unknown:
            raise InputError(f"band {unknown[0]!r} not in {files[0][1]} (it has {', '.join(reflectance)})")
        shown = list(bands)
    else:
        shown = [b for b in ("red", "nir08") if b in reflectance] or reflectance
    with_ndvi = "red" in reflectance and "nir08" in reflectance
    need = list(dict.fromkeys(shown + (["red", "nir08"] if with_ndvi else [])))
    days, values, sigmas = read_pixel_series(files, need, pixels, (meta["height"], meta["width"]))
    obs_days: list[dt.date] = []
    obs = np.empty((0, len(need), len(pixels)))
    if observations and meta["crs"] is not None:
        obs_days, obs = _landsat_at(pixels, meta, need, catalog, days[0], days[-1])
    cols = 2 if with_ndvi else 1
    fig = _figure(5.2 * cols + 1.2, 2.4 * len(pixels) + (0.4 if title else 0.1))
    axes = fig.subplots(len(pixels), cols, squeeze=False, sharex=True)
    for k, (row, col) in enumerate(pixels):
        ax = axes[k, 0]
        for b in shown:
            j = need.index(b)
            colour = _BAND_COLOURS.get(b)
            ax.plot(days, values[:, j, k], color=colour, lw=1.2, label=f"{b} prediction")
            ax.fill_between(days, values[:, j, k] - n_sigma * sigmas[:, j, k], values[:, j, k] + n_sigma * sigmas[:, j, k],
                            color=colour, alpha=0.25, lw=0)
            if len(obs_days):
                ax.plot(obs_days, obs[:, j, k], ls="none", marker="o", ms=5, mfc=colour, mec="k", mew=0.6, label=f"{b} Landsat")
        ax.set_ylabel("reflectance", fontsize=8)
        ax.set_title(f"pixel (row {row}, col {col})", fontsize=9)
        if with_ndvi:
            ax2 = axes[k, 1]
            r, n = need.index("red"), need.index("nir08")
            ndvi, s = _ndvi(values[:, r, k], values[:, n, k], sigmas[:, r, k], sigmas[:, n, k])
            ax2.plot(days, ndvi, color="tab:green", lw=1.2, label="NDVI prediction")
            if s is not None:
                ax2.fill_between(days, ndvi - n_sigma * s, ndvi + n_sigma * s, color="tab:green", alpha=0.25, lw=0)
            if len(obs_days):
                ndvi_obs, _ = _ndvi(obs[:, r, k], obs[:, n, k])
                ax2.plot(obs_days, ndvi_obs, ls="none", marker="o", ms=5, mfc="tab:green", mec="k", mew=0.6, label="NDVI Landsat")
            ax2.set_ylabel("NDVI", fontsize=8)
            ax2.set_title(f"NDVI, pixel (row {row}, col {col})", fontsize=9)
        for a in axes[k]:
            a.grid(alpha=0.3)
            a.tick_params(labelsize=7)
            a.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    handles = [axes[0, c].get_legend_handles_labels() for c in range(cols)]
    for c, (h, lab) in enumerate(handles):
        axes[0, c].legend(h, lab, fontsize=7, loc="best", ncol=2)
    fig.suptitle(title or f"prediction ± {n_sigma:g} sigma (shaded) and clear Landsat observations (dots)", fontsize=10)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- HTML


@dataclass
class Section:
    """One part of ``report.html``: a heading, optional text, an HTML table and images (PNG paths
    relative to the page's folder, embedded into the page by :func:`write_html`)."""

    title: str
    text: str = ""
    table: str = ""
    images: list[str] = field(default_factory=list)


def metrics_table(result: dict[str, Any]) -> str:
    """An HTML table of a :func:`stfuse.evaluate.metrics.score_arrays` result (plus coverage when present)."""
    head = ["band", "RMSE", "MAE", "bias", "CC", "SSIM", "PSNR (dB)"]
    rows = []
    for entry in [*result["bands"], {**result["mean"], "name": "mean"}]:
        label = entry.get("name") or entry.get("band")
        rows.append([label, f"{entry['rmse']:.5f}", f"{entry['mae']:.5f}", f"{entry['bias']:+.5f}", f"{entry['cc']:.4f}",
                     f"{entry['ssim']:.4f}", f"{entry['psnr']:.2f}"])
    body = _html_table(head, rows)
    sam = "n/a (one band)" if result.get("sam_deg") is None or len(result["bands"]) < 2 else f"{result['sam_deg']:.3f}°"
    extra = f"ERGAS {result['ergas']:.4f}, SAM {sam}, invalid pixels {result['invalid_pixels']}"
    coverage = result.get("coverage")
    if coverage:
        extra += "; interval coverage " + ", ".join(f"{float(k):.0%}: {v:.1%}" for k, v in coverage.items())
    return body + f"<p>{html.escape(extra)}</p>"


def _html_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _data_uri(png: Path) -> str:
    """``data:image/png;base64,...`` of a PNG file, so the page carries the image itself."""
    try:
        data = png.read_bytes()
    except OSError as err:
        raise OutputError(f"cannot embed {png} in the report: {err.strerror}; write the figure first") from None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def write_html(path: PathLike, title: str, sections: Sequence[Section], *, overwrite: bool = True,
               command: str | None = None) -> Path:
    """Write a self-contained HTML page: every section's images are embedded as base64 PNG
    ``data:`` URIs (read from the page's folder; the PNG files stay beside it), so the page
    can be mailed or moved alone. ``command``: the command line that produced the report,
    shown under the title (None: "called from Python")."""
    path = Path(path)
    made = f"stfuse {__version__}, {dt.datetime.now().replace(microsecond=0).isoformat()}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "th{background:#f2f2f2}img{max-width:100%;border:1px solid #eee;margin:0.3em 0}h2{border-bottom:1px solid #ddd}"
        "pre{background:#f6f6f6;padding:0.4em 0.6em;white-space:pre-wrap}</style>",
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(made)}</p>",
        ('<p>Command:</p><pre class="command">' + html.escape(command) + "</pre>") if command
        else '<p class="command">Called from Python (no command line).</p>',
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        parts.append(section.table)
        for image in section.images:
            uri = _data_uri(path.parent / image)
            parts.append(f'<p><img src="{uri}" alt="{html.escape(Path(image).stem)}" title="{html.escape(str(image))}"></p>')
    parts.append("</body></html>")
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
        _umask_mode(tmp)
    return path


def _check_report_dir(out_dir: Path, overwrite: bool) -> None:
    if (out_dir / "report.html").exists() and not overwrite:
        raise OutputError(f"{out_dir / 'report.html'} already exists; pass --overwrite (Python: overwrite=True) to replace the report")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create report folder {out_dir}: {err.strerror}") from None


def evaluation_report(
    prediction: PathLike,
    truth: PathLike,
    out_dir: PathLike,
    *,
    title: str | None = None,
    result: dict[str, Any] | None = None,
    overwrite: bool = False,
    command: str | None = None,
    **matching: Any,
) -> Path:
    """PNGs (quicklook panel, scatter, reliability when sigma bands exist) and ``report.html`` for one prediction file.

    ``result``: the metrics already computed (:func:`stfuse.evaluate.files.evaluate_files`);
    computed when None. ``matching``: ``bands``, ``truth_qa``, ``force`` as in
    :func:`stfuse.evaluate.files.read_scored_pair`. ``command``: the command line recorded in
    the page (:func:`write_html`). Returns the path of ``report.html``; its images are embedded.
    """
    out_dir = Path(out_dir)
    _check_report_dir(out_dir, overwrite)
    arrays = read_scored_pair(prediction, truth, **matching)
    result = result or evaluate_files(prediction, truth, **matching)
    names = arrays.band_names
    valid = np.isfinite(arrays.truth) & np.isfinite(arrays.mean)
    images = [quicklook_panel(arrays.truth, arrays.mean, arrays.sigma, names, out_dir / "quicklook.png",
                              title=f"{Path(prediction).name} vs {Path(truth).name}").name,
              scatter_density(arrays.truth, arrays.mean, names, out_dir / "scatter.png", valid=valid,
                              title="predicted vs true reflectance").name]
    if arrays.sigma is not None:
        images.append(reliability_diagram(arrays.mean, arrays.sigma, arrays.truth, names, out_dir / "reliability.png", valid=valid).name)
    sections = [Section("Accuracy", f"prediction {prediction}, truth {truth}", metrics_table(result), images)]
    return write_html(out_dir / "report.html", title or f"stfuse evaluation of {Path(prediction).name}", sections,
                      command=command)


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def mean_over_dates_table(result: "HoldoutResult") -> str:
    """An HTML table of :meth:`HoldoutResult.summary`'s ``mean_over_dates``: a row per band, then ``all``."""
    head = ["band", "RMSE", "MAE", "bias", "CC", "SSIM", "PSNR", "cov 68%", "cov 95%", "ERGAS", "SAM°"]
    rows = [[band, _fmt(m["rmse"], ".5f"), _fmt(m["mae"], ".5f"), _fmt(m["bias"], "+.5f"), _fmt(m["cc"], ".4f"),
             _fmt(m["ssim"], ".4f"), _fmt(m["psnr"], ".2f"), _fmt(m["coverage_68"], ".1%"), _fmt(m["coverage_95"], ".1%"),
             _fmt(m["ergas"], ".4f"), _fmt(m["sam_deg"], ".3f")]
            for band, m in result.summary()["mean_over_dates"].items()]
    return _html_table(head, rows)


def variance_scale_text(calibration: dict[str, Any] | None) -> tuple[str, str]:
    """(sentence, HTML table) for a holdout's ``extra["calibration"]``
    (:func:`stfuse.evaluate.holdout.variance_calibration`): the fitted variance scale, the
    68/95 % coverage as predicted and, with it, on dates it was not fitted on."""
    cal = calibration or {}
    scale = cal.get("variance_scale")
    if scale is None:
        return "No variance scale could be fitted (no scored pixel).", ""
    text = (f"Variance scale fitted on these dates: {scale:g}. Apply it with "
            f"`stfuse predict --variance-scale {scale:g}` (sigma is multiplied by its square root).")
    loo = cal.get("coverage_leave_one_date_out")
    if not loo:
        text += " One date only: no leave-one-date-out check of the scale."
    predicted = cal.get("coverage_as_predicted") or {}
    rows = [["as predicted", _fmt(predicted.get("0.68"), ".1%"), _fmt(predicted.get("0.95"), ".1%")]]
    if loo:
        rows.append(["scale fitted on the other dates (leave one date out)", _fmt(loo.get("0.68"), ".1%"), _fmt(loo.get("0.95"), ".1%")])
    return text, _html_table(["sigma", "68 % interval coverage", "95 % interval coverage"], rows)


def holdout_report(result: "HoldoutResult", out_dir: PathLike, *, overwrite: bool = False, max_quicklooks: int = 8,
                   command: str | None = None) -> Path:
    """PNGs and ``report.html`` of a :func:`stfuse.evaluate.holdout.holdout` run (needs its arrays).

    Writes ``holdout_metrics.png`` (metrics by date), ``reliability.png`` and ``scatter.png``
    (all withheld dates pooled) and ``quicklook_YYYY-MM-DD.png`` per date (at most
    ``max_quicklooks``), and ``report.html`` with them embedded, the means over dates, the
    fitted variance scale with its leave-one-date-out coverage, and ``command`` (the command
    line that ran the holdout). Returns the path of ``report.html``.
    """
    out_dir = Path(out_dir)
    _check_report_dir(out_dir, overwrite)
    days = [d for d in result.days if d.mean is not None and d.sigma is not None and d.truth is not None]
    if not days:
        raise InputError("the holdout result has no arrays; run holdout(keep_arrays=True) to make a report")
    names = result.band_names
    rows = result.rows()
    chart = holdout_chart(rows, out_dir / "holdout_metrics.png", title=f"holdout by withheld date ({result.method})")
    flat = lambda attr: np.concatenate([getattr(d, attr).reshape(len(names), -1) for d in days], axis=1)
    truth, mean, sigma = flat("truth"), flat("mean"), flat("sigma")
    reliability = reliability_diagram(mean, sigma, truth, names, out_dir / "reliability.png",
                                      title=f"reliability, {len(days)} withheld date(s) pooled")
    scatter = scatter_density(truth, mean, names, out_dir / "scatter.png", title=f"predicted vs withheld Landsat, {len(days)} date(s)")
    quicklooks = []
    for d in days[:max_quicklooks]:
        pairs = " + ".join(p.isoformat() for p in d.pairs)
        quicklooks.append(quicklook_panel(d.truth, d.mean, d.sigma, names, out_dir / f"quicklook_{d.date.isoformat()}.png",
                                          title=f"withheld {d.date} ({d.clear_fraction:.0%} clear), {d.method} from {pairs}").name)
    head = ["date", "band", "pairs", "n", "RMSE", "MAE", "bias", "CC", "SSIM", "PSNR", "cov 68%", "cov 95%", "ERGAS", "SAM°"]
    fmt = lambda v, spec: "" if v is None else format(v, spec)
    table = _html_table(head, [[r["date"], r["band"], r["pairs"], r["n_valid"], fmt(r["rmse"], ".5f"), fmt(r["mae"], ".5f"),
                                fmt(r["bias"], "+.5f"), fmt(r["cc"], ".4f"), fmt(r["ssim"], ".4f"), fmt(r["psnr"], ".2f"),
                                fmt(r["coverage_68"], ".1%"), fmt(r["coverage_95"], ".1%"), fmt(r["ergas"], ".4f"),
                                fmt(r["sam_deg"], ".3f")] for r in rows])
    skipped = "; ".join(f"{d}: {why}" for d, why in sorted(result.skipped.items()))
    text = (f"Each clear Landsat date was withheld in turn and predicted from the other pairs and that day's MODIS image; "
            f"scores are over its clear pixels. Catalog {result.catalog}, method {result.method}, {result.seconds:.0f} s."
            + (f" Skipped: {skipped}." if skipped else ""))
    scale_text, scale_table = variance_scale_text(result.extra.get("calibration"))
    sections = [
        Section("Mean over dates", f"Means over the {len(result.days)} withheld date(s) of each band's scores; "
                "the all row: band means, ERGAS and SAM.", mean_over_dates_table(result)),
        Section("Variance scale for this area", scale_text, scale_table),
        Section("Metrics by withheld date", text, table + "<p>Per-date CSV: <a href=\"holdout.csv\">holdout.csv</a></p>", [chart.name]),
        Section("Uncertainty calibration", "Observed vs nominal coverage of the intervals mean ± z·sigma, all dates pooled.",
                "", [reliability.name]),
        Section("Predicted vs true", "Hexbin density per band (log colour scale); dashed: 1:1.", "", [scatter.name]),
        Section("Quicklooks", "Truth and prediction share one stretch; abs error and sigma share one colour scale per row.",
                "", quicklooks),
    ]
    log.debug("holdout table:\n%s", format_holdout(result))
    return write_html(out_dir / "report.html", f"stfuse holdout evaluation ({result.catalog})", sections, command=command)

