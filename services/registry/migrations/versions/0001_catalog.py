"""The catalog: servers, what they offer, and the registry's settings and revision.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("capabilities_json", sa.Text, nullable=False),
    )
    op.create_table(
        "catalog_items",
        sa.Column(
            "server", sa.String(64), sa.ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("definition_json", sa.Text, nullable=False),
    )
    op.create_table(
        "registry_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("catalog_items")
    op.drop_table("registry_meta")
    op.drop_table("servers")
