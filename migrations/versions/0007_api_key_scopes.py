"""API key scopes: inference, rater or admin

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

A key's scope caps what it may do below its owner's role (an `inference` key serves `/v1` only).
Keys made before scopes existed get the scope of their owner's role, so each keeps exactly the
power it had.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPE_IS_KNOWN = "scope IN ('inference', 'rater', 'admin')"


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE api_keys SET scope = "
        "(SELECT users.role FROM users WHERE users.id = api_keys.user_id)"
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("scope", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_check_constraint(op.f("ck_api_keys_keyscope"), SCOPE_IS_KNOWN)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_api_keys_keyscope"), type_="check")
        batch_op.drop_column("scope")
