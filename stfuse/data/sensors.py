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
    band_pixel_size: dict[str, float] = field(default_factory=dict)
    """Pixel size (m) of a band whose pixels differ from :attr:`pixel_size` (``pixel_of``)."""
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Other asset keys of an asset (band or QA) at other providers, tried in order when an item
    lacks the key of :attr:`assets` (Earth Search ``red`` for Planetary Computer ``B04``)."""
    ids: tuple[str, ...] = ()
    """Other STAC collection ids of the same product (another provider's name for it)."""
    item_offsets: bool = False
    """Scale/offset differ per item: take them from each item (:meth:`scale_offset`)."""
    fine_resampling: str = "nearest"
    """Resampling of the reflectance onto the 30 m grid when this is the fine collection."""
    hdf5_only: bool = False
    """Some providers ship this product only as HDF5 (LP DAAC ``.h5``): not readable by stfuse yet."""

    def pixel_of(self, band: str) -> float:
        """Pixel size (m) of common band ``band``."""
        return float(self.band_pixel_size.get(band, self.pixel_size))

    def asset_key(self, item: Any, key: str) -> str | None:
        """The key under which ``item`` holds asset ``key`` (``key`` itself or an alias), or None."""
        for candidate in (key, *self.aliases.get(key, ())):
            if candidate in item.assets:
                return candidate
        return None

    def normalise(self, item: Any) -> Any:
        """``item``, or a copy whose assets known by an alias are also under this table's keys."""
        keys = [*self.assets.values(), *self.qa_assets.values(), *([self.qa.asset] if self.qa else [])]
        renames = {k: self.asset_key(item, k) for k in keys if k not in item.assets}
        renames = {k: v for k, v in renames.items() if v is not None}
        if not renames:
            return item
        item = item.clone()
        for key, alias in renames.items():
            item.assets[key] = item.assets[alias].clone()
        return item

    def scale_offset(self, item: Any, band: str) -> tuple[float, float]:
        """(scale, offset) of common band ``band`` in ``item``: reflectance = DN * scale + offset.

        Without :attr:`item_offsets`, the table's. With it (Sentinel-2 L2A), in this order:
        ``earthsearch:boa_offset_applied`` true: the COG already holds DN + 1000 removed, offset 0
        (Earth Search says the flag, not its raster:bands, is the truth); ``s2:processing_baseline``
        before 04.00: offset 0; else the asset's ``raster:bands`` scale/offset; else baseline 04.00
        or later: -1000 DN (-0.1); else the table's."""
        if not self.item_offsets:
            return self.scale, self.offset
        props = item.properties
        key = self.asset_key(item, self.assets[band])
        declared = ((item.assets[key].extra_fields.get("raster:bands") or [{}])[0] if key else {}) or {}
        scale = float(declared.get("scale", self.scale))
        if props.get("earthsearch:boa_offset_applied") is True:
            return scale, 0.0
        baseline = _baseline(props.get("s2:processing_baseline"))
        if baseline is not None and baseline < (4, 0):
            return scale, 0.0
        if "offset" in declared:
            return scale, float(declared["offset"])
        if baseline is not None:
            return scale, S2_BOA_ADD_OFFSET * scale
        return scale, self.offset

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

S2_BOA_ADD_OFFSET = -1000
"""Sentinel-2 L2A BOA_ADD_OFFSET (DN) from processing baseline 04.00 (items from 2022-01-25):
reflectance = (DN + BOA_ADD_OFFSET) / 10000 (ESA Sentinel-2 L2A product notice)."""


def _baseline(text: Any) -> tuple[int, int] | None:
    """``s2:processing_baseline`` ("04.00") as (4, 0); None if absent or unreadable."""
    try:
        major, minor = str(text).split(".")
        return int(major), int(minor)
    except (ValueError, AttributeError):
        return None


def _viirs_nbar(cid: str, bands: dict[str, str], pixel: float, ids: tuple[str, ...], platforms: dict[str, str]) -> Collection:
    """A VIIRS NBAR (VNP43IA4/VJ143IA4 500 m, VNP43MA4/VJ143MA4 1 km) collection: int16, scale 1e-4,
    fill 32767, valid 0..32766, per-band BRDF mandatory quality (0 full, 1 magnitude inversion, 255 fill),
    asset keys as stactools-packages/viirs COG items (``Nadir_Reflectance_I1``,
    ``BRDF_Albedo_Band_Mandatory_Quality_I1``)."""
    return Collection(
        id=cid,
        resolution="coarse",
        assets={b: f"Nadir_Reflectance_{n}" for b, n in bands.items()},
        scale=1e-4,
        offset=0.0,
        nodata=32767,
        dtype="int16",
        qa=QARule(asset=f"BRDF_Albedo_Band_Mandatory_Quality_{next(iter(bands.values()))}", good_max=1, per_band=True),
        qa_assets={b: f"BRDF_Albedo_Band_Mandatory_Quality_{n}" for b, n in bands.items()},
        sensor_by_platform=platforms,
        band_numbers={"VIIRS": dict(bands)},
        pixel_size=pixel,
        qa_nodata=255,
        qa_dtype="uint8",
        valid_range=(0, 32766),
        ids=ids,
        hdf5_only=True,
    )


_SNPP = {"snpp": "VIIRS", "suomi-npp": "VIIRS", "suomi npp": "VIIRS", "npp": "VIIRS"}
_NOAA20 = {"noaa-20": "VIIRS", "noaa20": "VIIRS", "jpss-1": "VIIRS", "j1": "VIIRS"}
_VIIRS_I = {"red": "I1", "nir08": "I2", "swir16": "I3"}
_VIIRS_M = {"blue": "M3", "green": "M4", "red": "M5", "nir08": "M7", "swir16": "M10", "swir22": "M11"}
VIIRS_500M = 463.312716528
VIIRS_1KM = 926.625433056

VNP43IA4 = _viirs_nbar("VNP43IA4", _VIIRS_I, VIIRS_500M, ("viirs-43ia4-001", "VNP43IA4_001", "VNP43IA4_002"), _SNPP)
VJ143IA4 = _viirs_nbar("VJ143IA4", _VIIRS_I, VIIRS_500M, ("VJ143IA4_001", "VJ143IA4_002"), _NOAA20)
VNP43MA4 = _viirs_nbar("VNP43MA4", _VIIRS_M, VIIRS_1KM, ("viirs-43ma4-001", "VNP43MA4_001", "VNP43MA4_002"), _SNPP)
VJ143MA4 = _viirs_nbar("VJ143MA4", _VIIRS_M, VIIRS_1KM, ("VJ143MA4_001", "VJ143MA4_002"), _NOAA20)

HLS_FMASK = QARule(asset="Fmask", bad_bits=(1, 2, 3, 4), field_bits=((6, 2, (3,)),))
"""HLS v2.0 Fmask: bit 0 cirrus (reserved, unused), 1 cloud, 2 adjacent to cloud/shadow, 3 cloud shadow,
4 snow/ice, 5 water, 6-7 aerosol level (0 climatology, 1 low, 2 moderate, 3 high). Cloud, adjacent,
shadow, snow and high aerosol are bad; water is kept (as Landsat QA_PIXEL water)."""

_HLS_COMMON = dict(scale=1e-4, offset=0.0, nodata=-9999, dtype="int16", qa=HLS_FMASK, pixel_size=30.0,
                   qa_nodata=255, qa_dtype="uint8", valid_range=(-100, 16000))

HLS_L30 = Collection(
    id="hls2-l30",
    resolution="fine",
    assets={"blue": "B02", "green": "B03", "red": "B04", "nir08": "B05", "swir16": "B06", "swir22": "B07"},
    sensor_by_platform={"landsat-8": "OLI", "landsat-9": "OLI-2"},
    band_numbers={"OLI": {"blue": "B02", "green": "B03", "red": "B04", "nir08": "B05", "swir16": "B06", "swir22": "B07"}},
    ids=("HLSL30_2.0", "HLSL30.v2.0"),
    **_HLS_COMMON,  # type: ignore[arg-type]
)

HLS_S30 = Collection(
    id="hls2-s30",
    resolution="fine",
    assets={"blue": "B02", "green": "B03", "red": "B04", "nir08": "B8A", "swir16": "B11", "swir22": "B12"},
    sensor_by_platform={"sentinel-2a": "MSI", "sentinel-2b": "MSI", "sentinel-2c": "MSI"},
    band_numbers={"MSI": {"blue": "B02", "green": "B03", "red": "B04", "nir08": "B8A", "swir16": "B11", "swir22": "B12"}},
    ids=("HLSS30_2.0", "HLSS30.v2.0"),
    **_HLS_COMMON,  # type: ignore[arg-type]
)

_S2_ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir08": "B8A", "swir16": "B11", "swir22": "B12"}
_S2_ALIASES = {  # Earth Search v1 keys, then stactools-sentinel2's 20 m keys
    "B02": ("blue", "blue_20m"), "B03": ("green", "green_20m"), "B04": ("red", "red_20m"),
    "B8A": ("nir08",), "B11": ("swir16",), "B12": ("swir22",), "SCL": ("scl",), "B08": ("nir",),
}


def _sentinel2(cid: str, ids: tuple[str, ...] = ()) -> Collection:
    """Sentinel-2 L2A: uint16, nodata 0, valid 1..32767, scale 1e-4, offset per item
    (:meth:`Collection.scale_offset`), SCL classes 0 no data, 1 saturated/defective, 3 cloud shadow,
    8/9 cloud medium/high probability, 10 thin cirrus, 11 snow/ice are bad; B8A (20 m) is nir08."""
    return Collection(
        id=cid,
        resolution="fine",
        assets=dict(_S2_ASSETS),
        scale=1e-4,
        offset=0.0,
        nodata=0,
        dtype="uint16",
        qa=QARule(asset="SCL", bad_values=(0, 1, 3, 8, 9, 10, 11)),
        sensor_by_platform={"sentinel-2a": "MSI", "sentinel-2b": "MSI", "sentinel-2c": "MSI"},
        band_numbers={"MSI": dict(_S2_ASSETS)},
        pixel_size=20.0,
        band_pixel_size={"blue": 10.0, "green": 10.0, "red": 10.0},
        qa_nodata=0,
        qa_dtype="uint8",
        valid_range=(1, 32767),
        aliases=dict(_S2_ALIASES),
        ids=ids,
        item_offsets=True,
        fine_resampling="average",
    )


SENTINEL2_L2A = _sentinel2("sentinel-2-l2a")
SENTINEL2_C1_L2A = _sentinel2("sentinel-2-c1-l2a")

COLLECTIONS: dict[str, Collection] = {c.id: c for c in (LANDSAT_C2_L2, MODIS_43A4, MODIS_09GA, VNP43IA4, VJ143IA4, VNP43MA4,
                                                        VJ143MA4, HLS_L30, HLS_S30, SENTINEL2_L2A, SENTINEL2_C1_L2A)}
COARSE_COLLECTIONS = (MODIS_43A4.id, MODIS_09GA.id, VNP43IA4.id, VJ143IA4.id, VNP43MA4.id, VJ143MA4.id)
"""Collections usable as the coarse (daily) input; the first is the default before :data:`MODIS_END`."""
FINE_COLLECTIONS = (LANDSAT_C2_L2.id, HLS_L30.id, HLS_S30.id, SENTINEL2_L2A.id, SENTINEL2_C1_L2A.id)
"""Collections usable as the fine input; the first is the default."""
MODIS_END = __import__("datetime").date(2026, 8, 31)
"""Last day stfuse takes MODIS NBAR (MCD43A4) for granted: Terra's MODIS ends in December 2025,
Aqua's in August 2026, and MCD43A4 needs both. A query reaching past it gets VIIRS NBAR by default."""
VIIRS_DEFAULTS = (VNP43IA4.id, VNP43MA4.id)
"""VIIRS NBAR collections tried, in order, after :data:`MODIS_END`: the first holding every band asked
for (VNP43IA4, 500 m, has only red, nir08, swir16; VNP43MA4, 1 km, has all six)."""
ALIASES: dict[str, str] = {alias: c.id for c in COLLECTIONS.values() for alias in c.ids}
"""Other providers' collection ids -> stfuse's."""


def default_coarse(start: Any, end: Any, bands: Any = BANDS) -> str:
    """The coarse collection of a query from ``start`` to ``end`` (dates or None): MCD43A4 when its
    last day (``end``, else ``start``; no dates at all: MCD43A4) is up to :data:`MODIS_END`, else the
    first of :data:`VIIRS_DEFAULTS` holding every band of ``bands``."""
    last = end or start
    if last is None or last <= MODIS_END:
        return MODIS_43A4.id
    for cid in VIIRS_DEFAULTS:
        if set(bands) <= set(COLLECTIONS[cid].assets):
            return cid
    return VIIRS_DEFAULTS[-1]

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
    "nasa-earthdata": {
        "url": "https://cmr.earthdata.nasa.gov/stac/LPCLOUD",
        "fine": "hls2-l30",
        "coarse": "VNP43IA4",
        "sign": "earthdata",
    },
}
"""Known STAC APIs by name: URL, default fine/coarse collections, how assets are signed;
``collections``: the stfuse collections it holds, by the provider's own id (see :data:`PROVIDER_IDS`)."""

