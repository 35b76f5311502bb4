"""A real STAC API (rustac) and a real HTTP range server on 127.0.0.1: search, load, faults.

Items are the sample writer's, shaped like Planetary Computer's `landsat-c2-l2` and
`modis-43A4-061` (asset keys, raster:bands scale/offset, proj extension, MODIS sinusoidal
via proj:wkt2), with asset hrefs rewritten to the loopback file server.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from stfuse.data import catalog as cat
from stfuse.data.cube import load_coarse, load_fine, read_errors
from stfuse.errors import DataUnavailableError, EmptySearchError, RemoteServiceError
from stfuse.sim.synth import simulate
from stfuse.sim.testing import Faults, rustac_executable, serve_files, serve_proxy

from conftest import MINI_SPEC as SPEC

COLLECTIONS = ["landsat-c2-l2", "modis-43A4-061"]

pytestmark = pytest.mark.skipif(rustac_executable() is None, reason="rustac not installed (pip install rustac)")


@pytest.fixture()
def fast_retries(monkeypatch):
    monkeypatch.setattr(cat, "RETRY", cat.RetryPolicy(timeout=1.0, retries=2, backoff=0.05))


def test_api_search_matches_static_catalog(api, mini_catalog):
    query = cat.SearchQuery(start=SPEC.dates[3], end=SPEC.dates[20])
    remote = cat.search(api.url, query, COLLECTIONS)
    local = cat.search(mini_catalog, query, COLLECTIONS)
    for collection in COLLECTIONS:
        assert [i.id for i in remote[collection]] == [i.id for i in local[collection]]
        assert remote[collection]
    # every MODIS day of the range is found (MCD43A4 items also match through their 16-day window)
    assert set(SPEC.dates[3:21]) <= {i.datetime.date() for i in remote["modis-43A4-061"]}
    assert remote["landsat-c2-l2"][0].assets["red"].href.startswith("http://127.0.0.1:")
    # bbox filtering happens on the server
    far = cat.search(api.url, cat.SearchQuery(bbox=(10.0, 10.0, 10.1, 10.1)), COLLECTIONS)
    assert far["landsat-c2-l2"] == []


def test_cube_over_http_equals_local_and_truth(api, mini_catalog, files):
    remote = cat.search(api.url, cat.SearchQuery(), COLLECTIONS)
    local = cat.search(mini_catalog, cat.SearchQuery(), COLLECTIONS)
    requests_before = files.faults.requests
    fine_http = load_fine(remote["landsat-c2-l2"], bands=["red", "nir08"]).compute()
    assert files.faults.requests > requests_before  # really read over HTTP
    fine_local = load_fine(local["landsat-c2-l2"], bands=["red", "nir08"]).compute()
    np.testing.assert_array_equal(fine_http.reflectance.values, fine_local.reflectance.values)

    # grid: native 30 m Landsat grid, pixel edges on the items' own transform
    item = remote["landsat-c2-l2"][0]
    transform = item.properties.get("proj:transform") or item.assets["red"].extra_fields["proj:transform"]
    geobox = fine_http.odc.geobox
    assert geobox.resolution.x == 30 and (geobox.transform.c - transform[2]) % 30 == 0
    assert geobox.shape == (SPEC.height, SPEC.width)

    # values: clear pixels equal the simulator's truth up to Landsat noise and DN quantisation
    scene = simulate(SPEC)
    k = 0
    truth = scene.truth_day(scene.landsat_days[k])[[2, 3]]
    got = fine_http.reflectance.values[k]
    valid = fine_http.valid.values[k]
    assert 0.3 < valid.mean() < 1.0  # some pixels masked by QA (fill edge / cloud)
    err = got[:, valid] - truth[:, valid]
    assert np.sqrt(np.mean(err**2)) < 0.01
    # masked pixels are the ones QA flags
    qa = scene.landsat_qa[k]
    flagged = (qa & 0b111111) != 0
    assert np.array_equal(~valid, flagged)

    # coarse: reprojected bilinear from sinusoidal, tracks the coarse-scale truth
    coarse = load_coarse(remote["modis-43A4-061"], geobox=geobox, bands=["nir08"]).compute()
    day = scene.landsat_days[k]
    c = coarse.reflectance.values[day, 0]
    t = scene.truth_day(day)[3]
    f = SPEC.coarse_factor
    blocks_c = c.reshape(SPEC.height // f, f, SPEC.width // f, f).mean(axis=(1, 3))
    blocks_t = t.reshape(SPEC.height // f, f, SPEC.width // f, f).mean(axis=(1, 3))
    ok = np.isfinite(blocks_c)
    assert np.corrcoef(blocks_c[ok], blocks_t[ok])[0, 1] > 0.8  # 16 coarse blocks only
    assert abs(np.mean(blocks_c[ok] - blocks_t[ok])) < 0.02


def test_lazy_until_asked(api, files):
    found = cat.search(api.url, cat.SearchQuery(), COLLECTIONS)
    before = files.faults.requests
    cube = load_coarse(found["modis-43A4-061"], geobox=load_fine(found["landsat-c2-l2"]).odc.geobox)
    assert files.faults.requests == before  # nothing read until computed
    assert hasattr(cube.reflectance.data, "dask")


def test_transient_500s_are_retried(api, fast_retries):
    with serve_proxy(api.url, faults=Faults(fail_first=2)) as proxy:
        found = cat.search(proxy.url, cat.SearchQuery(), ["landsat-c2-l2"])
        assert len(found["landsat-c2-l2"]) == len(SPEC.landsat_days)
        assert proxy.faults.requests >= 3


def test_always_500_is_reported_clearly(api, fast_retries):
    with serve_proxy(api.url, faults=Faults(fail_first=10**6)) as proxy:
        start = time.monotonic()
        with pytest.raises(RemoteServiceError, match="127.0.0.1"):
            cat.search(proxy.url, cat.SearchQuery(), ["landsat-c2-l2"])
        assert time.monotonic() - start < 20
        assert proxy.faults.requests >= 2


def test_slow_server_times_out(api, fast_retries):
    with serve_proxy(api.url, faults=Faults(delay_s=3.0)) as proxy:
        start = time.monotonic()
        with pytest.raises(RemoteServiceError):
            cat.search(proxy.url, cat.SearchQuery(), ["landsat-c2-l2"])
        assert time.monotonic() - start < 30


def test_empty_search_says_what_was_searched(api):
    query = cat.SearchQuery(start=SPEC.dates[0].replace(year=2001), end=SPEC.dates[5].replace(year=2001), bbox=(-99.5, 38.0, -99.0, 39.0))
    found = cat.search(api.url, query, COLLECTIONS)
    with pytest.raises(EmptySearchError, match=r"no landsat-c2-l2 items .* bbox \[-99.5, 38.0, -99.0, 39.0\] between 2001-06-01"):
        cat.require_items(found, "landsat-c2-l2", api.url, query)


def test_missing_asset_names_item_and_asset(mini_catalog, tmp_path):
    with serve_files(mini_catalog, faults=Faults()) as files:
        found = cat.search(mini_catalog, cat.SearchQuery(), ["landsat-c2-l2"])
        items = [i.clone() for i in found["landsat-c2-l2"]]
        for item in items:
            item.make_asset_hrefs_absolute()
            for asset in item.assets.values():
                asset.href = files.url + "/" + Path(asset.href).resolve().relative_to(mini_catalog.resolve()).as_posix()
        victim = items[0].assets["red"].href.split(files.url + "/")[1]
        files.faults.missing.add(victim)
        with pytest.raises((DataUnavailableError, RemoteServiceError), match=items[0].id + ".*red"):
            with read_errors():
                load_fine(items, bands=["red"]).compute()


def test_search_command_over_api_equals_static(api, mini_catalog):
    import json

    from click.testing import CliRunner

    from stfuse_cli.main import cli

    args = ["search", "--start", SPEC.dates[2].isoformat(), "--end", SPEC.dates[9].isoformat(), "--json"]
    remote = CliRunner().invoke(cli, [*args, "--catalog", api.url])
    local = CliRunner().invoke(cli, [*args, "--catalog", str(mini_catalog)])
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output + local.output
    rows = json.loads(remote.output)
    assert rows == json.loads(local.output)
    landsat = [r for r in rows if r["collection"] == "landsat-c2-l2"]
    assert landsat and all(r["sensor"] in ("OLI", "OLI-2") and r["cloud_cover"] is not None for r in landsat)
    table = CliRunner().invoke(cli, ["search", "--catalog", api.url, "--start", SPEC.dates[2].isoformat(), "--end", SPEC.dates[9].isoformat()])
    assert landsat[0]["id"] in table.output and "fine and" in table.output
    empty = CliRunner().invoke(cli, ["search", "--catalog", api.url, "--bbox", "10", "10", "10.1", "10.1"])
    assert empty.exit_code == 2 and "bbox [10.0, 10.0, 10.1, 10.1]" in empty.output


@pytest.mark.network
def test_real_planetary_computer_search():
    """A real small search (needs the internet; run with STFUSE_NETWORK=1)."""
    import os

    if os.environ.get("STFUSE_NETWORK") != "1":
        pytest.skip("network tests run only with STFUSE_NETWORK=1")
    query = cat.SearchQuery(start=SPEC.dates[0].replace(year=2023), end=SPEC.dates[10].replace(year=2023), bbox=(-96.60, 40.60, -96.55, 40.65))
    found = cat.search("planetary-computer", query, ["landsat-c2-l2", "modis-43A4-061"])
    assert found["landsat-c2-l2"] and found["modis-43A4-061"]
    assert "red" in found["landsat-c2-l2"][0].assets


# --------------------------------------------------------------------------- MOD09GA, Earth Search, laziness

MOD09GA_STATE = {  # state_1km value -> bad?  (MOD09GA v061 user guide, Table 13)
    0: False,  # clear
    3: False,  # cloud state "not set, assumed clear"
    1: True,  # cloudy
    2: True,  # mixed
    1 << 2: True,  # cloud shadow
    1 << 8: False,  # cirrus small
    2 << 8: True,  # cirrus average
    3 << 8: True,  # cirrus high
    1 << 10: True,  # internal cloud algorithm flag
    1 << 12: True,  # MOD35 snow/ice
    1 << 13: False,  # pixel adjacent to cloud: not masked by stfuse
}
MOD09GA_DN = {"red": 612, "nir08": 3104, "blue": 377, "green": 701, "swir16": 2450, "swir22": 1518}


def _mod09ga_items(root: Path, base_url: str, geobox) -> list[dict]:
    """Two MOD09GA items shaped like Planetary Computer's ``modis-09GA-061`` over ``geobox``:
    500 m ``sur_refl_b0N`` (int16, scale 1e-4, fill -28672) and 1 km ``state_1km`` with
    per-asset proj:shape/proj:transform and the sinusoidal CRS as proj:wkt2 only.
    Day 1: constant DNs and random state bits; day 2: red is all fill. Returns item dicts."""
    import datetime as dt
    import math

    from affine import Affine
    from pyproj import CRS as ProjCRS
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    from stfuse.data.sensors import MODIS_09GA
    from stfuse.sim.sample import MODIS_PIXEL, MODIS_SINUSOIDAL, MODIS_X0, MODIS_Y0, write_cog

    wkt2 = ProjCRS.from_proj4(MODIS_SINUSOIDAL).to_wkt("WKT2_2019")
    sin = CRS.from_wkt(wkt2)
    left, bottom, right, top = transform_bounds(CRS.from_wkt(geobox.crs.to_wkt()), sin, *geobox.extent.boundingbox, densify_pts=21)
    px1k = 2 * MODIS_PIXEL
    c0, r0 = math.floor((left - MODIS_X0) / px1k) - 1, math.floor((MODIS_Y0 - top) / px1k) - 1
    c1, r1 = math.ceil((right - MODIS_X0) / px1k) + 1, math.ceil((MODIS_Y0 - bottom) / px1k) + 1
    t1k = Affine(px1k, 0, MODIS_X0 + c0 * px1k, 0, -px1k, MODIS_Y0 - r0 * px1k)
    t500 = Affine(MODIS_PIXEL, 0, t1k.c, 0, -MODIS_PIXEL, t1k.f)
    shape1k = (r1 - r0, c1 - c0)
    shape500 = (2 * shape1k[0], 2 * shape1k[1])
    rng = np.random.default_rng(3)
    states = np.array(sorted(MOD09GA_STATE), np.uint16)
    state = states[rng.integers(0, len(states), size=shape1k)]
    from shapely.geometry import box, mapping

    lon0, lat0, lon1, lat1 = transform_bounds(sin, "EPSG:4326", *(t1k.c, t1k.f - px1k * shape1k[0], t1k.c + px1k * shape1k[1], t1k.f), densify_pts=21)
    geometry = mapping(box(lon0, lat0, lon1, lat1))
    items = []
    for k, day in enumerate((dt.date(2023, 6, 1), dt.date(2023, 6, 2))):
        item_id = f"MOD09GA.A{day.year}{day.timetuple().tm_yday:03d}.h10v05.061.2023154031938"
        folder = root / "modis-09GA-061" / item_id
        folder.mkdir(parents=True, exist_ok=True)
        assets = {}
        for band, dn in MOD09GA_DN.items():
            key = MODIS_09GA.asset_for(band)
            data = np.full(shape500, dn, np.int16)
            if k == 1 and band == "red":
                data[:] = MODIS_09GA.nodata
            write_cog(folder / f"{key}.tif", data, transform=t500, crs=sin, nodata=MODIS_09GA.nodata, blocksize=128)
            assets[key] = {"href": f"{base_url}/modis-09GA-061/{item_id}/{key}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                           "roles": ["data"], "proj:shape": list(shape500), "proj:transform": list(t500)[:6],
                           "raster:bands": [{"data_type": "int16", "nodata": MODIS_09GA.nodata, "scale": 0.0001, "spatial_resolution": 500}]}
        write_cog(folder / "state_1km.tif", state, transform=t1k, crs=sin, nodata=None, blocksize=128)
        assets["state_1km"] = {"href": f"{base_url}/modis-09GA-061/{item_id}/state_1km.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                               "roles": ["data"], "proj:shape": list(shape1k), "proj:transform": list(t1k)[:6],
                               "raster:bands": [{"data_type": "uint16", "spatial_resolution": 1000}]}
        items.append({
            "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "modis-09GA-061",
            "geometry": geometry, "bbox": [lon0, lat0, lon1, lat1], "links": [], "assets": assets,
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
            "properties": {"datetime": None, "start_datetime": f"{day}T00:00:00Z", "end_datetime": f"{day}T23:59:59Z",
                           "platform": "terra", "instruments": ["modis"], "modis:horizontal-tile": 10,
                           "modis:vertical-tile": 5, "modis:tile-id": "51010005", "proj:epsg": None, "proj:wkt2": wkt2},
        })
    return items, state, t1k, sin


def test_mod09ga_planetary_computer_items(tmp_path):
    """MOD09GA over a real STAC API + HTTP: values are DN x 1e-4, masks are the state_1km bits."""
    import json

    from odc.geo.geobox import GeoBox
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    from stfuse.sim.testing import serve_stac_api

    geobox = GeoBox.from_bbox((511500.0, 4233000.0, 529500.0, 4251000.0), "EPSG:32614", resolution=30.0)  # 600 x 600 px
    root = tmp_path / "assets"
    with serve_files(root.mkdir() or root) as files:
        features, state, t1k, sin = _mod09ga_items(root, files.url, geobox)
        (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        with serve_stac_api([tmp_path / "items.json"]) as api:
            found = cat.search(api.url, cat.SearchQuery(start=SPEC.dates[0].replace(month=6, day=1), end=SPEC.dates[0].replace(month=6, day=2),
                                                  bbox=(-98.87, 38.25, -98.7, 38.4)), ["modis-09GA-061"])
            items = found["modis-09GA-061"]
            assert [i.id[:16] for i in items] == ["MOD09GA.A2023152", "MOD09GA.A2023153"]
            cube = load_coarse(items, geobox=geobox).compute()
    assert cube.reflectance.shape == (2, 6, 600, 600)
    # the mask: state_1km bits decoded as the user guide says, on the fine grid (nearest)
    bad_of = np.vectorize(MOD09GA_STATE.get)
    index = np.zeros(geobox.shape, np.uint16)
    reproject(state, index, src_transform=t1k, src_crs=sin, dst_transform=geobox.transform,
              dst_crs=CRS.from_epsg(32614), resampling=Resampling.nearest)
    expected_valid = ~bad_of(index).astype(bool)
    valid = cube.valid.values[0]
    assert 0.2 < expected_valid.mean() < 0.8
    assert (valid == expected_valid).mean() > 0.995
    # values: the DNs x 0.0001 wherever valid, NaN elsewhere
    for b, band in enumerate(cube.band.values):
        got = cube.reflectance.values[0, b]
        np.testing.assert_allclose(got[valid], MOD09GA_DN[str(band)] * 1e-4, rtol=0, atol=1e-6)
        assert np.isnan(got[~valid]).all()
    # day 2: red is fill everywhere, so no pixel is valid
    assert not cube.valid.values[1].any() and float(cube.clear_fraction.values[1]) == 0.0
    assert list(cube.platform.values) == ["terra", "terra"]


def _earth_search_shape(path: Path) -> None:
    """Rewrite an item FeatureCollection (Planetary Computer shape) the way Earth Search v1
    serves landsat-c2-l2: ``thumbnail`` first (no proj), proj:shape/transform per asset,
    only ``proj:epsg`` on the item, ``created``/``updated`` stamps."""
    import json

    doc = json.loads(path.read_text())
    for f in doc["features"]:
        props = f["properties"]
        shape, transform = props.pop("proj:shape"), props.pop("proj:transform")
        props.pop("proj:code", None)
        props.update({"proj:epsg": 32614, "created": "2023-08-01T00:00:00Z", "updated": "2023-08-01T00:00:00Z"})
        assets = {"thumbnail": {"href": "https://landsatlook.usgs.gov/thumb.jpeg", "type": "image/jpeg", "roles": ["thumbnail"]}}
        for key, asset in f["assets"].items():
            assets[key] = {**asset, "proj:shape": shape, "proj:transform": transform}
        f["assets"] = assets
    path.write_text(json.dumps(doc))


def test_earth_search_shaped_landsat_loads_like_planetary_computer(mini_catalog, files, tmp_path):
    from stfuse.sim.testing import http_items, serve_stac_api

    paths = http_items(mini_catalog / "catalog.json", files.url, mini_catalog, tmp_path / "items")
    landsat = next(p for p in paths if p.name == "landsat-c2-l2.json")
    _earth_search_shape(landsat)
    with serve_stac_api([landsat]) as api:
        found = cat.search(api.url, cat.SearchQuery(), ["landsat-c2-l2"])["landsat-c2-l2"]
    assert next(iter(found[0].assets)) == "thumbnail" and "proj:transform" not in found[0].properties
    local = cat.search(mini_catalog, cat.SearchQuery(), ["landsat-c2-l2"])["landsat-c2-l2"]
    es = load_fine(found, bands=["red", "swir22"]).compute()
    pc = load_fine(local, bands=["red", "swir22"]).compute()
    assert es.odc.geobox == pc.odc.geobox and es.odc.geobox.shape == (SPEC.height, SPEC.width)  # native grid, no half-pixel shift
    np.testing.assert_array_equal(es.reflectance.values, pc.reflectance.values)
    np.testing.assert_array_equal(es.valid.values, pc.valid.values)


def _synthetic_items(base_url: str, n_days: int, size: int) -> tuple[list, list]:
    """Landsat (every 8 days) and MODIS (daily) items over a ``size`` x ``size`` 30 m AOI whose
    assets are URLs on ``base_url`` (never read if the cube stays lazy)."""
    import datetime as dt

    import pystac
    from pyproj import CRS as ProjCRS

    from stfuse.sim.sample import MODIS_PIXEL, MODIS_SINUSOIDAL, MODIS_X0, MODIS_Y0

    x0, y0 = 500010.0, 4300020.0
    geom = {"type": "Polygon", "coordinates": [[[-99.1, 38.4], [-98.3, 38.4], [-98.3, 39.0], [-99.1, 39.0], [-99.1, 38.4]]]}
    bbox = [-99.1, 38.4, -98.3, 39.0]
    wkt2 = ProjCRS.from_proj4(MODIS_SINUSOIDAL).to_wkt("WKT2_2019")
    landsat, modis = [], []
    for d in range(n_days):
        day = dt.datetime(2023, 6, 1, 17, tzinfo=dt.timezone.utc) + dt.timedelta(days=d)
        if d % 8 == 0:
            item = pystac.Item(f"LC08_L2SP_029033_{day:%Y%m%d}_02_T1", geom, bbox, day,
                               {"platform": "landsat-8", "proj:epsg": 32614, "proj:shape": [size + 200, size + 200],
                                "proj:transform": [30.0, 0.0, x0 - 3000, 0.0, -30.0, y0 + 3000]}, collection="landsat-c2-l2")
            for key in (*BANDS_ALL, "qa_pixel"):
                item.add_asset(key, pystac.Asset(f"{base_url}/{item.id}_{key}.tif", extra_fields={
                    "raster:bands": [{"data_type": "uint16", "nodata": 0 if key != "qa_pixel" else 1}]}))
            landsat.append(item)
        item = pystac.Item(f"MCD43A4.A2023{152 + d:03d}.h10v05.061", geom, bbox, day.replace(hour=0),
                           {"platform": "terra+aqua", "proj:wkt2": wkt2, "proj:shape": [2400, 2400],
                            "proj:transform": [MODIS_PIXEL, 0.0, MODIS_X0 + 10 * 2400 * MODIS_PIXEL, 0.0, -MODIS_PIXEL, MODIS_Y0 - 5 * 2400 * MODIS_PIXEL]},
                           collection="modis-43A4-061")
        for n in (1, 2, 3, 4, 6, 7):
            for key in (f"Nadir_Reflectance_Band{n}", f"BRDF_Albedo_Band_Mandatory_Quality_Band{n}"):
                item.add_asset(key, pystac.Asset(f"{base_url}/{item.id}_{key}.tif", extra_fields={
                    "raster:bands": [{"data_type": "int16" if "Nadir" in key else "uint8", "nodata": 32767 if "Nadir" in key else 255}]}))
        modis.append(item)
    return landsat, modis


BANDS_ALL = ("blue", "green", "red", "nir08", "swir16", "swir22")


def test_60_day_cube_over_2000px_stays_lazy(tmp_path):
    """Loading 60 days over 2,000 x 2,000 fine pixels reads nothing and allocates little."""
    import gc
    import os

    import psutil
    from odc.geo.geobox import GeoBox

    with serve_files(tmp_path) as server:  # nothing there: any read would fail
        landsat, modis = _synthetic_items(server.url, n_days=60, size=2000)
        geobox = GeoBox.from_bbox((500010.0, 4300020.0 - 60000, 500010.0 + 60000, 4300020.0), "EPSG:32614", resolution=30.0)
        assert geobox.shape == (2000, 2000)
        gc.collect()
        process = psutil.Process(os.getpid())
        rss0, cpu0, wall0 = process.memory_info().rss, time.process_time(), time.perf_counter()
        fine = load_fine(landsat, geobox=geobox)
        coarse = load_coarse(modis, geobox=geobox)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rss1 = process.memory_info().rss
        assert server.faults.requests == 0  # no asset touched: nothing computed
    graph = len(fine.__dask_graph__()) + len(coarse.__dask_graph__())  # materialises the task graphs
    rss2 = process.memory_info().rss
    nbytes = fine.reflectance.nbytes + coarse.reflectance.nbytes
    print(f"\nlazy 60-day cube: {len(landsat)} Landsat + {len(modis)} MODIS items, {nbytes / 2**30:.1f} GiB if computed, "
          f"graph {graph} tasks, RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB (+{(rss1 - rss0) / 2**20:.0f}) after load, +{(rss2 - rss0) / 2**20:.0f} MiB with the graph "
          f"materialised, {wall:.2f} s wall, {cpu:.2f} s CPU")
    assert coarse.reflectance.shape == (60, 6, 2000, 2000) and fine.reflectance.shape == (8, 6, 2000, 2000)
    assert nbytes > 5 * 2**30 and hasattr(coarse.reflectance.data, "dask") and hasattr(fine.valid.data, "dask")
    assert rss1 - rss0 < 300 * 2**20 and rss2 - rss0 < 600 * 2**20  # lazy: a graph, not the ~6 GiB of pixels


def test_planetary_computer_signer_resigns_without_the_old_token(monkeypatch):
    """The provider's signer: keeps a signed href, and on ``fresh=True`` drops the old token and
    the package's token cache before signing again (no network: the token service is faked)."""
    import datetime as dt

    from planetary_computer import sas

    issued = []

    def get_token(account, container, **kwargs):
        issued.append((account, container))
        return sas.SASToken(token=f"st=2026&se=2099&sp=rl&sig=NEW{len(issued)}", expiry=dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc))

    monkeypatch.setattr(sas, "get_token", get_token)
    assert cat.signer_for("planetary-computer") is cat.planetary_computer_signer
    assert cat.signer_for("earth-search") is None and cat.signer_for("http://127.0.0.1:1") is None
    bare = "https://landsateuwest.blob.core.windows.net/landsat-c2/level-2/x_SR_B4.TIF"
    old = bare + "?st=2020&se=2020-01-02&sp=rl&sig=OLD"
    assert cat.planetary_computer_signer(old) == old  # already signed: kept
    sas.TOKEN_CACHE["stale"] = "x"
    fresh = cat.planetary_computer_signer(old, fresh=True)
    assert fresh == bare + "?st=2026&se=2099&sp=rl&sig=NEW1" and issued == [("landsateuwest", "landsat-c2")]
    assert "stale" not in sas.TOKEN_CACHE
    assert cat.redact(f"failed {fresh}") == f"failed {bare}?<redacted>"
