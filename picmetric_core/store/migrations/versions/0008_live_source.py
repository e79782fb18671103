"""Live camera snapshots (issue #22): ``analyses.source`` may be ``live`` besides ``upload`` and ``url``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CONSTRAINT = "ck_analyses_source"


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.drop_constraint(CONSTRAINT, type_="check")
        batch.create_check_constraint(CONSTRAINT, "source IN ('upload', 'url', 'live')")


def downgrade() -> None:
    op.execute("UPDATE analyses SET source = 'upload' WHERE source = 'live'")
    with op.batch_alter_table("analyses") as batch:
        batch.drop_constraint(CONSTRAINT, type_="check")
        batch.create_check_constraint(CONSTRAINT, "source IN ('upload', 'url')")
