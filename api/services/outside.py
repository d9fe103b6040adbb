"""Trials from outside the optimiser: configs **enqueued** to be tried next, and results
**attached** that were measured elsewhere.

Both are recorded in the stored spec (service keys, like ``warm_start``), one entry each, and the
study's runner makes them trials (``scheduling.outside``), so that whichever replica schedules the
study (``scheduling.reconcile``) numbers its trials and writes its history in one place:

* ``spec.enqueued``: ``[{"config", "at", "trial_id"?}]``. A config is checked by
  ``space.validate`` (422 naming ``configs.<i>.<key>``: strict, unlike a warm start's mapping,
  which snaps another study's configs onto this space). The runner starts the waiting ones before
  asking the optimiser for anything (registered with ``add_trial``, an ``enqueue`` event), as
  ``search`` trials labelled ``enqueued``; they are told like any trial and count in
  ``max_trials``. When the trials made, the baselines still to run and the waiting configs
  exceed ``max_trials``, it is raised by the difference, recorded in ``spec.extensions`` with
  ``"by": "enqueue"`` (what ``extend`` does): an accepted config is always run (a runner that
  asked for the last trial before it heard of the config raises it by one itself, recorded alike). A finished study
  runs again for them (as after ``extend``); a stopped one runs them on resume; a failed one, or
  one that ended on its time or compute budget, is refused (409: extend that budget first).
* ``spec.attached``: ``[{"config", "values", "test_values", "label", "at", "trial_id"?}]``. The
  values must cover the objectives and the constraints' metrics (finite numbers; 422 naming
  ``values.<name>``). An objective the service computes exactly from the config (a peft study's
  ``trainable_params`` / ``predicted_memory_mb``, ``api.study.known_objectives``) may be left
  out and is then computed; a value given for one must agree with it (relative 1e-6), or the
  attach is refused naming it, since the config would not be the one measured. Where the spec
  does not tell the task head's size (a data file's labels are read only when a trial trains),
  the head's share is what a trained trial of the study measured beyond the cost model's count
  for its config; before any trial has trained, the value must be given, and
  ``trainable_params`` must be at least the config's adapter alone. The trial is
  ``complete``, of kind ``attached``, never trained, with no checkpoint (no export, no held-out
  test evaluation, no replicates); it is told to the optimiser (``add_trial``, an ``attach``
  event replayed after a restart) and does not count in ``max_trials``. ``test_values``, when
  given, are the user's (``test_source: "user"`` on the trial); without them it is never on the
  test-split front. A running study's runner makes the trial (the request waits for it); a
  study without a runner gets it at once, written here with the next number and history position.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autopeft.api.artifacts import public_error
from autopeft.api.errors import ApiError
from autopeft.api.models import Event, Study, Trial, utcnow
from autopeft.api.services.studies import get_study
from autopeft.api.study import (
    build_space,
    constraints_of,
    feasibility,
    known_objectives,
    objectives_of,
)
from autopeft.errors import InvalidConfig

#: configs one request may enqueue, and entries a study may hold of each kind
MAX_PER_REQUEST = 100
MAX_PER_STUDY = 1000
#: how a study that ended on a time or compute budget says so (``Lifecycle._finish``)
_SPENT = ("time budget reached", "compute budget (max_epochs) reached")
#: history entries that register a trial with the optimiser (its ids are 0, 1, ... in this order)
REGISTERING = ("ask", "add", "enqueue", "attach")
ENQUEUED_LABEL = "enqueued"
KNOWN_RTOL = 1e-6


def waiting(spec: dict[str, Any], key: str) -> list[int]:
    """Indexes of ``spec[key]`` entries not made into trials yet."""
    return [
        i for i, e in enumerate(spec.get(key) or []) if "trial_id" not in e and "refused" not in e
    ]


def _now() -> str:
    return utcnow().isoformat(timespec="seconds")


def _validated(space, config: Any, field: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise InvalidConfig(
            f"a config is a mapping of parameter to value, got {type(config).__name__}", field
        )
    try:
        return space.validate(dict(config))
    except InvalidConfig as err:
        raise InvalidConfig(err.message, f"{field}.{err.field}" if err.field else field) from None


def _locked_study(session: Session, user_id: int, study_id: int) -> Study:
    session.get(Study, study_id, with_for_update=True)  # PostgreSQL: serialised with the runner
    return get_study(session, user_id, study_id)


def _room_left(spec: dict[str, Any], key: str, adding: int) -> None:
    have = len(spec.get(key) or [])
    if have + adding > MAX_PER_STUDY:
        raise ApiError(
            422,
            "invalid_request",
            f"a study holds at most {MAX_PER_STUDY} {key} entries; it has {have}",
            "configs" if key == "enqueued" else "config",
        )


# -- enqueue ---------------------------------------------------------------------------------------
def enqueue(
    session: Session, user_id: int, study_id: int, configs: list[Any]
) -> tuple[Study, bool, list[dict[str, Any]], int]:
    """Record ``configs`` to be tried next (see the module docstring). Returns (study, whether it
    needs a runner started, the normalised configs, trials added to ``max_trials``)."""
    study = _locked_study(session, user_id, study_id)
    if study.state == "failed":
        raise ApiError(
            409,
            "conflict",
            f"study {study_id} failed ({public_error(study.message)}); resume it first, or clone it",
        )
    if study.state == "finished" and study.message in _SPENT:
        raise ApiError(
            409,
            "conflict",
            f"study {study_id} ended because its {study.message}: extend max_seconds or "
            "max_epochs first, then enqueue",
        )
    if not configs or len(configs) > MAX_PER_REQUEST:
        raise ApiError(422, "invalid_request", f"give 1 to {MAX_PER_REQUEST} configs", "configs")
    space = build_space(study.spec)
    normalised = [_validated(space, c, f"configs.{i}") for i, c in enumerate(configs)]
    spec = copy.deepcopy(study.spec)
    _room_left(spec, "enqueued", len(normalised))
    at = _now()
    spec["enqueued"] = [
        *(spec.get("enqueued") or []),
        *({"config": c, "at": at} for c in normalised),
    ]
    kinds = dict(
        session.execute(
            select(Trial.kind, func.count()).where(Trial.study_id == study.id).group_by(Trial.kind)
        ).all()
    )
    made = sum(n for kind, n in kinds.items() if kind != "attached")
    baselines_left = max(0, len(spec.get("baselines") or []) - int(kinds.get("baseline", 0)))
    short = made + baselines_left + len(waiting(spec, "enqueued")) - int(spec["max_trials"])
    added = max(0, short)
    if added:
        spec["max_trials"] = int(spec["max_trials"]) + added
        spec["extensions"] = [
            *(spec.get("extensions") or []),
            {"max_trials": added, "at": at, "by": "enqueue"},
        ]
    study.spec = spec
    restart = study.state == "finished"
    if restart:
        study.state, study.finished_at, study.message = "running", None, None
    return study, restart, normalised, added


# -- attach ----------------------------------------------------------------------------------------
def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidConfig(f"expected a finite number, got {value!r}", field)
    return float(value)


def _test_values(given: Any, names: list[str]) -> dict[str, float] | None:
    """The user's held-out test metrics, stored as the service stores its own (``test_<name>``);
    keys are objective names (or already ``test_<objective>``), and ``examples``."""
    if given is None:
        return None
    if not isinstance(given, dict) or not given:
        raise InvalidConfig(
            "test_values is a mapping of objective to its value on your held-out test split",
            "test_values",
        )
    out = {}
    allowed = [*names, "examples"]
    for key, value in given.items():
        name = key[len("test_") :] if key.startswith("test_") and key[5:] in allowed else key
        if name not in allowed:
            raise InvalidConfig(
                f"{key!r} is not an objective of the study ({', '.join(names)}) nor 'examples'",
                f"test_values.{key}",
            )
        out[f"test_{name}"] = _number(value, f"test_values.{key}")
    return out


def _head_unknown(spec: dict[str, Any]) -> bool:
    """A classifier whose label count the spec does not tell (a data file's labels are read only
    when a trial trains): the cost model then counts the adapter without the task head."""
    from autopeft.api.study import num_labels_of

    workload = spec.get("workload") or {}
    return workload.get("task") != "causal_lm" and num_labels_of(workload) is None


def _exact_costs(
    spec: dict[str, Any], config: dict, values: dict[str, float], reference: list | None
) -> None:
    """Objectives the service computes from the config (``known_objectives``): filled in when
    missing, refused naming ``values.<name>`` when they disagree (see the module docstring)."""
    known = known_objectives(spec)
    if not known:
        return
    offsets: dict[str, float] | None = {}
    if _head_unknown(spec):  # the head's share, measured on a trained trial of the study
        ref = next(
            (
                (c, v)
                for c, v in reference or []
                if all(isinstance(v.get(n), (int, float)) for n in known)
            ),
            None,
        )
        offsets = (
            None if ref is None else {n: ref[1][n] - float(fn(ref[0])) for n, fn in known.items()}
        )
    for name, fn in known.items():
        own = float(fn(config))
        if offsets is None:  # nothing measured yet: the value is the user's, at least the adapter's
            if name not in values:
                raise InvalidConfig(
                    f"missing objective {name!r}: this study's task head is not known until a "
                    "trial has trained, so give the value you measured",
                    f"values.{name}",
                )
            if name == "trainable_params" and values[name] < own:
                raise InvalidConfig(
                    f"trainable_params {values[name]:g} is below the {own:g} parameters this "
                    "config's adapter alone has",
                    f"values.{name}",
                )
            continue
        exact = own + offsets.get(name, 0.0)
        if name not in values:
            values[name] = exact
        elif not math.isclose(values[name], exact, rel_tol=KNOWN_RTOL, abs_tol=1e-6):
            raise InvalidConfig(
                f"{name} is computed exactly from the config by the study's cost model: "
                f"{exact:g} for this config, not {values[name]:g} (leave it out to have it "
                "computed, or check the config is the one you measured)",
                f"values.{name}",
            )


def check_attach(
    spec: dict[str, Any], body: dict[str, Any], reference: list | None = None
) -> dict[str, Any]:
    """The spec entry of an attach request (see the module docstring); ``reference``: (config,
    values) of the study's trained complete trials, for the task head's share of the exactly
    computed costs. Raises ``InvalidConfig`` naming the field."""
    space = build_space(spec)
    config = _validated(space, body.get("config"), "config")
    given = body.get("values")
    if not isinstance(given, dict):
        raise InvalidConfig("values is a mapping of metric to number", "values")
    values = {str(k): _number(v, f"values.{k}") for k, v in given.items()}
    names = [n for n, _ in objectives_of(spec)]
    _exact_costs(spec, config, values, reference)
    required = list(dict.fromkeys([*names, *(m for m, _, _ in constraints_of(spec))]))
    for name in required:
        if name not in values:
            what = "objective" if name in names else "constraint metric"
            raise InvalidConfig(
                f"missing {what} {name!r}: an attached result needs every objective and "
                "constraint metric of the study",
                f"values.{name}",
            )
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= 64):
        raise InvalidConfig("label is a text of 1 to 64 characters", "label")
    return {
        "config": config,
        "values": values,
        "test_values": _test_values(body.get("test_values"), names),
        "label": label,
    }


def attach(
    session: Session, user_id: int, study_id: int, body: dict[str, Any]
) -> tuple[Study, int, int | None]:
    """Record an attached result. Returns (study, the entry's index in ``spec.attached``, the
    trial id when it was made here: the study has no runner, it is not running)."""
    study = _locked_study(session, user_id, study_id)
    reference = None
    if known_objectives(study.spec) and _head_unknown(study.spec):
        reference = session.execute(
            select(Trial.config, Trial.values)
            .where(Trial.study_id == study.id, Trial.state == "complete", Trial.kind == "search")
            .order_by(Trial.number)
            .limit(20)
        ).all()
    entry = check_attach(study.spec, body, [(c, v or {}) for c, v in reference or []])
    spec = copy.deepcopy(study.spec)
    _room_left(spec, "attached", 1)
    spec["attached"] = [*(spec.get("attached") or []), {**entry, "at": _now()}]
    index = len(spec["attached"]) - 1
    trial_id = None
    if study.state != "running":
        trial_id = _attach_in_store(session, study, spec, index)
    study.spec = spec
    return study, index, trial_id


def attached_trial(
    study_id: int, number: int, entry: dict[str, Any], optimizer_id: str, feasible
) -> Trial:
    """The row of an attached result: complete, never trained."""
    now = utcnow()
    ok, reason = feasible
    return Trial(
        study_id=study_id,
        number=number,
        state="complete",
        config=dict(entry["config"]),
        values=dict(entry["values"]),
        test_values=entry.get("test_values"),
        optimizer_id=optimizer_id,
        attempts=0,
        kind="attached",
        label=entry.get("label"),
        started_at=now,
        finished_at=now,
        feasible=ok,
        infeasible_reason=reason,
    )


def attach_payload(trial_id: int, entry: dict[str, Any]) -> dict[str, Any]:
    """The ``attach`` history entry (replayed as ``add_trial(config, values, "complete")``)."""
    return {"trial_id": trial_id, "config": dict(entry["config"]), "values": dict(entry["values"])}


def _attach_in_store(session: Session, study: Study, spec: dict[str, Any], index: int) -> int:
    """A study without a runner: the trial and its ``attach`` history entry, written here (the next
    runner replays it). The caller holds the study's lock and the row."""
    entry = spec["attached"][index]
    sid = study.id
    number = session.scalar(select(func.count()).select_from(Trial).where(Trial.study_id == sid))
    seq = session.scalar(select(func.coalesce(func.max(Event.seq), 0)).where(Event.study_id == sid))
    registered = session.scalar(
        select(func.count())
        .select_from(Event)
        .where(Event.study_id == sid, Event.kind.in_(REGISTERING))
    )
    judged = feasibility(constraints_of(spec), entry["values"])
    t = attached_trial(sid, int(number or 0), entry, str(int(registered or 0)), judged)
    session.add(t)
    session.flush()
    session.add(
        Event(
            study_id=sid, seq=int(seq or 0) + 1, kind="attach", payload=attach_payload(t.id, entry)
        )
    )
    entry["trial_id"] = t.id
    return t.id


def attached_id(session: Session, study_id: int, index: int) -> tuple[int | None, str | None]:
    """(trial id, refusal) of ``spec.attached[index]``: both None while it waits for the runner."""
    study = session.get(Study, study_id)
    entries = (study.spec if study is not None else {}).get("attached") or []
    entry = entries[index] if index < len(entries) else {}
    return entry.get("trial_id"), entry.get("refused")


def check_exportable(trial: Trial) -> None:
    """An attached trial has no weights here (measured elsewhere): nothing to export."""
    if trial.kind == "attached":
        raise ApiError(
            409,
            "conflict",
            f"trial {trial.id} was attached (its values were measured elsewhere): the service "
            "never trained it and has no adapter or model of it to export",
        )
