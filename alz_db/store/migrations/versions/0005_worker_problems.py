"""Worker problems: a search one worker cannot serve on its node, kept apart from the search.

Revision ID: 0005_worker_problems
Revises: 0004_tuning
Create Date: 2026-12-01

``worker_problem``: one row per (search, worker) whose node cannot work on that search (the
search's config file is missing or differs there, its data root or search split is missing
there). The worker skips the search, the other workers go on; ``alz search status`` shows the
rows. ``count`` and ``last_at`` are updated each time the worker meets the problem again;
``resolved_at`` is set when the worker later builds the search's task after all.

Downgrade drops the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_worker_problems"
down_revision: str | None = "0004_tuning"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_problem",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("search_id", sa.BigInteger(),
                  sa.ForeignKey("search.id", ondelete="CASCADE",
                                name="fk_worker_problem_search_id_search"), nullable=False),
        sa.Column("worker_id", sa.BigInteger(),
                  sa.ForeignKey("worker.id", ondelete="CASCADE",
                                name="fk_worker_problem_worker_id_worker"), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_worker_problem"),
        sa.UniqueConstraint("search_id", "worker_id", name="uq_worker_problem_search_id_worker_id"),
    )


def downgrade() -> None:
    op.drop_table("worker_problem")
