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

from stfuse import catalog as cat
from stfuse.cube import load_coarse, load_fine, read_errors
from stfuse.errors import DataUnavailableError, EmptySearchError, RemoteServiceError
from stfuse.synth import simulate
from stfuse.testing import Faults, rustac_executable, serve_files, serve_proxy

from conftest import MINI_SPEC as SPEC

COLLECTIONS = ["landsat-c2-l2", "modis-43A4-061"]

pytestmark = pytest.mark.skipif(rustac_executable() is None, reason="rustac not installed (pip install rustac)")


@pytest.fixture()
def fast_retries(monkeypatch):
    monkeypatch.setattr(cat, "RETRY", cat.RetryPolicy(timeout=1.0, retries=2, backoff=0.05))


def test_api_search_matches_static_catalog(api, mini_catalog):
    query = cat.Query(start=SPEC.dates[3], end=SPEC.dates[20])
    remote = cat.search(api.url, query, COLLECTIONS)
    local = cat.search(mini_catalog, query, COLLECTIONS)
    for collection in COLLECTIONS:
        assert [i.id for i in remote[collection]] == [i.id for i in local[collection]]
        assert remote[collection]
    # every MODIS day of the range is found (MCD43A4 items also match through their 16-day window)
    assert set(SPEC.dates[3:21]) <= {i.datetime.date() for i in remote["modis-43A4-061"]}
    assert remote["landsat-c2-l2"][0].assets["red"].href.startswith("http://127.0.0.1:")
    # bbox filtering happens on the server
    far = cat.search(api.url, cat.Query(bbox=(10.0, 10.0, 10.1, 10.1)), COLLECTIONS)
    assert far["landsat-c2-l2"] == []


def test_cube_over_http_equals_local_and_truth(api, mini_catalog, files):
    remote = cat.search(api.url, cat.Query(), COLLECTIONS)
    local = cat.search(mini_catalog, cat.Query(), COLLECTIONS)
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
    found = cat.search(api.url, cat.Query(), COLLECTIONS)
    before = files.faults.requests
    cube = load_coarse(found["modis-43A4-061"], geobox=load_fine(found["landsat-c2-l2"]).odc.geobox)
    assert files.faults.requests == before  # nothing read until computed
    assert hasattr(cube.reflectance.data, "dask")


def test_transient_500s_are_retried(api, fast_retries):
    with serve_proxy(api.url, faults=Faults(fail_first=2)) as proxy:
        found = cat.search(proxy.url, cat.Query(), ["landsat-c2-l2"])
        assert len(found["landsat-c2-l2"]) == len(SPEC.landsat_days)
        assert proxy.faults.requests >= 3


def test_always_500_is_reported_clearly(api, fast_retries):
    with serve_proxy(api.url, faults=Faults(fail_first=10**6)) as proxy:
        start = time.monotonic()
        with pytest.raises(RemoteServiceError, match="127.0.0.1"):
            cat.search(proxy.url, cat.Query(), ["landsat-c2-l2"])
        assert time.monotonic() - start < 20
        assert proxy.faults.requests >= 2


def test_slow_server_times_out(api, fast_retries):
    with serve_proxy(api.url, faults=Faults(delay_s=3.0)) as proxy:
        start = time.monotonic()
        with pytest.raises(RemoteServiceError):
            cat.search(proxy.url, cat.Query(), ["landsat-c2-l2"])
        assert time.monotonic() - start < 30


def test_empty_search_says_what_was_searched(api):
    query = cat.Query(start=SPEC.dates[0].replace(year=2001), end=SPEC.dates[5].replace(year=2001), bbox=(-99.5, 38.0, -99.0, 39.0))
    found = cat.search(api.url, query, COLLECTIONS)
    with pytest.raises(EmptySearchError, match=r"no landsat-c2-l2 items .* bbox \[-99.5, 38.0, -99.0, 39.0\] between 2001-06-01"):
        cat.require_items(found, "landsat-c2-l2", api.url, query)


def test_missing_asset_names_item_and_asset(mini_catalog, tmp_path):
    with serve_files(mini_catalog, faults=Faults()) as files:
        found = cat.search(mini_catalog, cat.Query(), ["landsat-c2-l2"])
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
    query = cat.Query(start=SPEC.dates[0].replace(year=2023), end=SPEC.dates[10].replace(year=2023), bbox=(-96.60, 40.60, -96.55, 40.65))
    found = cat.search("planetary-computer", query, ["landsat-c2-l2", "modis-43A4-061"])
    assert found["landsat-c2-l2"] and found["modis-43A4-061"]
    assert "red" in found["landsat-c2-l2"][0].assets
