"""The queryable audit: records in hash chains, and where retention left each chain.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        # INTEGER PRIMARY KEY on SQLite: its rowid, the only type it autoincrements.
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("ended_unix_nano", sa.BigInteger, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("tool", sa.String(1024), nullable=False),
        sa.Column("virtual_key_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("chain", "position", name="audit_records_chain_position"),
    )
    op.create_index("audit_records_ended", "audit_records", ["ended_unix_nano"])
    op.create_index("audit_records_server", "audit_records", ["server"])
    op.create_index("audit_records_key", "audit_records", ["virtual_key_id"])
    op.create_table(
        "audit_chain_starts",
        sa.Column("chain", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_chain_starts")
    op.drop_table("audit_records")
