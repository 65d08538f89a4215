"""The shop's position on each catalogue topic partition (live mode sells once the shop caught up).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalogue_offsets",
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("topic_partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "topic_partition"),
    )


def downgrade() -> None:
    op.drop_table("catalogue_offsets")
