"""Request and response bodies of the REST API (Create / Public pairs)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autopeft.api.limits import check_json, check_name, check_spec_size
from autopeft.api.webhooks.schemas import WebhookSpec

# ids are 32-bit (INTEGER on PostgreSQL): larger ones are a 422, never a database error
MAX_ID = 2**31 - 1
StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="study id")]
TrialId = Annotated[int, Path(ge=1, le=MAX_ID, description="trial id")]
DatasetId = Annotated[int, Path(ge=1, le=MAX_ID, description="dataset id")]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID, description="token id")]

TrialState = Literal["queued", "running", "complete", "failed", "pruned"]
StudyState = Literal["running", "stopped", "finished", "failed"]


class ErrorBody(BaseModel):
    code: str = Field(
        description="machine-readable code, e.g. not_found, invalid_spec, unauthorized"
    )
    message: str
    field: str | None = Field(default=None, description="offending field (dotted path), if any")


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def _bounded(value: Any) -> Any:
    check_json(value)
    return value


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    direction: Literal["minimize", "maximize"]

    _printable = field_validator("name")(lambda cls, v: check_name(v, "an objective name"))


class OptimizerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=50)
    options: dict[str, Any] = Field(default_factory=dict)

    _bounded = field_validator("options")(lambda cls, v: _bounded(v))


class MlflowTracking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="sqlite:///name.db (kept under the server's tracking folder) or an http(s) "
        "MLflow server; default: the server's own store",
    )
    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="experiment name (default: autopeft-study-<id>); created when missing",
    )
    adapter: Literal["peft", "checkpoint", "none"] = Field(
        default="peft",
        description="what a complete or pruned trial logs as artifact: the exported PEFT adapter "
        "(else the checkpoint when none can be exported), the training checkpoint, or nothing",
    )

    _printable = field_validator("experiment")(
        lambda cls, v: v if v is None else check_name(v, "an experiment name")
    )


class TensorboardTracking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="folder of the study's event files, one sub-folder a trial (a relative path is "
        "kept under the server's tensorboard folder; default: tensorboard/study-<id>)",
    )


class TrackingSpec(BaseModel):
    """Experiment tracking (see docs/tracking.md); each sink is on when present."""

    model_config = ConfigDict(extra="forbid")
    mlflow: MlflowTracking | None = Field(
        default=None, description="one MLflow run per trial: params, metrics per step, adapter"
    )
    tensorboard: TensorboardTracking | None = Field(
        default=None, description="TensorBoard event files per trial (scalars per step)"
    )


class StudyCreate(BaseModel):
    """A study: what to search (space), for what (objectives), how (optimiser), on what (workload).

    Free-form parts (space, workload, optimizer options) are bounded (depth, entries, string
    length; see ``autopeft.api.limits``) and hold finite numbers only; the whole spec is at most
    64 KiB as JSON."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(min_length=1, max_length=200)
    space: str | dict[str, Any] = Field(description="preset name, or an inline space mapping")
    objectives: list[Objective] = Field(min_length=1, max_length=8)
    optimizer: OptimizerSpec | None = Field(
        default=None,
        description="default: the method that measured best on real fine-tuning (see BENCHMARKS.md); "
        "the stored spec says which",
    )
    workload: dict[str, Any] = Field(
        description='{"kind": "peft", "model": ..., "dataset_id": <an uploaded '
        'dataset> | "dataset": <built-in name or server path>, ...} or '
        '{"kind": "python", "entrypoint": "pkg.mod:fn"} (when the operator enables them)'
    )
    max_trials: int = Field(default=50, ge=1, le=100_000)
    max_parallel: int = Field(default=1, ge=1, le=256)
    max_seconds: float | None = Field(
        default=None,
        gt=0,
        le=10 * 365 * 86400,
        description="time budget; no new trial starts after it",
    )
    max_epochs: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        description="compute budget: training epochs summed over all trials (a trial "
        "pruned after half an epoch counts 0.5); no new trial starts once it is used",
    )
    baselines: list[str | dict[str, Any]] | Literal["default"] | None = Field(
        default=None,
        description="hand-picked reference points run beside the search (linear_probe, lora_r4, "
        "lora_r8, lora_r16, mam, full_finetune, dora_r8, adalora; 'default': linear_probe and lora_r8; "
        "your own as "
        '{"name": ..., "config": {...}}), counted in the budget',
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    replicates: int = Field(
        default=1,
        ge=1,
        le=10,
        description="runs per point of the final front: when the search ends, each front "
        "candidate is trained again with replicates - 1 more training seeds (beyond max_epochs), "
        "and the front is selected on the seed means (peft workloads)",
    )
    num_layers: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="layer count for per-layer spaces when the workload names no model",
    )
    reference_point: dict[str, float] | None = Field(
        default=None,
        description="hypervolume reference point per objective (default: derived, see /hypervolume)",
    )
    tracking: TrackingSpec | None = Field(
        default=None,
        description="experiment tracking: MLflow runs and / or TensorBoard event files per trial",
    )
    webhook: WebhookSpec | None = Field(
        default=None,
        description="signed JSON posted to a URL when the study finishes or fails, and when a new "
        "point joins its Pareto front",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        return check_name(name)

    @field_validator("space", "workload")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        return _bounded(value)

    @field_validator("objectives")
    @classmethod
    def _unique(cls, objectives: list[Objective]) -> list[Objective]:
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ValueError("objective names must be unique")
        return objectives

    @model_validator(mode="after")
    def _reference(self) -> StudyCreate:
        if self.reference_point is not None:
            names = {o.name for o in self.objectives}
            if set(self.reference_point) != names:
                raise ValueError(
                    f"reference_point must give exactly the objectives {sorted(names)}"
                )
        check_spec_size(self.model_dump(mode="json"))
        return self


class StudyExtend(BaseModel):
    """More budget for a running, stopped or finished study: each field is added to the study's own
    (at least one above 0). A finished study runs again, exactly the added trials / time / epochs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_trials: int = Field(default=0, ge=0, le=100_000, description="trials to add")
    max_seconds: float = Field(
        default=0,
        ge=0,
        le=10 * 365 * 86400,
        description="seconds to add to the time budget (the study must have one)",
    )
    max_epochs: float = Field(
        default=0,
        ge=0,
        le=1e9,
        description="training epochs to add to the compute budget (the study must have one)",
    )


class StudyEnqueue(BaseModel):
    """Configs to try next, before the optimiser's own suggestions."""

    model_config = ConfigDict(extra="forbid")
    configs: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=100,
        description="configs of the study's space (each checked like space.validate: a bad key or "
        "value is a 422 naming configs.<i>.<key>)",
    )


