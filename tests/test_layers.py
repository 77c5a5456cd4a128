"""Dependencies point one way: webapp -> alz_db -> alz_core, and OpenMMLab comes into alz_core
through ``alz_core.mm`` and the proxy tasks only. Inside alz_db: cli -> services ->
queries / repo -> store (repo below queries), with the vocabulary (``records``, ``enums``,
``errors``) usable everywhere and ``alz_db/__init__`` (the public API) importing everything;
no module imports another one's private (underscore) names. Read from the source (every import
statement, lazy ones inside functions included), so a violation fails here before it imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPENMMLAB = ("mmcv", "mmengine", "mmseg", "mmdet", "mmpose")
#: alz_db's sub-packages, lowest first
LAYERS = ("store", "repo", "queries", "services", "cli")
#: what each sub-package may not import (a higher layer)
FORBIDDEN = {
    "store": ("repo", "queries", "services", "cli"),
    "repo": ("queries", "services", "cli"),
    "queries": ("services", "cli"),
    "services": ("cli",),
}
VOCABULARY = ("alz_db/records.py", "alz_db/enums.py", "alz_db/errors.py")
#: what the web app may import from alz_db
APP_MAY_IMPORT = ("alz_db.queries", "alz_db.records", "alz_db.enums", "alz_db.errors")


def _statements(package: str) -> list[tuple[str, ast.Import | ast.ImportFrom, str]]:
    """``(file relative to the root, the statement, the imported module)`` for every import
    statement in the package; relative imports resolved against the file's package."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        here = list(rel.with_suffix("").parts)
        if here[-1] == "__init__":
            here = here[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(rel))):
            if isinstance(node, ast.Import):
                out.extend((str(rel), node, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level + (1 if path.name == "__init__.py"
                                                             else 0)]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                out.append((str(rel), node, name))
    return out


def _imports(package: str) -> list[tuple[str, str]]:
    """``(file relative to the root, imported module)`` for every import in the package."""
    return [(f, m) for f, _, m in _statements(package)]


def _top(module: str) -> str:
    return module.split(".")[0]


def _layer(module_or_file: str) -> str | None:
    """The alz_db sub-package of a module (``alz_db.repo.queue``) or file
    (``alz_db/repo/queue.py``), else ``None``."""
    parts = module_or_file.replace("/", ".").split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "alz_db" and parts[1] in LAYERS else None


def test_the_scan_sees_the_imports_it_checks() -> None:
    """The control: the scan finds imports of each kind it looks for, so the tests below
    cannot pass by reading nothing."""
    core = _imports("alz_core")
    assert any(_top(m) in OPENMMLAB for _, m in core)
    assert any(m.startswith("alz_core.graph") for _, m in core)  # relative imports resolved
    assert any(_top(m) == "alz_db" for _, m in _imports("webapp"))
    db = _imports("alz_db")
    # every layer is seen importing the one below it (relative imports resolved across
    # sub-packages), and the checks below would see an upward import of each kind
    below = {("repo", "store"), ("queries", "repo"), ("services", "queries"), ("cli", "services")}
    seen = {(_layer(f), _layer(m)) for f, m in db}
    assert below <= seen, below - seen
    assert all(_layer(f"alz_db/{layer}/x.py") == layer for layer in LAYERS)
    # the names imported from alz_db modules are seen, underscore ones included elsewhere
    names = [a.name for f, node, m in _statements("alz_db") if isinstance(node, ast.ImportFrom)
             for a in node.names]
    assert "run_in_transaction" in names and "annotations" in names
    assert any(a.name.startswith("_") for f, node, m in _statements("tests")
               if isinstance(node, ast.ImportFrom) for a in node.names)


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


def test_alz_db_imports_no_openmmlab_module() -> None:
    """OpenMMLab comes in through alz_core (``alz_core.mm``, the tasks) only."""
    assert [(f, m) for f, m in _imports("alz_db") if _top(m) in OPENMMLAB] == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_alz_db_layers_import_downwards_only(layer: str) -> None:
    """store imports none of repo/queries/services/cli; repo neither queries, services nor
    cli; queries neither services nor cli; services never cli. Nor the public API
    (``alz_db/__init__``, which imports every layer)."""
    bad = [(f, m) for f, m in _imports("alz_db")
           if _layer(f) == layer and (_layer(m) in FORBIDDEN[layer] or m == "alz_db")]
    assert bad == []


def test_the_vocabulary_imports_no_layer() -> None:
    """records, enums and errors are usable everywhere: they import no sub-package."""
    bad = [(f, m) for f, m in _imports("alz_db")
           if f in VOCABULARY and (_layer(m) is not None or m == "alz_db")]
    assert bad == []


def test_no_module_imports_another_ones_private_names() -> None:
    """A name another alz_db module uses is public; underscore names stay in their module."""
    bad = [(f, m, a.name) for f, node, m in _statements("alz_db")
           if isinstance(node, ast.ImportFrom) and _top(m) == "alz_db"
           for a in node.names if a.name.startswith("_")]
    assert bad == []


def test_the_app_does_not_reach_into_storage() -> None:
    """The web app reads through alz_db's read functions, never its tables or engines'
    internals directly."""
    storage = ("alz_db.store.models", "alz_db.store.engine", "alz_db.store.migrate",
               "alz_db.store.embedded")
    bad = [(f, m) for f, m in _imports("webapp") if m.startswith(storage)]
    assert bad == []


def test_the_app_imports_the_public_api_and_the_read_models_only() -> None:
    """From alz_db the web app imports ``alz_db`` itself (the public API), the read models
    (``alz_db.queries``) and the vocabulary (records, enums, errors), nothing else."""
    bad = [(f, m) for f, m in _imports("webapp") if _top(m) == "alz_db" and m != "alz_db"
           and not any(m == p or m.startswith(p + ".") for p in APP_MAY_IMPORT)]
    assert bad == []
