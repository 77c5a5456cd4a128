"""Re-training a candidate with the full schedule (``alz retrain``), and the training settings
that ``alz tune`` searches.

A re-training is an evaluation of kind ``retrain`` in the same queue table as the proxy runs,
so it has a lease, heartbeats, an attempt history, the loss curve in ``evaluation_step`` and the
final metrics in ``evaluation.metrics`` (with the periodic validation curve under
``"val_curve"`` and the settings used under ``evaluation.params``). It runs in the calling
process: :func:`retrain_candidate` queues the evaluation and claims exactly that row in one
unit of work (a search worker never takes it: workers claim proxy runs only), trains with no
transaction open while a thread renews the lease, then records the curve and the result.

The task is built through the task registry (:func:`alz_core.tasks.registry.build_task`) with
the task's ``RETRAIN_CONFIG`` by default (the paper's re-training schedule; it needs the real
dataset and a GPU), or ``config`` (a path, or ``tiny`` / ``proxy`` / ``retrain``) and
``max_iters`` for a CPU machine.

The settings, the task and the training itself: :mod:`alz_db.services.training`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from alz_core.evolution.candidate import Candidate

from ..enums import EvalKind, EvalStatus, FinishOutcome
from ..errors import InvalidInput, NotFound
from ..records import Lease, SearchInfo
from ..repo.candidates import candidate_from_graphs, get_candidate, tuned_settings_of
from ..repo.queue import (
    fail_evaluation,
    finish_evaluation,
    lease_of_attempt,
    record_steps,
)
from ..repo.searches import get_search
from ..repo.workers import register_worker, stop_worker, worker_heartbeat
from ..store.models import Candidate as CandidateRow
from ..store.models import Evaluation, EvaluationAttempt
from ..store.requests import new_key, once
from ..store.retry import run_in_transaction
from .lease import HEARTBEAT_POLICY, LeaseKeeper
from .training import TrainingSettings, build_training_task, train_once

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0


# --- the stored re-training ----------------------------------------------------------------------
def _queue_and_claim(session: Session, candidate_id: int, worker_id: int,
                     params: dict[str, Any], key: str) -> Lease:
    """Queue a retrain evaluation of the candidate and lease exactly that row to
    ``worker_id`` (one unit of work: nobody else can take it in between); a retry after a
    lost commit reply (same ``key``) returns the first run's lease, no second row."""
    lease = once(session, key, "queue_and_claim",
                 lambda: _insert_and_claim(session, candidate_id, worker_id, params),
                 lambda le: {"evaluation_id": le.evaluation_id, "attempt": le.attempt},
                 lambda d: lease_of_attempt(session, worker_id, d["evaluation_id"],
                                            d["attempt"]))
    if lease is None:
        raise NotFound(f"the re-training evaluation of candidate {candidate_id} was taken "
                       f"back before it started")
    return lease


def _insert_and_claim(session: Session, candidate_id: int, worker_id: int,
                      params: dict[str, Any]) -> Lease:
    row = session.execute(select(CandidateRow.search_id, CandidateRow.graphs,
                                 CandidateRow.branch_order)
                          .where(CandidateRow.id == candidate_id)).one_or_none()
    if row is None:
        raise NotFound(f"candidate {candidate_id} does not exist")
    from datetime import timedelta

    lease = timedelta(seconds=LEASE_SECONDS)
    ev = session.execute(
        insert(Evaluation).values(
            candidate_id=candidate_id, search_id=row.search_id, kind=EvalKind.RETRAIN,
            status=EvalStatus.RUNNING, params=params, max_attempts=1, attempts=1,
            worker_id=worker_id, lease_expires_at=func.now() + lease, heartbeat_at=func.now(),
            started_at=func.now())
        .returning(Evaluation.id, Evaluation.lease_expires_at)).one()
    session.execute(insert(EvaluationAttempt).values(evaluation_id=ev.id, attempt=1,
                                                     worker_id=worker_id))
    return Lease(evaluation_id=ev.id, candidate_id=candidate_id, search_id=row.search_id,
                 kind=EvalKind.RETRAIN, worker_id=worker_id, attempt=1, max_attempts=1,
                 lease_expires_at=ev.lease_expires_at,
                 candidate=candidate_from_graphs(row.graphs, row.branch_order), params=params)


def set_tuned_settings(session: Session, candidate_id: int,
                       settings: Mapping[str, Any] | None) -> None:
    """Write (or clear, with ``None``) the candidate's tuned settings."""
    if settings is not None:
        TrainingSettings.from_json(settings)  # validated before it is stored
    n = session.execute(update(CandidateRow).where(CandidateRow.id == candidate_id)
                        .values(tuned_settings=None if settings is None else dict(settings))
                        .execution_options(synchronize_session=False)).rowcount
    if n == 0:
        raise NotFound(f"candidate {candidate_id} does not exist")


@dataclass(frozen=True)
class RetrainOutcome:
    """A finished (or diverged) re-training, as stored."""

    evaluation_id: int
    candidate_id: int
    fitness: float | None
    metrics: dict[str, Any]
    iterations: int
    seconds: float
    settings: dict[str, float]
    config: str
    seed: int


