"""Server settings, from arguments or the environment (``AUTOPEFT_*``) via pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from autopeft.workers.base import is_loopback_host

DEFAULT_HOME = Path("~/.autopeft").expanduser()
# A secret that is known to everybody; refused on non-loopback addresses.
DEFAULT_SECRET = "change-me"


class Settings(BaseSettings):
    """Everything the controller needs. Environment variables: ``AUTOPEFT_DB_URL``, ..."""

    model_config = SettingsConfigDict(env_prefix="AUTOPEFT_", extra="ignore")

    db_url: str = Field(default=f"sqlite:///{DEFAULT_HOME / 'autopeft.db'}",
                        description="SQLAlchemy URL: sqlite:///path or postgresql://user@host/db")
    secret: str = Field(default=DEFAULT_SECRET, description="server secret; required off loopback")
    host: str = "127.0.0.1"
    port: int = 8642
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    artifacts_dir: Path = Field(default=DEFAULT_HOME / "artifacts",
                                description="trial checkpoints, adapters and worker logs")
    run_scheduler: bool = Field(default=True, description="run studies (off: a read-only API)")
    migrate: bool = Field(default=True, description="run `alembic upgrade head` at start-up")
    worker_pythonpath: str | None = Field(default=None, description="extra PYTHONPATH for trial processes")
    cpus_per_trial: int = 1
    prestart_workers: int = Field(default=2, ge=0, le=64,
                                  description="trial processes started ahead of time (local executor)")
    listing_cache: bool = Field(default=True, description="cache encoded trial pages (one API process per database)")
    log_level: str = "info"
    data_dirs: str | None = Field(
        default=None, description="folders (os.pathsep-separated) that datasets named by a server path must "
        "lie in; unset: any regular file on a loopback bind, none on any other bind")


is_loopback = is_loopback_host  # the bind rule's test of a host


def apply_data_dirs(settings: Settings) -> None:
    """Make the dataset-path rule of :func:`autopeft.trials.data.check_server_path` this process's
    (and its trial processes') rule: ``settings.data_dirs`` when given, else no server path at all
    off loopback. A loopback bind without ``data_dirs`` leaves the environment as it is."""
    import os

    from autopeft.trials.data import DATA_DIRS_ENV

    if settings.data_dirs is not None:
        os.environ[DATA_DIRS_ENV] = settings.data_dirs
    elif not is_loopback(settings.host):
        os.environ[DATA_DIRS_ENV] = ""


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback address without a configured secret (raises ``ValueError``)."""
    if not is_loopback(settings.host) and (not settings.secret or settings.secret == DEFAULT_SECRET
                                           or len(settings.secret) < 16):
        raise ValueError(f"refusing to bind {settings.host}: not a loopback address and no secret is "
                         "configured; set AUTOPEFT_SECRET to a random string of >= 16 characters")
