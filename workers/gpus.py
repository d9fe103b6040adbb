"""The GPUs of this node, and packing trials onto them by memory share.

:func:`inventory` lists the node's GPUs (index, memory, name): NVML through ``pynvml`` when it is
installed, else ``torch.cuda`` (honouring ``CUDA_VISIBLE_DEVICES``); none without an NVIDIA driver
(checked before importing torch).

Test hook: ``AUTOPEFT_FAKE_GPUS`` (e.g. ``2x80GiB`` or ``80GiB,40GiB``) replaces the inventory, so
that placement, packing and the ``CUDA_VISIBLE_DEVICES`` each trial gets can be exercised on a machine
without a GPU. It is the only thing faked: trials then see a device index but no CUDA, and train on the
CPU. Never set it in production.

:class:`GpuPool` hands out GPUs to the local executor's trials the way Ray does for fractional
``num_gpus``: a share below one goes to one GPU whose granted shares still leave room (the fullest such
GPU first, so that small trials pack together and large ones find empty GPUs), whole GPUs above one,
and ``alone`` (an out-of-memory retry) waits for a GPU nobody else holds and keeps it to itself.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("autopeft.workers.gpus")

FAKE_GPUS_ENV = "AUTOPEFT_FAKE_GPUS"
_UNITS = {
    "": 1,
    "b": 1,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
}


@dataclass(frozen=True)
class Gpu:
    """One GPU of the node: ``index`` as ``CUDA_VISIBLE_DEVICES`` names it, ``memory`` in bytes."""

    index: int
    memory: int
    name: str = ""


def parse_fake_gpus(text: str) -> list[Gpu]:
    """``"2x80GiB"`` / ``"80GiB,40GiB"`` -> GPUs 0.. with those memories (``ValueError`` naming the
    variable when malformed)."""
    gpus: list[Gpu] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"(?:(\d+)\s*x\s*)?(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", part)
        if not m or m.group(3).lower() not in _UNITS:
            raise ValueError(
                f"{FAKE_GPUS_ENV}: cannot read {part!r}; write e.g. '2x80GiB' or '80GiB,40GiB'"
            )
        count = int(m.group(1) or 1)
        size = int(float(m.group(2)) * _UNITS[m.group(3).lower()])
        gpus += [Gpu(len(gpus) + i, size, "fake") for i in range(count)]
    return gpus


def inventory() -> list[Gpu]:
    """The GPUs this process can use (see the module doc)."""
    fake = os.environ.get(FAKE_GPUS_ENV)
    if fake:
        return parse_fake_gpus(fake)
    if not any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")):
        return []  # no NVIDIA driver: skip importing torch in the controller just to learn that
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        pynvml = None
    if pynvml is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        try:
            pynvml.nvmlInit()
            try:
                return [
                    Gpu(
                        i,
                        int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                        str(pynvml.nvmlDeviceGetName(h)),
                    )
                    for i in range(pynvml.nvmlDeviceGetCount())
                    for h in [pynvml.nvmlDeviceGetHandleByIndex(i)]
                ]
            finally:
                pynvml.nvmlShutdown()
        except Exception as err:
            log.info("NVML unavailable (%s); asking torch for the GPUs", err)
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [int(x) for x in visible.split(",") if x.strip().isdigit()] if visible else None
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(Gpu(ids[i] if ids and i < len(ids) else i, int(props.total_memory), props.name))
    return out


class GpuPool:
    """Shares of the node's GPUs granted to running trials (module doc). Thread-safe."""

    def __init__(self, gpus: list[Gpu]):
        self.gpus = list(gpus)
        self._used = {g.index: 0.0 for g in self.gpus}
        self._holders = {g.index: 0 for g in self.gpus}
        self._alone: set[int] = set()
        self._cond = threading.Condition()

    @property
    def memory_per_gpu(self) -> int | None:
        """The smallest GPU's memory (shares are computed against it), None without GPUs."""
        return min((g.memory for g in self.gpus), default=None)

    def acquire(
        self,
        share: float,
        alone: bool = False,
        cancelled: Callable[[], bool] = lambda: False,
        poll_s: float = 0.5,
    ) -> list[int] | None:
        """Block until ``share`` GPUs (fractions of one) can be granted; the GPU indices granted, or
        None when ``cancelled()`` became true while waiting. ``ValueError`` when the node can never
        grant it (more whole GPUs than it has, or no GPU)."""
        whole = math.ceil(share - 1e-9) if share >= 1 or alone else 0
        if not self.gpus or whole > len(self.gpus):
            raise ValueError(
                f"this node has {len(self.gpus)} GPU(s); the trial asks for {share:g}"
                + (" alone" if alone else "")
            )
        with self._cond:
            while True:
                got = self._try(share, whole or None, alone)
                if got is not None:
                    return got
                if cancelled():
                    return None
                self._cond.wait(poll_s)

    def _try(self, share: float, whole: int | None, alone: bool) -> list[int] | None:
        if whole:
            free = [i for i in self._used if self._used[i] <= 1e-9 and i not in self._alone]
            if len(free) < whole:
                return None
            got = free[:whole]
            for i in got:
                self._used[i] = 1.0
                self._holders[i] += 1
                if alone:
                    self._alone.add(i)
            return got
        fits = [
            i for i in self._used if i not in self._alone and self._used[i] + share <= 1.0 + 1e-9
        ]
        if not fits:
            return None
        best = max(fits, key=lambda i: (self._used[i], -i))  # fullest first: pack
        self._used[best] += share
        self._holders[best] += 1
        return [best]

    def release(self, indices: list[int], share: float) -> None:
        with self._cond:
            for i in indices:
                self._alone.discard(i)
                self._holders[i] = max(0, self._holders[i] - 1)
                self._used[i] = (
                    0.0 if share >= 1 or self._holders[i] == 0 else max(0.0, self._used[i] - share)
                )
            self._cond.notify_all()

    def holders(self, index: int) -> int:
        with self._cond:
            return self._holders[index]


class MemoryMargin:
    """The safety factor on predicted memory when packing; grows by ``growth`` after every out-of-memory
    error (up to ``ceiling``), so later trials of the node ask for larger shares. Thread-safe."""

    def __init__(self, factor: float = 1.2, growth: float = 1.25, ceiling: float = 4.0):
        if factor < 1 or growth <= 1 or ceiling < factor:
            raise ValueError(
                f"margin: need 1 <= factor <= ceiling and growth > 1, got {factor}, {growth}, {ceiling}"
            )
        self._factor, self.growth, self.ceiling = float(factor), float(growth), float(ceiling)
        self._lock = threading.Lock()

    @property
    def factor(self) -> float:
        with self._lock:
            return self._factor

    def grow(self) -> float:
        with self._lock:
            self._factor = min(self.ceiling, self._factor * self.growth)
            log.warning(
                "a trial ran out of GPU memory: the packing margin is now x%.2f", self._factor
            )
            return self._factor


def is_cuda_oom(err: BaseException) -> bool:
    """A CUDA out-of-memory error of torch (``torch.OutOfMemoryError``), without importing torch."""
    return any(
        c.__name__ == "OutOfMemoryError" and c.__module__.startswith("torch")
        for c in type(err).__mro__
    )
