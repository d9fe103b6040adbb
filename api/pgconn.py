"""Dedicated PostgreSQL connections outside the engine's pool (psycopg 3, autocommit): the
scheduler lease's (``scheduling.leader``) and the change feed's (``services.changes``).

Both must notice a vanished server or host fast: TCP keepalives on both sides drop a dead peer
within about 10 s, and no statement runs past ``timeout_s``."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def conninfo(url: str) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL ``url`` (any driver)."""
    return make_url(url).set(drivername="postgresql").render_as_string(False)


def connect(info: str, application_name: str, timeout_s: float = 5.0):
    import psycopg

    timeout = max(1, int(timeout_s))
    return psycopg.connect(
        info,
        autocommit=True,
        connect_timeout=timeout,
        application_name=application_name[:63],
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        options=f"-c statement_timeout={timeout * 1000} -c tcp_keepalives_idle=5 "
        "-c tcp_keepalives_interval=2 -c tcp_keepalives_count=3",
    )


def close_quietly(conn) -> None:
    """Close ``conn`` (``None`` or already broken: nothing to do)."""
    if conn is not None:
        try:
            conn.close()
        except Exception:  # pragma: no cover - closing a broken connection
            pass
