"""A failed or stopped search can be resumed: ``search.resumed_at``.

Revision ID: 0010_search_resume
Revises: 0009_requests
Create Date: 2026-12-01

``search.resumed_at``: when the search was last resumed (``alz search resume``), NULL if never.
The failures-in-a-row rule counts only proxy evaluations that finished after it, so a search
resumed after its cause was fixed is not failed again by the failures that failed it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_search_resume"
down_revision: str | None = "0009_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("search", sa.Column("resumed_at", sa.TIMESTAMP(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("search", "resumed_at")
