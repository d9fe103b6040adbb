"""Fair sharing of the executor's trial slots across users and studies.

Every study runner asks :meth:`SlotAllocator.acquire` before it starts a trial and calls
:meth:`release` when the trial is over. With ``capacity`` slots in all (the executor's workers),
a free slot goes to the waiting study whose **user** runs the fewest trials, then whose study
runs the fewest, then to the one that has waited longest: so two users with one study each get
``capacity / 2`` slots each however many trials either asked for first, and one user's five
studies share that user's half. A runner that is passed over is woken when a slot frees up
(``wake``). ``per_user`` caps the trials one user runs at once whatever is free.

No slot is ever taken back from a running trial (no preemption): a newcomer gets the next slots
that free up, so the counts even out within one trial's duration.

A data-parallel trial (``workload.resources.workers: n``) holds ``n`` slots, one per worker of its
gang (``Holder.size``; at most the whole capacity, so a gang larger than the cluster still runs,
alone): fair shares count workers, not trials.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


def gang_size(spec: dict) -> int:
    """Slots one trial of a study takes: its workload's data-parallel ``workers`` (else 1)."""
    resources = (spec.get("workload") or {}).get("resources") or {}
    workers = resources.get("workers") if isinstance(resources, dict) else None
    return int(workers) if isinstance(workers, int) and workers > 1 else 1


@dataclass(eq=False)
class Holder:
    """One study runner as the allocator sees it."""

    user_id: int
    study_id: int
    wake: threading.Event = field(default_factory=threading.Event)
    size: int = 1  # slots one of its trials takes (a data-parallel gang's workers)


class SlotAllocator:
    def __init__(
        self, capacity: int | Callable[[], int | None] | None = None, per_user: int | None = None
    ):
        """``capacity``: slots in all, or a function asked each time (an executor whose cluster grows
        and shrinks); None or 0: no limit."""
        self._capacity = capacity
        self.per_user = per_user if per_user and per_user > 0 else None
        self._lock = threading.Lock()
        self._held: Counter = Counter()  # holder -> slots held
        self._by_user: Counter = Counter()
        self._by_study: Counter = Counter()
        self._waiting: dict[Holder, int] = {}  # holder -> order of arrival
        self._order = itertools.count()

    @property
    def capacity(self) -> int | None:
        cap = self._capacity() if callable(self._capacity) else self._capacity
        return cap if cap and cap > 0 else None

    def _total(self) -> int:
        return sum(self._held.values())

    def _eligible(self, h: Holder) -> bool:
        return self.per_user is None or self._by_user[h.user_id] < self.per_user

    def _rank(self, h: Holder) -> tuple:
        return self._by_user[h.user_id], self._by_study[h.study_id], self._waiting[h]

    def acquire(self, h: Holder) -> bool:
        """Take a slot for one trial of ``h`` now, or False (``h`` waits and is woken later)."""
        with self._lock:
            if h not in self._waiting:
                self._waiting[h] = next(self._order)
            if not self._eligible(h):
                return False
            capacity = self.capacity
            units = min(h.size, capacity) if capacity is not None else h.size
            if capacity is not None and self._total() + units > capacity:
                return False
            best = min((w for w in self._waiting if self._eligible(w)), key=self._rank)
            if best is not h:
                best.wake.set()
                return False
            del self._waiting[h]
            self._held[h] += units
            self._by_user[h.user_id] += units
            self._by_study[h.study_id] += units
            return True

    def release(self, h: Holder, n: int = 1, rejoin: bool = False) -> None:
        """Free the slots of ``n`` of ``h``'s trials (``n * h.size``, at most what it holds) and wake
        the runners next in line for them. ``rejoin``: a
        trial of ``h`` ended and ``h`` may want its slot back, so it competes for it at once (it
        calls :meth:`withdraw` if it does not): else a study whose trials end together would
        hand all its slots to a waiting one before its own runner could ask again."""
        with self._lock:
            n = min(n * h.size, self._held[h])
            if n <= 0:
                return
            if rejoin and h not in self._waiting:
                self._waiting[h] = next(self._order)
            self._held[h] -= n
            self._by_user[h.user_id] -= n
            self._by_study[h.study_id] -= n
            if not self._held[h]:
                del self._held[h]
            waiting = [w for w in self._waiting if self._eligible(w)]
        if waiting:
            with self._lock:
                ranked = sorted((w for w in waiting if w in self._waiting), key=self._rank)
            for w in ranked[:n]:
                w.wake.set()

    def withdraw(self, h: Holder) -> None:
        """``h`` wants no more slots (for now): it is no longer waiting; a free slot it was first
        in line for goes to the next waiting runner (woken)."""
        with self._lock:
            if self._waiting.pop(h, None) is None:
                return
            capacity = self.capacity
            free = capacity is None or self._total() < capacity
            eligible = [w for w in self._waiting if self._eligible(w)] if free else []
            best = min(eligible, key=self._rank) if eligible else None
        if best is not None:
            best.wake.set()

    def forget(self, h: Holder) -> None:
        """``h`` is gone: it waits for nothing and its slots are free."""
        self.withdraw(h)
        with self._lock:
            n = self._held[h]
        self.release(h, -(-n // max(1, h.size)))

    def running(self, user_id: int | None = None) -> int:
        with self._lock:
            return self._total() if user_id is None else self._by_user[user_id]
