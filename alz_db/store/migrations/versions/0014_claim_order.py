"""The queue's two hot reads on indexes: the claim's order, and "is a proxy run still open".

Revision ID: 0014_claim_order
Revises: 0013_rejection_growth
Create Date: 2026-12-02

A claim takes the claimable evaluation of a search with the highest rung, then the lowest id
(``ORDER BY rung DESC, id LIMIT 1``; revision 0011 added rungs). The partial index
``ix_evaluation_claimable`` was ``(search_id, id)``, so every claim sorted all of the search's
claimable rows: 0.9 ms of a 1.2 ms claim with 1,000 queued (``scripts/bench_cycle.py``,
docs/fleet.md). On ``(search_id, rung DESC, id)`` the claim reads the first row that no other
claimer has locked. Same rows (``status IN ('queued', 'stale')``), so the index stays small.

After every proxy result the search is finished if no proxy evaluation of it is still queued,
running or stale. No index covered running rows by search, so that test scanned the search's
evaluations in heap order, the finished ones (the oldest, most of a long search) first.
``ix_evaluation_open_proxy`` holds the open proxy evaluations only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_claim_order"
down_revision: str | None = "0013_rejection_growth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CLAIMABLE = sa.text("status IN ('queued', 'stale')")
_OPEN_PROXY = sa.text("kind = 'proxy' AND status IN ('queued', 'running', 'stale')")


def upgrade() -> None:
    op.drop_index("ix_evaluation_claimable", table_name="evaluation")
    op.create_index("ix_evaluation_claimable", "evaluation",
                    ["search_id", sa.text("rung DESC"), "id"], postgresql_where=_CLAIMABLE)
    op.create_index("ix_evaluation_open_proxy", "evaluation", ["search_id"],
                    postgresql_where=_OPEN_PROXY)


def downgrade() -> None:
    op.drop_index("ix_evaluation_open_proxy", table_name="evaluation")
    op.drop_index("ix_evaluation_claimable", table_name="evaluation")
    op.create_index("ix_evaluation_claimable", "evaluation", ["search_id", "id"],
                    postgresql_where=_CLAIMABLE)
