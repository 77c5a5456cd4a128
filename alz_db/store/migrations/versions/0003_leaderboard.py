"""v_leaderboard ranks only the top of each search, so every query form is an index scan.

Revision ID: 0003_leaderboard
Revises: 0002_analysis
Create Date: 2026-11-29

The 0002 view ranked all of a search's evaluated candidates with a window function. PostgreSQL
plans such a view for full retrieval whenever the outer query sorts (``ORDER BY rank LIMIT
20``, ``ORDER BY fitness DESC ... LIMIT 20``) or filters on ``rank``, and then often prefers a
sequential scan plus a sort of every row: 0.6 to 1 s on a search of a million candidates. The
new view ranks, per search, the best ``LEADERBOARD_SIZE`` candidates read by a ``LATERAL``
subquery with its own ``LIMIT``, which PostgreSQL always serves from ``ix_candidate_leaderboard``;
any outer sort then sorts at most that many rows. Columns and ranking are unchanged. Downgrade
restores the 0002 view.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_leaderboard"
down_revision: str | None = "0002_analysis"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: how many candidates of each search the view ranks (the full ranking is one ORDER BY on the
#: candidate table away; see alz_db/store/views.py)
LEADERBOARD_SIZE = 1000

# ties are broken by the older candidate, so the ranking is total and stable
V_LEADERBOARD = f"""
CREATE VIEW v_leaderboard AS
SELECT s.id AS search_id,
       s.name AS search_name,
       t.rank,
       t.candidate_id,
       t.formula,
       t.fitness,
       t.fitness_kind,
       t.generation,
       t.mutation,
       t.parent_id,
       t.fingerprint,
       t.evaluated_at
FROM search s
CROSS JOIN LATERAL (
    SELECT row_number() OVER (ORDER BY c.fitness DESC NULLS LAST, c.id) AS rank,
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
    WHERE c.search_id = s.id AND c.status = 'evaluated'
    ORDER BY c.fitness DESC NULLS LAST, c.id
    LIMIT {LEADERBOARD_SIZE}
) t
"""

V_LEADERBOARD_0002 = """
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

COMMENT = ("COMMENT ON VIEW v_leaderboard IS 'read-only analysis view: the best "
           f"{LEADERBOARD_SIZE} evaluated candidates of each search; see alz_db/views.py'")


def upgrade() -> None:
    # one transaction: readers wait for milliseconds, never see the view missing
    op.execute("DROP VIEW v_leaderboard")
    op.execute(V_LEADERBOARD)
    op.execute(COMMENT)


def downgrade() -> None:
    op.execute("DROP VIEW v_leaderboard")
    op.execute(V_LEADERBOARD_0002)
    op.execute("COMMENT ON VIEW v_leaderboard IS 'read-only analysis view; see alz_db/views.py'")
