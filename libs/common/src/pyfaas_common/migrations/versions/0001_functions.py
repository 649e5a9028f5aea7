"""functions and function_access

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "functions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(63), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("code_digest", sa.String(64), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("runtime", sa.String(32), nullable=False),
        sa.Column("idle_timeout", sa.Integer(), nullable=True),
        sa.Column("desired", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("observed_generation", sa.Integer(), nullable=False),
        sa.Column("last_command_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_functions_owner", "functions", ["owner"])
    op.create_index("ix_functions_state", "functions", ["desired", "state"])
    op.create_table(
        "function_access",
        sa.Column("function_id", sa.Uuid(), primary_key=True),
        sa.Column("last_access_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("open_streams", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("function_access")
    op.drop_index("ix_functions_state", "functions")
    op.drop_index("ix_functions_owner", "functions")
    op.drop_table("functions")
