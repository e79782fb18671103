"""Batch jobs: when their driver last said it was alive, so a job whose driver died reads as interrupted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Jobs written before this migration have no heartbeat; their start time stands in for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batch_jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_jobs") as batch:
        batch.drop_column("heartbeat_at")
