"""Detections stored under darknet's spellings get the official COCO category names.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# A copy, not an import: a migration must keep doing what it did when the code around it changes.
RENAMES = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}

detections = sa.table("detections", sa.column("label", sa.String(100)))


def _rename(pairs: dict[str, str]) -> None:
    for old, new in pairs.items():
        op.execute(detections.update().where(detections.c.label == old).values(label=new))


def upgrade() -> None:
    _rename(RENAMES)


def downgrade() -> None:
    _rename({new: old for old, new in RENAMES.items()})
