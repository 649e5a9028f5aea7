"""functions.delete_after: per-function deletion of sleeping functions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("functions") as batch:
        batch.add_column(sa.Column("delete_after", sa.Integer(), nullable=True))
    # The reaper's sweep: running functions by last access, sleeping ones by when they slept.
    op.create_index("ix_function_access_last", "function_access", ["last_access_at"])


def downgrade() -> None:
    op.drop_index("ix_function_access_last", "function_access")
    with op.batch_alter_table("functions") as batch:
        batch.drop_column("delete_after")
