"""Start-up rules and the weight of the client side."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autopeft.api.settings import DEFAULT_SECRET, Settings, check_bind
from tests.api.conftest import REPO


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.org"])
def test_non_loopback_needs_a_secret(host):
    for secret in (DEFAULT_SECRET, "", "short"):
        with pytest.raises(ValueError, match="refusing to bind"):
            check_bind(Settings(host=host, secret=secret))
    check_bind(
        Settings(host=host, secret="a-long-random-secret-0123456789")
    )  # checked, never bound here


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_secret(host):
    check_bind(Settings(host=host))


def test_serve_refuses_a_public_address_without_secret(tmp_path):
    exe = Path(sys.executable).parent / "autopeft"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [str(exe), "serve", "--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert (
        out.returncode == 2
        and "refusing to bind 0.0.0.0" in out.stderr
        and "AUTOPEFT_SECRET" in out.stderr
    )


def test_serve_on_a_port_in_use_fails_before_touching_the_database(tmp_path):
    """The socket is bound first: a second controller on a taken port exits 2 naming the address,
    and never migrates the database or starts a scheduler on it (uvicorn alone bound last)."""
    exe = Path(sys.executable).parent / "autopeft"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "x.db"
        out = subprocess.run(
            [str(exe), "serve", "--port", str(port), "--db", f"sqlite:///{db}"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=REPO,
        )
    assert out.returncode == 2, out.stderr
    assert f"port: cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "address already in use" in out.stderr.lower()
    assert not db.exists()


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("AUTOPEFT_DB_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("AUTOPEFT_PORT", "9999")
    s = Settings()
    assert s.db_url == "postgresql://u@127.0.0.1/db" and s.port == 9999


def test_import_autopeft_and_the_client_stay_light():
    code = (
        "import sys, autopeft; autopeft.Client; import autopeft.client; "
        "heavy = [m for m in ('fastapi', 'sqlalchemy', 'pandas', 'torch', 'uvicorn') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_dataset_paths_off_loopback_default_to_none(monkeypatch):
    from autopeft.api.settings import apply_data_dirs
    from autopeft.models import MODEL_DIRS_ENV, model_roots
    from autopeft.trials.data import DATA_DIRS_ENV, data_roots

    for name in (DATA_DIRS_ENV, MODEL_DIRS_ENV):
        # recorded, so apply_data_dirs' changes are undone afterwards (they used to leak into
        # every later test of the session)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    apply_data_dirs(Settings(host="127.0.0.1"))
    assert data_roots() is None and model_roots() is None  # loopback: the user's own files
    exposed = Settings(
        host="0.0.0.0", secret="a-long-random-secret-0123456789", artifacts_dir="/srv/a"
    )
    apply_data_dirs(exposed)
    # exposed: no server path a user can name unless configured; only the uploads folder, which
    # users cannot name (the API refuses paths inside the server's own folders); no model folder
    assert data_roots() == (Path("/srv/a/datasets").resolve(),)
    assert model_roots() == ()
    apply_data_dirs(
        Settings(
            host="0.0.0.0", data_dirs="/srv/data", model_dirs="/srv/models", artifacts_dir="/srv/a"
        )
    )
    assert data_roots() == (Path("/srv/data").resolve(), Path("/srv/a/datasets").resolve())
    assert model_roots() == (Path("/srv/models").resolve(),)
