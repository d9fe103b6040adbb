"""Fixtures of the executor tests: one small private Ray on 127.0.0.1 per module, started by
the executor itself (the default path), with its own temp dir; stopped by a finalizer. Tests of
the local executor run where Ray is not installed (the Ray fixtures skip then).

Ray must see ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before it is imported, or it listens on
the host's address instead of loopback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# fixtures shared with the API tests, made available to every test of this area
from tests.api.conftest import server_factory, sqlite_url, workdir  # noqa: F401
from tests.api.test_remote_user import tiny_model  # noqa: F401
from tests.recorder import Recorder
from tests.waiting import wait_for

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_tmp():
    with tempfile.TemporaryDirectory(prefix="autopeft-rt-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def ray_executor(ray_tmp):
    """A RayExecutor that started its own Ray: 4 CPUs, 2 GPUs declared (none needed), a custom
    resource ``special``, a node label ``zone=a``; 2 retries; quick polling."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]')")
    from autopeft.workers import create_executor

    ex = create_executor(
        "ray",
        num_cpus=4,
        num_gpus=2,
        resources={"special": 1.0},
        node_labels={"zone": "a"},
        pythonpath=str(REPO),
        temp_dir=str(ray_tmp / "ray"),
        max_retries=2,
        poll_s=0.5,
        infeasible_timeout_s=0,
        cancel_grace_s=1.0,
    )
    yield ex
    ex.shutdown()
    assert not ex._ray.is_initialized()


_IDS = iter(range(1000, 100000))


def spec_of(tmp_path: Path, entry: str, resources: dict | None = None, **config):
    """A ``TrialSpec`` of ``tests.workers.workloads:<entry>`` with its own trial id and folders
    under ``tmp_path`` (records in ``records/``); ``resources``: the workload's request."""
    from autopeft.workers import TrialSpec

    tid = next(_IDS)
    workload = {"kind": "python", "entrypoint": f"tests.workers.workloads:{entry}"}
    if resources is not None:
        workload["resources"] = resources
    (tmp_path / "records").mkdir(exist_ok=True)
    return TrialSpec(
        trial_id=tid,
        study_id=1,
        number=tid,
        config={"x": 0.3, "y": 0.0, "record_dir": str(tmp_path / "records"), **config},
        workload=workload,
        checkpoint_dir=str(tmp_path / f"ckpt-{tid}"),
        log_path=str(tmp_path / f"worker-{tid}.log"),
    )


def run(executor, spec, rec=None, timeout=120):
    """Submit ``spec``; its one outcome once it has left ``running()``, and the recorder."""
    rec = rec or Recorder()
    executor.submit(spec, rec.on_report, rec.on_done)
    out = rec.outcome(timeout)
    wait_for(lambda: spec.trial_id not in executor.running(), 10, "the trial to leave running()")
    return out, rec
