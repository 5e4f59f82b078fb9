"""Servers keep the instructions their initialize result gave, for /mcp/{server} to pass on.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("servers", sa.Column("instructions", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("servers", "instructions")
