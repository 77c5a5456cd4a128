"""The queries of the web app (alz_db.queries) and the pure helpers of webapp.graphs."""

from __future__ import annotations

import pytest

from alz_core.graph.loss_graph import LossGraph
from alz_core.rejection.result import RejectReason, Verdict
from alz_db import InvalidInput, NotFound, make_session_factory, session_scope
from alz_db.queries import (
    PopulationQuery,
    SortKey,
    descendants,
    fitness_history,
    lineage_graph,
    make_read_only_engine,
    population_page,
    search_overviews,
)
from tests.fixtures.world import FITNESS, REJECTED, World
from webapp.graphs import graph_changes, lineage_dot, loss_graph_dot


@pytest.fixture(scope="module")
def sessions(world: World):
    engine = make_read_only_engine(world.url)
    yield make_session_factory(engine)
    engine.dispose()


def test_overviews_and_fitness_history(world: World, sessions) -> None:
    with session_scope(sessions) as s:
        o = {x.info.id: x for x in search_overviews(s)}[world.search_id]
        history = fitness_history(s, world.search_id)
    assert o.evaluations["done"] == 5 and o.budget_used == 1.0
    assert o.best_formula == LossGraph.parse("exp((y - tanh(abs(yhat)))^2)").text
    assert [p.fitness for p in history] == [FITNESS[k] for k in "ABFCD"]
    assert [p.best_so_far for p in history] == [0.30, 0.45, 0.45, 0.62, 0.71]
    assert [p.evaluation for p in history] == [1, 2, 3, 4, 5]
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(history, history[1:]))


def test_population_pages_in_sql(world: World, sessions) -> None:
    ids = world.ids
    both = PopulationQuery(world.search_id, verdicts=frozenset(Verdict), limit=3)
    with session_scope(sessions) as s:
        first, second, third = (population_page(s, both.page(n)) for n in range(3))
        rejected = population_page(s, PopulationQuery(
            world.search_id, verdicts=frozenset({Verdict.REJECT}),
            reasons=frozenset({RejectReason.LOW_SCORE}), sort=SortKey.FORMULA,
            descending=False))
        oldest = population_page(s, PopulationQuery(world.search_id, descending=False,
                                                     limit=2))
    assert first.total == 8 and first.pages == 3  # 6 candidates + 2 rejected graphs
    rows = first.rows + second.rows + third.rows
    assert len(rows) == 8 and not third.rows[2:]
    assert sorted(r.candidate_id for r in rows if r.candidate_id) == sorted(ids.values())
    assert [r.formula for r in rejected.rows] == sorted(
        LossGraph.parse(f).text for f in REJECTED)
    assert all(r.status == "rejected" and r.reason is RejectReason.LOW_SCORE
               for r in rejected.rows)
    assert [r.candidate_id for r in oldest.rows] == [ids["A"], ids["B"]]


def test_population_query_is_validated() -> None:
    with pytest.raises(InvalidInput, match="fitness range"):
        PopulationQuery(1, fitness_min=0.9, fitness_max=0.1)
    with pytest.raises(InvalidInput, match="limit=0"):
        PopulationQuery(1, limit=0)
    with pytest.raises(InvalidInput, match="verdicts is empty"):
        PopulationQuery(1, verdicts=frozenset())


def test_descendants_are_cut_and_say_so(world: World, sessions) -> None:
    ids = world.ids
    with session_scope(sessions) as s:
        one, cut = descendants(s, ids["B"], max_depth=1)
        all_, more = descendants(s, ids["B"], max_depth=3)
        graph = lineage_graph(s, ids["C"])
        with pytest.raises(NotFound, match="candidate 99999999 does not exist"):
            descendants(s, 99999999)
    assert [e.candidate_id for e in one] == [ids["C"]] and cut
    assert [e.candidate_id for e in all_] == [ids["C"], ids["D"], ids["E"]] and not more
    assert [n.candidate_id for n in graph.nodes] == [ids["B"], ids["C"], ids["D"], ids["E"]]
    assert graph.edges == [(ids["B"], ids["C"]), (ids["C"], ids["D"]), (ids["C"], ids["E"])]
    dot = lineage_dot(graph.nodes, ids["C"])
    assert dot.count(" -> ") == 3 and f"c{ids['C']} [" in dot and "penwidth=3" in dot


@pytest.mark.parametrize(("parent", "child", "described"), [
    ("exp((y - tanh(yhat))^2)", "exp((y - tanh(abs(yhat)))^2)",
     ["inserted abs: `yhat` → `abs(yhat)`"]),
    ("-y*log(yhat)", "-y*yhat", ["deleted log: `log(yhat)` → `yhat`"]),
    ("exp((y - sqrt(yhat))^2)", "exp((y - tanh(yhat))^2)",
     ["replaced operator sqrt by tanh: `sqrt(yhat)` → `tanh(yhat)`"]),
    ("-y*log(yhat)", "-y*log(yhat)", []),
])
def test_parent_to_child_changes(parent: str, child: str, described: list[str]) -> None:
    changes = graph_changes(LossGraph.parse(parent), LossGraph.parse(child))
    assert [c.describe() for c in changes] == described


def test_loss_graph_dot_draws_each_node_once() -> None:
    graph = LossGraph.parse("y*log(yhat) + log(yhat)")  # log(yhat) is shared
    dot = loss_graph_dot(graph)
    assert dot.count('label="log"') == 1 and dot.count("peripheries=2") == 1
    assert dot.count(" -> ") == sum(len(n.args) for n in graph.nodes)
