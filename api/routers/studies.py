"""/api/v1/studies: create, list, get, stop, resume, delete; trials, pareto, hypervolume."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from autopeft.api.deps import CurrentUser, SessionDep, StateDep
from autopeft.api.schemas import (MAX_ID, ErrorEnvelope, StudyId, HypervolumePublic, ParetoPublic, StudyCreate, StudyList,
                                  StudyPublic, TrialList, TrialState)
from autopeft.api.services import studies as svc
from autopeft.api.services.spec import validate_spec

_ERRORS = {401: {"model": ErrorEnvelope}, 404: {"model": ErrorEnvelope}, 422: {"model": ErrorEnvelope}}
router = APIRouter(prefix="/studies", tags=["studies"], responses=_ERRORS)


@router.post("", status_code=201, response_model=StudyPublic)
def create_study(body: StudyCreate, user: CurrentUser, state: StateDep):
    """Validate the whole spec (space, objectives, optimiser and options, workload), store, start."""
    spec = validate_spec(body.model_dump(mode="json"))
    with state.db.write() as session:
        study = svc.create_study(session, user.id, spec)
        out = svc.study_public(study, svc.counts(session, [study.id])[study.id])
    state.scheduler.start(out["id"])
    return out


@router.get("", response_model=StudyList)
def list_studies(user: CurrentUser, session: SessionDep):
    return {"studies": svc.list_studies(session, user.id)}


@router.get("/{study_id}", response_model=StudyPublic)
def get_study(study_id: StudyId, user: CurrentUser, session: SessionDep):
    return svc.show_study(session, user.id, study_id)


@router.post("/{study_id}/stop", response_model=StudyPublic, responses={409: {"model": ErrorEnvelope}})
def stop_study(study_id: StudyId, user: CurrentUser, state: StateDep):
    """Stop: no new trial starts; running trials are cancelled and stay in the history."""
    with state.db.write(study_id) as session:
        svc.set_state(session, user.id, study_id, "stopped")
    state.scheduler.stop(study_id)
    with state.db.read() as session:
        return svc.show_study(session, user.id, study_id)


@router.post("/{study_id}/resume", response_model=StudyPublic)
def resume_study(study_id: StudyId, user: CurrentUser, state: StateDep):
    """Resume a stopped (or finished, after raising nothing) study: its optimiser is rebuilt."""
    with state.db.write(study_id) as session:
        svc.set_state(session, user.id, study_id, "running")
    state.scheduler.start(study_id)
    with state.db.read() as session:
        return svc.show_study(session, user.id, study_id)


@router.delete("/{study_id}", status_code=204, response_class=Response)
def delete_study(study_id: StudyId, user: CurrentUser, state: StateDep):
    with state.db.read() as session:
        svc.get_study(session, user.id, study_id)
    state.scheduler.stop(study_id, wait=True)
    with state.db.write(study_id) as session:
        svc.delete_study(session, user.id, study_id)
    return Response(status_code=204)


@router.get("/{study_id}/trials", response_model=TrialList)
async def list_trials(study_id: StudyId, user: CurrentUser, state: StateDep,
                      after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="only trials with id > after")] = None,
                      limit: Annotated[int, Query(ge=1, le=svc.MAX_PAGE)] = 100,
                      trial_state: Annotated[TrialState | None, Query(alias="state")] = None):
    """Trials in creation order, ``limit`` per page; poll with ``?after=<next_after>`` for the new ones.

    Served from a small cache of encoded pages keyed on the study's change counter (see
    ``services.listing``), so repeated polls of an unchanged study cost no query."""
    body = await state.listing.get(user.id, study_id, after, limit, trial_state)
    return Response(body, media_type="application/json")


Split = Annotated[Literal["validation", "test"], Query(
    description="validation: the values the search selected on; test: the same front's held-out test metrics")]


@router.get("/{study_id}/pareto", response_model=ParetoPublic)
def get_pareto(study_id: StudyId, user: CurrentUser, session: SessionDep, split: Split = "validation"):
    """Complete trials on the first non-dominated front of the study's objectives on the
    validation split (baselines included, marked ``kind: baseline``); ``?split=test`` gives the
    same trials at their held-out test values (null until evaluated)."""
    return svc.pareto(session, user.id, study_id, split)


@router.get("/{study_id}/hypervolume", response_model=HypervolumePublic)
def get_hypervolume(study_id: StudyId, user: CurrentUser, session: SessionDep, split: Split = "validation"):
    return svc.hypervolume(session, user.id, study_id, split)
