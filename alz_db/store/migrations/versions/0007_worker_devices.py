"""Workers record their real device: its name and memory.

Revision ID: 0007_worker_devices
Revises: 0006_fidelity
Create Date: 2026-12-01

``worker.device_name`` (``NVIDIA H200``, or the CPU model and its cores) and
``worker.device_memory_mb`` (the GPU's memory, or the machine's RAM), as the worker process
itself sees them; NULL for workers registered before. ``alz search status`` and the web app show
them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_worker_devices"
down_revision: str | None = "0006_fidelity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("worker", sa.Column("device_name", sa.String(200), nullable=True))
    op.add_column("worker", sa.Column("device_memory_mb", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("worker", "device_memory_mb")
    op.drop_column("worker", "device_name")
