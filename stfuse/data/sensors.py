"""Sensor and collection metadata as data: band names, asset keys, scale/offset, QA bits.

One :class:`Collection` per STAC collection (and provider where asset keys differ).
Code never branches on a collection name: it looks the collection up here.

Common band names follow the STAC ``eo`` common names used by Landsat C2 L2 on
Planetary Computer and Earth Search: ``blue, green, red, nir08, swir16, swir22``.

Facts (USGS Landsat C2 L2 Science Product Guide; MODIS MCD43A4/MOD09GA v061 user guides):

- Landsat C2 L2 surface reflectance: ``reflectance = DN * 0.0000275 - 0.2``, uint16, nodata 0,
  valid range 7273..43636.
  QA_PIXEL bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow, 6 clear, 7 water.
  TM/ETM+ bands B1-B5, B7; OLI/OLI-2 bands B2-B7 for blue..swir22.
- MCD43A4 v061 NBAR: int16, scale 1e-4, fill 32767, valid range 0..32766, per-band mandatory quality
  (0 full inversion, 1 magnitude inversion, 255 fill). Band 1 red, 2 nir, 3 blue, 4 green,
  6 swir16, 7 swir22 (band 5, 1240 nm, has no Landsat equivalent).
- MOD09GA v061: int16, scale 1e-4, fill -28672, valid range -100..16000, ``state_1km`` bits 0-1 cloud state,
  2 shadow, 8-9 cirrus, 10 internal cloud flag, 12 snow/ice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stfuse.data.bands import BAND_ALIASES, BANDS, band_name, check_bands, did_you_mean  # noqa: F401 (re-exported)
from stfuse.errors import BandError, InputError

Resolution = Literal["fine", "coarse"]


@dataclass(frozen=True)
class QARule:
    """How to decode a QA asset into a boolean "bad pixel" mask.

    ``bad_bits``: bit positions that, when set, mark the pixel unusable.
    ``bad_values``: exact values that mark the pixel unusable (e.g. 255 = fill).
    ``good_max``: values above this are unusable (for quality ranks, e.g. MCD43 0/1 good).
    ``field_bits``: (first_bit, n_bits, bad_values) multi-bit fields (e.g. MOD09 cloud state).
    """

    asset: str
    bad_bits: tuple[int, ...] = ()
    bad_values: tuple[int, ...] = ()
    good_max: int | None = None
    field_bits: tuple[tuple[int, int, tuple[int, ...]], ...] = ()
    per_band: bool = False

    def bad_mask(self, qa: np.ndarray) -> np.ndarray:
        """Boolean array, True where ``qa`` marks the pixel unusable (or is NaN: no item covers it,
        when the QA loads as float). Shape as ``qa``."""
        qa = np.asarray(qa)
        bad = np.isnan(qa) if qa.dtype.kind == "f" else np.zeros(qa.shape, bool)
        qa = np.where(bad, 0, qa).astype(np.int64)
        for bit in self.bad_bits:
            bad |= ((qa >> bit) & 1).astype(bool)
        for value in self.bad_values:
            bad |= qa == value
        if self.good_max is not None:
            bad |= qa > self.good_max
        for first, n_bits, values in self.field_bits:
            field_value = (qa >> first) & ((1 << n_bits) - 1)
            for value in values:
                bad |= field_value == value
        return bad


@dataclass(frozen=True)
class Collection:
    """Metadata of one STAC collection.

    ``assets`` maps common band name -> asset key; ``qa_assets`` maps common band name ->
    QA asset key for per-band quality (MCD43A4), else the single ``qa.asset`` applies.
    Reflectance = DN * ``scale`` + ``offset``; DN == ``nodata`` or outside ``valid_range`` is missing.
    """

    id: str
    resolution: Resolution
    assets: dict[str, str]
    scale: float
    offset: float
    nodata: int
    dtype: str
    qa: QARule | None
    sensor_by_platform: dict[str, str] = field(default_factory=dict)
    band_numbers: dict[str, dict[str, str]] = field(default_factory=dict)
    qa_assets: dict[str, str] = field(default_factory=dict)
    pixel_size: float = 30.0
    qa_nodata: int | None = None
    """Fill value of the QA asset(s) (``qa_dtype``): what a pixel no item covers must read as."""
    qa_dtype: str | None = None
    valid_range: tuple[float, float] | None = None
    """Smallest and largest valid DN of the reflectance assets (the product guide's valid range).
    DNs outside it, and the fill ``nodata``, are missing: :mod:`stfuse.data.cube` replaces them by
    the fill before any reprojection or resampling, whatever the item or the file declares."""

    def invalid(self, dn: Any) -> Any:
        """True where reflectance DN ``dn`` (numpy or xarray) is the fill or outside :attr:`valid_range`."""
        bad = dn == self.nodata
        if self.valid_range is not None:
            low, high = self.valid_range
            bad = bad | (dn < low) | (dn > high)
        return bad

    def load_config(self) -> dict[str, Any]:
        """odc-stac ``stac_cfg`` with this collection's data types and fill values, for items that
        do not declare them (real MCD43A4 items have no ``nodata`` in ``raster:bands``): without
        it, pixels that no item covers load as 0 — valid reflectance and 'good' quality."""
        assets: dict[str, dict[str, Any]] = {a: {"data_type": self.dtype, "nodata": self.nodata} for a in self.assets.values()}
        if self.qa is not None and self.qa_nodata is not None:
            for a in {self.qa.asset, *self.qa_assets.values()}:
                assets[a] = {"data_type": self.qa_dtype, "nodata": self.qa_nodata}
        return {self.id: {"assets": assets}}

    def asset_for(self, band: str) -> str:
        """Asset key of common band ``band``; :class:`BandError` if the collection lacks it."""
        try:
            return self.assets[band]
        except KeyError:
            raise BandError(
                f"band {band!r} is not available in collection {self.id!r}; "
                f"choose from {', '.join(self.assets)}"
            ) from None

    def to_reflectance(self, dn: np.ndarray) -> np.ndarray:
        """float32 reflectance (NaN where DN is nodata) from raw DNs."""
        dn = np.asarray(dn)
        out = dn.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        out[dn == self.nodata] = np.nan
        return out


LANDSAT_QA = QARule(asset="qa_pixel", bad_bits=(0, 1, 2, 3, 4, 5))
"""Landsat C2 QA_PIXEL: fill, dilated cloud, cirrus, cloud, cloud shadow, snow are bad."""

LANDSAT_QA_BITS = {"fill": 0, "dilated_cloud": 1, "cirrus": 2, "cloud": 3, "shadow": 4, "snow": 5, "clear": 6, "water": 7}

LANDSAT_SR_NOISE = 0.005
"""One standard deviation (reflectance) of a clear Landsat 8/9 OLI C2 L2 surface-reflectance
pixel as an observation of the surface: radiometric noise plus atmospheric-correction error over
land, of order 0.005 reflectance in the visible/NIR bands. A round documented value, not measured
by stfuse; it is the ``sigma`` of the pixels a Landsat date returns as observed
(:data:`stfuse.fusion.quality.QUALITY_BITS` ``observed``)."""

_LANDSAT_ASSETS = {b: b for b in BANDS}

LANDSAT_C2_L2 = Collection(
    id="landsat-c2-l2",
    resolution="fine",
    assets=_LANDSAT_ASSETS,
    scale=0.0000275,
    offset=-0.2,
    nodata=0,
    dtype="uint16",
    qa=LANDSAT_QA,
    sensor_by_platform={
        "landsat-4": "TM",
        "landsat-5": "TM",
        "landsat-7": "ETM+",
        "landsat-8": "OLI",
        "landsat-9": "OLI-2",
    },
    band_numbers={
        "TM": {"blue": "B1", "green": "B2", "red": "B3", "nir08": "B4", "swir16": "B5", "swir22": "B7"},
        "ETM+": {"blue": "B1", "green": "B2", "red": "B3", "nir08": "B4", "swir16": "B5", "swir22": "B7"},
        "OLI": {"blue": "B2", "green": "B3", "red": "B4", "nir08": "B5", "swir16": "B6", "swir22": "B7"},
        "OLI-2": {"blue": "B2", "green": "B3", "red": "B4", "nir08": "B5", "swir16": "B6", "swir22": "B7"},
    },
    pixel_size=30.0,
    qa_nodata=1,  # QA_PIXEL bit 0 alone: fill
    qa_dtype="uint16",
    valid_range=(7273, 43636),  # reflectance -0.0000..1.0 (C2 L2 Science Product Guide)
)

_MCD43_BAND = {"red": 1, "nir08": 2, "blue": 3, "green": 4, "swir16": 6, "swir22": 7}

MODIS_43A4 = Collection(
    id="modis-43A4-061",
    resolution="coarse",
    assets={b: f"Nadir_Reflectance_Band{n}" for b, n in _MCD43_BAND.items()},
    scale=1e-4,
    offset=0.0,
    nodata=32767,
    dtype="int16",
    qa=QARule(asset="BRDF_Albedo_Band_Mandatory_Quality_Band1", good_max=1, per_band=True),
    qa_assets={b: f"BRDF_Albedo_Band_Mandatory_Quality_Band{n}" for b, n in _MCD43_BAND.items()},
    sensor_by_platform={"terra": "MODIS", "aqua": "MODIS", "terra+aqua": "MODIS", "terra,aqua": "MODIS"},
    pixel_size=463.312716528,
    qa_nodata=255,
    qa_dtype="uint8",
    valid_range=(0, 32766),
)

MODIS_09GA = Collection(
    id="modis-09GA-061",
    resolution="coarse",
    assets={b: f"sur_refl_b0{n}" for b, n in _MCD43_BAND.items()},
    scale=1e-4,
    offset=0.0,
    nodata=-28672,
    dtype="int16",
    # state_1km: cloud state (bits 0-1) cloudy=1 / mixed=2, shadow bit 2, cirrus (bits 8-9) >= 2,
    # internal cloud flag bit 10, snow/ice bit 12.
    qa=QARule(asset="state_1km", bad_bits=(2, 10, 12), field_bits=((0, 2, (1, 2)), (8, 2, (2, 3)))),
    sensor_by_platform={"terra": "MODIS", "aqua": "MODIS"},
    pixel_size=463.312716528,
    valid_range=(-100, 16000),
)

COLLECTIONS: dict[str, Collection] = {c.id: c for c in (LANDSAT_C2_L2, MODIS_43A4, MODIS_09GA)}
COARSE_COLLECTIONS = (MODIS_43A4.id, MODIS_09GA.id)
"""Collections usable as the coarse (daily MODIS) input; the first is the default."""

PROVIDERS: dict[str, dict[str, object]] = {
    "planetary-computer": {
        "url": "https://planetarycomputer.microsoft.com/api/stac/v1",
        "fine": "landsat-c2-l2",
        "coarse": "modis-43A4-061",
        "sign": "planetary_computer",
    },
    "earth-search": {
        "url": "https://earth-search.aws.element84.com/v1",
        "fine": "landsat-c2-l2",
        "coarse": None,
        "sign": None,
    },
}
"""Known STAC APIs by name: URL, default fine/coarse collections, how assets are signed."""


def collection(collection_id: str) -> Collection:
    """The :class:`Collection` with id ``collection_id``; :class:`InputError` if unknown."""
    try:
        return COLLECTIONS[collection_id]
    except KeyError:
        raise InputError(
            f"unknown collection {collection_id!r}; stfuse knows {', '.join(COLLECTIONS)}"
        ) from None
