"""The parts of the Ray executor that run inside the cluster: the report hub and the trial task.

Imported by Ray worker processes (functions and classes here are pickled by reference, so
every node needs ``autopeft`` installed). ``ray`` is imported lazily: importing this module
costs nothing.

Report channel. One async :class:`Hub` actor per executor, pinned to the controller's node.
A trial calls ``hub.put(key, {"type": "report", ...})`` and blocks until the controller answers
(``hub.answer``); the controller's thread of that trial long-polls ``hub.next(key)``. Events
travel on Ray's own RPC (no extra port, no controller URL or token on the workers, TLS when
the cluster has it), and an attempt that dies shows up as an error on its task reference.

Checkpoints (adapter-only) cross nodes through the object store: a restore folder is packed
(``tar``, uncompressed) by the controller, handed to the task as an argument and unpacked
into a scratch folder on the worker node; the worker packs its checkpoint folder whenever it
changed, at every report and at the end, and the controller unpacks it into the trial's
``checkpoint_dir``. A checkpoint larger than ``max_checkpoint_bytes`` is refused (it would be
a full model copy). With ``checkpoint_transfer="shared"`` (a file system mounted at the same
path on every node), or ``"auto"`` when the attempt runs on the controller's node, paths are
used as they are; ``"object_store"`` always copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any


class CheckpointTooLarge(RuntimeError):
    pass


# -- checkpoint folders <-> bytes -------------------------------------------------------------
def dir_signature(path: str | Path | None) -> tuple | None:
    """Names, sizes and mtimes of the files in ``path`` (None: missing or empty)."""
    if not path or not Path(path).is_dir():
        return None
    sig = tuple(
        sorted(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in Path(path).rglob("*")
            if p.is_file()
        )
    )
    return sig or None


def pack_dir(path: str | Path | None, max_bytes: int) -> bytes | None:
    """The folder as an uncompressed tar (None when missing or empty); CheckpointTooLarge above ``max_bytes``."""
    if dir_signature(path) is None:
        return None
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    if size > max_bytes:
        raise CheckpointTooLarge(
            f"checkpoint {path} holds {size / 2**20:.1f} MiB, more than max_checkpoint_bytes "
            f"({max_bytes / 2**20:.1f} MiB): checkpoints must be adapter-only, not model copies"
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(path), arcname=".")
    return buf.getvalue()


def unpack_dir(blob: bytes, dest: str | Path) -> None:
    """Replace the contents of ``dest`` with the tar ``blob`` (written beside it, then renamed in)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-new-", dir=dest.parent))
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(tmp, filter="data")
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}-old-{os.getpid()}-{id(blob)}")
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- the hub ------------------------------------------------------------------------------------
#: events whose sender waits for the controller's answer: a report (go on or stop) and a gang's
#: final result (its checkpoint ref must outlive the controller's fetch)
ANSWERED = ("report", "result")


class Hub:
    """Mailboxes of running attempts (async actor: thousands of waiting calls cost nothing)."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue] = {}
        self._answers: dict[str, asyncio.Future] = {}

    def _queue(self, key: str) -> asyncio.Queue:
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = asyncio.Queue()
        return q

    async def put(self, key: str, event: dict[str, Any]) -> Any:
        """From a trial. A ``report`` (or ``result``) waits for the controller's answer; other
        events return None."""
        fut = None
        if event.get("type") in ANSWERED:
            fut = asyncio.get_running_loop().create_future()
            self._answers[key] = fut
        self._queue(key).put_nowait(event)
        return await fut if fut is not None else None

    async def next(self, key: str, timeout: float) -> dict[str, Any] | None:
        """From the controller: the next event of ``key``, or None after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self._queue(key).get(), timeout)
        except asyncio.TimeoutError:
            return None

    def answer(self, key: str, decision: str) -> None:
        fut = self._answers.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(decision)

    def drop(self, key: str) -> None:
        """Forget an attempt: a pending report is answered "stop", a waiting ``next`` gets None."""
        self.answer(key, "stop")
        q = self._queues.pop(key, None)
        if q is not None:
            q.put_nowait(None)

    def ping(self) -> bool:
        return True


# -- the trial task -----------------------------------------------------------------------------
def local_data_file(data_file: dict[str, Any], blob: bytes) -> str:
    """Write a shipped dataset file into this node's cache (once per content hash) and return its
    path; when the node restricts dataset paths (``AUTOPEFT_DATA_DIRS``), the cache becomes one of
    its data folders."""
    import hashlib

    from autopeft.trials.data import DATA_DIRS_ENV

    if hashlib.sha256(blob).hexdigest() != data_file["sha256"]:
        raise RuntimeError("the dataset file shipped to this node does not match its content hash")
    cache = Path(tempfile.gettempdir()) / "autopeft-datasets"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{data_file['sha256']}{data_file.get('suffix') or ''}"
    if not (target.is_file() and target.stat().st_size == len(blob)):
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, target)
    roots = os.environ.get(DATA_DIRS_ENV)
    if roots is not None and str(cache.resolve()) not in roots.split(os.pathsep):
        os.environ[DATA_DIRS_ENV] = os.pathsep.join(p for p in (roots, str(cache.resolve())) if p)
    return str(target)


