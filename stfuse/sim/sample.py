"""Write the simulated scene (:mod:`stfuse.sim.synth`) as a self-contained static STAC catalog of COGs.

Three collections, shaped like Microsoft Planetary Computer's:

- ``landsat-c2-l2``: one item per Landsat date, one COG per band (asset keys ``blue, green,
  red, nir08, swir16, swir22``, uint16 C2 L2 DNs, scale 0.0000275, offset -0.2, nodata 0)
  plus ``qa_pixel`` (uint16, Collection 2 bits), on a 30 m UTM grid (EPSG:32614). As in
  real Landsat products, pixel *corners* are at ``15 mod 30`` m (pixel centres on
  multiples of 30 m).
- ``modis-43A4-061``: one item per day on the MODIS sinusoidal grid (global MODIS grid,
  463.3127 m pixels, no EPSG code: ``proj:wkt2`` + ``proj:projjson``), assets
  ``Nadir_Reflectance_Band1..7`` (int16, scale 1e-4, fill 32767) and
  ``BRDF_Albedo_Band_Mandatory_Quality_Band1..7`` (uint8, 0 good, 1 magnitude inversion,
  255 fill). The values are made by averaging the fine truth (30 m UTM) onto the
  sinusoidal pixels (Gaussian PSF, then ``rasterio.warp.reproject`` with ``average``),
  plus per-date bias and noise, so MODIS reprojected back onto the UTM grid is
  consistent with the truth.
- ``stfuse-truth``: a few days of true reflectance (one 6-band uint16 COG per day, same
  scale/offset as Landsat) for evaluation, and collection-level assets ``classes``,
  ``classes_after_change`` and ``change_mask``.

The output is deterministic: the same spec gives byte-identical JSON and COGs.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stfuse.data.sensors import BANDS, LANDSAT_C2_L2, LANDSAT_QA_BITS, MODIS_43A4
from stfuse.errors import InputError, OutputError
from stfuse.sim.synth import CLASS_NAMES, Scene, SceneSpec, block_mean, coarse_quality, simulate

# Location: the Arkansas River near Great Bend, Kansas (UTM 14N, MODIS tile h10v05).
SAMPLE_EPSG = 32614
SAMPLE_ORIGIN = (511515.0, 4251015.0)
"""UTM x, y (m) of the upper-left pixel *corner*; both are 15 mod 30 like real Landsat grids."""
FINE_PIXEL = 30.0
WRS_PATH_ROW = (29, 33)

# Global MODIS sinusoidal grid (as in MODIS products and Planetary Computer items).
MODIS_SINUSOIDAL = "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs"
MODIS_X0 = -20015109.354
MODIS_Y0 = 10007554.677
MODIS_TILE = 1111950.5196666666
MODIS_PIXEL = MODIS_TILE / 2400  # 463.312716528 m
MODIS_MARGIN_PX = 2  # MODIS pixels of margin around the Landsat footprint
_AGG = 4  # fine truth is averaged over 4x4 (120 m) before the PSF and reprojection

MODIS_BAND_FOR = {2: "nir08", 1: "red", 3: "blue", 4: "green", 6: "swir16", 7: "swir22"}
"""MCD43A4 band number -> stfuse band (band 5, 1240 nm, is simulated as 0.6 nir08 + 0.4 swir16)."""
_MODIS_WAVELENGTH = {1: (0.645, 0.05), 2: (0.8585, 0.035), 3: (0.469, 0.02), 4: (0.555, 0.02), 5: (1.24, 0.02), 6: (1.64, 0.024), 7: (2.13, 0.05)}
_LANDSAT_EO = {
    "blue": ("Blue Band", "Visible blue", 0.48, 0.06),
    "green": ("Green Band", "Visible green", 0.56, 0.06),
    "red": ("Red Band", "Visible red", 0.65, 0.04),
    "nir08": ("Near Infrared Band 0.8", "Near infrared", 0.86, 0.03),
    "swir16": ("Short-wave Infrared Band 1.6", "Short-wave infrared", 1.6, 0.08),
    "swir22": ("Short-wave Infrared Band 2.2", "Short-wave infrared", 2.2, 0.2),
}

_COG_MEDIA = "image/tiff; application=geotiff; profile=cloud-optimized"
_EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
}
COLLECTION_IDS = ("landsat-c2-l2", "modis-43A4-061", "stfuse-truth")
_MANAGED = ("catalog.json", "README.md", *COLLECTION_IDS)

SAMPLE_DIR_ENV = "STFUSE_SAMPLE_DIR"
"""Environment variable naming the folder of the default sample catalog (created on first use)."""
CHECKOUT_SAMPLE = Path(__file__).resolve().parents[2] / "sample_scenes"
"""The sample catalog committed in a source checkout (absent from an installed wheel)."""

log = logging.getLogger("stfuse")


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def write_cog(
    path: Path,
    data: np.ndarray,
    *,
    transform: Any,
    crs: Any,
    nodata: float | None,
    blocksize: int = 256,
    resampling: str = "nearest",
    descriptions: Sequence[str] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
) -> Path:
    """Write (B, H, W) or (H, W) ``data`` as a deflate COG (GDAL COG driver), via a temp file + rename."""
    from rasterio.io import MemoryFile

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    tmp = path.with_name(path.name[: -len(path.suffix)] + ".tmp.tif")
    profile = dict(
        driver="COG",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="DEFLATE",
        predictor=2 if data.dtype.kind in "iu" else 3,
        blocksize=blocksize,
        overview_resampling=resampling,
        overviews="AUTO",
        bigtiff="NO",
    )
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(data)
            for i, text in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, text)
            if scales is not None:
                dst.scales = tuple(scales)
            if offsets is not None:
                dst.offsets = tuple(offsets)
        content = memory.read()
    try:
        tmp.write_bytes(content)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"could not write {path}: {err}") from None
    return path


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a folder; choose another output folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputError(
                f"{out_dir} is not empty; pass overwrite=True (CLI: --overwrite) to replace the sample catalog in it"
            )
        for name in _MANAGED:  # only what this function writes; other files are left alone
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {out_dir}: {err}") from None


# --------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------


def _ring(x0: float, y0: float, x1: float, y1: float, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Densified rectangle boundary (counter-clockwise: UL, LL, LR, UR), x0<x1, y0>y1."""
    t = np.linspace(0, 1, n, endpoint=False)
    xs = np.concatenate([np.full(n, x0), x0 + (x1 - x0) * t, np.full(n, x1), x1 - (x1 - x0) * t])
    ys = np.concatenate([y0 - (y0 - y1) * t, np.full(n, y1), y1 + (y0 - y1) * t, np.full(n, y0)])
    return xs, ys


