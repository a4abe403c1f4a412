"""Admin console: rater quality, agreement reports, gold and escalated tasks, paused raters,
invitation and password-reset links

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONValue = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "quality_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report", JSONValue, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_reports")),
    )
    with op.batch_alter_table("quality_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quality_reports_computed_at"), ["computed_at"], unique=False
        )

    op.create_table(
        "access_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "purpose",
            sa.Enum(
                "invitation",
                "password_reset",
                name="linkpurpose",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "rater", "admin", name="role", native_enum=False, create_constraint=True, length=32
            ),
            nullable=True,
        ),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(purpose = 'invitation' AND role IS NOT NULL) OR "
            "(purpose = 'password_reset' AND user_id IS NOT NULL)",
            name=op.f("ck_access_links_purpose_has_its_target"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_access_links_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_access_links_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_access_links_token_hash")),
    )
    op.create_table(
        "leaderboards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("standings", JSONValue, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leaderboards")),
    )
    op.create_index(
        op.f("ix_leaderboards_computed_at"), "leaderboards", ["computed_at"], unique=False
    )
    op.create_table(
        "round_logs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column(
            "stage",
            sa.Enum(
                "pending",
                "snapshot",
                "sft",
                "reward_model",
                "policy",
                "evaluate",
                "register",
                "done",
                name="roundstage",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_round_logs_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_logs")),
    )
    op.create_index("ix_round_logs_round_id_id", "round_logs", ["round_id", "id"], unique=False)
    op.create_table(
        "rater_quality",
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("judgements", sa.Integer(), nullable=False),
        sa.Column("consensus_tau", sa.Float(), nullable=True),
        sa.Column("consensus_tasks", sa.Integer(), nullable=False),
        sa.Column("gold_answered", sa.Integer(), nullable=False),
        sa.Column("gold_correct", sa.Integer(), nullable=False),
        sa.Column("first_shown_rate", sa.Float(), nullable=True),
        sa.Column("median_seconds", sa.Float(), nullable=True),
        sa.Column("trust", sa.Float(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rater_id"],
            ["users.id"],
            name=op.f("fk_rater_quality_rater_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rater_id", name=op.f("pk_rater_quality")),
    )
    with op.batch_alter_table("judgements", schema=None) as batch_op:
        batch_op.create_index(
            "ix_judgements_rater_created", ["rater_id", "created_at"], unique=False
        )
        # all of a task's judgements, corrections included (the admin task page, the filters)
        batch_op.create_index("ix_judgements_task_id", ["task_id"], unique=False)

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("extra_judgements", sa.Integer(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("pause_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("pause_reason")
        batch_op.drop_column("paused_at")

    # SQLite rebuilds the table to drop a column and would lose this expression index.
    op.drop_index("ix_tasks_open_by_free_slots", table_name="tasks")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("extra_judgements")
    op.create_index(
        "ix_tasks_open_by_free_slots",
        "tasks",
        [sa.text("(required_judgements - judgement_count - lease_count)"), "id"],
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )

    with op.batch_alter_table("judgements", schema=None) as batch_op:
        batch_op.drop_index("ix_judgements_task_id")
        batch_op.drop_index("ix_judgements_rater_created")

    op.drop_table("rater_quality")
    op.drop_index(op.f("ix_leaderboards_computed_at"), table_name="leaderboards")
    op.drop_table("leaderboards")
    op.drop_index("ix_round_logs_round_id_id", table_name="round_logs")
    op.drop_table("round_logs")
    op.drop_table("access_links")
    with op.batch_alter_table("quality_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quality_reports_computed_at"))

    op.drop_table("quality_reports")
