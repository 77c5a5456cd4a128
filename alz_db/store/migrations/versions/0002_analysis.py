"""Analysis: the leaderboard, lineage and structure indexes and the read-only views.

Revision ID: 0002_analysis
Revises: 0001_schema
Create Date: 2025-11-24

The views are documented, with example queries, in ``alz_db/store/views.py``. The indexes make the
leaderboard and lineage queries index scans on a search of 1,000,000 candidates. The index
builds lock the candidate table against writes for their duration (seconds on a million rows):
run this upgrade with the workers stopped. Downgrade drops the views and indexes only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_analysis"
down_revision: str | None = "0001_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ties are broken by the older candidate, so the ranking is total and stable
V_LEADERBOARD = """
CREATE VIEW v_leaderboard AS
SELECT c.search_id,
       s.name AS search_name,
       row_number() OVER (PARTITION BY c.search_id
                          ORDER BY c.fitness DESC NULLS LAST, c.id) AS rank,
       c.id AS candidate_id,
       c.formula,
       c.fitness,
       c.fitness_kind,
       c.generation,
       c.mutation,
       c.parent_id,
       c.fingerprint,
       c.evaluated_at
FROM candidate c
JOIN search s ON s.id = c.search_id
WHERE c.status = 'evaluated'
"""

V_LINEAGE = """
CREATE VIEW v_lineage AS
SELECT c.id AS candidate_id,
       c.parent_id,
       c.search_id,
       c.generation,
       c.mutation,
       c.status,
       c.fitness,
       c.fitness_kind,
       c.equivalent_to_id,
       c.formula,
       c.created_at
FROM candidate c
"""

V_SEARCH_PROGRESS = """
CREATE VIEW v_search_progress AS
SELECT s.id AS search_id,
       s.name,
       s.task,
       s.metric,
       s.status,
       s.budget,
       s.evaluations_reserved,
       s.evaluations_done,
       s.candidates,
       s.rejection_checks,
       s.rejections,
       CASE WHEN s.rejection_checks > 0
            THEN s.rejections::double precision / s.rejection_checks END AS rejection_rate,
       s.best_fitness,
       s.best_candidate_id,
       s.created_at,
       s.started_at,
       s.finished_at
FROM search s
"""

VIEWS = ("v_leaderboard", "v_lineage", "v_search_progress")


def upgrade() -> None:
    op.create_index("ix_candidate_leaderboard", "candidate",
                    ["search_id", sa.text("fitness DESC NULLS LAST"), "id"],
                    postgresql_where=sa.text("status = 'evaluated'"))
    op.create_index("ix_candidate_search_id_parent_id", "candidate", ["search_id", "parent_id"])
    op.create_index("ix_candidate_search_id_structural_hash", "candidate",
                    ["search_id", "structural_hash"])
    for ddl in (V_LEADERBOARD, V_LINEAGE, V_SEARCH_PROGRESS):
        op.execute(ddl)
    for view in VIEWS:
        op.execute(f"COMMENT ON VIEW {view} IS 'read-only analysis view; see alz_db/views.py'")


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW {view}")
    op.drop_index("ix_candidate_search_id_structural_hash", table_name="candidate")
    op.drop_index("ix_candidate_search_id_parent_id", table_name="candidate")
    op.drop_index("ix_candidate_leaderboard", table_name="candidate")
