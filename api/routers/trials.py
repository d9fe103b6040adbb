"""/api/v1/trials/{id}: one trial, its reports, and its adapter (zip); all owner-only, through the study."""

from __future__ import annotations

from fastapi import APIRouter, Response

from autopeft.api.schemas import TrialId

from autopeft.api.deps import CurrentUser, SessionDep, StateDep
from autopeft.api.schemas import ErrorEnvelope, ReportList, TrialPublic
from autopeft.api.services import studies as svc

router = APIRouter(prefix="/trials", tags=["trials"],
                   responses={401: {"model": ErrorEnvelope}, 404: {"model": ErrorEnvelope},
                              422: {"model": ErrorEnvelope}})


@router.get("/{trial_id}", response_model=TrialPublic, operation_id="get_trial")
def get_trial(trial_id: TrialId, user: CurrentUser, session: SessionDep):
    return svc.trial_public(svc.get_trial(session, user.id, trial_id))


@router.get("/{trial_id}/reports", response_model=ReportList, operation_id="get_reports")
def get_reports(trial_id: TrialId, user: CurrentUser, session: SessionDep):
    return svc.list_reports(session, user.id, trial_id)


@router.get("/{trial_id}/adapter", response_class=Response, operation_id="get_adapter",
            responses={200: {"content": {"application/zip": {}}, "description": "zip of the adapter folder"}})
def get_adapter(trial_id: TrialId, user: CurrentUser, session: SessionDep, state: StateDep):
    """The trial's exported adapter (or, failing that, its checkpoint) as a zip archive."""
    trial = svc.get_trial(session, user.id, trial_id)
    data = svc.adapter_zip(session, trial, state.settings.artifacts_dir,
                           lambda workload: state.datasets.export_workload(state.db, workload))
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="trial-{trial.id}-adapter.zip"'})
