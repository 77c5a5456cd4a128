"""Workers wait for work with LISTEN/NOTIFY: triggers that notify channel ``alz_work``.

Revision ID: 0012_notify
Revises: 0011_rungs
Create Date: 2026-12-01

Idle workers used to poll the queue about once a second each; now they ``LISTEN alz_work``
(:mod:`alz_db.store.notify`) and poll only as a fallback, with backoff. The database itself says when
work may have appeared, so every code path that queues work notifies, including plain SQL:

* ``evaluation`` (proxy runs: the only kind search workers claim; a re-training is queued and
  claimed by its own process in one transaction): a row inserted as ``queued``/``stale`` (a new
  candidate's proxy run, a promotion to a higher rung, the next member of a failed class), or
  updated into one of those states from another (a release on stop, a failed attempt queued
  again, a lease reaped), or a proxy result recorded (``done``: the population changed, so an
  idle worker may now breed a child; before the first K results nothing else would wake it);
* ``search``: inserted as ``running``; any change of ``status`` (started, resumed, stopped,
  finished, failed: workers with ``idle_exit`` leave once nothing runs); a running search that
  got budget back (``evaluations_reserved`` went down) or more budget.

The payload is the search id (text). ``pg_notify`` is transactional: listeners hear it at
commit, never for a rolled-back change, and PostgreSQL folds identical notifications of one
transaction into one (a reaper round over many evaluations of a search sends one).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_notify"
down_revision: str | None = "0011_rungs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: keep equal to alz_db.store.notify.CHANNEL (a migration must not import code that may change)
CHANNEL = "alz_work"

FUNCTIONS = {
    "alz_notify_evaluation": "NEW.search_id",
    "alz_notify_search": "NEW.id",
}

TRIGGERS = [
    # (name, table, event, condition)
    ("trg_evaluation_notify_insert", "evaluation", "AFTER INSERT",
     "NEW.kind = 'proxy' AND NEW.status IN ('queued', 'stale')"),
    ("trg_evaluation_notify_update", "evaluation", "AFTER UPDATE OF status",
     "NEW.kind = 'proxy' AND NEW.status IN ('queued', 'stale', 'done') "
     "AND OLD.status IS DISTINCT FROM NEW.status"),
    ("trg_search_notify_insert", "search", "AFTER INSERT", "NEW.status = 'running'"),
    ("trg_search_notify_update", "search",
     "AFTER UPDATE OF status, evaluations_reserved, budget",
     "OLD.status IS DISTINCT FROM NEW.status OR (NEW.status = 'running' AND "
     "(NEW.evaluations_reserved < OLD.evaluations_reserved OR NEW.budget > OLD.budget))"),
]


def upgrade() -> None:
    for name, search_id in FUNCTIONS.items():
        op.execute(f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{CHANNEL}', {search_id}::text);
                RETURN NULL;
            END $$""")
        op.execute(f"COMMENT ON FUNCTION {name}() IS 'wakes idle workers (LISTEN {CHANNEL}); "
                   f"see alz_db/notify.py'")
    for name, table, event, condition in TRIGGERS:
        function = "alz_notify_evaluation" if table == "evaluation" else "alz_notify_search"
        op.execute(f"CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW "
                   f"WHEN ({condition}) EXECUTE FUNCTION {function}()")


def downgrade() -> None:
    for name, table, _event, _condition in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
