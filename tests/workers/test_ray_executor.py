"""What only the RayExecutor does, on a private local Ray (started by the executor on
127.0.0.1): attempts and retries of lost workers, placement, checkpoints through the object
store, a borrowed cluster left running. The contract it shares with the local executor
(results, reports, decisions, failures, cancel, shutdown) is test_executor_contract.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]')")

from autopeft.workers import create_executor
from tests.workers.conftest import REPO, Recorder, run, spec_of, wait_for
from tests.workers.workloads import records


def test_one_attempt_with_its_granted_resources(ray_executor, tmp_path):
    spec = spec_of(tmp_path, "quick")
    out, _ = run(ray_executor, spec)
    assert out.state == "complete" and out.attempt == 1 and spec.attempt == 1
    (record,) = records(tmp_path / "records")
    assert record["resources"] == {"cpus": 1.0, "gpus": 0.0}


def test_crashed_worker_is_retried_then_completes(ray_executor, tmp_path):
    spec = spec_of(tmp_path, "crash_once", marker=str(tmp_path / "crashed"))
    out, rec = run(ray_executor, spec)
    assert out.state == "complete", out.error
    assert out.attempt == 2 and spec.attempt == 2
    assert len(out.retries) == 1 and "attempt 1 lost its worker" in out.retries[0]
    assert "WorkerCrashedError" in out.retries[0] or "died" in out.retries[0]
    assert [s for s, _ in rec.reports] == [0, 0]  # one report per attempt


def test_always_crashing_worker_fails_after_max_retries_with_the_reason(ray_executor, tmp_path):
    spec = spec_of(tmp_path, "crash")
    out, rec = run(ray_executor, spec)
    assert out.state == "failed" and not out.cancelled
    assert "gave up after 3 attempts; max_retries=2" in out.error
    assert "lost its worker" in out.error
    assert out.attempt == 3 and len(out.retries) == 2 and len(rec.reports) == 3


def test_worker_killed_from_outside_mid_trial_is_retried(ray_executor, tmp_path):
    release = tmp_path / "release"
    spec = spec_of(tmp_path, "until_released", release=str(release))
    rec = Recorder()
    ray_executor.submit(spec, rec.on_report, rec.on_done)
    first = wait_for(lambda: records(tmp_path / "records"), 120, "the first attempt to start")[0]
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: len(records(tmp_path / "records")) == 2, 120, "the second attempt to start")
    release.touch()
    out = rec.outcome()
    assert out.state == "complete" and out.attempt == 2
    assert "attempt 1 lost its worker" in out.retries[0] and f"pid {first['pid']}" in out.retries[0]


def test_infeasible_request_fails_with_the_reason_instead_of_waiting(ray_executor, tmp_path):
    out, _ = run(
        ray_executor, spec_of(tmp_path, "quick", resources={"custom": {"no_such_thing": 1}})
    )
    assert out.state == "failed" and "no node of the Ray cluster can hold" in out.error
    assert "1 no_such_thing" in out.error and "4 CPU" in out.error


def test_bad_resources_fail_the_trial_with_the_field(ray_executor, tmp_path):
    out, _ = run(ray_executor, spec_of(tmp_path, "quick", resources={"gpus": 1.5}))
    assert out.state == "failed" and "workload.resources.gpus" in out.error


def test_custom_resource_and_memory_request(ray_executor, tmp_path):
    out, _ = run(
        ray_executor,
        spec_of(
            tmp_path, "quick", resources={"custom": {"special": 1}, "memory": "64MiB", "cpus": 0.5}
        ),
    )
    assert out.state == "complete", out.error
    (record,) = records(tmp_path / "records")
    assert record["resources"] == {
        "cpus": 0.5,
        "gpus": 0.0,
        "memory": float(64 * 2**20),
        "special": 1.0,
    }


def test_node_labels_select_nodes(ray_executor, tmp_path):
    out, _ = run(ray_executor, spec_of(tmp_path, "quick", resources={"labels": {"zone": "a"}}))
    assert out.state == "complete", out.error
    out, _ = run(ray_executor, spec_of(tmp_path, "quick", resources={"labels": {"zone": "b"}}))
    assert (
        out.state == "failed"
        and "label zone=b" in out.error
        and "no node of the Ray cluster" in out.error
    )


def test_half_gpu_trials_pack_four_onto_two_declared_gpus(ray_executor, tmp_path):
    """2 GPUs declared on a CPU-only host; trials asking 0.5 GPU: 4 run at once, a 5th waits."""
    release = tmp_path / "release"
    gpu = {"gpus": 0.5, "cpus": 0.5}
    recs = []
    for _ in range(5):
        rec = Recorder()
        spec = spec_of(tmp_path, "until_released", resources=gpu, release=str(release))
        ray_executor.submit(spec, rec.on_report, rec.on_done)
        recs.append(rec)
    wait_for(lambda: len(records(tmp_path / "records")) >= 4, 120, "4 trials running at once")
    release.touch()
    outs = [r.outcome() for r in recs]
    assert all(o.state == "complete" for o in outs), [o.error for o in outs]
    rows = sorted(records(tmp_path / "records"), key=lambda r: r["start"])
    assert len(rows) == 5
    first4, fifth = rows[:4], rows[4]
    assert max(r["start"] for r in first4) < min(r["end"] for r in first4)  # all four overlap
    assert fifth["start"] >= min(r["end"] for r in first4)  # the fifth had to wait
    assert all(r["resources"]["gpus"] == 0.5 for r in rows)
    devices = [r["cuda_visible_devices"] for r in first4]
    assert sorted(devices) == ["0", "0", "1", "1"]  # two trials per GPU


def test_checkpoints_travel_through_the_object_store(ray_executor, tmp_path):
    """PBT exploit: a trial continues from another trial's (adapter-only) checkpoint folder."""
    ex = create_executor(
        "ray", checkpoint_transfer="object_store", pythonpath=str(REPO), poll_s=0.5
    )
    try:
        assert not ex.owns_ray
        donor = spec_of(tmp_path, "checkpointing", steps=2)
        out, _ = run(ex, donor)
        assert out.values == {"start": 0.0, "counter": 2.0}
        assert json.loads((Path(donor.checkpoint_dir) / "state.json").read_text()) == {"counter": 2}
        target = spec_of(tmp_path, "checkpointing", steps=3)
        target.restore_dir = donor.checkpoint_dir
        out, _ = run(ex, target)
        assert out.values == {"start": 2.0, "counter": 5.0}
        assert json.loads((Path(target.checkpoint_dir) / "state.json").read_text()) == {
            "counter": 5
        }
        rows = {r["number"]: r for r in records(tmp_path / "records")}
        # the worker used scratch folders of its own, not the controller's paths
        assert rows[target.number]["checkpoint_dir"] != target.checkpoint_dir
        assert rows[target.number]["restore_dir"] != donor.checkpoint_dir
        assert json.loads((Path(donor.checkpoint_dir) / "state.json").read_text()) == {"counter": 2}
    finally:
        ex.shutdown()


