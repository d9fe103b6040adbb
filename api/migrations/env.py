"""Alembic environment: the URL comes from ``-x url=...``, the config's ``sqlalchemy.url``, or
``AUTOPEFT_DB_URL``; a connection may be handed in via ``config.attributes["connection"]``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from autopeft.api.db import normalise_url
from autopeft.api.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    return normalise_url(url or os.environ.get("AUTOPEFT_DB_URL", "sqlite:///autopeft.db"))


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
