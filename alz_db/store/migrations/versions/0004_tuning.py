"""Tuning and studies: tuned re-training settings, Optuna studies, ablation/baseline results.

Revision ID: 0004_tuning
Revises: 0003_leaderboard
Create Date: 2026-11-29

* ``candidate.tuned_settings`` (JSONB, NULL until ``alz tune`` wrote the best trial's settings
  back): ``{"lr", "loss_weight", "warmup_ratio", "study", "value", ...}``; ``alz retrain`` uses
  them unless told not to.
* ``tuning_study``: one row per Optuna study of a candidate (``alz tune``): its study name in
  the Optuna tables, settings, and the best trial at the last write-back.
* ``experiment``: results of whole studies that are not one candidate's: the search-efficiency
  ablation (``kind = 'ablation'``) and baseline re-trainings (``kind = 'baselines'``), the result
  as JSONB (``AblationResult.to_json()`` / the baselines table).
* schema ``optuna``: Optuna's RDBStorage creates its own tables (``studies``, ``trials``, ...,
  and its own ``alembic_version``) on first use; they live in this schema so they never meet
  ours (both use Alembic's default version table name).

Downgrade drops the two tables, the column and the ``optuna`` schema with every study in it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_tuning"
down_revision: str | None = "0003_leaderboard"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXPERIMENT_KIND = ("ablation", "baselines")


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS optuna")
    op.add_column("candidate", sa.Column("tuned_settings", postgresql.JSONB(), nullable=True))
    op.create_table(
        "tuning_study",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("candidate_id", sa.BigInteger(),
                  sa.ForeignKey("candidate.id", ondelete="CASCADE",
                                name="fk_tuning_study_candidate_id_candidate"), nullable=False),
        sa.Column("search_id", sa.BigInteger(),
                  sa.ForeignKey("search.id", ondelete="CASCADE",
                                name="fk_tuning_study_search_id_search"), nullable=False),
        sa.Column("study_name", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("config", postgresql.JSONB(), nullable=False),
        sa.Column("trials_finished", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("best_trial", sa.Integer(), nullable=True),
        sa.Column("best_value", sa.Double(), nullable=True),
        sa.Column("best_params", postgresql.JSONB(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tuning_study"),
        sa.UniqueConstraint("study_name", name="uq_tuning_study_study_name"),
        sa.CheckConstraint("best_value NOT IN ('NaN', 'Infinity', '-Infinity')",
                           name="ck_tuning_study_best_value_finite"),
        sa.CheckConstraint("trials_finished >= 0", name="ck_tuning_study_trials_finished"),
    )
    op.create_index("ix_tuning_study_candidate_id", "tuning_study", ["candidate_id"])
    op.create_table(
        "experiment",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("search_id", sa.BigInteger(),
                  sa.ForeignKey("search.id", ondelete="SET NULL",
                                name="fk_experiment_search_id_search"), nullable=True),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("config", postgresql.JSONB(), nullable=False),
        sa.Column("result", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiment"),
        sa.CheckConstraint("kind IN ('ablation', 'baselines')", name="ck_experiment_kind"),
    )
    op.create_index("ix_experiment_kind_task_metric", "experiment", ["kind", "task", "metric"])
    op.create_index("ix_experiment_search_id", "experiment", ["search_id"])


def downgrade() -> None:
    op.drop_table("experiment")
    op.drop_table("tuning_study")
    op.drop_column("candidate", "tuned_settings")
    op.execute("DROP SCHEMA IF EXISTS optuna CASCADE")