def test_oversized_checkpoint_is_refused(ray_executor, tmp_path):
    ex = create_executor(
        "ray", checkpoint_transfer="object_store", max_checkpoint_bytes=4, pythonpath=str(REPO)
    )
    try:
        out, _ = run(ex, spec_of(tmp_path, "checkpointing", steps=1))
        assert (
            out.state == "failed"
            and "max_checkpoint_bytes" in out.error
            and "adapter-only" in out.error
        )
    finally:
        ex.shutdown()


def test_shutdown_of_an_executor_that_borrowed_ray_leaves_ray_running(ray_executor):
    ex = create_executor("ray", pythonpath=str(REPO), poll_s=0.5)
    assert not ex.owns_ray
    ex.shutdown()
    assert ray_executor._ray.is_initialized()


def test_create_executor_knows_ray():
    from autopeft.workers.ray import RayExecutor

    with pytest.raises(ValueError, match="checkpoint_transfer"):
        RayExecutor(checkpoint_transfer="nfs")
    with pytest.raises(ValueError, match="max_retries"):
        RayExecutor(max_retries=-1)


def test_a_cancel_just_before_shutdown_does_not_restart_ray(tmp_path):
    """A cancel forces the kill after ``cancel_grace_s``; when the executor shut Ray down in the
    meantime, that late ``ray.cancel`` used to start a new local Ray in the controller process
    (Ray's auto-init), which later died with the old cluster's GCS and took the process along.
    Run in a process of its own: this module's fixture holds Ray here."""
    import shutil
    import subprocess
    import sys
    import tempfile
    import textwrap

    short = Path(tempfile.mkdtemp(prefix="ap-rc-"))  # Ray's socket paths must stay short

    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from autopeft.workers import create_executor
        from tests.workers.conftest import Recorder, spec_of, wait_for
        from pathlib import Path
        ex = create_executor("ray", num_cpus=1, pythonpath={str(REPO)!r},
                             temp_dir={str(short)!r}, cancel_grace_s=1.0, poll_s=0.2)
        spec = spec_of(Path({str(tmp_path)!r}), "steps", steps=100, step_s=0.2)
        rec = Recorder()
        ex.submit(spec, rec.on_report, rec.on_done)
        wait_for(lambda: rec.reports, 60, "a report")
        ex.cancel(spec.trial_id)
        ex.shutdown()
        time.sleep(12)  # past the grace (the forced cancel fired) and a local Ray's start
        print("RAY_INITIALIZED", ex._ray.is_initialized(), flush=True)
        """
    )
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env
        )
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert "RAY_INITIALIZED False" in proc.stdout, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert proc.stderr.count("Started a local Ray instance") == 1, proc.stderr[-3000:]
