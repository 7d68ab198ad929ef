"""The lifecycle: BSeR states, FHIR mapping, and the derived table agreeing with the class."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statemachine.exceptions import TransitionNotAllowed

from referralkit import (
    DEFAULT_CHECKLIST,
    FHIR_TASK,
    TABLE,
    Appointment,
    AppointmentStatus,
    AttachmentKind,
    Authorization,
    AuthStatus,
    Checklist,
    Code,
    CoverageDecision,
    Covered,
    GuardError,
    PaNeeded,
    Referral,
    ReferralDesk,
    ReferralLifecycle,
    Status,
    TransitionError,
    replay,
)
from referralkit.lifecycle import intake_complete, mermaid, scheduling_allowed
from referralkit.testing import FakeClock, appointments, referrals, sample_request

STATE_IDS = [
    "draft",
    "received",
    "accepted",
    "on_hold",
    "scheduled",
    "no_show",
    "appointment_cancelled",
    "seen",
    "cancellation_requested",
    "declined",
    "cancelled",
    "completed",
    "failed",
    "entered_in_error",
]

# DESIGN §4: Task.status, BSeR businessStatus code (None where BSeR defines none).
BSER = {
    "draft": ("draft", None),
    "received": ("received", "2.0"),
    "accepted": ("accepted", "3.0"),
    "on_hold": ("on-hold", None),
    "scheduled": ("in-progress", "5.1.1"),
    "no_show": ("in-progress", "5.1.2"),
    "appointment_cancelled": ("in-progress", "5.1.3"),
    "seen": ("in-progress", "5.1.4"),
    "cancellation_requested": ("in-progress", "5.2"),
    "declined": ("rejected", "4.0"),
    "cancelled": ("cancelled", "6.0"),
    "completed": ("completed", "7.0"),
    "failed": ("failed", None),
    "entered_in_error": ("entered-in-error", None),
}

S = Status
IN_PROGRESS = (S.SCHEDULED, S.NO_SHOW, S.APPOINTMENT_CANCELLED, S.SEEN, S.CANCELLATION_REQUESTED)

# The transitions DESIGN §4 asks for, as (source, event, target).
REQUIRED = {
    (S.DRAFT, "submit", S.RECEIVED),
    (S.RECEIVED, "accept", S.ACCEPTED),
    *((s, "decline", S.DECLINED) for s in (S.RECEIVED, S.ACCEPTED, *IN_PROGRESS)),
    (S.ACCEPTED, "schedule", S.SCHEDULED),
    *((s, "reschedule", S.SCHEDULED) for s in (S.SCHEDULED, S.NO_SHOW, S.APPOINTMENT_CANCELLED)),
    (S.SCHEDULED, "record_no_show", S.NO_SHOW),
    (S.SCHEDULED, "cancel_appointment", S.APPOINTMENT_CANCELLED),
    (S.SCHEDULED, "record_visit", S.SEEN),
    (S.SEEN, "add_interim_note", S.SEEN),
    # the four BSeR STU2 moves issue 9 found missing: TIDs 08, 19, 26, 27
    (S.ACCEPTED, "add_interim_note", S.SEEN),
    (S.NO_SHOW, "cancel_appointment", S.APPOINTMENT_CANCELLED),
    (S.SEEN, "schedule", S.SCHEDULED),
    (S.SEEN, "cancel_appointment", S.APPOINTMENT_CANCELLED),
    *(
        (s, "request_cancellation", S.CANCELLATION_REQUESTED)
        for s in (S.RECEIVED, S.ACCEPTED, *IN_PROGRESS)
        if s is not S.CANCELLATION_REQUESTED
    ),
    (S.CANCELLATION_REQUESTED, "confirm_cancellation", S.CANCELLED),
    *((s, "complete", S.COMPLETED) for s in (S.ACCEPTED, S.SCHEDULED, S.SEEN)),
    (S.CANCELLATION_REQUESTED, "complete", S.COMPLETED),
    *((s, "hold", S.ON_HOLD) for s in (S.RECEIVED, S.ACCEPTED, S.SCHEDULED, S.SEEN)),
    *((S.ON_HOLD, "resume", s) for s in (S.RECEIVED, S.ACCEPTED, S.SCHEDULED, S.SEEN)),
    (S.RECEIVED, "fail", S.FAILED),
    (S.DRAFT, "mark_entered_in_error", S.ENTERED_IN_ERROR),
}

FORBIDDEN = {
    (S.DRAFT, "accept"),
    (S.DRAFT, "schedule"),
    (S.RECEIVED, "submit"),
    (S.RECEIVED, "schedule"),
    (S.ACCEPTED, "accept"),
    (S.ACCEPTED, "record_visit"),
    (S.RECEIVED, "confirm_cancellation"),
    (S.RECEIVED, "complete"),
    (S.NO_SHOW, "record_visit"),
    (S.NO_SHOW, "record_no_show"),
    (S.ACCEPTED, "cancel_appointment"),
    (S.APPOINTMENT_CANCELLED, "cancel_appointment"),
    (S.SEEN, "record_visit"),
    (S.ON_HOLD, "hold"),
    (S.DRAFT, "hold"),
}

EVENTS = sorted({*TABLE.events, "not_an_event"})


def sample_referral(status: Status = S.RECEIVED, **changes: object) -> Referral:
    request = sample_request()
    fields: dict[str, object] = {
        "id": "r1",
        "patient": request.patient,
        "referring": request.referring,
        "target": request.target,
        "specialty": request.specialty,
        "reason": request.reason,
        "diagnoses": request.diagnoses,
        "services": request.services,
        "coverage": request.coverage,
        "attachments": request.attachments,
        "created_at": dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC),
        "updated_at": dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC),
        "status": status,
    }
    return Referral(**(fields | changes))  # type: ignore[arg-type]


def appointment(day: dt.date = dt.date(2026, 2, 2)) -> Appointment:
    start = dt.datetime.combine(day, dt.time(10), tzinfo=dt.UTC)
    return Appointment("a1", start, "prov-card-1")


class TestStates:
    def test_state_ids_are_the_status_values(self) -> None:
        """The lifecycle's state ids are exactly DESIGN §4's, and equal the Status values."""
        assert [s.value for s in Status] == STATE_IDS
        assert [state.id for state in ReferralLifecycle.states] == STATE_IDS
        assert [state.value for state in ReferralLifecycle.states] == list(Status)

    def test_terminal_states_are_final(self) -> None:
        """The final states of the class are the terminal statuses."""
        final = {Status(s.value) for s in ReferralLifecycle.final_states}
        assert final == {s for s in Status if s.is_terminal} == TABLE.terminal

    @pytest.mark.parametrize("status", [s for s in Status if s.is_terminal])
    def test_terminal_states_have_no_outgoing_events(self, status: Status) -> None:
        """Nothing leaves a terminal state."""
        assert TABLE.events_from(status) == frozenset()
        assert not any(source is status for source, _, _ in TABLE.pairs())

    @pytest.mark.parametrize("status", [s for s in Status if not s.is_terminal])
    def test_open_states_can_be_left(self, status: Status) -> None:
        """Every open state has a way out, and can reach a terminal state."""
        assert TABLE.events_from(status)
        assert "mark_entered_in_error" in TABLE.events_from(status)

    def test_the_draft_is_the_initial_state(self) -> None:
        """A fresh machine starts as a draft."""
        assert ReferralLifecycle().current_state_value is Status.DRAFT


class TestFhirMapping:
    def test_every_status_is_mapped(self) -> None:
        """FHIR_TASK covers every status, and nothing else."""
        assert set(FHIR_TASK) == set(Status)

    @pytest.mark.parametrize("status", list(Status))
    def test_bser_codes(self, status: Status) -> None:
        """Task.status and BSeR businessStatus codes are those of DESIGN §4."""
        task = FHIR_TASK[status]
        assert (task.status, task.business_status) == BSER[status.value]
        assert (task.business_status is None) == (task.business_status_display is None)

    def test_mapping_is_read_only(self) -> None:
        """FHIR_TASK cannot be changed by accident."""
        with pytest.raises(TypeError):
            FHIR_TASK[Status.DRAFT] = FHIR_TASK[Status.RECEIVED]  # type: ignore[index]


class TestTransitions:
    def test_design_transitions_exist(self) -> None:
        """Every transition DESIGN §4 asks for is in the table."""
        assert set(TABLE.pairs()) >= REQUIRED

    @pytest.mark.parametrize(("status", "event"), sorted(FORBIDDEN))
    def test_forbidden_transitions_are_absent(self, status: Status, event: str) -> None:
        """Transitions the lifecycle must not have are not in the table."""
        assert not TABLE.allows(status, event)
        with pytest.raises(TransitionError) as info:
            TABLE.next_status(sample_referral(status), event)
        assert not isinstance(info.value, GuardError)
        assert (info.value.state, info.value.event) == (status.value, event)
        assert repr(status.value) in str(info.value)
        assert repr(event) in str(info.value)

    def test_unknown_event(self) -> None:
        """An event the lifecycle does not know is a TransitionError saying so."""
        with pytest.raises(TransitionError, match="unknown event"):
            TABLE.next_status(sample_referral(), "teleport")

    def test_target(self) -> None:
        """target() gives the single target of an event, None when ambiguous or absent."""
        assert TABLE.target(S.RECEIVED, "decline") is S.DECLINED
        assert TABLE.target(S.ON_HOLD, "resume") is None
        assert TABLE.target(S.DRAFT, "accept") is None

    def test_events_are_the_class_events(self) -> None:
        """The table knows exactly the events of the class."""
        assert set(TABLE.events) == {str(e) for e in ReferralLifecycle.events}
        assert "submit" in TABLE.events

    def test_mermaid_has_every_state(self) -> None:
        """The generated Mermaid diagram names every state id."""
        text = mermaid()
        assert text.startswith("stateDiagram-v2")
        for state_id in STATE_IDS:
            assert state_id in text


class TestGuards:
    def test_accept_needs_intake_complete(self) -> None:
        """accept is refused while the checklist finds something missing."""
        incomplete = sample_referral(attachments=())
        assert not intake_complete(incomplete)
        with pytest.raises(GuardError, match="missing: medical-history"):
            TABLE.next_status(incomplete, "accept")
        assert TABLE.next_status(sample_referral(), "accept") is S.ACCEPTED

    def test_accept_uses_the_given_checklist(self) -> None:
        """A checklist passed to the event replaces the default one."""
        lenient = Checklist(base=())
        incomplete = sample_referral(attachments=())
        assert intake_complete(incomplete, lenient)
        assert TABLE.next_status(incomplete, "accept", checklist=lenient) is S.ACCEPTED

    def test_schedule_needs_an_appointment(self) -> None:
        """schedule without an appointment is refused."""
        with pytest.raises(GuardError, match="no appointment"):
            TABLE.next_status(sample_referral(S.ACCEPTED), "schedule")

    @pytest.mark.parametrize(
        "auth",
        [
            Authorization(status=AuthStatus.NEEDED),
            Authorization(status=AuthStatus.REQUESTED),
            Authorization(status=AuthStatus.DENIED),
            Authorization(status=AuthStatus.APPROVED, valid_to=dt.date(2026, 2, 1)),
            Authorization(status=AuthStatus.APPROVED, valid_from=dt.date(2026, 2, 3)),
        ],
    )
    def test_schedule_needs_authorization_covering_the_date(self, auth: Authorization) -> None:
        """schedule is refused unless authorization covers the appointment date."""
        referral = sample_referral(S.ACCEPTED, authorization=auth)
        assert not scheduling_allowed(referral, appointment())
        with pytest.raises(GuardError, match="authorization is"):
            TABLE.next_status(referral, "schedule", appointment=appointment())

    def test_schedule_with_approved_authorization(self) -> None:
        """An approved authorization valid on the appointment date lets scheduling proceed."""
        auth = Authorization(
            status=AuthStatus.APPROVED,
            valid_from=dt.date(2026, 2, 2),
            valid_to=dt.date(2026, 2, 2),
        )
        referral = sample_referral(S.ACCEPTED, authorization=auth)
        assert TABLE.next_status(referral, "schedule", appointment=appointment()) is S.SCHEDULED

    def test_not_covered_needs_self_pay_acknowledged(self) -> None:
        """A not-covered decision refuses scheduling until self-pay is acknowledged."""
        referral = sample_referral(
            S.ACCEPTED, coverage_decision=CoverageDecision(Covered.NOT_COVERED)
        )
        with pytest.raises(GuardError, match="not-covered"):
            TABLE.next_status(referral, "schedule", appointment=appointment())
        acknowledged = attrs.evolve(referral, self_pay_acknowledged=True)
        assert TABLE.next_status(acknowledged, "schedule", appointment=appointment()) is (
            S.SCHEDULED
        )

    def test_covered_decision_does_not_block(self) -> None:
        """A covered decision does not block scheduling."""
        referral = sample_referral(
            S.ACCEPTED, coverage_decision=CoverageDecision(Covered.COVERED, PaNeeded.NO_AUTH)
        )
        assert scheduling_allowed(referral, appointment())

    def test_guard_error_lists_every_problem(self) -> None:
        """A refused schedule names both the authorization and the coverage problem."""
        referral = sample_referral(
            S.ACCEPTED,
            authorization=Authorization(status=AuthStatus.NEEDED),
            coverage_decision=CoverageDecision(Covered.NOT_COVERED),
        )
        with pytest.raises(GuardError) as info:
            TABLE.next_status(referral, "schedule", appointment=None)
        assert "no appointment" in info.value.detail
        assert "not-covered" in info.value.detail

    @pytest.mark.parametrize(
        "held_from",
        [S.RECEIVED, S.ACCEPTED, S.SCHEDULED, S.NO_SHOW, S.APPOINTMENT_CANCELLED, S.SEEN],
    )
    def test_resume_returns_to_the_held_from_state(self, held_from: Status) -> None:
        """resume goes back to the state the referral was held from."""
        referral = sample_referral(S.ON_HOLD, held_from=held_from)
        assert TABLE.next_status(referral, "resume") is held_from

    @pytest.mark.parametrize("held_from", [None, S.DRAFT, S.COMPLETED])
    def test_resume_without_a_valid_held_from_is_refused(self, held_from: Status | None) -> None:
        """resume is refused when the referral was not held from an open state."""
        referral = sample_referral(S.ON_HOLD, held_from=held_from)
        with pytest.raises(GuardError, match="held from"):
            TABLE.next_status(referral, "resume")


def machine_outcome(
    status: Status,
    event: str,
    referral: Referral,
    appointment: Appointment | None,
    checklist: Checklist | None,
) -> Status | None:
    """Where python-statemachine goes, restored with ``start_value=status``; None if it refuses."""
    machine = ReferralLifecycle(start_value=status)
    try:
        machine.send(event, referral=referral, appointment=appointment, checklist=checklist)
    except TransitionNotAllowed:
        assert machine.current_state_value is status
        return None
    return Status(machine.current_state_value)


def table_outcome(
    event: str, referral: Referral, appointment: Appointment | None, checklist: Checklist | None
) -> Status | None:
    """Where the derived table goes, or None when it raises a TransitionError."""
    try:
        return TABLE.next_status(referral, event, appointment=appointment, checklist=checklist)
    except TransitionError:
        return None


CHECKLISTS = st.sampled_from([None, DEFAULT_CHECKLIST, Checklist(base=())])


class TestTableAgreesWithClass:
    # each example checks 14 states x 17 events, building a machine for each (~0.6 ms)
    @settings(max_examples=30)
    @given(data=st.data())
    def test_every_status_and_event(self, data: st.DataObject) -> None:
        """For every (status, event) and any referral, the table and the class agree."""
        status = data.draw(st.sampled_from(Status), label="status")
        referral = data.draw(referrals(status=status), label="referral")
        appointment = data.draw(st.none() | appointments(), label="appointment")
        checklist = data.draw(CHECKLISTS, label="checklist")
        # drawing a referral is costly: check its parts in every state, not only its own
        for state in Status:
            in_state = attrs.evolve(referral, status=state)
            for event in EVENTS:
                assert table_outcome(event, in_state, appointment, checklist) == (
                    machine_outcome(state, event, in_state, appointment, checklist)
                ), (state, event)

    @pytest.mark.parametrize("status", [S.ON_HOLD, S.ACCEPTED, S.SCHEDULED, S.NO_SHOW])
    @given(data=st.data())
    def test_guarded_events_with_relevant_values(self, status: Status, data: st.DataObject) -> None:
        """Guards agree on values chosen to pass as often as fail (hold, auth, coverage)."""
        base = sample_referral(status)
        referral = attrs.evolve(
            base,
            held_from=data.draw(st.none() | st.sampled_from(Status)),
            authorization=Authorization(
                status=data.draw(st.sampled_from(AuthStatus)),
                valid_from=data.draw(
                    st.none() | st.dates(dt.date(2026, 1, 1), dt.date(2026, 3, 1))
                ),
            ),
            coverage_decision=data.draw(
                st.sampled_from(
                    [
                        None,
                        CoverageDecision(Covered.NOT_COVERED),
                        CoverageDecision(Covered.COVERED, PaNeeded.AUTH_NEEDED),
                    ]
                )
            ),
            self_pay_acknowledged=data.draw(st.booleans()),
            attachments=data.draw(st.sampled_from([(), base.attachments])),
        )
        day = data.draw(st.dates(dt.date(2026, 1, 1), dt.date(2026, 4, 1)))
        appt = appointment(day)
        for event in ("accept", "schedule", "reschedule", "resume", "hold", "complete"):
            assert table_outcome(event, referral, appt, None) == (
                machine_outcome(status, event, referral, appt, None)
            ), event


# --------------------------------------------------------------------------- BSeR STU2, row by row

ROOT = Path(__file__).parent.parent
BSER_ROWS: list[dict[str, str]] = tomllib.loads(
    (Path(__file__).parent / "data" / "bser_stu2_transitions.toml").read_text(encoding="utf-8")
)["rows"]
DOC = (ROOT / "docs" / "lifecycle.md").read_text(encoding="utf-8")
ACTIVE = "5.1 active"  # 360X's superstate: every status whose BSeR code is 5.1.x


def bser_statuses(label: str) -> frozenset[Status]:
    """The lifecycle statuses a state label of BSeR's table names, found through FHIR_TASK
    (so the comparison also checks the library's BSeR codes): "5. In-Progress (5.1.2)" by its
    business status code, "4. Rejected" by its major code (4.0), "1. Draft" by Task.status."""
    text = label.strip().lower()
    by_code = {task.business_status: s for s, task in FHIR_TASK.items() if task.business_status}
    if text == ACTIVE:
        return frozenset(s for code, s in by_code.items() if code.startswith("5.1."))
    if match := re.fullmatch(r"5\. in-progress \((5(?:\.\d)+)\)", text):
        return frozenset({by_code[match.group(1)]})
    number, _, name = text.partition(". ")
    if f"{number}.0" in by_code:
        return frozenset({by_code[f"{number}.0"]})
    return frozenset(s for s, task in FHIR_TASK.items() if task.status == name)


def doc_table(heading: str) -> list[list[str]]:
    """The body rows of the first Markdown table under ``heading`` in docs/lifecycle.md."""
    lines = DOC.splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows or line.startswith("#"):
            break
    assert len(rows) > 2, f"no table under {heading!r}"
    return rows[2:]  # header and separator


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([a-z_]+)`", cell)


# BSeR trigger event -> the lifecycle events that implement it, from the doc's table
TRIGGERS: dict[str, frozenset[str]] = {
    row[0]: frozenset(ticked(row[2])) for row in doc_table("## BSeR's transition table, row by row")
}


def implements(row: dict[str, str], source: Status, event: str, target: Status) -> bool:
    """Whether the library transition ``source --event--> target`` is BSeR's ``row``."""
    return (
        source in bser_statuses(row["from"])
        and target in bser_statuses(row["to"])
        and event in TRIGGERS[row["trigger"]]
    )


class TestBserTable:
    """The lifecycle against BSeR STU2's harmonised transition table (with IHE 360X)."""

    def test_the_data_is_the_whole_table(self) -> None:
        """34 rows, TIDs 01-34 in order, every state label and trigger understood."""
        assert [row["tid"] for row in BSER_ROWS] == [f"{n:02d}" for n in range(1, 35)]
        for row in BSER_ROWS:
            assert bser_statuses(row["from"]), row
            assert bser_statuses(row["to"]), row
            assert row["trigger"] in TRIGGERS, row
            assert row["actor"] in ("Referral Initiator", "Referral Recipient")

    @pytest.mark.parametrize("row", BSER_ROWS, ids=[row["tid"] for row in BSER_ROWS])
    def test_business_status_matches_fhir_task(self, row: dict[str, str]) -> None:
        """The business status a row ends in is FHIR_TASK's code and display of its target."""
        code, _, display = row["business_status"].partition(" ")
        if row["to"].lower() == ACTIVE:
            assert code == "5.1"  # the superstate has no status of its own here
            return
        (target,) = bser_statuses(row["to"])
        assert (FHIR_TASK[target].business_status, FHIR_TASK[target].business_status_display) == (
            code,
            display,
        )

    @pytest.mark.parametrize("row", BSER_ROWS, ids=[row["tid"] for row in BSER_ROWS])
    def test_every_bser_transition_is_allowed(self, row: dict[str, str]) -> None:
        """From every status the row starts in, one of the events implementing its trigger
        leads to a status it ends in (guards are business conditions on top, see below)."""
        events = TRIGGERS[row["trigger"]]
        for source in bser_statuses(row["from"]):
            reached = {
                edge.target
                for event in events
                for edge in TABLE.edges.get((source, event), ())
                if edge.target in bser_statuses(row["to"])
            }
            assert reached, f"TID {row['tid']}: nothing {sorted(events)} from {source.value}"

    def test_the_trigger_table_names_the_right_tids(self) -> None:
        """The doc's trigger table lists, for each trigger, exactly BSeR's rows with it."""
        for trigger, tids, _ in doc_table("## BSeR's transition table, row by row"):
            expected = [row["tid"] for row in BSER_ROWS if row["trigger"] == trigger]
            assert [t.strip() for t in tids.split(",")] == expected, trigger
            assert TRIGGERS[trigger] <= set(TABLE.events), trigger

    def test_additions_are_exactly_the_documented_ones(self) -> None:
        """Every library transition that no BSeR row accounts for is listed, with a reason, in
        docs/lifecycle.md ("What referralkit adds to BSeR"), and that list holds nothing else."""
        beyond = {
            (source, event, target)
            for source, event, target in TABLE.pairs()
            if not any(implements(row, source, event, target) for row in BSER_ROWS)
        }
        documented: set[tuple[Status, str, Status]] = set()
        for event_cell, sources, targets, why in doc_table("### What referralkit adds to BSeR"):
            (event,) = ticked(event_cell)
            assert len(why) > 40, f"{event}: give the reason"
            documented |= {
                (Status(s), event, Status(t)) for s in ticked(sources) for t in ticked(targets)
            }
        # resume goes back where the referral was held from: on_hold -> each, not each -> each
        assert sorted(documented - beyond) == []
        assert sorted(beyond - documented) == []

    def test_the_four_moves_issue_9_found_missing(self) -> None:
        """TIDs 08, 19, 26 and 27 (forbidden before) are BSeR's and allowed."""
        wanted = {
            "08": (S.ACCEPTED, "add_interim_note", S.SEEN),
            "19": (S.NO_SHOW, "cancel_appointment", S.APPOINTMENT_CANCELLED),
            "26": (S.SEEN, "schedule", S.SCHEDULED),
            "27": (S.SEEN, "cancel_appointment", S.APPOINTMENT_CANCELLED),
        }
        rows = {row["tid"]: row for row in BSER_ROWS}
        for tid, (source, event, target) in wanted.items():
            assert implements(rows[tid], source, event, target), tid
            assert TABLE.target(source, event) is target, tid


class TestBserMovesOnTheDesk:
    """The four BSeR moves through the desk: status, events, appointments and replay."""

    def test_interim_note_from_accepted(self, desk: ReferralDesk, driver: Any) -> None:
        """TID 08: the specialist saw the patient at a visit not booked here and sends an
        interim note; the referral is seen, with the note, and no appointment."""
        referral = driver.to(S.ACCEPTED)
        after = desk.add_interim_note(driver.actor, referral.id, "seen in clinic; labs due")
        assert after.status is S.SEEN
        assert after.appointments == ()
        assert [a.kind for a in after.attachments][-1] is AttachmentKind.INTERIM_NOTE
        change = desk.history(driver.actor, referral.id)[-1]
        assert change.payload == {
            "event": "add_interim_note",
            "source": "accepted",
            "target": "seen",
        }
        assert replay(desk.history(driver.actor, referral.id)) == after

    def test_cancel_after_a_no_show(self, desk: ReferralDesk, driver: Any) -> None:
        """TID 19: after a no-show the appointment is cancelled rather than rebooked; the
        missed appointment stays a no-show and the reason is kept."""
        referral = driver.to(S.NO_SHOW)
        after = desk.cancel_appointment(driver.actor, referral.id, "patient asked to wait")
        assert after.status is S.APPOINTMENT_CANCELLED
        assert [a.status for a in after.appointments] == [AppointmentStatus.NOSHOW]
        assert after.status_reason == "patient asked to wait"
        assert replay(desk.history(driver.actor, referral.id)) == after
        # and from there a new appointment can be booked, as before (TID 21)
        assert driver.step(referral.id, "reschedule").status is S.SCHEDULED

    def test_schedule_after_the_visit(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """TID 26: a further visit is booked after the patient was seen; the first visit stays
        fulfilled, the referral is not overdue for having been scheduled again, and the loop
        still closes."""
        referral = driver.to(S.SEEN)
        start = clock.now() + dt.timedelta(days=14)
        after = desk.schedule(driver.actor, referral.id, start)
        assert after.status is S.SCHEDULED
        assert [a.status for a in after.appointments] == [
            AppointmentStatus.FULFILLED,
            AppointmentStatus.BOOKED,
        ]
        assert after.due_by is not None
        assert not after.is_overdue(after.due_by + dt.timedelta(days=30))
        assert replay(desk.history(driver.actor, referral.id)) == after
        done = desk.complete(driver.actor, referral.id, "follow-up done; plan agreed")
        assert done.status is S.COMPLETED
        assert [a.status for a in done.appointments][-1] is AppointmentStatus.FULFILLED

    def test_schedule_after_the_visit_keeps_its_guard(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock, mri: Code
    ) -> None:
        """A further visit needs the same authorization as the first: past the approval's
        validity the desk refuses it with a GuardError, and nothing changes."""
        actor = driver.actor
        referral = driver.intake(services=(mri,))
        desk.attach(actor, referral.id, AttachmentKind.PRIOR_AUTH_FORM)
        for operation in ("send", "accept"):
            driver.step(referral.id, operation)
        desk.request_authorization(actor, referral.id)
        today = clock.now().date()
        desk.record_authorization(
            actor, referral.id, approved=True, number="PA-1", valid_to=today + dt.timedelta(20)
        )
        desk.schedule(actor, referral.id, clock.now() + dt.timedelta(days=7))
        seen = desk.record_visit(actor, referral.id)
        with pytest.raises(GuardError, match="authorization"):
            desk.schedule(actor, referral.id, clock.now() + dt.timedelta(days=30))
        assert desk.get(actor, referral.id) == seen
        again = desk.schedule(actor, referral.id, clock.now() + dt.timedelta(days=14))
        assert again.status is S.SCHEDULED

    def test_cancel_after_the_visit(self, desk: ReferralDesk, driver: Any) -> None:
        """TID 27: the visit happened, the further appointment is called off; the fulfilled
        visit is untouched and the referral is not overdue."""
        referral = driver.to(S.SEEN)
        after = desk.cancel_appointment(driver.actor, referral.id)
        assert after.status is S.APPOINTMENT_CANCELLED
        assert [a.status for a in after.appointments] == [AppointmentStatus.FULFILLED]
        assert after.due_by is not None
        assert not after.is_overdue(after.due_by + dt.timedelta(days=30))
        assert replay(desk.history(driver.actor, referral.id)) == after

    def test_interim_note_from_accepted_is_not_overdue(
        self, desk: ReferralDesk, driver: Any, clock: FakeClock
    ) -> None:
        """A referral seen through an interim note (TID 08) and then scheduled again (TID 26)
        has no fulfilled appointment, but its note says it was seen: not overdue."""
        referral = driver.to(S.ACCEPTED)
        desk.add_interim_note(driver.actor, referral.id, "seen at the walk-in clinic")
        after = desk.schedule(driver.actor, referral.id, clock.now() + dt.timedelta(days=7))
        assert after.status is S.SCHEDULED
        assert after.due_by is not None
        assert not after.is_overdue(after.due_by + dt.timedelta(days=30))
        # a referral never seen, with the same due date, is overdue
        never = driver.to(S.SCHEDULED)
        assert never.due_by is not None
        assert never.is_overdue(never.due_by + dt.timedelta(days=30))