def _footprint(crs: Any, transform: Any, shape: tuple[int, int], n: int = 1) -> dict[str, Any]:
    """GeoJSON polygon (EPSG:4326, 7 decimals) of a grid's outline."""
    from rasterio.warp import transform as warp_transform

    h, w = shape
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (w, h)
    xs, ys = _ring(x0, y0, x1, y1, n)
    lon, lat = warp_transform(crs, "EPSG:4326", xs, ys)
    coords = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat)]
    coords.append(coords[0])
    return {"type": "Polygon", "coordinates": [coords]}


def _bbox(geometry: dict[str, Any]) -> list[float]:
    pts = np.asarray(geometry["coordinates"][0])
    return [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]


def _sinusoidal():
    from pyproj import CRS as ProjCRS
    from rasterio.crs import CRS

    proj = ProjCRS.from_proj4(MODIS_SINUSOIDAL)
    return CRS.from_wkt(proj.to_wkt()), proj.to_wkt("WKT2_2019"), proj.to_json_dict()


def modis_grid(spec: SceneSpec) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    """MODIS grid window covering the Landsat footprint plus :data:`MODIS_MARGIN_PX` pixels.

    Returns (affine transform, (rows, cols), (h_tile, v_tile)); pixel edges on the global grid.
    """
    from affine import Affine
    from rasterio.warp import transform as warp_transform

    sin_crs, _, _ = _sinusoidal()
    x0, y0 = SAMPLE_ORIGIN
    margin = MODIS_MARGIN_PX * MODIS_PIXEL
    xs, ys = _ring(x0 - margin, y0 + margin, x0 + spec.width * FINE_PIXEL + margin, y0 - spec.height * FINE_PIXEL - margin, 16)
    sx, sy = warp_transform(f"EPSG:{SAMPLE_EPSG}", sin_crs, xs, ys)
    c0 = math.floor((min(sx) - MODIS_X0) / MODIS_PIXEL)
    c1 = math.ceil((max(sx) - MODIS_X0) / MODIS_PIXEL)
    r0 = math.floor((MODIS_Y0 - max(sy)) / MODIS_PIXEL)
    r1 = math.ceil((MODIS_Y0 - min(sy)) / MODIS_PIXEL)
    transform = Affine(MODIS_PIXEL, 0.0, MODIS_X0 + c0 * MODIS_PIXEL, 0.0, -MODIS_PIXEL, MODIS_Y0 - r0 * MODIS_PIXEL)
    return transform, (r1 - r0, c1 - c0), (int(c0 // 2400), int(r0 // 2400))


def _world_window(spec: SceneSpec, transform: Any, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Fine-pixel window (row0, col0, height, width; scene origin 0, 0) that the MODIS grid's PSF sees."""
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp_transform

    sin_crs, _, _ = _sinusoidal()
    h, w = shape
    gx0, gy0 = transform @ (0, 0)
    gx1, gy1 = transform @ (w, h)
    xs, ys = _ring(gx0, gy0, gx1, gy1, 16)
    ux, uy = warp_transform(sin_crs, CRS.from_epsg(SAMPLE_EPSG), xs, ys)
    x0, y0 = SAMPLE_ORIGIN
    reach = 4.0 * spec.psf_sigma * MODIS_PIXEL + abs(spec.misregistration_px) * FINE_PIXEL + 4 * FINE_PIXEL * _AGG
    col0 = math.floor((min(ux) - reach - x0) / FINE_PIXEL)
    col1 = math.ceil((max(ux) + reach - x0) / FINE_PIXEL)
    row0 = math.floor((y0 - max(uy) - reach) / FINE_PIXEL)
    row1 = math.ceil((y0 - min(uy) + reach) / FINE_PIXEL)
    height = _AGG * math.ceil((row1 - row0) / _AGG)
    width = _AGG * math.ceil((col1 - col0) / _AGG)
    return row0, col0, height, width


# --------------------------------------------------------------------------------------
# Simulated MODIS on the sinusoidal grid
# --------------------------------------------------------------------------------------


def simulate_modis(scene: Scene) -> tuple[Any, np.ndarray, np.ndarray, tuple[int, int]]:
    """MCD43A4-like data on the sinusoidal grid.

    Returns (transform, DNs (T, 7, rows, cols) int16, quality (T, rows, cols) uint8, (h, v) tile).
    Band axis is MODIS band 1..7. Truth is averaged to 120 m, blurred by the Gaussian PSF
    (``psf_sigma`` MODIS pixels), averaged onto the sinusoidal pixels, then per-date bias
    (the scene's ``coarse_bias``) and noise are added.
    """
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from scipy import ndimage

    from stfuse.sim.synth import _rng

    spec = scene.spec
    sin_crs, _, _ = _sinusoidal()
    transform, shape, tile = modis_grid(spec)
    row0, col0, height, width = _world_window(spec, transform, shape)
    world = scene.window(row0, col0, height, width)
    x0, y0 = SAMPLE_ORIGIN
    shift = spec.misregistration_px * FINE_PIXEL  # data seen shifted by +shift east and south
    src_transform = Affine(
        FINE_PIXEL * _AGG, 0.0, x0 + col0 * FINE_PIXEL - shift, 0.0, -FINE_PIXEL * _AGG, y0 - row0 * FINE_PIXEL + shift
    )
    sigma = spec.psf_sigma * MODIS_PIXEL / (FINE_PIXEL * _AGG)
    rows = (np.arange(shape[0]) + 0.5 + (MODIS_Y0 - transform.f) / MODIS_PIXEL)
    cols = (np.arange(shape[1]) + 0.5 + (transform.c - MODIS_X0) / MODIS_PIXEL)
    n_days = spec.n_days
    dn = np.empty((n_days, 7, *shape), np.int16)
    quality = np.empty((n_days, *shape), np.uint8)
    band_bias5 = _rng(spec.seed, "modis_band5_bias").normal(0.0, spec.coarse_bias, size=n_days)
    utm = CRS.from_epsg(SAMPLE_EPSG)
    for day in range(n_days):
        truth = block_mean(world.truth(day), _AGG)
        if sigma > 0:
            truth = ndimage.gaussian_filter(truth, sigma=(0, sigma, sigma), mode="nearest", truncate=4.0)
        sampled = np.zeros((len(BANDS), *shape), np.float32)
        reproject(
            truth,
            sampled,
            src_transform=src_transform,
            src_crs=utm,
            dst_transform=transform,
            dst_crs=sin_crs,
            resampling=Resampling.average,
            num_threads=1,
        )
        by_band = {name: sampled[i] for i, name in enumerate(BANDS)}
        refl = np.empty((7, *shape), np.float32)
        for number in range(1, 8):
            if number == 5:
                refl[4] = 0.6 * by_band["nir08"] + 0.4 * by_band["swir16"] + band_bias5[day]
            else:
                name = MODIS_BAND_FOR[number]
                refl[number - 1] = by_band[name] + scene.coarse_bias[day, BANDS.index(name)]
        q = coarse_quality(spec, day, rows, cols, key="sinusoidal")
        noise = _rng(spec.seed, "modis_noise", day).standard_normal(refl.shape, dtype=np.float32) * np.float32(spec.coarse_noise)
        refl += noise * np.where(q == 1, np.float32(2.0), np.float32(1.0))[None]
        values = np.clip(np.rint(refl / MODIS_43A4.scale), 0, 32766).astype(np.int16)
        values[:, q == 255] = MODIS_43A4.nodata
        dn[day] = values
        quality[day] = q
    return transform, dn, quality, tile


# --------------------------------------------------------------------------------------
# STAC objects
# --------------------------------------------------------------------------------------


def _asset(href: Path, title: str, roles: list[str], **extra: Any):
    import pystac

    return pystac.Asset(href=str(href), media_type=_COG_MEDIA, title=title, roles=roles, extra_fields=extra)


def _landsat_item(scene: Scene, k: int, out: Path, transform: Any, crs: Any) -> Any:
    import pystac

    spec = scene.spec
    date = scene.landsat[k]
    day = scene.dates[date.day]
    sat = 8 if date.platform == "landsat-8" else 9
    path, row = WRS_PATH_ROW
    item_id = f"LC0{sat}_L2SP_{path:03d}{row:03d}_{day:%Y%m%d}_02_T1"
    folder = out / "landsat-c2-l2" / item_id
    folder.mkdir(parents=True, exist_ok=True)
    when = dt.datetime(day.year, day.month, day.day, 17, 3, 10 + k % 40, 250000, tzinfo=dt.timezone.utc)
    geometry = _footprint(crs, transform, (spec.height, spec.width))
    band_numbers = LANDSAT_C2_L2.band_numbers[LANDSAT_C2_L2.sensor_by_platform[date.platform]]
    props = {
        "platform": date.platform,
        "instruments": ["oli", "tirs"],
        "gsd": 30,
        "description": "Landsat Collection 2 Level-2 (simulated by stfuse)",
        "eo:cloud_cover": round(date.cloud_cover, 2),
        "view:off_nadir": 0,
        "view:sun_azimuth": date.sun_azimuth,
        "view:sun_elevation": date.sun_elevation,
        "proj:code": f"EPSG:{SAMPLE_EPSG}",
        "proj:epsg": SAMPLE_EPSG,
        "proj:shape": [spec.height, spec.width],
        "proj:transform": [float(v) for v in list(transform)[:6]],
        "landsat:cloud_cover_land": round(date.cloud_cover, 2),
        "landsat:wrs_type": "2",
        "landsat:wrs_path": f"{path:03d}",
        "landsat:wrs_row": f"{row:03d}",
        "landsat:collection_category": "T1",
        "landsat:collection_number": "02",
        "landsat:correction": "L2SP",
        "landsat:scene_id": f"LC{sat}{path:03d}{row:03d}{day.year}{day.timetuple().tm_yday:03d}LGN00",
        "stfuse:simulated": True,
        "stfuse:day_index": date.day,
        "stfuse:fill_fraction": round(float(date.fill.mean()), 4),
    }
    item = pystac.Item(id=item_id, geometry=geometry, bbox=_bbox(geometry), datetime=when, properties=props,
                       stac_extensions=[_EXT["eo"], _EXT["raster"], _EXT["proj"], _EXT["view"], _EXT["classification"]])
    for b, band in enumerate(BANDS):
        href = folder / f"{item_id}_{band}.tif"
        write_cog(href, date.dn[b], transform=transform, crs=crs, nodata=0, blocksize=512, resampling="average",
                  descriptions=[band], scales=[LANDSAT_C2_L2.scale], offsets=[LANDSAT_C2_L2.offset])
        title, desc, wl, fwhm = _LANDSAT_EO[band]
        number = band_numbers[band]
        item.add_asset(band, _asset(
            href, f"{title} ({number})", ["data", "reflectance"],
            description=f"Collection 2 Level-2 {title} ({number}) Surface Reflectance",
            **{
                "eo:bands": [{"name": f"SR_{number}", "common_name": band, "description": desc,
                              "center_wavelength": wl, "full_width_half_max": fwhm}],
                "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 30,
                                  "scale": LANDSAT_C2_L2.scale, "offset": LANDSAT_C2_L2.offset, "unit": "reflectance"}],
            },
        ))
    href = folder / f"{item_id}_qa_pixel.tif"
    write_cog(href, date.qa, transform=transform, crs=crs, nodata=1, blocksize=512, resampling="nearest", descriptions=["qa_pixel"])
    bit_names = sorted(LANDSAT_QA_BITS.items(), key=lambda kv: kv[1])
    bitfields = [
        {"name": name, "offset": bit, "length": 1,
         "classes": [{"name": f"not_{name}", "value": 0}, {"name": name, "value": 1}]}
        for name, bit in bit_names
    ] + [
        {"name": f"{name}_confidence", "offset": offset, "length": 2,
         "classes": [{"name": "not_set", "value": 0}, {"name": "low", "value": 1}, {"name": "medium", "value": 2},
                     {"name": "high", "value": 3}]}
        for name, offset in (("cloud", 8), ("cloud_shadow", 10), ("snow_ice", 12), ("cirrus", 14))
    ]
    item.add_asset("qa_pixel", _asset(
        href, "Pixel Quality Assessment Band", ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
        description="Collection 2 Level-1 Pixel Quality Assessment Band (QA_PIXEL)",
        **{"raster:bands": [{"nodata": 1, "data_type": "uint16", "spatial_resolution": 30, "unit": "bit index"}],
           "classification:bitfields": bitfields},
    ))
    return item


def _modis_items(scene: Scene, out: Path) -> list[Any]:
    import pystac

    sin_crs, wkt2, projjson = _sinusoidal()
    transform, dn, quality, (h_tile, v_tile) = simulate_modis(scene)
    shape = dn.shape[-2:]
    geometry = _footprint(sin_crs, transform, shape, n=4)
    items = []
    for day_index, day in enumerate(scene.dates):
        doy = day.timetuple().tm_yday
        produced = day + dt.timedelta(days=9)
        item_id = f"MCD43A4.A{day.year}{doy:03d}.h{h_tile:02d}v{v_tile:02d}.061.{produced.year}{produced.timetuple().tm_yday:03d}040000"
        folder = out / "modis-43A4-061" / item_id
        folder.mkdir(parents=True, exist_ok=True)
        start = dt.datetime.combine(day - dt.timedelta(days=8), dt.time(0), dt.timezone.utc)
        end = dt.datetime.combine(day + dt.timedelta(days=7), dt.time(23, 59, 59), dt.timezone.utc)
        props = {
                "start_datetime": start.isoformat().replace("+00:00", "Z"),
            "end_datetime": end.isoformat().replace("+00:00", "Z"),
            "platform": "terra+aqua",
            "instruments": ["modis"],
            "modis:horizontal-tile": h_tile,
            "modis:vertical-tile": v_tile,
            "modis:tile-id": f"51{h_tile:03d}{v_tile:03d}",
            "proj:code": None,
            "proj:epsg": None,
            "proj:wkt2": wkt2,
            "proj:projjson": projjson,
            "proj:shape": [int(shape[0]), int(shape[1])],
            "proj:transform": [float(v) for v in list(transform)[:6]],
            "stfuse:simulated": True,
            "stfuse:day_index": day_index,
        }
        when = dt.datetime.combine(day, dt.time(0), dt.timezone.utc)
        item = pystac.Item(id=item_id, geometry=geometry, bbox=_bbox(geometry), datetime=when, properties=props,
                           stac_extensions=[_EXT["eo"], _EXT["raster"], _EXT["proj"], _EXT["classification"]])
        for number in range(1, 8):
            key = f"Nadir_Reflectance_Band{number}"
            href = folder / f"{item_id}_{key}.tif"
            write_cog(href, dn[day_index, number - 1], transform=transform, crs=sin_crs, nodata=MODIS_43A4.nodata,
                      blocksize=128, resampling="average", descriptions=[key], scales=[MODIS_43A4.scale], offsets=[0.0])
            wl, fwhm = _MODIS_WAVELENGTH[number]
            eo = {"name": key, "center_wavelength": wl, "full_width_half_max": fwhm}
            if number in MODIS_BAND_FOR:
                eo["common_name"] = MODIS_BAND_FOR[number]
            item.add_asset(key, _asset(
                href, f"NBAR at local solar noon for Band {number}", ["data"],
                **{"eo:bands": [eo],
                   "raster:bands": [{"data_type": "int16", "nodata": MODIS_43A4.nodata, "scale": MODIS_43A4.scale,
                                     "offset": 0.0, "spatial_resolution": 500}]},
            ))
            key = f"BRDF_Albedo_Band_Mandatory_Quality_Band{number}"
            href = folder / f"{item_id}_{key}.tif"
            write_cog(href, quality[day_index], transform=transform, crs=sin_crs, nodata=255, blocksize=128,
                      resampling="nearest", descriptions=[key])
            item.add_asset(key, _asset(
                href, f"BRDF Albedo Mandatory Quality for Band {number}", ["data"],
                **{"raster:bands": [{"data_type": "uint8", "nodata": 255, "spatial_resolution": 500}],
                   "classification:classes": [
                       {"value": 0, "name": "full_inversion", "description": "Processed, good quality (full BRDF inversions)"},
                       {"value": 1, "name": "magnitude_inversion", "description": "Processed, see other QA (magnitude BRDF inversions)"},
                       {"value": 255, "name": "fill", "description": "Fill value", "nodata": True},
                   ]},
            ))
        items.append(item)
    return items


def default_truth_days(spec: SceneSpec) -> list[int]:
    """Evaluation days (not Landsat dates): the middle of each gap between Landsat dates and
    after the last one; in the gap holding ``change_day``, the middle between the change and
    the next Landsat date (the hard case: the change is only seen by MODIS)."""
    landsat = list(spec.landsat_days)
    bounds = [*landsat, spec.n_days]
    days = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        lo = a
        if spec.change_day is not None and a < spec.change_day < b:
            lo = spec.change_day
        day = (lo + b) // 2 if b < spec.n_days else (lo + b - 1) // 2
        if day not in landsat and lo < day < b:
            days.append(day)
    if not days:  # tiny specs: any non-Landsat day
        days = [d for d in range(spec.n_days) if d not in landsat][:1]
    return days


def _truth_items(scene: Scene, days: Sequence[int], out: Path, transform: Any, crs: Any) -> list[Any]:
    import pystac

    spec = scene.spec
    geometry = _footprint(crs, transform, (spec.height, spec.width))
    items = []
    for day_index in days:
        day = scene.dates[day_index]
        item_id = f"stfuse-truth-{day:%Y-%m-%d}"
        folder = out / "stfuse-truth" / item_id
        folder.mkdir(parents=True, exist_ok=True)
        href = folder / f"{item_id}_reflectance.tif"
        dn = np.clip(np.rint((scene.truth_day(day_index) - LANDSAT_C2_L2.offset) / LANDSAT_C2_L2.scale), 1, 65535).astype(np.uint16)
        write_cog(href, dn, transform=transform, crs=crs, nodata=0, blocksize=512, resampling="average",
                  descriptions=list(BANDS), scales=[LANDSAT_C2_L2.scale] * 6, offsets=[LANDSAT_C2_L2.offset] * 6)
        props = {
                "platform": "stfuse-simulator",
            "gsd": 30,
            "description": "True daily surface reflectance of the simulated scene (for evaluation)",
            "proj:code": f"EPSG:{SAMPLE_EPSG}",
            "proj:epsg": SAMPLE_EPSG,
            "proj:shape": [spec.height, spec.width],
            "proj:transform": [float(v) for v in list(transform)[:6]],
            "stfuse:simulated": True,
            "stfuse:day_index": int(day_index),
        }
        when = dt.datetime.combine(day, dt.time(0), dt.timezone.utc)
        item = pystac.Item(id=item_id, geometry=geometry, bbox=_bbox(geometry), datetime=when, properties=props,
                           stac_extensions=[_EXT["eo"], _EXT["raster"], _EXT["proj"]])
        item.add_asset("reflectance", _asset(
            href, "True surface reflectance (6 bands)", ["data", "reflectance"],
            **{"eo:bands": [{"name": b, "common_name": b, "center_wavelength": _LANDSAT_EO[b][2]} for b in BANDS],
               "raster:bands": [{"name": b, "nodata": 0, "data_type": "uint16", "spatial_resolution": 30,
                                 "scale": LANDSAT_C2_L2.scale, "offset": LANDSAT_C2_L2.offset, "unit": "reflectance"}
                                for b in BANDS]},
        ))
        items.append(item)
    return items


def _extent(items: Sequence[Any]) -> Any:
    import pystac

    boxes = np.array([i.bbox for i in items])
    bbox = [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max())]
    times = sorted(i.datetime for i in items)
    return pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[times[0], times[-1]]]))


