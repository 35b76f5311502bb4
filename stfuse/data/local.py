"""What a local raster file is: its scale and offset, its band names and the QA file beside it.

Users bring files as they have them: USGS Collection 2 downloads (``LC08_L2SP_..._SR_B4.TIF``
with ``..._QA_PIXEL.TIF`` and ``..._MTL.json`` beside, no GeoTIFF scale tags), MODIS files
named as LP DAAC ships them (``MCD43A4...._Nadir_Reflectance_Band1.tif``), files cut or warped
by hand that lost their band descriptions. One set of rules, used by every reader (local-file
``predict``, ``train``, ``evaluate``):

Scale and offset (integer data), first that applies:
  1. the file's own GeoTIFF band scale/offset tags;
  2. a Landsat C2 L2 name (``_SR_B<n>``: reflectance; ``_ST_B<n>``: surface temperature, kelvin)
     with the ``_MTL.json``/``_MTL.txt`` beside it: its ``REFLECTANCE_MULT/ADD_BAND_<n>``
     (``TEMPERATURE_MULT/ADD_BAND_ST_B<n>``); without one, the Collection 2 constants;
  3. a MODIS asset name (``Nadir_Reflectance_Band<n>``, ``sur_refl_b0<n>``, in the file name or
     the band description): 1e-4, with the product's fill value when the file declares none;
  4. else reflectance x 10000 (:data:`DEFAULT_INTEGER_SCALE`), with a warning naming the file.
Float data are taken as they are (x the scale tag if set).

Band names: the band description when it names a band (stfuse names and aliases, MODIS asset
names); else, for a single-band file, the band its file name says (USGS band number for the
platform, MODIS asset, or the last word: ``scene_red.tif``); else ``b1, b2, ...``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stfuse.data.sensors import LANDSAT_C2_L2, LANDSAT_QA, MODIS_09GA, MODIS_43A4, QARule, band_name
from stfuse.errors import InputError

log = logging.getLogger("stfuse")

PathLike = str | os.PathLike[str]

DEFAULT_INTEGER_SCALE = 1e-4
"""Integer rasters with no scale tag and no known naming are read as reflectance x 10000."""

LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET = 0.00341802, 149.0
"""Collection 2 L2 surface temperature: kelvin = DN * scale + offset (USGS Science Product Guide)."""

LANDSAT_SR_ASSET = re.compile(r"^(?P<prefix>L[COTEM]0(?P<platform>\d)_L2S[PR]_\w*?)_(?P<kind>SR|ST)_(?P<band>B\d+)$", re.IGNORECASE)
"""USGS Landsat C2 L2 asset file stems (``LC08_L2SP_..._SR_B4``, ``LC09_L2SP_..._ST_B10``)."""

_MODIS_ASSET = re.compile(r"(?P<name>Nadir_Reflectance_Band(?P<n43>\d)|sur_refl_b0?(?P<n09>\d))", re.IGNORECASE)
"""MODIS MCD43A4 / MOD09GA asset names, in a file name or a band description."""

_MODIS_BAND = {int(asset.rsplit("Band", 1)[1]): band for band, asset in MODIS_43A4.assets.items()}
"""MODIS band number -> stfuse band (the sensor table's MCD43A4 assets; MOD09GA numbers its bands alike)."""

_GENERIC_NAME = re.compile(r"^(b|band)?[ _]?\d+$", re.IGNORECASE)
"""Band descriptions that name no band (``b1``, ``band2``, ``Band 3``, ``4``)."""


_WARNED_DEFAULT_SCALE: set[str] = set()


@dataclass(frozen=True)
class FileScaling:
    """How a file's values become physical values: per band ``value = DN * scales + offsets``,
    ``nodata`` (None: none), ``unit`` (``"reflectance"`` or ``"kelvin"``) and ``source``, which
    rule said so (``"tags"``, ``"MTL <file>"``, ``"Collection 2 name"``, ``"MODIS name"``,
    ``"float"``, ``"default"``)."""

    scales: np.ndarray
    offsets: np.ndarray
    nodata: float | None
    source: str
    unit: str = "reflectance"


def _mtl_beside(prefix: str, folder: Path) -> Path | None:
    for suffix in ("_MTL.json", "_MTL.txt", "_mtl.json", "_mtl.txt"):
        candidate = folder / f"{prefix}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _mtl_values(path: Path) -> dict[str, float]:
    """``NAME -> number`` of every numeric entry of a Landsat MTL file (JSON or ODL text)."""
    values: dict[str, float] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return values
    if path.suffix.lower() == ".json":
        try:
            stack: list[Any] = [json.loads(text)]
        except ValueError:
            log.warning("%s is not valid JSON; ignoring it", path)
            return values
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for key, value in node.items():
                    if isinstance(value, (dict, list)):
                        stack.append(value)
                    else:
                        try:
                            values[str(key).upper()] = float(value)
                        except (TypeError, ValueError):
                            pass
            elif isinstance(node, list):
                stack.extend(node)
        return values
    for line in text.splitlines():
        key, _, value = line.partition("=")
        try:
            values[key.strip().upper()] = float(value.strip().strip('"'))
        except ValueError:
            pass
    return values


def _landsat_scaling(path: Path, match: re.Match[str], count: int) -> FileScaling:
    band, kind = match["band"].upper(), match["kind"].upper()
    mtl = _mtl_beside(match["prefix"], path.parent)
    values = _mtl_values(mtl) if mtl else {}
    if kind == "SR":
        mult, add = values.get(f"REFLECTANCE_MULT_BAND_{band[1:]}"), values.get(f"REFLECTANCE_ADD_BAND_{band[1:]}")
        default, unit = (LANDSAT_C2_L2.scale, LANDSAT_C2_L2.offset), "reflectance"
    else:
        mult, add = values.get(f"TEMPERATURE_MULT_BAND_ST_{band}"), values.get(f"TEMPERATURE_ADD_BAND_ST_{band}")
        default, unit = (LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET), "kelvin"
    if mult is not None and add is not None:
        scale, offset, source = mult, add, f"MTL {mtl.name}"  # type: ignore[union-attr]
    else:
        (scale, offset), source = default, "Collection 2 name"
    return FileScaling(np.full(count, scale), np.full(count, offset), float(LANDSAT_C2_L2.nodata), source, unit)


def file_scaling(path: PathLike, *, dtype: str, scales: Sequence[float | None], offsets: Sequence[float | None],
                 descriptions: Sequence[str | None], nodata: float | None) -> FileScaling:
    """The :class:`FileScaling` of a raster from what rasterio says of it (module docstring's rules).

    ``nodata``: the file's own nodata (kept when set; the rules fill it in only when absent).
    """
    path = Path(path)
    count = len(scales)
    tagged_scales = np.asarray([1.0 if s is None else float(s) for s in scales])
    tagged_offsets = np.asarray([float(o or 0.0) for o in offsets])
    if not np.issubdtype(np.dtype(dtype), np.integer):
        return FileScaling(tagged_scales, tagged_offsets, nodata, "float")
    if np.any(tagged_scales != 1.0) or np.any(tagged_offsets != 0.0):
        return FileScaling(tagged_scales, tagged_offsets, nodata, "tags")
    landsat = LANDSAT_SR_ASSET.match(path.stem)
    if landsat:
        found = _landsat_scaling(path, landsat, count)
        return FileScaling(found.scales, found.offsets, found.nodata if nodata is None else nodata, found.source, found.unit)
    modis = _MODIS_ASSET.search(path.stem) or next((m for d in descriptions if d and (m := _MODIS_ASSET.search(d))), None)
    if modis:
        product = MODIS_43A4 if modis["n43"] else MODIS_09GA
        return FileScaling(np.full(count, product.scale), np.full(count, product.offset),
                           float(product.nodata) if nodata is None else nodata, "MODIS name")
    if str(path) not in _WARNED_DEFAULT_SCALE:  # once per file and process: a file read twice is one problem
        _WARNED_DEFAULT_SCALE.add(str(path))
        log.warning("%s: integer data without a scale tag or a known file name; reading it as reflectance x 10000 "
                    "(scale 1e-4). If that is wrong, set the band scale/offset (gdal_edit.py -scale S -offset O) "
                    "or keep the USGS/LP DAAC file name", path)
    return FileScaling(np.full(count, DEFAULT_INTEGER_SCALE), np.zeros(count), nodata, "default")


def band_name_of_file(path: PathLike) -> str | None:
    """The band a single-band file's name says it holds, else None.

    A USGS Landsat C2 L2 asset name gives the band by its number for that platform
    (``LC08_..._SR_B4.TIF`` -> ``red``, ``LE07_..._SR_B4.TIF`` -> ``nir08``); a MODIS asset name
    by the product's band table (``..._Nadir_Reflectance_Band2.tif`` -> ``nir08``); otherwise the
    last ``_``/``-``-separated word of the name, when it is a band or an alias (``red.tif``,
    ``scene_nir.tif`` -> ``nir08``).
    """
    stem = Path(path).stem
    asset = LANDSAT_SR_ASSET.match(stem)
    if asset:
        if asset["kind"].upper() != "SR":
            return None
        sensor = LANDSAT_C2_L2.sensor_by_platform.get(f"landsat-{asset['platform']}")
        numbers = LANDSAT_C2_L2.band_numbers.get(sensor or "", {})
        return next((band for band, number in numbers.items() if number == asset["band"].upper()), None)
    modis = _MODIS_ASSET.search(stem)
    if modis:
        return _MODIS_BAND.get(int(modis["n43"] or modis["n09"]))
    return band_name(re.split(r"[_\-.\s]+", stem)[-1])


def band_of_description(description: str | None) -> str | None:
    """stfuse's band name of a band description (a band, an alias or a MODIS asset name), else None."""
    if not description:
        return None
    named = band_name(description)
    if named:
        return named
    modis = _MODIS_ASSET.fullmatch(description.strip())
    return _MODIS_BAND.get(int(modis["n43"] or modis["n09"])) if modis else None


def is_generic(description: str | None) -> bool:
    """True for band descriptions that name no band (empty, ``b1``, ``band2``, ``Band 3``, ``4``)."""
    return not description or bool(_GENERIC_NAME.match(description.strip()))


def band_names(path: PathLike, descriptions: Sequence[str | None]) -> list[str]:
    """Band names of a file (module docstring): stfuse names where the description or, for one
    band, the file name says which band; the description as is otherwise; ``b<i>`` when none."""
    names = []
    for i, description in enumerate(descriptions):
        known = band_of_description(description)
        if known is None and len(descriptions) == 1 and is_generic(description):
            known = band_name_of_file(path)
        names.append(known or (description if not is_generic(description) else f"b{i + 1}"))
    return names


# --------------------------------------------------------------------------- QA files


@dataclass(frozen=True)
class QAFile:
    """A quality raster for a data file: its ``path`` and the :class:`QARule` that decodes it."""

    path: Path
    rule: QARule


def qa_rule_for(path: PathLike, *, resolution: str) -> QARule:
    """The rule of a QA file by its name (``QA_PIXEL``, ``Mandatory_Quality``, ``state_1km``),
    else by the role of the file it masks (``fine``: Landsat QA_PIXEL; ``coarse``: MCD43A4
    mandatory quality, 0/1 good)."""
    stem = Path(path).stem.lower()
    if "qa_pixel" in stem:
        return LANDSAT_QA
    if "mandatory_quality" in stem:
        return MODIS_43A4.qa  # type: ignore[return-value]
    if "state_1km" in stem:
        return MODIS_09GA.qa  # type: ignore[return-value]
    return LANDSAT_QA if resolution == "fine" else MODIS_43A4.qa  # type: ignore[return-value]


def _existing(folder: Path, names: Sequence[str]) -> Path | None:
    try:
        present = {p.name.lower(): p for p in folder.iterdir()}
    except OSError:
        return None
    return next((present[n.lower()] for n in names if n.lower() in present), None)


def qa_file_beside(path: PathLike) -> QAFile | None:
    """The QA file that sits beside a data file as the data provider ships it, else None.

    USGS Landsat C2 (``<prefix>_SR_B4.TIF`` -> ``<prefix>_QA_PIXEL.TIF``), stfuse's sample and
    other ``<item>_<band>.tif`` layouts (``<item>_qa_pixel.tif``), MCD43A4
    (``..._Nadir_Reflectance_Band<n>`` -> ``..._BRDF_Albedo_Band_Mandatory_Quality_Band<n>``) and
    MOD09GA (``..._sur_refl_b0<n>`` -> ``..._state_1km``).
    """
    path = Path(path)
    stem, folder = path.stem, path.parent
    suffixes = [path.suffix, path.suffix.upper(), path.suffix.lower(), ".tif", ".TIF"]
    landsat = LANDSAT_SR_ASSET.match(stem)
    modis = _MODIS_ASSET.search(stem)
    if landsat:
        candidates = [f"{landsat['prefix']}_QA_PIXEL{s}" for s in suffixes]
    elif modis:
        head = stem[: modis.start()]
        name = (f"BRDF_Albedo_Band_Mandatory_Quality_Band{modis['n43']}" if modis["n43"] else "state_1km")
        candidates = [f"{head}{name}{s}" for s in suffixes]
    elif "_" in stem:
        head = stem.rsplit("_", 1)[0]
        candidates = [f"{head}_{q}{s}" for q in ("qa_pixel", "QA_PIXEL") for s in suffixes]
    else:
        return None
    found = _existing(folder, candidates)
    if found is None or found.resolve() == path.resolve():
        return None
    return QAFile(found, qa_rule_for(found, resolution="coarse" if modis else "fine"))


def qa_bad_mask(qa: QAFile, shape: tuple[int, int], band_index: int = 0) -> np.ndarray:
    """(H, W) bool, True where ``qa`` flags a pixel unusable; :class:`InputError` when the QA
    raster is not on a ``shape`` grid (it must be on its data file's own grid)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from stfuse.errors import CorruptFileError

    try:
        with rasterio.open(qa.path) as src:
            if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
                raise InputError(f"QA file {qa.path} holds {src.dtypes[0]} values; a QA raster holds integer flags")
            if (src.height, src.width) != tuple(shape):
                raise InputError(f"QA file {qa.path} is {src.height} x {src.width} pixels but its data file is "
                                 f"{shape[0]} x {shape[1]}; give the QA file of that image (on its grid), or --no-qa")
            values = src.read(min(band_index, src.count - 1) + 1)
    except RasterioIOError as err:
        raise CorruptFileError(f"cannot read QA file {qa.path} ({err}); is the file complete?") from None
    return qa.rule.bad_mask(values)


__all__ = ["DEFAULT_INTEGER_SCALE", "FileScaling", "QAFile", "band_name_of_file", "band_names", "band_of_description",
           "file_scaling", "is_generic", "qa_bad_mask", "qa_file_beside", "qa_rule_for"]
