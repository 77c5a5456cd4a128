"""The migrations are package data: a built wheel carries the Alembic environment and every
revision, so an installed ``alz db upgrade`` (:mod:`alz_db.store.migrate`) needs no checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from alz_db.store import migrate

ROOT = Path(__file__).resolve().parents[3]
MIGRATIONS = ROOT / "alz_db" / "store" / "migrations"


def test_migrate_runs_the_migrations_of_the_package() -> None:
    assert migrate.MIGRATIONS_DIR == MIGRATIONS
    assert (ROOT / "migrations").resolve() == MIGRATIONS  # the top-level link for alembic


@pytest.mark.slow
def test_the_wheel_ships_the_migrations(tmp_path: Path) -> None:
    # built from a copy: a build in the checkout would leave build/ and *.egg-info behind
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("alz_core", "alz_db", "webapp"):
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    revisions = sorted((MIGRATIONS / "versions").glob("*.py"))
    assert len(revisions) >= 14
    want = {"alz_db/store/migrations/env.py", "alz_db/store/migrations/script.py.mako"} | {
        f"alz_db/store/migrations/versions/{p.name}" for p in revisions}
    assert want <= names, sorted(want - names)
