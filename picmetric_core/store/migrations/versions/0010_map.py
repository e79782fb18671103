"""The map of everything seen (issue #24): a fit per classifier, and each photo's place on it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

``map_fits`` keeps one row per fit of a classifier's embeddings (the newest finished one is the map);
``map_points`` each photo's coordinates, cluster and uniqueness on a fit. A fit's ``checkpoint`` holds
what ``picmetric map fit`` computed so far, so an interrupted fit resumes from its last stage.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "map_fits",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("classifier", sa.String(100), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("photos", sa.Integer(), nullable=False),
        sa.Column("clusters", sa.JSON(), nullable=False),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_map_fits"),
        sa.CheckConstraint("method IN ('umap', 'pca')", name="ck_map_fits_method"),
        sa.CheckConstraint("status IN ('neighbours', 'laid_out', 'done')", name="ck_map_fits_status"),
    )
    op.create_index("ix_map_fits_classifier_id", "map_fits", ["classifier", "id"])
    op.create_table(
        "map_points",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "fit_id",
            ID,
            sa.ForeignKey("map_fits.id", ondelete="CASCADE", name="fk_map_points_fit_id_map_fits"),
            nullable=False,
        ),
        sa.Column(
            "analysis_id",
            ID,
            sa.ForeignKey("analyses.id", ondelete="CASCADE", name="fk_map_points_analysis_id_analyses"),
            nullable=False,
        ),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.Column("cluster", sa.Integer(), nullable=False),
        sa.Column("uniqueness", sa.Float(), nullable=False),
        sa.Column("placed", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_map_points"),
        sa.UniqueConstraint("fit_id", "analysis_id", name="uq_map_points_fit_id_analysis_id"),
        sa.CheckConstraint("placed IN ('fit', 'nearest')", name="ck_map_points_placed"),
    )
    op.create_index("ix_map_points_analysis_id", "map_points", ["analysis_id"])
    # Which photos have an embedding of a classifier, without reading the embeddings.
    op.create_index("ix_signatures_embedding_model_analysis_id", "signatures", ["embedding_model", "analysis_id"])


def downgrade() -> None:
    op.drop_index("ix_signatures_embedding_model_analysis_id", table_name="signatures")
    op.drop_index("ix_map_points_analysis_id", table_name="map_points")
    op.drop_table("map_points")
    op.drop_index("ix_map_fits_classifier_id", table_name="map_fits")
    op.drop_table("map_fits")
