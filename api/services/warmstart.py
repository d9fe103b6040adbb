"""Warm start from another study: ``optimizer.options.warm_start: {"study": ID, "top": K}``.

At creation (``validate_spec`` with the request's context) the source study (the user's own) gives
its validation front (feasible, baselines left out), best first by its first objective; the top
``K`` (default 5, at most what ``max_trials`` leaves beside the baselines) configs are mapped onto this study's space (``autopeft.optim.warmstart.map_configs``: per-layer
choices by relative depth, snapped to valid values). A trial is **reused** — its values told to
the optimiser, no training — when it was evaluated exactly as this study would: the same workload
(model, data, split, training knobs: the normalised workloads are equal) and space, the mapped
config equals its own, it was trained in one go to its full budget (no PBT lineage, no fidelity
budget) and it has every objective. Others are **mapped**: asked first and trained (an attached
result, measured elsewhere, always is: ``services.outside``).

The resolved form is stored: ``optimizer.options.warm_start`` becomes the list of configs (reused
first, so the optimiser's warm list and its records line up), and ``spec.warm_start`` says what
happened: ``{"study", "top", "reused": [{"source_trial", "source_number", "config", "values",
"trial_id"}], "mapped": [{"source_trial", "source_number", "config"}], "not_reused": reason}``.
The scheduler creates the reused trials (``complete``, the source's values, test values and
checkpoint copied) before anything else (``scheduling.warmstart``).
"""

from __future__ import annotations

import math
from typing import Any

from autopeft.errors import InvalidConfig

FIELD = "optimizer.options.warm_start"
MAX_TOP = 50


def _best_first(trials: list, spec: dict[str, Any]) -> list:
    name, direction = spec["objectives"][0]["name"], spec["objectives"][0]["direction"]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(trials, key=lambda t: (sign * float(t.values[name]), t.number))


def _why_not_same(source: dict[str, Any], spec: dict[str, Any]) -> str | None:
    if source.get("workload") != spec.get("workload"):
        return "another workload (model, data or training knobs differ): mapped configs are trained"
    if source.get("space") != spec.get("space") or source.get("num_layers") != spec.get(
        "num_layers"
    ):
        return "another space or depth: mapped configs are trained"
    return None


def resolve_warm_start(spec: dict[str, Any], space, ctx) -> None:
    """Resolve ``{"study", "top"}`` in place (see the module docstring); a list of configs is left
    to the optimiser as before. Raises ``InvalidConfig`` naming the field."""
    from autopeft.api.models import Study
    from autopeft.api.services.front import front_trials
    from autopeft.optim.base import config_key
    from autopeft.optim.warmstart import map_configs

    options = spec["optimizer"]["options"]
    ws = options.get("warm_start")
    if not isinstance(ws, dict):
        return
    for key in ws:
        if key not in ("study", "top"):
            raise InvalidConfig(
                f'unknown key {key!r}: warm_start from a study is {{"study": ID, "top": K}}',
                f"{FIELD}.{key}",
            )
    room = spec["max_trials"] - len(spec.get("baselines") or [])
    sid, top = ws.get("study"), ws.get("top", min(5, room))  # default: 5, or what the budget leaves
    if isinstance(sid, bool) or not isinstance(sid, int) or not 1 <= sid <= 2**31 - 1:
        raise InvalidConfig(
            f"warm_start.study must be the id of one of your studies, got {sid!r}", f"{FIELD}.study"
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise InvalidConfig(
            f"warm_start.top must be an integer from 1 to {MAX_TOP}, got {top!r}", f"{FIELD}.top"
        )
    if top > room:
        raise InvalidConfig(
            f"warm_start.top {top} is above the {room} trial(s) max_trials leaves beside the "
            "baselines",
            f"{FIELD}.top",
        )
    if ctx is None or ctx.session is None:
        raise InvalidConfig("warm_start from a study is resolved by the service (REST)", FIELD)
    source = ctx.session.get(Study, sid)
    if source is None or source.user_id != ctx.user.id:
        raise InvalidConfig(f"study {sid} not found among your studies", f"{FIELD}.study")
    front, _ = front_trials(ctx.session, source)
    front = [t for t in front if t.kind != "baseline"]
    if not front:
        raise InvalidConfig(
            f"study {sid} has no complete (feasible) trial on its front to start from",
            f"{FIELD}.study",
        )
    why = _why_not_same(source.spec, spec)
    names = [o["name"] for o in spec["objectives"]]
    reused, mapped = [], []
    for t in _best_first(front, source.spec)[:top]:
        try:
            config = map_configs([t.config], space)[0]
        except InvalidConfig as err:
            raise InvalidConfig(
                f"trial {t.id} of study {sid} does not map onto this space: {err.message}",
                f"{FIELD}.study",
            ) from None
        entry = {"source_trial": t.id, "source_number": t.number, "config": config}
        values = {
            k: v
            for k, v in (t.values or {}).items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        }
        same = (
            why is None
            and t.kind != "attached"  # measured elsewhere: no checkpoint, the user's numbers
            and not t.lineage
            and not t.budget
            and all(n in values for n in names)
            and config_key(space.validate(dict(t.config))) == config_key(config)
        )
        if same:
            reused.append({**entry, "values": values, "test_values": t.test_values})
        else:
            mapped.append(entry)
    options["warm_start"] = [e["config"] for e in reused + mapped]
    spec["warm_start"] = {
        "study": sid,
        "top": top,
        "reused": reused,
        "mapped": mapped,
        "not_reused": why if why else None,
    }
