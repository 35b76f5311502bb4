"""The default sample catalog (``catalog=None``) outside a checkout: where it lives, and that it is
generated once, atomically, into the cache folder (stfuse.sim.sample.ensure_sample_catalog).

The real writer is used with a small scene (the default scene takes ~20 s; that path is run by
tools/check_wheel.sh, and test_sample.py checks the committed sample is the default scene)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio

from stfuse.data.catalog import SearchQuery, default_catalog, open_static_catalog, search
from stfuse.errors import OutputError
from stfuse.sim import sample
from stfuse.sim.synth import SceneSpec

SMALL = SceneSpec(height=48, width=48, n_days=12, seed=3, cloud_fraction=0.1, change_day=6)


@pytest.fixture
def small_writer(monkeypatch):
    """Replace the default-scene writer by the real writer on :data:`SMALL`; counts its calls."""
    calls: list[Path] = []
    real = sample.write_sample_catalog

    def write(out, spec=None, **kwargs):
        assert spec is None, "the default sample must be the default SceneSpec"
        calls.append(Path(out))
        return real(out, SMALL, **kwargs)

    monkeypatch.setattr(sample, "write_sample_catalog", write)
    return calls


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".stfuse-sample-")]


def test_sample_dir_order(monkeypatch, tmp_path):
    monkeypatch.delenv(sample.SAMPLE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if (sample.CHECKOUT_SAMPLE / "catalog.json").is_file():  # a source checkout: its committed copy
        assert sample.sample_dir() == sample.CHECKOUT_SAMPLE
    monkeypatch.setattr(sample, "CHECKOUT_SAMPLE", tmp_path / "no-checkout")  # as in an installed wheel
    assert sample.sample_dir() == tmp_path / "xdg" / "stfuse" / "sample_scenes"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sample.sample_dir() == tmp_path / "home" / ".cache" / "stfuse" / "sample_scenes"
    monkeypatch.setenv(sample.SAMPLE_DIR_ENV, str(tmp_path / "mine"))
    assert sample.sample_dir() == tmp_path / "mine"
    assert not (tmp_path / "mine").exists() and not (tmp_path / "home").exists(), "sample_dir must not create folders"


def test_generated_once_into_the_cache_and_searchable(monkeypatch, tmp_path, small_writer, caplog):
    target = tmp_path / "cache.v1" / "sample_scenes"  # a dotted parent: pystac once took it for a file name
    monkeypatch.setenv(sample.SAMPLE_DIR_ENV, str(target))
    with caplog.at_level("WARNING", logger="stfuse"):
        path = default_catalog()
    assert path == target / "catalog.json" and path.is_file()
    assert "generating it once" in caplog.text and str(target) in caplog.text
    assert len(small_writer) == 1 and small_writer[0].parent == target.parent and small_writer[0] != target
    assert _leftovers(target.parent) == [], "the temporary folder must be renamed or removed"
    assert sorted(p.name for p in target.iterdir()) == sorted(["catalog.json", "README.md", *sample.COLLECTION_IDS])

    assert default_catalog() == path and len(small_writer) == 1, "the second use must reuse the cached copy"
    found = search(None, SearchQuery(), ["landsat-c2-l2", "modis-43A4-061"])
    assert len(found["modis-43A4-061"]) == SMALL.n_days and found["landsat-c2-l2"]
    href = found["landsat-c2-l2"][0].assets["red"].get_absolute_href()
    assert Path(href).is_relative_to(target), "asset links must follow the folder after the rename"
    with rasterio.open(href) as src:
        assert src.shape == (SMALL.height, SMALL.width)
    assert open_static_catalog(None).id == "stfuse-sample"


def test_failed_generation_leaves_nothing(monkeypatch, tmp_path):
    def broken(out, spec=None, **kwargs):
        (Path(out) / "catalog.json").write_text("{}")  # half written, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sample, "write_sample_catalog", broken)
    target = tmp_path / "sample_scenes"
    with pytest.raises(OutputError, match=f"No space left.*set {sample.SAMPLE_DIR_ENV}"):
        sample.ensure_sample_catalog(target)
    assert list(tmp_path.iterdir()) == [], "no partial catalog and no temporary folder may remain"


def test_concurrent_first_runs_keep_one_copy(tmp_path, small_writer, monkeypatch):
    """Another process renames its copy into place while this one is writing: this one's rename
    fails, its copy is discarded and the other one is used."""
    target = tmp_path / "sample_scenes"
    real = sample.write_sample_catalog

    def racing(out, spec=None, **kwargs):
        result = real(out, **kwargs)
        target.mkdir()
        (target / "catalog.json").write_text("the other process's")
        return result

    monkeypatch.setattr(sample, "write_sample_catalog", racing)
    path = sample.ensure_sample_catalog(target)
    assert path.read_text() == "the other process's"
    assert _leftovers(tmp_path) == []


def test_a_folder_with_other_files_is_not_overwritten(tmp_path, small_writer):
    target = tmp_path / "sample_scenes"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds no sample catalog.json; remove it or set STFUSE_SAMPLE_DIR"):
        sample.ensure_sample_catalog(target)
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and small_writer == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sample.ensure_sample_catalog(empty).is_file(), "an empty folder is filled"


def test_unwritable_cache_says_what_to_do(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="cannot create the sample catalog in .*set STFUSE_SAMPLE_DIR"):
        sample.ensure_sample_catalog(blocker / "sub" / "sample_scenes")


def test_pystac_dotted_folder(tmp_path):
    """``stfuse sample -o v1.2`` writes its catalog.json inside v1.2, not beside it."""
    path = sample.write_sample_catalog(tmp_path / "v1.2", SMALL)
    assert path == tmp_path / "v1.2" / "catalog.json" and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.2"]