class TrialAttach(BaseModel):
    """A result measured elsewhere, told to the optimiser as a complete trial."""

    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(description="a config of the study's space")
    values: dict[str, Any] = Field(
        description="metric -> number: every objective and constraint metric (one the service "
        "computes from the config, e.g. trainable_params, may be left out)"
    )
    test_values: dict[str, Any] | None = Field(
        default=None,
        description="your held-out test metrics (objective names, or test_<objective>, and "
        "examples); shown as reported by you (test_source: user)",
    )
    label: str | None = Field(
        default=None, min_length=1, max_length=64, description="where it comes from"
    )


class AttachPending(BaseModel):
    pending: bool = True
    study_id: int
    message: str


#: a tag: a short word or phrase (letters, digits, spaces and ``_ . : / + -``)
TAG_PATTERN = r"^[\w][\w .:/+-]{0,39}$"
MAX_TAGS = 20
MAX_NOTES = 10_000


class Annotations(BaseModel):
    """``PATCH`` body for a study or a trial: the fields given replace the stored ones (``null``
    notes or ``[]`` tags clear them)."""

    model_config = {"extra": "forbid"}
    notes: str | None = Field(default=None, max_length=MAX_NOTES)
    tags: list[Annotated[str, Field(pattern=TAG_PATTERN)]] | None = Field(
        default=None, max_length=MAX_TAGS, description="replaces the tags (duplicates dropped)"
    )


class StudyPublic(BaseModel):
    id: int
    name: str
    state: StudyState
    counts: dict[str, int] = Field(description="trials per state")
    spec: dict[str, Any]
    message: str | None = None
    notes: str | None = Field(default=None, description="the owner's notes")
    tags: list[str] = Field(default_factory=list)
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class StudyList(BaseModel):
    studies: list[StudyPublic]


class EnqueuePublic(BaseModel):
    study: StudyPublic
    configs: list[dict[str, Any]] = Field(description="the configs as enqueued (normalised)")
    waiting: int = Field(description="enqueued configs of the study not started yet")
    max_trials_added: int = Field(
        description="added to max_trials so that every waiting config fits (0: they fit)"
    )


