"""The closed loop: traffic records carry what distillation and monitoring read (the request
id returned to the client, the classified text, whether the general model was asked at random,
a late gold label); drift reports, alerts and the loop's per-task leases get their tables.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: later model changes must not rewrite this migration.
UTC_DATETIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("traffic_records") as batch:
        batch.add_column(sa.Column("request_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("text", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("sampled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("gold_label", sa.Text(), nullable=True))
        batch.add_column(sa.Column("gold_at", UTC_DATETIME, nullable=True))
    op.create_index("ix_traffic_records_request_id", "traffic_records", ["request_id"])
    op.create_index("ix_traffic_records_task_id", "traffic_records", ["task", "id"])

    op.create_table(
        "drift_reports",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("window", sa.JSON(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("alarm", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_drift_reports"),
    )
    op.create_index("ix_drift_reports_task_at", "drift_reports", ["task", "at"])

    op.create_table(
        "alerts",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", UTC_DATETIME, nullable=False),
        sa.Column("resolved_at", UTC_DATETIME, nullable=True),
        sa.Column("report_id", BIG_ID, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"], ["drift_reports.id"], name="fk_alerts_report_id_drift_reports"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_task_state", "alerts", ["task", "state"])

    op.create_table(
        "loop_leases",
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("task", name="pk_loop_leases"),
    )


def downgrade() -> None:
    op.drop_table("loop_leases")
    op.drop_index("ix_alerts_task_state", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_drift_reports_task_at", table_name="drift_reports")
    op.drop_table("drift_reports")
    op.drop_index("ix_traffic_records_task_id", table_name="traffic_records")
    op.drop_index("ix_traffic_records_request_id", table_name="traffic_records")
    with op.batch_alter_table("traffic_records") as batch:
        batch.drop_column("gold_at")
        batch.drop_column("gold_label")
        batch.drop_column("sampled")
        batch.drop_column("text")
        batch.drop_column("request_id")
