"""Deleting what was stored (issue #25): a log of deletions, and batch items found by md5.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

``deletions`` tells every process's in-process similarity index which signatures went, and keeps the
object keys of a delete whose store failed until a later run removes them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MD5 = sa.String(32).with_variant(sa.String(32, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "deletions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature_id", sa.BigInteger(), nullable=True),
        sa.Column("md5", MD5, nullable=True),
        sa.Column("object_keys", sa.JSON(), nullable=True),
        sa.Column("objects_deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deletions"),
    )
    op.create_index("ix_deletions_md5", "deletions", ["md5"])
    op.create_index("ix_batch_items_md5", "batch_items", ["md5"])


def downgrade() -> None:
    op.drop_index("ix_batch_items_md5", table_name="batch_items")
    op.drop_index("ix_deletions_md5", table_name="deletions")
    op.drop_table("deletions")
