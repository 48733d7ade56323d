"""Evaluations store the usage their costs come from: the specialist's and the general model's.

Each is ``{"compute_s", "input_tokens", "output_tokens", "rows"}`` (CPU seconds for a local
model, tokens for an endpoint, over ``rows`` predictions); NULL for evaluations stored before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("usage", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("general_usage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("general_usage")
        batch.drop_column("usage")
