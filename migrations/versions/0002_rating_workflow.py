"""Rating workflow: judgements record "none acceptable" and per-response flags; jobs record
when they were last sent to the broker

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("judgements", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("all_bad", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # Flags were a list for the whole judgement; they are now a map per response id. The
    # first release wrote no flags, so only the empty default needs converting.
    op.execute("UPDATE judgements SET flags = '{}' WHERE CAST(flags AS TEXT) = '[]'")


def downgrade() -> None:
    op.execute("UPDATE judgements SET flags = '[]' WHERE CAST(flags AS TEXT) = '{}'")
    with op.batch_alter_table("judgements", schema=None) as batch_op:
        batch_op.drop_column("all_bad")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("dispatched_at")
