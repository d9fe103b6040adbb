"""Ray executor: every trial attempt is a Ray task with its own resource request.

Same contract and semantics as :class:`autopeft.workers.local.LocalProcessExecutor` (same
callbacks, same outcome states and messages for exceptions and cancels), so the scheduler
cannot tell them apart. What Ray adds:

* **Placement.** Each attempt asks for CPUs, GPUs (fractions pack trials onto one GPU), memory,
  custom resources and node labels (:mod:`autopeft.workers.placement`); a request no node can
  ever hold fails the trial with the reason after ``infeasible_timeout_s``.
* **Reports** reach the controller as they arrive through a hub actor on its node
  (:mod:`autopeft.workers._ray_remote`), and the decision flows back.
* **Datasets and checkpoints** cross nodes through the object store (``checkpoint_transfer``
  ``auto`` / ``object_store``, once per content hash) or are used in place (``shared``).
* **GPUs.** ``gpus_per_trial="auto"`` asks for the predicted memory times a margin over one
  GPU's memory (``gpu_memory_bytes`` where the cluster's GPUs differ from this node's); a CUDA
  OOM is retried alone on a whole GPU with a larger margin, up to ``oom_retries`` times.
* **Faults.** A lost worker or node is retried up to ``max_retries`` times (``spec.attempt``
  bumped, listed in ``outcome.retries``); exceptions of the workload are not retried.

Cluster: ``address`` joins a running one (``ray start --head``; see docs/ray.md), else a private
local Ray is started on 127.0.0.1 (:mod:`autopeft.workers._ray_cluster`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.workers._ray_cluster import (
    Cluster,
    first_line,
    gang_outcome,
    task_outcome,
    worker_env,
)
from autopeft.workers._ray_remote import (
    CheckpointTooLarge,
    dir_signature,
    pack_dir,
    run_trial,
    unpack_dir,
)
from autopeft.workers.base import (
    Executor,
    OnDone,
    OnReport,
    TrialOutcome,
    TrialSpec,
    relay_decision,
)
from autopeft.workers.gpus import MemoryMargin, inventory
from autopeft.workers.placement import ResourceRequest, request_for

log = logging.getLogger("autopeft.workers.ray")


@dataclass
class _Run:
    spec: TrialSpec
    on_report: OnReport
    on_done: OnDone
    ref: Any = None
    key: str = ""
    node: str | None = None
    cancelled: bool = False
    retries: list[str] = field(default_factory=list)
    oom_retries: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    final: dict[str, Any] | None = None  # a gang's result, sent by its rank 0 through the hub


class RayExecutor(Executor):
    """Runs every trial attempt as a Ray task.

    Args:
        address: Ray cluster to join (``host:port`` of ``ray start --head``, or ``auto``);
            None starts a private local Ray on 127.0.0.1 (``num_cpus``, ``num_gpus`` and
            ``resources`` declare what it offers, ``node_labels`` its labels; GPUs may be
            declared on CPU-only hosts).
        cpus_per_trial, gpus_per_trial, memory_per_trial, custom_per_trial, labels_per_trial:
            defaults of each trial's request (the workload's ``resources`` win).
        gpu_memory_bytes: memory of one GPU, for ``gpus: "auto"`` (default: this node's inventory).
        gpu_margin: initial safety factor on predicted memory; oom_retries: see GPUs above.
        memory_overhead_bytes: added to predicted peft memory (activations, framework).
        max_retries: attempts after the first when the worker or node is lost.
        pythonpath, env, runtime_env: for the workers (``PYTHONPATH`` entries, variables).
        checkpoint_transfer: ``auto`` (default: paths as they are on the controller's node, the
            object store elsewhere), ``object_store`` (always; e.g. workers in containers that
            do not see the controller's folders) or ``shared`` (same path on every node).
        max_checkpoint_bytes: larger checkpoints are refused (adapter-only by contract).
        infeasible_timeout_s: how long a request no node can hold may wait for one to join.
        cancel_grace_s: interrupt, then kill the worker after this long.
        temp_dir, object_store_memory: of the private local Ray.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        resources: dict[str, float] | None = None,
        node_labels: dict[str, str] | None = None,
        object_store_memory: int | None = 200 * 2**20,
        temp_dir: str | None = None,
        namespace: str = "autopeft",
        cpus_per_trial: float = 1,
        gpus_per_trial: float | str = "auto",
        memory_per_trial: int | None = None,
        gpu_margin: float = 1.2,
        oom_retries: int = 2,
        custom_per_trial: dict[str, float] | None = None,
        labels_per_trial: dict[str, str] | None = None,
        gpu_memory_bytes: int | None = None,
        memory_overhead_bytes: int = 512 * 2**20,
        max_retries: int = 3,
        pythonpath: str | None = None,
        env: dict[str, str] | None = None,
        runtime_env: dict[str, Any] | None = None,
        checkpoint_transfer: str = "auto",
        max_checkpoint_bytes: int = 256 * 2**20,
        infeasible_timeout_s: float = 30.0,
        cancel_grace_s: float = 3.0,
        poll_s: float = 2.0,
    ):
        if checkpoint_transfer not in ("auto", "object_store", "shared"):
            raise ValueError(
                f"checkpoint_transfer must be 'auto', 'object_store' or 'shared', "
                f"got {checkpoint_transfer!r}"
            )
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        local_gpus = inventory()
        if gpu_memory_bytes is None and local_gpus:
            gpu_memory_bytes = min(g.memory for g in local_gpus)
        if num_gpus is None and local_gpus and (not address or address == "local"):
            num_gpus = len(local_gpus)
        self.margin = MemoryMargin(gpu_margin)
        self.oom_retries = max(0, int(oom_retries))
        gpus_default = gpus_per_trial if gpus_per_trial == "auto" else float(gpus_per_trial)
        self._defaults = dict(
            cpus=float(cpus_per_trial),
            gpus=gpus_default,
            memory=memory_per_trial,
            custom=dict(custom_per_trial or {}),
            labels=dict(labels_per_trial or {}),
            gpu_memory_bytes=gpu_memory_bytes,
            memory_overhead_bytes=int(memory_overhead_bytes),
        )
        self.max_retries = int(max_retries)
        self._transfer = checkpoint_transfer
        self._max_ckpt = int(max_checkpoint_bytes)
        self._infeasible_timeout = float(infeasible_timeout_s)
        self._grace = float(cancel_grace_s)
        self._poll = float(poll_s)
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}
        self._closed = False

        self.cluster = Cluster(
            address,
            namespace,
            worker_env(runtime_env, env, pythonpath),
            temp_dir,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=resources,
            labels=node_labels,
            object_store_memory=object_store_memory,
        )
        ray = self._ray = self.cluster.ray
        self.owns_ray = self.cluster.owned
        if not self.owns_ray:
            log.info("Ray is already initialised in this process: using that cluster (not stopped)")
        self.driver_node = self.cluster.driver_node
        self._task = ray.remote(run_trial)
        from autopeft.workers._ray_gang import run_gang_trial

        self._gang_task = ray.remote(run_gang_trial)

    # -- placement ----------------------------------------------------------------------------
    def request(self, spec: TrialSpec) -> ResourceRequest:
        """The resource request of ``spec`` (public for tests and tools)."""
        defaults = dict(self._defaults)
        if defaults["gpus"] == "auto" and not self.cluster.total("GPU"):
            defaults["gpus"] = 0.0
        return request_for(
            spec.workload, spec.config, spec.resources, margin=self.margin.factor, **defaults
        )

    def capacity(self) -> int | None:
        cpus = self.cluster.total("CPU")
        return int(cpus // self._defaults["cpus"]) if self._defaults["cpus"] else None

    # -- contract -----------------------------------------------------------------------------
    def submit(self, spec: TrialSpec, on_report: OnReport, on_done: OnDone) -> None:
        if self._closed:
            raise RuntimeError("executor is shut down")
        run = _Run(spec, on_report, on_done)
        with self._lock:
            self._runs[spec.trial_id] = run
        run.thread = threading.Thread(
            target=self._drive, args=(run,), daemon=True, name=f"autopeft-ray-trial-{spec.trial_id}"
        )
        run.thread.start()

    def _drive(self, run: _Run) -> None:
        spec = run.spec
        outcome: TrialOutcome | None = None
        try:
            req = self.request(spec)
            spec.resources = req.granted()
            while outcome is None:
                result, lost = self._attempt(run, req)
                if self._closed:
                    return
                if (
                    lost is None
                    and result.oom
                    and req.gpus > 0
                    and not run.cancelled
                    and len(run.oom_retries) < self.oom_retries
                ):
                    run.oom_retries.append(
                        f"attempt {spec.attempt}: CUDA out of memory (share {req.gpus:g} GPU); "
                        f"retried alone, margin now x{self.margin.grow():.2f}"
                    )
                    log.warning("trial %s: %s", spec.trial_id, run.oom_retries[-1])
                    req = req.alone()
                    spec.resources = req.granted()
                    spec.attempt += 1
                    continue
                if lost is None:
                    outcome = result
                elif run.cancelled:
                    outcome = TrialOutcome("failed", error="cancelled", cancelled=True)
                elif len(run.retries) < self.max_retries:
                    run.retries.append(lost)
                    log.warning(
                        "trial %s: %s; retry %d of %d",
                        spec.trial_id,
                        lost,
                        len(run.retries),
                        self.max_retries,
                    )
                    spec.attempt += 1
                    if dir_signature(spec.checkpoint_dir) is not None:
                        spec.restore_dir = (
                            spec.checkpoint_dir
                        )  # go on from its last shipped checkpoint
                else:
                    n = len(run.retries) + 1
                    outcome = TrialOutcome(
                        "failed",
                        error=f"{lost} (gave up after {n} attempt{'s' * (n > 1)}; "
                        f"max_retries={self.max_retries})",
                    )
        except InvalidConfig as err:
            outcome = TrialOutcome("failed", error=f"resources: {err}")
        except Exception as err:
            if self._closed:
                return
            log.exception("trial %s: executor error", spec.trial_id)
            outcome = TrialOutcome(
                "failed", error=f"ray executor error: {type(err).__name__}: {err}"
            )
        finally:
            with self._lock:
                self._runs.pop(spec.trial_id, None)
                closed = self._closed
        if closed:
            return  # shut down: the controller requeues the trial on its next start
        if run.cancelled and not outcome.cancelled:
            outcome = TrialOutcome("failed", error="cancelled", cancelled=True)
        outcome.attempt, outcome.retries = spec.attempt, list(run.oom_retries) + list(run.retries)
        try:
            run.on_done(outcome)
        except Exception:
            log.exception("on_done of trial %s failed", spec.trial_id)

    def _attempt(self, run: _Run, req: ResourceRequest) -> tuple[TrialOutcome | None, str | None]:
        """Run one attempt. Returns ``(outcome, None)`` when it ended, ``(None, reason)`` when it was lost."""
        ray, spec = self._ray, run.spec
        hub = self.cluster.hub()
        run.key = key = f"{spec.trial_id}:{spec.attempt}:{uuid.uuid4().hex[:8]}"
        run.node = None
        restore_blob = None
        if spec.restore_dir and self._transfer != "shared":
            try:
                restore_blob = pack_dir(spec.restore_dir, self._max_ckpt)
            except CheckpointTooLarge as err:
                return TrialOutcome("failed", error=str(err)), None
        data = self.cluster.data_ref(spec.data_file) if self._transfer != "shared" else None
        gang = _gang(spec, req)
        run.final = None
        with self._lock:
            if run.cancelled or self._closed:
                return None, "cancelled"
            args = (
                spec.to_dict(),
                hub,
                key,
                self.driver_node,
                self._transfer,
                restore_blob,
                self._max_ckpt,
                data,
            )
            if gang is None:
                run.ref = ref = self._task.options(max_retries=0, **req.ray_options()).remote(*args)
            else:  # Ray Train's workers hold the resources; this task only drives them
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                run.ref = ref = self._gang_task.options(
                    max_retries=0,
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(
                        self.driver_node, soft=False
                    ),
                ).remote(*args, gang)
        nxt = hub.next.remote(key, self._poll * 5)
        pending_since = time.monotonic()
        started = False
        try:
            while True:
                if self._closed:
                    return None, "executor shut down"
                ready, _ = ray.wait([nxt, ref], num_returns=1, timeout=self._poll)
                if nxt in ready:
                    try:
                        event = ray.get(nxt)
                    except ray.exceptions.RayError as err:
                        self.cluster.hub(broken=hub)
                        self._cancel_ref(ref, force=True)
                        return (
                            None,
                            f"attempt {spec.attempt}: the report channel was lost ({first_line(err)})",
                        )
                    if event is not None:
                        started = True
                        try:
                            self._handle_event(run, hub, key, event)
                        except (
                            ray.exceptions.RayError
                        ) as err:  # its checkpoint died with its worker
                            self._cancel_ref(ref, force=True)
                            return (
                                None,
                                f"attempt {spec.attempt} lost its worker: {first_line(err)}",
                            )
                    nxt = hub.next.remote(key, self._poll * 5)
                    continue
                if ref in ready:
                    if gang is not None:
                        return gang_outcome(
                            self._ray, ref, run.cancelled, spec.attempt, run.node, run.final
                        )
                    return task_outcome(
                        self._ray, ref, run.cancelled, spec.attempt, run.node, spec.checkpoint_dir
                    )
                if not started:
                    if self.cluster.can_hold(req):
                        pending_since = time.monotonic()
                    elif time.monotonic() - pending_since >= self._infeasible_timeout:
                        self._cancel_ref(ref, force=True)
                        why = self.cluster.infeasible(req, self._infeasible_timeout)
                        return TrialOutcome("failed", error=why), None
        finally:
            try:
                hub.drop.remote(key)
            except Exception:
                pass

    def _handle_event(self, run: _Run, hub: Any, key: str, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start":
            run.node = (
                f"{event.get('node_ip')}/{str(event.get('node_id'))[:8]} pid {event.get('pid')}"
            )
            if event.get("workers"):
                run.node += f" (rank 0 of {event['workers']} workers)"
        elif kind == "result":
            refs = event.get("checkpoint")
            if refs and run.spec.checkpoint_dir:
                unpack_dir(self._ray.get(refs[0]), run.spec.checkpoint_dir)
            run.final = event["result"]
            hub.answer.remote(key, "ok")
        elif kind == "report":
            refs = event.get("checkpoint")
            if refs and run.spec.checkpoint_dir:
                unpack_dir(self._ray.get(refs[0]), run.spec.checkpoint_dir)
            hub.answer.remote(key, relay_decision(run.on_report, event["step"], event["metrics"]))

    def cancel(self, trial_id: int) -> bool:
        with self._lock:
            run = self._runs.get(trial_id)
            if run is None:
                return False
            run.cancelled = True
            ref = run.ref
        if ref is not None:
            self._cancel_ref(ref, force=False)
            threading.Timer(self._grace, self._cancel_ref, args=(ref, True)).start()
        return True

    def _cancel_ref(self, ref: Any, force: bool) -> None:
        if not self._ray.is_initialized():
            # the grace timer of a cancel fired after shutdown: ray.cancel would start a new
            # local Ray in this process (its auto-init), which then dies with the old cluster's
            # GCS and takes the process with it
            return
        try:
            self._ray.cancel(ref, force=force)
        except Exception as err:
            log.debug("cancel: %s", err)

    def running(self) -> list[int]:
        with self._lock:
            return list(self._runs)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runs = list(self._runs.values())
        for run in runs:
            if run.ref is not None:
                self._cancel_ref(run.ref, force=True)
        if wait:
            for run in runs:
                if run.thread is not None:
                    run.thread.join(timeout=max(10.0, self._poll * 3))
        self.cluster.close()


def _gang(spec: TrialSpec, req: ResourceRequest) -> dict[str, Any] | None:
    """How a data-parallel attempt runs on Ray Train (``_ray_gang.run_gang_trial``), or None for a
    single task: a trial of one worker, and a gang's forward-only runs (a linear probe, a held-out
    evaluation), which need no gradient to share."""
    workload = spec.workload
    if req.workers <= 1 or workload.get("linear_probe") or workload.get("evaluate"):
        return None
    per_worker = {"CPU": req.cpus, "GPU": req.gpus, **req.custom}
    if req.memory:
        per_worker["memory"] = float(req.memory)
    return {
        "workers": req.workers,
        "resources_per_worker": {k: v for k, v in per_worker.items() if v},
        "use_gpu": req.gpus > 0,
        "label_selector": dict(req.labels) or None,
    }