def _collection(cid: str, title: str, description: str, items: Sequence[Any], **extra: Any) -> Any:
    import pystac

    col = pystac.Collection(id=cid, title=title, description=description, extent=_extent(items), license="Apache-2.0",
                            extra_fields=extra)
    for item in items:
        col.add_item(item)
    return col


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


def write_sample_catalog(out_dir: Path | str, spec: SceneSpec | None = None, *, overwrite: bool = False,
                         truth_days: Sequence[int] | None = None) -> Path:
    """Simulate ``spec`` (default :class:`SceneSpec`) and write it as a static STAC catalog of COGs.

    ``out_dir`` gets ``catalog.json``, ``README.md`` and one folder per collection
    (:data:`COLLECTION_IDS`). If ``out_dir`` is non-empty, :class:`OutputError` unless
    ``overwrite`` (which replaces only those entries). ``truth_days``: day indices written to
    ``stfuse-truth`` (default :func:`default_truth_days`). Returns the path of ``catalog.json``.
    """
    import pystac
    from affine import Affine
    from rasterio.crs import CRS

    out = Path(out_dir)
    spec = spec or SceneSpec()
    days = sorted(set(int(d) for d in (truth_days if truth_days is not None else default_truth_days(spec))))
    bad = [d for d in days if not 0 <= d < spec.n_days]
    if bad:
        raise InputError(f"truth day index {bad[0]} is outside 0..{spec.n_days - 1}")
    _prepare_out_dir(out, overwrite)
    out = out.resolve()
    scene = simulate(spec)
    crs = CRS.from_epsg(SAMPLE_EPSG)
    x0, y0 = SAMPLE_ORIGIN
    transform = Affine(FINE_PIXEL, 0.0, x0, 0.0, -FINE_PIXEL, y0)

    landsat = [_landsat_item(scene, k, out, transform, crs) for k in range(len(scene.landsat))]
    modis = _modis_items(scene, out)
    truth = _truth_items(scene, days, out, transform, crs)

    landsat_col = _collection(
        "landsat-c2-l2", "Landsat Collection 2 Level-2 (simulated)",
        "Simulated Landsat 8/9 OLI Collection 2 Level-2 surface reflectance, shaped like Planetary Computer items: "
        "one COG per band, uint16 DN, reflectance = DN * 0.0000275 - 0.2, nodata 0, QA_PIXEL bits.",
        landsat, summaries={"platform": ["landsat-8", "landsat-9"], "instruments": ["oli", "tirs"], "gsd": [30]},
    )
    landsat_col.stac_extensions = [_EXT["eo"], _EXT["raster"], _EXT["proj"], _EXT["view"]]
    modis_col = _collection(
        "modis-43A4-061", "MODIS Nadir BRDF-Adjusted Reflectance (NBAR) Daily (simulated)",
        "Simulated MCD43A4 v061 on the MODIS sinusoidal grid: int16 NBAR (scale 1e-4, fill 32767) and per-band "
        "mandatory quality (0 full inversion, 1 magnitude inversion, 255 fill).",
        modis, summaries={"platform": ["terra+aqua"], "instruments": ["modis"], "gsd": [500]},
    )
    modis_col.stac_extensions = [_EXT["eo"], _EXT["raster"], _EXT["proj"]]
    truth_col = _collection(
        "stfuse-truth", "stfuse simulated truth",
        "True daily 30 m surface reflectance of the simulated scene on selected days (uint16, Landsat scale/offset), "
        "and the land-cover maps, for evaluating fusion.",
        truth, **{"stfuse:classes": {str(i): n for i, n in enumerate(CLASS_NAMES)}},
    )
    truth_col.stac_extensions = [_EXT["eo"], _EXT["raster"], _EXT["proj"], _EXT["classification"]]
    class_values = [{"value": i, "name": n} for i, n in enumerate(CLASS_NAMES)]
    after_day = spec.change_day if spec.change_day is not None else spec.n_days - 1
    for key, data, title, extra in (
        ("classes", scene.classes, "Land-cover classes before the change", {"classification:classes": class_values}),
        ("classes_after_change", scene.classes_at(after_day), "Land-cover classes after the change",
         {"classification:classes": class_values}),
        ("change_mask", scene.change_mask.astype(np.uint8), "Pixels that change class at the change day",
         {"classification:classes": [{"value": 0, "name": "unchanged"}, {"value": 1, "name": "changed"}]}),
    ):
        href = out / "stfuse-truth" / f"{key}.tif"
        write_cog(href, np.asarray(data, np.uint8), transform=transform, crs=crs, nodata=None, blocksize=512,
                  resampling="nearest", descriptions=[key])
        truth_col.add_asset(key, _asset(href, title, ["data", "labels"],
                                        **{"raster:bands": [{"data_type": "uint8", "spatial_resolution": 30}], **extra}))

    catalog = pystac.Catalog(
        id="stfuse-sample",
        title="stfuse sample scenes (simulated)",
        description="Simulated Landsat + MODIS time series with known truth, for the stfuse fusion demo and tests. "
        "See README.md.",
        extra_fields=_summary(scene, days),
    )
    for col in (landsat_col, modis_col, truth_col):
        catalog.add_child(col)
    catalog.normalize_hrefs(str(out) + os.sep)  # the separator: pystac takes a folder named like a.b for a file
    catalog.make_all_asset_hrefs_relative()
    for asset in truth_col.assets.values():  # collection-level assets: make relative too
        if os.path.isabs(asset.href):
            asset.href = os.path.relpath(asset.href, out / "stfuse-truth")
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    (out / "README.md").write_text(readme_text(scene, days))
    return out / "catalog.json"


