"""Traffic records say which alias answered and whether the general model shadowed it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("traffic_records") as batch:
        batch.add_column(sa.Column("alias", sa.String(32), nullable=True))
        batch.add_column(
            sa.Column("shadow", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("traffic_records") as batch:
        batch.drop_column("shadow")
        batch.drop_column("alias")
