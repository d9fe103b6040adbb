"""What only the local process executor does (the shared contract: test_executor_contract.py):
a worker process that dies without a result is a failed trial naming its exit code and ending
with the last lines of its log."""

from __future__ import annotations

import pytest

from autopeft.workers import create_executor
from tests.workers.conftest import REPO, run, spec_of


@pytest.fixture
def executor():
    ex = create_executor("local", pythonpath=str(REPO), prestart=1)
    yield ex
    ex.shutdown()


def test_crash_is_a_failed_trial_with_the_exit_code_and_the_log_tail(executor, tmp_path):
    spec = spec_of(tmp_path, "crash_once", marker=str(tmp_path / "crashed"))
    out, rec = run(executor, spec)
    assert out.state == "failed" and not out.cancelled
    assert "exited with code 13" in out.error and "about to crash hard" in out.error
    assert len(rec.reports) == 1 and spec.attempt == 1  # not retried: a config that crashes
