"""/api/v1/studies: create, list, get, stop, resume, delete; trials, pareto, hypervolume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response
from pydantic import Field, TypeAdapter

from autopeft.api.artifacts import remove_artifacts
from autopeft.api.deps import CurrentUser, StateDep
from autopeft.api.routers._common import ERRORS, links
from autopeft.api.schemas import (
    MAX_ID,
    Annotations,
    ErrorEnvelope,
    HypervolumePublic,
    ImportancePublic,
    ParetoPublic,
    PlanPublic,
    StudyComparison,
    StudyCreate,
    StudyExtend,
    StudyId,
    StudyList,
    StudyPublic,
    TrialList,
    TrialState,
)
from autopeft.api.services import front_views as front
from autopeft.api.services import importance as importance_svc
from autopeft.api.services import plan as plan_svc
from autopeft.api.services import studies as svc
from autopeft.api.services.spec import SpecContext, validate_spec

_LIMITS = {
    403: {"model": ErrorEnvelope, "description": "not allowed (python workloads) or over a quota"},
    429: {"model": ErrorEnvelope, "description": "too many running studies"},
}
router = APIRouter(prefix="/studies", tags=["studies"], responses=ERRORS)
# stateful API tests (schemathesis) follow these from a created study to its other operations
_STUDY_LINKS = links(
    "study_id",
    "$response.body#/id",
    "get_study",
    "list_trials",
    "get_pareto",
    "get_hypervolume",
    "stop_study",
    "resume_study",
    "delete_study",
)


_ENCODERS: dict[type, TypeAdapter] = {}


def _encoded(model: type, compute: Callable[[Any], Any], state) -> Callable[[], bytes]:
    """``compute(session)`` in a read session, validated and encoded as ``model`` (what FastAPI
    would send for a ``response_model``), as bytes for the answer cache."""
    adapter = _ENCODERS.get(model) or _ENCODERS.setdefault(model, TypeAdapter(model))

    def run() -> bytes:
        with state.db.read() as session:
            data = compute(session)
        return adapter.dump_json(adapter.validate_python(data))

    return run


async def _poll(
    state, key: tuple, study_id: int | None, model: type, compute, user_id: int | None = None
) -> Response:
    """A polled read: from the answer cache while the study (or the user's studies) is unchanged."""
    body = await state.listing.cached(key, study_id, _encoded(model, compute, state), user_id)
    return Response(body, media_type="application/json")


def _listed(state, user_id: int):
    def compute(session) -> dict:
        studies = svc.list_studies(session, user_id)
        state.db.own(user_id, [s["id"] for s in studies])  # their changes now renew the list
        return {"studies": studies}

    return compute


def _created(operation_id: str, description: str) -> dict[str, Any]:
    """Route options of an operation that creates and starts a study."""
    links = {"description": description, "links": _STUDY_LINKS}
    return {
        "status_code": 201,
        "response_model": StudyPublic,
        "operation_id": operation_id,
        "responses": {**_LIMITS, 201: links},
    }


def _start_new(state, user, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Validate ``body`` as a study spec (4xx naming the field), check the user's quotas, store
    the study (with ``extra`` spec fields) and start it."""
    with state.db.read() as session:
        spec = validate_spec(body, SpecContext(user, state.settings, session, state.datasets))
        svc.check_quotas(session, state.settings, user.id, spec["max_parallel"])
    spec.update(extra)
    with state.db.write() as session:
        study = svc.create_study(session, user.id, spec)
        out = svc.study_public(study, svc.counts(session, [study.id])[study.id])
        state.db.announce(session, study.id)  # other replicas' cached lists hear of it
    state.db.own(user.id, [out["id"]], new=True)  # committed: the user's list changed
    with state.scheduler.study_lock(out["id"]):  # never started twice (scheduling.reconcile)
        state.scheduler.start(out["id"])
    return out


@router.post("/plan", response_model=PlanPublic, operation_id="plan_study")
def plan_study(body: StudyCreate, user: CurrentUser, state: StateDep):
    """What the study would cost, before you pay: compute per trial and per baseline (epochs),
    full trials the budget buys, the optimiser's initial design, predicted memory, and the time
    measured on your earlier trials of the same setting. Validates like ``POST /studies``
    (4xx naming the field); stores and starts nothing."""
    with state.db.read() as session:
        spec = validate_spec(
            body.model_dump(mode="json"), SpecContext(user, state.settings, session, state.datasets)
        )
        return plan_svc.plan(session, user.id, spec)


_CREATE = _created("create_study", "the study, started")
_CREATE["responses"] = {
    **_CREATE["responses"],
    200: {"model": PlanPublic, "description": "``?dry_run=true``: the plan; nothing stored"},
}


@router.post("", **_CREATE)
def create_study(
    body: StudyCreate,
    user: CurrentUser,
    state: StateDep,
    dry_run: Annotated[
        bool,
        Query(description="validate and answer the plan (as POST /studies/plan); create nothing"),
    ] = False,
):
    """Validate the whole spec (space, objectives, optimiser and options, workload), store, start.
    With ``?dry_run=true``: validate and answer what it would cost (200, the plan), store nothing."""
    if dry_run:
        plan = PlanPublic.model_validate(plan_study(body, user, state))
        return Response(plan.model_dump_json(), status_code=200, media_type="application/json")
    return _start_new(state, user, body.model_dump(mode="json"))


@router.get("", response_model=StudyList, operation_id="list_studies")
async def list_studies(
    user: CurrentUser,
    state: StateDep,
    q: Annotated[
        str | None,
        Query(max_length=200, description="text in the name, the notes or a tag (any case)"),
    ] = None,
    tag: Annotated[
        list[Annotated[str, Field(max_length=40)]] | None,
        Query(max_length=20, description="only studies with every one of these tags"),
    ] = None,
):
    """Your studies; ``?q=`` and ``?tag=`` (repeatable) search them."""
    if not q and not tag:
        return await _poll(state, ("studies",), None, StudyList, _listed(state, user.id), user.id)
    with state.db.read() as session:
        studies = svc.list_studies(session, user.id)
    return {"studies": [s for s in studies if svc.matches(s, q, tag or [])]}


@router.patch("/{study_id}", response_model=StudyPublic, operation_id="annotate_study")
def annotate_study(study_id: StudyId, body: Annotations, user: CurrentUser, state: StateDep):
    """Set the study's ``notes`` and / or ``tags`` (the fields given replace the stored ones)."""
    with state.db.write(study_id) as session:
        svc.annotate(svc.get_study(session, user.id, study_id), body.model_dump(exclude_unset=True))
    return _shown(state, user, study_id)


@router.get("/compare", response_model=StudyComparison, operation_id="compare_studies")
def compare_studies(
    user: CurrentUser,
    state: StateDep,
    ids: Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_ID)]],
        Query(min_length=1, max_length=front.COMPARE_MAX, description="study ids, in order"),
    ],
):
    """Studies with the same objectives side by side: fronts, and hypervolume against compute
    with one reference point for all."""
    with state.db.read() as session:
        return front.compare(session, user.id, ids)


