"""Rating workflow: task slot counters, "none acceptable" and per-response flags on
judgements, and when a job was last sent to the broker

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
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("judgement_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("lease_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.create_check_constraint(
            "counts_not_negative", "judgement_count >= 0 AND lease_count >= 0"
        )
    op.create_index(
        "ix_tasks_open_by_free_slots",
        "tasks",
        [sa.text("(required_judgements - judgement_count - lease_count)"), "id"],
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )
    op.execute(
        "UPDATE tasks SET "
        "judgement_count = (SELECT count(*) FROM judgements j "
        "WHERE j.task_id = tasks.id AND j.supersedes_id IS NULL), "
        "lease_count = (SELECT count(*) FROM assignments a "
        "WHERE a.task_id = tasks.id AND a.status = 'active')"
    )
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
    op.drop_index("ix_tasks_open_by_free_slots", table_name="tasks")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_constraint("counts_not_negative", type_="check")
        batch_op.drop_column("lease_count")
        batch_op.drop_column("judgement_count")
