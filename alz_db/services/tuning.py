"""Tuning a candidate's re-training settings with Optuna (``alz tune``), in the same database.

The study is an Optuna study in Optuna's own tables (:class:`optuna.storages.RDBStorage`) in the
PostgreSQL schema ``optuna`` of the project's database (created by migration 0004; Optuna and
this project both keep an Alembic ``alembic_version`` table, so they must not share a schema).
Our table ``tuning_study`` links a candidate to its study;
:func:`alz_db.repo.studies.trials_for_candidate` reads the trials back for the web app with
plain SQL.

Each trial trains the candidate on the search's **proxy task** with
:class:`~alz_db.services.training.TrainingSettings` drawn by a TPE sampler (learning-rate
multiplier, loss-weight multiplier, warm-up fraction; ``constant_liar`` so concurrent workers spread
out), validates every ``report_every`` iterations through an mmengine hook, reports the target
metric as the intermediate value and stops when the pruner says so (median pruner by default).
Diverged trainings score 0 (the metric's worst value) with the user attribute ``diverged``.

Several workers share the study through the database: :func:`tune_candidate` starts local
worker processes, and the same command on other nodes joins the same study (``load_if_exists``).
The trial budget is for the whole study: a worker starts no trial once the study holds that
many. Optuna's heartbeats (``heartbeat_interval``) fail the trials of a worker that died, so no
trial stays RUNNING forever. At the end (of every worker, and of the command) the best
completed trial's settings are written back to ``candidate.tuned_settings``, which
``alz retrain`` uses.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import InvalidInput
from ..records import StudyInfo, TuneConfig
from ..repo.candidates import get_candidate
from ..repo.searches import get_search
from ..repo.studies import register_study, study_info, trial_counts
from ..store.engine import make_engine, make_session_factory, normalize_url
from ..store.models import TuningStudy
from ..store.retry import run_in_transaction
from ..store.roles import OPTUNA_SCHEMA
from .retrain import set_tuned_settings
from .training import TrainingSettings, build_training_task, train_once

log = logging.getLogger(__name__)

# --- Optuna's storage ----------------------------------------------------------------------------
def optuna_storage(url: str, *, heartbeat_seconds: int | None = 30) -> Any:
    """An Optuna ``RDBStorage`` on the project database, in schema ``optuna``.

    A small pool per process (as the store's own engines); ``heartbeat_seconds`` enables
    Optuna's trial heartbeats: a trial whose worker stopped beating for ``2 x`` that long is
    failed by the next worker (and retried once), instead of staying RUNNING.
    """
    import optuna

    plain = normalize_url(url).render_as_string(hide_password=False)
    kwargs: dict[str, Any] = {
        "pool_size": 1, "max_overflow": 2, "pool_pre_ping": True,
        # Optuna's tables (and its alembic_version) live in their own schema
        "connect_args": {"options": f"-c search_path={OPTUNA_SCHEMA}",
                         "application_name": "alz-tune"},
    }
    extra: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats and their callbacks are "experimental"
        if heartbeat_seconds:
            retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            extra["heartbeat_interval"] = int(heartbeat_seconds)
            extra["grace_period"] = int(2 * heartbeat_seconds)
            if retry is not None:
                extra["heartbeat_stale_trial_callback"] = retry(max_retry=1)
            else:  # older Optuna
                extra["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(
                    max_retry=1)
        return optuna.storages.RDBStorage(plain, engine_kwargs=kwargs, **extra)


def _pruner(config: TuneConfig) -> Any:
    import optuna

    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.prune_startup,
                                           n_warmup_steps=0, interval_steps=1)
    if config.pruner == "threshold":
        return optuna.pruners.ThresholdPruner(lower=config.prune_below)
    return optuna.pruners.NopPruner()


# --- writing the best settings back --------------------------------------------------------------
def write_back_best(sessions: sessionmaker[Session], url: str, candidate_id: int,
                    study_name: str) -> dict[str, Any] | None:
    """Store the best completed trial's settings on the candidate (``tuned_settings``) and on
    the ``tuning_study`` row; return them (``None``: no completed trial yet). Idempotent."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna_storage(url, heartbeat_seconds=None)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    finished = [t for t in trials if t.state.is_finished()]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                and t.value is not None and math.isfinite(t.value)]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    settings = None
    if best is not None:
        settings = {**TrainingSettings(**{k: float(best.params[k]) for k in
                                          ("lr_scale", "loss_weight", "warmup_ratio")
                                          if k in best.params}).to_json(),
                    "study": study_name, "trial": best.number, "value": float(best.value),
                    "trials_finished": len(finished)}

    def _write(s: Session) -> None:
        s.execute(update(TuningStudy).where(TuningStudy.study_name == study_name).values(
            trials_finished=len(finished), updated_at=func.now(),
            best_trial=None if best is None else best.number,
            best_value=None if best is None else float(best.value),
            best_params=None if best is None else dict(best.params))
            .execution_options(synchronize_session=False))
        if settings is not None:
            set_tuned_settings(s, candidate_id, settings)

    run_in_transaction(sessions, _write)
    return settings


# --- one worker -----------------------------------------------------------------------------------
@dataclass
class WorkerReport:
    """What one tuning worker did."""

    rank: int
    trials: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def run_tuning_worker(url: str, candidate_id: int, study_name: str, config: TuneConfig, *,
                      rank: int = 0, data_dir: Path | None = None,
                      torch_threads: int | None = None,
                      on_step: Callable[[int, int], None] | None = None) -> WorkerReport:
    """Run trials of the study until it holds ``config.trials`` trials; see the module doc.

    ``rank`` seeds this worker's sampler (``config.seed + rank``), so concurrent workers draw
    different settings. ``on_step(step, total)`` is called after every training iteration.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if torch_threads is not None:
        import torch

        torch.set_num_threads(int(torch_threads))
    engine = make_engine(url, application_name="alz-tune")
    sessions = make_session_factory(engine)
    report = WorkerReport(rank)
    storage = None
    try:
        def _read(s: Session) -> tuple[Any, Any]:
            cand = get_candidate(s, candidate_id)
            return cand, get_search(s, cand.search_id)

        cand, info = run_in_transaction(sessions, _read)
        proxy_iters = config.proxy_iters or info.extra.get("max_iters")
        task, _ = build_training_task(info, config=config.config,
                                      cfg_options=config.cfg_options,
                                      max_iters=proxy_iters, data_dir=data_dir,
                                      torch_threads=torch_threads, default="search")
        storage = optuna_storage(url)
        sampler = optuna.samplers.TPESampler(seed=config.seed + rank, constant_liar=True,
                                             n_startup_trials=max(2, min(5, config.trials // 3)))
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                                  pruner=_pruner(config))
        worker = f"{socket.gethostname()}:{os.getpid()}"
        metric = info.metric

        def objective(trial: Any) -> float:
            settings = TrainingSettings(
                lr_scale=trial.suggest_float("lr_scale", *config.lr_scale, log=True),
                loss_weight=trial.suggest_float("loss_weight", *config.loss_weight, log=True),
                warmup_ratio=trial.suggest_float("warmup_ratio", *config.warmup_ratio))
            trial.set_user_attr("worker", worker)
            report.trials += 1

            def on_val(step: int, metrics: dict[str, float]) -> None:
                value = metrics.get(metric)
                if value is None or not math.isfinite(value):
                    return
                trial.report(float(value), step)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at", step)
                    raise optuna.TrialPruned(f"{metric} {value:.4f} at iteration {step}")

            run = train_once(task, cand.candidate, metric, seed=info.seed, settings=settings,
                             val_interval=config.report_every, on_val=on_val,
                             on_iter=on_step)
            trial.set_user_attr("iterations", run.iterations)
            trial.set_user_attr("seconds", round(run.seconds, 2))
            if run.fitness is None:
                trial.set_user_attr("diverged", True)
                return 0.0
            trial.set_user_attr("metrics", {k: float(v) for k, v in run.metrics.items()})
            return float(run.fitness)

        def enough(study: Any, trial: Any) -> None:
            if len(study.get_trials(deepcopy=False)) >= config.trials:
                study.stop()

        def count(study: Any, trial: Any) -> None:
            state = trial.state
            if state == optuna.trial.TrialState.COMPLETE:
                report.complete += 1
            elif state == optuna.trial.TrialState.PRUNED:
                report.pruned += 1
            elif state == optuna.trial.TrialState.FAIL:
                report.failed += 1

        if len(study.get_trials(deepcopy=False)) < config.trials:
            # catch=(): an exception in a trial (a bad config) stops this worker with the error
            study.optimize(objective, n_trials=config.trials, callbacks=[count, enough],
                           gc_after_trial=True)
        write_back_best(sessions, url, candidate_id, study_name)
    finally:
        if storage is not None:
            storage.engine.dispose()
        engine.dispose()
    return report


def _worker_main(url: str, candidate_id: int, study_name: str, config: dict[str, Any],
                 rank: int, data_dir: str | None, torch_threads: int | None,
                 queue: Any) -> None:
    """Entry point of a local worker process: reports ``("done", rank, report)`` or
    ``("error", rank, message)`` on ``queue``."""
    from .children import child_setup

    child_setup()
    try:
        rep = run_tuning_worker(url, candidate_id, study_name, TuneConfig.from_json(config),
                                rank=rank, data_dir=Path(data_dir) if data_dir else None,
                                torch_threads=torch_threads)
        queue.put(("done", rank, asdict(rep)))
    except KeyboardInterrupt:
        queue.put(("error", rank, "interrupted"))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        queue.put(("error", rank, f"{type(exc).__name__}: {exc}"))


@dataclass(frozen=True)
class TuneOutcome:
    """The study after :func:`tune_candidate`."""

    study: StudyInfo
    counts: dict[str, int]
    best: dict[str, Any] | None
    workers: list[dict[str, Any]]
    errors: list[str]


def tune_candidate(url: str, candidate_id: int, config: TuneConfig, *, workers: int = 1,
                   study_name: str | None = None, data_dir: Path | None = None,
                   torch_threads: int | None = None,
                   on_poll: Callable[[dict[str, int], float | None], None] | None = None,
                   poll_seconds: float = 1.0, gpus: list[int] | None = None) -> TuneOutcome:
    """Tune a candidate with ``workers`` local processes sharing the study through the
    database (``workers=0``: none, just register the study and write back the best so far),
    calling ``on_poll(counts by state, best value)`` about every ``poll_seconds``. ``gpus``:
    one process per listed GPU (``CUDA_VISIBLE_DEVICES`` of its own), ``workers`` ignored: a
    trial is a proxy-length training, so the GPUs run trials side by side rather than one
    trial across them.

    Raises ``NotFound`` / ``InvalidInput`` before any process starts for an unknown candidate
    or bad values; a worker that fails is reported in ``errors``.
    """
    import multiprocessing as mp

    import optuna

    if not isinstance(workers, int) or workers < 0:
        raise InvalidInput(f"workers={workers!r} is invalid: expected an integer >= 0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine = make_engine(url, application_name="alz-tune")
    sessions = make_session_factory(engine)
    try:
        info = run_in_transaction(sessions, register_study, candidate_id, config, study_name)
        storage = optuna_storage(url, heartbeat_seconds=None)
        try:
            optuna.create_study(study_name=info.study_name, storage=storage,
                                direction="maximize", load_if_exists=True)
        finally:
            storage.engine.dispose()
        ctx = mp.get_context("spawn")  # fresh interpreters: no inherited pools or threads
        queue = ctx.Queue()
        devices = [str(g) for g in gpus] if gpus else [None] * workers
        procs = [ctx.Process(target=_worker_main, daemon=False, name=f"alz-tune-{rank}",
                             args=(url, candidate_id, info.study_name, config.to_json(), rank,
                                   None if data_dir is None else str(data_dir), torch_threads,
                                   queue))
                 for rank in range(len(devices))]
        engine.dispose()  # nothing pooled while the children start
        before = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            for p, device in zip(procs, devices):
                if device is not None:  # the spawned interpreter sees only its GPU
                    os.environ["CUDA_VISIBLE_DEVICES"] = device
                p.start()
        finally:
            if gpus:
                if before is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = before
        reports: list[dict[str, Any]] = []
        errors: list[str] = []
        try:
            while any(p.is_alive() for p in procs) or not queue.empty():
                while not queue.empty():
                    kind, rank, payload = queue.get()
                    if kind == "done":
                        reports.append(payload)
                    else:
                        errors.append(f"worker {rank}: {payload}")
                if on_poll is not None:
                    with sessions() as s:
                        counts = trial_counts(s, info.study_name)
                        best = s.execute(text(
                            "SELECT max(v.value) FROM optuna.trial_values v "
                            "JOIN optuna.trials t ON t.trial_id = v.trial_id "
                            "JOIN optuna.studies st ON st.study_id = t.study_id "
                            "WHERE st.study_name = :n AND t.state = 'COMPLETE'"),
                            {"n": info.study_name}).scalar_one_or_none() if counts else None
                    on_poll(counts, best)
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(30)
            raise
        for p in procs:
            p.join()
            if p.exitcode not in (0, None) and not any(e.startswith(f"worker {p.name[9:]}")
                                                       for e in errors):
                errors.append(f"worker {p.name[9:]}: exited with status {p.exitcode}")
        best = write_back_best(sessions, url, candidate_id, info.study_name)
        with sessions() as s:
            counts = trial_counts(s, info.study_name)
            row = s.execute(select(TuningStudy).where(
                TuningStudy.study_name == info.study_name)).scalar_one()
            info = study_info(row)
        return TuneOutcome(info, counts, best, reports, errors)
    finally:
        engine.dispose()


__all__ = ["TuneOutcome", "WorkerReport", "optuna_storage", "run_tuning_worker",
           "tune_candidate", "write_back_best"]
