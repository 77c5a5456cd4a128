"""The PostgreSQL schema of AutoLoss-Zero, as SQLAlchemy 2.0 typed models.

The database is created only by the Alembic migrations in ``migrations/``; these classes
describe the same tables so that repositories can build typed statements, and a test checks
that the models and the migrated database agree. Repositories never hand these rows out: they
return ``alz_core`` dataclasses or the frozen records of :mod:`alz_db.records`.

Tables (one row per ...):

``search``
    search: task, target metric, the full validated config (JSONB), seed, proxy budget,
    status, counters kept up to date by the repositories (so progress reads are O(1) on a
    search of a million candidates), the best fitness so far and timestamps.
``candidate``
    loss candidate that passed the rejection protocol: one graph per branch (JSONB,
    ``Candidate.to_json()``; ``branch_order`` keeps the task's branch order, which JSONB object
    keys do not), canonical formula text, structural hash, parent and mutation kind (lineage),
    generation, gradient fingerprint, ``equivalent_to`` (the evaluated representative of its
    fingerprint class), status, fitness (NULL plus ``fitness_kind``).
``rejection``
    run of the loss-rejection protocol on one branch graph, accepted or not. Graphs that were
    rejected never become candidates, so ``candidate_id`` is NULL for them.
``rejection_count``, ``rejection_second``
    revision 0013: per search, the rejection rows by verdict and reason (recorded, still
    stored) and by second (the efficiency curve), kept by triggers on ``rejection``, so the
    report and the curve stay exact when rows are pruned (``alz db prune-rejections``).
``evaluation``
    proxy or re-training run of a candidate: the work queue. ``status``, the owning worker
    and its lease (``lease_expires_at``, database clock), attempts, error, metrics, fitness.
``evaluation_attempt``
    claim of an evaluation (the retry history; never deleted when work is re-queued).
``evaluation_step``
    training iteration of an evaluation (the loss curve; NULL loss = non-finite).
``worker``
    worker process: host, pid, device, heartbeat.
``request``
    keyed unit of work that committed (revision 0009): its key, kind and result, so that a
    retry after a lost commit reply returns the first result instead of writing twice.
``worker_problem``
    search that one worker cannot serve on its node (config or data missing or different
    there): the worker skips it, the search goes on elsewhere.

All timestamps are ``timestamptz`` set from the database clock (``now()``), never from a
worker's clock. Enumerated columns are VARCHAR with CHECK constraints (not PostgreSQL enum
types) so that adding a state is a plain migration and analysts compare with plain strings.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from alz_core.evolution.mutation import MutationKind
from alz_core.rejection.result import RejectReason, StopReason, Verdict

from ..enums import (
    AttemptOutcome,
    CandidateStatus,
    EvalKind,
    EvalStatus,
    FitnessKind,
    SearchStatus,
    WorkerStatus,
)
from ..enums import values as enum_values

#: Constraint names are deterministic, so migrations can refer to (and drop) them by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[enum.Enum], length: int) -> Enum:
    """A VARCHAR column read and written as ``cls`` (the CHECK constraint is declared apart)."""
    return Enum(cls, native_enum=False, create_constraint=False, length=length,
                values_callable=enum_values, validate_strings=True)


def _in(column: str, cls: type[enum.Enum]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in enum_values(cls))})"


def _fitness_pair(prefix: str = "") -> str:
    """fitness is a finite number exactly when fitness_kind = 'finite' (never NaN/inf)."""
    return (f"({prefix}fitness IS NULL AND {prefix}fitness_kind IS DISTINCT FROM 'finite') OR "
            f"({prefix}fitness IS NOT NULL AND {prefix}fitness_kind = 'finite' AND "
            f"{prefix}fitness NOT IN ('NaN', 'Infinity', '-Infinity'))")


TIMESTAMP = DateTime(timezone=True)


class Search(Base):
    __tablename__ = "search"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    seed: Mapped[int] = mapped_column(BigInteger)
    budget: Mapped[int] = mapped_column(Integer)
    status: Mapped[SearchStatus] = mapped_column(_enum(SearchStatus, 16),
                                                 server_default=SearchStatus.CREATED.value)
    evaluations_reserved: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    evaluations_done: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    candidates: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    rejection_checks: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    rejections: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    best_fitness: Mapped[float | None] = mapped_column(Double)
    best_candidate_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("candidate.id", ondelete="SET NULL", use_alter=True))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    # revision 0010: the last `alz search resume` (the failure streak restarts there)
    resumed_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    # revision 0011: budget units of a full proxy run, and of a new candidate's first rung
    # (a search with rungs counts budget, reserved and done in units; alz_core.evolution.rungs)
    units_per_proxy: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_rung_units: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    finished_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)

    __table_args__ = (
        CheckConstraint(_in("status", SearchStatus), name="status"),
        CheckConstraint("budget >= 1", name="budget"),
        # the database itself refuses a reservation past the budget
        CheckConstraint("evaluations_reserved >= 0 AND evaluations_reserved <= budget",
                        name="reserved_within_budget"),
        CheckConstraint("evaluations_done >= 0 AND evaluations_done <= evaluations_reserved",
                        name="done_within_reserved"),
        CheckConstraint("best_fitness NOT IN ('NaN', 'Infinity', '-Infinity')",
                        name="best_fitness_finite"),
        CheckConstraint("units_per_proxy >= 1 AND first_rung_units >= 1 AND "
                        "first_rung_units <= units_per_proxy", name="units"),
    )


class Worker(Base):
    __tablename__ = "worker"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    # revision 0007: the device as the worker process sees it
    device_name: Mapped[str | None] = mapped_column(String(200))
    device_memory_mb: Mapped[int | None] = mapped_column(BigInteger)
    search_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("search.id", ondelete="SET NULL"))
    status: Mapped[WorkerStatus] = mapped_column(_enum(WorkerStatus, 16),
                                                 server_default=WorkerStatus.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    heartbeat_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    stopped_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)

    __table_args__ = (CheckConstraint(_in("status", WorkerStatus), name="status"),)


class Candidate(Base):
    __tablename__ = "candidate"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    search_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("search.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("candidate.id"))
    mutation: Mapped[MutationKind] = mapped_column(_enum(MutationKind, 16))
    generation: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    graphs: Mapped[dict[str, Any]] = mapped_column(JSONB)
    branch_order: Mapped[list[str]] = mapped_column(ARRAY(Text))
    formula: Mapped[str] = mapped_column(Text)
    structural_hash: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    equivalent_to_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("candidate.id"))
    status: Mapped[CandidateStatus] = mapped_column(_enum(CandidateStatus, 16))
    fitness: Mapped[float | None] = mapped_column(Double)
    fitness_kind: Mapped[FitnessKind | None] = mapped_column(_enum(FitnessKind, 16))
    evaluated_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    worker_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("worker.id", ondelete="SET NULL"))
    # revision 0004 (tuning): the best re-training settings found by `alz tune`
    tuned_settings: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # revision 0006: the mutation kind of every branch ({branch: kind}; NULL before)
    branch_mutations: Mapped[dict[str, str] | None] = mapped_column(JSONB)

    # revision 0011: the highest rung completed (its fitness is the metric there)
    rung: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (
        CheckConstraint(_in("status", CandidateStatus), name="status"),
        CheckConstraint(_in("mutation", MutationKind), name="mutation"),
        CheckConstraint(_in("fitness_kind", FitnessKind), name="fitness_kind"),
        CheckConstraint(_fitness_pair(), name="fitness"),
        CheckConstraint("generation >= 0", name="generation"),
        CheckConstraint("(status = 'equivalent') = (equivalent_to_id IS NOT NULL)",
                        name="equivalent_link"),
        # at most one representative per fingerprint class and search: two workers racing
        # with the same class cannot both queue a proxy run
        # (revision 0006: a failed representative no longer holds its class)
        Index("uq_candidate_search_id_fingerprint", "search_id", "fingerprint", unique=True,
              postgresql_where=text("equivalent_to_id IS NULL AND fingerprint IS NOT NULL "
                                    "AND status <> 'failed'")),
        # the population read: the P most recent candidates whose fitness is known
        Index("ix_candidate_population", "search_id", text("evaluated_at DESC"), text("id DESC"),
              postgresql_where=text("fitness_kind IS NOT NULL")),
        Index("ix_candidate_search_id_id", "search_id", "id"),
        Index("ix_candidate_equivalent_to_id", "equivalent_to_id",
              postgresql_where=text("equivalent_to_id IS NOT NULL")),
        # revision 0002 (analysis): leaderboard, lineage and structure look-ups
        Index("ix_candidate_leaderboard", "search_id", text("fitness DESC NULLS LAST"), "id",
              postgresql_where=text("status = 'evaluated'")),
        Index("ix_candidate_search_id_parent_id", "search_id", "parent_id"),
        # revision 0013: the foreign key check of parent_id when candidates are deleted
        Index("ix_candidate_parent_id", "parent_id",
              postgresql_where=text("parent_id IS NOT NULL")),
        Index("ix_candidate_search_id_structural_hash", "search_id", "structural_hash"),
    )


class Rejection(Base):
    __tablename__ = "rejection"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    search_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("search.id", ondelete="CASCADE"))
    candidate_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("candidate.id", ondelete="SET NULL"))
    parent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("candidate.id", ondelete="SET NULL"))
    branch: Mapped[str] = mapped_column(String(32))
    formula: Mapped[str] = mapped_column(Text)
    structural_hash: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[Verdict] = mapped_column(_enum(Verdict, 8))
    reason: Mapped[RejectReason | None] = mapped_column(_enum(RejectReason, 32))
    metric_before: Mapped[float | None] = mapped_column(Double)
    metric_after: Mapped[float | None] = mapped_column(Double)
    score: Mapped[float | None] = mapped_column(Double)
    iterations: Mapped[int] = mapped_column(Integer)
    stop: Mapped[StopReason] = mapped_column(_enum(StopReason, 16))
    seconds: Mapped[float] = mapped_column(Double)
    worker_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("worker.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())

    __table_args__ = (
        CheckConstraint(_in("verdict", Verdict), name="verdict"),
        CheckConstraint(_in("reason", RejectReason), name="reason"),
        CheckConstraint(_in("stop", StopReason), name="stop"),
        CheckConstraint("(verdict = 'accept') = (reason IS NULL)", name="reason_iff_reject"),
        Index("ix_rejection_search_id_id", "search_id", "id"),
        Index("ix_rejection_candidate_id", "candidate_id",
              postgresql_where=text("candidate_id IS NOT NULL")),
        # revision 0013: the ON DELETE SET NULL of parent_id when candidates are deleted
        Index("ix_rejection_parent_id", "parent_id",
              postgresql_where=text("parent_id IS NOT NULL")),
    )


class RejectionCount(Base):
    """Revision 0013: per search, verdict and reason, the rejection rows ever recorded
    (``checks``, ``seconds``) and still stored (``stored``). Written only by the triggers of
    ``rejection`` (see migrations/versions/0013_rejection_growth.py)."""

    __tablename__ = "rejection_count"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    search_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("search.id", ondelete="CASCADE"))
    verdict: Mapped[Verdict] = mapped_column(_enum(Verdict, 8))
    reason: Mapped[RejectReason | None] = mapped_column(_enum(RejectReason, 32))
    checks: Mapped[int] = mapped_column(BigInteger)
    stored: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("uq_rejection_count_search_id_verdict_reason", "search_id", "verdict",
              text("coalesce(reason, '')"), unique=True),
    )


class RejectionSecond(Base):
    """Revision 0013: per search and second of ``created_at``, the checks recorded and their
    seconds (the efficiency curve); written only by the triggers of ``rejection``."""

    __tablename__ = "rejection_second"

    search_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("search.id", ondelete="CASCADE"),
                                           primary_key=True)
    second: Mapped[datetime] = mapped_column(TIMESTAMP, primary_key=True)
    checks: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Double)


class Evaluation(Base):
    __tablename__ = "evaluation"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    candidate_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("candidate.id", ondelete="CASCADE"))
    search_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("search.id", ondelete="CASCADE"))
    kind: Mapped[EvalKind] = mapped_column(_enum(EvalKind, 16))
    status: Mapped[EvalStatus] = mapped_column(_enum(EvalStatus, 16),
                                               server_default=EvalStatus.QUEUED.value)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    worker_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("worker.id", ondelete="SET NULL"))
    lease_expires_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    heartbeat_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    # revision 0008: claims handed back by a clean stop (they use no attempt)
    releases: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # revision 0011: the rung (0 without rungs) and its cost in budget units
    rung: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    units: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    error: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    fitness: Mapped[float | None] = mapped_column(Double)
    fitness_kind: Mapped[FitnessKind | None] = mapped_column(_enum(FitnessKind, 16))
    seconds: Mapped[float | None] = mapped_column(Double)
    queued_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    finished_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)

    __table_args__ = (
        CheckConstraint(_in("kind", EvalKind), name="kind"),
        CheckConstraint(_in("status", EvalStatus), name="status"),
        CheckConstraint(_in("fitness_kind", FitnessKind), name="fitness_kind"),
        CheckConstraint(_fitness_pair(), name="fitness"),
        CheckConstraint("max_attempts >= 1 AND attempts >= 0 AND releases >= 0 AND "
                        "releases <= attempts AND attempts - releases <= max_attempts",
                        name="attempts"),
        CheckConstraint("status <> 'running' OR (worker_id IS NOT NULL AND "
                        "lease_expires_at IS NOT NULL)", name="running_has_lease"),
        CheckConstraint("rung >= 0 AND units >= 1", name="rung"),
        # one proxy run per candidate and rung, whatever the workers do
        Index("uq_evaluation_candidate_id_proxy", "candidate_id", "rung", unique=True,
              postgresql_where=text("kind = 'proxy'")),
        Index("ix_evaluation_candidate_id", "candidate_id"),
        # the queue and the reaper scan only these small partial indexes
        # revision 0014: in the claim's order (promotions first, then the oldest)
        Index("ix_evaluation_claimable", "search_id", text("rung DESC"), "id",
              postgresql_where=text("status IN ('queued', 'stale')")),
        # revision 0014: "is a proxy run of this search still open" after every result
        Index("ix_evaluation_open_proxy", "search_id",
              postgresql_where=text("kind = 'proxy' AND status IN "
                                    "('queued', 'running', 'stale')")),
        Index("ix_evaluation_lease", "lease_expires_at",
              postgresql_where=text("status = 'running'")),
    )


class EvaluationAttempt(Base):
    __tablename__ = "evaluation_attempt"

    evaluation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("evaluation.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("worker.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    ended_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    outcome: Mapped[AttemptOutcome | None] = mapped_column(_enum(AttemptOutcome, 16))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        PrimaryKeyConstraint("evaluation_id", "attempt"),
        CheckConstraint(_in("outcome", AttemptOutcome), name="outcome"),
        CheckConstraint("attempt >= 1", name="attempt"),
    )


class EvaluationStep(Base):
    __tablename__ = "evaluation_step"

    evaluation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("evaluation.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (
        PrimaryKeyConstraint("evaluation_id", "step"),
        CheckConstraint("loss NOT IN ('NaN', 'Infinity', '-Infinity')", name="loss_finite"),
    )


class TuningStudy(Base):
    """Revision 0004: an Optuna study of a candidate's re-training settings (``alz tune``);
    the trials themselves are in Optuna's tables, schema ``optuna``."""

    __tablename__ = "tuning_study"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    candidate_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("candidate.id", ondelete="CASCADE"))
    search_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("search.id", ondelete="CASCADE"))
    study_name: Mapped[str] = mapped_column(String(200), unique=True)
    metric: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    trials_finished: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    best_trial: Mapped[int | None] = mapped_column(Integer)
    best_value: Mapped[float | None] = mapped_column(Double)
    best_params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())

    __table_args__ = (
        CheckConstraint("best_value NOT IN ('NaN', 'Infinity', '-Infinity')",
                        name="best_value_finite"),
        CheckConstraint("trials_finished >= 0", name="trials_finished"),
        Index("ix_tuning_study_candidate_id", "candidate_id"),
    )


