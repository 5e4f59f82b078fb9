"""Keys name the people who sign in as them through the operator's OpenID Connect provider.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.add_column("virtual_keys", sa.Column("identities_json", sa.Text, nullable=False, server_default="[]"))


def downgrade() -> None:
    op.drop_column("virtual_keys", "identities_json")
