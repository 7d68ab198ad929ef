"""Memory, SQLite and PostgreSQL agree: a Hypothesis state machine applies the same random desk
operations (and claims) to three desks with identical fake clocks and id factories, one per
adapter, and after every step checks that the three stores hold the same snapshots and events
and answer every query, count, claim and export the same way (after Hypothesis's
``tests/nocover/test_database_agreement.py``)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, ClassVar

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from storage_support import fresh_schema

from referralkit import (
    Actor,
    AttachmentKind,
    Channel,
    Direction,
    FakeClock,
    FollowUpKind,
    MemoryStore,
    Priority,
    Query,
    Referral,
    ReferralDesk,
    ReferralKitError,
    Role,
    Status,
)
from referralkit.storage import ReferralStore, open_store
from referralkit.storage.sqlite import SQLiteStore
from referralkit.testing import sample_request

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
ACTOR = Actor("agree", {Role.COORDINATOR, Role.SCHEDULER, Role.SPECIALIST, Role.REFERRER})
SPECIALTIES = ("cardiology", "dermatology", "oncology")
OWNERS = ("c1", "c2")

Operation = Callable[[ReferralDesk, str, dt.datetime], Any]

OPERATIONS: dict[str, Operation] = {
    "send": lambda d, i, now: d.send(ACTOR, i),
    "accept": lambda d, i, now: d.accept(ACTOR, i),
    "decline": lambda d, i, now: d.decline(ACTOR, i, "outside our scope"),
    "hold": lambda d, i, now: d.hold(ACTOR, i, "waiting for records"),
    "resume": lambda d, i, now: d.resume(ACTOR, i),
    "schedule": lambda d, i, now: d.schedule(ACTOR, i, now + dt.timedelta(days=5)),
    "reschedule": lambda d, i, now: d.reschedule(ACTOR, i, now + dt.timedelta(days=9)),
    "record_no_show": lambda d, i, now: d.record_no_show(ACTOR, i),
    "cancel_appointment": lambda d, i, now: d.cancel_appointment(ACTOR, i),
    "record_visit": lambda d, i, now: d.record_visit(ACTOR, i),
    "complete": lambda d, i, now: d.complete(ACTOR, i, "seen; plan agreed"),
    "request_cancellation": lambda d, i, now: d.request_cancellation(ACTOR, i, "moved"),
    "confirm_cancellation": lambda d, i, now: d.confirm_cancellation(ACTOR, i),
    "fail": lambda d, i, now: d.fail(ACTOR, i, "unreachable"),
    "attach_history": lambda d, i, now: d.attach(ACTOR, i, AttachmentKind.MEDICAL_HISTORY),
    "log_call": lambda d, i, now: d.log_communication(
        ACTOR, i, Channel.PHONE, Direction.OUTBOUND, "patient", summary="left a message"
    ),
    "follow_up": lambda d, i, now: d.add_follow_up(
        ACTOR, i, FollowUpKind.TEST, (now + dt.timedelta(days=3)).date()
    ),
    "assign_c1": lambda d, i, now: d.assign(ACTOR, i, "c1"),
    "assign_c2": lambda d, i, now: d.assign(ACTOR, i, "c2"),
    "unassign": lambda d, i, now: d.assign(ACTOR, i, None),
    "reassess": lambda d, i, now: d.reassess(ACTOR, i),
}


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What a call did: its value, or the library error it raised (class and message)."""
    try:
        return ("value", call())
    except ReferralKitError as error:
        return ("error", (type(error).__name__, str(error)))


