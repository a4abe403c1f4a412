"""One queued or running round per line, as a partial unique index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Before the index, a race between two starts could leave a line with several active rounds.
The upgrade keeps the oldest of them active and fails the others with the reason, so no row is
lost and the index can be built.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.execute(
        "UPDATE rounds SET status = 'failed', error = 'Another round was already active on "
        "this line (found when one active round per line became a database rule)' "
        "WHERE status IN ('queued', 'running') AND id NOT IN ("
        "SELECT min(id) FROM rounds WHERE status IN ('queued', 'running') GROUP BY line)"
    )
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.create_index(
            "uq_rounds_one_active_per_line",
            ["line"],
            unique=True,
            sqlite_where=ACTIVE,
            postgresql_where=ACTIVE,
        )


def downgrade() -> None:
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_index("uq_rounds_one_active_per_line")
