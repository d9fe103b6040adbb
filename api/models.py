"""SQLAlchemy 2 models of the controller's store.

Tables: users (with a role), api_tokens (an HMAC of the token only, keyed with the server
secret; expiry, last use, revocation), datasets (uploaded files, owned by a user), studies,
trials, trial_reports, checkpoints, events. Every table is ``AUTOINCREMENT`` on SQLite (and
SERIAL on PostgreSQL), so an id is never handed out twice, even after the row with the highest
id was deleted: a deleted study's id cannot come back as another user's study. The Pareto front and hypervolume are never stored: they are derived from
the trials. ``events`` is the append-only ask / tell / report history of each study's
optimiser, in order (``seq``); replaying it rebuilds the optimiser after a restart.

JSON columns use SQLAlchemy's generic ``JSON`` (TEXT on SQLite, json on PostgreSQL).
Times are naive UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("admin", "user")
TRIAL_STATES = ("queued", "running", "complete", "failed", "pruned")
STUDY_STATES = ("running", "stopped", "finished", "failed")
FINISHED_TRIAL_STATES = ("complete", "failed", "pruned")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def columns(row: Any, *names: str) -> dict[str, Any]:
    """``{name: row.name}`` for the named attributes of a row, in that order."""
    return {name: getattr(row, name) for name in names}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# ids are never reused on SQLite (PostgreSQL sequences never reuse them anyway)
_NO_REUSE = {"sqlite_autoincrement": True}


class _Row:
    """Columns of every table: an id never handed out twice, and when the row was made."""

    __table_args__: Any = _NO_REUSE
    id: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-2)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, sort_order=1)


class _Owned(_Row):
    """A row that belongs to one user (deleted with the user); only its owner sees it."""

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, sort_order=-1
    )


class _Run:
    """When a study or a trial last started and ended."""

    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, sort_order=1)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, sort_order=1)


class User(_Row, Base):
    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")  # admin | user


class ApiToken(_Owned, Base):
    __tablename__ = "api_tokens"
    # HMAC-SHA256 hex of the token keyed with AUTOPEFT_SECRET (scheme "hmac"); tokens made before
    # that have the plain sha256 (scheme "sha256") and are rehashed on first use. The token itself
    # is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scheme: Mapped[str] = mapped_column(String(8), default="hmac")
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell tokens apart
    name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Dataset(_Owned, Base):
    """An uploaded file (CSV / TSV / JSONL), validated at upload; stored under the datasets folder
    as ``<user id>/<dataset id>.<format>``. Only its owner sees it."""

    __tablename__ = "datasets"
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))  # csv | tsv | jsonl
    encoding: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list[str]] = mapped_column(JSON)
    text_column: Mapped[list[str]] = mapped_column(JSON)  # one name, or two for sentence pairs
    label_column: Mapped[str] = mapped_column(String(200))
    label_counts: Mapped[dict[str, int]] = mapped_column(JSON)  # label -> rows, in label order
    # classification (text and label columns) | sft (prompt / completion or messages records;
    # text_column [], label_column "", no labels)
    kind: Mapped[str] = mapped_column(
        String(16), default="classification", server_default="classification"
    )


class Study(_Owned, _Run, Base):
    __tablename__ = "studies"
    # the uploaded dataset of a peft workload (workload.dataset_id); deleting it keeps the study
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True, nullable=True
    )
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="running")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)  # the owner's, free text
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # seconds of budget used by earlier runs (before a stop / restart); max_seconds counts all.
    elapsed_s: Mapped[float] = mapped_column(Float, default=0.0)
    trials: Mapped[list[Trial]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True
    )


class Trial(_Row, _Run, Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number", name="uq_trials_study_id_number"),
        _NO_REUSE,
    )
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    values: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    optimizer_id: Mapped[str] = mapped_column(String(64))  # the optimiser's suggestion id, as text
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # a trial id (PBT clone)
    budget: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # "search": asked of the optimiser; "baseline": a hand-picked reference point (``label`` names it)
    kind: Mapped[str] = mapped_column(String(16), default="search", server_default="search")
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # metrics of the saved adapter on the held-out test split (front and baselines only)
    test_values: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    # compute used, in epochs of the training set, over every run of the trial (PBT segments too)
    epochs_trained: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # PBT: every exploit, in order: {"step", "source", "source_number", "changes"}
    lineage: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # under the study's constraints (optimizer.options.constraints), judged when the trial ends:
    # null while it has no values; infeasible ones are never on the front (api.study)
    feasible: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    infeasible_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the replica whose scheduler last started the trial (several API replicas, one leader)
    scheduled_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # a cancel asked on a replica that does not schedule (the reason): the leader carries it out
    cancel_requested: Mapped[str | None] = mapped_column(Text, nullable=True, index=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)  # the owner's, free text
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    study: Mapped[Study] = relationship(back_populates="trials")


Index("ix_trials_study_id_id", Trial.study_id, Trial.id)


class TrialReport(_Row, Base):
    __tablename__ = "trial_reports"
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    step: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, float]] = mapped_column(JSON)
    decision: Mapped[str] = mapped_column(String(16), default="continue")


class Checkpoint(_Row, Base):
    __tablename__ = "checkpoints"
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Event(_Row, Base):
    """One entry of a study's optimiser history: ``kind`` is ask, tell or report."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("study_id", "seq", name="uq_events_study_id_seq"), _NO_REUSE)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class WebhookDelivery(_Row, Base):
    """One event posted (or to be posted) to a study's webhook, and how that went: ``state`` is
    pending (tries left), delivered (a 2xx) or failed (no tries left, a 4xx, or the host is no
    longer allowed). ``payload`` is the body sent; the secret is never stored here. The newest
    :data:`autopeft.api.webhooks.sender.KEPT_PER_STUDY` of a study are kept."""

    __tablename__ = "webhook_deliveries"
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)  # the X-Autopeft-Delivery header
    event: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the last answer's
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why the last try failed
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