@router.get("/{study_id}", response_model=StudyPublic, operation_id="get_study")
async def get_study(study_id: StudyId, user: CurrentUser, state: StateDep):
    return await _poll(
        state,
        ("study", user.id, study_id),
        study_id,
        StudyPublic,
        lambda session: svc.show_study(session, user.id, study_id),
    )


def _shown(state, user, study_id: int) -> dict:
    with state.db.read() as session:
        return svc.show_study(session, user.id, study_id)


def _check_quotas_to_run(state, user, study_id: int, when: Callable[[str], bool]) -> None:
    """The user's quotas (active studies, running trials) allow the study to run again, checked
    only if ``when(state)`` holds for its state (a running study already counts)."""
    with state.db.read() as session:
        study = svc.get_study(session, user.id, study_id)
        if when(study.state):
            svc.check_quotas(session, state.settings, user.id, study.spec["max_parallel"], study_id)


@router.post(
    "/{study_id}/stop",
    response_model=StudyPublic,
    responses={409: {"model": ErrorEnvelope}},
    operation_id="stop_study",
)
def stop_study(study_id: StudyId, user: CurrentUser, state: StateDep):
    """Stop: no new trial starts; running trials are cancelled and stay in the history."""
    with state.scheduler.study_lock(study_id):
        with state.db.write(study_id) as session:
            svc.set_state(session, user.id, study_id, "stopped")
        state.scheduler.stop(study_id)
    return _shown(state, user, study_id)


@router.post(
    "/{study_id}/resume", response_model=StudyPublic, operation_id="resume_study", responses=_LIMITS
)
def resume_study(study_id: StudyId, user: CurrentUser, state: StateDep):
    """Resume a stopped (or finished, after raising nothing) study: its optimiser is rebuilt."""
    with state.scheduler.study_lock(study_id):  # never interleaved with a delete of the same study
        _check_quotas_to_run(state, user, study_id, when=lambda s: s != "running")
        with state.db.write(study_id) as session:
            svc.set_state(session, user.id, study_id, "running")
        state.scheduler.start(study_id)
    return _shown(state, user, study_id)


@router.post(
    "/{study_id}/extend",
    response_model=StudyPublic,
    operation_id="extend_study",
    responses={**_LIMITS, 409: {"model": ErrorEnvelope}},
)
def extend_study(study_id: StudyId, body: StudyExtend, user: CurrentUser, state: StateDep):
    """Add budget (``max_trials``, ``max_seconds``, ``max_epochs``) to a running, stopped or finished
    study. A running study goes on with it; a finished one runs again, exactly the added budget (its
    optimiser rebuilt from the history); a stopped one keeps it for its resume. Each extension is
    recorded in ``spec.extensions``."""
    with state.scheduler.study_lock(study_id):
        _check_quotas_to_run(state, user, study_id, when=lambda s: s == "finished")
        with state.db.write(study_id) as session:
            _, restart = svc.extend_study(session, user.id, study_id, body.model_dump())
        if restart:
            state.scheduler.start(study_id)
        else:
            state.scheduler.extended(study_id)
    return _shown(state, user, study_id)


