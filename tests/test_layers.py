"""Layers import downwards only, and no module imports another package's private names.

Every import statement of ``autopeft/``, ``api/`` and ``workers/`` (at module level or inside a
function: a lazy import is a dependency too) is read with ``ast`` and checked against the layer
table below (docs/architecture.md draws the same picture). A module may import its own package
and any package of a *lower* layer; packages of one layer do not import each other. An import of
a name or module that starts with ``_`` is allowed inside its own package only.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it is installed as (setup.py)
FOLDERS = {"autopeft": "autopeft", "api": "autopeft.api", "workers": "autopeft.workers"}
SKIP = ("migrations",)

#: package -> layer, bottom (0) to top. The application layer (the CLI and the local server /
#: demo launcher) may start the server and so import anything; the library never imports the
#: executors, the controller or the application.
LAYERS: dict[str, int] = {
    "autopeft.errors": 0,
    "autopeft.lazy": 0,
    "autopeft.net": 0,
    "autopeft.models": 1,
    "autopeft.peft": 2,
    "autopeft.space": 3,
    "autopeft.optim": 3,
    "autopeft.trials": 4,
    "autopeft.integrations": 5,
    "autopeft.client": 5,
    "autopeft.processes": 5,
    "autopeft": 6,  # the package's own __init__: lazy re-exports of the library
    "autopeft.workers": 7,
    "autopeft.dashboards": 7,
    "autopeft.search_spaces": 7,
    "autopeft.api": 8,
    "autopeft.cli": 9,
    "autopeft.local_server": 9,
}
APP = 9  # the application layer: its modules may use each other


def package_of(module: str) -> str:
    """The entry of ``LAYERS`` a module belongs to (the longest prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return name
    raise KeyError(f"{module}: no layer in tests/test_layers.py LAYERS (add its package)")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, imported names)`` of every import of ours in a file."""
    out = []
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(
                (node.lineno, a.name, []) for a in node.names if a.name.startswith("autopeft")
            )
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            if target == "autopeft" or target.startswith("autopeft."):
                out.append((node.lineno, target, [a.name for a in node.names]))
    return out


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            if any(s in path.parts for s in SKIP):
                continue
            module = module_name(path, root)
            mine = package_of(module)
            for line, target, names in imports(path, module):
                theirs = package_of(target)
                where = f"{path.relative_to(root)}:{line}"
                if theirs != mine and LAYERS[theirs] >= LAYERS[mine] and LAYERS[mine] < APP:
                    found.append(
                        f"{where}: {module} (layer {LAYERS[mine]}) imports {target} "
                        f"(layer {LAYERS[theirs]}): upward or sideways"
                    )
                if theirs == mine:
                    continue
                private = [p for p in target.split(".") if p.startswith("_")]
                private += [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    found.append(
                        f"{where}: {module} imports private {', '.join(private)} of another "
                        f"package ({target})"
                    )
    return found


def test_layers_import_downwards_only():
    assert violations() == []


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("autopeft/peft/bad.py", "from autopeft.trials import quant\n", "upward or sideways"),
        ("autopeft/space/bad.py", "def f():\n    import autopeft.optim.pbt\n", "sideways"),
        ("workers/bad.py", "from autopeft.api.db import Database\n", "upward"),
        ("autopeft/trials/bad.py", "from autopeft.api import app\n", "upward"),
        ("api/bad.py", "from autopeft.optim._simple import sobol_configs\n", "private _simple"),
        ("api/bad.py", "from autopeft.optim.records import _TrialRecord\n", "private _TrialRecord"),
        ("autopeft/optim/fine.py", "from autopeft.optim.records import _TrialRecord\n", None),
        ("autopeft/cli/fine.py", "from autopeft.api.admin import create_token\n", None),
        ("api/fine.py", "from ..workers import local\n", None),
        ("workers/bad.py", "from ..api import db\n", "upward"),
    ],
)
def test_the_checker_catches_what_it_should(tmp_path, where, source, expected):
    """The check itself can fail: an upward, sideways or private import added to a copy of the
    tree's layout is reported; imports inside a package or downwards are not."""
    for folder in FOLDERS:
        (tmp_path / folder).mkdir()
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    found = violations(tmp_path)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected.split()[-1] in found[0], found


