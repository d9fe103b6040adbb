"""The Ray executor's view of its cluster, on the controller's side: joining or starting Ray,
the alive nodes and what they hold, the report hub actor and the datasets put into the object
store, and which task errors mean a lost worker.

Without an ``address`` a private local Ray is started on 127.0.0.1 in its own temp dir, and
stopped by ``close`` (which removes that temp dir when it made it). For loopback clusters
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before Ray is imported: otherwise Ray replaces
127.0.0.1 by the host's address and listens there."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

from autopeft.net import is_loopback_host
from autopeft.workers._ray_remote import Hub, unpack_dir
from autopeft.workers.base import TrialOutcome
from autopeft.workers.placement import ResourceRequest

log = logging.getLogger("autopeft.workers.ray")

#: Ray errors (by class name, anywhere in the error's MRO) that mean the worker process or its
#: node was lost: the attempt is retried, unlike an exception of the workload
SYSTEM_ERRORS = frozenset(
    (
        "WorkerCrashedError",
        "NodeDiedError",
        "ObjectLostError",
        "OwnerDiedError",
        "RaySystemError",
        "LocalRayletDiedError",
        "OutOfMemoryError",
        "ActorDiedError",
        "ActorUnavailableError",
        "RayActorError",
        "ObjectFetchTimedOutError",
        "ObjectReconstructionFailedError",
    )
)


def is_lost_worker(err: BaseException) -> bool:
    return bool({c.__name__ for c in type(err).__mro__} & SYSTEM_ERRORS)


def task_outcome(ray, ref, cancelled: bool, attempt: int, node: str | None, checkpoint_dir):
    """The end of a finished trial task: ``(outcome, None)``, or ``(None, reason)`` when its
    worker was lost (retry). A finished task's checkpoint is unpacked into ``checkpoint_dir``."""
    res, ended = _task_result(ray, ref, cancelled, attempt, node)
    if res is None:
        return ended
    if res.get("checkpoint") and checkpoint_dir:
        unpack_dir(res["checkpoint"], checkpoint_dir)
    return _result_outcome(res), None


def gang_outcome(ray, ref, cancelled: bool, attempt: int, node: str | None, final):
    """The end of a data-parallel attempt (``_ray_gang.run_gang_trial``): like
    :func:`task_outcome`; ``final`` is the result its rank 0 sent through the hub (its checkpoint
    already unpacked), ``lost`` from the gang a retry."""
    res, ended = _task_result(ray, ref, cancelled, attempt, node)
    if res is None:
        return ended
    if res.get("type") == "lost":
        if cancelled:
            return TrialOutcome("failed", error="cancelled", cancelled=True), None
        return None, f"attempt {attempt}: {res['message']}"
    if res.get("type") == "error":
        return _result_outcome(res), None
    if final is None:
        return TrialOutcome(
            "failed", error="the data-parallel trial ended without the result of its rank 0"
        ), None
    return _result_outcome(final), None


def _task_result(ray, ref, cancelled, attempt, node):
    """``(the task's return value, None)``, or ``(None, (outcome, retry reason))`` when it raised."""
    try:
        return ray.get(ref), None
    except ray.exceptions.TaskCancelledError:
        return None, (TrialOutcome("failed", error="cancelled", cancelled=True), None)
    except ray.exceptions.RayError as err:
        if cancelled:
            return None, (TrialOutcome("failed", error="cancelled", cancelled=True), None)
        if is_lost_worker(err):
            where = f" on {node}" if node else ""
            return None, (None, f"attempt {attempt} lost its worker{where}: {first_line(err)}")
        return None, (TrialOutcome("failed", error=first_line(err)), None)


