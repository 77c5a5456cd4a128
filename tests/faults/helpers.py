"""Helpers of the fault tests (not fixtures: those are in ``conftest.py``): searches with tiny
proxies, SQL on a fresh connection, waiting, and the checks of a finished search."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from alz_db import create_search, make_engine, make_session_factory, session_scope
from tests.fixtures.helpers import libpq

#: proxy runs and rejection checks kept tiny so that a whole search takes seconds
REJECTION = {"iterations": 100, "num_samples": 2}


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query on a fresh connection (survives server restarts between calls)."""
    with psycopg.connect(libpq(url), autocommit=True, connect_timeout=5) as conn:
        return list(conn.execute(query, params).fetchall())  # type: ignore[arg-type]


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_search(url: str, voc: Path, *, budget: int, initial: int, max_iters: int,
                seed: int = 0, name: str | None = None) -> int:
    """A running seg/miou search with a tiny proxy; its id."""
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            info = create_search(
                s, name or f"fault-{uuid.uuid4().hex[:10]}", "seg", "miou", seed=seed,
                evolution={"budget": budget, "initial_population": initial,
                           "population_size": 50, "tournament_fraction": 0.5},
                rejection=REJECTION,
                extra={"data_root": str(voc), "max_iters": max_iters, "torch_threads": 1,
                       "rejection_size": 32},
                start=True)
            return info.id
    finally:
        engine.dispose()


def assert_search_complete(url: str, search_id: int, budget: int) -> None:
    """Exactly ``budget`` proxy results, none duplicated or lost, one trained representative
    per fingerprint, counters consistent, nothing left open."""
    [(status, reserved, done, error)] = sql(
        url, "SELECT status, evaluations_reserved, evaluations_done, error FROM search "
             "WHERE id = %s", search_id)
    assert (status, reserved, done) == ("finished", budget, budget), error
    [(n_done, n_cands)] = sql(
        url, "SELECT count(*), count(DISTINCT candidate_id) FROM evaluation "
             "WHERE search_id = %s AND kind = 'proxy' AND status = 'done'", search_id)
    assert n_done == n_cands == budget  # no duplicate result, none lost
    assert sql(url, "SELECT id, status FROM evaluation WHERE search_id = %s "
                    "AND status <> 'done'", search_id) == []
    # every representative has exactly one proxy evaluation, equivalents none
    assert sql(url, """
        SELECT c.id, c.equivalent_to_id, count(e.id) FROM candidate c
        LEFT JOIN evaluation e ON e.candidate_id = c.id AND e.kind = 'proxy'
        WHERE c.search_id = %s GROUP BY c.id
        HAVING count(e.id) <> CASE WHEN c.equivalent_to_id IS NULL THEN 1 ELSE 0 END""",
               search_id) == []
    # no fingerprint class trained twice
    assert sql(url, "SELECT fingerprint, count(*) FROM candidate WHERE search_id = %s "
                    "AND equivalent_to_id IS NULL GROUP BY fingerprint HAVING count(*) > 1",
               search_id) == []
    # every result carries its whole loss curve
    assert sql(url, """
        SELECT e.id FROM evaluation e LEFT JOIN evaluation_step s ON s.evaluation_id = e.id
        WHERE e.search_id = %s AND e.kind = 'proxy' GROUP BY e.id
        HAVING count(s.step) <> max((e.metrics->>'iterations')::int)""", search_id) == []
