"""Analyses with their classifications, detections and faces.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MD5 = sa.String(32).with_variant(sa.String(32, collation="C"), "postgresql")


def _id() -> sa.Column:
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def _analysis_id(table: str) -> sa.Column:
    return sa.Column(
        "analysis_id",
        ID,
        sa.ForeignKey("analyses.id", ondelete="CASCADE", name=f"fk_{table}_analysis_id_analyses"),
        nullable=False,
    )


def _box() -> list[sa.Column]:
    return [sa.Column(name, sa.Float(), nullable=False) for name in ("x1", "y1", "x2", "y2")]


def upgrade() -> None:
    op.create_table(
        "analyses",
        _id(),
        sa.Column("md5", MD5, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("byte_size", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("timings_ms", sa.JSON(), nullable=False),
        sa.Column("original_key", sa.String(255), nullable=False),
        sa.Column("detections_key", sa.String(255), nullable=False),
        sa.Column("faces_key", sa.String(255), nullable=False),
        sa.Column("thumbnail_key", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_analyses"),
        sa.UniqueConstraint("md5", name="uq_analyses_md5"),
        sa.CheckConstraint("source IN ('upload', 'url')", name="ck_analyses_source"),
    )
    op.create_index("ix_analyses_created_at_id", "analyses", ["created_at", "id"])

    op.create_table(
        "classifications",
        _id(),
        _analysis_id("classifications"),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_classifications"),
    )
    op.create_index("ix_classifications_analysis_id", "classifications", ["analysis_id"])
    op.create_index("ix_classifications_label_analysis_id_score", "classifications", ["label", "analysis_id", "score"])

    op.create_table(
        "detections",
        _id(),
        _analysis_id("detections"),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        *_box(),
        sa.PrimaryKeyConstraint("id", name="pk_detections"),
    )
    op.create_index("ix_detections_analysis_id", "detections", ["analysis_id"])
    op.create_index("ix_detections_label_analysis_id_score", "detections", ["label", "analysis_id", "score"])

    op.create_table(
        "faces",
        _id(),
        _analysis_id("faces"),
        sa.Column("score", sa.Float(), nullable=False),
        *_box(),
        sa.Column("landmarks", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_faces"),
    )
    op.create_index("ix_faces_analysis_id", "faces", ["analysis_id"])


def downgrade() -> None:
    op.drop_table("faces")
    op.drop_table("detections")
    op.drop_table("classifications")
    op.drop_table("analyses")
