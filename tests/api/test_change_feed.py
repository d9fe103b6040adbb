"""The listing cache with several processes on one PostgreSQL database: writes of one are heard by
the others through LISTEN / NOTIFY (``api.services.changes``), so their cached pages are never
served after a change once it is heard, and the cache is bypassed while the feed is deaf.

Two ``Database`` objects on one real PostgreSQL database stand for two replicas (each has its own
engine, versions and cache); two real replicas: ``test_failover.py``."""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
import pytest
from sqlalchemy import event

from autopeft.api.db import Database
from autopeft.api.migrate import upgrade
from autopeft.api.models import Study, Trial, User
from autopeft.api.services.changes import ChangeFeed
from autopeft.api.services.listing import ListingCache


def _until(predicate, timeout: float = 10.0, what: str = "the condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def two(postgres):
    url = postgres.new_database()
    upgrade(url)
    a, b = Database(url), Database(url)
    with a.write() as s:
        user = User(name="alice")
        s.add(user)
        s.flush()
        study = Study(user_id=user.id, name="s", spec={}, state="running")
        s.add(study)
        s.flush()
        ids = (user.id, study.id)
    cache = ListingCache(b)
    feed = ChangeFeed(b, on_reset=cache.clear, heartbeat_s=0.2, stale_after_s=1.0, retry_s=0.2)
    cache.serving = feed.fresh
    feed.start()
    assert feed.wait_fresh(), "the change feed never listened"
    yield a, b, cache, feed, ids
    feed.stop()
    a.dispose()
    b.dispose()


def _add_trial(db: Database, study_id: int, number: int) -> None:
    with db.write(study_id) as s:
        s.add(
            Trial(
                study_id=study_id,
                number=number,
                state="queued",
                config={"x": number},
                optimizer_id=str(number),
            )
        )


def _page(cache: ListingCache, user_id: int, study_id: int) -> list[int]:
    body = asyncio.run(cache.get(user_id, study_id, None, 100, None))
    return [t["number"] for t in json.loads(body)["trials"]]


def _queries(db: Database) -> list[str]:
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_another_process_write_is_heard_and_the_cached_page_is_replaced(two):
    a, b, cache, feed, (user_id, study_id) = two
    _add_trial(a, study_id, 0)
    _until(lambda: b.version(study_id) >= 1, what="the first write to be heard")
    assert _page(cache, user_id, study_id) == [0]
    queries = _queries(b)
    assert _page(cache, user_id, study_id) == [0]
    assert queries == []  # served from the cache: no query at all
    before = b.version(study_id)
    _add_trial(a, study_id, 1)  # the other replica writes
    _until(lambda: b.version(study_id) > before, what="the second write to be heard")
    assert _page(cache, user_id, study_id) == [0, 1]  # never the stale page
    # a write that rolls back notifies nobody
    heard = feed.heard
    with pytest.raises(RuntimeError), a.write(study_id) as s:
        s.add(Trial(study_id=study_id, number=9, state="queued", config={}, optimizer_id="9"))
        s.flush()
        raise RuntimeError("rolled back")
    _add_trial(a, study_id, 2)
    _until(lambda: feed.heard > heard, what="the committed write")
    assert feed.heard == heard + 1
    assert _page(cache, user_id, study_id) == [0, 1, 2]


def test_a_deaf_feed_bypasses_the_cache_and_drops_it_when_it_listens_again(two, postgres):
    a, b, cache, feed, (user_id, study_id) = two
    _add_trial(a, study_id, 0)
    _until(lambda: b.version(study_id) >= 1, what="the write to be heard")
    assert _page(cache, user_id, study_id) == [0]  # cached
    with psycopg.connect(
        f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres", autocommit=True
    ) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'autopeft-changes'"
        ).fetchall()
    assert killed == [(True,)]
    _until(lambda: not feed.fresh(), timeout=5, what="the feed to notice its lost connection")
    queries = _queries(b)
    assert _page(cache, user_id, study_id) == [0]
    assert queries, "a deaf feed must not serve cached pages"
    _add_trial(a, study_id, 1)  # written while nobody listens: this notification is lost
    _until(feed.fresh, what="the feed to listen again")
    # the lost notification did not bump the version, but the cache was dropped on reconnecting
    assert _page(cache, user_id, study_id) == [0, 1]
