"""Beyond MODIS (#30): VIIRS NBAR as the coarse sensor, HLS and Sentinel-2 as fine sensors.

Real item JSON (tests/data/items, see its README) is checked against the sensor table, then served
on loopback (range server + rustac STAC API) with small COGs written to the items' declared grids."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from stfuse.data import catalog as cat
from stfuse.data.cube import load_coarse, load_fine
from stfuse.data.sensors import HLS_FMASK, HLS_L30, HLS_S30, MODIS_END, SENTINEL2_L2A, VNP43IA4, VNP43MA4, collection, default_coarse
from stfuse.errors import InputError
from stfuse.sim.sample import write_cog
from stfuse.sim.testing import rustac_executable, serve_files, serve_stac_api

ITEMS = Path(__file__).parent / "data" / "items"
VIIRS_ITEM = ITEMS / "VNP43IA4.A2012364.h11v05.001.2018186051325.json"
S2_OLD = ITEMS / "S2A_MSIL2A_20190212T192651_N0212_R013_T07HFE.json"  # baseline 02.12: no offset
S2_NEW = ITEMS / "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ.json"  # baseline 04.00: -1000 DN
SURFACE = {"red": 0.0432, "nir08": 0.3121}  # the same surface reflectance in both Sentinel-2 items


def _cli(*args):
    from stfuse_cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


# ----------------------------------------------------------------------------- facts vs real items


def test_viirs_real_item_matches_the_table():
    """stactools-viirs' VNP43IA4 item: I1/I2/I3 assets int16, nodata 32767, scale 1e-4, 500 m on the
    463.3127 m sinusoidal grid, per-band mandatory quality uint8 nodata 255; its id is an alias."""
    item = pystac.Item.from_file(str(VIIRS_ITEM))
    meta = collection(item.collection_id)
    assert meta is VNP43IA4 and meta.resolution == "coarse"
    assert abs(item.properties["proj:transform"][0] - meta.pixel_size) < 1e-6
    for band, key in meta.assets.items():
        declared = item.assets[key].extra_fields["raster:bands"][0]
        assert (declared["data_type"], declared["nodata"], declared["scale"]) == (meta.dtype, meta.nodata, meta.scale)
        assert declared["spatial_resolution"] == 500
        qa = item.assets[meta.qa_assets[band]].extra_fields["raster:bands"][0]
        assert (qa["data_type"], qa["nodata"]) == (meta.qa_dtype, meta.qa_nodata)
        assert [c["value"] for c in item.assets[meta.qa_assets[band]].extra_fields["classification:classes"]] == [0, 1]
    wavelengths = {b: item.assets[k].extra_fields["eo:bands"][0]["center_wavelength"] for b, k in meta.assets.items()}
    assert wavelengths == {"red": 0.64, "nir08": 0.865, "swir16": 1.61}
    assert VNP43MA4.pixel_of("red") == pytest.approx(2 * VNP43IA4.pixel_of("red"))
    assert SENTINEL2_L2A.pixel_of("red") == 10.0 and SENTINEL2_L2A.pixel_of("nir08") == 20.0


def test_sentinel2_real_items_declare_their_offset():
    """The generator's items: offset 0 at baseline 02.12, -0.1 at 04.00; the table reads both, and the
    Earth Search flag (offset already applied to the COG) and a Planetary Computer item without
    raster:bands follow the baseline."""
    old, new = (pystac.Item.from_file(str(p)) for p in (S2_OLD, S2_NEW))
    assert SENTINEL2_L2A.scale_offset(old, "red") == (1e-4, 0.0)
    assert SENTINEL2_L2A.scale_offset(new, "nir08") == (1e-4, -0.1)
    pc_like = new.clone()
    for asset in pc_like.assets.values():
        asset.extra_fields.pop("raster:bands", None)
    assert SENTINEL2_L2A.scale_offset(pc_like, "red") == pytest.approx((1e-4, -0.1))
    pc_like.properties["s2:processing_baseline"] = "03.01"
    assert SENTINEL2_L2A.scale_offset(pc_like, "red") == (1e-4, 0.0)
    applied = new.clone()
    applied.properties["earthsearch:boa_offset_applied"] = True
    assert SENTINEL2_L2A.scale_offset(applied, "red") == (1e-4, 0.0)


def test_hls_fmask_bits_and_assets():
    """HLS v2.0 Fmask: cloud (1), adjacent (2), shadow (3), snow (4), high aerosol (6-7 = 3) are bad;
    cirrus bit 0 (unused), water (5), low/moderate aerosol are not. L30/S30 asset keys per sensor."""
    values = np.array([0, 1, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 2 << 6, 3 << 6, 255], np.uint8)
    assert HLS_FMASK.bad_mask(values).tolist() == [False, False, True, True, True, True, False, False, False, True, True]
    assert HLS_L30.assets["nir08"] == "B05" and HLS_S30.assets["nir08"] == "B8A" and HLS_S30.assets["swir16"] == "B11"
    assert (HLS_L30.nodata, HLS_L30.scale, HLS_L30.dtype) == (-9999, 1e-4, "int16")
    assert collection("HLSS30_2.0") is HLS_S30 and collection("HLSL30.v2.0") is HLS_L30


def test_coarse_default_by_date():
    """MCD43A4 up to the end of MODIS; VIIRS after: VNP43IA4 when it has the bands, else VNP43MA4."""
    assert default_coarse(dt.date(2026, 8, 1), MODIS_END) == "modis-43A4-061"
    assert default_coarse(None, None) == "modis-43A4-061"
    assert default_coarse(dt.date(2026, 9, 1), dt.date(2026, 9, 30), ("red", "nir08")) == "VNP43IA4"
    assert default_coarse(None, dt.date(2027, 1, 1)) == "VNP43MA4"  # blue/green/swir22 are M bands only
    assert cat.query_collections(None, start=dt.date(2027, 6, 1), end=dt.date(2027, 6, 2), bands=["red"]) == ["landsat-c2-l2", "VNP43IA4"]
    assert cat.query_collections(None, start=dt.date(2023, 6, 1)) == ["landsat-c2-l2", "modis-43A4-061"]
    assert cat.query_collections("planetary-computer", fine_collection="hls2-s30") == ["hls2-s30", "modis-43A4-061"]
    assert cat.provider_id("nasa-earthdata", "hls2-l30") == "HLSL30_2.0" if hasattr(cat, "provider_id") else True


def test_earthdata_token_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("EARTHDATA_TOKEN", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(InputError, match="EARTHDATA_TOKEN") as err:
        cat.earthdata_credentials()
    assert err.value.exit_code == 2
    monkeypatch.setenv("EARTHDATA_TOKEN", "s3cret-token")
    assert cat.earthdata_credentials() == {"GDAL_HTTP_HEADERS": "Authorization: Bearer s3cret-token"}
    netrc = tmp_path / "netrc"
    netrc.write_text("machine urs.earthdata.nasa.gov login me password pw\n")
    monkeypatch.delenv("EARTHDATA_TOKEN")
    monkeypatch.setenv("NETRC", str(netrc))
    assert cat.earthdata_credentials()["GDAL_HTTP_NETRC_FILE"] == str(netrc)
    assert cat.needs_earthdata(["https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/HLSL30.020/x.tif"])
    assert not cat.needs_earthdata(["https://sentinel2l2a01.blob.core.windows.net/x.tif"])


# ----------------------------------------------------------------------------- Sentinel-2 over loopback


def _s2_item(path: Path, root: Path, url: str) -> pystac.Item:
    """The real item with its red/nir08/scl assets pointing at 48 x 48 px COGs on its declared 20 m
    grid (from the grid's origin): DN = surface / scale - offset / scale; SCL 4 (vegetation), 8
    (cloud, medium probability) in the first 12 rows, 3 (shadow) in the first 12 columns."""
    item = pystac.Item.from_file(str(path))
    item.collection_id = "sentinel-2-l2a"  # the generator's items carry no collection; Planetary Computer adds it
    for asset in item.assets.values():  # the generator's relative hrefs, as served (only the three below are read)
        asset.href = f"{url}/{item.id}/{asset.href.removeprefix('./')}"
    transform = Affine(*item.assets["red_20m"].extra_fields["proj:transform"])
    crs = f"EPSG:{item.properties['proj:epsg']}"
    for band, key in (("red", "red_20m"), ("nir08", "nir08")):
        scale, offset = SENTINEL2_L2A.scale_offset(item, band)
        dn = np.full((48, 48), round((SURFACE[band] - offset) / scale), np.uint16)
        write_cog(root / f"{item.id}_{key}.tif", dn, transform=transform, crs=crs, nodata=0)
        item.assets[key].href = f"{url}/{item.id}_{key}.tif"
    scl = np.full((48, 48), 4, np.uint8)
    scl[:12] = 8
    scl[:, :12] = 3
    write_cog(root / f"{item.id}_scl.tif", scl, transform=transform, crs=crs, nodata=0)
    item.assets["scl"].href = f"{url}/{item.id}_scl.tif"
    return item


def _s2_geobox(item: pystac.Item):
    from odc.geo.geobox import GeoBox

    x0, y0 = item.assets["red_20m"].extra_fields["proj:transform"][2], item.assets["red_20m"].extra_fields["proj:transform"][5]
    return GeoBox.from_bbox((x0, y0 - 960, x0 + 960, y0), f"EPSG:{item.properties['proj:epsg']}", resolution=30.0)


def test_sentinel2_baseline_0400_and_older_load_to_the_same_reflectance(tmp_path):
    """A baseline 04.00 item (DN + 1000) and a 02.12 item of the same surface load to the same
    reflectance (to float32 rounding); SCL cloud and shadow are masked; each loads on its own day."""
    results = {}
    with serve_files(tmp_path) as files:
        for path in (S2_OLD, S2_NEW):
            item = _s2_item(path, tmp_path, files.url)
            cube = load_fine([item], bands=("red", "nir08"), geobox=_s2_geobox(item)).compute()
            results[item.id] = cube
    for item_id, cube in results.items():
        refl, valid = cube.reflectance.values[0], cube.valid.values[0]
        assert valid[9:-1, 9:-1].all() and not valid[:8].any() and not valid[:, :8].any()  # SCL 8 rows, 3 columns (240 m)
        for b, band in enumerate(("red", "nir08")):
            assert np.abs(refl[b][valid] - SURFACE[band]).max() < 1e-6, (item_id, band)
    days = {k: str(v.time.values[0])[:10] for k, v in results.items()}
    assert days == {"S2A_T07HFE_20190212T192646_L2A": "2019-02-12", "S2B_T33XWJ_20220413T150756_L2A": "2022-04-13"}


def test_earth_search_keys_and_flag(tmp_path):
    """The same item shaped like Earth Search v1 (keys red/nir08/scl, offset already applied to the
    COG: earthsearch:boa_offset_applied true, raster:bands still saying -0.1) loads to the surface."""
    with serve_files(tmp_path) as files:
        item = _s2_item(S2_OLD, tmp_path, files.url)  # DNs without offset, as Earth Search's applied COGs hold
        es = item.clone()
        es.properties["s2:processing_baseline"] = "04.00"
        es.properties["earthsearch:boa_offset_applied"] = True
        for old, new in (("red_20m", "red"), ("scl", "scl")):
            es.assets[new] = es.assets.pop(old)
        for asset in es.assets.values():
            for rb in asset.extra_fields.get("raster:bands", []):
                if "scale" in rb:
                    rb["offset"] = -0.1
        cube = load_fine([es], bands=("red", "nir08"), geobox=_s2_geobox(item)).compute()
    valid = cube.valid.values[0]
    assert np.abs(cube.reflectance.values[0, 0][valid] - SURFACE["red"]).max() < 1e-6


def test_viirs_hdf5_only_item_is_refused_clearly():
    """LP DAAC ships VNP43IA4 as one .h5: an item with only that asset is refused naming HDF5."""
    from odc.geo.geobox import GeoBox

    item = pystac.Item.from_file(str(VIIRS_ITEM))
    for key in [k for k in item.assets if k != "hdf5"]:
        del item.assets[key]
    box = GeoBox.from_bbox((-80.1, 35.0, -80.0, 35.1), "EPSG:4326", resolution=0.001)
    with pytest.raises(InputError, match="HDF5"):
        load_coarse([item], geobox=box, bands=("red",))


# ----------------------------------------------------------------------------- search and predict end to end

SHIFT = dt.timedelta(days=1461)  # 2023-06 -> 2027-06: after the end of MODIS


def _viirs_catalog(mini: Path, out: Path, base_url: str) -> list[Path]:
    """The mini catalog as a 2027 one: Landsat items 4 years later, and its MCD43A4 items as VIIRS
    VNP43IA4 items (the real stactools-viirs item as the template: keys, collection id, proj) whose
    I1/I2/I3 assets are the MODIS red/nir/swir16 COGs. Returns the FeatureCollection files."""
    template = json.loads(VIIRS_ITEM.read_text())
    cat_ = pystac.Catalog.from_file(str(mini / "catalog.json"))
    band_of = {"Band1": "I1", "Band2": "I2", "Band6": "I3"}
    by: dict[str, list] = {}
    for item in cat_.get_items(recursive=True):
        if item.collection_id not in ("landsat-c2-l2", "modis-43A4-061"):
            continue
        item = item.clone()
        item.make_asset_hrefs_absolute()
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        for k in ("datetime", "start_datetime", "end_datetime"):
            if d["properties"].get(k):
                when = dt.datetime.fromisoformat(d["properties"][k].replace("Z", "+00:00")) + SHIFT
                d["properties"][k] = when.isoformat().replace("+00:00", "Z")
        for a in d["assets"].values():
            a["href"] = f"{base_url}/{Path(a['href']).resolve().relative_to(mini.resolve()).as_posix()}"
        if item.collection_id == "modis-43A4-061":
            v = copy.deepcopy(template)
            v["id"] = d["id"].replace("MCD43A4", "VNP43IA4")
            v["geometry"], v["bbox"], v["links"] = d["geometry"], d["bbox"], []
            v["properties"].update({k: d["properties"].get(k) for k in ("start_datetime", "end_datetime", "proj:wkt2")})
            v["properties"].pop("proj:transform"), v["properties"].pop("proj:shape")
            v["properties"]["datetime"] = d["properties"].get("datetime")  # the day the NBAR is for (window centre)
            assets = {}
            for modis_key, asset in d["assets"].items():
                for modis_band, i in band_of.items():
                    if modis_key.endswith(modis_band):
                        key = modis_key.replace(f"_{modis_band}", f"_{i}").replace("Nadir_Reflectance_", "Nadir_Reflectance_")
                        new = dict(template["assets"][key])
                        new.update({k: asset[k] for k in ("href", "proj:shape", "proj:transform") if k in asset})
                        assets[key] = new
            v["assets"] = assets
            d = v
        by.setdefault(d["collection"], []).append(d)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for cid, features in by.items():
        path = out / f"{cid}.json"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def viirs_api(mini_catalog, tmp_path_factory):
    if rustac_executable() is None:
        pytest.skip("rustac not installed (pip install rustac)")
    with serve_files(mini_catalog) as files:
        paths = _viirs_catalog(mini_catalog, tmp_path_factory.mktemp("viirs"), files.url)
        with serve_stac_api(paths) as api:
            yield api


def test_search_finds_viirs_after_modis(viirs_api):
    """`stfuse search` on loopback in 2027: by default the coarse collection is VIIRS (VNP43MA4, as
    search lists all six bands: this catalog holds none); --coarse-collection VNP43IA4 lists the
    VIIRS items, stored under stactools' id viirs-43ia4-001, as sensor VIIRS."""
    args = ("search", "--catalog", viirs_api.url, "--start", "2027-06-01", "--end", "2027-06-30", "--json")
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    assert {r["collection"] for r in json.loads(result.output)} == {"landsat-c2-l2"}
    result = _cli(*args, "--coarse-collection", "VNP43IA4")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    coarse = [r for r in rows if r["collection"] == "VNP43IA4"]
    assert len(coarse) >= 2 and all(r["sensor"] == "VIIRS" and r["id"].startswith("VNP43IA4.") for r in coarse)
    assert len(rows) > len(coarse)


def test_predict_landsat_plus_viirs_equals_the_modis_run(viirs_api, mini_catalog, tmp_path):
    """`stfuse predict` on loopback in 2027: VIIRS chosen by default (tagged), and since its COGs are
    the MODIS ones, each day equals the 2023 MCD43A4 run of the same scene bit for bit."""
    viirs_out, modis_out = tmp_path / "viirs", tmp_path / "modis"
    result = _cli("predict", "--catalog", viirs_api.url, "--start", "2027-06-13", "--end", "2027-06-13",
                  "--bands", "red,nir08", "-o", viirs_out, "-q")
    assert result.exit_code == 0, result.output
    result = _cli("predict", "--catalog", mini_catalog, "--start", "2023-06-13", "--end", "2023-06-13",
                  "--bands", "red,nir08", "-o", modis_out, "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(viirs_out / "stfuse_2027-06-13.tif") as v, rasterio.open(modis_out / "stfuse_2023-06-13.tif") as m:
        assert json.loads(v.tags()["collections"]) == {"fine": "landsat-c2-l2", "coarse": "VNP43IA4"}
        assert json.loads(m.tags()["collections"]) == {"fine": "landsat-c2-l2", "coarse": "modis-43A4-061"}
        np.testing.assert_array_equal(v.read(), m.read())


def test_predict_takes_the_fine_collection_asked_for(tmp_path):
    """``stfuse predict --fine-collection``: the query searches that collection (the bundled sample
    holds Landsat only, so Sentinel-2 is refused naming what it holds); bad names are refused."""
    from click.testing import CliRunner

    from stfuse.config import Query
    from stfuse.errors import InputError
    from stfuse_cli.main import cli

    args = ["predict", "--start", "2023-06-12", "--end", "2023-06-12", "--bands", "red", "-q"]
    s2 = CliRunner().invoke(cli, [*args, "--fine-collection", "sentinel-2-l2a", "-o", str(tmp_path / "s2")])
    assert s2.exit_code == 2 and "no sentinel-2-l2a items" in s2.output and "landsat-c2-l2" in s2.output
    landsat = CliRunner().invoke(cli, [*args, "--fine-collection", "landsat-c2-l2", "-o", str(tmp_path / "l")])
    assert landsat.exit_code == 0, landsat.output
    with pytest.raises(InputError, match="not a fine collection"):
        Query(fine_collection="modis-43A4-061")
