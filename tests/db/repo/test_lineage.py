"""Leaderboard and lineage: the repository functions and the read-only views agree."""

from __future__ import annotations

from sqlalchemy import text

from alz_core.evolution.mutation import MutationKind
from alz_db import (
    FitnessKind,
    NotFound,
    add_candidate,
    children,
    create_search,
    leaderboard,
    lineage,
    session_scope,
)
from alz_db.store.models import Candidate as Row
from tests.fixtures.builders import FORMULAS, cand


def _evaluate(s, cid: int, fitness: float | None) -> None:
    s.execute(Row.__table__.update().where(Row.id == cid).values(
        status="evaluated", fitness=fitness,
        fitness_kind="finite" if fitness is not None else "diverged",
        evaluated_at=text("now()")))


def test_leaderboard_and_lineage(sessions, unique_name) -> None:
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou").id
        root = add_candidate(s, sid, cand(FORMULAS[0]), fingerprint="a")
        kid = add_candidate(s, sid, cand(FORMULAS[1]), fingerprint="b", parent_id=root,
                            mutation=MutationKind.REPLACE, generation=1)
        kid2 = add_candidate(s, sid, cand(FORMULAS[2]), fingerprint="c", parent_id=root,
                             mutation=MutationKind.INSERT, generation=1)
        grandkid = add_candidate(s, sid, cand(FORMULAS[3]), fingerprint="d", parent_id=kid,
                                 mutation=MutationKind.DELETE, generation=2)
        twin = add_candidate(s, sid, cand(FORMULAS[4]), fingerprint="b", parent_id=kid,
                             mutation=MutationKind.REINIT, generation=2, equivalent_to=kid)
        for cid, f in ((root, 0.5), (kid, 0.8), (kid2, None), (grandkid, 0.8)):
            _evaluate(s, cid, f)
    with session_scope(sessions) as s:
        board = leaderboard(s, sid)
        view = s.execute(text("SELECT rank, candidate_id FROM v_leaderboard WHERE search_id = "
                              ":s AND rank <= 10 ORDER BY rank"), {"s": sid}).all()
        # the documented fast form (a LIMIT in the view's own order) gives the same ranking
        fast = s.execute(text("SELECT rank, candidate_id FROM v_leaderboard WHERE search_id = "
                              ":s ORDER BY fitness DESC NULLS LAST, candidate_id LIMIT 10"),
                         {"s": sid}).all()
        page2 = leaderboard(s, sid, limit=2, offset=2)
        up = lineage(s, grandkid)
        down = children(s, root)
        progress = s.execute(text("SELECT candidates, evaluations_done FROM v_search_progress "
                                  "WHERE search_id = :s"), {"s": sid}).one()
    # best first, ties to the older candidate, diverged last, the equivalent not listed
    assert [(e.rank, e.candidate_id, e.fitness) for e in board] == [
        (1, kid, 0.8), (2, grandkid, 0.8), (3, root, 0.5), (4, kid2, None)]
    assert board[3].fitness_kind is FitnessKind.DIVERGED and twin not in [e.candidate_id
                                                                           for e in board]
    assert [tuple(r) for r in view] == [tuple(r) for r in fast] == [
        (e.rank, e.candidate_id) for e in board]
    assert [(e.rank, e.candidate_id) for e in page2] == [(3, root), (4, kid2)]
    assert [(e.candidate_id, e.generation, e.mutation) for e in up] == [
        (root, 0, MutationKind.INIT), (kid, 1, MutationKind.REPLACE),
        (grandkid, 2, MutationKind.DELETE)]
    assert up[-1].formula == cand(FORMULAS[3]).text
    assert [e.candidate_id for e in down] == [kid, kid2]
    assert tuple(progress) == (5, 0)


def test_lineage_of_a_missing_candidate(sessions) -> None:
    import pytest

    with pytest.raises(NotFound, match="candidate 998877665 does not exist"), \
            session_scope(sessions) as s:
        lineage(s, 998877665)


def test_leaderboard_view_ranks_the_top_of_each_search_from_the_index(sessions,
                                                                      unique_name) -> None:
    """v_leaderboard (migration 0003) ranks the best 1,000 of a search, the same ranking as
    ``alz_db.leaderboard``, and every documented query form reads the leaderboard index."""
    import json

    n = 20_000
    graph = cand(FORMULAS[0]).graphs["seg"]
    with session_scope(sessions) as s:
        sid = create_search(s, unique_name, "seg", "miou").id
        # fitness in [0.1, 0.7) by a multiplicative hash of k (many ties); every 7th diverged
        s.execute(text(
            "INSERT INTO candidate (search_id, mutation, generation, graphs, branch_order, "
            "formula, structural_hash, fingerprint, status, fitness, fitness_kind, "
            "evaluated_at) "
            "SELECT :s, 'init', 0, CAST(:g AS jsonb), ARRAY['seg'], :f, md5(k::text), "
            "md5(k::text), 'evaluated', "
            "CASE WHEN k % 7 = 0 THEN NULL ELSE 0.1 + ((k * 7919) % 600) / 1000.0 END, "
            "CASE WHEN k % 7 = 0 THEN 'diverged' ELSE 'finite' END, now() "
            "FROM generate_series(1, :n) k"),
            {"s": sid, "g": json.dumps(graph.to_json()), "f": graph.text, "n": n})
    with session_scope(sessions) as s:
        s.execute(text("ANALYZE candidate"))
    queries = {
        "order by fitness": "SELECT rank, candidate_id FROM v_leaderboard WHERE search_id = :s "
                            "ORDER BY fitness DESC NULLS LAST, candidate_id LIMIT 20",
        "order by rank": "SELECT rank, candidate_id FROM v_leaderboard WHERE search_id = :s "
                         "ORDER BY rank LIMIT 20",
        "rank filter": "SELECT rank, candidate_id FROM v_leaderboard WHERE search_id = :s "
                       "AND rank <= 20 ORDER BY rank",
    }
    with session_scope(sessions) as s:
        board = [(e.rank, e.candidate_id) for e in leaderboard(s, sid, limit=1000)]
        whole = s.execute(text("SELECT rank, candidate_id FROM v_leaderboard "
                               "WHERE search_id = :s ORDER BY rank"), {"s": sid}).all()
        results = {k: s.execute(text(q), {"s": sid}).all() for k, q in queries.items()}
        plans = {k: "\n".join(s.execute(text("EXPLAIN " + q), {"s": sid}).scalars())
                 for k, q in queries.items()}
    assert [tuple(r) for r in whole] == board and len(board) == 1000
    for name, rows in results.items():
        assert [tuple(r) for r in rows] == board[:20], name
    for name, plan in plans.items():
        assert "ix_candidate_leaderboard" in plan, f"{name}:\n{plan}"
        assert "Seq Scan on candidate" not in plan, f"{name}:\n{plan}"
