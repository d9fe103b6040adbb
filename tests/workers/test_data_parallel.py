"""Data-parallel trials on Ray Train (``workload.resources.workers``), on a private Ray on 127.0.0.1
with CPU workers (gloo): the real peft workload on a tiny BERT.

* With the same global batch and seed, and dropout off, a trial on 2 workers reports the losses of
  the same trial on 1 worker (each report's training and validation loss, within 1e-5; measured 7.5e-8): the
  gang shards each global batch and DDP averages gradients, so both take the same steps. The
  batch size leaves a last batch of one row, so one worker takes part with weight 0.
* The gang's trial reports once per step and writes one checkpoint (rank 0's), which a later
  trial restores from to go on as if never cut.
* An exception of the workload on any rank fails the trial at once with the error, not retried.
* Cancelling a gang ends all its workers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]')")

from tests.conftest import tiny_peft_workload
from tests.workers.conftest import REPO, run

#: 126 training rows at batch 25: 6 steps an epoch, the last of one row (one worker gets none)
BATCH = 25
TOL = 1e-5


@pytest.fixture(scope="module")
def executor(ray_tmp):
    from autopeft.workers import create_executor

    ex = create_executor(
        "ray",
        num_cpus=2,
        pythonpath=str(REPO),
        temp_dir=str(ray_tmp / "ray"),
        max_retries=1,
        poll_s=0.5,
        infeasible_timeout_s=5,
    )
    yield ex
    ex.shutdown()


_IDS = iter(range(5000, 6000))


def _spec(tmp_path: Path, model, dataset, workers: int, restore: str | None = None, **fields):
    from autopeft.workers import TrialSpec

    tid = next(_IDS)
    fields = {"epochs": 2, "evals_per_epoch": 2, **fields}
    workload = tiny_peft_workload(
        model, dataset, batch_size=BATCH, resources={"workers": workers, "cpus": 1}, **fields
    )
    return TrialSpec(
        trial_id=tid,
        study_id=1,
        number=tid,
        config={"lora.rank": 4, "lr": 3e-3, "dropout": 0.0, "seed": 7},
        workload=workload,
        checkpoint_dir=str(tmp_path / f"ckpt-{tid}"),
        restore_dir=restore,
    )


def _losses(rec) -> list[tuple[int, float, float]]:
    return [(step, m["train_loss"], m["loss"]) for step, m in rec.reports]


def test_two_workers_take_the_steps_of_one(executor, tmp_path, tiny_model, small_csv):
    one, rec1 = run(executor, _spec(tmp_path, tiny_model, small_csv, 1), timeout=300)
    spec2 = _spec(tmp_path, tiny_model, small_csv, 2)
    two, rec2 = run(executor, spec2, timeout=300)
    assert one.state == "complete", one.error
    assert two.state == "complete", two.error
    assert [s for s, *_ in _losses(rec2)] == [1, 2, 3, 4]  # each report once, from rank 0 only
    for (s1, tl1, vl1), (s2, tl2, vl2) in zip(_losses(rec1), _losses(rec2), strict=True):
        assert s1 == s2
        assert math.isclose(tl1, tl2, abs_tol=TOL), (s1, tl1, tl2)
        assert math.isclose(vl1, vl2, abs_tol=TOL), (s1, vl1, vl2)
    assert math.isclose(one.values["accuracy"], two.values["accuracy"], abs_tol=1e-9)
    assert two.values["train_examples"] == one.values["train_examples"]
    assert two.values["workers"] == 2 and "workers" not in one.values  # it ran on a gang
    diffs = [
        max(abs(a[1] - b[1]), abs(a[2] - b[2]))
        for a, b in zip(_losses(rec1), _losses(rec2), strict=True)
    ]
    print(f"largest loss difference, 1 vs 2 workers: {max(diffs):.2e}")
    # the losses moved: equal curves are not two untrained models
    assert _losses(rec2)[-1][1] < _losses(rec2)[0][1]
    # one checkpoint, rank 0's, in the trial's folder
    ckpt = Path(spec2.checkpoint_dir)
    assert (ckpt / "meta.json").is_file()
    assert not list(tmp_path.glob("**/ckpt-*-rank*"))


@pytest.mark.slow
def test_a_causal_lm_gang_takes_the_steps_of_one(executor, tmp_path, tiny_gpt2, sft_jsonl):
    """The causal-LM loss is a mean over completion tokens, which the workers hold in unequal
    numbers: each worker's share is weighted by its tokens (summed over the gang), so the losses
    still equal the one-worker trial's."""
    from autopeft.workers import TrialSpec

    outs = []
    for workers in (1, 2):
        tid = next(_IDS)
        spec = TrialSpec(
            trial_id=tid,
            study_id=1,
            number=tid,
            config={"lora.rank": 4, "lora.targets": "q,v", "lr": 1e-2, "dropout": 0.0},
            workload={
                "kind": "peft",
                "task": "causal_lm",
                "model": str(tiny_gpt2),
                "dataset": str(sft_jsonl),
                "validation_fraction": 0.2,
                "batch_size": 13,
                "max_length": 48,
                "epochs": 1,
                "evals_per_epoch": 2,
                "resources": {"workers": workers, "cpus": 1},
            },
        )
        out, rec = run(executor, spec, timeout=300)
        assert out.state == "complete", out.error
        outs.append((out, _losses(rec)))
    (one, l1), (two, l2) = outs
    assert two.values["workers"] == 2 and len(l1) == len(l2) == 2
    for (s1, tl1, vl1), (s2, tl2, vl2) in zip(l1, l2, strict=True):
        assert s1 == s2
        assert math.isclose(tl1, tl2, abs_tol=TOL), (s1, tl1, tl2)
        assert math.isclose(vl1, vl2, abs_tol=TOL), (s1, vl1, vl2)


