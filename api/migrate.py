"""Run the Alembic migrations programmatically: ``upgrade(url)`` brings a database to head.

Several API replicas may start at once on one PostgreSQL database: ``upgrade`` holds a
session-level advisory lock (``scheduling.leader.MIGRATE_LOCK``) around the migration, so one replica migrates
and the others wait for it, then find the database at head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from autopeft.api.db import normalise_url

_HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    url = normalise_url(url)
    if not url.startswith("postgresql"):
        command.upgrade(alembic_config(url), revision)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from autopeft.api.scheduling.leader import LOCK_SPACE, MIGRATE_LOCK

    keys = {"a": LOCK_SPACE, "b": MIGRATE_LOCK}

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), keys)
            conn.commit()
            try:
                command.upgrade(alembic_config(url), revision)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), keys)
                conn.commit()
    finally:
        engine.dispose()


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
