"""Dependencies point one way: webapp -> alz_db -> alz_core, and OpenMMLab comes into alz_core
through ``alz_core.mm`` and the proxy tasks only. Read from the source (every import
statement, lazy ones inside functions included), so a violation fails here before it imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPENMMLAB = ("mmcv", "mmengine", "mmseg", "mmdet", "mmpose")


def _imports(package: str) -> list[tuple[str, str]]:
    """``(file relative to the root, imported module)`` for every import in the package;
    relative imports resolved against the file's package."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        here = list(rel.with_suffix("").parts)
        if here[-1] == "__init__":
            here = here[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(rel))):
            if isinstance(node, ast.Import):
                out.extend((str(rel), a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level + (1 if path.name == "__init__.py"
                                                             else 0)]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                out.append((str(rel), name))
    return out


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_scan_sees_the_imports_it_checks() -> None:
    """The control: the scan finds imports of each kind it looks for, so the tests below
    cannot pass by reading nothing."""
    core = _imports("alz_core")
    assert any(_top(m) in OPENMMLAB for _, m in core)
    assert any(m.startswith("alz_core.graph") for _, m in core)  # relative imports resolved
    assert any(_top(m) == "alz_db" for _, m in _imports("webapp"))


def test_alz_core_never_imports_the_store_or_the_app() -> None:
    bad = [(f, m) for f, m in _imports("alz_core") if _top(m) in ("alz_db", "webapp")]
    assert bad == []


def test_alz_db_never_imports_the_app() -> None:
    assert [(f, m) for f, m in _imports("alz_db") if _top(m) == "webapp"] == []


@pytest.mark.parametrize("package", ["alz_core"])
def test_only_mm_and_the_tasks_import_openmmlab(package: str) -> None:
    allowed = (f"{package}/mm/", f"{package}/tasks/")
    bad = [(f, m) for f, m in _imports(package)
           if _top(m) in OPENMMLAB and not f.startswith(allowed)]
    assert bad == []


def test_the_app_does_not_reach_into_storage() -> None:
    """The web app reads through alz_db's read functions, never its tables or engines'
    internals directly."""
    storage = ("alz_db.store.models", "alz_db.store.engine", "alz_db.store.migrate", "alz_db.store.embedded")
    bad = [(f, m) for f, m in _imports("webapp") if m.startswith(storage)]
    assert bad == []
