"""Where a study's tracking may write: the operator's rules and the checks of ``spec.tracking``.

A user names MLflow stores and TensorBoard folders, but the controller does the writing, so what
they name is judged against the operator's settings:

* a local MLflow store (``sqlite:///path``; MLflow 3 refuses file stores) and a TensorBoard
  folder lie inside the server's tracking folders: ``<artifacts_dir>/mlflow`` and
  ``<artifacts_dir>/tensorboard``, plus ``AUTOPEFT_TRACKING_DIRS``. A relative path is relative to
  those defaults (``sqlite:///team.db`` is ``<artifacts_dir>/mlflow/team.db``); symbolic links
  and ``..`` are resolved first;
* a remote store is ``http(s)://`` only (no database URLs, no ``databricks``: they would use the
  server's credentials), allowed unless ``AUTOPEFT_TRACKING_REMOTE=false``, and only to the hosts
  the operator lists in ``AUTOPEFT_TRACKING_HOSTS`` (``host`` or ``host:port``) when set; without
  that list only to public addresses: a host that is, or resolves to, a loopback, private,
  link-local or reserved address is refused (the controller would otherwise call services on its
  own network for any user); and never while the
  server's environment holds MLflow credentials (``MLFLOW_TRACKING_TOKEN``, ...), which MLflow
  would send to any host: then only the operator's own ``AUTOPEFT_TRACKING_URI`` is accepted;
* artifacts go only where the run's artifact URI points inside those folders (a local store) or to
  the tracking server itself (``mlflow-artifacts:`` / ``http(s)``): a remote store cannot make the
  controller write files elsewhere on its disk, nor into cloud buckets with its credentials.

Resolved paths never appear in answers or in the stored spec (the spec keeps what the user gave).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from autopeft.errors import InvalidConfig

#: environment variables whose values MLflow sends to whatever tracking server it talks to
CREDENTIAL_ENV = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",
)
_SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"), Path("/run"))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class TrackingRules:
    """The operator's side of tracking (from :class:`autopeft.api.settings.Settings`)."""

    mlflow_root: Path  # default folder of local MLflow stores (and their artifacts)
    tensorboard_root: Path  # default folder of TensorBoard event files
    extra_dirs: tuple[Path, ...] = ()  # AUTOPEFT_TRACKING_DIRS
    default_uri: str | None = None  # AUTOPEFT_TRACKING_URI (None: sqlite under mlflow_root)
    remote: bool = True  # AUTOPEFT_TRACKING_REMOTE
    hosts: tuple[str, ...] = ()  # AUTOPEFT_TRACKING_HOSTS: host or host:port (empty: public only)

    @classmethod
    def from_settings(cls, settings: Any) -> TrackingRules:
        artifacts = Path(settings.artifacts_dir).expanduser().resolve()
        extra = tuple(
            Path(p).expanduser().resolve()
            for p in (getattr(settings, "tracking_dirs", None) or "").split(os.pathsep)
            if p.strip()
        )
        return cls(
            mlflow_root=artifacts / "mlflow",
            tensorboard_root=artifacts / "tensorboard",
            extra_dirs=extra,
            default_uri=getattr(settings, "tracking_uri", None),
            remote=bool(getattr(settings, "tracking_remote", True)),
            hosts=tuple(
                h.strip().lower()
                for h in (getattr(settings, "tracking_hosts", None) or "").split(",")
                if h.strip()
            ),
        )

    def roots(self) -> tuple[Path, ...]:
        return (self.mlflow_root, self.tensorboard_root, *self.extra_dirs)

    @property
    def server_uri(self) -> str:
        """The store of studies that name none."""
        return self.default_uri or f"sqlite:///{self.mlflow_root / 'mlflow.db'}"

    def local_path(self, given: str, default_root: Path, field: str) -> Path:
        """``given`` resolved (relative to ``default_root``) if it lies in ``default_root`` or an
        extra tracking folder."""
        path = Path(given).expanduser()
        if not path.is_absolute():
            path = default_root / path
        try:
            resolved = path.resolve(strict=False)
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
            resolved = None
        if resolved is None or any(_inside(resolved, r) for r in _SYSTEM_ROOTS):
            raise InvalidConfig(f"{given[:200]!r} is not allowed here", field)
        if not any(_inside(resolved, r) for r in (default_root, *self.extra_dirs)):
            raise InvalidConfig(
                f"{given[:200]!r} is outside the server's tracking folders: give a relative path "
                "(it is kept under the server's data folder) or ask the operator to allow a folder "
                "(AUTOPEFT_TRACKING_DIRS)",
                field,
            )
        return resolved

    def mlflow_uri(self, given: str | None) -> str:
        """The tracking URI a study writes to, or ``InvalidConfig`` naming
        ``tracking.mlflow.tracking_uri``."""
        field = "tracking.mlflow.tracking_uri"
        if given is None or given == self.default_uri:
            return self.server_uri
        parsed = urlparse(given)
        scheme = parsed.scheme.lower()
        if scheme in ("http", "https"):
            if not self.remote:
                raise InvalidConfig(
                    "this server sends tracking to its own store only (AUTOPEFT_TRACKING_REMOTE=false); "
                    "leave tracking_uri out",
                    field,
                )
            if not parsed.hostname:
                raise InvalidConfig(f"{given[:200]!r} names no host", field)
            self.check_host(parsed, field)
            held = [name for name in CREDENTIAL_ENV if os.environ.get(name)]
            if held:
                raise InvalidConfig(
                    "this server holds MLflow credentials for its own tracking server, which MLflow "
                    "would send to any host: only the server's tracking store is accepted here "
                    "(leave tracking_uri out)",
                    field,
                )
            return given
        if scheme == "sqlite":
            if not given.startswith("sqlite:///") or "?" in given:
                raise InvalidConfig(
                    "a SQLite store is sqlite:///relative/path.db or sqlite:////absolute/path.db",
                    field,
                )
            path = self.local_path(unquote(given[len("sqlite:///") :]), self.mlflow_root, field)
            return f"sqlite:///{path}"
        if scheme in ("", "file"):
            raise InvalidConfig(
                "MLflow's file store is in maintenance mode and refused by MLflow 3: use a SQLite "
                "store (sqlite:///name.db, kept under the server's data folder)",
                field,
            )
        raise InvalidConfig(
            f"tracking URI scheme {scheme!r} is not supported here: use sqlite:///name.db or an "
            "http(s):// MLflow server",
            field,
        )

    def check_host(self, parsed, field: str) -> None:
        """A remote store's host is one the operator allows (see the module docstring)."""
        host = parsed.hostname.lower()
        port = parsed.port or (443 if parsed.scheme.lower() == "https" else 80)
        if self.hosts:
            if host in self.hosts or f"{host}:{port}" in self.hosts:
                return
            raise InvalidConfig(
                f"{host}:{port} is not among this server's tracking hosts "
                "(AUTOPEFT_TRACKING_HOSTS); leave tracking_uri out or ask the operator",
                field,
            )
        if not _public(host, port):
            raise InvalidConfig(
                f"{host[:100]!r} is, or resolves to, an address on the server's own or a private "
                "network; the operator can allow it with AUTOPEFT_TRACKING_HOSTS",
                field,
            )

    def tensorboard_dir(self, given: str | None, study_id: int | None) -> Path:
        """The folder of a study's event files (one sub-folder a trial)."""
        field = "tracking.tensorboard.dir"
        if given is None:
            return self.tensorboard_root / f"study-{study_id}"
        return self.local_path(given, self.tensorboard_root, field)

    def artifacts_allowed(self, artifact_uri: str, tracking_uri: str) -> bool:
        """Whether the controller may upload to ``artifact_uri`` (see the module docstring)."""
        parsed = urlparse(artifact_uri)
        scheme = parsed.scheme.lower()
        if scheme in ("", "file"):
            raw = unquote(parsed.path) if scheme == "file" else artifact_uri
            try:
                path = Path(raw).resolve(strict=False)
            except (OSError, RuntimeError):
                return False
            return any(_inside(path, r) for r in self.roots())
        if scheme == "mlflow-artifacts":
            return urlparse(tracking_uri).scheme.lower() in ("http", "https")
        if scheme in ("http", "https"):
            return parsed.netloc == urlparse(tracking_uri).netloc
        return False


