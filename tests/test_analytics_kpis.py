"""Point-in-time KPIs: ``summary(store, as_of)`` equals a slow reference that replays each
referral up to ``as_of`` with :func:`referralkit.replay` and applies the definitions to the
rebuilt referral, over random histories made through the desk (Hypothesis). The grouped KPI
table agrees with the summary, and its groups add up. Pure Python: no extra needed except for
the DataFrame part.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from referralkit import (
    Actor,
    AppointmentStatus,
    AttachmentKind,
    Channel,
    ClockName,
    Code,
    Direction,
    MemoryStore,
    Referral,
    ReferralDesk,
    ReferralEvent,
    ReferralKitError,
    Role,
    Status,
    read_clocks,
    replay,
)
from referralkit.analytics import Kpis, summary
from referralkit.testing import FakeClock, sample_request

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
CLOSED = {Status.COMPLETED, Status.DECLINED, Status.CANCELLED, Status.FAILED}
PATIENT_WORDS = {"patient", "guardian", "parent", "caregiver", "caretaker"}


# --------------------------------------------------------------------------- histories


def _later(clock: FakeClock, days: int) -> dt.datetime:
    return clock.now() + dt.timedelta(days=days)


OPERATIONS: dict[str, Callable[[ReferralDesk, Actor, str, FakeClock], Any]] = {
    "send": lambda d, a, r, c: d.send(a, r),
    "accept": lambda d, a, r, c: d.accept(a, r),
    "decline": lambda d, a, r, c: d.decline(a, r, "not ours"),
    "hold": lambda d, a, r, c: d.hold(a, r, "patient: away"),
    "hold_records": lambda d, a, r, c: d.hold(a, r, "waiting for records"),
    "resume": lambda d, a, r, c: d.resume(a, r),
    "schedule": lambda d, a, r, c: d.schedule(a, r, _later(c, 5)),
    "reschedule": lambda d, a, r, c: d.reschedule(a, r, _later(c, 3)),
    "no_show": lambda d, a, r, c: d.record_no_show(a, r),
    "cancel_appointment": lambda d, a, r, c: d.cancel_appointment(a, r, "clinic closed"),
    "visit": lambda d, a, r, c: d.record_visit(a, r),
    "complete": lambda d, a, r, c: d.complete(a, r, "consult note"),
    "request_cancellation": lambda d, a, r, c: d.request_cancellation(a, r, "moved"),
    "confirm_cancellation": lambda d, a, r, c: d.confirm_cancellation(a, r),
    "fail": lambda d, a, r, c: d.fail(a, r, "unreachable"),
    "request_auth": lambda d, a, r, c: d.request_authorization(a, r),
    "request_auth_expedited": lambda d, a, r, c: d.request_authorization(a, r, expedited=True),
    "approve": lambda d, a, r, c: d.record_authorization(
        a, r, approved=True, valid_from=dt.date(2026, 1, 1)
    ),
    "deny": lambda d, a, r, c: d.record_authorization(a, r, approved=False),
    "call_patient": lambda d, a, r, c: d.log_communication(
        a, r, Channel.PHONE, Direction.OUTBOUND, "patient"
    ),
    "patient_called": lambda d, a, r, c: d.log_communication(
        a, r, Channel.PHONE, Direction.INBOUND, "Guardian (mother)"
    ),
    "call_payer": lambda d, a, r, c: d.log_communication(
        a, r, Channel.PHONE, Direction.OUTBOUND, "payer"
    ),
    "survey": lambda d, a, r, c: d.record_survey(a, r, 1 + len(d.store.events(r)) % 5),
    "consult_note": lambda d, a, r, c: d.attach(a, r, AttachmentKind.CONSULT_NOTE, text="note"),
    "error": lambda d, a, r, c: d.mark_entered_in_error(a, r, "duplicate"),
}

steps = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(sorted(OPERATIONS)),
        st.integers(0, 96),
    ),
    min_size=1,
    max_size=40,
)


# what a coordinator plausibly does next in each status, so random histories move along the
# lifecycle instead of mostly bouncing off it (every operation is also tried where refused)
_AUTH = ["request_auth", "request_auth_expedited", "approve", "deny"]
PLAUSIBLE: dict[Status, list[str]] = {
    Status.DRAFT: ["send", "send", "send", "error", "call_payer"],
    Status.RECEIVED: [
        *("accept", "accept", "accept", "decline", "hold", "hold_records"),
        *("request_cancellation", "fail", "call_patient", *_AUTH),
    ],
    Status.ACCEPTED: [
        *("schedule", "schedule", "hold", "call_patient", "patient_called", "complete"),
        *("decline", "fail", "request_cancellation", *_AUTH, "approve"),
    ],
    Status.ON_HOLD: ["resume", "resume", "call_patient", "decline"],
    Status.SCHEDULED: [
        *("visit", "visit", "no_show", "cancel_appointment", "reschedule", "complete"),
        "call_patient",
    ],
    Status.NO_SHOW: ["reschedule", "fail", "call_patient", "decline"],
    Status.APPOINTMENT_CANCELLED: ["reschedule", "call_patient", "decline"],
    Status.SEEN: ["complete", "consult_note", "survey", "call_patient"],
    Status.CANCELLATION_REQUESTED: ["confirm_cancellation", "complete"],
}
_AFTER = ["survey", "call_patient", "consult_note"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[MemoryStore, FakeClock]:
    """A store of four referrals moved along by up to 60 plausible operations."""
    store, clock = build([])
    desk = ReferralDesk(store, clock=clock)
    actor = Actor("coord-1", {Role.COORDINATOR})
    ids = sorted(r.id for r in store.query())
    for _ in range(draw(st.integers(1, 60))):
        which = draw(st.integers(0, 3))
        status = store.load(ids[which]).status
        operation = draw(st.sampled_from([*PLAUSIBLE.get(status, _AFTER), "any"]))
        if operation == "any":
            operation = draw(st.sampled_from(sorted(OPERATIONS)))
        hours = draw(st.integers(0, 96))
        clock.advance(hours=hours)
        with contextlib.suppress(ReferralKitError):
            OPERATIONS[operation](desk, actor, ids[which], clock)
    return store, clock


def build(plan: Sequence[tuple[int, str, int]]) -> tuple[MemoryStore, FakeClock]:
    """Four referrals (two need prior authorization) driven by ``plan``: (which referral,
    which operation, hours to wait first); operations the lifecycle refuses are skipped."""
    counter = itertools.count(1)
    clock = FakeClock(START)
    desk = ReferralDesk(MemoryStore(), clock=clock, new_id=lambda: f"id-{next(counter):04d}")
    actor = Actor("coord-1", {Role.COORDINATOR})
    mri = (Code.cpt("70551", "MRI brain"),)
    ids = []
    for number in range(4):
        request = sample_request(f"REQ-{number}")
        if number % 2:
            request = attrs.evolve(request, services=mri)
        ids.append(desk.intake(actor, request).id)
        clock.advance(hours=number)
    for which, operation, hours in plan:
        clock.advance(hours=hours)
        with contextlib.suppress(ReferralKitError):
            OPERATIONS[operation](desk, actor, ids[which], clock)
    return desk.store, clock  # type: ignore[return-value]


# --------------------------------------------------------------------------- the reference


def _first(items: Sequence[Any]) -> Any:
    return items[0] if items else None


def reference_row(
    r: Referral, events: Sequence[ReferralEvent], as_of: dt.datetime
) -> dict[str, Any]:
    """The KPI inputs of one referral, from its replayed snapshot and its events."""
    status = r.status
    row: dict[str, Any] = {
        "status": status,
        "open": not status.is_terminal,
        "completed": status is Status.COMPLETED,
        "closed": status in CLOSED,
        "received": r.received_at is not None,
        "closed_loop": AttachmentKind.CONSULT_NOTE in r.attachment_kinds(),
        "overdue": r.is_overdue(as_of),
        "awaiting": r.awaiting_consult_note,
        "to_schedule": None,
        "to_appointment": None,
    }
    if r.received_at is not None and r.appointments:
        first = r.appointments[0]
        booked = [e.at for e in events if e.type == "appointment_booked"]
        row["to_schedule"] = ((first.booked_at or booked[0]) - r.received_at) / dt.timedelta(days=1)
        row["to_appointment"] = (first.start - r.received_at) / dt.timedelta(days=1)
    outcomes = {a.status for a in r.appointments}
    known = outcomes & {AppointmentStatus.FULFILLED, AppointmentStatus.NOSHOW}
    row["missed"] = (AppointmentStatus.NOSHOW in outcomes) if known else None
    row["open_age"] = (
        (as_of - r.received_at) / dt.timedelta(days=1)
        if r.received_at is not None and not status.is_terminal
        else None
    )

    # authorization: requests and the decision that follows each
    requests: list[dict[str, Any]] = []
    for e in events:
        if e.type != "authorization_changed":
            continue
        auth = e.payload["authorization"]
        if auth["status"] == "requested":
            requests.append({"at": e.at, "expedited": auth["expedited"], "outcome": None})
        elif requests and requests[-1]["outcome"] is None:
            requests[-1]["outcome"] = (auth["status"], e.at)
    decided = [q for q in requests if q["outcome"] and q["outcome"][0] in ("approved", "denied")]
    row["auth_requested"] = bool(requests)
    row["denied"] = any(q["outcome"][0] == "denied" for q in decided) if decided else None
    outcomes_in_order = [q["outcome"][0] for q in decided]
    row["appealed"] = (
        any(
            o == "approved" and "denied" in outcomes_in_order[:i]
            for i, o in enumerate(outcomes_in_order)
        )
        if decided
        else None
    )
    first = _first(requests)
    row["turnaround"] = None
    row["expedited"] = first["expedited"] if first else None
    if first and first["outcome"] and first["outcome"][0] in ("approved", "denied"):
        row["turnaround"] = (first["outcome"][1] - first["at"]) / dt.timedelta(hours=1)

    # leakage
    row["leaked"] = None
    if status in CLOSED:
        leaked = not r.appointments
        if status is Status.COMPLETED and not leaked:
            seen_by = {
                a.provider_id for a in r.appointments if a.status is AppointmentStatus.FULFILLED
            }
            network = r.coverage_decision.network_status.value if r.coverage_decision else None
            leaked = network == "out-of-network" or (
                r.target is not None and bool(seen_by) and r.target.id not in seen_by
            )
        row["leaked"] = leaked

    # first contact after acceptance
    accepted = _first(
        [
            e.at
            for e in events
            if e.type == "status_changed"
            and e.payload["source"] == "received"
            and e.payload["target"] == "accepted"
        ]
    )
    row["first_contact"] = None
    if accepted is not None:
        contacts = [
            c.at
            for c in r.communications
            if c.counterpart.split()[0].strip(":,;()").lower() in PATIENT_WORDS and c.at >= accepted
        ]
        visits = [
            e.at
            for e in events
            if e.type == "status_changed" and e.payload["target"] == "seen" and e.at >= accepted
        ]
        firsts = [x for x in (min(contacts, default=None), _first(visits)) if x is not None]
        if firsts:
            row["first_contact"] = (min(firsts) - accepted) / dt.timedelta(hours=1)

    readings = read_clocks(r, events, as_of)
    row["breached"] = {
        name: any(x.breached for x in readings if x.name is name)
        if any(x.name is name for x in readings)
        else None
        for name in ClockName
    }
    row["satisfaction"] = r.surveys[-1].score if r.surveys else None
    return row


def _rate(
    rows: list[dict[str, Any]], key: str, where: Callable[[dict[str, Any]], bool] = lambda r: True
) -> float | None:
    known = [r[key] for r in rows if where(r) and r[key] is not None]
    return sum(known) / len(known) if known else None


def _median(values: list[float | None], digits: int) -> float | None:
    found = [v for v in values if v is not None]
    return round(statistics.median(found), digits) if found else None


def _mean(values: list[float | None], digits: int) -> float | None:
    found = [v for v in values if v is not None]
    return round(statistics.fmean(found), digits) if found else None


def reference(store: MemoryStore, as_of: dt.datetime) -> dict[str, Any]:
    """The Kpis fields, the slow way."""
    rows = []
    for referral in store.query():
        events = [e for e in store.events(referral.id) if e.at <= as_of]
        if events:
            rows.append(reference_row(replay(events), events, as_of))
    statuses: dict[Status, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "total": len(rows),
        "open": sum(r["open"] for r in rows),
        "completed": sum(r["completed"] for r in rows),
        "closed": sum(r["closed"] for r in rows),
        "completion_rate": _rate(rows, "completed", lambda r: r["closed"]),
        "received": sum(r["received"] for r in rows),
        "closed_loop": sum(r["closed_loop"] for r in rows),
        "closed_loop_rate": _rate(rows, "closed_loop", lambda r: r["received"]),
        "median_days_to_schedule": _median([r["to_schedule"] for r in rows], 2),
        "median_days_to_appointment": _median([r["to_appointment"] for r in rows], 2),
        "no_show_rate": _rate(rows, "missed"),
        "overdue": sum(r["overdue"] for r in rows),
        "awaiting_consult_note": sum(r["awaiting"] for r in rows),
        "auth_requested": sum(r["auth_requested"] for r in rows),
        "auth_denial_rate": _rate(rows, "denied"),
        "median_auth_turnaround_hours": _median([r["turnaround"] for r in rows], 1),
        "by_status": tuple((s, statuses[s]) for s in Status if s in statuses),
        "leakage_rate": _rate(rows, "leaked"),
        "auth_approved_after_denial_rate": _rate(rows, "appealed", lambda r: r["denied"] is True),
        "auth_turnaround_standard_mean_hours": _mean(
            [r["turnaround"] for r in rows if r["expedited"] is False], 1
        ),
        "auth_turnaround_standard_median_hours": _median(
            [r["turnaround"] for r in rows if r["expedited"] is False], 1
        ),
        "auth_turnaround_expedited_mean_hours": _mean(
            [r["turnaround"] for r in rows if r["expedited"] is True], 1
        ),
        "auth_turnaround_expedited_median_hours": _median(
            [r["turnaround"] for r in rows if r["expedited"] is True], 1
        ),
        "median_hours_to_first_contact": _median([r["first_contact"] for r in rows], 1),
        "median_open_age_days": _median([r["open_age"] for r in rows], 2),
        "breach_rates": tuple(
            (
                name,
                _rate([{"b": r["breached"][name]} for r in rows], "b"),
            )
            for name in ClockName
        ),
        "satisfaction_responses": sum(r["satisfaction"] is not None for r in rows),
        "satisfaction_mean": _mean([r["satisfaction"] for r in rows], 2),
    }


def assert_agree(kpis: Kpis, expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        got = getattr(kpis, name)
        if name == "by_status":
            assert got == value, name
        elif name == "breach_rates":
            assert [c for c, _ in got] == [c for c, _ in value]
            for (_, a), (_, b) in zip(got, value, strict=True):
                assert a == pytest.approx(b), name
        else:
            assert got == pytest.approx(value), name


def instants(store: MemoryStore, clock: FakeClock, extra: Sequence[int]) -> list[dt.datetime]:
    """Instants to read the store at: before anything, at some events' exact times, between
    them, and after the end."""
    times = sorted({e.at for r in store.query() for e in store.events(r.id)})
    chosen = [START - dt.timedelta(hours=1), clock.now() + dt.timedelta(days=30)]
    chosen += [times[i % len(times)] for i in extra]
    chosen += [times[i % len(times)] + dt.timedelta(minutes=30) for i in extra]
    return chosen


class TestPointInTime:
    @given(history=histories(), picks=st.lists(st.integers(0, 500), min_size=1, max_size=3))
    def test_summary_equals_the_replay_reference(
        self, history: tuple[MemoryStore, FakeClock], picks: list[int]
    ) -> None:
        """At any instant, summary() is what replaying each referral up to it says."""
        store, clock = history
        for as_of in instants(store, clock, picks):
            assert_agree(summary(store, as_of), reference(store, as_of))

    def test_a_past_date_is_not_today(self) -> None:
        """The bug this fixes: the summary of a past date used today's state."""
        plan = [(0, "send", 1), (0, "accept", 24), (0, "schedule", 24), (0, "visit", 200)]
        plan += [(0, "complete", 24)]
        store, clock = build(plan)
        before = summary(store, START + dt.timedelta(hours=40))
        now = summary(store, clock.now())
        assert before.status_count(Status.ACCEPTED) == 1
        assert before.completed == 0
        assert now.completed == 1
        assert before.closed_loop == 0
        assert now.closed_loop == 1
        assert summary(store, START - dt.timedelta(days=1)).total == 0

    def test_every_scenario_of_the_operations(self) -> None:
        """A long fixed plan touching every operation on every referral, at many instants
        (a deterministic companion to the property)."""
        plan = [(i % 4, op, 7 + i % 30) for i, op in enumerate(sorted(OPERATIONS) * 3)]
        store, clock = build(plan)
        for as_of in instants(store, clock, range(0, 200, 7)):
            assert_agree(summary(store, as_of), reference(store, as_of))