@pytest.mark.slow
def test_a_gang_resumes_from_its_checkpoint_as_if_never_cut(
    executor, tmp_path, tiny_model, small_csv
):
    from tests.recorder import Recorder

    straight, rec_straight = run(executor, _spec(tmp_path, tiny_model, small_csv, 2), timeout=300)

    class StopAt2(Recorder):
        def on_report(self, step, metrics):
            super().on_report(step, metrics)
            return "stop" if step >= 2 else "continue"

    first = _spec(tmp_path, tiny_model, small_csv, 2)
    cut, _ = run(executor, first, rec=StopAt2(), timeout=300)
    assert cut.state == "complete" and cut.stopped, cut.error
    resumed_spec = _spec(tmp_path, tiny_model, small_csv, 2, restore=first.checkpoint_dir)
    resumed, rec_resumed = run(executor, resumed_spec, timeout=300)
    assert resumed.state == "complete", resumed.error
    assert [s for s, *_ in _losses(rec_resumed)] == [3, 4]
    for (s1, tl1, vl1), (s2, tl2, vl2) in zip(
        _losses(rec_straight)[2:], _losses(rec_resumed), strict=True
    ):
        assert s1 == s2
        assert math.isclose(tl1, tl2, abs_tol=TOL), (s1, tl1, tl2)
        assert math.isclose(vl1, vl2, abs_tol=TOL), (s1, vl1, vl2)


def test_an_error_on_a_rank_fails_the_trial_without_retry(
    executor, tmp_path, tiny_model, small_csv
):
    spec = _spec(tmp_path, tiny_model, small_csv, 2, max_length=0)
    out, rec = run(executor, spec, timeout=300)
    assert out.state == "failed"
    assert "max_length" in out.error
    assert "of 2)" in out.error.splitlines()[0], out.error  # "(worker r of 2)": from the gang
    assert out.retries == [] and not rec.reports


@pytest.mark.slow
def test_cancelling_a_gang_ends_every_worker(executor, tmp_path, tiny_model, small_csv):
    from tests.recorder import Recorder
    from tests.waiting import wait_for
    from tests.workers.cluster import gang_workers

    spec = _spec(tmp_path, tiny_model, small_csv, 2, epochs=200)
    rec = Recorder()
    executor.submit(spec, rec.on_report, rec.on_done)
    wait_for(lambda: rec.reports, 120, "the gang's first report", 0.2)
    assert len(gang_workers()) == 2
    assert executor.cancel(spec.trial_id)
    out = rec.outcome(120)
    assert out.state == "failed" and out.cancelled, out
    wait_for(lambda: not gang_workers(), 60, "the gang's workers to exit", 0.5)
    assert spec.trial_id not in executor.running()