# --------------------------------------------------------------------------------------
# The default sample catalog (``catalog=None``)
# --------------------------------------------------------------------------------------


def sample_dir() -> Path:
    """Folder of the default sample catalog: ``$STFUSE_SAMPLE_DIR`` if set, else the source
    checkout's ``sample_scenes/`` when present, else ``$XDG_CACHE_HOME/stfuse/sample_scenes``
    (``~/.cache/stfuse/sample_scenes``). Nothing is created here."""
    env = os.environ.get(SAMPLE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if (CHECKOUT_SAMPLE / "catalog.json").is_file():
        return CHECKOUT_SAMPLE
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "stfuse" / "sample_scenes"


def ensure_sample_catalog(out_dir: Path | str | None = None) -> Path:
    """Path of the default sample ``catalog.json`` in ``out_dir`` (default :func:`sample_dir`),
    writing it first if it is not there.

    The catalog is :func:`write_sample_catalog` with the default :class:`SceneSpec` (seed 0), so
    it is byte-identical to the checkout's ``sample_scenes/`` (about 20 s and 19 MB, once). It is
    written into a temporary folder beside ``out_dir`` and renamed into place, so an interrupted
    run leaves nothing half-written and concurrent first runs keep one complete copy.
    :class:`OutputError` if ``out_dir`` cannot be written or holds other files but no catalog.
    """
    out = Path(out_dir).expanduser() if out_dir is not None else sample_dir()
    catalog = out / "catalog.json"
    if catalog.is_file():
        return catalog
    hint = f"set {SAMPLE_DIR_ENV} to a writable folder, or pass a catalog (--catalog)"
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise OutputError(f"{out} exists but holds no sample catalog.json; remove it or {hint}")
    log.warning("the sample catalog is not on this machine yet: generating it once into %s (about 20 s)", out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".stfuse-sample-", dir=out.parent))
    except OSError as err:
        raise OutputError(f"cannot create the sample catalog in {out.parent}: {err}; {hint}") from None
    try:
        write_sample_catalog(tmp)
        try:
            tmp.rename(out)  # atomic; also replaces an empty folder
        except OSError:
            if not catalog.is_file():  # not a concurrent run that finished first
                raise
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write the sample catalog to {out}: {err}; {hint}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return catalog


