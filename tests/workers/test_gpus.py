"""The GPU inventory (its test hook), packing shares onto GPUs, the OOM margin, and the local executor
giving each trial its GPUs through CUDA_VISIBLE_DEVICES and retrying an out-of-memory trial alone."""

from __future__ import annotations

import threading

import pytest

from autopeft.workers.gpus import (
    FAKE_GPUS_ENV,
    Gpu,
    GpuPool,
    MemoryMargin,
    inventory,
    is_cuda_oom,
    parse_fake_gpus,
)
from tests.recorder import Recorder
from tests.workers.workloads import records

GiB = 2**30


def test_fake_inventory_is_read_from_the_environment(monkeypatch):
    assert parse_fake_gpus("2x80GiB") == [Gpu(0, 80 * GiB, "fake"), Gpu(1, 80 * GiB, "fake")]
    assert [g.memory for g in parse_fake_gpus("80GiB, 40GiB")] == [80 * GiB, 40 * GiB]
    with pytest.raises(ValueError, match=FAKE_GPUS_ENV):
        parse_fake_gpus("two big ones")
    monkeypatch.setenv(FAKE_GPUS_ENV, "3x16GiB")
    assert [g.index for g in inventory()] == [0, 1, 2]
    monkeypatch.delenv(FAKE_GPUS_ENV)
    import torch

    assert (inventory() == []) == (not torch.cuda.is_available())


def test_shares_pack_onto_the_fullest_gpu_that_fits():
    pool = GpuPool(parse_fake_gpus("2x10GiB"))
    assert pool.acquire(0.4) == [0]
    assert pool.acquire(0.4) == [0]  # packs with the first
    assert pool.acquire(0.4) == [1]  # 0.8 + 0.4 does not fit on GPU 0
    assert pool.acquire(0.2) == [0]  # fills GPU 0 exactly
    assert (
        pool.acquire(0.7, cancelled=lambda: True) is None
    )  # nothing fits, and the wait is cancelled
    pool.release([1], 0.4)
    assert pool.acquire(0.7) == [1]
    with pytest.raises(ValueError, match="2 GPU"):
        pool.acquire(3)


def test_alone_waits_for_an_empty_gpu_and_keeps_it():
    pool = GpuPool(parse_fake_gpus("1x10GiB"))
    assert pool.acquire(0.3) == [0]
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(0.3, alone=True, poll_s=0.05)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got  # GPU 0 is shared: the retry waits
    pool.release([0], 0.3)
    waiter.join(5)
    assert got == [[0]]
    assert pool.acquire(0.01, cancelled=lambda: True) is None  # nobody joins a GPU held alone
    pool.release([0], 1.0)
    assert pool.acquire(0.5) == [0]


def test_margin_grows_after_an_oom_up_to_its_ceiling():
    margin = MemoryMargin(1.2, growth=1.5, ceiling=2.0)
    assert margin.factor == 1.2 and margin.grow() == pytest.approx(1.8) and margin.grow() == 2.0
    with pytest.raises(ValueError):
        MemoryMargin(0.5)


def test_cuda_oom_is_recognised_by_type():
    import torch

    assert is_cuda_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_cuda_oom(RuntimeError("CUDA out of memory"))
    assert not is_cuda_oom(MemoryError())


def _spec(tmp_path, i, entrypoint, gpus, **config):
    from autopeft.workers import TrialSpec

    return TrialSpec(
        trial_id=i,
        study_id=1,
        number=i,
        config={"record_dir": str(tmp_path), **config},
        workload={
            "kind": "python",
            "entrypoint": f"tests.workers.workloads:{entrypoint}",
            "resources": {"gpus": gpus},
        },
    )


def test_local_executor_gives_each_trial_its_gpu_share(tmp_path):
    from autopeft.workers import create_executor
    from tests.workers.conftest import REPO

    ex = create_executor("local", pythonpath=str(REPO), prestart=0, gpus=parse_fake_gpus("2x10GiB"))
    try:
        release = tmp_path / "release"
        recs = []
        for i in range(4):
            rec = Recorder()
            ex.submit(
                _spec(tmp_path, i, "until_released", 0.5, release=str(release)),
                rec.on_report,
                rec.on_done,
            )
            recs.append(rec)
        from tests.waiting import wait_for

        wait_for(lambda: len(records(tmp_path)) >= 4, 120, "four trials holding GPU shares at once")
        release.write_text("go")
        outs = [r.outcome(120) for r in recs]
        assert all(o.state == "complete" for o in outs), [o.error for o in outs]
        rows = records(tmp_path)
        assert sorted(r["cuda_visible_devices"] for r in rows) == [
            "0",
            "0",
            "1",
            "1",
        ]  # two per GPU
        assert all(r["resources"]["gpus"] == 0.5 for r in rows)
        plain = Recorder()
        (tmp_path / "plain").mkdir()
        ex.submit(_spec(tmp_path / "plain", 9, "quick", 0), plain.on_report, plain.on_done)
        assert plain.outcome(120).state == "complete"
        assert (
            records(tmp_path / "plain")[0]["cuda_visible_devices"] == ""
        )  # no GPU granted: none visible
    finally:
        ex.shutdown()


def test_local_executor_retries_an_oom_alone_and_grows_the_margin(tmp_path):
    from autopeft.workers import create_executor
    from tests.workers.conftest import REPO

    ex = create_executor("local", pythonpath=str(REPO), prestart=0, gpus=parse_fake_gpus("1x10GiB"))
    try:
        before = ex.margin.factor
        rec = Recorder()
        ex.submit(
            _spec(tmp_path, 1, "oom_once", 0.25, marker=str(tmp_path / "oom")),
            rec.on_report,
            rec.on_done,
        )
        out = rec.outcome(120)
        assert out.state == "complete", out.error
        assert out.attempt == 2 and len(out.retries) == 1 and "out of memory" in out.retries[0]
        assert "alone" in out.retries[0] and ex.margin.factor > before
        rows = sorted(records(tmp_path), key=lambda r: r["start"])
        assert [r["resources"]["gpus"] for r in rows] == [0.25, 1.0]
        # a second OOM every time: given up after oom_retries, a failed trial with the reason
        rec = Recorder()
        (tmp_path / "always").mkdir()
        ex.submit(_spec(tmp_path / "always", 2, "oom_always", 0.25), rec.on_report, rec.on_done)
        out = rec.outcome(120)
        assert out.state == "failed" and "OutOfMemoryError" in out.error and len(out.retries) == 2
    finally:
        ex.shutdown()
