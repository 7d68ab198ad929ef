"""Stateful: after any sequence of desk operations, the desk's worklist is in the order of a
slow reference ranking computed from each referral's clocks.

The reference reads every referral in the store, its clocks
(:func:`referralkit.read_clocks`) and its priority, builds the ranking tuple by hand
(breached first, then the least fraction of its window left, then priority, then that
clock's deadline, then the id) and sorts them all; the desk reads the store through its
query, assesses each referral and keeps the best ``limit`` with a heap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import math

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from referralkit import (
    Actor,
    AttachmentKind,
    Channel,
    Direction,
    FakeClock,
    MemoryStore,
    Priority,
    ReferralDesk,
    ReferralKitError,
    Role,
    read_clocks,
)
from referralkit.testing import sample_request

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ACTOR = Actor("coord", {Role.COORDINATOR})
OWNERS = (None, "coord-a", "coord-b")
SPECIALTIES = ("cardiology", "orthopedics")


def reference_order(desk: ReferralDesk, ids: list[str]) -> list[str]:
    """The open referrals, ranked the slow way."""
    now = desk.clock.now()
    keyed = []
    for referral_id in ids:
        referral = desk.store.load(referral_id)
        if referral.status.is_terminal:
            continue
        readings = read_clocks(referral, desk.store.events(referral_id), now)
        running = [c for c in readings if c.stopped_at is None]
        breached = [c for c in running if c.breached]
        pool = breached or running
        if pool:
            least = min(c.fraction_remaining for c in pool)
            deadline = next(c for c in pool if c.fraction_remaining == least).deadline
            key = (0 if breached else 1, least, deadline.timestamp())
        else:
            key = (2, math.inf, math.inf)
        priority = -referral.effective_priority.rank
        keyed.append(((key[0], key[1], priority, key[2], referral_id), referral_id))
    return [referral_id for _, referral_id in sorted(keyed)]


class WorklistMachine(RuleBasedStateMachine):
    """Referrals taken in, moved along, assigned, swept, and time passing."""

    referrals = Bundle("referrals")

    @initialize()
    def open_desk(self) -> None:
        self.clock = FakeClock(START)
        counter = itertools.count(1)
        self.desk = ReferralDesk(
            MemoryStore(), clock=self.clock, new_id=lambda: f"r{next(counter):04d}"
        )
        self.ids: list[str] = []
        self.sources = itertools.count(1)

    @rule(
        target=referrals,
        priority=st.sampled_from(Priority),
        specialty=st.sampled_from(SPECIALTIES),
        complete=st.booleans(),
        send=st.booleans(),
    )
    def intake(self, priority: Priority, specialty: str, complete: bool, send: bool) -> str:
        request = attrs.evolve(
            sample_request(f"S-{next(self.sources)}", complete=complete),
            priority=priority,
            specialty=specialty,
        )
        referral = self.desk.intake(ACTOR, request)
        if send:
            referral = self.desk.send(ACTOR, referral.id)
        self.ids.append(referral.id)
        return referral.id

    @rule(
        referral_id=referrals,
        operation=st.sampled_from(
            [
                "send",
                "accept",
                "attach",
                "schedule",
                "record_no_show",
                "record_visit",
                "hold",
                "resume",
                "complete",
                "log_call",
            ]
        ),
    )
    def step(self, referral_id: str, operation: str) -> None:
        desk, now = self.desk, self.clock.now()
        calls = {
            "send": lambda: desk.send(ACTOR, referral_id),
            "accept": lambda: desk.accept(ACTOR, referral_id),
            "attach": lambda: desk.attach(
                ACTOR, referral_id, AttachmentKind.MEDICAL_HISTORY, title="history"
            ),
            "schedule": lambda: desk.schedule(ACTOR, referral_id, now + dt.timedelta(days=3)),
            "record_no_show": lambda: desk.record_no_show(ACTOR, referral_id),
            "record_visit": lambda: desk.record_visit(ACTOR, referral_id),
            "hold": lambda: desk.hold(ACTOR, referral_id, "patient: travelling"),
            "resume": lambda: desk.resume(ACTOR, referral_id),
            "complete": lambda: desk.complete(ACTOR, referral_id, "plan agreed"),
            "log_call": lambda: desk.log_communication(
                ACTOR, referral_id, Channel.PHONE, Direction.OUTBOUND, "patient"
            ),
        }
        with contextlib.suppress(ReferralKitError):  # refused in this state: no change
            calls[operation]()

    @rule(referral_id=referrals, owner=st.sampled_from(OWNERS))
    def assign(self, referral_id: str, owner: str | None) -> None:
        with contextlib.suppress(ReferralKitError):
            self.desk.assign(ACTOR, referral_id, owner)

    @rule(hours=st.integers(min_value=1, max_value=24 * 30))
    def time_passes(self, hours: int) -> None:
        self.clock.advance(hours=hours)

    @rule()
    def sweep(self) -> None:
        self.desk.sweep(ACTOR)

    @invariant()
    def worklist_matches_the_reference(self) -> None:
        expected = reference_order(self.desk, self.ids)
        rows = self.desk.worklist(ACTOR, limit=None)
        assert [r.referral_id for r in rows] == expected
        for limit in (1, 3, 50):  # served from the stored rank keys
            top = self.desk.worklist(ACTOR, limit=limit)
            assert [r.referral_id for r in top] == expected[:limit]
            assert top == rows[:limit]
        mine_top = self.desk.worklist(ACTOR, limit=2, owner="coord-b")
        theirs = {i for i in self.ids if self.desk.store.load(i).owner == "coord-b"}
        assert [r.referral_id for r in mine_top] == [i for i in expected if i in theirs][:2]
        owner = self.desk.worklist(ACTOR, limit=None, owner="coord-a")
        mine = {i for i in self.ids if self.desk.store.load(i).owner == "coord-a"}
        assert [r.referral_id for r in owner] == [i for i in expected if i in mine]
        nobody = self.desk.worklist(ACTOR, limit=None, unassigned=True)
        unowned = {i for i in self.ids if self.desk.store.load(i).owner is None}
        assert [r.referral_id for r in nobody] == [i for i in expected if i in unowned]


WorklistMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWorklistOrder = WorklistMachine.TestCase
TestWorklistOrder.__doc__ = "The desk's worklist equals the slow reference after any operations."
