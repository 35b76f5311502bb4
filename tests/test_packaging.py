"""The installed package is the one tested: every subpackage is listed for setuptools."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
