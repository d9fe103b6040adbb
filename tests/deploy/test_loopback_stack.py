"""The docker-compose topology without Docker: every service a process on 127.0.0.1.

    postgres    a throw-away PostgreSQL 15 server (tests/api/conftest.py)
    ray-head    ``ray start --head`` with no CPUs, as in the compose file (tests/workers/cluster.py)
    ray-worker  ``ray start --address=...`` with the CPUs that run the trials
    api         ``autopeft serve --db postgresql+psycopg://... --executor ray --ray-address ...``

One study (a python workload) runs end to end while the API is killed (SIGKILL) and started
again, and the Ray worker node is killed and replaced by a new one. Every trial that was
complete before a restart is still complete afterwards with the same values and attempt count
(none lost, none re-run), and the study finishes with exactly ``max_trials`` complete trials.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]')")

from tests.api.conftest import (
    REPO,
    Server,
    client_for,
    make_token,
    postgres,  # noqa: F401  (a fixture)
    python_study,
    wait_for,
)
from tests.workers.cluster import LocalCluster
from tests.workers.workloads import records

N_TRIALS = 10


class ServeProcess(Server):
    """The controller started the way the compose ``api`` service starts it: ``autopeft serve``
    with the database and the Ray cluster on its command line (migrations run at start)."""

    def __init__(self, db_url: str, workdir: Path, ray_address: str, env: dict[str, str]):
        super().__init__(db_url, workdir, env)
        self.ray_address = ray_address

    def start(self, timeout: float = 120) -> ServeProcess:
        env = self.env()
        env.pop("AUTOPEFT_DB_URL")  # the command line says it
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autopeft.cli",
                "serve",
                "--db",
                self.db_url,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--executor",
                "ray",
                "--ray-address",
                self.ray_address,
            ],
            env=env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"autopeft serve exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                return (
                    httpx.get(self.url + "/healthz", timeout=2, trust_env=False).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout, "autopeft serve to answer /healthz", 0.2)
        return self


@pytest.fixture
def stack(postgres, tmp_path):  # noqa: F811
    root = Path(tempfile.mkdtemp(prefix="autopeft-stack-"))
    rec_dir = root / "records"
    rec_dir.mkdir()
    cluster = LocalCluster(
        root, env={"PYTHONPATH": str(REPO), "AUTOPEFT_TEST_RECORD_DIR": str(rec_dir)}
    )
    cluster.records = rec_dir
    servers: list[ServeProcess] = []
    db_url = postgres.new_database()

    def api() -> ServeProcess:
        server = ServeProcess(db_url, tmp_path, cluster.address, cluster.driver_env())
        servers.append(server)
        return server.start()

    try:
        cluster.start_node("head", num_cpus=0, head=True)
        cluster.start_node("worker-1", num_cpus=2)
        yield cluster, db_url, api
    finally:
        for server in servers:
            server.stop()
        cluster.close()


def _complete(study) -> dict[int, tuple]:
    """number -> (id, values, attempts, finished_at) of the complete trials."""
    return {
        t["number"]: (t["id"], t["values"], t["attempts"], t["finished_at"])
        for t in study.trials(state="complete")
    }


def test_stack_survives_api_and_worker_restarts(stack):
    cluster, db_url, api = stack
    server = api()
    # `autopeft serve` migrated the fresh database at start (before any token exists)
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    token = make_token(db_url, "ops")
    client = client_for(server, token)
    spec = python_study(
        "tests.workers.workloads:steps",
        name="loopback-stack",
        max_trials=N_TRIALS,
        max_parallel=2,
        space={
            "params": {
                "x": {"type": "float", "low": 0.0, "high": 1.0},
                "steps": {"type": "int", "low": 5, "high": 6},
            }
        },
    )
    study = client.create_study(spec=spec)

    # 1. the API dies mid-study (SIGKILL: no clean shutdown) and is started again
    wait_for(
        lambda: (
            study.refresh().counts.get("complete", 0) >= 2 and study.counts.get("running", 0) > 0
        ),
        180,
        "complete and running trials before the API restart",
        0.2,
    )
    before_api, api_killed_at = _complete(study), time.time()
    server.kill9()
    server = api()
    study = client_for(server, token).study(study.id)

    # 2. the Ray worker node dies while it runs a trial; a new worker node joins
    def running_on_worker_1():
        done = len(_complete(study.refresh()))
        live = [
            r for r in records(cluster.records) if r["node_name"] == "worker-1" and r["end"] is None
        ]
        return live if done >= len(before_api) + 2 and live and study.state == "running" else None

    wait_for(running_on_worker_1, 180, "more complete trials and one running on worker-1", 0.2)
    before_worker, worker_killed_at = _complete(study), time.time()
    cluster.kill_raylet("worker-1")
    cluster.start_node("worker-2", num_cpus=2)

    study.wait(timeout=300, poll=0.5, progress=False)
    trials = study.trials()
    assert study.state == "finished", (study.data, server.log())
    assert study.counts["complete"] == N_TRIALS, (study.counts, [t.get("error") for t in trials])
    assert sorted(t["number"] for t in trials) == list(range(N_TRIALS))
    after = _complete(study)
    for snapshot in (before_api, before_worker):
        for number, row in snapshot.items():
            assert after[number] == row, (
                f"trial {number} changed after a restart: {row} -> {after[number]}"
            )

    rows = records(cluster.records)
    assert {r["node_name"] for r in rows} == {"worker-1", "worker-2"}, (
        "trials ran elsewhere than the workers"
    )
    # attempts cut short (by either kill) never ended; their trials ran again with attempts + 1
    cut = [r for r in rows if r["end"] is None]
    assert any(r["node_name"] == "worker-1" and r["start"] > api_killed_at for r in cut), (
        "the worker node was not killed under a running trial"
    )
    by_number = {t["number"]: t for t in trials}
    assert all(by_number[r["number"]]["attempts"] >= 2 for r in cut), [
        (r["number"], by_number[r["number"]]["attempts"]) for r in cut
    ]
    # nothing that was complete at a restart ran again afterwards
    for snapshot, at in ((before_api, api_killed_at), (before_worker, worker_killed_at)):
        rerun = [r["number"] for r in rows if r["number"] in snapshot and r["start"] > at]
        assert not rerun, f"complete trials ran again after a restart: {rerun}"
