"""Regularised (aging) evolution over multi-branch loss candidates (the paper, appendix A).

The pieces are pure functions of an explicit generator so that the database-backed workers and
the in-memory :func:`run_evolution` share them: :func:`tournament_select` picks a parent,
:func:`initial_candidate` and :func:`child_candidate` produce candidates whose every branch
passed the rejection protocol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from ..config import EvolutionConfig, SearchSpaceConfig
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..rejection.result import RejectionResult
from .candidate import Candidate, Individual
from .mutation import MutationKind, mutate, random_graph
from .rungs import Rungs, promotions, rank_key


class Ranked(Protocol):
    """What tournament selection reads of a member: an :class:`Individual`, or a stored
    member without its graphs (a worker picks first and then reads the parent's graphs)."""

    @property
    def fitness(self) -> float | None: ...

    @property
    def rung(self) -> int: ...


R = TypeVar("R", bound=Ranked)


def tournament_select(population: Sequence[R], rng: np.random.Generator,
                      fraction: float, min_size: int = 2) -> R:
    """Best of ``max(min_size, round(fraction * len))`` members (at most all of them) drawn
    without replacement.

    Ties go to the most recent member (younger individuals carry the newer genes in aging
    evolution). ``min_size`` 2: with the paper's T = 5 % the tournament would otherwise hold
    one member, a random parent, until the population reaches 30.
    """
    if not population:
        raise ValueError("tournament over an empty population")
    size = min(len(population), max(min_size, int(round(fraction * len(population)))))
    picks = sorted(rng.choice(len(population), size=size, replace=False).tolist())
    best = max(picks, key=lambda i: (rank_key(population[i].rung, population[i].fitness), i))
    return population[best]


RejectFn = Callable[[str, LossGraph], RejectionResult]


@dataclass
class Attempts:
    """Every rejection result met while producing one candidate (for storage and statistics)."""

    results: list[tuple[str, LossGraph, RejectionResult]] = field(default_factory=list)
    #: the mutation kind that made each branch of the accepted child (empty for an initial one)
    mutations: dict[str, MutationKind] = field(default_factory=dict)

    def record(self, branch: str, graph: LossGraph, result: RejectionResult) -> None:
        self.results.append((branch, graph, result))


class SearchExhausted(RuntimeError):
    """No graph passing the rejection protocol was found within the configured tries."""


RejectManyFn = Callable[[str, list[LossGraph]], list[RejectionResult]]


def _until_accepted(make: Callable[[], tuple[LossGraph, Any]], branch: str, reject: RejectFn,
                    attempts: Attempts, max_tries: int, reject_many: RejectManyFn | None = None,
                    batch: int = 1) -> tuple[LossGraph, Any]:
    """Draw with ``make`` (a graph and a tag) until a graph passes rejection. With
    ``reject_many`` and ``batch`` > 1, ``batch`` draws are checked at once (a GPU worker) and
    the first accepted one in draw order is kept, the child a one-at-a-time search keeps from
    the same draws; the checks after it in the batch are dropped, not recorded."""
    tries = 0
    while tries < max_tries:
        k = 1 if reject_many is None or batch <= 1 else min(batch, max_tries - tries)
        made = [make() for _ in range(k)]
        results = [reject(branch, made[0][0])] if k == 1 else \
            reject_many(branch, [g for g, _ in made])
        for (graph, tag), result in zip(made, results):
            attempts.record(branch, graph, result)
            tries += 1
            if result.accepted:
                return graph, tag
    raise SearchExhausted(f"branch {branch!r}: no graph passed the rejection protocol in "
                          f"{max_tries} tries")


def initial_candidate(branches: Mapping[str, BranchKind], rng: np.random.Generator,
                      reject: RejectFn, space: SearchSpaceConfig, evo: EvolutionConfig,
                      reject_many: Mapping[str, RejectManyFn] | None = None, batch: int = 1,
                      ) -> tuple[Candidate, Attempts]:
    """A random candidate: each branch drawn at depth D until it passes rejection
    (``reject_many[branch]``: check ``batch`` draws at once, see :func:`_until_accepted`)."""
    attempts = Attempts()
    many = reject_many or {}
    graphs = {
        name: _until_accepted(lambda kind=kind: (random_graph(rng, kind, space), None), name,
                              reject, attempts, evo.max_mutation_tries, many.get(name),
                              batch)[0]
        for name, kind in branches.items()
    }
    return Candidate.of(graphs), attempts


def child_candidate(parent: Candidate, branches: Mapping[str, BranchKind],
                    rng: np.random.Generator, reject: RejectFn, space: SearchSpaceConfig,
                    evo: EvolutionConfig, reject_many: Mapping[str, RejectManyFn] | None = None,
                    batch: int = 1) -> tuple[Candidate, MutationKind, Attempts]:
    """A mutation of ``parent``: every branch is mutated, each until it passes rejection.

    The returned kind is the mutation of the accepted attempt of the first branch (for a
    single-branch task, simply the mutation that made the child); ``attempts.mutations`` holds
    every branch's.
    """
    attempts = Attempts()
    w = evo.mutation_weights
    weights = (w.insert, w.delete, w.replace, w.reinit)
    graphs: dict[str, LossGraph] = {}
    kind_of_first: MutationKind | None = None
    many = reject_many or {}
    for name, kind in branches.items():
        def make(name=name, kind=kind) -> tuple[LossGraph, MutationKind]:
            return mutate(parent.graphs[name], rng, kind, space, weights)

        graphs[name], mk = _until_accepted(make, name, reject, attempts,
                                           evo.max_mutation_tries, many.get(name), batch)
        attempts.mutations[name] = mk
        if kind_of_first is None:
            kind_of_first = mk
    assert kind_of_first is not None
    return Candidate.of(graphs), kind_of_first, attempts


@dataclass
class SearchEvent:
    """What :func:`run_evolution` reports after each new individual."""

    individual: Individual
    attempts: Attempts
    evaluations: int  # proxy evaluations used so far
    reused: bool  # fitness taken from an equivalent evaluated loss


def run_evolution(branches: Mapping[str, BranchKind], rng: np.random.Generator,
                  reject: RejectFn, fingerprint: Callable[[Candidate], str | None],
                  evaluate: Callable[[Candidate], float | None],
                  evo: EvolutionConfig | None = None, space: SearchSpaceConfig | None = None,
                  on_event: Callable[[SearchEvent], None] | None = None,
                  use_equivalence: bool = True, rungs: Rungs | None = None,
                  on_promotion: Callable[[Individual], None] | None = None
                  ) -> list[Individual]:
    """A whole search in one process, without a database (the reference semantics).

    Stops when ``evo.budget`` proxy evaluations are done. A child whose gradient fingerprint
    equals an evaluated loss's joins the population with that loss's fitness and uses no budget.
    Returns every individual in creation order.

    ``rungs`` (several of them): ``evaluate(candidate, rung)`` trains one rung; ``evo.budget``
    counts full-proxy equivalents (:mod:`alz_core.evolution.rungs`); after each result, the
    candidates ASHA promotes are trained at the next rung at once (``on_promotion`` is told), and
    the individuals (and their equivalents) carry their highest rung and its fitness.
    """
    evo = evo or EvolutionConfig()
    space = space or SearchSpaceConfig()
    population: deque[Individual] = deque(maxlen=evo.population_size)
    history: list[Individual] = []
    evaluated: dict[str, Individual] = {}
    evaluations = 0
    ladder = _Ladder(rungs, evo.budget) if rungs is not None and rungs.count > 1 else None
    if ladder is not None:
        plain = evaluate

        def evaluate(cand: Candidate) -> float | None:  # rung 0 of a new candidate
            return plain(cand, 0)  # type: ignore[call-arg]

    while (ladder.can_start() if ladder else evaluations < evo.budget):
        if len(history) < evo.initial_population:
            cand, attempts = initial_candidate(branches, rng, reject, space, evo)
            parent, mk, gen = None, MutationKind.INIT, 0
        else:
            parent = tournament_select(list(population), rng, evo.tournament_fraction,
                                       evo.tournament_min_size)
            cand, mk, attempts = child_candidate(parent.candidate, branches, rng, reject, space,
                                                 evo)
            gen = parent.generation + 1
        fp = fingerprint(cand)
        rep = evaluated.get(fp) if (use_equivalence and fp is not None) else None
        if rep is not None:
            fitness, equivalent_to, reused = rep.fitness, rep.id, True
        else:
            fitness, equivalent_to, reused = evaluate(cand), None, False
            evaluations += 1
        rung = 0 if rep is None else rep.rung
        ind = Individual(len(history), cand, fitness, parent.id if parent else None, mk, gen,
                         fp, equivalent_to, rung)
        if not reused and fp is not None:
            evaluated[fp] = ind
        history.append(ind)
        population.append(ind)
        if ladder is not None and not reused:
            ladder.charge(0)
            ladder.record(0, ind.id, fitness)
        if on_event:
            on_event(SearchEvent(ind, attempts, evaluations, reused))
        if ladder is not None and not reused:
            for promoted in ladder.promote(history, plain):
                _replace(history, population, evaluated, promoted)
                if on_promotion:
                    on_promotion(promoted)
    return history


class _Ladder:
    """The rung results of an in-process search and its compute in units."""

    def __init__(self, rungs: Rungs, budget: int) -> None:
        self.rungs, self.units = rungs, rungs.units
        self.left = budget * rungs.units_per_proxy
        self.results: list[list[tuple[int, float | None]]] = [[] for _ in rungs.fractions]
        self.promoted: list[set[int]] = [set() for _ in rungs.fractions]

    def can_start(self) -> bool:
        return self.left >= self.units[0]

    def charge(self, rung: int) -> None:
        self.left -= self.units[rung]

    def record(self, rung: int, ind_id: int, fitness: float | None) -> None:
        self.results[rung].append((ind_id, fitness))

    def promote(self, history: list[Individual],
                evaluate: Callable[..., float | None]) -> list[Individual]:
        """Train every candidate ASHA promotes (cascading up the rungs) while the budget
        allows; the updated individuals."""
        out: list[Individual] = []
        changed = True
        while changed:
            changed = False
            for k in range(self.rungs.top):
                for ind_id in promotions(self.results[k], self.rungs.promote,
                                         self.promoted[k]):
                    if self.left < self.units[k + 1]:
                        return out
                    self.promoted[k].add(ind_id)
                    self.charge(k + 1)
                    fitness = evaluate(history[ind_id].candidate, k + 1)
                    self.record(k + 1, ind_id, fitness)
                    ind = replace(history[ind_id], fitness=fitness, rung=k + 1)
                    history[ind_id] = ind
                    out.append(ind)
                    changed = True
        return out


def _replace(history: list[Individual], population: deque[Individual],
             evaluated: dict[str, Individual], ind: Individual) -> None:
    """A promoted representative and its equivalents carry its new rung and fitness."""
    for i, member in enumerate(population):
        if member.id == ind.id:
            population[i] = ind
        elif member.equivalent_to == ind.id:
            population[i] = replace(member, fitness=ind.fitness, rung=ind.rung)
    for i, member in enumerate(history):
        if member.equivalent_to == ind.id:
            history[i] = replace(member, fitness=ind.fitness, rung=ind.rung)
    if ind.fingerprint is not None and ind.fingerprint in evaluated:
        evaluated[ind.fingerprint] = ind
