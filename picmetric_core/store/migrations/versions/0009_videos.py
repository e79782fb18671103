"""Video files (issue #23): one row per analysed clip, and one per track, for History and the API.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

The per-frame results stay in the store (``videos/<md5>/<variant>/tracks.json``); the database holds what
History filters and lists by: the clip's facts, the tracks (their labels are the filter), the line's counts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MD5 = sa.String(32).with_variant(sa.String(32, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("md5", MD5, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("byte_size", sa.BigInteger(), nullable=False),
        sa.Column("container", sa.String(32), nullable=False),
        sa.Column("codec", sa.String(32), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("frame_count", sa.Integer(), nullable=True),
        sa.Column("has_audio", sa.Boolean(), nullable=False),
        sa.Column("sample_fps", sa.Float(), nullable=False),
        sa.Column("line", sa.JSON(), nullable=True),
        sa.Column("crossings", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("original_key", sa.String(255), nullable=False),
        sa.Column("annotated_key", sa.String(255), nullable=True),
        sa.Column("poster_key", sa.String(255), nullable=False),
        sa.Column("tracks_key", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_videos"),
        sa.UniqueConstraint("md5", name="uq_videos_md5"),
        sa.CheckConstraint("source IN ('upload', 'url', 'batch')", name="ck_videos_source"),
    )
    op.create_index("ix_videos_created_at_id", "videos", ["created_at", "id"])
    op.create_table(
        "video_tracks",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("video_id", ID, nullable=False),
        sa.Column("track_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("first_seen_s", sa.Float(), nullable=False),
        sa.Column("last_seen_s", sa.Float(), nullable=False),
        sa.Column("best_score", sa.Float(), nullable=False),
        sa.Column("best_time_s", sa.Float(), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("x2", sa.Float(), nullable=False),
        sa.Column("y2", sa.Float(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("crop_key", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_video_tracks"),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"], name="fk_video_tracks_video_id_videos", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_video_tracks_video_id", "video_tracks", ["video_id"])
    # History's label filter: "which videos have a track of this class".
    op.create_index("ix_video_tracks_label_video_id", "video_tracks", ["label", "video_id"])


def downgrade() -> None:
    op.drop_index("ix_video_tracks_label_video_id", table_name="video_tracks")
    op.drop_index("ix_video_tracks_video_id", table_name="video_tracks")
    op.drop_table("video_tracks")
    op.drop_index("ix_videos_created_at_id", table_name="videos")
    op.drop_table("videos")