@router.post("/{study_id}/clone", **_created("clone_study", "the new study, started"))
def clone_study(
    study_id: StudyId,
    user: CurrentUser,
    state: StateDep,
    overrides: Annotated[
        dict[str, Any], Body(description="spec fields to change (merge patch)")
    ] = {},  # noqa: B006 (FastAPI copies a default for each request)
):
    """A new study from this one's spec with ``overrides`` merged over it (JSON merge patch, RFC 7396:
    mappings merge key by key, ``null`` removes a key), validated like a new study. The clone
    starts from scratch; its ``spec.cloned_from`` names the original."""
    with state.db.read() as session:
        body = svc.clone_spec(svc.get_study(session, user.id, study_id), overrides)
    return _start_new(state, user, body, cloned_from=study_id)


@router.delete("/{study_id}", status_code=204, response_class=Response, operation_id="delete_study")
def delete_study(study_id: StudyId, user: CurrentUser, state: StateDep):
    """Delete the study, its trials and their artifacts (checkpoints, adapters, logs). Its id is never
    used again."""
    with state.scheduler.study_lock(study_id):
        with state.db.read() as session:
            svc.get_study(session, user.id, study_id)
        state.scheduler.forget_study(study_id)  # stops its runner (waits), and none starts again
        with state.db.write(study_id) as session:
            svc.delete_study(session, user.id, study_id)
        remove_artifacts(state.settings.artifacts_dir, study_id)
    return Response(status_code=204)


_TRIAL_LINKS = links(
    "trial_id", "$response.body#/trials/0/id", "get_trial", "get_reports", "get_adapter"
)


@router.get(
    "/{study_id}/trials",
    response_model=TrialList,
    operation_id="list_trials",
    responses={200: {"description": "a page of trials", "links": _TRIAL_LINKS}},
)
async def list_trials(
    study_id: StudyId,
    user: CurrentUser,
    state: StateDep,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="only trials with id > after")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=svc.MAX_PAGE)] = 100,
    trial_state: Annotated[TrialState | None, Query(alias="state")] = None,
):
    """Trials in creation order, ``limit`` per page; poll with ``?after=<next_after>`` for the new ones.

    Served from a small cache of encoded pages keyed on the study's change counter (see
    ``services.listing``), so repeated polls of an unchanged study cost no query."""
    body = await state.listing.get(user.id, study_id, after, limit, trial_state)
    return Response(body, media_type="application/json")


Split = Annotated[
    Literal["validation", "test"],
    Query(
        description="validation: the values the search selected on; test: the same front's held-out test metrics"
    ),
]


@router.get("/{study_id}/pareto", response_model=ParetoPublic, operation_id="get_pareto")
async def get_pareto(
    study_id: StudyId, user: CurrentUser, state: StateDep, split: Split = "validation"
):
    """Complete trials on the first non-dominated front of the study's objectives on the
    validation split (baselines included, marked ``kind: baseline``); ``?split=test`` gives the
    same trials at their held-out test values (null until evaluated)."""
    return await _poll(
        state,
        ("pareto", user.id, study_id, split),
        study_id,
        ParetoPublic,
        lambda session: front.pareto(session, user.id, study_id, split),
    )


@router.get(
    "/{study_id}/hypervolume", response_model=HypervolumePublic, operation_id="get_hypervolume"
)
async def get_hypervolume(
    study_id: StudyId, user: CurrentUser, state: StateDep, split: Split = "validation"
):
    return await _poll(
        state,
        ("hypervolume", user.id, study_id, split),
        study_id,
        HypervolumePublic,
        lambda session: front.hypervolume(session, user.id, study_id, split),
    )


Evaluator = Annotated[
    Literal["fanova", "ped_anova", "mdi"],
    Query(description="Optuna's importance evaluator: fANOVA (default), PED-ANOVA, or MDI"),
]


@router.get(
    "/{study_id}/importance", response_model=ImportancePublic, operation_id="get_importance"
)
async def get_importance(
    study_id: StudyId, user: CurrentUser, state: StateDep, evaluator: Evaluator = "fanova"
):
    """Which searched parameters matter, per objective: Optuna's importance evaluator over the
    study's complete search trials (parameters in every one of them; conditional ones left out are
    named in ``excluded``)."""
    return await _poll(
        state,
        ("importance", user.id, study_id, evaluator),
        study_id,
        ImportancePublic,
        lambda session: importance_svc.importance(session, user.id, study_id, evaluator),
    )
