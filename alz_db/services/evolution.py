"""One evolution step of a search worker (docs/store.md, step 3 of the loop): read the
population (ids, fitnesses and rungs: :func:`alz_db.population_entries`); an initial random
candidate while the search has fewer than K candidates (or no evaluated individual yet), else
tournament + mutation (the parent's graphs read once, cached while it is a member); the
rejection protocol and the gradient
fingerprint run outside any transaction; then :func:`alz_db.submit_candidate` stores the
rejections and either links the child to an equivalent representative or reserves a proxy slot
atomically.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from alz_core.evolution.mutation import MutationKind
from alz_core.evolution.regularized import (
    SearchExhausted,
    child_candidate,
    initial_candidate,
    tournament_select,
)
from alz_core.graph.loss_graph import LossGraph
from alz_core.rejection.equivalence import combine_fingerprints
from alz_core.rejection.problem import check
from alz_core.rejection.result import RejectionResult

from ..enums import SearchStatus, SubmitOutcome
from ..records import PopulationEntry, SearchInfo
from ..repo.candidates import (
    load_candidates,
    population_entries,
    record_rejections,
    submit_candidate,
)
from ..repo.searches import get_search
from ..store.requests import new_key
from .proxy import Abandon, SearchContext

log = logging.getLogger(__name__)


def evolve(ctx: SearchContext, call: Callable[..., Any], *, stop: threading.Event,
           worker_id: int, summary: Any, rejection_batch: int, rejection_device: str) -> bool:
    """One child for the search; ``False`` if the search has no budget left.

    ``call(unit, *args)`` runs a unit of work (the worker's retrying ``call``); ``stop`` set
    raises :class:`Abandon` inside the rejection checks; ``summary`` (the worker's
    ``WorkerSummary``) counts the checks and what became of the child; ``rejection_batch`` > 1
    checks that many mutations of a dense branch at once on ``rejection_device``.
    """
    sid = ctx.info.id
    evo = ctx.info.evolution
    info, population = call(snapshot, sid, evo.population_size)
    # the cache keeps the graphs of parents that are still members
    members = {m.id for m in population}
    for cid in [c for c in ctx.population_cache if c not in members]:
        del ctx.population_cache[cid]
    if info.status is not SearchStatus.RUNNING or not info.budget_left:
        return False
    seen: list[tuple[str, LossGraph, RejectionResult]] = []

    def reject(branch: str, graph: LossGraph) -> RejectionResult:
        if stop.is_set():
            raise Abandon("stop requested")
        result = check(graph, ctx.problems[branch])
        seen.append((branch, graph, result))
        return result

    def reject_many(branch: str, graphs: list[LossGraph]) -> list[RejectionResult]:
        from alz_core.rejection.batched import check_batch

        if stop.is_set():
            raise Abandon("stop requested")
        results = check_batch(graphs, ctx.problems[branch], rejection_device)
        seen.extend((branch, g, r) for g, r in zip(graphs, results))
        return results

    from alz_core.rejection.dense import DenseRejectionProblem

    # batched checks on the worker's device for the dense branches (see rejection_batch)
    many = {b: reject_many for b, p in ctx.problems.items()
            if isinstance(p, DenseRejectionProblem)} if rejection_batch > 1 else None
    branches = ctx.task.branches
    space = info.space
    parent = None
    try:
        if info.candidates < evo.initial_population or not population:
            cand, attempts = initial_candidate(branches, ctx.rng, reject, space, evo,
                                               many, rejection_batch)
            mutation, generation = MutationKind.INIT, 0
        else:
            parent = tournament_select(population, ctx.rng, evo.tournament_fraction,
                                       evo.tournament_min_size)
            if parent.id not in ctx.population_cache:  # its graphs, read once
                call(load_candidates, [parent.id], ctx.population_cache)
            cand, mutation, attempts = child_candidate(ctx.population_cache[parent.id],
                                                       branches, ctx.rng, reject, space, evo,
                                                       many, rejection_batch)
            generation = parent.generation + 1
    except SearchExhausted as exc:
        log.warning("worker %d: search %d: %s", worker_id, sid, exc)
        summary.rejection_checks += len(seen)
        call(record_only, sid, seen, parent.id if parent else None, worker_id,
                  new_key())
        return True
    summary.rejection_checks += len(attempts.results)
    fingerprint = combine_fingerprints(
        {name: ctx.problems[name].fingerprint(g) for name, g in cand.branches})
    sub = call(submit_candidate, sid, cand, fingerprint=fingerprint,
                    parent_id=parent.id if parent else None, mutation=mutation,
                    generation=generation, worker_id=worker_id,
                    rejections=attempts.results,
                    branch_mutations=attempts.mutations or None, key=new_key())
    if sub.outcome is SubmitOutcome.QUEUED:
        summary.submitted += 1
    elif sub.outcome is SubmitOutcome.EQUIVALENT:
        summary.equivalents += 1
    else:
        summary.budget_exhausted += 1
    log.info("worker %d: search %d: %s %s -> %s", worker_id, sid, mutation.value,
             cand.text, sub.outcome.value)
    return True


def snapshot(session: Session, search_id: int,
             size: int) -> tuple[SearchInfo, list[PopulationEntry]]:
    """The search's counters and its population (without graphs), read in one transaction."""
    return get_search(session, search_id), population_entries(session, search_id, size)


def record_only(session: Session, search_id: int,
                 results: list[tuple[str, LossGraph, RejectionResult]], parent_id: int | None,
                 worker_id: int, key: str) -> int:
    """The rejections of an evolution step that produced no child (the search's space is
    exhausted), stored alone."""
    return record_rejections(session, search_id, results, parent_id=parent_id,
                             worker_id=worker_id, key=key)


__all__ = ["evolve", "record_only", "snapshot"]