class WorkerProblem(Base):
    """Revision 0005: a search one worker cannot serve on its node (its config differs or is
    missing there, its data is missing there); the worker skips the search, others go on."""

    __tablename__ = "worker_problem"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    search_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("search.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("worker.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(String(255))
    problem: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    last_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)

    __table_args__ = (UniqueConstraint("search_id", "worker_id"),)


class Experiment(Base):
    """Revision 0004: the result of a whole study (``alz ablation``, ``alz baselines``)."""

    __tablename__ = "experiment"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    search_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("search.id", ondelete="SET NULL"))
    task: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())

    __table_args__ = (
        CheckConstraint("kind IN ('ablation', 'baselines', 'noise')", name="kind"),
        Index("ix_experiment_kind_task_metric", "kind", "task", "metric"),
        Index("ix_experiment_search_id", "search_id"),
    )


class Request(Base):
    """Revision 0009: a keyed unit of work that committed (:mod:`alz_db.store.requests`)."""

    __tablename__ = "request"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    result: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.now())

    __table_args__ = (Index("ix_request_created_at", "created_at"),)


def sql_value(member: enum.Enum) -> Any:
    """An enum value as an SQL literal, not a bound parameter.

    Partial indexes (``WHERE status = 'evaluated'``) serve a query only when the planner can
    prove the query's condition implies theirs; with ``status = $1`` a cached generic plan
    cannot, and falls back to a full scan. The values are our own enum constants.
    """
    value = str(member.value)
    assert "'" not in value
    return literal_column(f"'{value}'")
