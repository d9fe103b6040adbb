"""The FastAPI application: ``create_app(settings)``.

The app owns a :class:`~autopeft.api.db.Database`, an executor and the
:class:`~autopeft.api.scheduler.SchedulerManager`; the lifespan migrates the database (unless
``settings.migrate`` is off), starts the runners of studies left running, and on exit stops
them without touching trial states (a restart requeues them). With several replicas on one
PostgreSQL database only the holder of the scheduler lease runs studies
(:class:`~autopeft.api.scheduling.leader.Replica`); the others take over when it dies.

Capacity (:mod:`autopeft.api.admission`): ``max_concurrent_requests`` API requests (and
``max_concurrent_uploads`` uploads) are handled at once, the rest wait briefly or get 503 with
``Retry-After``. The limits agree: the handler thread pool has a thread for every slot plus
:data:`RESERVE_THREADS` for what passes without one (``/healthz``, static files), and request
handling has a database engine of its own with two connections per thread (a read and a write),
so an admitted request never waits for a thread or a connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from fastapi import FastAPI

from autopeft import __version__
from autopeft.api import errors
from autopeft.api.admission import Admission, AdmissionGate
from autopeft.api.db import Database
from autopeft.api.deps import AppState
from autopeft.api.middleware import BodyLimit, SecurityHeaders
from autopeft.api.routers import (
    datasets,
    docs,
    health,
    outside,
    studies,
    tokens,
    trials,
    webhooks,
)
from autopeft.api.scheduler import SchedulerManager
from autopeft.api.scheduling.leader import Replica
from autopeft.api.services.changes import ChangeFeed
from autopeft.api.services.datasets import DatasetStore
from autopeft.api.services.listing import ListingCache
from autopeft.api.settings import Settings, apply_data_dirs
from autopeft.api.slots import SlotAllocator
from autopeft.api.tracking.rules import TrackingRules
from autopeft.api.webhooks.rules import WebhookRules

log = logging.getLogger("autopeft.api")
#: handler threads beyond the admitted requests' (``/healthz``, static files, ``/docs``)
RESERVE_THREADS = 8


def request_threads(settings: Settings) -> int:
    """Threads of the handler pool: one per request and upload slot, plus the reserve."""
    return settings.max_concurrent_requests + settings.max_concurrent_uploads + RESERVE_THREADS


def request_pool(settings: Settings) -> tuple[int, int]:
    """(pool_size, max_overflow) of the request engine: two connections per handler thread."""
    threads = request_threads(settings)
    return threads, threads


def make_gates(settings: Settings) -> dict[str, AdmissionGate]:
    return {
        "requests": AdmissionGate(
            "API",
            settings.max_concurrent_requests,
            settings.max_queued_requests,
            settings.queue_wait_s,
        ),
        "uploads": AdmissionGate(
            "upload",
            settings.max_concurrent_uploads,
            4 * settings.max_concurrent_uploads,
            settings.queue_wait_s,
        ),
    }


def _gate_for(gates: dict[str, AdmissionGate]):
    def gate_for(method: str, path: str) -> AdmissionGate | None:
        if not path.startswith("/api/"):
            return None  # /healthz, /readyz, the dashboard, /docs
        if method == "POST" and path.rstrip("/") == "/api/v1/datasets":
            return gates["uploads"]
        return gates["requests"]

    return gate_for


def _executor(settings: Settings):
    if not settings.run_scheduler:
        return None
    from autopeft.workers import create_executor

    if settings.executor == "ray":
        return create_executor(
            "ray",
            address=settings.ray_address,
            pythonpath=settings.worker_pythonpath,
            cpus_per_trial=settings.cpus_per_trial,
            checkpoint_transfer=settings.ray_transfer,
        )
    return create_executor(
        "local",
        pythonpath=settings.worker_pythonpath,
        cpus_per_trial=settings.cpus_per_trial,
        prestart=settings.prestart_workers,
    )


def _slots(settings: Settings, executor) -> SlotAllocator:
    """Fair sharing of ``max_running_trials`` slots (else the executor's capacity, when it knows it)."""
    capacity = settings.max_running_trials or (executor.capacity if executor is not None else None)
    return SlotAllocator(capacity, settings.max_running_trials_per_user)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    apply_data_dirs(settings)
    if settings.worker_pythonpath:
        # python workloads are validated here (their module must be importable) against the same
        # path the trial processes get.
        for entry in reversed(settings.worker_pythonpath.split(os.pathsep)):
            if entry and entry not in sys.path:
                sys.path.insert(0, entry)

    gates = make_gates(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        if settings.migrate:
            from autopeft.api.migrate import upgrade

            upgrade(settings.db_url)
        anyio.to_thread.current_default_thread_limiter().total_tokens = request_threads(settings)
        db = Database(settings.db_url)  # the scheduler's
        api_db = db.sibling(request_pool(settings))  # request handling's
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        store = DatasetStore(
            settings.datasets_path,
            settings.max_upload_bytes,
            settings.max_stored_bytes_per_user,
            settings.cache_path,
        )
        locks: dict = {}  # study locks, shared by the managers of successive leader terms

        def build(executor, follower: bool) -> SchedulerManager:
            return SchedulerManager(
                db,
                executor,
                settings.artifacts_dir,
                settings.cpus_per_trial,
                slots=_slots(settings, executor),
                trial_workload=lambda workload: store.trial_workload(db, workload),
                replica_id=replica.replica_id,
                follower=follower,
                study_locks=locks,
                tracking=TrackingRules.from_settings(settings),
                webhooks=WebhookRules.from_settings(settings),
            )

        replica = Replica(settings, db, build, lambda: _executor(settings))
        recovered = replica.begin()
        feed = None
        if not db.is_sqlite and settings.listing_cache:  # other replicas' writes, heard
            feed = ChangeFeed(db)
        listing = ListingCache(
            api_db,
            enabled=settings.listing_cache,
            serving=(lambda: feed.fresh()) if feed is not None else (lambda: True),
        )
        if feed is not None:
            feed.on_reset = listing.clear
            feed.start()
        state = AppState(
            settings=settings,
            db=api_db,
            scheduler=replica.manager,
            listing=listing,
            datasets=store,
            replica=replica,
            gates=gates,
        )
        app.state.autopeft = state

        def changed(manager: SchedulerManager) -> None:  # a new leader term, or the end of one
            state.scheduler = manager
            listing.clear()

        replica.on_change = changed
        replica.watch()
        if recovered:
            log.info("resumed studies %s", recovered)
        try:
            yield
        finally:
            replica.shutdown()
            if feed is not None:
                feed.stop()
            api_db.dispose()
            db.dispose()

    app = FastAPI(
        title="autopeft",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Multi-objective search over parameter-efficient fine-tuning configs. "
        "Authenticate with `Authorization: Bearer <token>` "
        "(`autopeft token create USER`). Errors: "
        '`{"error": {"code", "message", "field"}}`.',
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(studies.router, prefix="/api/v1")
    app.include_router(outside.router, prefix="/api/v1")
    app.include_router(trials.router, prefix="/api/v1")
    app.include_router(webhooks.router, prefix="/api/v1")
    app.include_router(datasets.router, prefix="/api/v1")
    app.include_router(tokens.router, prefix="/api/v1")
    upload_limit = settings.max_upload_bytes + 64 * 1024  # multipart framing and the small fields

    def body_limit(method: str, path: str) -> int:
        return (
            upload_limit
            if method == "POST" and path == "/api/v1/datasets"
            else settings.max_body_bytes
        )

    app.add_middleware(BodyLimit, limit_for=body_limit)
    app.add_middleware(Admission, gate_for=_gate_for(gates))
    app.add_middleware(SecurityHeaders)
    from autopeft.dashboards import mount_dashboard

    mount_dashboard(app)  # the web UI at / and /static
    return app