def _summary(scene: Scene, truth_days: Sequence[int]) -> dict[str, Any]:
    spec = scene.spec
    x0, y0 = SAMPLE_ORIGIN
    return {
        "stfuse:spec": spec.to_dict(),
        "stfuse:grid": {
            "crs": f"EPSG:{SAMPLE_EPSG}",
            "transform": [FINE_PIXEL, 0.0, x0, 0.0, -FINE_PIXEL, y0],
            "shape": [spec.height, spec.width],
        },
        "stfuse:classes": {str(i): n for i, n in enumerate(CLASS_NAMES)},
        "stfuse:class_fractions": {n: round(float((scene.classes == i).mean()), 4) for i, n in enumerate(CLASS_NAMES)},
        "stfuse:change": {
            "kind": spec.change_kind if spec.change_day is not None else None,
            "day_index": spec.change_day,
            "date": scene.dates[spec.change_day].isoformat() if spec.change_day is not None else None,
            "pixels": int(scene.change_mask.sum()),
        },
        "stfuse:landsat_dates": [scene.dates[d].isoformat() for d in scene.landsat_days],
        "stfuse:truth_dates": [scene.dates[d].isoformat() for d in truth_days],
    }


def readme_text(scene: Scene, truth_days: Sequence[int]) -> str:
    """The README.md written next to the catalog (generated, so it always matches the data)."""
    return _readme_data(scene, truth_days) + _readme_scene(scene)


