"""Executors: where trials run. ``autopeft.workers.base`` is the contract; ``local`` runs one
process per trial on this machine; ``ray`` one Ray task per attempt on a cluster."""

from autopeft.workers.base import Executor, TrialOutcome, TrialSpec, create_executor

__all__ = ["Executor", "TrialOutcome", "TrialSpec", "create_executor"]
