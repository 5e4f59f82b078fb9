"""Keys and tool groups say how their views offer tools: classic, Code Mode or search.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    for table in ("virtual_keys", "tool_groups"):
        op.add_column(table, sa.Column("tool_mode", sa.String(16), nullable=False, server_default="classic"))


def downgrade() -> None:
    for table in ("tool_groups", "virtual_keys"):
        op.drop_column(table, "tool_mode")