def _readme_data(scene: Scene, truth_days: Sequence[int]) -> str:
    """README: what the catalog holds (grid, dates, collections)."""
    spec = scene.spec
    x0, y0 = SAMPLE_ORIGIN
    transform, shape, (h_tile, v_tile) = modis_grid(spec)
    d = scene.dates
    landsat_rows = "\n".join(
        f"| {d[l.day]} | {l.day} | {l.platform} | {l.cloud_cover:.1f} | {100 * l.fill.mean():.1f} |" for l in scene.landsat
    )
    return f"""# sample_scenes: simulated Landsat + MODIS STAC catalog

**Generated file — do not edit.** Regenerate with `stfuse sample -o sample_scenes --overwrite`
(or `make sample`); the same seed gives byte-identical files. Made by `stfuse.sim.sample.write_sample_catalog`
from the simulator `stfuse.sim.synth` (seed {spec.seed}).

A self-contained static STAC catalog (`catalog.json`, relative links) of Cloud-Optimized
GeoTIFFs. Items are shaped like Microsoft Planetary Computer's, so the same code loads this
catalog and the real collections. All data are simulated; there is a known truth.

## Grid and dates

- Landsat / truth grid: {spec.height} x {spec.width} pixels of 30 m in **EPSG:{SAMPLE_EPSG}** (UTM 14N),
  upper-left corner x = {x0:.0f}, y = {y0:.0f} (Kansas, on the Arkansas River near Great Bend).
  As in real Landsat products, pixel corners are at 15 m mod 30 (pixel centres on multiples of 30 m).
- MODIS grid: the global MODIS **sinusoidal** grid (sphere R = 6371007.181 m, pixel
  {MODIS_PIXEL:.9f} m), tile h{h_tile:02d}v{v_tile:02d}, a {shape[0]} x {shape[1]} pixel window covering the Landsat
  footprint plus {MODIS_MARGIN_PX} pixels. No EPSG code: items carry `proj:wkt2` and `proj:projjson`, `proj:code: null`.
- Dates: {spec.n_days} days, {d[0]} .. {d[-1]}. MODIS every day; Landsat every {spec.landsat_revisit} days.

## Collections

| collection | items | assets |
|---|---|---|
| `landsat-c2-l2` | {len(scene.landsat)} | `blue, green, red, nir08, swir16, swir22` (uint16 DN, reflectance = DN * 0.0000275 - 0.2, nodata 0), `qa_pixel` (uint16 QA_PIXEL) |
| `modis-43A4-061` | {spec.n_days} | `Nadir_Reflectance_Band1..7` (int16, scale 1e-4, fill 32767), `BRDF_Albedo_Band_Mandatory_Quality_Band1..7` (uint8: 0 good, 1 magnitude inversion, 255 fill) |
| `stfuse-truth` | {len(truth_days)} | `reflectance`: 6-band uint16 COG (bands {", ".join(BANDS)}; Landsat scale/offset). Collection assets `classes`, `classes_after_change`, `change_mask` (uint8) |

MCD43A4 band mapping: 1 red, 2 nir08, 3 blue, 4 green, 6 swir16, 7 swir22; band 5 (1240 nm) is
simulated as 0.6 nir08 + 0.4 swir16. MODIS items have `datetime` = the day at 00:00 UTC and
`start_datetime`/`end_datetime` = the 16-day window (day - 8 .. day + 7), as on Planetary Computer.
Their `platform` is `terra+aqua` (Planetary Computer writes `terra,aqua`).

### Landsat dates

| date | day index | platform | cloud cover % | fill % |
|---|---|---|---|---|
{landsat_rows}

Clouds are blobby, with thin edges inside a 3-pixel ring flagged *dilated cloud*; shadows are
the clouds displaced away from the sun (darker, flagged *cloud shadow*); cloudy dates have
thin cirrus (flagged *cirrus*, slightly brighter). Some dates have a slanted band of fill
along a scene edge (DN 0, QA_PIXEL = 1). QA values follow USGS: clear land 21824, clear
water 21952, cloud 22280, fill 1.

### Truth days

{", ".join(f"{d[t]} (day {t})" for t in truth_days)} — none is a Landsat date.

"""


