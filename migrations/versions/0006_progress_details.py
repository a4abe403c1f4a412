"""Progress in words and the time the running stage started, for ETAs

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

`progress_detail` says what a job or stage is doing ("step 3 of 8"); `stage_started_at` is when
a round's current stage started, from which, with its progress, pages estimate the time left.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress_detail", sa.String(length=200), nullable=True))
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress_detail", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("stage_started_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_column("stage_started_at")
        batch_op.drop_column("progress_detail")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("progress_detail")
