"""Keys carry limits: calls per window (overall and per tool), a budget, calls in flight;
tool groups a rate limit.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.add_column("virtual_keys", sa.Column("limits_json", sa.Text, nullable=False, server_default="{}"))
    op.add_column("tool_groups", sa.Column("rate_limit_json", sa.Text, nullable=False, server_default="{}"))


def downgrade() -> None:
    op.drop_column("tool_groups", "rate_limit_json")
    op.drop_column("virtual_keys", "limits_json")
