"""The Ray executor on a real GPU: two trials asking 0.5 GPU share it and both compute on CUDA.
Skipped where torch sees no CUDA device."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]')")
torch = pytest.importorskip("torch")

from autopeft.workers import TrialSpec, create_executor  # noqa: E402
from tests.workers.conftest import REPO, Recorder  # noqa: E402
from tests.workers.workloads import records  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def test_half_gpu_trials_run_on_the_gpu(tmp_path):
    ex = create_executor("ray", num_cpus=2, pythonpath=str(REPO), temp_dir=str(tmp_path / "ray"))
    try:
        assert ex.owns_ray
        recs = []
        for i in range(2):
            spec = TrialSpec(
                trial_id=i,
                study_id=1,
                number=i,
                config={"record_dir": str(tmp_path)},
                workload={
                    "kind": "python",
                    "entrypoint": "tests.workers.workloads:gpu_probe",
                    "resources": {"gpus": 0.5, "cpus": 1},
                },
            )
            rec = Recorder()
            ex.submit(spec, rec.on_report, rec.on_done)
            recs.append(rec)
        outs = [r.outcome(300) for r in recs]
        assert all(o.state == "complete" for o in outs), [o.error for o in outs]
        assert all(
            o.values["cuda"] == 1.0 and o.values["devices"] == 1.0 and o.values["gpus"] == 0.5
            for o in outs
        )
        assert all(
            str(r["cuda_visible_devices"]).isdigit() for r in records(tmp_path)
        )  # one GPU each
    finally:
        ex.shutdown()
