"""Multi-fidelity proxy evaluation: rungs, and budgets in full-proxy equivalents.

Revision ID: 0011_rungs
Revises: 0010_search_resume
Create Date: 2026-12-01

* ``evaluation.rung`` (0 = the first rung; a search without rungs has only rung 0) and
  ``evaluation.units`` (its cost in budget units); one proxy evaluation per candidate *and
  rung* (the unique index moves from ``candidate_id`` to ``(candidate_id, rung)``), so two
  workers racing to promote a candidate continue it once.
* ``candidate.rung``: the highest rung the candidate (or its representative) completed; its
  ``fitness`` is the metric there.
* ``search.units_per_proxy`` (``U``: a full proxy run's units) and ``search.first_rung_units``
  (the cost of a new candidate's first run). A search with rungs counts ``budget``,
  ``evaluations_reserved`` and ``evaluations_done`` in units (``budget`` = full-proxy
  equivalents x ``U``); without rungs ``U = 1`` and nothing changes.

Downgrade fails while a search has evaluations above rung 0: delete those searches first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_rungs"
down_revision: str | None = "0010_search_resume"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("evaluation", sa.Column("rung", sa.Integer(), server_default=sa.text("0"),
                                          nullable=False))
    op.add_column("evaluation", sa.Column("units", sa.Integer(), server_default=sa.text("1"),
                                          nullable=False))
    op.create_check_constraint("ck_evaluation_rung", "evaluation", "rung >= 0 AND units >= 1")
    op.drop_index("uq_evaluation_candidate_id_proxy", table_name="evaluation")
    op.create_index("uq_evaluation_candidate_id_proxy", "evaluation", ["candidate_id", "rung"],
                    unique=True, postgresql_where=sa.text("kind = 'proxy'"))
    op.add_column("candidate", sa.Column("rung", sa.Integer(), server_default=sa.text("0"),
                                         nullable=False))
    op.add_column("search", sa.Column("units_per_proxy", sa.Integer(),
                                      server_default=sa.text("1"), nullable=False))
    op.add_column("search", sa.Column("first_rung_units", sa.Integer(),
                                      server_default=sa.text("1"), nullable=False))
    op.create_check_constraint("ck_search_units", "search",
                               "units_per_proxy >= 1 AND first_rung_units >= 1 AND "
                               "first_rung_units <= units_per_proxy")


def downgrade() -> None:
    op.drop_constraint("ck_search_units", "search", type_="check")
    op.drop_column("search", "first_rung_units")
    op.drop_column("search", "units_per_proxy")
    op.drop_column("candidate", "rung")
    op.drop_index("uq_evaluation_candidate_id_proxy", table_name="evaluation")
    op.create_index("uq_evaluation_candidate_id_proxy", "evaluation", ["candidate_id"],
                    unique=True, postgresql_where=sa.text("kind = 'proxy'"))
    op.drop_constraint("ck_evaluation_rung", "evaluation", type_="check")
    op.drop_column("evaluation", "units")
    op.drop_column("evaluation", "rung")
