"""`alembic upgrade head` from an empty database gives exactly the models' schema, on SQLite and
PostgreSQL; `downgrade base` removes it again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from autopeft.api.db import normalise_url
from autopeft.api.migrate import downgrade, upgrade
from autopeft.api.models import Base


def _diff(url: str) -> list:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_head_matches_models(db_url):
    upgrade(db_url)
    assert _diff(db_url) == []
    engine = create_engine(normalise_url(db_url))
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {
        "users",
        "api_tokens",
        "studies",
        "trials",
        "trial_reports",
        "checkpoints",
        "events",
        "webhook_deliveries",
    } <= tables


def test_downgrade_to_base_and_up_again(db_url):
    upgrade(db_url)
    downgrade(db_url, "base")
    engine = create_engine(normalise_url(db_url))
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(db_url)
    assert _diff(db_url) == []
