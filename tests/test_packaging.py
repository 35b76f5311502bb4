"""The installed package is the one tested: every subpackage is listed for setuptools."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_packaged():
    """`packages` in pyproject.toml is explicit; a new subpackage missing from it would work in
    the editable install of `make test` and be absent from a wheel (`pip install .`)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "stfuse").rglob("__init__.py")}
    found |= {"stfuse_cli" + "".join("." + x for x in p.parent.relative_to(REPO / "cli").parts)
              for p in (REPO / "cli").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set()


# --------------------------------------------------------------------------- what a user installs


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(specs: list[str]) -> dict:
    from packaging.requirements import Requirement

    return {r.name: r for r in map(Requirement, specs)}


def test_torch_is_a_range_and_make_pins_it():
    """Users bring their own (CUDA) torch; `make` installs the tested one from constraints.txt."""
    from packaging.version import Version

    torch = _requirements(_project()["dependencies"])["torch"]
    pins = [line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines()]
    assert "torch==2.13.0" in pins
    assert Version("2.13.0") in torch.specifier and Version("2.13.0+cpu") in torch.specifier
    assert not any(s.operator in ("==", "===", "~=") for s in torch.specifier), f"torch must be a range, not {torch.specifier}"
    install = [line for line in (REPO / "Makefile").read_text().splitlines() if "pip install" in line and ".[dev]" in line]
    assert install and all("-c constraints.txt" in line for line in install)


def test_optional_dependencies_are_extras():
    project = _project()
    base = _requirements(project["dependencies"])
    extras = {name: _requirements(specs) for name, specs in project["optional-dependencies"].items()}
    assert {"matplotlib", "pillow", "rio-cogeo", "ruff", "pytest"}.isdisjoint(base)
    assert {"matplotlib", "pillow"} <= set(extras["report"])
    dev = extras["dev"]
    assert {"rio-cogeo", "ruff", "pytest"} <= set(dev) and {"report"} <= dev["stfuse"].extras


def test_library_has_no_command_line_mains():
    """Dev tools live in tools/ (make bench/report/calibration), the CLI in cli/: nothing in the
    library parses argv or exits the interpreter."""
    offenders = []
    for path in (REPO / "stfuse").rglob("*.py"):
        text = path.read_text()
        for needle in ("sys.exit(", "import argparse", 'if __name__ == "__main__"', "sys.argv"):
            if needle in text:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not list((REPO / "stfuse").rglob("__main__.py"))
    assert offenders == []


def test_make_targets_name_existing_tools():
    import re

    makefile = (REPO / "Makefile").read_text()
    tools = set(re.findall(r"tools/[\w.]+", makefile))
    assert {"tools/bench.py", "tools/report.py", "tools/calibration.py", "tools/check_wheel.sh"} <= tools
    assert [t for t in tools if not (REPO / t).is_file()] == []
    assert "python -m stfuse" not in makefile


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    """Without the `report` extra every figure and quicklook fails with the install command."""
    import sys

    import numpy as np
    from click.testing import CliRunner

    from stfuse.errors import InputError
    from stfuse.evaluate import report
    from stfuse_cli.main import cli

    from conftest import write_tif

    raster = write_tif(tmp_path / "day.tif", np.full((3, 8, 8), 0.1, np.float32), descriptions=["red", "green", "blue"])
    assert report.quicklook(raster, tmp_path / "ok.png").is_file()  # with matplotlib: works

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    hint = r"pip install 'stfuse\[report\]'"
    truth = np.full((3, 8, 8), 0.1, np.float32)
    calls = [
        lambda: report.quicklook(raster, tmp_path / "q.png"),
        lambda: report.quicklook_panel(truth, truth, None, ["red", "green", "blue"], tmp_path / "p.png"),
        lambda: report.scatter_density(truth, truth, ["red", "green", "blue"], tmp_path / "s.png"),
        lambda: report.reliability_diagram(truth, truth, truth, ["red", "green", "blue"], tmp_path / "r.png"),
        lambda: report.holdout_chart([], tmp_path / "h.png"),
        lambda: report.timeseries_plot(tmp_path, None, [(0, 0)], tmp_path / "t.png"),
    ]
    for call in calls:
        with pytest.raises(InputError, match=f"matplotlib is missing.*{hint}"):
            call()
    assert not list(tmp_path.glob("[qpsrht].png"))

    result = CliRunner().invoke(cli, ["quicklook", str(raster), "-o", str(tmp_path / "cli.png")])
    assert result.exit_code == 2, result.output
    assert "pip install 'stfuse[report]'" in result.output and "Traceback" not in result.output