PROVIDERS["planetary-computer"]["collections"] = {c: c for c in (
    "landsat-c2-l2", "modis-43A4-061", "modis-09GA-061", "sentinel-2-l2a", "hls2-l30", "hls2-s30")}
PROVIDERS["earth-search"]["collections"] = {c: c for c in ("landsat-c2-l2", "sentinel-2-l2a", "sentinel-2-c1-l2a")}
PROVIDERS["nasa-earthdata"]["collections"] = {  # CMR-STAC LP DAAC ids: ShortName_Version
    "hls2-l30": "HLSL30_2.0", "hls2-s30": "HLSS30_2.0", "VNP43IA4": "VNP43IA4_002", "VJ143IA4": "VJ143IA4_002",
    "VNP43MA4": "VNP43MA4_002", "VJ143MA4": "VJ143MA4_002"}


def provider_id(source: Any, collection_id: str) -> str:
    """The id under which provider ``source`` (a name; anything else: unchanged) holds ``collection_id``."""
    provider = PROVIDERS.get(str(source)) if source is not None else None
    return str(((provider or {}).get("collections") or {}).get(collection_id, collection_id))  # type: ignore[union-attr]


def collection(collection_id: str) -> Collection:
    """The :class:`Collection` with id ``collection_id``; :class:`InputError` if unknown."""
    try:
        return COLLECTIONS[ALIASES.get(collection_id, collection_id)]
    except KeyError:
        raise InputError(
            f"unknown collection {collection_id!r}; stfuse knows {', '.join(COLLECTIONS)}"
        ) from None
