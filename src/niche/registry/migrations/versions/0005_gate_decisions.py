"""Each gate decision records the task spec it was decided under (a fingerprint).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:00:00

Decisions stored before this revision have none (NULL): they count as decided under an
older spec, so moving an alias by hand on them needs the version gated again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gate_decisions") as batch:
        batch.add_column(sa.Column("spec_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gate_decisions") as batch:
        batch.drop_column("spec_fingerprint")
