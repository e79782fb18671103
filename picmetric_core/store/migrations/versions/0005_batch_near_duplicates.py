"""Batch items: whether an image stored new was a near-duplicate of one stored before it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Items recorded before this migration count as not near-duplicates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batch_items", sa.Column("near_duplicate", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("batch_items") as batch:
        batch.drop_column("near_duplicate")