class TestGroupedAgree:
    @given(history=histories())
    def test_grouped_table_agrees_with_summary(
        self, history: tuple[MemoryStore, FakeClock]
    ) -> None:
        """kpis() over the frame gives the summary's figures, and counts add up by group."""
        pd = pytest.importorskip("pandas", reason="the analytics extra is not installed")
        from referralkit import analytics

        store, clock = history
        as_of = clock.now() + dt.timedelta(days=3)
        frame = analytics.referrals_frame(store, as_of=as_of)
        kpis = summary(store, as_of)
        table = analytics.kpis(frame)
        row = table.loc["all"]
        assert row["referrals"] == kpis.total
        assert row["completed"] == kpis.completed
        assert row["closed"] == kpis.closed
        for name in ("completion_rate", "no_show_rate", "leakage_rate", "auth_denial_rate"):
            expected = getattr(kpis, name)
            assert (pd.isna(row[name]) and expected is None) or row[name] == pytest.approx(expected)
        for name in ("median_days_to_appointment", "median_days_to_schedule"):
            expected = getattr(kpis, name)
            assert (pd.isna(row[name]) and expected is None) or round(row[name], 2) == expected
        by = analytics.kpis(frame, by=["specialty", "effective_priority"])
        assert by["referrals"].sum() == kpis.total
        assert by["open"].sum() == kpis.open