class TrialPublic(BaseModel):
    id: int
    study_id: int
    number: int
    state: TrialState
    config: dict[str, Any]
    values: dict[str, float | None] | None = Field(
        default=None, description="the workload's metrics; non-finite values are stored as null"
    )
    attempts: int
    parent_id: int | None = None
    kind: Literal["search", "baseline", "replicate", "attached"] = Field(
        default="search",
        description="search (asked of the optimiser, or enqueued by you: label ``enqueued``), "
        "baseline (a hand-picked point), replicate (another training seed of the front candidate "
        "parent_id) or attached (a result measured elsewhere, told to the optimiser, never trained)",
    )
    label: str | None = Field(
        default=None, description="a baseline's name; ``enqueued``; an attached result's label"
    )
    notes: str | None = Field(default=None, description="the owner's notes")
    tags: list[str] = Field(default_factory=list)
    test_values: dict[str, float | None] | None = Field(
        default=None,
        description="metrics of the saved adapter on the held-out test split (front and baselines)",
    )
    test_source: Literal["service", "user"] | None = Field(
        default=None,
        description="who measured test_values: the service (the saved adapter, evaluated here) or "
        "the user (an attached result's, as reported); null without test values",
    )
    epochs_trained: float = Field(default=0.0, description="compute used, in training epochs")
    lineage: list[dict[str, Any]] | None = Field(
        default=None, description="PBT: every exploit, in order"
    )
    feasible: bool | None = Field(
        default=None,
        description="whether the final values satisfy the study's "
        "constraints (optimizer.options.constraints); null while the trial has no values. "
        "Infeasible trials are never on the front nor in the hypervolume",
    )
    infeasible_reason: str | None = Field(
        default=None, description="every violated constraint, with the value"
    )
    error: str | None = None
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class TrialList(BaseModel):
    trials: list[TrialPublic]
    next_after: int | None = Field(
        description="pass as ?after= to get the trials created since; null when this page is empty"
    )


class ReportPublic(BaseModel):
    step: int
    attempt: int
    values: dict[str, float | None]
    decision: str
    created_at: dt.datetime


class ReportList(BaseModel):
    reports: list[ReportPublic]


class Interval(BaseModel):
    low: float
    high: float
    examples: int = Field(description="how many examples the metric was measured on")


class SeedRuns(BaseModel):
    runs: int = Field(description="complete runs of this candidate (itself and its replicates)")
    trial_ids: list[int]
    spread: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="per objective measured on examples: mean and sd over the runs",
    )


class ParetoTrial(TrialPublic):
    intervals: dict[str, Interval] = Field(
        default_factory=dict,
        description="95% interval of each objective that is a share of examples (accuracy, "
        "exact_match) on this split: Wilson's from the number of examples, widened by the "
        "variance over training seeds when the point has replicates; points whose intervals "
        "overlap are not told apart",
    )
    seeds: SeedRuns | None = Field(
        default=None,
        description="with replicates: the point's values are the means over these runs",
    )
    tied_with_best: bool | None = Field(
        default=None,
        description="this point's first share objective cannot be told apart at 95% from the "
        "front's best on it (null: the study has no share objective)",
    )


class ParetoPublic(BaseModel):
    objectives: list[Objective]
    split: Literal["validation", "test"] = Field(
        description="the front is always selected on validation; with split=test each trial's values are its "
        "held-out test metrics (objectives without a test counterpart, e.g. trainable_params, unchanged)"
    )
    trials: list[ParetoTrial]
    n_infeasible: int = Field(
        default=0, description="complete trials left out: they violate a constraint"
    )


class HypervolumePublic(BaseModel):
    split: Literal["validation", "test"] = "validation"
    hypervolume: float
    reference_point: dict[str, float] | None
    reference_rule: str
    n_complete: int = Field(description="complete feasible trials")
    n_pareto: int
    n_infeasible: int = Field(
        default=0, description="complete trials left out: they violate a constraint"
    )


class ImportancePublic(BaseModel):
    """Which searched parameters matter, per objective (``autopeft.optim.importance``)."""

    evaluator: Literal["fanova", "ped_anova", "mdi"]
    n_trials: int = Field(
        description="complete search trials used (baselines are not points of the space)"
    )
    objectives: dict[str, dict[str, float] | None] = Field(
        description="per objective, each parameter's importance (summing to 1), most important "
        "first; null when it cannot be computed (see reason) or the objective never varied"
    )
    excluded: list[str] = Field(
        description="conditional parameters some complete trial did not have (left out)"
    )
    reason: str | None = None


class PlannedBaseline(BaseModel):
    name: str
    epochs: float


