"""Alembic environment: runs migrations on the engine alertd hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import alertd.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from alertd.matching.history import outside_models

engine: Engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,
        compare_type=True,
        include_name=lambda name, type_, parents: not outside_models(name, type_, parents),
    )
    with context.begin_transaction():
        context.run_migrations()
