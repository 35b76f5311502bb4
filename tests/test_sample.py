"""The sample STAC catalog (stfuse.sim.sample): structure, COGs, odc-stac loading, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio

from stfuse.data.sensors import BANDS, LANDSAT_C2_L2, LANDSAT_QA, MODIS_43A4
from stfuse.errors import OutputError
from stfuse.sim.sample import MODIS_PIXEL, SAMPLE_EPSG, default_truth_days, write_sample_catalog
from stfuse.sim.synth import WATER, SceneSpec, block_mean, simulate

SPEC = SceneSpec(height=96, width=96, n_days=10, landsat_revisit=4, landsat_offset=1, change_day=5)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    path = write_sample_catalog(out, SPEC)
    catalog = pystac.Catalog.from_file(str(path))
    items = list(catalog.get_items(recursive=True))
    by_collection: dict[str, list[pystac.Item]] = {}
    for item in items:
        by_collection.setdefault(item.collection_id, []).append(item)
    for group in by_collection.values():
        group.sort(key=lambda i: i.datetime)
    return out, catalog, by_collection, simulate(SPEC)


def test_catalog_structure(written):
    out, catalog, items, scene = written
    assert (out / "catalog.json").exists() and (out / "README.md").exists()
    assert {c.id for c in catalog.get_children()} == {"landsat-c2-l2", "modis-43A4-061", "stfuse-truth"}
    assert len(items["landsat-c2-l2"]) == len(SPEC.landsat_days) == 3
    assert len(items["modis-43A4-061"]) == SPEC.n_days
    assert len(items["stfuse-truth"]) == len(default_truth_days(SPEC)) >= 1
    assert catalog.extra_fields["stfuse:spec"] == SPEC.to_dict()
    # self-contained: every link and asset href is relative, and every asset file exists
    for path in out.rglob("*.json"):
        doc = json.loads(path.read_text())
        hrefs = [link["href"] for link in doc.get("links", [])] + [a["href"] for a in doc.get("assets", {}).values()]
        assert all(not h.startswith(("/", "http")) for h in hrefs), path
        for asset in doc.get("assets", {}).values():
            assert (path.parent / asset["href"]).exists()
        assert "created" not in json.dumps(doc)
    truth_dates = {i.datetime.date() for i in items["stfuse-truth"]}
    assert not truth_dates & {i.datetime.date() for i in items["landsat-c2-l2"]}


def test_landsat_items_look_like_planetary_computer(written):
    _, _, items, scene = written
    platforms = []
    for item in items["landsat-c2-l2"]:
        assert set(item.assets) == {*BANDS, "qa_pixel"}
        props = item.properties
        assert props["proj:code"] == f"EPSG:{SAMPLE_EPSG}"
        raw = json.loads(Path(item.get_self_href()).read_text())["properties"]
        assert raw["proj:epsg"] == SAMPLE_EPSG  # legacy field too (pystac migrates it away on read)
        assert props["proj:shape"] == [SPEC.height, SPEC.width]
        a, b, x0, d, e, y0 = props["proj:transform"]
        assert (a, b, d, e) == (30.0, 0.0, 0.0, -30.0) and x0 % 30 == 15 and y0 % 30 == 15
        assert 0 <= props["eo:cloud_cover"] <= 100
        platforms.append(props["platform"])
        for band in BANDS:
            asset = item.assets[band]
            raster = asset.extra_fields["raster:bands"][0]
            assert raster["scale"] == LANDSAT_C2_L2.scale and raster["offset"] == LANDSAT_C2_L2.offset
            assert raster["nodata"] == 0 and raster["data_type"] == "uint16"
            assert asset.extra_fields["eo:bands"][0]["common_name"] == band
        geometry_lon = [p[0] for p in item.geometry["coordinates"][0]]
        assert -100 < min(geometry_lon) < max(geometry_lon) < -98  # Kansas
    assert platforms == ["landsat-8", "landsat-9", "landsat-8"]


def test_modis_items_are_sinusoidal_mcd43a4(written):
    out, _, items, _ = written
    item = items["modis-43A4-061"][0]
    props = item.properties
    raw = json.loads(Path(item.get_self_href()).read_text())["properties"]
    assert raw["proj:code"] is None and raw["proj:epsg"] is None and props.get("proj:code") is None
    assert "sinusoidal" in props["proj:wkt2"].lower()
    assert props["proj:projjson"]["type"] == "ProjectedCRS" and props["platform"] == "terra+aqua"
    assert abs(props["proj:transform"][0] - MODIS_PIXEL) < 1e-6 and abs(MODIS_PIXEL - 463.312716528) < 1e-6
    assert props["start_datetime"] < item.datetime.isoformat() < props["end_datetime"]
    for n in range(1, 8):
        refl = item.assets[f"Nadir_Reflectance_Band{n}"].extra_fields["raster:bands"][0]
        assert (refl["data_type"], refl["nodata"], refl["scale"]) == ("int16", 32767, 1e-4)
        qa = item.assets[f"BRDF_Albedo_Band_Mandatory_Quality_Band{n}"].extra_fields["raster:bands"][0]
        assert (qa["data_type"], qa["nodata"]) == ("uint8", 255)
    assert set(MODIS_43A4.assets.values()) | set(MODIS_43A4.qa_assets.values()) <= set(item.assets)
    with rasterio.open(item.assets["Nadir_Reflectance_Band1"].get_absolute_href()) as src:
        assert src.crs.to_epsg() is None and "+proj=sinu" in src.crs.to_proj4()
        assert src.dtypes[0] == "int16" and src.nodata == 32767
        # the grid covers the Landsat footprint with margin
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        lw, ls_, le, ln = items["landsat-c2-l2"][0].bbox
        assert west < lw and south < ls_ and east > le and north > ln


def test_cogs_are_valid(written):
    from rio_cogeo.cogeo import cog_validate

    out, _, items, _ = written
    paths = [
        items["landsat-c2-l2"][0].assets["red"].get_absolute_href(),
        items["landsat-c2-l2"][0].assets["qa_pixel"].get_absolute_href(),
        items["modis-43A4-061"][0].assets["Nadir_Reflectance_Band2"].get_absolute_href(),
        items["stfuse-truth"][0].assets["reflectance"].get_absolute_href(),
        str(out / "stfuse-truth" / "classes.tif"),
    ]
    for path in paths:
        valid, errors, _ = cog_validate(path)
        assert valid, (path, errors)
    assert not list(out.rglob("*.tmp.tif"))


def test_odc_stac_fine_matches_truth_and_qa_flags_clouds(written):
    import odc.stac

    _, _, items, scene = written
    landsat = items["landsat-c2-l2"]
    fine = odc.stac.load(landsat, bands=["red", "nir08", "qa_pixel"], chunks={}).compute()
    assert fine.sizes == {"time": 3, "y": SPEC.height, "x": SPEC.width}
    assert fine.odc.geobox.crs.epsg == SAMPLE_EPSG
    for k, item in enumerate(landsat):
        day = item.properties["stfuse:day_index"]
        truth = scene.truth_day(day)
        qa = fine.qa_pixel.isel(time=k).values
        for name in ("red", "nir08"):
            dn = fine[name].isel(time=k).values
            refl = LANDSAT_C2_L2.to_reflectance(dn)
            clear = ~LANDSAT_QA.bad_mask(qa)
            err = refl[clear] - truth[BANDS.index(name)][clear]
            assert abs(err.mean()) < 0.002 and err.std() < 0.008
            flagged = LANDSAT_QA.bad_mask(qa) & (dn != 0)
            if flagged.sum() > 50:  # clouds/shadows are flagged where the data differ from the truth
                assert np.abs(refl[flagged] - truth[BANDS.index(name)][flagged]).mean() > 0.03
        assert (qa[fine.red.isel(time=k).values == 0] == 1).all()


def test_odc_stac_modis_on_fine_grid_tracks_truth(written):
    import odc.stac

    _, _, items, scene = written
    fine = odc.stac.load(items["landsat-c2-l2"][:1], bands=["red"], chunks={})
    bands = ["Nadir_Reflectance_Band1", "Nadir_Reflectance_Band2", "BRDF_Albedo_Band_Mandatory_Quality_Band1"]
    coarse = odc.stac.load(items["modis-43A4-061"], bands=bands, like=fine, chunks={},
                           resampling={"BRDF_Albedo_Band_Mandatory_Quality_Band1": "nearest", "*": "bilinear"}).compute()
    assert coarse.sizes["time"] == SPEC.n_days and coarse.sizes["y"] == SPEC.height
    f = SPEC.coarse_factor
    correlations = []
    for t in range(SPEC.n_days):
        quality = coarse.BRDF_Albedo_Band_Mandatory_Quality_Band1.isel(time=t).values
        for key, band in (("Nadir_Reflectance_Band1", "red"), ("Nadir_Reflectance_Band2", "nir08")):
            dn = coarse[key].isel(time=t).values
            refl = np.where((dn == 32767) | (quality > 1), np.nan, dn * 1e-4)
            modis_blocks = block_mean(refl, f)
            truth_blocks = block_mean(scene.truth_day(t)[BANDS.index(band)], f)
            ok = np.isfinite(modis_blocks)
            assert ok.mean() > 0.5
            correlations.append(np.corrcoef(modis_blocks[ok], truth_blocks[ok])[0, 1])
            assert abs(np.nanmean(modis_blocks - truth_blocks)) < 0.02
    assert min(correlations) > 0.8, correlations


def test_truth_cogs_and_change(written):
    out, _, items, scene = written
    for item in items["stfuse-truth"]:
        day = item.properties["stfuse:day_index"]
        with rasterio.open(item.assets["reflectance"].get_absolute_href()) as src:
            assert src.descriptions == BANDS and src.count == 6
            refl = src.read() * src.scales[0] + src.offsets[0]
        np.testing.assert_allclose(refl, scene.truth_day(day), atol=2e-5)
    with rasterio.open(out / "stfuse-truth" / "change_mask.tif") as src:
        change = src.read(1).astype(bool)
    with rasterio.open(out / "stfuse-truth" / "classes_after_change.tif") as src:
        after = src.read(1)
    np.testing.assert_array_equal(change, scene.change_mask)
    assert change.any() and (after[change] == WATER).all()
    before = scene.truth_day(SPEC.change_day - 1)[BANDS.index("nir08")][change]
    assert scene.truth_day(SPEC.change_day)[BANDS.index("nir08")][change].mean() < before.mean() - 0.1


def test_output_dir_rules(tmp_path):
    spec = SceneSpec(height=32, width=32, n_days=2, landsat_revisit=2, landsat_offset=0, change_day=None)
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="overwrite"):
        write_sample_catalog(target, spec)
    write_sample_catalog(target, spec, overwrite=True)
    assert (target / "catalog.json").exists() and (target / "notes.txt").read_text() == "keep me"
    with pytest.raises(OutputError):
        write_sample_catalog(target / "notes.txt", spec)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_per_seed(tmp_path):
    spec = SceneSpec(height=32, width=32, n_days=3, landsat_revisit=2, landsat_offset=0, change_day=1)
    write_sample_catalog(tmp_path / "a", spec)
    write_sample_catalog(tmp_path / "b", spec)
    write_sample_catalog(tmp_path / "c", dataclasses.replace(spec, seed=1))
    a, b, c = (_snapshot(tmp_path / n) for n in "abc")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert any(a[k] != c[k] for k in a if k.endswith(".tif"))


def test_committed_sample_is_current_and_small():
    root = REPO / "sample_scenes"
    if not (root / "catalog.json").exists():
        pytest.skip("sample_scenes/ has not been generated")
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 20e6, f"sample_scenes is {size / 1e6:.1f} MB"
    catalog = json.loads((root / "catalog.json").read_text())
    spec = SceneSpec(**catalog["stfuse:spec"])
    assert spec == SceneSpec(seed=spec.seed), "sample_scenes was made with a non-default spec; run `make sample`"
    first = sorted((root / "landsat-c2-l2").glob("*/*_red.tif"))[0]
    with rasterio.open(first) as src:
        committed = src.read(1)
    fresh = simulate(spec).landsat[0].dn[BANDS.index("red")]
    same = np.abs(committed.astype(int) - fresh.astype(int)) <= 1
    assert same.mean() > 0.999, "sample_scenes is stale: regenerate it with `make sample`"