def _public(host: str, port: int) -> bool:
    """Whether ``host`` (a literal address, or a name as resolved now) is a public address. A
    name that does not resolve reaches nothing and is let through."""
    import ipaddress
    import socket

    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return False
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return True
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    return all(a.is_global and not a.is_multicast for a in addresses)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def mlflow_installed() -> bool:
    """Whether MLflow's client imports here (imported once, by the first study that asks)."""
    return _importable("mlflow.tracking")


def tensorboard_installed() -> bool:
    return _importable("tensorboardX")


def _checked(check, value: Any, field: str) -> None:
    try:
        check(value)
    except InvalidConfig:
        raise
    except (ValueError, TypeError) as err:  # e.g. urlparse on "http://[", a NUL byte in a path
        raise InvalidConfig(f"{str(value)[:200]!r} is not valid here: {err}", field) from None


def check_tracking(spec: dict[str, Any], rules: TrackingRules) -> None:
    """Refuse (``InvalidConfig`` naming the field) tracking this server could not do: a sink whose
    package is missing, a store or folder outside the rules."""
    tracking = spec.get("tracking") or {}
    mlflow = tracking.get("mlflow")
    if mlflow is not None:
        if not mlflow_installed():
            raise InvalidConfig(
                "MLflow tracking needs the mlflow-skinny package on the server "
                "(pip install 'autopeft[tracking]'); it is not installed",
                "tracking.mlflow",
            )
        _checked(rules.mlflow_uri, mlflow.get("tracking_uri"), "tracking.mlflow.tracking_uri")
    board = tracking.get("tensorboard")
    if board is not None:
        if not tensorboard_installed():
            raise InvalidConfig(
                "TensorBoard tracking needs the tensorboardX package on the server "
                "(pip install 'autopeft[tracking]'); it is not installed",
                "tracking.tensorboard",
            )
        _checked(
            lambda d: rules.tensorboard_dir(d, None), board.get("dir"), "tracking.tensorboard.dir"
        )
