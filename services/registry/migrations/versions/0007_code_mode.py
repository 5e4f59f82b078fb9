"""Keys and tool groups may be in Code Mode.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.add_column(
        "virtual_keys", sa.Column("code_mode", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column(
        "tool_groups", sa.Column("code_mode", sa.Boolean, nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("tool_groups", "code_mode")
    op.drop_column("virtual_keys", "code_mode")
