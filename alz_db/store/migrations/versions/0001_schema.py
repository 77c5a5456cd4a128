"""The schema: searches, candidates, rejections, evaluations (the lease queue), workers.

Revision ID: 0001_schema
Revises:
Create Date: 2025-11-24

Written from ``alz_db/store/models.py`` (then compared with it by ``tests/db/store/test_migrations.py``).
The operational indexes live here: the unique representative per fingerprint class, the
population read, the claim queue and the lease reaper. Analysis indexes and the read-only views
are revision 0002. Enumerated columns are VARCHAR + CHECK, so a new state is a small migration.
Downgrade drops everything (the data with it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_schema"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the enumerations as they were at this revision (never import the current Python enums here)
SEARCH_STATUS = ("created", "running", "stopped", "finished", "failed")
CANDIDATE_STATUS = ("pending", "evaluated", "equivalent", "failed")
FITNESS_KIND = ("finite", "diverged")
MUTATION = ("insert", "delete", "replace", "reinit", "init")
VERDICT = ("accept", "reject")
REJECT_REASON = ("low_score", "non_finite", "invalid_graph", "no_target_dependence",
                 "no_prediction_dependence")
STOP = ("completed", "non_finite", "zero_gradient", "frozen", "not_run")
EVAL_KIND = ("proxy", "retrain")
EVAL_STATUS = ("queued", "running", "done", "failed", "stale")
ATTEMPT_OUTCOME = ("done", "error", "lease_expired")
WORKER_STATUS = ("running", "stopped", "lost")

FITNESS_PAIR = ("(fitness IS NULL AND fitness_kind IS DISTINCT FROM 'finite') OR "
                "(fitness IS NOT NULL AND fitness_kind = 'finite' AND "
                "fitness NOT IN ('NaN', 'Infinity', '-Infinity'))")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _ck(table: str, name: str, sql: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(sql, name=f"ck_{table}_{name}")


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True)


def _ts(name: str, default: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=not default,
                     server_default=sa.func.now() if default else None)


def upgrade() -> None:
    op.create_table(
        "search",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("config", postgresql.JSONB(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="created"),
        sa.Column("evaluations_reserved", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("evaluations_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("candidates", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("rejection_checks", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("rejections", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("best_fitness", sa.Double(), nullable=True),
        sa.Column("best_candidate_id", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at", default=True),
        _ts("started_at"),
        _ts("finished_at"),
        sa.PrimaryKeyConstraint("id", name="pk_search"),
        sa.UniqueConstraint("name", name="uq_search_name"),
        _ck("search", "status", _in("status", SEARCH_STATUS)),
        _ck("search", "budget", "budget >= 1"),
        _ck("search", "reserved_within_budget",
            "evaluations_reserved >= 0 AND evaluations_reserved <= budget"),
        _ck("search", "done_within_reserved",
            "evaluations_done >= 0 AND evaluations_done <= evaluations_reserved"),
        _ck("search", "best_fitness_finite",
            "best_fitness NOT IN ('NaN', 'Infinity', '-Infinity')"),
    )
    op.create_table(
        "worker",
        _id(),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("search_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="running"),
        _ts("started_at", default=True),
        _ts("heartbeat_at", default=True),
        _ts("stopped_at"),
        sa.PrimaryKeyConstraint("id", name="pk_worker"),
        sa.ForeignKeyConstraint(["search_id"], ["search.id"], ondelete="SET NULL",
                                name="fk_worker_search_id_search"),
        _ck("worker", "status", _in("status", WORKER_STATUS)),
    )
    op.create_table(
        "candidate",
        _id(),
        sa.Column("search_id", sa.BigInteger(), nullable=False),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("mutation", sa.String(16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("graphs", postgresql.JSONB(), nullable=False),
        sa.Column("branch_order", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("formula", sa.Text(), nullable=False),
        sa.Column("structural_hash", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("equivalent_to_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fitness", sa.Double(), nullable=True),
        sa.Column("fitness_kind", sa.String(16), nullable=True),
        _ts("evaluated_at"),
        _ts("created_at", default=True),
        sa.Column("worker_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_candidate"),
        sa.ForeignKeyConstraint(["search_id"], ["search.id"], ondelete="CASCADE",
                                name="fk_candidate_search_id_search"),
        sa.ForeignKeyConstraint(["parent_id"], ["candidate.id"],
                                name="fk_candidate_parent_id_candidate"),
        sa.ForeignKeyConstraint(["equivalent_to_id"], ["candidate.id"],
                                name="fk_candidate_equivalent_to_id_candidate"),
        sa.ForeignKeyConstraint(["worker_id"], ["worker.id"], ondelete="SET NULL",
                                name="fk_candidate_worker_id_worker"),
        _ck("candidate", "status", _in("status", CANDIDATE_STATUS)),
        _ck("candidate", "mutation", _in("mutation", MUTATION)),
        _ck("candidate", "fitness_kind", _in("fitness_kind", FITNESS_KIND)),
        _ck("candidate", "fitness", FITNESS_PAIR),
        _ck("candidate", "generation", "generation >= 0"),
        _ck("candidate", "equivalent_link",
            "(status = 'equivalent') = (equivalent_to_id IS NOT NULL)"),
    )
    # created after candidate: search and candidate refer to each other
    op.create_foreign_key("fk_search_best_candidate_id_candidate", "search", "candidate",
                          ["best_candidate_id"], ["id"], ondelete="SET NULL")
    op.create_index("uq_candidate_search_id_fingerprint", "candidate",
                    ["search_id", "fingerprint"], unique=True,
                    postgresql_where=sa.text("equivalent_to_id IS NULL AND "
                                             "fingerprint IS NOT NULL"))
    op.create_index("ix_candidate_population", "candidate",
                    ["search_id", sa.text("evaluated_at DESC"), sa.text("id DESC")],
                    postgresql_where=sa.text("fitness_kind IS NOT NULL"))
    op.create_index("ix_candidate_search_id_id", "candidate", ["search_id", "id"])
    op.create_index("ix_candidate_equivalent_to_id", "candidate", ["equivalent_to_id"],
                    postgresql_where=sa.text("equivalent_to_id IS NOT NULL"))

    op.create_table(
        "rejection",
        _id(),
        sa.Column("search_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_id", sa.BigInteger(), nullable=True),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("branch", sa.String(32), nullable=False),
        sa.Column("formula", sa.Text(), nullable=False),
        sa.Column("structural_hash", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("metric_before", sa.Double(), nullable=True),
        sa.Column("metric_after", sa.Double(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("stop", sa.String(16), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("worker_id", sa.BigInteger(), nullable=True),
        _ts("created_at", default=True),
        sa.PrimaryKeyConstraint("id", name="pk_rejection"),
        sa.ForeignKeyConstraint(["search_id"], ["search.id"], ondelete="CASCADE",
                                name="fk_rejection_search_id_search"),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidate.id"], ondelete="SET NULL",
                                name="fk_rejection_candidate_id_candidate"),
        sa.ForeignKeyConstraint(["parent_id"], ["candidate.id"], ondelete="SET NULL",
                                name="fk_rejection_parent_id_candidate"),
        sa.ForeignKeyConstraint(["worker_id"], ["worker.id"], ondelete="SET NULL",
                                name="fk_rejection_worker_id_worker"),
        _ck("rejection", "verdict", _in("verdict", VERDICT)),
        _ck("rejection", "reason", _in("reason", REJECT_REASON)),
        _ck("rejection", "stop", _in("stop", STOP)),
        _ck("rejection", "reason_iff_reject", "(verdict = 'accept') = (reason IS NULL)"),
    )
    op.create_index("ix_rejection_search_id_id", "rejection", ["search_id", "id"])
    op.create_index("ix_rejection_candidate_id", "rejection", ["candidate_id"],
                    postgresql_where=sa.text("candidate_id IS NOT NULL"))

    op.create_table(
        "evaluation",
        _id(),
        sa.Column("candidate_id", sa.BigInteger(), nullable=False),
        sa.Column("search_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("params", postgresql.JSONB(), nullable=False,
                  server_default=sa.text("'{}'::jsonb")),
        sa.Column("worker_id", sa.BigInteger(), nullable=True),
        _ts("lease_expires_at"),
        _ts("heartbeat_at"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metrics", postgresql.JSONB(), nullable=True),
        sa.Column("fitness", sa.Double(), nullable=True),
        sa.Column("fitness_kind", sa.String(16), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        _ts("queued_at", default=True),
        _ts("started_at"),
        _ts("finished_at"),
        sa.PrimaryKeyConstraint("id", name="pk_evaluation"),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidate.id"], ondelete="CASCADE",
                                name="fk_evaluation_candidate_id_candidate"),
        sa.ForeignKeyConstraint(["search_id"], ["search.id"], ondelete="CASCADE",
                                name="fk_evaluation_search_id_search"),
        sa.ForeignKeyConstraint(["worker_id"], ["worker.id"], ondelete="SET NULL",
                                name="fk_evaluation_worker_id_worker"),
        _ck("evaluation", "kind", _in("kind", EVAL_KIND)),
        _ck("evaluation", "status", _in("status", EVAL_STATUS)),
        _ck("evaluation", "fitness_kind", _in("fitness_kind", FITNESS_KIND)),
        _ck("evaluation", "fitness", FITNESS_PAIR),
        _ck("evaluation", "attempts",
            "max_attempts >= 1 AND attempts >= 0 AND attempts <= max_attempts"),
        _ck("evaluation", "running_has_lease",
            "status <> 'running' OR (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL)"),
    )
    op.create_index("uq_evaluation_candidate_id_proxy", "evaluation", ["candidate_id"],
                    unique=True, postgresql_where=sa.text("kind = 'proxy'"))
    op.create_index("ix_evaluation_candidate_id", "evaluation", ["candidate_id"])
    op.create_index("ix_evaluation_claimable", "evaluation", ["search_id", "id"],
                    postgresql_where=sa.text("status IN ('queued', 'stale')"))
    op.create_index("ix_evaluation_lease", "evaluation", ["lease_expires_at"],
                    postgresql_where=sa.text("status = 'running'"))

    op.create_table(
        "evaluation_attempt",
        sa.Column("evaluation_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.BigInteger(), nullable=True),
        _ts("started_at", default=True),
        _ts("ended_at"),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("evaluation_id", "attempt", name="pk_evaluation_attempt"),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"], ondelete="CASCADE",
                                name="fk_evaluation_attempt_evaluation_id_evaluation"),
        sa.ForeignKeyConstraint(["worker_id"], ["worker.id"], ondelete="SET NULL",
                                name="fk_evaluation_attempt_worker_id_worker"),
        _ck("evaluation_attempt", "outcome", _in("outcome", ATTEMPT_OUTCOME)),
        _ck("evaluation_attempt", "attempt", "attempt >= 1"),
    )
    op.create_table(
        "evaluation_step",
        sa.Column("evaluation_id", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("evaluation_id", "step", name="pk_evaluation_step"),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluation.id"], ondelete="CASCADE",
                                name="fk_evaluation_step_evaluation_id_evaluation"),
        _ck("evaluation_step", "loss_finite", "loss NOT IN ('NaN', 'Infinity', '-Infinity')"),
    )


def downgrade() -> None:
    for table in ("evaluation_step", "evaluation_attempt", "evaluation", "rejection"):
        op.drop_table(table)
    op.drop_constraint("fk_search_best_candidate_id_candidate", "search", type_="foreignkey")
    for table in ("candidate", "worker", "search"):
        op.drop_table(table)
