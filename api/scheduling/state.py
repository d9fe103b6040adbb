"""What the parts of one study's runner share: :class:`RunState`, the one place every field is.

``StudyRunner`` (``api.scheduler``) is a thread that owns a ``RunState`` and one instance of each
part below; the loop calls the parts through named methods, and a part calls another through the
runner (``self.run.<part>.<method>``), never through inherited ``self`` names. A part keeps no
state of its own: what it reads or changes between calls is a field here.

=================  ============================================  ===============================
part (runner.X)    class                                         what it does
=================  ============================================  ===============================
``history``        ``scheduling.replay.HistoryReplay``           events; rebuild the optimiser
``runs``           ``scheduling.runs.TrialRuns``                 submit, reports, outcomes
``baseline_runs``  ``scheduling.baselines.Baselines``            hand-picked reference trials
``lifecycle``      ``scheduling.lifecycle.Lifecycle``            budget, finish, cancel a trial
``warm_start``     ``scheduling.warmstart.WarmStartReuse``       a source study's trials reused
``outside``        ``scheduling.outside.OutsideTrials``          enqueued configs, attached results
``pbt``            ``scheduling.pbt.PBTTurns``                   PBT members taking turns
``promotions``     ``scheduling.promotions.Promotions``          ASHA pauses and promotions
``replicates``     ``scheduling.replicates.Replicates``          the front's other seeds
``tests``          ``scheduling.tests.HeldOutTests``             held-out test evaluations
=================  ============================================  ===============================

Locking: ``lock`` (re-entrant) guards the optimiser and every collection below; it is never
taken inside a write transaction (on SQLite the write lock is taken after it). ``seq_lock``
guards ``seq`` alone and is never held with another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autopeft.api.scheduler import SchedulerManager, StudyRunner
    from autopeft.api.slots import Holder


@dataclass(eq=False)
class RunState:
    """The mutable state of one study's runner, shared by its parts."""

    study_id: int
    # -- signals --------------------------------------------------------------------------------
    stop_requested: threading.Event = field(default_factory=threading.Event)  # a user's stop
    shutting_down: threading.Event = field(default_factory=threading.Event)  # process exit
    wake: threading.Event = field(default_factory=threading.Event)  # the loop has work
    budget_changed: threading.Event = field(default_factory=threading.Event)  # extend: reload
    ending: threading.Event = field(default_factory=threading.Event)  # marked finished
    lock: Any = field(default_factory=threading.RLock)  # optimiser + in-flight bookkeeping
    # -- the study, as loaded when the runner starts ---------------------------------------------
    spec: dict[str, Any] = field(default_factory=dict)  # stored spec; budget keys reloaded
    opt: Any = None  # the optimiser (rebuilt from the history: HistoryReplay.replay)
    objectives: list = field(default_factory=list)  # (name, direction)
    constraints: list = field(default_factory=list)
    known: Any = None  # objectives the search space computes (constraints judge them)
    turns: bool = False  # PBT members take turns (PBTTurns.takes_turns)
    # -- the optimiser's ids --------------------------------------------------------------------
    ids: dict[int, Any] = field(default_factory=dict)  # trial id -> suggestion id (search)
    by_opt_id: dict[str, int] = field(default_factory=dict)  # str(suggestion id) -> trial id
    baselines: set[int] = field(default_factory=set)  # never told: baselines and replicates
    attached_n: int = 0  # attached trials (they do not count in max_trials)
    seq: int = 0  # the last history position taken (guarded by seq_lock)
    seq_lock: Any = field(default_factory=threading.Lock)
    # -- runs -----------------------------------------------------------------------------------
    inflight: set[int] = field(default_factory=set)  # trials training now
    evaluating: set[int] = field(default_factory=set)  # saved adapters being tested now
    pending_tests: list[int] = field(default_factory=list)  # to test, in order
    requeue: list[int] = field(default_factory=list)  # to run again (restart / resume), in order
    paused: list[int] = field(default_factory=list)  # PBT members waiting for their turn
    next_step: dict[int, int] = field(default_factory=dict)  # PBT member -> its segment's end
    exploits: dict[int, Any] = field(default_factory=dict)  # run -> the Exploit it was told
    rung_paused: list[int] = field(default_factory=list)  # waiting at an ASHA rung
    pausing: set[int] = field(default_factory=set)  # told to stop at a rung, paused when ended
    replicate_todo: list[tuple[int, int]] = field(default_factory=list)  # (front trial, seed)
    cancelling: dict[int, str] = field(default_factory=dict)  # trial id -> why a user cancelled
    progress: dict[int, float] = field(default_factory=dict)  # run -> epochs trained so far
    planned: dict[int, float] = field(default_factory=dict)  # run -> epochs it plans to train
    run_start: dict[int, float] = field(default_factory=dict)  # run -> the epoch it starts at
    last_report: dict[int, int] = field(default_factory=dict)  # run -> its last ReportLog slot
    # -- this study in the manager's services ---------------------------------------------------
    slot: Holder | None = None  # the fair-share allocator's holder (api.slots)
    tracker: Any = None  # tracking.hub.StudyTracker when spec.tracking names a sink
    webhook: Any = None  # webhooks.sender.StudyHook when the spec has a webhook


class Part:
    """One collaborator of a study's runner: the state, the other parts (through ``run``) and
    the manager's services (``m``, ``db``, ``executor``)."""

    def __init__(self, run: StudyRunner):
        self.run = run
        self.st: RunState = run.st
        self.m: SchedulerManager = run.m
        self.db, self.executor, self.study_id = run.db, run.executor, run.study_id