class PlanPublic(BaseModel):
    """What a study will cost before it runs (``POST /studies/plan``; nothing is stored)."""

    optimizer: str
    max_trials: int
    max_epochs: float | None = None
    max_seconds: float | None = None
    max_parallel: int
    epochs_per_trial: float | None = Field(
        default=None, description="training epochs of a full search trial (peft workloads)"
    )
    baselines: list[PlannedBaseline] = Field(description="each baseline's compute, in epochs")
    full_trials: int = Field(
        description="full search trials the budget buys after the baselines (max_trials, "
        "max_epochs and, when the speed is measured, max_seconds)"
    )
    initial_design: int | None = Field(
        default=None, description="trials the optimiser runs before its model chooses any"
    )
    memory_mb: dict[str, float] | None = Field(
        default=None,
        description="predicted peak training memory of the cheapest and costliest config (min, max)",
    )
    trainable_params: dict[str, int] | None = Field(
        default=None,
        description="the exact range of trainable parameters over the space (min, max; the cost "
        "model at the space's extremes; the task head included when the workload declares its "
        "labels)",
    )
    seconds_per_epoch: float | None = Field(
        default=None,
        description="median over your earlier complete trials of the same model, data and sizes; "
        "null when there are none",
    )
    measured_trials: int = 0
    estimated_seconds: float | None = None
    warnings: list[str]


class ComparedStudy(BaseModel):
    id: int
    name: str
    state: StudyState
    front: list[TrialPublic] = Field(description="the validation front (baselines included)")
    history: list[dict[str, float]] = Field(
        description="after each complete trial: n (complete trials), compute (training epochs of "
        "every ended trial so far) and hypervolume (against the shared reference point)"
    )
    hypervolume: float
    compute: float = Field(description="training epochs used by all the study's trials")


class StudyComparison(BaseModel):
    objectives: list[dict[str, Any]]
    reference_point: dict[str, float] | None = Field(
        description="shared by every study: their common reference_point, else the worst value "
        "over all their trials plus 10% of the range"
    )
    studies: list[ComparedStudy]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str
    scheduler: Literal["leader", "follower", "off"] = Field(
        description="this replica runs the studies (leader), leaves them to another (follower), or "
        "is a read-only API (off)"
    )
    replica_id: str
    leader: str | None = Field(description="the replica that schedules now (null: none)")


class GateState(BaseModel):
    in_flight: int
    waiting: int
    limit: int
    queue: int
    admitted: int
    refused: int
    saturated: bool


class Ready(BaseModel):
    ready: bool = Field(description="false while every request slot is busy (saturated)")
    requests: GateState
    uploads: GateState


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str | None = Field(
        default=None, min_length=1, max_length=100, description="a label for the token"
    )
    expires_in_days: float = Field(
        default=90,
        gt=0,
        le=3650,
        description="days until the token expires (at most AUTOPEFT_TOKEN_MAX_DAYS)",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str | None) -> str | None:
        return None if name is None else check_name(name)


class TokenPublic(BaseModel):
    id: int
    prefix: str = Field(description="the first characters of the token, to tell tokens apart")
    name: str | None = None
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    revoked: bool
    expired: bool
    current: bool = Field(description="the token of this request")


class TokenCreated(TokenPublic):
    token: str = Field(description="the token itself: shown this once, stored only as an HMAC")


class TokenList(BaseModel):
    tokens: list[TokenPublic]


class MePublic(BaseModel):
    id: int
    name: str
    role: Literal["admin", "user"]
    python_workloads: bool = Field(description="whether this user may submit python workloads")
    limits: dict[str, int | None] = Field(description="the operator's limits (null: none)")
    usage: dict[str, int] = Field(description="what the user uses of them now")


class DatasetPublic(BaseModel):
    id: int
    name: str
    filename: str
    format: Literal["csv", "tsv", "jsonl"]
    encoding: str
    size_bytes: int
    sha256: str = Field(description="content hash of the stored file")
    rows: int = Field(description="examples (rows with a text and a label)")
    columns: list[str]
    text_column: list[str] = Field(description="the text column, or two for sentence pairs")
    label_column: str
    labels: dict[str, int] = Field(description="rows per label, in label order")
    kind: Literal["classification", "sft"] = Field(
        default="classification",
        description="classification: text and label columns; sft: prompt / completion or chat "
        "messages records (no text or label column), for a causal_lm study",
    )
    created_at: dt.datetime


class DatasetList(BaseModel):
    datasets: list[DatasetPublic]
