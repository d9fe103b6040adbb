"""/api/v1/trials/{id}: one trial, its reports, and its adapter (zip); all owner-only, through the study."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from autopeft.api.deps import CurrentUser, StateDep
from autopeft.api.routers._common import ERRORS
from autopeft.api.schemas import Annotations, ErrorEnvelope, ReportList, TrialId, TrialPublic
from autopeft.api.services import studies as svc
from autopeft.api.services.outside import check_exportable

CANCEL_WAIT_S = (
    30.0  # a running trial's worker gets SIGTERM, then SIGKILL after the executor's grace
)
router = APIRouter(
    prefix="/trials",
    tags=["trials"],
    responses=ERRORS,
)


@router.get("/{trial_id}", response_model=TrialPublic, operation_id="get_trial")
def get_trial(trial_id: TrialId, user: CurrentUser, state: StateDep):
    with state.db.read() as session:
        return svc.trial_public(svc.get_trial(session, user.id, trial_id))


@router.patch("/{trial_id}", response_model=TrialPublic, operation_id="annotate_trial")
def annotate_trial(trial_id: TrialId, body: Annotations, user: CurrentUser, state: StateDep):
    """Set the trial's ``notes`` and / or ``tags`` (the fields given replace the stored ones)."""
    with state.db.read() as session:
        study_id = svc.get_trial(session, user.id, trial_id).study_id
    with state.db.write(study_id) as session:
        trial = svc.get_trial(session, user.id, trial_id)
        svc.annotate(trial, body.model_dump(exclude_unset=True))
        return svc.trial_public(trial)


@router.post(
    "/{trial_id}/cancel",
    response_model=TrialPublic,
    operation_id="cancel_trial",
    responses={409: {"model": ErrorEnvelope}},
)
def cancel_trial(trial_id: TrialId, user: CurrentUser, state: StateDep):
    """End a queued or running trial as ``failed`` with the reason "cancelled by <user>" (a running
    trial's worker is stopped); the optimiser is told it failed and the study goes on. Answers the
    trial once it ended (at most 30 s; a worker slower to die is answered still ``running``)."""
    with state.db.read() as session:
        study_id = svc.cancel_trial_check(session, user.id, trial_id).study_id
    with state.scheduler.study_lock(study_id):
        with state.db.read() as session:
            svc.cancel_trial_check(session, user.id, trial_id)
        state.scheduler.cancel_trial(study_id, trial_id, f"cancelled by {user.name}")
    return svc.trial_when_ended(state.db, user.id, trial_id, CANCEL_WAIT_S)


@router.get("/{trial_id}/reports", response_model=ReportList, operation_id="get_reports")
def get_reports(trial_id: TrialId, user: CurrentUser, state: StateDep):
    with state.db.read() as session:
        return svc.list_reports(session, user.id, trial_id)


@router.get(
    "/{trial_id}/adapter",
    response_class=Response,
    operation_id="get_adapter",
    responses={
        200: {"content": {"application/zip": {}}, "description": "zip of the adapter folder"},
        409: {"model": ErrorEnvelope, "description": "an attached trial: never trained here"},
    },
)
def get_adapter(trial_id: TrialId, user: CurrentUser, state: StateDep):
    """The trial's exported adapter (or, failing that, its checkpoint) as a zip archive, with a
    model card (``README.md``: the study, the config, validation and held-out test metrics with
    95% intervals, trainable parameters, how to load it)."""
    from autopeft.api.services.export import model_card, with_card

    with state.db.read() as session:  # what the export needs, read first: none held while it runs
        trial = svc.get_trial(session, user.id, trial_id)
        check_exportable(trial)
        study = svc.get_study(session, user.id, trial.study_id)
        card = model_card(study, trial)
        spec = study.spec
    data = svc.adapter_zip(
        spec,
        trial,
        state.settings.artifacts_dir,
        lambda workload: state.datasets.export_workload(state.db, workload),
    )
    return Response(
        with_card(data, card),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="trial-{trial.id}-adapter.zip"'},
    )


@router.get(
    "/{trial_id}/merged",
    response_class=FileResponse,
    operation_id="get_merged_model",
    responses={
        200: {"content": {"application/zip": {}}, "description": "zip of the merged model folder"},
        409: {"model": ErrorEnvelope, "description": "an attached trial: never trained here"},
    },
)
def get_merged(trial_id: TrialId, user: CurrentUser, state: StateDep):
    """The trial's base model with its adapter merged into the weights (a plain transformers
    model folder: weights, config, tokenizer, pooling files, model card) as a zip archive, built
    on first use. 422 naming ``merged`` for an adapter that cannot fold into the weights."""
    from autopeft.api.artifacts import trial_dir
    from autopeft.api.services.export import ensure_merged, merged_archive, model_card

    with state.db.read() as session:
        trial = svc.get_trial(session, user.id, trial_id)
        check_exportable(trial)
        study = svc.get_study(session, user.id, trial.study_id)
        card = model_card(study, trial, merged=True)
        spec, config = study.spec, dict(trial.config)
    spec = {
        **spec,
        "workload": state.datasets.export_workload(state.db, spec.get("workload") or {}),
    }
    root = trial_dir(state.settings.artifacts_dir, trial.study_id, trial.number)
    folder = ensure_merged(spec, config, trial.id, root, trial.state)
    return FileResponse(
        merged_archive(folder, card),
        media_type="application/zip",
        filename=f"trial-{trial.id}-merged.zip",
    )
