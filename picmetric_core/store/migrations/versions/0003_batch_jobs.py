"""Batch jobs and their items (issue #12).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MD5 = sa.String(32).with_variant(sa.String(32, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("sources_key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("seen", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("images_per_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_batch_jobs"),
        sa.CheckConstraint("status IN ('running', 'done', 'failed')", name="ck_batch_jobs_status"),
    )
    op.create_index("ix_batch_jobs_sources_key", "batch_jobs", ["sources_key"])
    op.create_table(
        "batch_items",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            ID,
            sa.ForeignKey("batch_jobs.id", ondelete="CASCADE", name="fk_batch_items_job_id_batch_jobs"),
            nullable=False,
        ),
        sa.Column("item", sa.Text(), nullable=False),
        sa.Column("md5", MD5, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("node", sa.String(64), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_batch_items"),
        sa.UniqueConstraint("job_id", "item", name="uq_batch_items_job_id_item"),
        sa.CheckConstraint("status IN ('new', 'seen', 'failed')", name="ck_batch_items_status"),
    )
    op.create_index("ix_batch_items_job_id_md5", "batch_items", ["job_id", "md5"])


def downgrade() -> None:
    op.drop_index("ix_batch_items_job_id_md5", table_name="batch_items")
    op.drop_table("batch_items")
    op.drop_index("ix_batch_jobs_sources_key", table_name="batch_jobs")
    op.drop_table("batch_jobs")
