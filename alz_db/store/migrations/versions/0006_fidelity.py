"""Fidelity of the search: per-branch mutation kinds, and a failed representative no longer
blocks its gradient-equivalence class.

Revision ID: 0006_fidelity
Revises: 0005_worker_problems
Create Date: 2026-12-01

* ``candidate.branch_mutations`` (JSONB, NULL for candidates stored before): the mutation kind
  of every branch of a child, ``{"cls_rpn": "insert", "reg_rpn": "replace", ...}`` (a detection
  child mutates each of its four or five branches; ``candidate.mutation`` keeps the first
  branch's, as before).
* ``uq_candidate_search_id_fingerprint``: at most one representative per (search, fingerprint)
  *that has not failed*. A representative whose proxy evaluation failed for good used to hold
  its class forever: every equivalent child waited for a fitness that never came. Now the
  class's next member is trained instead (``alz_db.repo.queue``), which this index allows.

* ``experiment.kind`` may be ``noise``: a search's noise floor (``alz noise``: one loss trained
  on the search's proxy task over several seeds).

Downgrade restores the old index and kinds (deleting the noise experiments); it fails if a class then has two representatives (one failed,
one not): delete or re-link them first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_fidelity"
down_revision: str | None = "0005_worker_problems"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("candidate", sa.Column("branch_mutations", postgresql.JSONB(), nullable=True))
    op.drop_index("uq_candidate_search_id_fingerprint", table_name="candidate")
    op.create_index("uq_candidate_search_id_fingerprint", "candidate",
                    ["search_id", "fingerprint"], unique=True,
                    postgresql_where=sa.text("equivalent_to_id IS NULL AND fingerprint IS NOT "
                                             "NULL AND status <> 'failed'"))
    op.drop_constraint("ck_experiment_kind", "experiment", type_="check")
    op.create_check_constraint("ck_experiment_kind", "experiment",
                               "kind IN ('ablation', 'baselines', 'noise')")


def downgrade() -> None:
    op.execute("DELETE FROM experiment WHERE kind = 'noise'")
    op.drop_constraint("ck_experiment_kind", "experiment", type_="check")
    op.create_check_constraint("ck_experiment_kind", "experiment",
                               "kind IN ('ablation', 'baselines')")
    op.drop_index("uq_candidate_search_id_fingerprint", table_name="candidate")
    op.create_index("uq_candidate_search_id_fingerprint", "candidate",
                    ["search_id", "fingerprint"], unique=True,
                    postgresql_where=sa.text("equivalent_to_id IS NULL AND fingerprint IS NOT "
                                             "NULL"))
    op.drop_column("candidate", "branch_mutations")
