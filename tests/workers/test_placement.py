"""Resource requests of trials (pure; no Ray): precedence, GPU fractions, predicted memory."""

from __future__ import annotations

import pytest

from autopeft.errors import InvalidConfig
from autopeft.workers.placement import (
    ResourceRequest,
    gpu_fraction,
    predicted_memory_bytes,
    request_for,
)

PY = {"kind": "python", "entrypoint": "tests.workers.workloads:quick"}


def test_defaults_then_spec_then_workload():
    assert request_for(PY, {}, None) == ResourceRequest(cpus=1.0, gpus=0.0)
    assert request_for(PY, {}, {"cpus": 2, "gpus": 0}, gpus=0.25).cpus == 2.0
    req = request_for(
        {
            **PY,
            "resources": {
                "cpus": 0.5,
                "gpus": 0.5,
                "memory": "1GiB",
                "custom": {"a100": 1},
                "labels": {"zone": "b"},
            },
        },
        {},
        {"cpus": 2, "gpus": 0},
        custom={"pool": 1},
        labels={"zone": "a"},
    )
    assert (req.cpus, req.gpus, req.memory) == (0.5, 0.5, 2**30)
    assert req.custom == {"pool": 1, "a100": 1.0} and req.labels == {"zone": "b"}
    assert req.ray_options() == {
        "num_cpus": 0.5,
        "num_gpus": 0.5,
        "memory": 2**30,
        "resources": {"pool": 1, "a100": 1.0},
        "label_selector": {"zone": "b"},
    }
    assert req.granted() == {
        "cpus": 0.5,
        "gpus": 0.5,
        "memory": float(2**30),
        "pool": 1,
        "a100": 1.0,
    }


@pytest.mark.parametrize(
    "need, gpu, share",
    [
        (1, 100, 0.01),
        (10, 100, 0.1),
        (11, 100, 0.11),
        (1001, 10000, 0.11),
        (100, 100, 1.0),
        (150, 100, 2.0),
    ],
)
def test_gpu_fraction_rounds_up_to_a_hundredth(need, gpu, share):
    assert gpu_fraction(need, gpu) == share


def test_fits_checks_every_resource_and_label():
    req = ResourceRequest(cpus=1, gpus=0.5, memory=100, custom={"special": 1}, labels={"zone": "a"})
    node = {"CPU": 2, "GPU": 1, "memory": 1000, "special": 1}
    assert req.fits(node, {"zone": "a"})
    assert not req.fits(node, {"zone": "b"})
    assert not req.fits({**node, "special": 0}, {"zone": "a"})
    assert not req.fits({"CPU": 2, "memory": 1000, "special": 1}, {"zone": "a"})  # no GPU


def test_peft_memory_is_the_predicted_peak_times_the_margin(minilm_path):
    import autopeft
    from autopeft.models import load_model_config

    workload = {
        "kind": "peft",
        "model": str(minilm_path),
        "dataset": "tweets",
        "labels": ["a", "b", "c"],
    }
    model_config = load_model_config(minilm_path)
    config = autopeft.load_space("lora_per_layer", model_config).sample(1, seed=0)[0]
    peak = autopeft.estimate_memory(config, model_config, {**workload, "batch_size": 32}).total
    weights = (minilm_path / "model.safetensors").stat().st_size
    assert peak > weights  # weights, AdamW states, activations
    assert predicted_memory_bytes(workload, config) == peak  # batch 32: the largest default
    assert predicted_memory_bytes({**workload, "batch_size": 8}, config) < peak
    req = request_for(
        workload, config, None, memory_overhead_bytes=1000, gpu_memory_bytes=10 * 2**30
    )
    assert req.memory == peak + 1000 and req.gpus == 0.0
    auto = request_for(
        {**workload, "resources": {"gpus": "auto"}},
        config,
        None,
        memory_overhead_bytes=1000,
        gpu_memory_bytes=10 * 2**30,
        margin=1.5,
    )
    assert auto.memory == int(peak * 1.5) + 1000
    assert auto.gpus == gpu_fraction(int(peak * 1.5) + 1000, 10 * 2**30) and 0 < auto.gpus < 1
    assert auto.alone().gpus == 1.0 and ResourceRequest(gpus=1.5).alone().gpus == 2.0
    # an executor's default "auto" gives peft trials a share on a GPU node, python workloads none
    assert request_for(
        workload, config, None, gpus="auto", gpu_memory_bytes=10 * 2**30
    ).gpus == gpu_fraction(peak, 10 * 2**30)
    assert request_for(PY, {}, None, gpus="auto", gpu_memory_bytes=10 * 2**30).gpus == 0.0
    assert request_for(workload, config, None, gpus="auto").gpus == 0.0  # no GPU on the node


def test_auto_needs_a_prediction_and_the_gpu_size():
    with pytest.raises(InvalidConfig, match="no GPU") as err:
        request_for({**PY, "resources": {"gpus": "auto"}}, {}, None)
    assert err.value.field == "workload.resources.gpus"
    with pytest.raises(InvalidConfig, match="no memory prediction"):
        request_for({**PY, "resources": {"memory": "auto"}}, {}, None)


def test_unreadable_model_falls_back_to_no_memory_request(caplog):
    workload = {"kind": "peft", "model": "/nonexistent/model", "dataset": "tweets"}
    assert predicted_memory_bytes(workload, {}) is None
    assert "no memory prediction" in caplog.text
    assert request_for(workload, {}, None).memory is None


def test_a_gang_asks_per_worker_and_is_placed_as_a_whole(minilm_path):
    """``workers: n``: memory is predicted for one worker's share of the batch, every field is per
    worker, and the gang fits only where the nodes together hold all its workers."""
    import autopeft
    from autopeft.models import load_model_config

    workload = {"kind": "peft", "model": str(minilm_path), "dataset": "tweets", "batch_size": 32}
    config = autopeft.load_space("lora_per_layer", load_model_config(minilm_path)).sample(
        1, seed=0
    )[0]
    gang = request_for(
        {**workload, "resources": {"workers": 4, "cpus": 2, "gpus_per_worker": 1}}, config, None
    )
    assert (gang.workers, gang.cpus, gang.gpus) == (4, 2.0, 1.0)
    assert gang.memory == predicted_memory_bytes({**workload, "batch_size": 8}, config)
    assert gang.memory < predicted_memory_bytes(workload, config)
    assert gang.granted()["workers"] == 4.0
    assert gang.describe().startswith("4 workers x (2 CPU, 1 GPU")
    node = ({"CPU": 4.0, "GPU": 2.0, "memory": 2.0**40}, {})
    assert gang.gang_fits([node, node])  # 2 + 2 workers
    assert not gang.gang_fits([node])  # one node holds 2 of the 4
    assert not gang.gang_fits([node, ({"CPU": 8.0, "memory": 2.0**40}, {})])  # no GPU there
    with pytest.raises(InvalidConfig) as err:
        request_for({**PY, "resources": {"workers": 2}}, {}, None)
    assert err.value.field == "workload.resources.workers"
