"""Alembic environment: runs on the connection `ca.storage.db.migrate` hands over."""

from alembic import context
from sqlmodel import SQLModel

import ca.storage.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
import enroll.tables  # noqa: F401

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through ca.storage.db.migrate (or `acmeda db upgrade`)")
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
