"""stfuse's band names and their aliases: plain data, no numpy, so the CLI can load it at start-up."""

from __future__ import annotations

import difflib
from typing import Sequence

from stfuse.errors import BandError

BANDS: tuple[str, ...] = ("blue", "green", "red", "nir08", "swir16", "swir22")
"""Common band names stfuse harmonises every sensor to, in this order."""


BAND_ALIASES: dict[str, str] = {"nir": "nir08", "swir1": "swir16", "swir2": "swir22"}
"""Other names accepted for stfuse's bands: STAC ``eo`` common names and the usual Landsat
names, each mapped to the :data:`BANDS` name it stands for (only for bands stfuse has)."""


def band_name(name: str) -> str | None:
    """stfuse's name (one of :data:`BANDS`) of band ``name`` or of its alias (case and spaces
    ignored, e.g. ``"NIR"`` -> ``"nir08"``); None when ``name`` is neither."""
    key = str(name).strip().lower()
    return key if key in BANDS else BAND_ALIASES.get(key)


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """``" (did you mean 'X'?)"`` for the choice closest to ``name`` (difflib), else ``""``."""
    close = difflib.get_close_matches(str(name).strip().lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_bands(bands: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate band names; returns stfuse's names (:data:`BANDS`) as a tuple, in the order given.

    Aliases (:data:`BAND_ALIASES`: ``nir``, ``swir1``, ``swir2``) become the band they stand for.
    :class:`BandError` on an unknown name (with the closest known one), a band given twice, or none.
    """
    names: list[str] = []
    for band in bands:
        name = band_name(band)
        if name is None:
            raise BandError(
                f"unknown band {band!r}{did_you_mean(band, [*BANDS, *BAND_ALIASES])}; "
                f"choose from {', '.join(BANDS)} (aliases: {', '.join(f'{a}={b}' for a, b in BAND_ALIASES.items())})"
            )
        if name in names:
            raise BandError(f"band {name!r} is requested twice ({', '.join(map(str, bands))}); give each band once")
        names.append(name)
    if not names:
        raise BandError(f"no bands requested; choose from {', '.join(BANDS)}")
    return tuple(names)
