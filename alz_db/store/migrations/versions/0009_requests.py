"""Units of work that are safe to run twice: the request ledger.

Revision ID: 0009_requests
Revises: 0008_releases
Create Date: 2026-12-01

``request``: one row per keyed unit of work that committed (``key`` chosen by the caller once
per logical operation and passed unchanged to every retry; ``kind`` the unit; ``result`` what
it returned, JSON). A unit inserts its key in the same transaction as its writes, so when the
reply of a commit is lost and the unit is run again, the second run finds the key and returns
the first run's result instead of writing again (:mod:`alz_db.store.requests`). Rows older than a
week are deleted by the workers' reaper.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_requests"
down_revision: str | None = "0008_releases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("result", postgresql.JSONB(), nullable=True),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_index("ix_request_created_at", "request", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_request_created_at", table_name="request")
    op.drop_table("request")
