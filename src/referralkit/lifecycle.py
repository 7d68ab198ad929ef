"""The referral lifecycle: HL7 BSeR / IHE 360X closed-loop referral states.

:class:`ReferralLifecycle` is the python-statemachine class that defines the states, the events
and their guards; it is the single source of truth. :data:`TABLE` is a plain transition table
derived from that class once, at import, for the checks the library makes on every operation
(building a python-statemachine instance costs about 100–220 µs and a transition about 115 µs;
a lookup in the table well under a microsecond). Both evaluate the same guard functions.

Each state maps to its FHIR ``Task.status`` and BSeR ``businessStatus`` (:data:`FHIR_TASK`).

>>> TABLE.target(Status.RECEIVED, "decline")
<Status.DECLINED: 'declined'>
>>> sorted(TABLE.events_from(Status.DRAFT))
['mark_entered_in_error', 'submit']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs
from statemachine import State, StateMachine

from .errors import GuardError, TransitionError
from .intake import DEFAULT_CHECKLIST, Checklist
from .model import Appointment, Covered, Referral, Status

__all__ = [
    "FHIR_TASK",
    "TABLE",
    "Edge",
    "FhirTaskStatus",
    "ReferralLifecycle",
    "Status",
    "TransitionTable",
    "intake_complete",
    "mermaid",
    "scheduling_allowed",
]

Guard = Callable[..., bool]

# --------------------------------------------------------------------------- guards
#
# Plain functions, so the python-statemachine class and the derived table call the very same
# code. python-statemachine passes them the keyword arguments given to the event by name.


def intake_complete(referral: Referral, checklist: Checklist | None = None, **_: Any) -> bool:
    """Accept needs intake complete: nothing on the checklist is missing."""
    return not (checklist or DEFAULT_CHECKLIST).missing(referral)


def scheduling_allowed(
    referral: Referral, appointment: Appointment | None = None, **_: Any
) -> bool:
    """Schedule needs authorization satisfied for the appointment date, and a coverage
    decision that is not ``not-covered`` unless the patient acknowledged paying themselves."""
    return not _scheduling_problems(referral, appointment)


def _scheduling_problems(referral: Referral, appointment: Appointment | None) -> list[str]:
    problems = []
    if appointment is None:
        problems.append("no appointment given")
    elif not referral.authorization.covers(appointment.start.date()):
        problems.append(
            f"authorization is {referral.authorization.status.value} and does not cover "
            "the appointment date"
        )
    decision = referral.coverage_decision
    if (
        decision is not None
        and decision.covered is Covered.NOT_COVERED
        and not referral.self_pay_acknowledged
    ):
        problems.append("coverage decision is not-covered and self-pay was not acknowledged")
    return problems


def _resume_guard(status: Status) -> Guard:
    def guard(referral: Referral, **_: Any) -> bool:
        return referral.held_from is status

    guard.__name__ = guard.__qualname__ = f"resumes_to_{status.value}"
    guard.__doc__ = f"Resume returns to {status.value!r} when the referral was held from there."
    return guard


def _explain(guard: Guard, context: Mapping[str, Any]) -> str:
    referral: Referral = context["referral"]
    if guard is intake_complete:
        checklist = context.get("checklist") or DEFAULT_CHECKLIST
        missing = ", ".join(r.value for r in checklist.missing(referral))
        return f"intake incomplete, missing: {missing}"
    if guard is scheduling_allowed:
        return "; ".join(_scheduling_problems(referral, context.get("appointment")))
    held = referral.held_from.value if referral.held_from else "nothing"
    return f"{guard.__name__} is false (held from {held})"


# --------------------------------------------------------------------------- the class

_OPEN = ("received", "accepted", "scheduled", "no_show", "appointment_cancelled", "seen")
_HOLDABLE: Final = tuple(Status(s) for s in _OPEN)
_RESUME_GUARDS: Final = {status: _resume_guard(status) for status in _HOLDABLE}


class ReferralLifecycle(StateMachine):
    """The closed-loop referral lifecycle (HL7 BSeR STU2, harmonised with IHE 360X).

    State values are :class:`~referralkit.model.Status` members. Restore a machine from a
    stored status with ``ReferralLifecycle(start_value=referral.status)`` and pass the referral
    (and, to schedule, the appointment) to the event::

        machine.send("accept", referral=referral)
    """

    draft = State("Draft", initial=True, value=Status.DRAFT)
    received = State("Received", value=Status.RECEIVED)
    accepted = State("Accepted", value=Status.ACCEPTED)
    on_hold = State("On hold", value=Status.ON_HOLD)
    scheduled = State("Scheduled", value=Status.SCHEDULED)
    no_show = State("No-show", value=Status.NO_SHOW)
    appointment_cancelled = State("Appointment cancelled", value=Status.APPOINTMENT_CANCELLED)
    seen = State("Seen", value=Status.SEEN)
    cancellation_requested = State("Cancellation requested", value=Status.CANCELLATION_REQUESTED)
    declined = State("Declined", final=True, value=Status.DECLINED)
    cancelled = State("Cancelled", final=True, value=Status.CANCELLED)
    completed = State("Completed", final=True, value=Status.COMPLETED)
    failed = State("Failed", final=True, value=Status.FAILED)
    entered_in_error = State("Entered in error", final=True, value=Status.ENTERED_IN_ERROR)

    # "send" would shadow StateMachine.send, so the event that sends a draft is "submit"
    submit = draft.to(received)
    accept = received.to(accepted, cond=intake_complete)
    decline = declined.from_(
        received,
        accepted,
        on_hold,
        scheduled,
        no_show,
        appointment_cancelled,
        seen,
        cancellation_requested,
    )
    # BSeR STU2 TIDs in comments: docs/lifecycle.md compares the whole table, row by row
    schedule = scheduled.from_(accepted, seen, cond=scheduling_allowed)  # 06; 26: another visit
    reschedule = scheduled.from_(scheduled, no_show, appointment_cancelled, cond=scheduling_allowed)
    record_no_show = scheduled.to(no_show)  # 12
    cancel_appointment = appointment_cancelled.from_(scheduled, no_show, seen)  # 13, 19, 27
    record_visit = scheduled.to(seen)  # 15
    # 08: a note from a visit not booked here; 29: notes after the visit
    add_interim_note = seen.from_(accepted, seen)
    request_cancellation = cancellation_requested.from_(
        received, accepted, on_hold, scheduled, no_show, appointment_cancelled, seen
    )
    confirm_cancellation = cancellation_requested.to(cancelled)
    complete = completed.from_(accepted, scheduled, seen, cancellation_requested)
    hold = on_hold.from_(received, accepted, scheduled, no_show, appointment_cancelled, seen)
    resume = (
        on_hold.to(received, cond=_RESUME_GUARDS[Status.RECEIVED])
        | on_hold.to(accepted, cond=_RESUME_GUARDS[Status.ACCEPTED])
        | on_hold.to(scheduled, cond=_RESUME_GUARDS[Status.SCHEDULED])
        | on_hold.to(no_show, cond=_RESUME_GUARDS[Status.NO_SHOW])
        | on_hold.to(appointment_cancelled, cond=_RESUME_GUARDS[Status.APPOINTMENT_CANCELLED])
        | on_hold.to(seen, cond=_RESUME_GUARDS[Status.SEEN])
    )
    fail = failed.from_(
        received,
        accepted,
        on_hold,
        scheduled,
        no_show,
        appointment_cancelled,
        seen,
        cancellation_requested,
    )
    mark_entered_in_error = entered_in_error.from_(
        draft,
        received,
        accepted,
        on_hold,
        scheduled,
        no_show,
        appointment_cancelled,
        seen,
        cancellation_requested,
    )


# --------------------------------------------------------------------------- FHIR mapping


@attrs.frozen
class FhirTaskStatus:
    """How a lifecycle state is written as a FHIR Task: ``status`` and the BSeR
    ``businessStatus`` code (``None`` where BSeR defines none)."""

    status: str
    business_status: str | None
    business_status_display: str | None


FHIR_TASK: Final[Mapping[Status, FhirTaskStatus]] = MappingProxyType(
    {
        Status.DRAFT: FhirTaskStatus("draft", None, None),
        Status.RECEIVED: FhirTaskStatus("received", "2.0", "Service Request Created"),
        Status.ACCEPTED: FhirTaskStatus("accepted", "3.0", "Service Request Accepted"),
        Status.ON_HOLD: FhirTaskStatus("on-hold", None, None),
        Status.SCHEDULED: FhirTaskStatus("in-progress", "5.1.1", "Service Request Event Scheduled"),
        Status.NO_SHOW: FhirTaskStatus(
            "in-progress", "5.1.2", "Scheduled Service Request Event Unattended"
        ),
        Status.APPOINTMENT_CANCELLED: FhirTaskStatus(
            "in-progress", "5.1.3", "Scheduled Service Request Event Cancelled"
        ),
        Status.SEEN: FhirTaskStatus("in-progress", "5.1.4", "Service Request Event Completed"),
        Status.CANCELLATION_REQUESTED: FhirTaskStatus(
            "in-progress", "5.2", "Service Request Cancellation Requested"
        ),
        Status.DECLINED: FhirTaskStatus("rejected", "4.0", "Service Request Declined"),
        Status.CANCELLED: FhirTaskStatus(
            "cancelled", "6.0", "Service Request Fulfillment Cancelled"
        ),
        Status.COMPLETED: FhirTaskStatus(
            "completed", "7.0", "Service Request Fulfillment Completed"
        ),
        Status.FAILED: FhirTaskStatus("failed", None, None),
        Status.ENTERED_IN_ERROR: FhirTaskStatus("entered-in-error", None, None),
    }
)
"""FHIR ``Task.status`` and BSeR ``businessStatus`` for every lifecycle state."""


# --------------------------------------------------------------------------- derived table


@attrs.frozen
class Edge:
    """One transition out of a state for an event: its target and the guards that must
    all hold."""

    target: Status
    guards: tuple[Guard, ...]


@attrs.frozen
class TransitionTable:
    """The lifecycle as plain dictionaries, derived from a python-statemachine class.

    Use it for fast checks (every desk operation, imports, replays, analytics); it evaluates
    the class's own guard functions.
    """

    edges: Mapping[tuple[Status, str], tuple[Edge, ...]]
    events: tuple[str, ...]
    terminal: frozenset[Status]

    @classmethod
    def from_class(cls, machine: type[StateMachine]) -> TransitionTable:
        """Derive the table from ``machine``'s states and transitions."""
        edges: dict[tuple[Status, str], list[Edge]] = {}
        events: dict[str, None] = {}
        for state in machine.states:
            for transition in state.transitions:
                target = transition.target
                assert target is not None  # no targetless transitions in the lifecycle
                guards = tuple(spec.func for spec in transition.cond)
                for event in transition.events:
                    events[str(event)] = None
                    edges.setdefault((Status(state.value), str(event)), []).append(
                        Edge(Status(target.value), guards)
                    )
        return cls(
            edges=MappingProxyType({k: tuple(v) for k, v in edges.items()}),
            events=tuple(events),
            terminal=frozenset(Status(s.value) for s in machine.final_states),
        )

    def events_from(self, status: Status) -> frozenset[str]:
        """The events that have a transition out of ``status`` (guards not evaluated)."""
        return frozenset(event for (source, event) in self.edges if source is status)

    def target(self, status: Status, event: str) -> Status | None:
        """The single unguarded target of ``event`` from ``status``, or ``None``."""
        edges = self.edges.get((status, event), ())
        return edges[0].target if len(edges) == 1 else None

    def allows(self, status: Status, event: str) -> bool:
        """Whether ``event`` has a transition out of ``status`` (guards not evaluated)."""
        return (status, event) in self.edges

    def next_status(self, referral: Referral, event: str, **context: Any) -> Status:
        """The status ``event`` moves ``referral`` to, or a typed error saying why not.

        Raises :class:`~referralkit.errors.TransitionError` when the lifecycle has no such
        transition and :class:`~referralkit.errors.GuardError` when a guard refuses it.
        """
        edges = self.edges.get((referral.status, event))
        if edges is None:
            if event not in self.events:
                raise TransitionError(referral.id, referral.status.value, event, "unknown event")
            raise TransitionError(referral.id, referral.status.value, event)
        context["referral"] = referral
        refused: list[Guard] = []
        for edge in edges:
            failed = [g for g in edge.guards if not g(**context)]
            if not failed:
                return edge.target
            refused.extend(failed)
        detail = "; ".join(dict.fromkeys(_explain(g, context) for g in refused))
        raise GuardError(referral.id, referral.status.value, event, detail)

    def pairs(self) -> Iterable[tuple[Status, str, Status]]:
        """Every ``(source, event, target)`` triple."""
        for (source, event), edges in self.edges.items():
            for edge in edges:
                yield source, event, edge.target


TABLE: Final = TransitionTable.from_class(ReferralLifecycle)
"""The transition table derived from :class:`ReferralLifecycle`."""


def mermaid() -> str:
    """The lifecycle as a Mermaid ``stateDiagram-v2``, generated from the class."""
    return format(ReferralLifecycle, "mermaid")
