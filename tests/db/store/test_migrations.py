"""The schema exists only through the migrations; they upgrade databases that hold data."""

from __future__ import annotations

import json
import threading
import warnings

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from alz_db import (
    CandidateStatus,
    FitnessKind,
    get_candidate,
    leaderboard,
    make_engine,
    make_session_factory,
    session_scope,
)
from alz_db.store import migrate
from alz_db.store.models import Base
from tests.fixtures.builders import cand
from tests.fixtures.helpers import libpq


def _seed_at_0001(url: str) -> dict[str, int]:
    """Rows written with plain SQL in the shape of revision 0001 (not with today's code)."""
    root, child, other = cand("-y*log(yhat)"), cand("-y*log(yhat+1)"), cand("abs(y-yhat)")
    with psycopg.connect(libpq(url)) as conn:
        sid = conn.execute(
            "INSERT INTO search (name, task, metric, config, seed, budget, status, "
            "evaluations_reserved, evaluations_done, candidates) VALUES "
            "('old', 'seg', 'miou', '{}', 0, 3, 'running', 3, 2, 3) RETURNING id").fetchone()[0]

        def add(c, parent, status, fitness, kind, mutation="init", generation=0,
                fingerprint=None) -> int:
            return conn.execute(
                "INSERT INTO candidate (search_id, parent_id, mutation, generation, graphs, "
                "branch_order, formula, structural_hash, fingerprint, status, fitness, "
                "fitness_kind, evaluated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, CASE WHEN %s::text IS NULL THEN NULL ELSE now() END) RETURNING id",
                (sid, parent, mutation, generation, json.dumps(c.to_json()), ["seg"], c.text,
                 c.branches[0][1].structural_hash, fingerprint, status, fitness, kind, kind),
            ).fetchone()[0]

        a = add(root, None, "evaluated", 0.61, "finite", fingerprint="fa")
        b = add(child, a, "evaluated", 0.74, "finite", "replace", 1, "fb")
        c = add(other, b, "pending", None, None, "insert", 2, "fc")
        conn.execute("INSERT INTO evaluation (candidate_id, search_id, kind, status) "
                     "VALUES (%s, %s, 'proxy', 'queued')", (c, sid))
    return {"search": sid, "a": a, "b": b, "c": c}


def test_upgrade_from_first_revision_with_rows_present(new_database) -> None:
    url = new_database()
    migrate.upgrade(url, "0001_schema")
    assert migrate.current(url) == "0001_schema"
    ids = _seed_at_0001(url)

    migrate.upgrade(url, "head")
    assert migrate.current(url) == migrate.head()

    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        with session_scope(sessions) as s:
            ranked = s.execute(text(
                "SELECT rank, candidate_id FROM v_leaderboard WHERE search_id = :s "
                "ORDER BY rank"), {"s": ids["search"]}).all()
            assert [tuple(r) for r in ranked] == [(1, ids["b"]), (2, ids["a"])]
            edges = s.execute(text("SELECT candidate_id, parent_id, generation FROM v_lineage "
                                   "WHERE search_id = :s ORDER BY candidate_id"),
                              {"s": ids["search"]}).all()
            assert [tuple(e) for e in edges] == [(ids["a"], None, 0), (ids["b"], ids["a"], 1),
                                                 (ids["c"], ids["b"], 2)]
            indexes = set(s.execute(text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'candidate'")).scalars())
            assert {"ix_candidate_leaderboard", "ix_candidate_search_id_parent_id"} <= indexes
            # today's repositories read rows written at revision 0001
            top = leaderboard(s, ids["search"])
            assert [(e.candidate_id, e.fitness) for e in top] == [(ids["b"], 0.74),
                                                                 (ids["a"], 0.61)]
            assert top[0].fitness_kind is FitnessKind.FINITE
            rec = get_candidate(s, ids["c"])
            assert rec.candidate == cand("abs(y-yhat)")
            assert rec.status is CandidateStatus.PENDING and rec.fitness is None
    finally:
        engine.dispose()

    # reversible: back to 0001 keeps the data, base removes everything
    migrate.downgrade(url, "0001_schema")
    with psycopg.connect(libpq(url)) as conn:
        assert conn.execute("SELECT count(*) FROM candidate").fetchone()[0] == 3
        assert conn.execute("SELECT to_regclass('v_leaderboard')").fetchone()[0] is None
    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    with psycopg.connect(libpq(url)) as conn:
        assert conn.execute("SELECT to_regclass('candidate')").fetchone()[0] is None


def test_models_agree_with_the_migrated_schema(engine) -> None:
    with engine.connect() as conn, warnings.catch_warnings():
        # alembic cannot compare expression indexes (DESC, NULLS LAST) and says so
        warnings.simplefilter("ignore")
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_an_upgrade_waits_for_another_process_upgrading(new_database) -> None:
    """Another process's upgrade holds the advisory lock: ours waits, then finds the schema."""
    url = new_database()
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    with psycopg.connect(libpq(url)) as other:  # stands for a second process mid-upgrade
        other.execute("SELECT pg_advisory_xact_lock(%s)", (migrate.MIGRATION_LOCK_KEY,))
        thread = threading.Thread(target=run)
        thread.start()
        assert not done.wait(1.0), "the upgrade did not wait for the lock"
        assert migrate.current(url) is None
        other.commit()  # releases the transaction-level lock
    assert done.wait(30)
    thread.join()
    assert errors == []
    assert migrate.current(url) == migrate.head()

    # threads of one process take turns too (alembic's environment is process-global)
    threads = [threading.Thread(target=migrate.upgrade, args=(url,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert migrate.current(url) == migrate.head()


def test_current_of_an_unreachable_database_is_a_clear_error() -> None:
    from alz_db import DatabaseUnavailable, StoreError

    with pytest.raises(StoreError) as info:
        migrate.upgrade("postgresql://postgres@127.0.0.1:1/nothing")
    assert isinstance(info.value, DatabaseUnavailable)
    assert "127.0.0.1:1" in str(info.value) and "\n" not in str(info.value)