def run_trial(
    spec: dict[str, Any],
    hub: Any,
    key: str,
    driver_node: str,
    transfer: str,
    restore_blob: bytes | None,
    max_checkpoint_bytes: int,
    data: list | None = None,
) -> dict[str, Any]:
    """One attempt of one trial, inside a Ray worker. Returns ``{"type": "done" | "error", ...}``.

    Exceptions of the workload become ``error`` results (no retry, like the local executor);
    only a lost worker or node (seen by the controller as a Ray system error) is retried.
    ``data``: ``[object ref]`` of the dataset file (``spec["data_file"]``) for nodes without it.
    """

    from autopeft.workers._attempt import run_attempt

    node = announce(hub, key)
    place = Placement.on_node(spec, node, driver_node, transfer, restore_blob, data)
    channel = Channel(hub, key, place, max_checkpoint_bytes)
    try:
        with place.log_output():
            result = run_attempt(
                place.spec, channel.report, place.checkpoint, place.restore, (Exception, SystemExit)
            )
            result["node_id"] = node
            if result["type"] == "error":
                return result
            try:
                result["checkpoint"] = channel.shipped_checkpoint()
            except CheckpointTooLarge as err:
                return {"type": "error", "message": str(err), "node_id": node}
            return result
    finally:
        place.close()


def announce(hub: Any, key: str, **extra: Any) -> str:
    """Tell the controller where the attempt runs (a ``start`` event: node, address, pid, and
    ``extra``); returns this node's id."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    event = {
        "type": "start",
        "node_id": node,
        "node_ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
        **extra,
    }
    hub.put.remote(key, event)
    return node


class Channel:
    """An attempt's reports to the controller through the hub, each with the checkpoint folder
    packed when it changed since the last one (not when the folder is the controller's own)."""

    def __init__(self, hub: Any, key: str, place: Placement, max_bytes: int):
        self.hub, self.key, self.place, self.max_bytes = hub, key, place, max_bytes
        self._last = dir_signature(place.checkpoint) if not place.local else None

    def shipped_checkpoint(self) -> bytes | None:
        ckpt = self.place.checkpoint
        if self.place.local or ckpt is None:
            return None
        sig = dir_signature(ckpt)
        if sig is None or sig == self._last:
            return None
        self._last = sig
        return pack_dir(ckpt, self.max_bytes)

    def send(self, event: dict[str, Any], blob: bytes | None = None) -> Any:
        """Put ``event`` (with ``blob`` as its checkpoint) and wait for the answer."""
        import ray

        if blob is not None:
            event["checkpoint"] = [ray.put(blob)]  # in a list: the controller fetches it itself
        return ray.get(self.hub.put.remote(self.key, event))

    def report(self, step: int, metrics: dict[str, float]) -> str:
        event = {"type": "report", "step": int(step), "metrics": metrics}
        return self.send(event, self.shipped_checkpoint())


class Placement:
    """Where one attempt (or one rank of a gang) keeps its files on this node: its checkpoint and
    restore folders (the controller's paths when they are reachable here, else a scratch folder
    with the shipped restore unpacked) and a spec whose dataset and cache are readable here."""

    def __init__(self, spec, checkpoint, restore, local, scratch):
        self.spec, self.checkpoint, self.restore = spec, checkpoint, restore
        self.local, self.scratch = local, scratch

    @classmethod
    def on_node(
        cls,
        spec: dict[str, Any],
        node: str,
        driver_node: str,
        transfer: str,
        restore_blob: bytes | None,
        data: list | None,
        checkpoint: bool = True,
    ) -> Placement:
        """``checkpoint=False``: this process saves none (a gang's ranks other than 0)."""
        import ray

        local = transfer == "shared" or (transfer == "auto" and node == driver_node)
        scratch = None
        ckpt = spec.get("checkpoint_dir") if checkpoint else None
        restore = spec.get("restore_dir")
        if not local:
            scratch = Path(tempfile.mkdtemp(prefix=f"autopeft-trial-{spec['trial_id']}-"))
            same = restore is not None and restore == spec.get("checkpoint_dir")
            ckpt = str(scratch / "checkpoint") if ckpt else None
            restore = None
            if restore_blob is not None:
                restore = ckpt if same and ckpt else str(scratch / "restore")
                unpack_dir(restore_blob, restore)
        if not local and data and spec.get("data_file"):  # the dataset is on the controller's disk
            workload = dict(spec["workload"])
            workload["dataset"] = local_data_file(spec["data_file"], ray.get(data[0]))
            spec = {**spec, "workload": workload}
        if not local and spec["workload"].get("cache_dir"):  # the controller's folder: not here
            spec = {**spec, "workload": {**spec["workload"], "cache_dir": None}}
        return cls(spec, ckpt, restore, local, scratch)

    def log_output(self):
        """The workload's stdout / stderr into the trial's log file, when it is on this node."""
        log_path = self.spec.get("log_path")
        if self.local and log_path and Path(log_path).parent.is_dir():
            return _redirect_output(log_path)
        return contextlib.nullcontext()

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


@contextlib.contextmanager
def _redirect_output(path: str):
    with (
        open(path, "a", encoding="utf-8", buffering=1) as f,
        contextlib.redirect_stdout(f),
        contextlib.redirect_stderr(f),
    ):
        yield
