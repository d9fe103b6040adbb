"""Data-parallel trials (``workload.resources.workers > 1``) on Ray Train, inside the cluster.

The Ray executor runs :func:`run_gang_trial` as a task pinned to the controller's node (no CPU of
its own). It runs one ``ray.train.torch.TorchTrainer`` whose workers (one per ``workers``, each
with the per-worker request, packed onto as few nodes as fit) run :func:`gang_worker`: the
same trial attempt as a single-process Ray task (``_ray_remote.run_trial``), with the process
group Ray Train set up (``gloo`` on CPUs, ``nccl`` on GPUs). The trainer loop shards each global
batch and averages gradients with DDP (``autopeft.trials.parallel``).

Rank 0 is the trial as the controller sees it: it sends the ``start`` event, reports through the
hub (with its checkpoint, saved by it alone), and ends with a ``result`` event that carries what a
single task would return; it waits for the controller's answer, so its last checkpoint is fetched
before the worker group goes away. The other ranks read the same restore checkpoint, save none
and report nothing.

Failures. Ray Train runs with ``max_failures=0``: the executor owns retries. An exception of the
workload on any rank fails the whole gang at once (the other ranks would otherwise wait in a
collective) and comes back as an ``error`` (not retried, like a single task); a worker or node
lost (its actor died) comes back as ``lost``, and the executor retries the trial from its last
shipped checkpoint, as for a single task.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

#: errors in Ray Train's ``worker_failures`` that mean a worker (or its node) was lost, besides
#: the executor's own list (``_ray_cluster.SYSTEM_ERRORS``): Ray Train's health checks, and a
#: collective that lost its peer (the surviving ranks of a gang whose other worker died raise
#: these, often before Ray Train has seen the death)
TRAIN_LOST = frozenset(
    (
        "WorkerHealthCheckFailedError",
        "WorkerHealthCheckTimeoutError",
        "DistNetworkError",
        "DistBackendError",
        "DistStoreError",
    )
)
#: how long a gang may wait for its workers' resources (Ray Train's worker group start timeout)
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
GANG_START_TIMEOUT_S = 24 * 3600
#: a collective whose peer went away, in the words of the plain RuntimeErrors gloo raises
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def gang_worker(cfg: dict[str, Any]) -> None:
    """One rank of the gang (Ray Train's ``train_loop_per_worker``)."""
    import ray
    import ray.train
    import torch

    from autopeft.workers._attempt import run_attempt
    from autopeft.workers._ray_remote import Channel, CheckpointTooLarge, Placement, announce

    rank = ray.train.get_context().get_world_rank()
    if cfg["use_gpu"]:
        from ray.train.torch import get_device

        torch.cuda.set_device(get_device())  # "cuda" is now this worker's GPU
    main = rank == 0
    hub, key = cfg["hub"], cfg["key"]
    if main:
        node = announce(hub, key, workers=cfg["workers"])
    else:
        node = ray.get_runtime_context().get_node_id()
    place = Placement.on_node(
        cfg["spec"],
        node,
        cfg["driver_node"],
        cfg["transfer"],
        cfg["restore_blob"],
        cfg["data"],
        checkpoint=main,
    )
    channel = Channel(hub, key, place, cfg["max_checkpoint_bytes"]) if main else None
    try:
        with place.log_output() if main else contextlib.nullcontext():
            # no exception is caught: one rank's error must end every rank (see the module doc)
            result = run_attempt(
                place.spec,
                channel.report if channel is not None else None,
                place.checkpoint,
                place.restore,
                (),
            )
        if channel is None:
            return
        result["node_id"] = node
        try:
            blob = channel.shipped_checkpoint()
        except CheckpointTooLarge as err:
            result, blob = {"type": "error", "message": str(err), "node_id": node}, None
        channel.send({"type": "result", "result": result}, blob)
    finally:
        place.close()


def run_gang_trial(
    spec: dict[str, Any],
    hub: Any,
    key: str,
    driver_node: str,
    transfer: str,
    restore_blob: bytes | None,
    max_checkpoint_bytes: int,
    data: list | None,
    gang: dict[str, Any],
) -> dict[str, Any]:
    """Run one attempt of a data-parallel trial (see the module docstring). Returns
    ``{"type": "gang"}`` when rank 0 delivered its result through the hub, ``{"type": "error",
    "message", "oom"}`` for an exception of the workload, ``{"type": "lost", "message"}`` when a
    worker or node was lost.

    ``gang``: ``workers``, ``resources_per_worker`` (Ray resource names), ``use_gpu``,
    ``label_selector`` (or None)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from autopeft.workers._ray_cluster import first_line
    from autopeft.workers.gpus import is_cuda_oom

    use_gpu = bool(gang["use_gpu"])
    # A busy cluster is no failure: the gang waits for its workers' resources as a single task
    # waits in Ray's queue (Ray Train gives up after 60 s by default; the executor fails a request
    # that no set of alive nodes can ever hold after its infeasible_timeout_s). Ray Train hands
    # the variable on from this process to its controller.
    os.environ.setdefault(START_TIMEOUT_ENV, str(GANG_START_TIMEOUT_S))
    storage = tempfile.mkdtemp(prefix="autopeft-gang-")
    trainer = TorchTrainer(
        gang_worker,
        train_loop_config={
            "spec": spec,
            "hub": hub,
            "key": key,
            "driver_node": driver_node,
            "transfer": transfer,
            "restore_blob": restore_blob,
            "max_checkpoint_bytes": max_checkpoint_bytes,
            "data": data,
            "use_gpu": use_gpu,
            "workers": int(gang["workers"]),
        },
        scaling_config=ScalingConfig(
            num_workers=int(gang["workers"]),
            use_gpu=use_gpu,
            resources_per_worker=dict(gang["resources_per_worker"]),
            placement_strategy="PACK",
            label_selector=gang.get("label_selector") or None,
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=f"autopeft-{key.replace(':', '-')}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    try:
        trainer.fit()
    except Exception as err:
        failures = _failures(err)
        lost = [e for e in failures.values() if _is_lost(e)]
        if lost or not failures:
            why = lost[0] if lost else err
            return {"type": "lost", "message": f"a worker of the gang was lost: {first_line(why)}"}
        rank, exc = min(failures.items())
        detail = str(err).strip()
        return {
            "type": "error",
            "message": f"{type(exc).__name__}: {exc} (worker {rank} of {gang['workers']})\n"
            f"{detail[-3000:]}",
            "oom": is_cuda_oom(exc),
        }
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return {"type": "gang"}


def _failures(err: BaseException) -> dict[int, BaseException]:
    """Ray Train's per-rank errors of a failed run (on the error or its cause)."""
    for e in (err, err.__cause__, err.__context__):
        failures = getattr(e, "worker_failures", None)
        if failures:
            return dict(failures)
    return {}


def _is_lost(err: BaseException) -> bool:
    from autopeft.workers._ray_cluster import is_lost_worker

    names = {c.__name__ for c in type(err).__mro__}
    return is_lost_worker(err) or bool(names & TRAIN_LOST) or any(m in str(err) for m in PEER_LOST)
