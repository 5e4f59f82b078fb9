"""Governance: virtual keys (secrets hashed), tool groups, and tools switched off.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "virtual_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("secret_prefix", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("rotated_at", sa.BigInteger, nullable=False),
        sa.Column("mcp_configs_json", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
    )
    op.create_table(
        "tool_groups",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tools_json", sa.Text, nullable=False),
    )
    op.create_table(
        "key_groups",
        sa.Column(
            "key_id", sa.String(64), sa.ForeignKey("virtual_keys.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "group_name",
            sa.String(64),
            sa.ForeignKey("tool_groups.name", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_table(
        "disabled_tools",
        sa.Column(
            "server", sa.String(64), sa.ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("tool", sa.String(1024), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("disabled_tools")
    op.drop_table("key_groups")
    op.drop_table("tool_groups")
    op.drop_table("virtual_keys")
