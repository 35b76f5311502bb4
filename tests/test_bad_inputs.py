"""The catalogue of bad inputs and faults: each gives a clear one-line error, the right exit
code, and loses nothing (no output file, or existing outputs unchanged).

Exit codes: 2 input/usage, 3 data not available, 4 remote service failure, 1 bug.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner

from stfuse.data import catalog as cat
from stfuse_cli.main import cli

from conftest import MINI_SPEC, write_tif

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean_error(result, code: int, match: str) -> None:
    assert result.exit_code == code, result.output
    assert match in result.output, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1


@pytest.fixture()
def pair(tmp_path):
    """Valid local-file inputs: fine/coarse pair and target coarse, 3 bands 32 x 32, int16 x 10000."""
    rng = np.random.default_rng(0)
    fine = (1000 + 2000 * rng.random((3, 32, 32))).astype(np.int16)
    coarse = np.repeat(np.repeat(fine.reshape(3, 4, 8, 4, 8).mean(axis=(2, 4)), 8, 1), 8, 2).astype(np.int16)
    return {
        "fine": write_tif(tmp_path / "fine.tif", fine, nodata=-9999),
        "coarse": write_tif(tmp_path / "coarse.tif", coarse, nodata=-9999),
        "target": write_tif(tmp_path / "target.tif", coarse + 300, nodata=-9999),
        "out": tmp_path / "out" / "pred.tif",
    }


def local(p, **replace):
    paths = {**p, **replace}
    return ["predict", "--pair", paths["fine"], paths["coarse"], "--coarse", paths["target"], "-o", paths["out"]]


# --------------------------------------------------------------------------- local files


def test_01_corrupt_cog(pair, tmp_path):
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + os.urandom(2000))
    assert_clean_error(run(*local(pair, fine=bad)), 2, "cannot read")
    assert not pair["out"].exists()


def test_02_truncated_file(pair, tmp_path):
    data = Path(pair["fine"]).read_bytes()
    cut = tmp_path / "truncated.tif"
    cut.write_bytes(data[: len(data) // 2])
    result = run(*local(pair, fine=cut))
    assert_clean_error(result, 2, "truncated.tif")
    assert not pair["out"].exists()


def test_03_mismatched_shapes(pair, tmp_path):
    small = write_tif(tmp_path / "small.tif", np.ones((3, 16, 16), np.int16), crs=None)  # georeferenced ones are resampled
    assert_clean_error(run(*local(pair, coarse=small)), 2, "is 16 x 16 pixels but")
    assert not pair["out"].exists()


def test_04_mismatched_transform(pair, tmp_path):
    moved = write_tif(tmp_path / "moved.tif", np.ones((3, 32, 32), np.int16), transform=Affine(30, 0, 600000, 0, -30, 4500000))
    assert_clean_error(run(*local(pair, target=moved)), 2, "not on the same grid")


def test_05_missing_crs_on_one_input_only(pair, tmp_path):
    plain = write_tif(tmp_path / "plain.tif", np.ones((3, 32, 32), np.int16), crs=None)
    assert_clean_error(run(*local(pair, target=plain)), 2, "has no CRS but")
    assert not pair["out"].exists()


def test_06_different_crs(pair, tmp_path):
    other = write_tif(tmp_path / "other.tif", np.ones((3, 32, 32), np.int16), crs="EPSG:32615")
    assert_clean_error(run(*local(pair, target=other)), 2, "reproject to one CRS")


def test_07_all_nodata_pair(pair, tmp_path):
    empty = write_tif(tmp_path / "empty.tif", np.full((3, 32, 32), -9999, np.int16), nodata=-9999)
    assert_clean_error(run(*local(pair, fine=empty)), 3, "no valid pixels")
    assert not pair["out"].exists()


def test_08_all_cloud_target(pair, tmp_path):
    empty = write_tif(tmp_path / "cloudy.tif", np.full((3, 32, 32), -9999, np.int16), nodata=-9999)
    assert_clean_error(run(*local(pair, target=empty)), 3, "no valid pixels")


def test_09_missing_input_file(pair, tmp_path):
    assert_clean_error(run(*local(pair, fine=tmp_path / "nope.tif")), 2, "input file not found")


def test_10_band_count_mismatch(pair, tmp_path):
    two = write_tif(tmp_path / "two.tif", np.ones((2, 32, 32), np.int16))
    assert_clean_error(run(*local(pair, target=two)), 2, "has 2 bands but")


def test_11_output_exists_is_kept(pair):
    pair["out"].parent.mkdir(parents=True)
    pair["out"].write_bytes(b"precious")
    assert_clean_error(run(*local(pair)), 2, "--overwrite")
    assert pair["out"].read_bytes() == b"precious"


def test_12_read_only_output_dir(pair, tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits: use a path below a regular file, which no one can create
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "sub" / "pred.tif"
        assert_clean_error(run(*local(pair, out=out)), 2, "cannot create output folder")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert_clean_error(run(*local(pair, out=ro / "pred.tif")), 2, "not writable")
        assert list(ro.iterdir()) == []


def test_13_disk_full_leaves_no_partial_file(pair, monkeypatch):
    import rasterio.shutil

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rasterio.shutil, "copy", full)
    assert_clean_error(run(*local(pair)), 2, "No space left on device")
    assert not pair["out"].parent.exists() or list(pair["out"].parent.iterdir()) == []


def test_14_output_not_a_tif(pair, tmp_path):
    assert_clean_error(run(*local(pair, out=tmp_path / "pred.png")), 2, "must be a GeoTIFF path")


def test_15_estarfm_needs_two_pairs(pair):
    assert_clean_error(run(*local(pair), "--method", "estarfm"), 2, "needs exactly 2 pairs")


def test_16_cuda_requested_without_gpu(pair):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_clean_error(run(*local(pair), "--device", "cuda"), 2, "no CUDA GPU")


# --------------------------------------------------------------------------- catalog mode, local catalog


def test_17_reversed_dates(tmp_path):
    assert_clean_error(run("predict", "--start", "2023-07-01", "--end", "2023-06-01", "-o", tmp_path / "o"), 2, "reversed")


def test_18_date_not_iso(tmp_path):
    assert_clean_error(run("predict", "--start", "01/06/2023", "-o", tmp_path / "o"), 2, "YYYY-MM-DD")


def test_19_bbox_outside_catalog(tmp_path):
    result = run("predict", "--bbox", "2.0", "48.0", "2.1", "48.1", "-o", tmp_path / "o")
    assert_clean_error(result, 2, "bbox [2.0, 48.0, 2.1, 48.1]")
    assert not (tmp_path / "o").exists()


def test_20_bbox_not_lonlat(tmp_path):
    assert_clean_error(run("predict", "--bbox", "500000", "4200000", "510000", "4210000", "-o", tmp_path / "o"), 2, "in degrees")


def test_21_unknown_band(tmp_path):
    assert_clean_error(run("predict", "--bands", "red,thermal", "-o", tmp_path / "o"), 2, "unknown band 'thermal'")


def test_22_aoi_not_geojson(tmp_path):
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text("{not json")
    assert_clean_error(run("predict", "--aoi", aoi, "-o", tmp_path / "o"), 2, "not valid GeoJSON")


def test_23_region_file_unknown_key(tmp_path):
    region = tmp_path / "r.yaml"
    region.write_text("start: 2023-06-01\nend: 2023-06-02\nbboxx: [1, 2, 3, 4]\n")
    assert_clean_error(run("region", region), 2, "unknown key 'bboxx'")


def test_24_item_id_with_path_traversal(mini_catalog, tmp_path):
    """Catalog content never chooses where files go: hostile item ids stay inside -o."""
    hostile = tmp_path / "hostile"
    shutil.copytree(mini_catalog, hostile)
    for path in (hostile / "landsat-c2-l2").rglob("*.json"):
        doc = json.loads(path.read_text())
        if doc.get("type") == "Feature":
            doc["id"] = "../../../../escape-" + doc["id"]
            path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    result = run("predict", "--catalog", hostile, "--start", "2023-06-08", "--end", "2023-06-08", "--bands", "red", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file() and "hostile" not in p.parts}
    assert written == {"out"}
    from stfuse.output.io import safe_filename

    assert safe_filename("../../../../escape-x") == "escape-x"


# --------------------------------------------------------------------------- remote: STAC API and assets


@pytest.fixture()
def fast_retries(monkeypatch):
    monkeypatch.setattr(cat, "RETRY", cat.RetryPolicy(timeout=1.0, retries=2, backoff=0.05))


def _remote_args(url: str, out: Path) -> list:
    s = MINI_SPEC.dates
    return ["predict", "--catalog", url, "--start", s[8].isoformat(), "--end", s[8].isoformat(), "--bands", "red", "-o", out, "-q"]


def test_25_stac_500_then_success(api, fast_retries, tmp_path):
    from stfuse.sim.testing import Faults, serve_proxy

    with serve_proxy(api.url, faults=Faults(fail_first=2)) as proxy:
        result = run(*_remote_args(proxy.url, tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o").glob("stfuse_*.tif"))) == 1


def test_26_stac_always_500(api, fast_retries, tmp_path):
    from stfuse.sim.testing import Faults, serve_proxy

    with serve_proxy(api.url, faults=Faults(fail_first=10**6)) as proxy:
        assert_clean_error(run(*_remote_args(proxy.url, tmp_path / "o")), 4, "answered HTTP 500 (3 tries)")
    assert not (tmp_path / "o").exists()


def test_27_slow_stac_server_times_out(api, fast_retries, tmp_path):
    from stfuse.sim.testing import Faults, serve_proxy

    with serve_proxy(api.url, faults=Faults(delay_s=3)) as proxy:
        start = time.monotonic()
        assert_clean_error(run(*_remote_args(proxy.url, tmp_path / "o")), 4, "timed out after 1 s per request (3 tries)")
        assert time.monotonic() - start < 40


def test_28_empty_search(api, tmp_path):
    result = run("predict", "--catalog", api.url, "--start", "1999-01-01", "--end", "1999-01-02", "-o", tmp_path / "o")
    assert_clean_error(result, 2, "no landsat-c2-l2 items")
    assert "1999-01-01" in result.output


def test_29_asset_404_names_item_and_asset(mini_catalog, tmp_path):
    # a server of its own: GDAL caches what earlier tests read from the shared one
    from stfuse.sim.testing import http_items, serve_files, serve_stac_api

    with serve_files(mini_catalog) as files:
        with serve_stac_api(http_items(mini_catalog / "catalog.json", files.url, mini_catalog, tmp_path / "items")) as api:
            found = cat.search(api.url, cat.SearchQuery(), ["landsat-c2-l2"])
            item = found["landsat-c2-l2"][0]
            files.faults.missing.add(item.assets["red"].href.split(files.url + "/")[1])
            result = run(*_remote_args(api.url, tmp_path / "o"))
    assert_clean_error(result, 3, "asset is missing")
    assert item.id in result.output and "red" in result.output
    assert not (tmp_path / "o").exists()


def test_30_signed_url_token_never_printed(api, files, mini_catalog, tmp_path):
    """Asset hrefs carrying a SAS-like token: errors mention the asset but not the token."""
    from stfuse.sim.testing import http_items, serve_stac_api

    items_dir = tmp_path / "items"
    paths = http_items(mini_catalog / "catalog.json", files.url, mini_catalog, items_dir)
    for path in paths:
        doc = json.loads(path.read_text())
        for feature in doc["features"]:
            for asset in feature["assets"].values():
                asset["href"] += "?st=2026&sig=SECRETTOKEN123"
        path.write_text(json.dumps(doc))
    found = json.loads(paths[0].read_text())["features"][0]
    victim = found["assets"]["red"]["href"].split(files.url + "/")[1].split("?")[0]
    files.faults.missing.add(victim)
    try:
        with serve_stac_api(paths) as signed:
            result = run(*_remote_args(signed.url, tmp_path / "o"))
    finally:
        files.faults.missing.discard(victim)
    assert result.exit_code in (3, 4), result.output
    assert "SECRETTOKEN123" not in result.output and "<redacted>" in result.output


def test_31_unreachable_dask_scheduler(tmp_path):
    result = run("predict", "--start", "2023-06-08", "--end", "2023-06-08", "--bands", "red", "--scheduler", "tcp://127.0.0.1:9",
                 "-o", tmp_path / "o")
    assert_clean_error(result, 4, "cannot reach the dask scheduler")


# --------------------------------------------------------------------------- signals


def test_32_sigterm_mid_run_keeps_finished_removes_partial(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "stfuse_cli", "predict", "--start", "2023-06-08", "--end", "2023-06-20",
                             "--bands", "red,nir08", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list(out.glob("stfuse_*.tif")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    finished = sorted(out.glob("stfuse_*.tif"))
    assert 0 < len(finished) < 13
    assert not list(out.glob(".*partial*")), "temporary files must be removed on SIGTERM"
    from rio_cogeo.cogeo import cog_validate

    for path in finished:
        assert cog_validate(str(path))[0]


# --------------------------------------------------------------------------- remote: rate limits, cut downloads, expired signatures


def test_33_stac_429_with_retry_after_then_success(api, fast_retries, tmp_path):
    from stfuse.sim.testing import Faults, serve_proxy

    with serve_proxy(api.url, faults=Faults(fail_first=2, fail_status=429, retry_after="1")) as proxy:
        start = time.monotonic()
        result = run(*_remote_args(proxy.url, tmp_path / "o"))
        waited = time.monotonic() - start
    assert result.exit_code == 0, result.output
    assert proxy.faults.requests >= 3 and waited >= 1.8  # two waits of Retry-After: 1 s (backoff alone is 0.05 s)
    assert len(list((tmp_path / "o").glob("stfuse_*.tif"))) == 1


def test_34_stac_always_429_is_bounded_and_reported(api, monkeypatch, tmp_path):
    from stfuse.sim.testing import Faults, serve_proxy

    monkeypatch.setattr(cat, "RETRY", cat.RetryPolicy(timeout=1.0, retries=2, backoff=0.05, max_retry_after=0.5))
    with serve_proxy(api.url, faults=Faults(fail_first=10**6, fail_status=429, retry_after="3600")) as proxy:
        start = time.monotonic()
        result = run(*_remote_args(proxy.url, tmp_path / "o"))
        assert time.monotonic() - start < 20  # Retry-After: 3600 is not obeyed to the letter
    assert_clean_error(result, 4, "HTTP 429 Too Many Requests (3 tries")
    assert "rate limiting" in result.output
    assert not (tmp_path / "o").exists()


@pytest.fixture()
def own_servers(mini_catalog, tmp_path):
    """A fresh file server + STAC API over the mini catalog (GDAL caches what earlier tests
    read from the shared ones); ``token`` is appended to every asset href when given."""
    from contextlib import ExitStack

    from stfuse.sim.testing import http_items, serve_files, serve_stac_api

    stack = ExitStack()

    def start(token: str | None = None):
        files = stack.enter_context(serve_files(mini_catalog))
        paths = http_items(mini_catalog / "catalog.json", files.url, mini_catalog, tmp_path / f"items{len(stack._exit_callbacks)}")
        if token:
            for path in paths:
                doc = json.loads(path.read_text())
                for feature in doc["features"]:
                    for asset in feature["assets"].values():
                        asset["href"] += token
                path.write_text(json.dumps(doc))
        api = stack.enter_context(serve_stac_api(paths))
        return files, api

    with stack:
        yield start


def test_35_truncated_remote_download_names_item_and_asset(own_servers, tmp_path):
    files, api = own_servers()
    item = cat.search(api.url, cat.SearchQuery(), ["landsat-c2-l2"])["landsat-c2-l2"][0]
    files.faults.short_body.add(item.assets["red"].href.split(files.url + "/")[1])  # Content-Length says more than is sent
    result = run(*_remote_args(api.url, tmp_path / "o"))
    assert_clean_error(result, 4, "cut short")
    assert f"item {item.id} asset 'red'" in result.output
    assert not (tmp_path / "o").exists()


OLD = "?st=2020-01-01T00%3A00%3A00Z&se=2020-01-02T00%3A00%3A00Z&sp=rl&sig=OLDSECRET"


class FakeSigner:
    """Stands in for planetary_computer: signs bare hrefs, keeps signed ones, re-signs on request."""

    def __init__(self, token: str) -> None:
        self.token, self.fresh_calls = token, 0

    def __call__(self, href: str, *, fresh: bool = False) -> str:
        if fresh:
            self.fresh_calls += 1
            href = cat.strip_query(href)
        return href if "?" in href else f"{href}?st=2026&se=2099&sp=rl&sig={self.token}"


def _signed_provider(monkeypatch, url: str, signer: FakeSigner) -> str:
    from stfuse.data.sensors import PROVIDERS

    monkeypatch.setitem(PROVIDERS, "loopback-pc", {"url": url, "fine": "landsat-c2-l2", "coarse": "modis-43A4-061", "sign": "fake"})
    monkeypatch.setitem(cat.SIGNERS, "fake", signer)
    return "loopback-pc"


def test_36_expired_signed_url_is_resigned_and_read(own_servers, monkeypatch, tmp_path):
    files, api = own_servers(OLD)
    files.faults.expired_tokens.add("OLDSECRET")  # the server: that token has expired (403)
    signer = FakeSigner("FRESHSECRET")
    result = run(*_remote_args(_signed_provider(monkeypatch, api.url, signer), tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert files.faults.forbidden > 0 and signer.fresh_calls > 0
    written = sorted((tmp_path / "o").iterdir())
    assert any(p.suffix == ".tif" for p in written)
    for path in written:  # no token in any output or its metadata
        data = path.read_bytes()
        assert b"SECRET" not in data and b"sig=" not in data, path
    assert "SECRET" not in result.output


def test_37_signed_url_still_refused_after_resigning(own_servers, monkeypatch, tmp_path):
    files, api = own_servers(OLD)
    files.faults.expired_tokens.update({"OLDSECRET", "FRESHSECRET"})  # no access at all
    signer = FakeSigner("FRESHSECRET")
    result = run(*_remote_args(_signed_provider(monkeypatch, api.url, signer), tmp_path / "o"))
    assert_clean_error(result, 4, "(HTTP 403) even after re-signing its URL")
    assert "SECRET" not in result.output and "<redacted>" in result.output and "item LC0" in result.output
    assert signer.fresh_calls > 0
    assert not (tmp_path / "o").exists()


def test_38_cache_folder_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("predict", "--start", "2023-06-08", "--end", "2023-06-08", "--bands", "red", "--cache", blocker / "cache",
                 "-o", tmp_path / "o")
    assert_clean_error(result, 2, "cannot create the cache folder")
    assert not (tmp_path / "o").exists() and blocker.read_text() == "x"


def test_39_a_download_cut_once_is_retried(own_servers, tmp_path):
    """A transient cut (the first GET of the asset ends early, the next is whole) costs one
    retry, not the run: the output equals a run without the fault."""
    import rasterio

    files, api = own_servers()
    assert run(*_remote_args(api.url, tmp_path / "clean")).exit_code == 0
    files, api = own_servers()  # fresh servers: nothing cached by GDAL
    item = cat.search(api.url, cat.SearchQuery(), ["landsat-c2-l2"])["landsat-c2-l2"][0]
    files.faults.cut_once.add(item.assets["red"].href.split(files.url + "/")[1])
    result = run(*_remote_args(api.url, tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert not files.faults.cut_once  # the cut happened
    (clean,), (cut,) = (sorted((tmp_path / d).glob("stfuse_*.tif")) for d in ("clean", "o"))
    with rasterio.open(clean) as a, rasterio.open(cut) as b:
        np.testing.assert_array_equal(a.read(), b.read())
