"""Rejection rows at scale: per-search aggregates kept by triggers, and the indexes that deleting
a search needs.

Revision ID: 0013_rejection_growth
Revises: 0012_notify
Create Date: 2026-12-02

Measured with ``scripts/bench_growth.py`` on a search of 10^6 rejection rows (docs/store.md,
"Growth"): the report's verdict and reason counts and the efficiency curve read every row of
the search (a group-by of the whole search), and deleting a search of 500 candidates ran into
the statement timeout, because the foreign keys ``rejection.parent_id`` and
``candidate.parent_id`` had no index of their own (each deleted candidate scanned the table).

* ``rejection_count``: per search, verdict and reason, ``checks`` (rows ever recorded),
  ``stored`` (rows still in ``rejection``) and ``seconds`` (their check time). The report and
  the population screen's counts read it.
* ``rejection_second``: per search and second of ``created_at``, ``checks`` and ``seconds``:
  the efficiency curve's check time, to the second as before.
* Statement-level triggers on ``rejection`` (transition tables, so one per INSERT or DELETE
  statement, not per row): an insert adds to both; a delete lowers ``stored`` only, so counts
  and curve stay exact when rows are pruned (``alz db prune-rejections``). Plain SQL inserts
  are counted too. Rows are never updated by the store; an ``UPDATE`` of ``created_at``,
  ``seconds``, ``verdict`` or ``reason`` is not followed (rebuild with the back-fill below).
* ``ix_rejection_parent_id`` and ``ix_candidate_parent_id``: partial indexes for the
  ``ON DELETE`` checks of those foreign keys.

The back-fill reads the whole table and the index builds lock ``rejection`` and ``candidate``
against writes for their duration (seconds per million rows): run this upgrade with the workers
stopped. Downgrade drops the tables, triggers, functions and indexes; the rows stay.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_rejection_growth"
down_revision: str | None = "0012_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# one row per (search, verdict, reason): reason is NULL for accepted rows, so the key is an
# expression index (ON CONFLICT names it by its columns and expression)
COUNT_KEY = "(search_id, verdict, (coalesce(reason, '')))"

ADDED = f"""
CREATE FUNCTION alz_rejection_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- keys in a fixed order: two inserting transactions lock shared rows in the same order
    INSERT INTO rejection_count AS c (search_id, verdict, reason, checks, stored, seconds)
    SELECT search_id, verdict, reason, count(*), count(*), sum(seconds)
    FROM added GROUP BY search_id, verdict, reason
    ORDER BY search_id, verdict, coalesce(reason, '')
    ON CONFLICT {COUNT_KEY} DO UPDATE
    SET checks = c.checks + EXCLUDED.checks, stored = c.stored + EXCLUDED.stored,
        seconds = c.seconds + EXCLUDED.seconds;
    INSERT INTO rejection_second AS t (search_id, second, checks, seconds)
    SELECT search_id, date_trunc('second', created_at), count(*), sum(seconds)
    FROM added GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (search_id, second) DO UPDATE
    SET checks = t.checks + EXCLUDED.checks, seconds = t.seconds + EXCLUDED.seconds;
    RETURN NULL;
END $$"""

REMOVED = """
CREATE FUNCTION alz_rejection_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- what was recorded stays counted (checks, seconds, the curve); only stored goes down.
    -- A search's own deletion removes its rows here after (or before) its counts: either way
    -- nothing is left of them. The rows are locked first in the insert trigger's key order,
    -- so a prune and a worker's insert never wait for each other in a cycle.
    PERFORM 1 FROM rejection_count c
    WHERE (c.search_id, c.verdict, coalesce(c.reason, '')) IN
          (SELECT search_id, verdict, coalesce(reason, '') FROM removed)
    ORDER BY c.search_id, c.verdict, coalesce(c.reason, '') FOR UPDATE;
    UPDATE rejection_count c SET stored = c.stored - r.n
    FROM (SELECT search_id, verdict, coalesce(reason, '') AS reason, count(*) AS n
          FROM removed GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) r
    WHERE c.search_id = r.search_id AND c.verdict = r.verdict
      AND coalesce(c.reason, '') = r.reason;
    RETURN NULL;
END $$"""

TRIGGERS = [
    ("trg_rejection_added", "AFTER INSERT", "NEW TABLE AS added", "alz_rejection_added"),
    ("trg_rejection_removed", "AFTER DELETE", "OLD TABLE AS removed", "alz_rejection_removed"),
]

BACKFILL = [
    "INSERT INTO rejection_count (search_id, verdict, reason, checks, stored, seconds) "
    "SELECT search_id, verdict, reason, count(*), count(*), sum(seconds) FROM rejection "
    "GROUP BY search_id, verdict, reason",
    "INSERT INTO rejection_second (search_id, second, checks, seconds) "
    "SELECT search_id, date_trunc('second', created_at), count(*), sum(seconds) "
    "FROM rejection GROUP BY 1, 2",
]


def upgrade() -> None:
    op.create_table(
        "rejection_count",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("search_id", sa.BigInteger(), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("checks", sa.BigInteger(), nullable=False),
        sa.Column("stored", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejection_count"),
        sa.ForeignKeyConstraint(["search_id"], ["search.id"], ondelete="CASCADE",
                                name="fk_rejection_count_search_id_search"),
    )
    op.create_index("uq_rejection_count_search_id_verdict_reason", "rejection_count",
                    ["search_id", "verdict", sa.text("coalesce(reason, '')")], unique=True)
    op.create_table(
        "rejection_second",
        sa.Column("search_id", sa.BigInteger(), nullable=False),
        sa.Column("second", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checks", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("search_id", "second", name="pk_rejection_second"),
        sa.ForeignKeyConstraint(["search_id"], ["search.id"], ondelete="CASCADE",
                                name="fk_rejection_second_search_id_search"),
    )
    for ddl, name in ((ADDED, "alz_rejection_added"), (REMOVED, "alz_rejection_removed")):
        op.execute(ddl)
        op.execute(f"COMMENT ON FUNCTION {name}() IS 'keeps rejection_count and "
                   f"rejection_second; see migrations/versions/0013_rejection_growth.py'")
    # the triggers first: creating them locks rejection against writes until this commits,
    # so no row lands between the back-fill and the first counted insert
    for name, event, transition, function in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {event} ON rejection REFERENCING {transition} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
    for statement in BACKFILL:
        op.execute(statement)
    op.create_index("ix_rejection_parent_id", "rejection", ["parent_id"],
                    postgresql_where=sa.text("parent_id IS NOT NULL"))
    op.create_index("ix_candidate_parent_id", "candidate", ["parent_id"],
                    postgresql_where=sa.text("parent_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_candidate_parent_id", table_name="candidate")
    op.drop_index("ix_rejection_parent_id", table_name="rejection")
    for name, _event, _transition, function in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON rejection")
        op.execute(f"DROP FUNCTION {function}()")
    op.drop_table("rejection_second")
    op.drop_index("uq_rejection_count_search_id_verdict_reason", table_name="rejection_count")
    op.drop_table("rejection_count")
