"""Each identity's OAuth grant (a refresh token, or an access token where the server
issues no refresh token) for a per_user_oauth server, sealed; gone with the key or the server.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "user_tokens",
        sa.Column(
            "server", sa.String(64), sa.ForeignKey("servers.name", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "key_id", sa.String(64), sa.ForeignKey("virtual_keys.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("credential", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("user_tokens")
