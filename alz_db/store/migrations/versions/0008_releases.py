"""Stops are not failures: an evaluation handed back by a clean stop keeps its attempts.

Revision ID: 0008_releases
Revises: 0007_worker_devices
Create Date: 2026-12-01

* ``evaluation.releases``: claims that ended by a clean hand-back (a worker stopped by SIGTERM,
  Ctrl-C, a drained node, or a node that cannot serve the search). An evaluation is claimable
  while ``attempts - releases < max_attempts``, so a hand-back does not use one of its attempts.
* ``evaluation_attempt.outcome`` may be ``released``; ``error`` (the training raised) and
  ``lease_expired`` (the worker went silent) stay apart in the history.
* the check ``attempts <= max_attempts`` becomes ``attempts - releases <= max_attempts``.

Downgrade restores the old checks; it fails while an evaluation has releases (a hand-back
made ``attempts`` exceed ``max_attempts``): let those finish first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_releases"
down_revision: str | None = "0007_worker_devices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("evaluation", sa.Column("releases", sa.Integer(), server_default=sa.text("0"),
                                          nullable=False))
    op.drop_constraint("ck_evaluation_attempts", "evaluation", type_="check")
    op.create_check_constraint(
        "ck_evaluation_attempts", "evaluation",
        "max_attempts >= 1 AND attempts >= 0 AND releases >= 0 AND releases <= attempts "
        "AND attempts - releases <= max_attempts")
    op.drop_constraint("ck_evaluation_attempt_outcome", "evaluation_attempt", type_="check")
    op.create_check_constraint("ck_evaluation_attempt_outcome", "evaluation_attempt",
                               "outcome IN ('done', 'error', 'lease_expired', 'released')")


def downgrade() -> None:
    op.drop_constraint("ck_evaluation_attempt_outcome", "evaluation_attempt", type_="check")
    op.create_check_constraint("ck_evaluation_attempt_outcome", "evaluation_attempt",
                               "outcome IN ('done', 'error', 'lease_expired')")
    op.drop_constraint("ck_evaluation_attempts", "evaluation", type_="check")
    op.create_check_constraint("ck_evaluation_attempts", "evaluation",
                               "max_attempts >= 1 AND attempts >= 0 AND "
                               "attempts <= max_attempts")
    op.drop_column("evaluation", "releases")