def _readme_scene(scene: Scene) -> str:
    """README: how the scene is simulated (land cover, change, MODIS, loading, the spec)."""
    spec = scene.spec
    d = scene.dates
    classes = "\n".join(
        f"| {i} | {n} | {100 * (scene.classes == i).mean():.1f} |" for i, n in enumerate(CLASS_NAMES)
    )
    change = (
        f"A **{spec.change_kind}** on {d[spec.change_day]} (day index {spec.change_day}) changes "
        f"{int(scene.change_mask.sum())} pixels ({100 * scene.change_mask.mean():.1f} %) to "
        f"`{CLASS_NAMES[scene.fine_window.change_class]}`"
        + (" (turbid water that clears over ~2 weeks)" if spec.change_kind == "flood" else "")
        + ". `stfuse-truth/change_mask.tif` marks them."
        if spec.change_day is not None
        else "No abrupt change (change_day = None)."
    )
    spec_lines = "\n".join(f"    {k} = {v!r}" for k, v in spec.to_dict().items())
    return f"""## Land cover

| id | class | % of scene |
|---|---|---|
{classes}

Fields are noisy-edged Voronoi patches with per-field phenology (double-logistic vegetation
fraction): `crop_early` (winter-wheat-like) senesces in June, `crop_late` (maize-like) greens up
in June-July, grassland slowly dries, forest is stable. A river crosses the scene; a town sits
near it. Rain events darken soils for a few days. {change}

## MODIS simulation

The 30 m truth is averaged to 120 m, blurred by a Gaussian PSF (sigma = {spec.psf_sigma} MODIS pixels),
averaged onto the sinusoidal pixels (`rasterio.warp.reproject`, `average`), then a small per-day,
per-band bias (sd {spec.coarse_bias}) and noise (sd {spec.coarse_noise}; doubled where quality is 1) are added.
On about {100 * spec.coarse_gap_days:.0f} % of the days a patch of pixels is fill (32767, quality 255).
Loading MODIS onto the Landsat grid with bilinear resampling therefore gives values consistent
with the truth.

## Loading

```python
import pystac, odc.stac
cat = pystac.Catalog.from_file("sample_scenes/catalog.json")
items = list(cat.get_items(recursive=True))
landsat = [i for i in items if i.collection_id == "landsat-c2-l2"]
modis = [i for i in items if i.collection_id == "modis-43A4-061"]
fine = odc.stac.load(landsat, bands=["red", "qa_pixel"], chunks={{}})
coarse = odc.stac.load(modis, bands=["Nadir_Reflectance_Band1"], like=fine, resampling="bilinear", chunks={{}})
```

## Simulator spec

{spec_lines}
"""
