"""Traffic records carry the specialist's compute seconds, the input's size before clipping,
and whether capture cleaned them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("traffic_records") as batch:
        batch.add_column(sa.Column("compute_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("input_bytes", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("cleaned", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("traffic_records") as batch:
        batch.drop_column("cleaned")
        batch.drop_column("input_bytes")
        batch.drop_column("compute_s")
