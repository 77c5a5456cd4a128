"""Rejection rows at scale (revision 0013_rejection_growth, :mod:`alz_db.repo.retention`): the
per-search aggregates follow every insert and delete, pruning keeps the report's counts, the
efficiency curve and the counters exact, and the migration upgrades a database holding rows
and downgrades again."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import text

from alz_core import LossGraph, RejectReason
from alz_db import (
    InvalidInput,
    NotFound,
    claim_evaluation,
    create_search,
    finish_evaluation,
    get_search,
    make_engine,
    make_session_factory,
    prune_rejections,
    record_rejections,
    session_scope,
    submit_candidate,
)
from alz_db.queries import PopulationQuery, candidate_detail, fitness_history, population_page
from alz_db.queries.report_data import collect_report
from alz_db.repo.searches import delete_search
from alz_db.store import migrate
from tests.fixtures.builders import accepted, cand, rejected
from tests.fixtures.helpers import libpq


def _aggregates(s, sid: int) -> tuple[list, list]:  # noqa: ANN001 - Session
    """(rejection_count rows, rejection_second rows) of a search, and what the raw rows say."""
    counts = s.execute(text(
        "SELECT verdict, coalesce(reason, ''), checks, stored, round(seconds::numeric, 9) "
        "FROM rejection_count WHERE search_id = :s ORDER BY 1, 2"), {"s": sid}).all()
    seconds = s.execute(text(
        "SELECT second, checks, round(seconds::numeric, 9) FROM rejection_second "
        "WHERE search_id = :s ORDER BY 1"), {"s": sid}).all()
    return [tuple(r) for r in counts], [tuple(r) for r in seconds]


def _raw(s, sid: int) -> tuple[list, list]:  # noqa: ANN001 - Session
    counts = s.execute(text(
        "SELECT verdict, coalesce(reason, ''), count(*), count(*), "
        "round(sum(seconds)::numeric, 9) FROM rejection WHERE search_id = :s "
        "GROUP BY 1, 2 ORDER BY 1, 2"), {"s": sid}).all()
    seconds = s.execute(text(
        "SELECT date_trunc('second', created_at), count(*), round(sum(seconds)::numeric, 9) "
        "FROM rejection WHERE search_id = :s GROUP BY 1 ORDER BY 1"), {"s": sid}).all()
    return [tuple(r) for r in counts], [tuple(r) for r in seconds]


def _readers(s, sid: int) -> dict:  # noqa: ANN001 - Session
    """What pruning must not change."""
    rep = collect_report(s, sid, top=1).rejection
    info = get_search(s, sid)
    return {"by_reason": sorted((d["verdict"], d["reason"] or "", d["count"],
                                 round(d["mean_seconds"], 9)) for d in rep["by_reason"]),
            "checks": rep["checks"], "rate": rep["rate"],
            "curve": [round(p.compute_s, 9) for p in fitness_history(s, sid)],
            "counters": (info.rejection_checks, info.rejections)}


def _rejected_page(s, sid: int, **kw) -> tuple[int, int]:  # noqa: ANN001 - Session
    from alz_core import Verdict

    page = population_page(s, PopulationQuery(sid, verdicts=frozenset({Verdict.REJECT}), **kw))
    return page.total, len(page.rows)


def test_aggregates_follow_the_rows_and_pruning_keeps_the_report_exact(
        sessions, worker_id, unique_name) -> None:
    ga, gb, gc, gd = (LossGraph.parse(f) for f in ("y*log(yhat)", "log(yhat-y)", "yhat^2*y",
                                                  "exp(y*yhat)"))
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou", evolution={"budget": 5},
                            start=True).id

    def submit(formula: str, fp: str, extra=()) -> int:  # noqa: ANN001
        with session_scope(sessions) as s:
            return submit_candidate(
                s, sid, cand(formula), fingerprint=fp, worker_id=worker_id,
                rejections=[*extra, ("seg", LossGraph.parse(formula), accepted())]).candidate_id

    c1 = submit("-y*log(yhat)", "f1", [("seg", ga, rejected()), ("seg", ga, rejected()),
                                       ("seg", gb, rejected(RejectReason.NON_FINITE))])
    submit("abs(y-yhat)", "f2", [("seg", ga, rejected())])
    submit("-y*log(yhat+1)", "f1")  # an equivalent of c1
    with session_scope(sessions) as s:  # a step whose tries all failed
        record_rejections(s, sid, [("seg", gc, rejected()), ("seg", gc, rejected()),
                                   ("seg", gd, rejected(RejectReason.NO_TARGET_DEPENDENCE))],
                          parent_id=c1, worker_id=worker_id)
    for _ in range(2):
        with session_scope(sessions) as s:
            lease = claim_evaluation(s, worker_id, search_id=sid)
        with session_scope(sessions) as s:
            finish_evaluation(s, lease, fitness=0.5, seconds=3.0)

    with session_scope(sessions) as s:
        assert _aggregates(s, sid) == _raw(s, sid)
        counts, _ = _aggregates(s, sid)
        assert ("reject", "low_score", 5, 5) in [c[:4] for c in counts]
        before = _readers(s, sid)
        assert before["checks"] == 10 and before["counters"] == (10, 7)
        assert len(before["curve"]) == 2
        assert _rejected_page(s, sid) == (7, 7)
        assert _rejected_page(s, sid, reasons=frozenset({RejectReason.LOW_SCORE})) == (5, 5)

    # --keep-texts: the repeats of ga (2) and gc (1) go, one row per rejected graph stays;
    # without a limit, every repeat goes in one call
    with session_scope(sessions) as s:
        assert prune_rejections(s, sid, keep_texts=True, limit=1) == 1
    with session_scope(sessions) as s:
        assert prune_rejections(s, sid, keep_texts=True) == 2
    with session_scope(sessions) as s:
        assert prune_rejections(s, sid, keep_texts=True) == 0
        assert _readers(s, sid) == before
        assert _rejected_page(s, sid) == (4, 4)
        assert _rejected_page(s, sid, reasons=frozenset({RejectReason.LOW_SCORE})) == (2, 2)
        assert _rejected_page(s, sid, formula_contains="log") == (2, 2)
        kept = s.execute(text("SELECT formula FROM rejection WHERE search_id = :s AND "
                              "verdict = 'reject' ORDER BY id"), {"s": sid}).scalars().all()
        assert sorted(kept) == sorted(g.text for g in (ga, gb, gc, gd))
        counts, seconds = _aggregates(s, sid)
        raw_counts, _ = _raw(s, sid)
        # recorded checks stay, stored rows follow the table
        assert [c[3] for c in counts] == [r[2] for r in raw_counts]
        assert sum(c[2] for c in counts) == 10 and sum(x[1] for x in seconds) == 10

    # everything rejected goes, in batches of at most limit; the accepted rows (the
    # candidates' records) stay
    with session_scope(sessions) as s:
        assert prune_rejections(s, sid, limit=3) == 3
        assert prune_rejections(s, sid) == 1
        assert prune_rejections(s, sid) == 0
        assert _readers(s, sid) == before
        assert _rejected_page(s, sid) == (0, 0)
        assert s.execute(text("SELECT count(*) FROM rejection WHERE search_id = :s"),
                         {"s": sid}).scalar_one() == 3
        detail = candidate_detail(s, c1)
        assert [r.verdict.value for r in detail.rejections] == ["accept"]
    # inserts after a prune are counted on top
    with session_scope(sessions) as s:
        record_rejections(s, sid, [("seg", ga, rejected())], worker_id=worker_id)
        assert _rejected_page(s, sid) == (1, 1)
        assert _readers(s, sid)["checks"] == 11


def test_plain_sql_rows_are_counted_and_a_deleted_search_leaves_no_aggregate(
        sessions, unique_name) -> None:
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou").id
        s.execute(text(
            "INSERT INTO rejection (search_id, branch, formula, structural_hash, verdict, "
            "reason, iterations, stop, seconds, created_at) SELECT :s, 'seg', 'y*yhat', "
            "md5(g::text), 'reject', CASE WHEN g % 3 = 0 THEN 'non_finite' ELSE 'low_score' "
            "END, 500, 'completed', 0.25, now() - g * interval '1 second' "
            "FROM generate_series(1, 30) g"), {"s": sid})
    with session_scope(sessions) as s:
        assert _aggregates(s, sid) == _raw(s, sid)
        assert len(_aggregates(s, sid)[1]) == 30
        s.execute(text("DELETE FROM rejection WHERE search_id = :s AND reason = 'non_finite'"),
                  {"s": sid})
    with session_scope(sessions) as s:
        counts, _ = _aggregates(s, sid)
        assert [c[:4] for c in counts] == [("reject", "low_score", 20, 20),
                                           ("reject", "non_finite", 10, 0)]
        delete_search(s, sid)
    with session_scope(sessions) as s:
        for table in ("rejection_count", "rejection_second", "rejection"):
            assert s.execute(text(f"SELECT count(*) FROM {table} WHERE search_id = :s"),
                             {"s": sid}).scalar_one() == 0


def test_prune_refuses_bad_input(sessions, unique_name) -> None:
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou").id
    with session_scope(sessions) as s, pytest.raises(NotFound):
        prune_rejections(s, "no-such-search-anywhere")
    for limit in (0, -1, 2.5, True):
        with session_scope(sessions) as s, pytest.raises(InvalidInput, match="limit"):
            prune_rejections(s, sid, limit=limit)


def test_deleting_candidates_uses_the_parent_indexes(sessions) -> None:
    """The ON DELETE checks of rejection.parent_id and candidate.parent_id read an index (a
    search's deletion scanned the whole rejection table once per candidate before 0013)."""
    with session_scope(sessions) as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table is seq-scanned anyway
        for table in ("rejection", "candidate"):
            plan = "\n".join(s.execute(text(
                f"EXPLAIN SELECT 1 FROM {table} WHERE parent_id = 1")).scalars())
            assert f"ix_{table}_parent_id" in plan, plan


# --- the migration -------------------------------------------------------------------------------
T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
#: (search, verdict, reason, seconds, created_at offset in s): two rows share a second
ROWS = [(0, "accept", None, 1.5, 1.2), (0, "reject", "low_score", 1.25, 1.7),
        (0, "reject", "low_score", 2.0, 5.0), (0, "reject", "non_finite", 0.5, 15.4),
        (0, "reject", "low_score", 1.0, 25.0), (1, "reject", "low_score", 4.0, 2.0),
        (1, "accept", None, 3.0, 3.0)]


def _seed_at_0012(url: str) -> list[int]:
    """Two finished searches with candidates, proxy results and rejection rows, written with
    plain SQL in the shape of revision 0012."""
    graph = cand("-y*log(yhat)")
    sids = []
    with psycopg.connect(libpq(url)) as conn:
        for k in range(2):
            sid = conn.execute(
                "INSERT INTO search (name, task, metric, config, seed, budget, status, "
                "evaluations_reserved, evaluations_done, candidates, rejection_checks, "
                "rejections, started_at) VALUES (%s, 'seg', 'miou', '{}', 0, 2, 'finished', "
                "2, 2, 2, %s, %s, %s) RETURNING id",
                (f"old-{k}", sum(1 for r in ROWS if r[0] == k),
                 sum(1 for r in ROWS if r[0] == k and r[1] == "reject"), T0)).fetchone()[0]
            cids = []
            for j, fitness in enumerate((0.61, 0.74)):
                cid = conn.execute(
                    "INSERT INTO candidate (search_id, parent_id, mutation, generation, graphs, "
                    "branch_order, formula, structural_hash, fingerprint, status, fitness, "
                    "fitness_kind, evaluated_at) VALUES (%s, %s, 'init', 0, %s, %s, %s, %s, "
                    "%s, 'evaluated', %s, 'finite', %s) RETURNING id",
                    (sid, cids[0] if cids else None, json.dumps(graph.to_json()), ["seg"],
                     graph.text, f"h{j}", f"fp{j}", fitness,
                     T0 + timedelta(seconds=10 * (j + 1)))).fetchone()[0]
                cids.append(cid)
                conn.execute(
                    "INSERT INTO evaluation (candidate_id, search_id, kind, status, attempts, "
                    "fitness, fitness_kind, seconds, finished_at) VALUES (%s, %s, 'proxy', "
                    "'done', 1, %s, 'finite', 30, %s)",
                    (cid, sid, fitness, T0 + timedelta(seconds=10 * (j + 1))))
            for search, verdict, reason, seconds, at in ROWS:
                if search != k:
                    continue
                conn.execute(
                    "INSERT INTO rejection (search_id, candidate_id, parent_id, branch, formula,"
                    " structural_hash, verdict, reason, iterations, stop, seconds, created_at) "
                    "VALUES (%s, %s, %s, 'seg', 'y*log(yhat)', 'h', %s, %s, 500, 'completed', "
                    "%s, %s)", (sid, cids[0] if verdict == "accept" else None, cids[0],
                                verdict, reason, seconds, T0 + timedelta(seconds=at)))
            sids.append(sid)
    return sids


def _old_answers(url: str, sid: int) -> dict:
    """What the readers of revision 0012 computed, with their queries on the rows."""
    with psycopg.connect(libpq(url)) as conn:
        by_reason = conn.execute(
            "SELECT verdict, coalesce(reason, ''), count(*), avg(seconds) FROM rejection "
            "WHERE search_id = %s GROUP BY 1, 2", (sid,)).fetchall()
        checks = conn.execute(
            "SELECT date_trunc('second', created_at), sum(seconds) FROM rejection "
            "WHERE search_id = %s GROUP BY 1 ORDER BY 1", (sid,)).fetchall()
        finished = conn.execute(
            "SELECT finished_at, seconds FROM evaluation WHERE search_id = %s "
            "ORDER BY finished_at, id", (sid,)).fetchall()
        rejected = conn.execute("SELECT rejections FROM search WHERE id = %s",
                                (sid,)).fetchone()[0]
    curve, proxy, spent, i = [], 0.0, 0.0, 0
    for at, seconds in finished:  # browse.fitness_history's accumulation
        while i < len(checks) and checks[i][0] <= at:
            spent += checks[i][1]
            i += 1
        proxy += seconds
        curve.append(round(proxy + spent, 9))
    return {"by_reason": sorted((v, r, n, round(s, 9)) for v, r, n, s in by_reason),
            "curve": curve, "rejected_rows": rejected}


def _new_answers(url: str, sid: int) -> dict:
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            readers = _readers(s, sid)
            total, shown = _rejected_page(s, sid)
            assert total == shown
            return {"by_reason": readers["by_reason"], "curve": readers["curve"],
                    "rejected_rows": total}
    finally:
        engine.dispose()


def _objects(url: str) -> dict:
    with psycopg.connect(libpq(url)) as conn:
        return {
            "tables": [conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0]
                       for t in ("rejection_count", "rejection_second")],
            "triggers": sorted(r[0] for r in conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'trg_rejection_%%'")),
            "functions": sorted(r[0] for r in conn.execute(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'alz_rejection_%%'")),
            "indexes": sorted(r[0] for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE indexname IN "
                "('ix_rejection_parent_id', 'ix_candidate_parent_id')")),
            "rows": conn.execute("SELECT count(*) FROM rejection").fetchone()[0]}


def test_the_growth_migration_upgrades_rows_from_0012_and_downgrades(new_database) -> None:
    url = new_database()
    migrate.upgrade(url, "0012_notify")
    sids = _seed_at_0012(url)
    old = {sid: _old_answers(url, sid) for sid in sids}
    assert old[sids[0]]["curve"] == [30 + 1.5 + 1.25 + 2.0, 60 + 1.5 + 1.25 + 2.0 + 0.5]

    migrate.upgrade(url, "0013_rejection_growth")
    assert _objects(url) == {
        "tables": ["rejection_count", "rejection_second"],
        "triggers": ["trg_rejection_added", "trg_rejection_removed"],
        "functions": ["alz_rejection_added", "alz_rejection_removed"],
        "indexes": ["ix_candidate_parent_id", "ix_rejection_parent_id"], "rows": len(ROWS)}
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            for sid in sids:
                assert _aggregates(s, sid) == _raw(s, sid)  # the back-fill
    finally:
        engine.dispose()
    for sid in sids:  # today's readers give the answers of revision 0012's
        assert _new_answers(url, sid) == old[sid]

    migrate.downgrade(url, "0012_notify")
    assert migrate.current(url) == "0012_notify"
    assert _objects(url) == {"tables": [None, None], "triggers": [], "functions": [],
                             "indexes": [], "rows": len(ROWS)}
    assert {sid: _old_answers(url, sid) for sid in sids} == old
    migrate.upgrade(url, "head")
    for sid in sids:
        assert _new_answers(url, sid) == old[sid]
