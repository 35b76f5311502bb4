"""Import structure of the library: no import cycle, every module imports on its own, and the
CLI starts without torch.

The graph holds the imports that run when a module is imported: module level, class bodies,
``try``/``if`` blocks, but not function bodies, ``if TYPE_CHECKING:`` or ``if __name__ ==
"__main__":`` blocks. Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``, so an import
is an edge to the module and to each of its packages that is not a package of the importer.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "stfuse"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """``{module name: file}`` of every stfuse module except ``__main__`` ones (they run code)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("stfuse", *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_main_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def import_time_nodes(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` that run at import time (see the module docstring)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not (_is_type_checking(node.test) or _is_main_guard(node.test)):
                found += import_time_nodes(node.body)
            found += import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            found += import_time_nodes(node.body) + import_time_nodes(node.orelse) + import_time_nodes(node.finalbody)
            for handler in node.handlers:
                found += import_time_nodes(handler.body)
        elif isinstance(node, (ast.ClassDef, ast.With)):
            found += import_time_nodes(node.body)
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """stfuse modules that importing module ``name`` (file ``path``) imports directly."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in import_time_nodes(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative import
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:  # `from a import b` imports the submodule a.b when there is one
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    edges = set()
    for target in targets:
        if target != "stfuse" and not target.startswith("stfuse."):
            continue
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # the module and the packages it runs first
            module = ".".join(parts[:i])
            if module in known and module != name and not name.startswith(module + "."):
                edges.add(module)
    return edges


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: stfuse modules it imports at import time}``."""
    files = module_files(root)
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_sees_imports_that_run_at_import_time(tmp_path: Path) -> None:
    """The graph builder on a made-up package: function bodies, TYPE_CHECKING and __main__
    blocks are skipped; `from pkg import mod`, relative imports and parent packages count."""
    pkg = tmp_path / "stfuse"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stfuse import b\n"
                "def f():\n    import stfuse.c\nif __name__ == '__main__':\n    import stfuse.c\n",
        "b.py": "from stfuse.sub import d\ntry:\n    from . import a\nexcept ImportError:\n    pass\n",
        "c.py": "class K:\n    from stfuse.sub.d import X\n",
        "sub/__init__.py": "from .d import X\n",
        "sub/d.py": "X = 1\nfrom .. import a\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert graph == {
        "stfuse": set(),
        "stfuse.a": set(),
        "stfuse.b": {"stfuse.sub", "stfuse.sub.d", "stfuse.a"},
        "stfuse.c": {"stfuse.sub", "stfuse.sub.d"},
        "stfuse.sub": {"stfuse.sub.d"},
        "stfuse.sub.d": {"stfuse.a"},
    }
    assert find_cycle(graph) is None
    graph["stfuse.a"].add("stfuse.c")  # a -> c -> sub -> sub.d -> a
    assert find_cycle(graph) == ["stfuse.a", "stfuse.c", "stfuse.sub", "stfuse.sub.d", "stfuse.a"]


def test_no_import_cycle() -> None:
    """No cycle among the stfuse modules' import-time imports (a cycle that works today breaks
    as soon as someone imports the modules in another order or moves a name)."""
    graph = import_graph()
    assert {"stfuse.api", "stfuse.fusion.refine.hybrid", "stfuse.evaluate.report"} <= set(graph)
    assert "stfuse.fusion.refine.members" in graph["stfuse.fusion.refine"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


_IMPORT_EACH = textwrap.dedent("""
    # Each stfuse module imported first, in a child forked from a process that has only the
    # third-party packages loaded (so a child costs milliseconds, not a torch import).
    import importlib, os, sys, time, traceback
    modules, third_party = sys.argv[1].split(), sys.argv[2].split()
    for name in third_party:
        try:
            importlib.import_module(name)
        except Exception:
            pass  # an optional dependency: the module that needs it says so itself
    assert not any(m == "stfuse" or m.startswith("stfuse.") for m in sys.modules), "stfuse loaded early"
    failed = []
    for name in modules:
        sys.stdout.flush(); sys.stderr.flush()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                importlib.import_module(name)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        if os.waitpid(pid, 0)[1] != 0:
            failed.append(name)
        print(f"{name} {time.perf_counter() - start:.2f} s")
    print("FAILED:", " ".join(failed) if failed else "none")
    sys.exit(1 if failed else 0)
""")


def _third_party(graph_files: dict[str, Path]) -> list[str]:
    """Third-party modules (``scipy.ndimage``, ``torch``...) the stfuse modules import at import time."""
    names = set()
    for path in graph_files.values():
        for node in import_time_nodes(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module:
                names.add(node.module)
    top = lambda n: n.split(".")[0]
    return sorted(n for n in names if top(n) not in ("stfuse", "__future__") and top(n) not in sys.stdlib_module_names)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_on_its_own() -> None:
    """Each module imported first in a fresh interpreter (forked, see _IMPORT_EACH): no module
    depends on another having been imported before it, and none fails on a cycle."""
    files = module_files()
    modules = sorted(files)
    assert len(modules) > 30
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, " ".join(modules), " ".join(_third_party(files))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    assert "FAILED: none" in proc.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_import_each_catches_a_broken_module(tmp_path: Path) -> None:
    """The forked import check reports a module whose import fails (here: a real cycle)."""
    (tmp_path / "cyc").mkdir()
    (tmp_path / "cyc" / "__init__.py").write_text("")
    (tmp_path / "cyc" / "a.py").write_text("from cyc.b import g\ndef f(): pass\n")
    (tmp_path / "cyc" / "b.py").write_text("from cyc.a import f\ndef g(): pass\n")
    (tmp_path / "ok.py").write_text("X = 1\n")
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, "ok cyc.a", ""], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    assert "FAILED: cyc.a" in proc.stdout and "partially initialized" in proc.stderr


def test_cli_starts_without_heavy_imports() -> None:
    """`stfuse --help` loads neither torch nor numpy (0.17 s of start-up), nor the plotting,
    array, dask-cluster or odc stacks: the CLI imports the library inside each command."""
    heavy = {"torch", "numpy", "xarray", "dask", "rasterio", "matplotlib", "distributed", "odc"}
    code = ("import sys, stfuse_cli.main; "
            f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"stfuse_cli.main imports {proc.stdout.strip()}"


TORCH_FREE = ("stfuse.data.catalog", "stfuse.data.cube", "stfuse.fusion.prior", "stfuse.fusion.prior.calibration",
              "stfuse.fusion.uncertainty", "stfuse.output.io", "stfuse.output.tiling", "stfuse.sim.days")
"""Modules whose callers need no torch (search, load, write, calibration factors): torch is
imported only inside the functions that compute with it."""


def test_torch_stays_out_of_modules_that_do_not_compute_with_it() -> None:
    code = f"import importlib, sys; [importlib.import_module(m) for m in {TORCH_FREE!r}]; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
