"""The executor contract (``autopeft.workers.base``), held by every executor: the local process
executor and the Ray executor (skipped where Ray is not installed) run the same tests. What only
one of them does (Ray's retries and placement, the local executor's crash report) is tested in
``test_local_executor.py`` and ``test_ray_executor.py``."""

from __future__ import annotations

import pytest

from autopeft.workers import create_executor
from tests.workers.conftest import REPO, Recorder, run, spec_of, wait_for


@pytest.fixture(params=["local", "ray"])
def kind(request):
    return request.param


@pytest.fixture
def make_executor(kind, request):
    """A new executor of ``kind`` (Ray: joining the module's private Ray); shut down at the end."""
    made = []

    def make():
        if kind == "ray":
            request.getfixturevalue("ray_executor")  # starts (or skips without) the module's Ray
            ex = create_executor("ray", pythonpath=str(REPO), poll_s=0.5, cancel_grace_s=1.0)
        else:
            ex = create_executor("local", pythonpath=str(REPO), prestart=1)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown()


@pytest.fixture
def executor(kind, request, make_executor):
    if kind == "ray":
        return request.getfixturevalue("ray_executor")
    return make_executor()


def test_result_and_reports_flow_back(executor, tmp_path):
    out, rec = run(executor, spec_of(tmp_path, "quick"))
    assert out.state == "complete" and not out.stopped and out.error is None
    assert out.values == {"accuracy": pytest.approx(1.0), "cost": pytest.approx(0.3)}
    assert [s for s, _ in rec.reports] == [0, 1, 2]
    assert rec.reports[1][1] == {"accuracy": pytest.approx(0.1)}
    assert out.retries == []


def test_stop_decision_reaches_the_workload(executor, tmp_path):
    out, rec = run(
        executor,
        spec_of(tmp_path, "steps", steps=5, step_s=0.01),
        Recorder(decision=lambda step: "stop" if step == 1 else "continue"),
    )
    assert out.state == "complete" and out.stopped
    assert [s for s, _ in rec.reports] == [0, 1]


def test_non_continue_decisions_are_relayed_as_stop(executor, tmp_path):
    # e.g. a PBT Exploit: the workload is told "stop", the caller handles the rest
    out, rec = run(executor, spec_of(tmp_path, "quick"), Recorder(decision=object()))
    assert out.state == "complete" and out.stopped and len(rec.reports) == 1


def test_exception_is_a_failed_trial_with_the_message_and_no_retry(executor, tmp_path):
    spec = spec_of(tmp_path, "raises")
    out, _ = run(executor, spec)
    assert out.state == "failed" and not out.cancelled
    assert "ValueError: bad luck with x=0.300" in out.error
    assert out.retries == [] and spec.attempt == 1


def test_cancel_ends_a_running_trial_as_cancelled(executor, tmp_path):
    spec = spec_of(tmp_path, "until_released", release=str(tmp_path / "never"))
    rec = Recorder()
    executor.submit(spec, rec.on_report, rec.on_done)
    wait_for(lambda: rec.reports, 120, "the trial to report")
    assert spec.trial_id in executor.running()
    assert executor.cancel(spec.trial_id)
    out = rec.outcome(60)
    assert out.state == "failed" and out.cancelled and out.error == "cancelled"
    assert out.retries == []
    wait_for(lambda: spec.trial_id not in executor.running(), 10, "the trial to leave running()")
    assert not executor.cancel(123456789)


def test_shutdown_leaves_running_trials_without_on_done(make_executor, tmp_path):
    ex = make_executor()
    spec = spec_of(tmp_path, "until_released", release=str(tmp_path / "never"))
    rec = Recorder()
    ex.submit(spec, rec.on_report, rec.on_done)
    wait_for(lambda: rec.reports, 120, "the trial to report")
    ex.shutdown()
    assert not rec.done.is_set() and ex.running() == []
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(spec_of(tmp_path, "quick"), rec.on_report, rec.on_done)
    ex.shutdown()  # idempotent
