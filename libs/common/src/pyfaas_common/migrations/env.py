"""Alembic environment: the connection is handed in by :mod:`pyfaas_common.migrate`."""

from alembic import context

from pyfaas_common.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
