"""The hash of the request that stored each judgement, to tell a retry from a reused key

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

A retry under the same `Idempotency-Key` gets the stored judgement back only when it repeats
the request; the same key with another body is refused. Rows stored before this revision have
no hash, and a retry of those is taken as one, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("judgements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("judgements", schema=None) as batch_op:
        batch_op.drop_column("request_sha256")
