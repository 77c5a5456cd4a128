"""Fixtures of the service tests (re-training, tuning, ablation, report, noise, distributed
runs, searches run by a real worker): a database of their own (built by the migrations, as
these tests always had: they never share the other database tests' one), a small synthetic
dataset and a small search with a lineage and rejections (``helpers.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from alz_db import make_engine, make_session_factory
from alz_db.store import migrate

from .helpers import SmallSearch, make_search


@pytest.fixture(scope="session")
def db_url(new_database: Callable[[], str]) -> str:
    """This folder's database, at the head revision."""
    url = new_database()
    migrate.upgrade(url, "head")
    return url


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def small_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic 64x64 scenes (12 held out): quick to train on and to evaluate."""
    pytest.importorskip("mmseg", reason="the OpenMMLab stack is not installed")
    from alz_core.tasks.seg import ensure_synthetic_voc

    return ensure_synthetic_voc(tmp_path_factory.mktemp("voc"), num_images=48, eval_count=12)


@pytest.fixture
def small_search(sessions) -> SmallSearch:
    return make_search(sessions)


@pytest.fixture
def trainable_search(sessions, small_voc) -> SmallSearch:
    """The same, with the small dataset as its data root (for real trainings)."""
    return make_search(sessions, small_voc)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: the CPU is shared with other test runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
