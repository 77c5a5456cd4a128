"""Fixtures of the fault tests: a fresh database per test module (``alembic upgrade head``) on
the test server of ``tests/fixtures/postgres.py``, a small synthetic dataset and the
processes a test starts (the helpers: ``helpers.py``).

The tests start real worker processes (``alz_db.services.processes.spawn_workers``) and kill or
disturb them; they are marked ``fault`` (run only them with ``pytest -m fault tests/faults``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alz_db.store import migrate


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: kills or disturbs real worker processes and "
                            "the PostgreSQL server (slow)")


@pytest.fixture(scope="module")
def fault_db(new_database: Callable[[], str]) -> str:
    """A fresh database for this test module, at the head revision."""
    url = new_database()
    migrate.upgrade(url, "head")
    return url


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic 32x32 scenes (16 held out): proxy runs validate in a fraction of a second."""
    from alz_core.tasks.seg import ensure_synthetic_voc

    return ensure_synthetic_voc(tmp_path_factory.mktemp("faults-voc"), num_images=48,
                                eval_count=16)


@pytest.fixture
def reap_children() -> Iterator[list[Any]]:
    """Processes a test starts; any still alive at the end is killed (never leak workers)."""
    procs: list[Any] = []
    yield procs
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)
