"""Server settings, from arguments or the environment (``AUTOPEFT_*``) via pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from autopeft.net import is_loopback_host

DEFAULT_HOME = Path("~/.autopeft").expanduser()
# A secret that is known to everybody; refused on non-loopback addresses.
DEFAULT_SECRET = "change-me"


class Settings(BaseSettings):
    """Everything the controller needs. Environment variables: ``AUTOPEFT_DB_URL``, ..."""

    model_config = SettingsConfigDict(env_prefix="AUTOPEFT_", extra="ignore")

    db_url: str = Field(
        default=f"sqlite:///{DEFAULT_HOME / 'autopeft.db'}",
        description="SQLAlchemy URL: sqlite:///path or postgresql://user@host/db",
    )
    secret: str = Field(
        default=DEFAULT_SECRET,
        description="server secret: the HMAC key of the stored token "
        "hashes (changing it revokes every token); required off loopback",
    )
    host: str = "127.0.0.1"
    port: int = 8642
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_transfer: Literal["auto", "object_store", "shared"] = Field(
        default="auto",
        description="how checkpoints and uploaded datasets reach Ray workers: auto (the object "
        "store for nodes other than the controller's), object_store (always), shared (one file system)",
    )
    artifacts_dir: Path = Field(
        default=DEFAULT_HOME / "artifacts",
        description="trial checkpoints, adapters and worker logs",
    )
    run_scheduler: bool = Field(default=True, description="run studies (off: a read-only API)")
    replica_id: str | None = Field(
        default=None,
        max_length=64,
        description="this API replica's name, shown by /healthz and stored on the trials it "
        "schedules (default <host>:<pid>)",
    )
    lease_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="PostgreSQL (several replicas may share it): how often a follower tries to "
        "take the scheduler lease, and the leader checks it holds it and picks up work asked on "
        "other replicas",
    )
    migrate: bool = Field(default=True, description="run `alembic upgrade head` at start-up")
    worker_pythonpath: str | None = Field(
        default=None, description="extra PYTHONPATH for trial processes"
    )
    cpus_per_trial: int = 1
    prestart_workers: int = Field(
        default=2, ge=0, le=64, description="trial processes started ahead of time (local executor)"
    )
    listing_cache: bool = Field(
        default=True, description="cache encoded trial pages (one API process per database)"
    )
    log_level: str = "info"
    cache_dir: Path | None = Field(
        default=None,
        description="trials' tokenised-data cache (default <artifacts_dir>/cache): shared by "
        "content hash; an uploaded dataset's entries are its owner's and count in their quota",
    )
    datasets_dir: Path | None = Field(
        default=None, description="uploaded datasets (default <artifacts_dir>/datasets)"
    )
    max_upload_bytes: int = Field(
        default=100 * 2**20, ge=1, description="largest dataset upload (413 above)"
    )
    max_stored_bytes_per_user: int = Field(
        default=2**30, ge=0, description="uploaded data one user may keep (403 above; 0: no limit)"
    )
    max_body_bytes: int = Field(
        default=2**20, ge=1024, description="largest JSON request body (413 above)"
    )
    python_workloads: Literal["off", "admins", "all"] = Field(
        default="off",
        description="who may submit python workloads (they run code on the server): off "
        "(nobody, the default), admins, or all users",
    )
    python_modules: str | None = Field(
        default=None,
        description="comma-separated module prefixes python "
        "entrypoints must start with (unset: any module on the workers' path)",
    )
    max_running_trials: int = Field(
        default=0,
        ge=0,
        description="trials running at once over all users, shared "
        "fairly (0: the executor's capacity when it knows it, else no limit)",
    )
    max_running_trials_per_user: int = Field(
        default=0,
        ge=0,
        description="trials one user may run at once (0: no "
        "limit); a study's max_parallel above it is refused (403)",
    )
    max_active_studies_per_user: int = Field(
        default=20, ge=0, description="running studies per user (429 above; 0: no limit)"
    )
    token_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="seconds a token lookup is cached; a token "
        "revoked by `autopeft token revoke` (another process) is refused after at most this",
    )
    token_max_days: int = Field(
        default=365, ge=1, le=3650, description="longest expiry of a token made over REST"
    )
    max_concurrent_requests: int = Field(
        default=16,
        ge=1,
        le=512,
        description="API requests handled at once; more wait in a queue (the handler threads "
        "and the request database pool are sized from it)",
    )
    max_queued_requests: int = Field(
        default=1024, ge=0, description="API requests that may wait for a slot; more get 503"
    )
    queue_wait_s: float = Field(
        default=0.5,
        ge=0,
        le=30,
        description="longest wait for a slot before a 503 with Retry-After",
    )
    max_concurrent_uploads: int = Field(
        default=4, ge=1, le=64, description="dataset uploads received at once; more get 503"
    )
    data_dirs: str | None = Field(
        default=None,
        description="folders (os.pathsep-separated) that datasets named by a server path must "
        "lie in; unset: any regular file on a loopback bind, none on any other bind",
    )
    model_dirs: str | None = Field(
        default=None,
        description="folders (os.pathsep-separated) that models named by a server path must lie "
        "in; unset: any folder on a loopback bind, none on any other bind (installed model "
        "packages and Hub ids in the server's Hugging Face cache are always allowed)",
    )

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking store of studies that name none (default: "
        "sqlite:///<artifacts_dir>/mlflow/mlflow.db); users may always name this one",
    )
    tracking_dirs: str | None = Field(
        default=None,
        description="folders (os.pathsep-separated) where users' SQLite MLflow stores and "
        "TensorBoard folders may lie, beside <artifacts_dir>/mlflow and <artifacts_dir>/tensorboard",
    )
    tracking_remote: bool = Field(
        default=True,
        description="whether users may name http(s) MLflow servers (the controller connects to "
        "them); never while MLFLOW_TRACKING_* credentials are in the environment",
    )
    tracking_hosts: str | None = Field(
        default=None,
        description="comma-separated host or host:port of the MLflow servers users may name "
        "(unset: any public address, never a loopback or private one)",
    )

    webhook_hosts: str | None = Field(
        default=None,
        description="comma-separated host, host:port or *.domain that study webhooks may post to "
        "(unset: webhooks are refused); nothing is sent to, or resolved for, any other host",
    )
    webhook_tries: int = Field(
        default=5,
        ge=1,
        le=20,
        description="requests per webhook delivery at most (retried on connection errors, "
        "timeouts, 5xx, 408 and 429)",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="timeout of one webhook request (seconds)"
    )
    webhook_backoff_s: float = Field(
        default=1.0,
        gt=0,
        le=300,
        description="wait before a webhook delivery's second try (seconds), doubled after each "
        "further failure (at most 300)",
    )

    @property
    def datasets_path(self) -> Path:
        return (
            Path(self.datasets_dir)
            if self.datasets_dir is not None
            else Path(self.artifacts_dir) / "datasets"
        )

    @property
    def cache_path(self) -> Path:
        return (
            Path(self.cache_dir)
            if self.cache_dir is not None
            else Path(self.artifacts_dir) / "cache"
        )

    def python_module_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in (self.python_modules or "").split(",") if p.strip())


def apply_data_dirs(settings: Settings) -> None:
    """Make the dataset-path rule of :func:`autopeft.trials.data.check_server_path` this process's
    (and its trial processes') rule: ``settings.data_dirs`` when given, else no server path at all
    off loopback. A loopback bind without ``data_dirs`` leaves the environment as it is. Models
    named by a server path follow the same rule with ``settings.model_dirs``
    (:func:`autopeft.models.model_roots`)."""
    import os

    from autopeft.trials.data import DATA_DIRS_ENV

    # uploaded datasets are read by the trials through their stored path: it is always a data root
    # when roots apply (users cannot name it: services.spec refuses paths in the server's folders)
    uploads = str(Path(settings.datasets_path).expanduser().resolve())
    if settings.data_dirs is not None:
        os.environ[DATA_DIRS_ENV] = os.pathsep.join(p for p in (settings.data_dirs, uploads) if p)
    elif not is_loopback_host(settings.host):
        os.environ[DATA_DIRS_ENV] = uploads
    # models named by a server path: the same rule with settings.model_dirs (AUTOPEFT_MODEL_DIRS)
    from autopeft.models import MODEL_DIRS_ENV

    if settings.model_dirs is not None:
        os.environ[MODEL_DIRS_ENV] = settings.model_dirs
    elif not is_loopback_host(settings.host):
        os.environ[MODEL_DIRS_ENV] = ""


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback address without a configured secret (raises ``ValueError``)."""
    if not is_loopback_host(settings.host) and (
        not settings.secret or settings.secret == DEFAULT_SECRET or len(settings.secret) < 16
    ):
        raise ValueError(
            f"refusing to bind {settings.host}: not a loopback address and no secret is "
            "configured; set AUTOPEFT_SECRET to a random string of >= 16 characters"
        )
