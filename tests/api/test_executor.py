"""The local process executor on its own (no server): results, reports, crashes, cancel."""

from __future__ import annotations

import threading

import pytest

from autopeft.workers import TrialSpec, create_executor
from tests.api.conftest import REPO, wait_for
from tests.recorder import Recorder


@pytest.fixture
def executor():
    ex = create_executor("local", pythonpath=str(REPO), prestart=1)
    yield ex
    ex.shutdown()


def _spec(tmp_path, entry, trial_id=1):
    return TrialSpec(
        trial_id=trial_id,
        study_id=1,
        number=0,
        config={"x": 0.3, "y": 0.0},
        workload={"kind": "python", "entrypoint": f"tests.api.workloads:{entry}"},
        checkpoint_dir=str(tmp_path / "ckpt"),
        log_path=str(tmp_path / "worker.log"),
    )


def _run(executor, spec, rec, timeout=60):
    executor.submit(spec, rec.on_report, rec.on_done)
    assert rec.done.wait(timeout), "on_done was not called"
    wait_for(lambda: spec.trial_id not in executor.running(), 10, "the trial to leave running()")
    assert len(rec.outcomes) == 1
    return rec.outcomes[0]


def test_result_and_reports_flow_back(executor, tmp_path):
    rec = Recorder()
    out = _run(executor, _spec(tmp_path, "quick"), rec)
    assert out.state == "complete" and not out.stopped
    assert out.values == {"accuracy": pytest.approx(1.0), "cost": pytest.approx(0.3)}
    assert [s for s, _ in rec.reports] == [0, 1, 2]


def test_stop_decision_reaches_the_workload(executor, tmp_path):
    rec = Recorder(decision="stop")
    out = _run(executor, _spec(tmp_path, "quick"), rec)
    assert out.state == "complete" and out.stopped
    assert len(rec.reports) == 1


def test_crash_is_a_failed_trial_with_the_reason(executor, tmp_path):
    out = _run(executor, _spec(tmp_path, "crash"), Recorder())
    assert out.state == "failed"
    assert "exited with code 13" in out.error and "about to crash hard" in out.error


def test_exception_is_a_failed_trial_with_the_message(executor, tmp_path):
    out = _run(executor, _spec(tmp_path, "raises"), Recorder())
    assert out.state == "failed" and "ValueError: bad luck with x=0.300" in out.error


def test_cancel(tmp_path):
    executor = create_executor("local", pythonpath=str(REPO), prestart=0)
    try:
        rec = Recorder()
        spec = _spec(tmp_path, "report_then_hang")
        started = threading.Event()
        rec.on_report = lambda step, m: (started.set(), "continue")[1]
        executor.submit(spec, rec.on_report, rec.on_done)
        assert started.wait(90)
        assert executor.cancel(spec.trial_id)
        assert rec.done.wait(30)
        assert rec.outcomes[0].cancelled and rec.outcomes[0].state == "failed"
        assert not executor.cancel(12345)
    finally:
        executor.shutdown()