def retrain_candidate(sessions: sessionmaker[Session], candidate_id: int, *,
                      config: str | None = None, max_iters: int | None = None,
                      seed: int | None = None, settings: TrainingSettings | None = None,
                      use_tuned: bool = True, data_root: str | None = None,
                      data_dir: Path | None = None, val_interval: int | None = None,
                      torch_threads: int | None = None,
                      cfg_options: Mapping[str, Any] | None = None,
                      on_iter: Callable[[int, int], None] | None = None,
                      on_val: Callable[[int, dict[str, float]], None] | None = None,
                      launch: Any = None) -> RetrainOutcome:
    """Re-train a stored candidate and store it as a ``retrain`` evaluation with its curve.

    ``settings`` default to the candidate's tuned settings when ``use_tuned`` and present, else
    the config's own. ``seed`` defaults to the search's. ``launch``
    (:class:`alz_db.services.distributed.Launch`): train under torch.distributed, one process
    per GPU or N CPU processes; the result is rank 0's. Everything is validated (and the task
    built) before anything is written. A run that raises is recorded as ``failed`` with the
    error (no retry: a re-training is run by hand) and the exception propagates.
    """
    def _read(s: Session) -> tuple[Any, SearchInfo, dict[str, Any] | None]:
        cand = get_candidate(s, candidate_id)
        return cand, get_search(s, cand.search_id), tuned_settings_of(s, candidate_id)

    cand, info, tuned = run_in_transaction(sessions, _read)
    if settings is not None:
        source = "given"
    elif use_tuned and tuned:
        settings, source = TrainingSettings.from_json(tuned), "tuned"
    else:
        settings, source = TrainingSettings(), "default"
    seed = info.seed if seed is None else int(seed)
    task, path = build_training_task(info, config=config, max_iters=max_iters,
                                     data_root=data_root, data_dir=data_dir,
                                     torch_threads=torch_threads, cfg_options=cfg_options)
    params = {"config": path, "cfg_options": dict(cfg_options or {}), "max_iters": max_iters,
              "seed": seed, "launch": None if launch is None else launch.to_json(),
              "settings": settings.to_json(), "settings_source": source,
              "val_interval": val_interval}
    worker_id = run_in_transaction(sessions, register_worker, socket.gethostname(), os.getpid(),
                                   "retrain", info.id, key=new_key())
    keeper = LeaseKeeper(sessions, LEASE_SECONDS, label="retrain",
                         thread_name="alz-retrain-heartbeat",
                         on_beat=lambda: run_in_transaction(sessions, worker_heartbeat,
                                                            worker_id, policy=HEARTBEAT_POLICY))
    try:
        lease = run_in_transaction(sessions, _queue_and_claim, candidate_id, worker_id, params,
                                   new_key())
        keeper.hold(lease)
        try:
            with keeper:
                if launch is None:
                    run = train_once(task, lease.candidate, info.metric, seed=seed,
                                     settings=settings, val_interval=val_interval,
                                     on_iter=on_iter, on_val=on_val)
                else:
                    from .distributed import train_distributed

                    run = train_distributed(info, lease.candidate, launch=launch, seed=seed,
                                            settings=settings, val_interval=val_interval,
                                            config=config, max_iters=max_iters,
                                            data_root=data_root, data_dir=data_dir,
                                            cfg_options=cfg_options,
                                            torch_threads=torch_threads, on_iter=on_iter,
                                            on_val=on_val)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
                f"{type(exc).__name__}: {exc}"
            run_in_transaction(sessions, fail_evaluation, lease, reason, retry=False)
            raise
        metrics: dict[str, Any] = dict(run.metrics)
        metrics.update(iterations=run.iterations, diverged=run.diverged,
                       val_curve=[[step, m] for step, m in run.val_curve])

        def _record(s: Session) -> FinishOutcome:
            record_steps(s, lease, list(enumerate(run.losses, 1)))
            return finish_evaluation(s, lease, fitness=run.fitness, metrics=metrics,
                                     seconds=run.seconds)

        run_in_transaction(sessions, _record)
    finally:
        keeper.close()
        run_in_transaction(sessions, stop_worker, worker_id)
    return RetrainOutcome(lease.evaluation_id, candidate_id, run.fitness, metrics,
                          run.iterations, run.seconds, settings.to_json(), path, seed)


# --- baselines ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaselineLoss:
    name: str
    formula: str
    source: str  # "search" (the discovered loss), "baseline" or "paper Table 9"
    candidate_id: int | None = None


