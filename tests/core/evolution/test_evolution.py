"""Regularised evolution: selection, aging, budget, equivalence reuse, determinism.

The objective here is a cheap deterministic function of the graph (a real objective, not a
mock of one): fitness rises with the number of ``log`` nodes, so evolution has something to climb.
The rejection function accepts graphs that use ``log`` at most 3 times, which exercises retries.
"""

from __future__ import annotations

import numpy as np
import pytest

from alz_core.config import EvolutionConfig, SearchSpaceConfig
from alz_core.evolution.candidate import Candidate, Individual
from alz_core.evolution.mutation import MutationKind
from alz_core.evolution.regularized import (
    SearchExhausted,
    child_candidate,
    initial_candidate,
    run_evolution,
    tournament_select,
)
from alz_core.graph.expr import BranchKind
from alz_core.graph.loss_graph import LossGraph
from alz_core.graph.validity import validity_problem
from alz_core.rejection.result import RejectionResult, RejectReason, StopReason, Verdict

DENSE = {"seg": BranchKind.DENSE}


def _result(ok: bool) -> RejectionResult:
    return RejectionResult(Verdict.ACCEPT if ok else Verdict.REJECT,
                           None if ok else RejectReason.LOW_SCORE, 0.0, 1.0 if ok else 0.0,
                           1.0 if ok else 0.0, 1, 0.0, StopReason.COMPLETED)


def reject(branch: str, graph: LossGraph) -> RejectionResult:
    return _result(graph.ops.count("log") <= 3)


def fitness(cand: Candidate) -> float:
    g = cand.branches[0][1]
    return g.ops.count("log") / 3.0 + 0.01 * g.ops.count("mul")


def fingerprint(cand: Candidate) -> str:
    return cand.branches[0][1].structural_hash


def test_tournament_picks_the_best_of_the_sample():
    g = LossGraph.parse("-y*log(yhat)")
    pop = [Individual(i, Candidate.of(g), float(i)) for i in range(100)]
    rng = np.random.default_rng(0)
    # a tournament over the whole population always returns the best
    assert tournament_select(pop, rng, 1.0).id == 99
    # a 5% tournament returns the best of 5 draws: never one of the 4 worst
    picks = {tournament_select(pop, rng, 0.05).id for _ in range(200)}
    assert min(picks) >= 4 and len(picks) > 5


def test_tournament_ranks_diverged_last():
    g = LossGraph.parse("-y*log(yhat)")
    pop = [Individual(0, Candidate.of(g), None), Individual(1, Candidate.of(g), -5.0)]
    assert tournament_select(pop, np.random.default_rng(0), 1.0).id == 1


def test_initial_and_child_candidates_pass_rejection_and_are_valid():
    rng = np.random.default_rng(1)
    space, evo = SearchSpaceConfig(), EvolutionConfig()
    cand, attempts = initial_candidate(DENSE, rng, reject, space, evo)
    assert attempts.results[-1][2].accepted
    assert all(not r.accepted for _, _, r in attempts.results[:-1])
    child, kind, attempts = child_candidate(cand, DENSE, rng, reject, space, evo)
    assert kind in (MutationKind.INSERT, MutationKind.DELETE, MutationKind.REPLACE,
                    MutationKind.REINIT)
    assert child != cand
    assert validity_problem(child.graphs["seg"], BranchKind.DENSE, space) is None


def test_exhausted_when_nothing_passes():
    with pytest.raises(SearchExhausted, match="seg"):
        initial_candidate(DENSE, np.random.default_rng(0), lambda b, g: _result(False),
                          SearchSpaceConfig(), EvolutionConfig(max_mutation_tries=5))


def test_budget_is_met_exactly_and_equivalents_reuse_fitness():
    evo = EvolutionConfig(initial_population=5, population_size=10, budget=30,
                          tournament_fraction=0.3)
    history = run_evolution(DENSE, np.random.default_rng(3), reject, fingerprint, fitness, evo)
    evaluated = [i for i in history if i.equivalent_to is None]
    assert len(evaluated) == 30
    reused = [i for i in history if i.equivalent_to is not None]
    for ind in reused:
        rep = history[ind.equivalent_to]
        assert rep.fingerprint == ind.fingerprint and rep.fitness == ind.fitness
    # the first K individuals are the initial population, the rest have parents
    assert all(i.mutation is MutationKind.INIT for i in history[:5])
    assert all(i.parent_id is not None for i in history[5:])
    # aging: a parent is always among the P most recent individuals before its child
    for i in history[5:]:
        assert i.id - i.parent_id <= evo.population_size


def test_evolution_climbs_the_objective():
    evo = EvolutionConfig(initial_population=5, population_size=20, budget=60,
                          tournament_fraction=0.25)
    history = run_evolution(DENSE, np.random.default_rng(5), reject, fingerprint, fitness, evo)
    first = max(i.fitness for i in history[:5])
    best = max(i.fitness for i in history)
    assert best > first


def test_same_seed_same_search_different_seed_differs():
    evo = EvolutionConfig(initial_population=4, population_size=10, budget=15)

    def texts(seed):
        h = run_evolution(DENSE, np.random.default_rng(seed), reject, fingerprint, fitness, evo)
        return [(i.candidate.text, i.parent_id, i.mutation) for i in h]

    assert texts(11) == texts(11)
    assert texts(11) != texts(12)


def test_multi_branch_candidate_round_trip():
    cand = Candidate.of({"cls": LossGraph.parse("-y*log(yhat)"),
                         "reg": LossGraph.parse("-log(i/e)")})
    assert Candidate.from_json(cand.to_json()) == cand
    assert cand.text == "cls: -y*log(yhat); reg: -log(i/e)"
    branches = {"cls": BranchKind.DENSE, "reg": BranchKind.BOX}
    child, _, _ = child_candidate(cand, branches, np.random.default_rng(0),
                                  lambda b, g: _result(True), SearchSpaceConfig(),
                                  EvolutionConfig())
    assert set(child.graphs) == {"cls", "reg"}
    assert child.graphs["reg"].inputs <= {"i", "u", "e"}
    assert child.graphs["cls"] != cand.graphs["cls"] and child.graphs["reg"] != cand.graphs["reg"]
