"""The polled reads, the API's hottest paths (clients and dashboards poll them): the trials
listing, and the encoded answers of a study, its front, its hypervolume and the list of studies.

Pages are encoded straight from the rows: one fixed SQL statement selects the JSON columns as
text (``CAST(... AS TEXT)``) and splices them into the response, so no JSON is decoded and no ORM
object or pydantic model is built per trial (the response has exactly the ``TrialList``
schema; ``tests/api`` compares it with the pydantic encoding). Encoded pages are kept in a
small LRU keyed on ``(user, study, study version, after, limit, state)``: the study version is
bumped by every write that names the study (``Database.write(study_id)``). On SQLite every
writer lives in this process, so a cached page is never stale. On PostgreSQL, where several
replicas may share the database (``scheduling.leader``), other processes' writes bump it too,
heard through ``LISTEN`` / ``NOTIFY`` (``api.services.changes``); cached pages are served only
while that feed is fresh, and all are dropped when it (re)connects.

:meth:`ListingCache.cached` keeps any encoded answer the same way, keyed on the version of the
study it shows (or, for a list of a user's studies, on the user's counter,
:meth:`Database.version_of_user`): a poll of an unchanged study is answered from memory, in the
event loop, with no thread and no connection.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Boolean, Float, Integer, String, Text, text
from starlette.concurrency import run_in_threadpool

from autopeft.api.artifacts import public_error
from autopeft.api.db import Database
from autopeft.api.errors import not_found
from autopeft.api.services.studies import test_source

# Built once: fixed texts with bound parameters, so a request pays no statement construction
# (``after`` -1 means "from the start"). Times are taken as stored (SQLite keeps ISO text).
_SELECT = (
    'SELECT id, study_id, number, state, CAST(config AS TEXT), CAST("values" AS TEXT), attempts, '
    "parent_id, error, created_at, started_at, finished_at, kind, label, CAST(test_values AS TEXT), "
    "epochs_trained, CAST(lineage AS TEXT), feasible, infeasible_reason, notes, CAST(tags AS TEXT) "
    "FROM trials "
    "WHERE study_id = :study_id AND id > :after{} ORDER BY id LIMIT :limit"
)
_TYPES = dict(
    id=Integer,
    study_id=Integer,
    number=Integer,
    state=String,
    config=Text,
    values=Text,
    attempts=Integer,
    parent_id=Integer,
    error=Text,
    kind=String,
    label=Text,
    test_values=Text,
    epochs_trained=Float,
    lineage=Text,
    feasible=Boolean,
    infeasible_reason=Text,
    notes=Text,
    tags=Text,
)
_PAGE = text(_SELECT.format("")).columns(**_TYPES)
_PAGE_STATE = text(_SELECT.format(" AND state = :state")).columns(**_TYPES)
_OWNER = text("SELECT user_id FROM studies WHERE id = :study_id").columns(user_id=Integer)
_dumps = json.dumps


def _dt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS[.ffffff]" as SQLAlchemy stored it
        return '"' + value.replace(" ", "T", 1) + '"'
    return '"' + value.isoformat() + '"'


def _source(kind, test_values) -> str:
    """``test_source`` (``services.studies.test_source``) of a row, as JSON."""
    source = test_source(kind, test_values if test_values not in (None, "null", "{}") else None)
    return "null" if source is None else f'"{source}"'


def _row(r) -> str:
    return (
        f'{{"id":{r[0]},"study_id":{r[1]},"number":{r[2]},"state":"{r[3]}","config":{r[4] or "null"},'
        f'"values":{r[5] or "null"},"attempts":{r[6]},"parent_id":{"null" if r[7] is None else r[7]},'
        f'"kind":"{r[12] or "search"}","label":{"null" if r[13] is None else _dumps(r[13])},'
        f'"test_values":{r[14] or "null"},"test_source":{_source(r[12], r[14])},'
        f'"epochs_trained":{_dumps(float(r[15] or 0.0))},'
        f'"lineage":{r[16] or "null"},"feasible":{"null" if r[17] is None else "true" if r[17] else "false"},'
        f'"infeasible_reason":{"null" if r[18] is None else _dumps(r[18])},'
        f'"notes":{"null" if r[19] is None else _dumps(r[19])},"tags":{r[20] if r[20] not in (None, "null") else "[]"},'
        f'"error":{"null" if r[8] is None else _dumps(public_error(r[8]))},"created_at":{_dt(r[9])},"started_at":{_dt(r[10])},'
        f'"finished_at":{_dt(r[11])}}}'
    )


def encode_page(
    db: Database, user_id: int, study_id: int, after: int | None, limit: int, state: str | None
) -> bytes:
    with db.engine.connect() as conn:
        owner = conn.execute(_OWNER, {"study_id": study_id}).scalar()
        if owner is None or owner != user_id:
            raise not_found("study", study_id)
        params = {"study_id": study_id, "after": -1 if after is None else after, "limit": limit}
        if state is not None:
            params["state"] = state
        rows = conn.execute(_PAGE if state is None else _PAGE_STATE, params).all()
    next_after = rows[-1][0] if rows else after
    return (
        '{"trials":['
        + ",".join(_row(r) for r in rows)
        + '],"next_after":'
        + ("null" if next_after is None else str(next_after))
        + "}"
    ).encode()


class ListingCache:
    """``serving()``: whether cached pages may be served now (every change to the store is
    known to this process: its own writes, and others' through a fresh change feed)."""

    def __init__(
        self,
        db: Database,
        size: int = 1024,
        enabled: bool = True,
        serving: Callable[[], bool] = lambda: True,
    ):
        self.db, self.size, self.enabled = db, size, enabled
        self.serving = serving
        self._pages: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()

    async def get(
        self, user_id: int, study_id: int, after: int | None, limit: int, state: str | None
    ) -> bytes:
        """A page of the study's trials (encoded)."""
        return await self.cached(
            ("trials", user_id, study_id, after, limit, state),
            study_id,
            lambda: encode_page(self.db, user_id, study_id, after, limit, state),
        )

    async def cached(
        self,
        key: tuple,
        study_id: int | None,
        compute: Callable[[], bytes],
        user_id: int | None = None,
    ) -> bytes:
        """``compute()`` (run in a worker thread), or its earlier result for ``key`` while the study
        is unchanged since (``user_id`` instead: while the user's studies are, see
        ``Database.own``; neither: while nothing was written)."""
        version = (
            self.db.version(study_id)
            if study_id is not None
            else self.db.version_of_user(user_id)
            if user_id is not None
            else self.db.version_of_all()
        )
        # the version is read before computing (never newer than the data); a user's counter is
        # theirs alone, so their id is part of the key
        key = (*key, user_id, version)
        enabled = self.enabled and self.serving()
        if enabled:
            with self._lock:
                body = self._pages.get(key)
                if body is not None:
                    self._pages.move_to_end(key)
            if body is not None:
                return body
        body = await run_in_threadpool(compute)
        if enabled:
            with self._lock:
                self._pages[key] = body
                while len(self._pages) > self.size:
                    self._pages.popitem(last=False)
        return body
