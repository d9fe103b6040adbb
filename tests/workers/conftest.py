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
from tests.recorder import Recorder  # noqa: F401  (re-exported to the tests of this area)
from tests.waiting import wait_for  # noqa: F401  (re-exported to the tests of this area)

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
