"""Signatures: each analysis's perceptual hash and embedding, for near-duplicates and "more like this".

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Rows analysed before this migration have no signature; ``picmetric similar backfill`` adds them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "signatures",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "analysis_id",
            ID,
            sa.ForeignKey("analyses.id", ondelete="CASCADE", name="fk_signatures_analysis_id_analyses"),
            nullable=False,
        ),
        sa.Column("phash", sa.BigInteger(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedding_model", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_signatures"),
        sa.UniqueConstraint("analysis_id", name="uq_signatures_analysis_id"),
    )


def downgrade() -> None:
    op.drop_table("signatures")