def module_cycles(folder: Path, package: str) -> list[list[str]]:
    """Import cycles among the modules of one package folder (lazy imports count)."""
    graph: dict[str, set[str]] = {}
    for file in folder.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == package:
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{package}."):
                deps.add(node.module[len(package) + 1 :].split(".")[0])
        graph[file.stem] = deps - {file.stem}
    found: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                cycle = path[path.index(dep) :]
                # each cycle once, from its smallest member
                if min(cycle) == cycle[0] and [*cycle, dep] not in found:
                    found.append([*cycle, dep])
            else:
                walk(dep, [*path, dep])

    for name in sorted(graph):
        walk(name, [name])
    return found


def test_the_services_import_each_other_without_cycles():
    """``api/services`` has no import cycle, lazy imports included (issue 32: front -> spec ->
    warmstart -> front was one): the front's computation is below the endpoints' answers."""
    assert module_cycles(ROOT / "api" / "services", "autopeft.api.services") == []


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from pkg.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from pkg import a\n")
    (tmp_path / "c.py").write_text("from pkg.a import y\n")
    assert module_cycles(tmp_path, "pkg") == [["a", "b", "a"]]


# -- the study runner: composed parts, one state object (issue 32) ------------------------------
#: bases a class may have beyond this many only as a thread or an abstract class
MAX_BASES = 3
FREE_BASES = {"Thread", "threading.Thread", "ABC", "abc.ABC"}
#: what a part of the runner may read of ``self`` besides its own methods (scheduling.state.Part)
PART_ATTRS = {"run", "st", "m", "db", "executor", "study_id"}


def many_based(root: Path = ROOT) -> list[str]:
    """Classes of ``api/`` with more than :data:`MAX_BASES` bases (threads and ABCs aside)."""
    found = []
    for path in sorted((root / "api").rglob("*.py")):
        if any(s in path.parts for s in SKIP):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases if ast.unparse(b) not in FREE_BASES]
                if len(bases) > MAX_BASES:
                    found.append(f"{path.relative_to(root)}: {node.name}({', '.join(bases)})")
    return found


def part_state_outside_run_state(folder: Path, fields: set[str]) -> list[str]:
    """What the runner's parts (classes deriving from ``Part``) keep outside ``RunState``: an
    attribute of their own (``self.x`` that is not a method or one of :data:`PART_ATTRS`, read
    or written) or a field of ``self.st`` that ``RunState`` does not declare."""
    found = []
    for path in sorted(folder.glob("*.py")):
        for cls in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(cls, ast.ClassDef) or "Part" not in [
                ast.unparse(b) for b in cls.bases
            ]:
                continue
            methods = {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
            where = f"{path.name}: {cls.name}"
            for node in ast.walk(cls):
                if not isinstance(node, ast.Attribute):
                    continue
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    if node.attr not in methods | PART_ATTRS:
                        found.append(f"{where} uses self.{node.attr}")
                    elif node.attr in PART_ATTRS and isinstance(node.ctx, ast.Store):
                        found.append(f"{where} rebinds self.{node.attr}")
                elif ast.unparse(node.value) == "self.st" and node.attr not in fields:
                    found.append(f"{where} uses self.st.{node.attr}, not a RunState field")
    return found


def test_no_class_of_the_api_is_assembled_from_many_bases():
    """The study runner is a thread that owns its parts, not ten mixins (issue 32)."""
    assert many_based() == []


def test_the_runner_parts_share_state_only_through_run_state():
    """A reader finds every field the runner's parts share in one file (scheduling/state.py)."""
    import dataclasses

    from autopeft.api.scheduler import StudyRunner
    from autopeft.api.scheduling.state import RunState

    fields = {f.name for f in dataclasses.fields(RunState)}
    assert part_state_outside_run_state(ROOT / "api" / "scheduling", fields) == []
    assert StudyRunner.__bases__ == (threading.Thread,)


def test_the_structure_checks_can_fail(tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "runner.py").write_text(
        "import threading\n"
        "class Runner(A, B, C, D, threading.Thread):\n    pass\n"
        "class Fine(A, B, C, threading.Thread):\n    pass\n"
    )
    assert many_based(tmp_path) == ["api/runner.py: Runner(A, B, C, D)"]
    (tmp_path / "part.py").write_text(
        "class Runs(Part):\n"
        "    def go(self):\n"
        "        self.cache = {}\n"
        "        self.st.inflight.add(1)\n"
        "        self.st.secret = 2\n"
        "        self.go()\n"
        "        self.run.pbt.turn()\n"
        "        self.db = None\n"
    )
    assert part_state_outside_run_state(tmp_path, {"inflight"}) == [
        "part.py: Runs uses self.cache",
        "part.py: Runs uses self.st.secret, not a RunState field",
        "part.py: Runs rebinds self.db",
    ]
