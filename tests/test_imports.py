"""Every module of autopeft/, api/ and workers/ imports on its own, first, in a fresh interpreter.

An import cycle shows up only when a module of the cycle is the first one imported, so each
module gets an interpreter of its own: one driver interpreter that has imported nothing of
ours forks one child per module (a few at a time) and the child imports just that module.
The driver imports the heavy third-party libraries first, so the children need not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it is installed as (setup.py); alembic's migration scripts are not modules
PACKAGES = {"autopeft": "autopeft", "api": "autopeft.api", "workers": "autopeft.workers"}
SKIP = ("api/migrations/",)
THIRD_PARTY = ("numpy", "yaml", "torch", "transformers", "peft", "fastapi", "sqlalchemy", "ray")

DRIVER = """
import importlib, os, sys, traceback
for lib in sys.argv[2].split(","):
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
ours = [m for m in sys.modules if m == "autopeft" or m.startswith("autopeft.")]
assert not ours, f"the driver imported {ours}"
modules, failed, running = sys.argv[1].split(","), [], {}

def reap():
    pid, status = os.wait()
    name, read = running.pop(pid)
    report = os.read(read, 1 << 16).decode()
    os.close(read)
    if status:
        failed.append(f"{name}:\\n{report}")

for name in modules:
    if len(running) >= max(2, os.cpu_count() or 1):
        reap()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc()[-4000:].encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    running[pid] = (name, read)
while running:
    reap()
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def module_names() -> list[str]:
    names = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(SKIP) or path.stem == "__main__" or "__pycache__" in rel:
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((package, *parts)))
    return names


def test_module_names_cover_the_tree():
    names = module_names()
    assert {
        "autopeft",
        "autopeft.peft.registry",
        "autopeft.api.app",
        "autopeft.workers.ray",
    } <= set(names)


def test_every_module_imports_alone():
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, ",".join(module_names()), ",".join(THIRD_PARTY)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, f"modules that fail to import alone:\n{out.stdout}{out.stderr}"
