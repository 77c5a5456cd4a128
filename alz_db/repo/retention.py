"""Retention of rejection rows (``alz db prune-rejections``).

A search at the paper's scale records millions of rejection-protocol runs, nearly all of them
rejected graphs nobody looks at again. Their counts and times are kept apart, per search, by
the triggers of revision 0013 (``rejection_count``: verdict and reason; ``rejection_second``:
the efficiency curve), so deleting rejected rows changes neither the report's statistics, the
efficiency curve nor the search's counters (``rejection_checks``, ``rejections``). What goes
is the row-level detail: the population screen shows only the rejected graphs still stored
(its counts follow), and the per-row metrics of the deleted runs are gone.

* ``keep_texts=True`` keeps one row per distinct rejected graph (per branch and structural
  hash, its first check), so every rejected formula stays browsable once.
* ``keep_texts=False`` deletes every rejected row of the search.

Accepted rows are never deleted: they are the candidates' own records (the candidate page and
``alz show`` list them), one per candidate and branch.

The deleted rows' space is reused by later inserts after (auto)vacuum; ``VACUUM FULL
rejection`` returns it to the file system but locks the table while it runs.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from alz_core import Verdict

from ..errors import InvalidInput
from ..store.models import Rejection, sql_value
from .searches import get_search

#: rows a full prune deletes per call (one transaction each): a second or so per batch,
#: bounded WAL and locks
PRUNE_BATCH = 100_000
#: the statement timeout of ``alz db prune-rejections`` (the store's is 30 s): one pass of
#: ``keep_texts`` over a search of 10^6 rows took 12 s on the project machine
PRUNE_STATEMENT_TIMEOUT_MS = 600_000


def prune_rejections(session: Session, search_ref: int | str, *, keep_texts: bool = False,
                     limit: int | None = None) -> int:
    """Delete rejected rows of the search (see the module doc), at most ``limit`` (default:
    ``PRUNE_BATCH`` for a full prune; every repeat at once with ``keep_texts``, since finding
    the repeats reads all of the search's rejected rows, whatever the batch); return how many.
    Call it until it returns 0, each call in its own transaction (what ``alz db
    prune-rejections`` does). :class:`NotFound` for an unknown search."""
    if limit is None:
        limit = None if keep_texts else PRUNE_BATCH
    elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit={limit!r} is invalid: expected an integer >= 1")
    info = get_search(session, search_ref)
    r = Rejection
    rejected = [r.search_id == info.id, r.verdict == sql_value(Verdict.REJECT)]
    if keep_texts:
        order = func.row_number().over(partition_by=(r.branch, r.structural_hash),
                                       order_by=r.id).label("n")
        ranked = select(r.id, order).where(*rejected).subquery()
        doomed = select(ranked.c.id).where(ranked.c.n > 1).limit(limit)
    else:
        doomed = select(r.id).where(*rejected).limit(limit)
    result = session.execute(delete(Rejection).where(Rejection.id.in_(doomed))
                             .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


__all__ = ["PRUNE_BATCH", "PRUNE_STATEMENT_TIMEOUT_MS", "prune_rejections"]