def _result_outcome(res: dict[str, Any]) -> TrialOutcome:
    if res.get("type") == "error":
        return TrialOutcome("failed", error=res["message"], oom=bool(res.get("oom")))
    return TrialOutcome("complete", values=res["values"], stopped=bool(res.get("stopped")))


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (Ray's errors carry whole remote tracebacks)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def is_loopback(address: str | None) -> bool:
    """A private local Ray (None / "local"), or a cluster whose head is on a loopback address."""
    if not address or address == "local":
        return True
    return is_loopback_host(address.split("://")[-1].rsplit(":", 1)[0])


def import_ray(loopback: bool):
    """``ray``, told to stay on loopback when the cluster is (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    before the import: otherwise Ray replaces 127.0.0.1 by the host's address and listens there)."""
    if loopback:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if loopback and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        from ray._private import ray_constants  # read once at import; Ray was imported before us

        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def worker_env(
    runtime_env: dict[str, Any] | None, env: dict[str, str] | None, pythonpath: str | None
) -> dict[str, Any] | None:
    """The runtime env of the workers: ``runtime_env`` with ``env`` added to its variables and
    ``pythonpath`` put first on their ``PYTHONPATH`` (None when nothing is set)."""
    renv = dict(runtime_env or {})
    env_vars = {**(renv.get("env_vars") or {}), **(env or {})}
    if pythonpath:
        env_vars["PYTHONPATH"] = os.pathsep.join(
            p for p in (pythonpath, env_vars.get("PYTHONPATH")) if p
        )
    if env_vars:
        renv["env_vars"] = env_vars
    return renv or None


class Cluster:
    """Ray in this process: joined (``address``), borrowed (Ray already initialised here: never
    stopped by us) or a private local Ray on 127.0.0.1 in its own temp dir (``local``), stopped
    with that temp dir by :meth:`close`. ``local`` options go to ``ray.init`` of the private one."""

    def __init__(
        self,
        address: str | None,
        namespace: str,
        runtime_env: dict[str, Any] | None,
        temp_dir: str | None,
        **local: Any,
    ):
        self.ray = ray = import_ray(is_loopback(address))
        self.owned = not ray.is_initialized()
        self._own_temp_dir: str | None = None
        self._nodes: tuple[float, list[dict]] = (0.0, [])
        self._lock = threading.Lock()
        self._data_refs: dict[str, Any] = {}  # sha256 -> object ref of a dataset (newest last)
        if self.owned and address and address != "local":
            ray.init(
                address=address, namespace=namespace, runtime_env=runtime_env, log_to_driver=False
            )
        elif self.owned:
            self._start_local(namespace, runtime_env, temp_dir, local)
        self.driver_node = ray.get_runtime_context().get_node_id()
        self._hub = self._new_hub()

    def _start_local(self, namespace, runtime_env, temp_dir, local) -> None:
        if temp_dir is None:
            temp_dir = self._own_temp_dir = tempfile.mkdtemp(prefix="autopeft-ray-")
        self.ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            _temp_dir=temp_dir,
            namespace=namespace,
            runtime_env=runtime_env,
            log_to_driver=False,
            **local,
        )

    def alive_nodes(self, max_age: float = 1.0) -> list[dict]:
        """``ray.nodes()`` that are alive, at most ``max_age`` seconds old."""
        stamp, nodes = self._nodes
        if time.monotonic() - stamp > max_age:
            nodes = [n for n in self.ray.nodes() if n.get("Alive")]
            self._nodes = (time.monotonic(), nodes)
        return nodes

    def total(self, resource: str) -> float:
        """How much of ``resource`` (``CPU``, ``GPU``, ...) the alive nodes hold together."""
        return sum(n.get("Resources", {}).get(resource, 0.0) for n in self.alive_nodes(5.0))

    def can_hold(self, req: ResourceRequest) -> bool:
        """Some alive node can hold ``req`` (when idle); a gang: the alive nodes together can
        hold all its workers."""
        if req.workers > 1:
            return req.gang_fits(
                [(n.get("Resources", {}), n.get("Labels") or {}) for n in self.alive_nodes()]
            )
        return any(
            req.fits(n.get("Resources", {}), n.get("Labels") or {}) for n in self.alive_nodes()
        )

    def infeasible(self, req: ResourceRequest, waited_s: float) -> str:
        """Why ``req`` failed after ``waited_s``: no alive node could hold it; each node's
        address and resources."""
        nodes = (
            "; ".join(
                f"{n.get('NodeManagerAddress')}: "
                + ", ".join(
                    f"{v:g} {k}"
                    for k, v in sorted(n.get("Resources", {}).items())
                    if not k.startswith("node:") and k != "object_store_memory"
                )
                for n in self.alive_nodes(0.0)
            )
            or "none alive"
        )
        return (
            f"no node of the Ray cluster can hold this trial's request ({req.describe()}) "
            f"for {waited_s:g} s; nodes: {nodes}"
        )

    # -- the report hub (``_ray_remote.Hub``), pinned to the controller's node ----------------------
    def _new_hub(self):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        hub = (
            self.ray.remote(Hub)
            .options(
                num_cpus=0,
                max_concurrency=10_000,
                name=f"autopeft-hub-{uuid.uuid4().hex[:8]}",
                scheduling_strategy=NodeAffinitySchedulingStrategy(self.driver_node, soft=False),
            )
            .remote()
        )
        self.ray.get(hub.ping.remote(), timeout=120)
        return hub

    def hub(self, broken: Any = None):
        """The live hub; a new one if ``broken`` (the handle that failed) is still the current one."""
        with self._lock:
            if broken is not None and broken is self._hub:
                log.warning("the report hub actor died; starting a new one")
                self._hub = self._new_hub()
            return self._hub

    def data_ref(self, data_file: dict[str, Any] | None) -> list | None:
        """``[object ref]`` of a trial's dataset file (in a list: a task fetches it only when its
        node needs a copy), put into the object store once per content (the last few are kept);
        None without a file."""
        if not data_file:
            return None
        sha = data_file["sha256"]
        with self._lock:
            ref = self._data_refs.get(sha)
        if ref is None:
            with open(data_file["path"], "rb") as fh:
                ref = self.ray.put(fh.read())
            with self._lock:
                self._data_refs[sha] = ref
                while len(self._data_refs) > 4:
                    self._data_refs.pop(next(iter(self._data_refs)))
        return [ref]

    def close(self) -> None:
        """Kill the hub; stop Ray when this process started it (and remove the temp dir it made)."""
        try:
            self.ray.kill(self._hub)
        except Exception:
            pass
        if self.owned:
            self.ray.shutdown()
            if self._own_temp_dir:
                shutil.rmtree(self._own_temp_dir, ignore_errors=True)
