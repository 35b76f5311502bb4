"""README.md's "Command line" block runs top to bottom in a copy of the checkout (issue #19, "Must
show"): tools/readme_commands.sh skips the lines marked ``# network`` and ``# slow`` and fails on the
first command that exits non-zero. About 1.5 minutes on 2 busy cores."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "readme_commands.sh"


def listed() -> tuple[list[str], list[str]]:
    proc = subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True, check=True)
    run = [line[5:] for line in proc.stdout.splitlines() if line.startswith("run: ")]
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("skip ")]
    return run, skipped


def test_block_is_parsed_with_continuations_and_markers():
    run, skipped = listed()
    assert run and all(cmd.split()[0] in ("stfuse", "rio") for cmd in run)
    assert not any(cmd.rstrip().endswith("\\") for cmd in run)  # continuation lines joined
    assert any("planetary-computer" in s for s in skipped) and not any("planetary-computer" in c for c in run)
    assert any("--refine shipped" in s and s.startswith("skip (slow)") for s in skipped)
    assert not any(re.search(r"#\s*(network|slow)", c) for c in run)


def test_outputs_do_not_collide():
    """Each command writes somewhere no earlier command wrote (except the explicit --resume line)."""
    run, _ = listed()
    seen: dict[str, str] = {}
    for cmd in run:
        words = cmd.split("#")[0].split()
        for flag in ("-o", "--report"):
            if flag in words:
                out = words[words.index(flag) + 1].rstrip("/")
                assert out not in seen or "--resume" in words, f"{out} reused by {cmd!r} after {seen[out]!r}"
                seen.setdefault(out, cmd)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / "sample_scenes" / "catalog.json").exists(),
                    reason="needs a checkout with sample_scenes/")
def test_readme_commands_run_in_order():
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "README commands ran" in proc.stdout