def baseline_losses(task: str, metric: str) -> tuple[list[BaselineLoss], list[str]]:
    """Cross-entropy and the paper's Table 9 loss for ``metric`` (when the catalogue has a valid
    one), and notes on what was left out."""
    from alz_core.graph.catalogue import entries
    from alz_core.graph.validity import validity_problem

    losses: list[BaselineLoss] = []
    notes: list[str] = []
    for e in entries(task=task, source="baseline"):
        if e.name == "cross_entropy":
            losses.append(BaselineLoss("cross-entropy", e.graph.text, e.source))
    for e in entries(task=task, source="paper Table 9"):
        if e.metric != metric:
            continue
        problem = validity_problem(e.graph, e.kind)
        if problem is not None:
            notes.append(f"paper Table 9 loss {e.name} left out: {e.note or problem.value}")
            continue
        losses.append(BaselineLoss(f"Table 9 ({e.name})", e.graph.text, e.source))
    if not any(b.source == "paper Table 9" for b in losses) and not notes:
        notes.append(f"the catalogue has no paper Table 9 loss for {task} / {metric}")
    return losses, notes


def _spread(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max())}


def run_baselines(sessions: sessionmaker[Session], candidate_id: int, *, seeds: list[int],
                  config: str | None = None, max_iters: int | None = None,
                  use_tuned: bool = False, data_root: str | None = None,
                  data_dir: Path | None = None, torch_threads: int | None = None,
                  cfg_options: Mapping[str, Any] | None = None, launch: Any = None,
                  on_run: Callable[[str, int], None] | None = None,
                  on_iter: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Re-train the candidate beside cross-entropy and the paper's Table 9 loss for the search's
    metric, with the same config, schedule and seeds; return the comparison (JSON-ready).

    The candidate's runs are stored as ``retrain`` evaluations; every loss is trained with the
    config's own settings (or, with ``use_tuned``, all of them with the candidate's tuned
    settings), so only the loss differs. ``on_run(name, seed)`` is called before each run.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise InvalidInput(f"seeds={seeds!r} is invalid: expected distinct integers")

    def _read(s: Session) -> tuple[Any, SearchInfo, dict[str, Any] | None]:
        cand = get_candidate(s, candidate_id)
        return cand, get_search(s, cand.search_id), tuned_settings_of(s, candidate_id)

    cand, info, tuned = run_in_transaction(sessions, _read)
    from alz_core.tasks.registry import get_task

    if len(get_task(info.task).branches) != 1:
        raise InvalidInput(f"task {info.task!r} has several branches: baselines are defined "
                           f"for single-branch tasks")
    settings = TrainingSettings.from_json(tuned) if (use_tuned and tuned) else TrainingSettings()
    losses, notes = baseline_losses(info.task, info.metric)
    task, path = build_training_task(info, config=config, max_iters=max_iters,
                                     data_root=data_root, data_dir=data_dir,
                                     torch_threads=torch_threads, cfg_options=cfg_options)
    rows: list[dict[str, Any]] = []
    found = BaselineLoss(f"discovered (candidate {candidate_id})", cand.formula, "search",
                         candidate_id)
    branch = next(iter(get_task(info.task).branches))
    for loss in [found, *losses]:
        runs = []
        for seed in seeds:
            if on_run is not None:
                on_run(loss.name, seed)
            if loss.candidate_id is not None:
                out = retrain_candidate(sessions, candidate_id, config=config,
                                        max_iters=max_iters, seed=seed, settings=settings,
                                        data_root=data_root, data_dir=data_dir,
                                        torch_threads=torch_threads, cfg_options=cfg_options,
                                        on_iter=on_iter, launch=launch)
                runs.append({"seed": seed, "fitness": out.fitness,
                             "metrics": {k: v for k, v in out.metrics.items()
                                         if isinstance(v, float)},
                             "evaluation_id": out.evaluation_id,
                             "seconds": round(out.seconds, 2)})
            else:
                from alz_core.graph.loss_graph import LossGraph

                graph = LossGraph.parse(loss.formula)
                if launch is None:
                    run = train_once(task, Candidate.of(graph, branch=branch), info.metric,
                                     seed=seed, settings=settings, on_iter=on_iter)
                else:
                    from .distributed import train_distributed

                    run = train_distributed(
                        info, Candidate.of(graph, branch=branch), launch=launch, seed=seed,
                        settings=settings, val_interval=None, config=config,
                        max_iters=max_iters, data_root=data_root, data_dir=data_dir,
                        cfg_options=cfg_options, torch_threads=torch_threads, on_iter=on_iter)
                runs.append({"seed": seed, "fitness": run.fitness, "metrics": run.metrics,
                             "seconds": round(run.seconds, 2)})
        values = [r["fitness"] for r in runs if r["fitness"] is not None]
        rows.append({"name": loss.name, "formula": loss.formula, "source": loss.source,
                     "candidate_id": loss.candidate_id, "runs": runs,
                     "diverged": sum(r["fitness"] is None for r in runs), **_spread(values)})
    return {"search_id": info.id, "search_name": info.name, "task": info.task,
            "metric": info.metric, "candidate_id": candidate_id, "config": path,
            "cfg_options": dict(cfg_options or {}),
            "launch": None if launch is None else launch.to_json(),
            "max_iters": max_iters, "seeds": list(seeds), "settings": settings.to_json(),
            "rows": rows, "notes": notes}


__all__ = ["BaselineLoss", "RetrainOutcome", "baseline_losses", "retrain_candidate",
           "run_baselines", "set_tuned_settings"]
