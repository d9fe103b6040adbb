"""What one trial asks of a cluster: CPUs, GPUs (fractions allowed), memory, custom resources and
node labels, derived from the workload and the predicted memory of the trial.

Pure Python (no Ray import), so it is cheap to test. Precedence, per key:

1. ``workload["resources"]`` (validated by :func:`autopeft.trials.resources.validate_resources`);
2. the resources the controller put on the spec (``TrialSpec.resources``, e.g. ``cpus_per_trial``);
3. the executor's defaults.

Memory: ``"auto"`` (the default for peft workloads) is the predicted peak training memory
(:func:`autopeft.estimate_memory`: weights, gradients, AdamW moments, activations at the workload's
batch x length), times the executor's safety ``margin`` (which grows after an out-of-memory error),
plus its ``memory_overhead_bytes`` (CUDA context, framework); python workloads ask for no memory
unless they say so. ``gpus: "auto"`` is that memory divided by the memory of one GPU
(``gpu_memory_bytes``: the executors read it from the node's inventory, :mod:`autopeft.workers.gpus`),
rounded up to 1/100 of a GPU, so that small trials pack many to a GPU. An executor whose *default* is
``"auto"`` (the node has GPUs) gives GPU shares to peft trials and none to python workloads.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.errors import InvalidConfig

log = logging.getLogger("autopeft.workers.placement")


@dataclass(frozen=True)
class ResourceRequest:
    """Resources of one trial attempt. ``memory`` in bytes (None: not asked for)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None
    custom: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    predicted_memory: int | None = None  # what the cost model predicted, for messages
    workers: int = 1  # a data-parallel gang: every field above is then per worker

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for ``remote_function.options(...)``."""
        opts: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory:
            opts["memory"] = int(self.memory)
        if self.custom:
            opts["resources"] = dict(self.custom)
        if self.labels:
            opts["label_selector"] = dict(self.labels)
        return opts

    def alone(self) -> ResourceRequest:
        """The same request on a whole GPU (at least one): nobody else is placed on it."""
        import dataclasses

        return dataclasses.replace(self, gpus=float(max(1, math.ceil(self.gpus - 1e-9))))

    def granted(self) -> dict[str, float]:
        """What the workload sees as ``trial.resources`` (a gang's: per worker, and ``workers``)."""
        out = {"cpus": self.cpus, "gpus": self.gpus}
        if self.workers > 1:
            out["workers"] = float(self.workers)
        if self.memory:
            out["memory"] = float(self.memory)
        out.update(self.custom)
        return out

    def as_ray_resources(self) -> dict[str, float]:
        """The request in Ray's resource names (for feasibility checks against nodes)."""
        out = {"CPU": self.cpus, "GPU": self.gpus, **self.custom}
        if self.memory:
            out["memory"] = float(self.memory)
        return {k: v for k, v in out.items() if v}

    def fits(
        self, node_total: Mapping[str, float], node_labels: Mapping[str, str] | None = None
    ) -> bool:
        """Could a node with these total resources and labels ever run this request?"""
        for name, amount in self.as_ray_resources().items():
            if node_total.get(name, 0.0) + 1e-9 < amount:
                return False
        labels = node_labels or {}
        return all(labels.get(k) == v for k, v in self.labels.items())

    def gang_fits(self, nodes: list[tuple[Mapping[str, float], Mapping[str, str]]]) -> bool:
        """Could these nodes (total resources, labels), idle, hold all ``workers`` of the gang?
        (What one request needs per worker, counted node by node.)"""
        room = 0
        for total, labels in nodes:
            if not self.fits(total, labels):
                continue
            asked = self.as_ray_resources()
            room += min(
                (int(total.get(k, 0.0) / v + 1e-9) for k, v in asked.items()),
                default=self.workers,
            )
            if room >= self.workers:
                return True
        return False

    def describe(self) -> str:
        if self.workers > 1:
            return f"{self.workers} workers x ({self._describe_one()})"
        return self._describe_one()

    def _describe_one(self) -> str:
        parts = [f"{self.cpus:g} CPU"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU")
        if self.memory:
            parts.append(f"{self.memory / 2**30:.2f} GiB memory")
        parts += [f"{v:g} {k}" for k, v in self.custom.items()]
        parts += [f"label {k}={v}" for k, v in self.labels.items()]
        return ", ".join(parts)


def request_for(
    workload: Mapping[str, Any],
    config: Mapping[str, Any],
    spec_resources: Mapping[str, Any] | None,
    *,
    cpus: float = 1.0,
    gpus: float = 0.0,
    memory: int | None = None,
    custom: Mapping[str, float] | None = None,
    labels: Mapping[str, str] | None = None,
    gpu_memory_bytes: int | None = None,
    memory_overhead_bytes: int = 0,
    margin: float = 1.0,
) -> ResourceRequest:
    """The request of one trial (see the module doc for the rules). Raises ``InvalidConfig``."""
    from autopeft.trials.resources import validate_resources

    asked = validate_resources(workload.get("resources") or {})
    spec_resources = dict(spec_resources or {})
    n_cpus = float(asked.get("cpus", spec_resources.get("cpus") or cpus))
    explicit_gpus = asked.get("gpus", spec_resources.get("gpus") or None)
    n_gpus: Any = explicit_gpus if explicit_gpus is not None else gpus
    mem: Any = asked.get("memory", spec_resources.get("memory") or memory)
    predicted = None
    workers = int(asked.get("workers", 1))
    if workers > 1 and workload.get("kind") != "peft":
        raise InvalidConfig(
            "workload.resources.workers: only the peft workload runs data-parallel",
            field="workload.resources.workers",
        )
    if workload.get("kind") == "peft" and (mem is None or mem == "auto" or n_gpus == "auto"):
        from autopeft.trials.parallel import per_worker

        predicted = predicted_memory_bytes(per_worker(dict(workload)), config)
        if predicted is not None:
            predicted = int(predicted * float(margin)) + int(memory_overhead_bytes)
    if n_gpus == "auto" and explicit_gpus is None and (predicted is None or not gpu_memory_bytes):
        n_gpus = 0.0  # the executor's default: GPU shares for peft trials on a node with GPUs only
    if mem == "auto" or (mem is None and workload.get("kind") == "peft"):
        if predicted is None and mem == "auto":
            raise InvalidConfig(
                "workload.resources.memory is 'auto' but no memory prediction is available for "
                "this workload (python workloads, or a model config that cannot be read)",
                field="workload.resources.memory",
            )
        mem = predicted
    if n_gpus == "auto":
        if predicted is None or not gpu_memory_bytes:
            why = (
                "the node has no GPU (no CUDA device found)"
                if not gpu_memory_bytes
                else "no memory prediction for this workload (python workloads, or a model config that cannot be read)"
            )
            raise InvalidConfig(
                f"workload.resources.gpus is 'auto' but {why}", field="workload.resources.gpus"
            )
        n_gpus = gpu_fraction(predicted, gpu_memory_bytes)
    merged_custom = {**(custom or {}), **asked.get("custom", {})}
    merged_labels = {**(labels or {}), **asked.get("labels", {})}
    return ResourceRequest(
        cpus=n_cpus,
        gpus=float(n_gpus),
        memory=int(mem) if mem else None,
        custom=merged_custom,
        labels=merged_labels,
        predicted_memory=predicted,
        workers=workers,
    )


def gpu_fraction(needed_bytes: int, gpu_memory_bytes: int) -> float:
    """Share of one GPU for ``needed_bytes``, rounded up to 1/100; whole GPUs above one."""
    share = needed_bytes / float(gpu_memory_bytes)
    if share > 1:
        return float(math.ceil(share))
    return max(0.01, math.ceil(share * 100 - 1e-9) / 100)


def predicted_memory_bytes(workload: Mapping[str, Any], config: Mapping[str, Any]) -> int | None:
    """Predicted peak training memory of a peft trial (:func:`autopeft.estimate_memory`, at the
    workload's batch size or 32, the largest default), or None (logged) when it cannot be predicted
    (unreadable model, config error)."""
    try:
        from autopeft.peft.memory import predicted_memory_mb

        _, model_config = _model(str(workload["model"]))
        return int(predicted_memory_mb(dict(config), model_config, workload) * 2**20)
    except Exception as err:
        log.warning(
            "no memory prediction for model %r: %s: %s",
            workload.get("model"),
            type(err).__name__,
            err,
        )
        return None


@functools.lru_cache(maxsize=16)
def _model(model: str) -> tuple[Path, Any]:
    from autopeft.models import load_model_config, resolve_model_path

    return resolve_model_path(model), load_model_config(model)
