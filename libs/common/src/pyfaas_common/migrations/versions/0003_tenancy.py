"""functions.secrets, visibility and invoke_key_hash: private functions and secrets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("functions") as batch:
        batch.add_column(
            sa.Column("secrets", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(
            sa.Column("visibility", sa.String(16), nullable=False, server_default="public")
        )
        batch.add_column(sa.Column("invoke_key_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("functions") as batch:
        batch.drop_column("invoke_key_hash")
        batch.drop_column("visibility")
        batch.drop_column("secrets")