class StoresAgree(RuleBasedStateMachine):
    """Three desks, one per adapter, driven in lockstep."""

    postgres_url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self._exit = ExitStack()
        url = self._exit.enter_context(fresh_schema(self.postgres_url))
        stores: list[ReferralStore] = [MemoryStore(), SQLiteStore(":memory:"), open_store(url)]
        for store in stores:
            self._exit.callback(store.close)
        self.clocks = [FakeClock(START) for _ in stores]
        self.desks = [
            ReferralDesk(store, clock=clock, new_id=self._ids())
            for store, clock in zip(stores, self.clocks, strict=True)
        ]
        self.known: list[str] = []

    @staticmethod
    def _ids() -> Callable[[], str]:
        counter = itertools.count(1)
        return lambda: f"id-{next(counter):04d}"

    def teardown(self) -> None:
        self._exit.close()

    def same(self, call: Callable[[ReferralDesk], Any]) -> tuple[str, Any]:
        """Run ``call`` on every desk; all outcomes must be equal. Returns that outcome."""
        outcomes = [outcome(lambda d=desk: call(d)) for desk in self.desks]  # type: ignore[misc]
        assert outcomes[1] == outcomes[0], ("sqlite", outcomes[1], outcomes[0])
        assert outcomes[2] == outcomes[0], ("postgresql", outcomes[2], outcomes[0])
        return outcomes[0]

    @property
    def now(self) -> dt.datetime:
        return self.clocks[0].now()

    referrals = Bundle("referrals")

    @rule(
        target=referrals,
        source=st.integers(0, 6),
        priority=st.sampled_from(Priority),
        specialty=st.sampled_from(SPECIALTIES),
        patient=st.integers(1, 3),
        complete=st.booleans(),
    )
    def intake(
        self, source: int, priority: Priority, specialty: str, patient: int, complete: bool
    ) -> str:
        request = sample_request(f"SRC-{source}", complete=complete)
        request = attrs.evolve(
            request,
            priority=priority,
            specialty=specialty,
            patient=attrs.evolve(request.patient, id=f"pat-{patient}"),
        )
        kind, value = self.same(lambda d: d.intake(ACTOR, request))
        assert kind == "value"
        if value.id not in self.known:
            self.known.append(value.id)
        return str(value.id)

    @rule(referral=referrals, operation=st.sampled_from(sorted(OPERATIONS)))
    def operate(self, referral: str, operation: str) -> None:
        now = self.now
        self.same(lambda d: OPERATIONS[operation](d, referral, now))

    @rule(referral=referrals, expected=st.integers(0, 6))
    def assign_expecting(self, referral: str, expected: int) -> None:
        """A change made against a version the caller believes current (often stale)."""
        self.same(lambda d: d.assign(ACTOR, referral, "c3", expected_version=expected))

    @rule(hours=st.integers(0, 30))
    def time_passes(self, hours: int) -> None:
        for clock in self.clocks:
            clock.advance(hours=hours)

    @rule(
        owner=st.sampled_from(OWNERS),
        count=st.integers(0, 3),
        minutes=st.integers(1, 120),
        specialty=st.none() | st.sampled_from(SPECIALTIES),
    )
    def claim(self, owner: str, count: int, minutes: int, specialty: str | None) -> None:
        now, lease = self.now, dt.timedelta(minutes=minutes)
        query = Query(specialty=specialty)
        self.same(lambda d: d.store.claim(owner, count, now=now, lease=lease, query=query))

    @rule(owner=st.sampled_from(OWNERS), minutes=st.integers(1, 120))
    def renew(self, owner: str, minutes: int) -> None:
        now, lease, ids = self.now, dt.timedelta(minutes=minutes), list(self.known)
        self.same(lambda d: d.store.renew(owner, ids, now=now, lease=lease))

    @rule(owner=st.sampled_from(OWNERS), data=st.data())
    def release(self, owner: str, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(self.known), max_size=3)) if self.known else []
        self.same(lambda d: d.store.release(owner, ids))

    # ------------------------------------------------------------------ agreement

    def queries(self) -> list[Query]:
        now = self.now
        return [
            Query(),
            Query(open_only=True),
            Query(open_only=True, limit=2, offset=1),
            Query(order="updated"),
            Query(order="updated", limit=3),
            Query(status={Status.RECEIVED, Status.ACCEPTED}),
            Query(status=Status.DRAFT),
            Query(specialty="cardiology", open_only=True),
            Query(owner="c1"),
            Query(priority=Priority.URGENT),
            Query(patient_id="pat-1"),
            Query(updated_since=START + dt.timedelta(hours=20)),
            Query(due_before=now + dt.timedelta(days=7)),
        ]

    @invariant()
    def stores_agree(self) -> None:
        for query in self.queries():
            self.same(lambda d, q=query: d.store.query(q))  # type: ignore[misc]
            self.same(lambda d, q=query: d.store.count(q))  # type: ignore[misc]
        for referral_id in self.known:
            kind, snapshot = self.same(lambda d, i=referral_id: d.store.load(i))  # type: ignore[misc]
            assert kind == "value"
            assert isinstance(snapshot, Referral)
            self.same(lambda d, i=referral_id: d.store.events(i))  # type: ignore[misc]
        self.same(lambda d: list(d.store.export()))


def test_memory_sqlite_and_postgresql_agree(postgres_url: str) -> None:
    """Random desk operations, claims and time steps leave the three stores equal."""
    StoresAgree.postgres_url = postgres_url
    current = settings()
    run_state_machine_as_test(
        StoresAgree,
        settings=settings(
            current,
            max_examples=min(current.max_examples, 30),
            stateful_step_count=25,
        ),
    )
