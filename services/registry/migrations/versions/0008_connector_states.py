"""What each connector replica last reported of each server, and when it last said it was
alive: kept in the store, so that every registry replica counts the same connections.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "connector_states",
        sa.Column(
            "server", sa.String(64), sa.ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("connector_id", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_unix", sa.Float, nullable=False, server_default="0"),
    )
    op.create_table(
        "connectors",
        sa.Column("connector_id", sa.String(128), primary_key=True),
        sa.Column("alive_unix", sa.Float, nullable=False),
        # False for a replica from before heartbeats: it is never judged by its silence.
        sa.Column("heartbeats", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("connectors")
    op.drop_table("connector_states")
