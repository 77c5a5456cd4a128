"""Rungs and asynchronous successive halving: parsing, units, promotion decisions, and an
in-process search with rungs (budget in full-proxy equivalents)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from alz_core.config import ConfigError, EvolutionConfig
from alz_core.evolution.candidate import Candidate, Individual
from alz_core.evolution.regularized import run_evolution, tournament_select
from alz_core.evolution.rungs import Rungs, parse_rungs, promotions, rank_key
from alz_core.graph.loss_graph import LossGraph

from .test_evolution import DENSE, fingerprint, fitness, reject


def test_rungs_parse_into_units_and_iterations() -> None:
    r = parse_rungs("1/9,1/3,1")
    assert r.fractions == (Fraction(1, 9), Fraction(1, 3), Fraction(1))
    assert r.promote == Fraction(1, 3) and r.units_per_proxy == 9 and r.units == (1, 3, 9)
    assert r.with_iterations(300).iterations == (33, 100, 300)
    assert Rungs.from_json(r.with_iterations(300).to_json()) == r.with_iterations(300)
    assert parse_rungs("0.25, 0.5, 1", "1/2").units == (1, 2, 4)
    assert Rungs().count == 1 and Rungs().units == (1,)


@pytest.mark.parametrize("text, promote", [
    ("1/3,1/9,1", None), ("1/9,1/3", None), ("0,1", None), ("1/2,3/2", None), ("a,1", None),
    ("", None), ("1/3,1", "1"), ("1/3,1", "0"), ("1/3,1", "x")])
def test_bad_rungs_are_one_line_errors(text: str, promote: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rungs(text, promote)
    assert "\n" not in str(err.value)


def test_too_short_a_schedule_for_the_rungs_is_refused() -> None:
    with pytest.raises(ConfigError, match="increasing positive"):
        parse_rungs("1/9,1/3,1").with_iterations(4)  # 0 -> 1, 1, 4: not increasing


def test_asha_promotes_the_top_fraction_so_far_once() -> None:
    third = Fraction(1, 3)
    # fewer than 3 results: floor(n/3) = 0, nobody continues yet (no waiting either)
    assert promotions([(1, 0.5), (2, 0.9)], third, ()) == []
    results = [(1, 0.5), (2, 0.9), (3, 0.1)]
    assert promotions(results, third, ()) == [2]
    assert promotions(results, third, {2}) == []  # promoted once
    six = results + [(4, 0.95), (5, None), (6, 0.7)]
    # the top 2 of 6 are 4 and 2; 2 already continued
    assert promotions(six, third, {2}) == [4]
    # a late good result can be promoted although an earlier one at the cut was not
    nine = six + [(7, 0.2), (8, 0.99), (9, 0.3)]
    assert promotions(nine, third, {2, 4}) == [8]
    # ties go to the earlier result; a diverged run never continues
    assert promotions([(1, 0.5), (2, 0.5), (3, 0.5)], third, ()) == [1]
    assert promotions([(1, None), (2, None), (3, None)], third, ()) == []


def test_tournaments_rank_higher_rungs_first() -> None:
    g = Candidate.of(LossGraph.parse("-y*log(yhat)"))
    pop = [Individual(0, g, 0.9, rung=0), Individual(1, g, 0.4, rung=1),
           Individual(2, g, None, rung=2)]
    assert tournament_select(pop, np.random.default_rng(0), 1.0).id == 2
    assert rank_key(1, 0.4) > rank_key(0, 0.99) and rank_key(0, None) < rank_key(0, -1e9)


def test_a_search_with_rungs_spends_its_budget_in_full_proxy_equivalents() -> None:
    rungs = parse_rungs("1/9,1/3,1")
    trained: list[tuple[str, int]] = []

    def evaluate(cand: Candidate, rung: int) -> float:
        trained.append((cand.text, rung))
        return fitness(cand) * (0.5 + 0.25 * rung)  # longer training, higher metric

    evo = EvolutionConfig(initial_population=6, population_size=40, budget=4,
                          tournament_fraction=0.3)
    promoted: list[Individual] = []
    history = run_evolution(DENSE, np.random.default_rng(3), reject, fingerprint, evaluate,
                            evo, rungs=rungs, on_promotion=promoted.append)
    units = sum(rungs.units[r] for _, r in trained)
    assert units <= evo.budget * rungs.units_per_proxy
    assert units > evo.budget * rungs.units_per_proxy - rungs.units[-1]  # spent, not idle
    per_rung = [sum(1 for _, r in trained if r == k) for k in range(3)]
    assert per_rung[0] > per_rung[1] >= per_rung[2] >= 1  # successive halving
    assert per_rung[1] <= per_rung[0] // 3 + 1
    assert promoted and all(p.rung >= 1 for p in promoted)
    # the returned individuals carry their highest rung; each (candidate, rung) ran once
    assert max(i.rung for i in history) == 2
    assert len(set(trained)) == len(trained)
    for ind in history:
        if ind.equivalent_to is None:
            assert (ind.candidate.text, ind.rung) in trained


def test_one_rung_is_the_plain_search() -> None:
    evo = EvolutionConfig(initial_population=5, population_size=10, budget=12,
                          tournament_fraction=0.3)
    plain = run_evolution(DENSE, np.random.default_rng(3), reject, fingerprint, fitness, evo)
    same = run_evolution(DENSE, np.random.default_rng(3), reject, fingerprint, fitness, evo,
                         rungs=Rungs())
    assert [i.candidate.text for i in plain] == [i.candidate.text for i in same]
