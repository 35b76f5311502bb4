"""Band aliases (STAC common names / usual Landsat names) and "did you mean" in `check_bands` (issue #19)."""

from __future__ import annotations

import pytest

from stfuse.data.sensors import BAND_ALIASES, BANDS, band_name, check_bands
from stfuse.errors import BandError


def test_aliases_map_to_stfuse_band_names_in_the_order_given():
    assert check_bands(["nir", "swir1", "swir2", "red"]) == ("nir08", "swir16", "swir22", "red")
    assert check_bands(("NIR", " Red ")) == ("nir08", "red")
    assert check_bands(list(BANDS)) == BANDS
    assert set(BAND_ALIASES.values()) <= set(BANDS)  # only bands stfuse has
    assert band_name("swir2") == "swir22" and band_name("coastal") is None and band_name("nir08") == "nir08"


@pytest.mark.parametrize(
    "bands, message",
    [
        (["red", "nir8"], "unknown band 'nir8' (did you mean 'nir08'?); choose from blue, green, red, nir08, swir16, swir22"),
        (["gren"], "unknown band 'gren' (did you mean 'green'?)"),
        (["swir_1"], "unknown band 'swir_1' (did you mean 'swir1'?)"),
        (["thermal"], "unknown band 'thermal'; choose from"),
        (["nir", "nir08"], "band 'nir08' is requested twice (nir, nir08)"),
        ([], "no bands requested"),
    ],
)
def test_unknown_or_repeated_bands_are_refused_with_a_suggestion(bands, message):
    with pytest.raises(BandError) as err:
        check_bands(bands)
    assert message in str(err.value)
    if bands == ["thermal"]:  # nothing close: no suggestion
        assert "did you mean" not in str(err.value)


def test_the_library_accepts_aliases():
    """The query every front end builds (stfuse.config.Query) takes aliases and keeps stfuse's names."""
    from stfuse.config import Query

    assert Query(bands=("nir", "red")).bands == ("nir08", "red")
    with pytest.raises(BandError, match=r"did you mean 'swir2'\?"):
        Query(bands=("swir3",))
