"""/api/v1/studies/{id}/enqueue and /attach: configs to try next, and results measured elsewhere
(``services.outside``)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from autopeft.api.deps import CurrentUser, StateDep
from autopeft.api.routers._common import ERRORS
from autopeft.api.schemas import (
    AttachPending,
    EnqueuePublic,
    ErrorEnvelope,
    StudyEnqueue,
    StudyId,
    TrialAttach,
    TrialPublic,
)
from autopeft.api.services import outside as svc
from autopeft.api.services import studies as studies_svc

#: how long an attach to a running study waits for its runner to make the trial
ATTACH_WAIT_S = 20.0
_CONFLICT = {409: {"model": ErrorEnvelope}}
router = APIRouter(prefix="/studies", tags=["studies"], responses=ERRORS)


@router.post(
    "/{study_id}/enqueue",
    response_model=EnqueuePublic,
    operation_id="enqueue_configs",
    responses={
        **_CONFLICT,
        403: {"model": ErrorEnvelope, "description": "over a quota"},
        429: {"model": ErrorEnvelope, "description": "too many running studies"},
    },
)
def enqueue_configs(study_id: StudyId, body: StudyEnqueue, user: CurrentUser, state: StateDep):
    """Configs to try next, before the optimiser's own suggestions, in order: trained and told like
    any trial (``label: enqueued``), counted in ``max_trials`` (raised, and recorded in
    ``spec.extensions``, when they do not fit). A finished study runs again for them; a stopped
    one runs them on resume; a failed one, or one whose time or compute budget is spent, is a 409."""
    with state.scheduler.study_lock(study_id):
        with state.db.read() as session:
            study = studies_svc.get_study(session, user.id, study_id)
            if study.state == "finished":
                studies_svc.check_quotas(
                    session, state.settings, user.id, study.spec["max_parallel"], study_id
                )
        with state.db.write(study_id) as session:
            study, restart, configs, added = svc.enqueue(session, user.id, study_id, body.configs)
            left = len(svc.waiting(study.spec, "enqueued"))
        if restart:
            state.scheduler.start(study_id)
        else:
            state.scheduler.extended(study_id)  # a running runner reloads the list
    with state.db.read() as session:
        shown = studies_svc.show_study(session, user.id, study_id)
    return {"study": shown, "configs": configs, "waiting": left, "max_trials_added": added}


@router.post(
    "/{study_id}/attach",
    response_model=TrialPublic,
    status_code=201,
    operation_id="attach_result",
    responses={
        202: {
            "model": AttachPending,
            "description": "recorded; the study's runner has not made the trial yet",
        }
    },
)
def attach_result(study_id: StudyId, body: TrialAttach, user: CurrentUser, state: StateDep):
    """A result measured elsewhere: stored as a ``complete`` trial of kind ``attached`` (never
    trained here: no export, no held-out test run) and told to the optimiser, which learns from it;
    it may join the validation front, and the test-split front only with your ``test_values``
    (``test_source: user``). Values must cover the objectives and constraint metrics (422 naming
    ``values.<name>``); an objective the service computes from the config (``trainable_params``)
    may be left out, and a value given for it must agree. Not counted in ``max_trials``."""
    with state.scheduler.study_lock(study_id):
        state.scheduler.settle(study_id)  # a runner on its way out has written its history
        with state.db.write(study_id) as session:
            _, index, trial_id = svc.attach(
                session, user.id, study_id, body.model_dump(exclude_unset=True)
            )
        if trial_id is None:
            state.scheduler.extended(study_id)  # the running study's runner makes the trial
    deadline = time.monotonic() + ATTACH_WAIT_S
    refused = None
    while trial_id is None and refused is None and time.monotonic() < deadline:
        time.sleep(0.05)
        with state.db.read() as session:
            trial_id, refused = svc.attached_id(session, study_id, index)
    if refused is not None:
        from autopeft.api.errors import ApiError

        raise ApiError(422, "invalid_request", refused, "values")
    if trial_id is None:
        pending = AttachPending(
            study_id=study_id,
            message="recorded in spec.attached; the study's runner makes it a trial at its next turn",
        )
        return Response(pending.model_dump_json(), status_code=202, media_type="application/json")
    with state.db.read() as session:
        return studies_svc.trial_public(studies_svc.get_trial(session, user.id, trial_id))
