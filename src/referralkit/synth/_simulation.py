"""A simulated referral desk: :func:`simulate` drives synthetic requests through simulated weeks
of a :class:`~referralkit.desk.ReferralDesk`'s public operations, and :class:`SimulationReport`
says what it did."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from ..clock import FakeClock
from ..desk import ReferralDesk
from ..errors import ConcurrencyError, PermissionDeniedError, TransitionError, ValidationError
from ..intake import IntakeRequest, Requirement
from ..model import (
    AppointmentStatus,
    AttachmentKind,
    AuthStatus,
    Channel,
    Covered,
    Direction,
    FollowUpKind,
    Priority,
    Provider,
    Referral,
    Status,
)
from ..privacy import PERMISSIONS, Actor
from ..scheduling import MemoryScheduler, SchedulingError, Slot, UnknownBookingError, Window
from ._directory import best_specialist, directory_entries, specialists
from ._seeding import check_count, random_for

if TYPE_CHECKING:
    from ..directory import Directory

__all__ = ["SimulationReport", "simulate"]


@attrs.frozen
class SimulationReport:
    """What :func:`simulate` did.

    ``operations`` counts the desk operations that succeeded, by name; ``refused`` counts the
    ones the desk refused as expected outcomes (a guard, a lifecycle rule, a permission), keyed
    ``"operation: ErrorClass"``. ``duplicates`` counts requests sent twice that intake
    recognised by their source id.
    """

    started: dt.datetime
    ended: dt.datetime
    referral_ids: tuple[str, ...]
    operations: tuple[tuple[str, int], ...]
    refused: tuple[tuple[str, int], ...]
    duplicates: int = 0

    @property
    def total_operations(self) -> int:
        """How many desk operations succeeded."""
        return sum(n for _, n in self.operations)

    @property
    def total_refused(self) -> int:
        """How many desk operations were refused."""
        return sum(n for _, n in self.refused)

    def count(self, operation: str) -> int:
        """How many times ``operation`` succeeded."""
        return dict(self.operations).get(operation, 0)


# what the desk may refuse while the simulated people go about their work; anything else
# (a storage failure, a bug) propagates
_EXPECTED: Final = (TransitionError, PermissionDeniedError, ConcurrencyError, ValidationError)

_HOUR: Final = dt.timedelta(hours=1)
_DAY: Final = dt.timedelta(days=1)
_TICK: Final = dt.timedelta(hours=2)
_SLOT_HOURS: Final = (8, 9, 10, 11, 13, 14, 15, 16)

# how soon the desk comes back to a referral, in hours, by priority
_PACE: Final = {
    Priority.STAT: (1.0, 4.0),
    Priority.ASAP: (2.0, 8.0),
    Priority.URGENT: (2.0, 24.0),
    Priority.ROUTINE: (4.0, 60.0),
}
# matching, when the simulation books through a scheduler: how far (points) below the best
# candidate the simulated coordinators still choose among
_CLOSE_SCORE: Final = 10.0
# the days of free slots a practice's schedule shows, from the day a booking looks at
_SCHEDULE_DAYS: Final = 7

# business days from booking to the appointment, by priority (low, high, mode)
_LEAD: Final = {
    Priority.STAT: (0, 1, 0),
    Priority.ASAP: (0, 2, 1),
    Priority.URGENT: (0, 5, 2),
    Priority.ROUTINE: (2, 22, 7),
}


@attrs.define
class _Case:
    """The simulator's private notes on one referral (never stored)."""

    referral: Referral
    next_at: dt.datetime
    slow: bool
    docs_at: dt.datetime | None = None
    docs_asked: bool = False
    docs_follow_up: str | None = None
    auth_at: dt.datetime | None = None
    auth_approves: bool = True
    appeals: int = 0
    reminded: bool = False
    no_shows: int = 0
    noted: bool = False
    tested: bool = False
    note_at: dt.datetime | None = None
    hold_for: str = ""
    hold_until: dt.datetime | None = None
    refusals: int = 0


def _still(case: _Case, status: Status) -> bool:
    # a function, so type checkers do not assume a status checked earlier cannot change
    return case.referral.status is status


def _business(when: dt.datetime) -> bool:
    return when.weekday() < 5 and 8 <= when.hour < 18


def _add_business_days(day: dt.date, days: int) -> dt.date:
    while days > 0 or day.weekday() >= 5:
        day += _DAY
        if day.weekday() < 5:
            days -= 1
    return day


class _Simulation:
    def __init__(
        self,
        desk: ReferralDesk,
        actors: Sequence[Actor],
        clock: FakeClock,
        providers: Sequence[Provider],
        seed: int,
        scheduler: MemoryScheduler | None = None,
    ) -> None:
        self.desk = desk
        self.actors = actors
        self.clock = clock
        self.providers = providers
        self.scheduler = scheduler
        self.directory: Directory | None = None
        if scheduler is not None:
            # imported here: the directory's FHIR reader imports this package (a cycle)
            from ..directory import MemoryDirectory

            self.directory = MemoryDirectory(directory_entries(providers))
        self.by_id = {p.id: p for p in providers}
        self._opened: set[tuple[str, dt.date]] = set()
        self.rng = random_for("simulate", seed)
        self.operations: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        self.duplicates = 0
        self._by_operation: dict[str, Actor] = {}

    # -------------------------------------------------------------- plumbing

    def actor(self, operation: str) -> Actor:
        """The most specialised actor allowed to do ``operation`` (a scheduler books, a
        specialist accepts), else the first one, whom the desk will refuse."""
        if operation not in self._by_operation:
            allowed = [a for a in self.actors if a.may(operation)]

            def breadth(actor: Actor) -> int:
                return len(frozenset().union(*(PERMISSIONS[role] for role in actor.roles)))

            self._by_operation[operation] = min(allowed, key=breadth) if allowed else self.actors[0]
        return self._by_operation[operation]

    def do(self, case: _Case, operation: str, *args: object, **kwargs: object) -> bool:
        """Run a desk operation on the case's referral; count it; never raise on a refusal."""
        method = getattr(self.desk, operation)
        try:
            case.referral = method(self.actor(operation), case.referral.id, *args, **kwargs)
        except _EXPECTED as exc:
            return self.refuse(case, operation, exc)
        self.operations[operation] += 1
        return True

    def refuse(self, case: _Case, operation: str, exc: Exception) -> bool:
        """Count an expected refusal; after a lost race, read the referral again."""
        self.refused[f"{operation}: {type(exc).__name__}"] += 1
        case.refusals += 1
        if isinstance(exc, ConcurrencyError):
            case.referral = self.desk.get(self.actor("get"), case.referral.id)
        return False

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def later(self, case: _Case, low: float, high: float) -> None:
        hours = self.rng.uniform(low, high) * (4 if case.slow else 1)
        case.next_at = self.clock.now() + dt.timedelta(hours=hours)

    def pace(self, case: _Case) -> None:
        self.later(case, *_PACE[case.referral.effective_priority])

    def slot(self, priority: Priority) -> dt.datetime:
        now = self.clock.now()
        low, high, mode = _LEAD[priority]
        lead = round(self.rng.triangular(low, high, mode))
        day = _add_business_days(now.date(), lead)
        for _ in range(30):
            when = dt.datetime.combine(
                day, dt.time(self.rng.choice(_SLOT_HOURS), self.rng.choice((0, 30))), dt.UTC
            )
            if when > now + _HOUR:
                return when
            day = _add_business_days(day, 1)
        return when  # pragma: no cover - a slot on the next business day always fits

    def talk(self, case: _Case, counterpart: str, channel: Channel | None = None) -> None:
        """Document a call with the patient (with an interpreter when needed) or a party."""
        patient = case.referral.patient
        is_patient = counterpart == "patient"
        channel = channel or self.rng.choice(
            (Channel.PHONE, Channel.PHONE, Channel.PORTAL, Channel.SMS)
            if is_patient
            else (Channel.PHONE, Channel.FAX, Channel.PORTAL)
        )
        interpreter = is_patient and patient.interpreter_needed and channel is Channel.PHONE
        # one call in twelve forgets to document the interpreter: a discrepancy for audits
        interpreter = interpreter and not self.chance(1 / 12)
        self.do(
            case,
            "log_communication",
            channel,
            Direction.OUTBOUND,
            counterpart,
            interpreter_used=interpreter,
        )

    def specialist_for(self, case: _Case, *, any_network: bool = False) -> Provider | None:
        """Another accepting specialist: in network and speaking the patient's language when
        possible; with ``any_network``, out of network if nobody in network is accepting."""
        r = case.referral
        exclude = r.target.id if r.target is not None else None
        if self.directory is not None:
            return self.matched(case, exclude, any_network=any_network)
        candidates = specialists(self.providers, r.specialty)
        found = best_specialist(
            self.rng, candidates, r.coverage, r.patient.preferred_language, exclude
        )
        if found is None and any_network:
            found = best_specialist(
                self.rng, candidates, None, r.patient.preferred_language, exclude
            )
        return found

    def matched(self, case: _Case, exclude: str | None, *, any_network: bool) -> Provider | None:
        """The specialist :func:`~referralkit.directory.match` ranks best, or one within
        :data:`_CLOSE_SCORE` points of the best (coordinators spread the load)."""
        from ..directory import DEFAULT_POLICY, match

        assert self.directory is not None
        # out of network only when nobody in network takes the patient
        policies = [DEFAULT_POLICY]
        if any_network:
            policies.append(attrs.evolve(DEFAULT_POLICY, require_in_network=False))
        for policy in policies:
            try:
                result = match(
                    case.referral, self.directory, as_of=self.clock.now(), limit=5, policy=policy
                )
            except ValidationError:  # a specialty with no NUCC code: nobody to match
                return None
            ranked = [c for c in result.ranked if c.id != exclude and c.id in self.by_id]
            if ranked:
                close = [c for c in ranked if c.score >= ranked[0].score - _CLOSE_SCORE]
                return self.by_id[self.rng.choice(close).id]
        return None

    def free_slot(self, target: str, start: dt.datetime) -> Slot | None:
        """The first free slot of ``target`` at or after ``start`` (the practice's schedule
        is opened a week at a time, as the simulation reaches it)."""
        assert self.scheduler is not None
        day = start.date()
        for offset in range(_SCHEDULE_DAYS):
            date = day + dt.timedelta(days=offset)
            if date.weekday() < 5 and (target, date) not in self._opened:
                self._opened.add((target, date))
                self.scheduler.add_slots(
                    Slot(
                        f"{target.split('/')[1]}-{date:%Y%m%d}-{hour:02d}{minute:02d}",
                        target,
                        at,
                        at + dt.timedelta(minutes=30),
                    )
                    for hour in _SLOT_HOURS
                    for minute in (0, 30)
                    for at in [dt.datetime.combine(date, dt.time(hour, minute), dt.UTC)]
                )
        window = Window(start, start + dt.timedelta(days=_SCHEDULE_DAYS))
        found = self.scheduler.find_slots(target, window, limit=1)
        return found[0] if found else None

    def book_slot(self, case: _Case, operation: str, start: dt.datetime) -> bool:
        """Book through the scheduler: the target's first free slot from ``start``."""
        target = case.referral.target
        assert target is not None
        slot = self.free_slot(f"PractitionerRole/{target.id}", start)
        if slot is None:
            self.refused[f"{operation}: no free slot"] += 1
            case.refusals += 1
            return False
        try:
            case.referral = self.desk.book(
                self.actor(operation), case.referral.id, slot, scheduler=self.scheduler
            )
        except (*_EXPECTED, SchedulingError) as exc:
            return self.refuse(case, operation, exc)
        self.operations[operation] += 1
        return True

    def release(self, appointment_id: str) -> None:
        """Cancel a booking in the scheduler after the desk cancelled the appointment."""
        if self.scheduler is not None:
            with contextlib.suppress(UnknownBookingError):  # recorded without the scheduler
                self.scheduler.cancel(appointment_id)

    def arrive(
        self, request: IntakeRequest, now: dt.datetime, cases: list[_Case], ids: list[str]
    ) -> None:
        """Take a request in; one in a hundred is faxed twice and intake recognises it."""
        try:
            referral = self.desk.intake(self.actor("intake"), request)
            if self.chance(0.01):
                again = self.desk.intake(self.actor("intake"), request)
                self.duplicates += again.id == referral.id
        except _EXPECTED as exc:
            self.refused[f"intake: {type(exc).__name__}"] += 1
            return
        self.operations["intake"] += 1
        ids.append(referral.id)
        cases.append(_Case(referral, now, slow=self.chance(1 / 6)))

    # -------------------------------------------------------------- one step

    def step(self, case: _Case) -> None:
        handler = {
            Status.DRAFT: self.draft,
            Status.RECEIVED: self.received,
            Status.ACCEPTED: self.accepted,
            Status.ON_HOLD: self.on_hold,
            Status.SCHEDULED: self.scheduled,
            Status.NO_SHOW: self.missed,
            Status.APPOINTMENT_CANCELLED: self.missed,
            Status.SEEN: self.seen,
            Status.CANCELLATION_REQUESTED: self.cancelling,
        }.get(case.referral.status)
        if handler is None:  # pragma: no cover - the caller skips terminal referrals
            return
        if case.refusals >= 4:
            # a referral the desk keeps refusing (an expired authorization, say) is escalated
            case.refusals = 0
            self.talk(case, "referring office", Channel.PHONE)
            if self.do(case, "fail", "could not be scheduled; returned to the referrer"):
                return
        handler(case)

    def draft(self, case: _Case) -> None:
        if self.chance(0.01):
            self.do(case, "mark_entered_in_error", "duplicate entry by the referring office")
            return
        if case.referral.target is None:
            provider = self.specialist_for(case, any_network=True)
            if provider is not None:
                self.do(case, "assign_specialist", provider)
        self.do(case, "send")
        coordinator = self.actor("assign")
        self.do(case, "assign", coordinator.id)
        self.later(case, 0.5, 4)

    def documents(self, case: _Case) -> bool:
        """Chase and attach what intake lacks; True when nothing is missing."""
        r = case.referral
        missing = self.desk.checklist.missing(r)
        if not missing:
            return True
        now = self.clock.now()
        if not case.docs_asked:
            case.docs_asked = True
            if not self.chance(0.12):  # some records never come
                case.docs_at = now + dt.timedelta(hours=self.rng.uniform(4, 240))
            self.talk(case, "referring office", Channel.FAX)
            due = _add_business_days(now.date(), 3)
            if self.do(case, "add_follow_up", FollowUpKind.DOCUMENT, due):
                case.docs_follow_up = case.referral.follow_ups[-1].id
            if self.chance(0.3):
                self.hold(case, "docs", "waiting for records from the referring office")
            return False
        if case.docs_at is not None and now >= case.docs_at:
            kinds = {
                Requirement.MEDICAL_HISTORY: AttachmentKind.MEDICAL_HISTORY,
                Requirement.PRIOR_AUTH_FORM: AttachmentKind.PRIOR_AUTH_FORM,
                Requirement.IMAGING: AttachmentKind.IMAGING,
                Requirement.LAB: AttachmentKind.LAB,
            }
            for requirement in missing:
                kind = kinds.get(requirement, AttachmentKind.OTHER)
                self.do(case, "attach", kind, title=f"{requirement.value} (received)")
            if case.docs_follow_up is not None:
                self.do(case, "complete_follow_up", case.docs_follow_up)
                case.docs_follow_up = None
            return not self.desk.checklist.missing(case.referral)
        if case.docs_at is None and now - (r.received_at or now) > dt.timedelta(days=21):
            if self.chance(0.5):
                self.do(case, "decline", "referral incomplete: records not received")
            else:
                self.talk(case, "referring office", Channel.PHONE)
        return False

    def coverage(self, case: _Case) -> bool:
        """Resolve a not-covered decision; True when scheduling may go ahead on coverage."""
        r = case.referral
        decision = r.coverage_decision
        if decision is None or decision.covered is not Covered.NOT_COVERED:
            return True
        if r.self_pay_acknowledged:
            return True
        if decision.reason == "auth-out-network":
            provider = self.specialist_for(case)
            if provider is not None:
                self.do(case, "assign_specialist", provider)
                self.talk(case, "patient")
                return False
        self.talk(case, "patient")
        if self.chance(0.7):
            self.do(case, "acknowledge_self_pay")
        elif self.chance(0.5):
            self.do(case, "request_cancellation", "patient declined to pay out of pocket")
        else:
            self.hold(case, "patient", "verifying coverage with the patient", days=(2, 10))
        return False

    def authorization(self, case: _Case) -> bool:
        """Move prior authorization along; True when it is satisfied (or not required)."""
        r = case.referral
        auth = r.authorization
        now = self.clock.now()
        if auth.status in (AuthStatus.NOT_REQUIRED, AuthStatus.APPROVED):
            return True
        if auth.status is AuthStatus.NEEDED:
            if AttachmentKind.PRIOR_AUTH_FORM not in r.attachment_kinds():
                self.do(case, "attach", AttachmentKind.PRIOR_AUTH_FORM, title="Prior auth form")
            expedited = r.effective_priority is not Priority.ROUTINE
            if self.do(case, "request_authorization", expedited=expedited):
                self.talk(case, "payer", Channel.PORTAL)
                # CMS-0057-F: 72 hours expedited, 7 days standard; a few payers run late
                window = 72.0 if expedited else 168.0
                case.auth_at = now + dt.timedelta(hours=self.rng.uniform(4, window * 1.2))
                case.auth_approves = self.chance(0.85 if case.appeals == 0 else 0.6)
            return False
        if auth.status is AuthStatus.REQUESTED:
            if case.auth_at is not None and now >= case.auth_at:
                codes = [s.code for s in r.services]
                today = now.date()
                self.do(
                    case,
                    "record_authorization",
                    approved=case.auth_approves,
                    number=f"SYN-PA-{self.rng.randrange(10**6):06d}"
                    if case.auth_approves
                    else None,
                    valid_from=today if case.auth_approves else None,
                    valid_to=today + dt.timedelta(days=90) if case.auth_approves else None,
                    service_codes=codes if case.auth_approves else (),
                    units=1 if case.auth_approves else None,
                )
                return case.referral.authorization.covers(today)
            if case.auth_at is None:  # requested before the simulation knew: decide soon
                case.auth_at = now + dt.timedelta(hours=self.rng.uniform(4, 72))
            return False
        # denied: appeal once, then give up
        self.talk(case, "patient")
        if case.appeals == 0 and self.chance(0.6):
            case.appeals += 1
            self.do(case, "attach", AttachmentKind.OTHER, title="Appeal letter")
            self.do(case, "request_authorization", expedited=False)
            case.auth_at = now + dt.timedelta(hours=self.rng.uniform(24, 200))
            case.auth_approves = self.chance(0.5)
        elif self.chance(0.5):
            self.do(case, "fail", "prior authorization denied; alternatives sent to referrer")
        else:
            self.do(case, "request_cancellation", "patient withdrew after authorization denial")
        return False

    def received(self, case: _Case) -> None:
        r = case.referral
        if r.target is not None and not r.target.accepting_new_patients:
            provider = self.specialist_for(case)
            if provider is not None:
                self.do(case, "assign_specialist", provider)
            elif self.chance(0.5):
                self.do(case, "decline", "practice not accepting new patients")
                return
        if self.chance(0.004):
            self.do(case, "request_cancellation", "patient chose another provider")
            return
        complete = self.documents(case)
        if not _still(case, Status.RECEIVED):
            return
        covered = self.coverage(case)
        if not _still(case, Status.RECEIVED):
            return
        if case.referral.authorization.status is AuthStatus.NEEDED and complete:
            self.authorization(case)
        if complete and covered:
            if self.chance(0.04):
                self.do(case, "decline", "requested service is not offered by this practice")
                return
            self.do(case, "accept")
        elif self.chance(0.05):
            # a specialist's office tries to accept before the paperwork is in: refused
            self.do(case, "accept")
        self.pace(case)

    def accepted(self, case: _Case) -> None:
        r = case.referral
        if self.chance(0.004):
            self.do(case, "request_cancellation", "symptoms resolved")
            return
        if self.chance(0.03) and r.authorization.status is AuthStatus.NOT_REQUIRED:
            # an e-consult: the specialist answers without a visit
            self.do(case, "complete", "E-consult: recommendations returned to the referrer.")
            return
        if not self.documents(case):
            self.pace(case)
            return
        covered = self.coverage(case)
        authorized = self.authorization(case) if _still(case, Status.ACCEPTED) else False
        if not _still(case, Status.ACCEPTED):
            self.pace(case)
            return
        if covered and authorized:
            self.book(case, "schedule")
        elif self.chance(0.06):
            # a scheduler books before authorization is in: the guard refuses it
            self.do(case, "schedule", self.slot(r.effective_priority))
        elif (
            case.referral.authorization.status is AuthStatus.REQUESTED
            and case.auth_at is not None
            and case.auth_at - self.clock.now() > dt.timedelta(days=3)
            and self.chance(0.3)
        ):
            self.hold(case, "auth", "awaiting prior authorization decision")
        self.pace(case)

    def book(self, case: _Case, operation: str) -> None:
        start = self.slot(case.referral.effective_priority)
        if self.scheduler is not None and case.referral.target is not None:
            booked = self.book_slot(case, operation, start)
        else:
            booked = self.do(case, operation, start)
        if booked:
            appointment = case.referral.current_appointment
            assert appointment is not None
            start = appointment.start
            case.reminded = False
            self.talk(case, "patient")
            if self.chance(0.25):
                self.do(case, "add_follow_up", FollowUpKind.CALL, start.date() - _DAY)
            self.talk(case, "specialist office", Channel.PORTAL)
        self.pace(case)

    def hold(
        self, case: _Case, cause: str, reason: str, days: tuple[float, float] | None = None
    ) -> None:
        """Put the referral on hold for ``cause`` (docs, auth or patient)."""
        if self.do(case, "hold", reason):
            case.hold_for = cause
            case.hold_until = (
                None
                if days is None
                else self.clock.now() + dt.timedelta(days=self.rng.uniform(*days))
            )

    def on_hold(self, case: _Case) -> None:
        now = self.clock.now()
        if case.hold_for == "docs":
            if case.docs_at is not None and now >= case.docs_at:
                self.documents(case)
                self.do(case, "resume")
            elif case.docs_at is None and self.chance(0.1):
                self.do(case, "fail", "records never received from the referring office")
        elif case.hold_for == "auth":
            self.authorization(case)
            if case.referral.authorization.status is not AuthStatus.REQUESTED:
                self.do(case, "resume")
        elif case.hold_until is None or now >= case.hold_until:
            if self.chance(0.85):
                self.do(case, "resume")
            else:
                self.do(case, "fail", "unable to reach the patient")
        self.pace(case)

    def scheduled(self, case: _Case) -> None:
        appointment = case.referral.current_appointment
        now = self.clock.now()
        if appointment is None or appointment.status is not AppointmentStatus.BOOKED:
            self.pace(case)  # pragma: no cover - scheduled always has a booked appointment
            return
        end = appointment.start + dt.timedelta(minutes=appointment.minutes)
        if now < end:
            if not case.reminded and appointment.start - now < dt.timedelta(days=2):
                case.reminded = True
                self.talk(case, "patient", Channel.SMS)
            if self.chance(0.03):
                if self.do(case, "cancel_appointment", "patient asked to cancel"):
                    self.release(appointment.id)
                case.next_at = now + dt.timedelta(hours=self.rng.uniform(4, 48))
            elif self.chance(0.01):
                self.book(case, "reschedule")  # the clinic moves the slot
            elif self.chance(0.005):
                self.do(case, "request_cancellation", "patient moved out of the area")
            else:
                case.next_at = min(end, now + dt.timedelta(hours=self.rng.uniform(12, 72)))
            return
        roll = self.rng.random()
        # interpreter needs and long waits both raise no-show rates in studies; illustrative
        no_show = 0.10 + (0.05 if case.referral.patient.interpreter_needed else 0.0)
        if roll < no_show:
            if self.do(case, "record_no_show"):
                case.no_shows += 1
        elif roll < no_show + 0.04:
            if self.do(case, "cancel_appointment", "patient cancelled on the day"):
                self.release(appointment.id)
        elif self.do(case, "record_visit"):
            case.note_at = now + dt.timedelta(days=self.rng.uniform(0.5, 8))
        self.later(case, 2, 24)

    def missed(self, case: _Case) -> None:
        self.talk(case, "patient")
        if case.no_shows >= 2 and self.chance(0.5):
            self.do(case, "fail", "patient did not attend two appointments")
        elif self.chance(0.8):
            self.book(case, "reschedule")
            return
        elif self.chance(0.3):
            self.hold(case, "patient", "unable to reach the patient", days=(2, 14))
        self.pace(case)

    def seen(self, case: _Case) -> None:
        now = self.clock.now()
        if not case.noted and self.chance(0.25):
            case.noted = True
            self.do(case, "add_interim_note", "Interim note: results pending, plan to follow.")
        if not case.tested and self.chance(0.3):
            case.tested = True
            self.do(case, "add_follow_up", FollowUpKind.TEST, now.date() + dt.timedelta(days=14))
        if case.note_at is not None and now >= case.note_at and self.chance(0.9):
            for follow_up in case.referral.follow_ups:
                if not follow_up.done and self.chance(0.5):
                    self.do(case, "complete_follow_up", follow_up.id)
            if self.do(case, "complete", "Consult note: assessment and plan returned."):
                self.talk(case, "referring office", Channel.PORTAL)
                return
        self.later(case, 12, 72)

    def cancelling(self, case: _Case) -> None:
        if self.chance(0.92):
            self.do(case, "confirm_cancellation")
        else:
            self.do(case, "decline", "cancelled at the patient's request")


def simulate(
    desk: ReferralDesk,
    actors: Actor | Sequence[Actor],
    clock: FakeClock,
    requests: Iterable[IntakeRequest],
    *,
    weeks: int = 6,
    seed: int = 0,
    providers: Sequence[Provider] | None = None,
    progress: Callable[[int, int], None] | None = None,
    scheduler: MemoryScheduler | None = None,
) -> SimulationReport:
    """Run ``requests`` through ``weeks`` simulated weeks of ``desk``, advancing ``clock``.

    Requests arrive spread over the business days of the period and are taken in with
    :meth:`~referralkit.desk.ReferralDesk.intake` (so coverage and urgency are decided). Every
    two business hours the simulated coordinators, schedulers, specialists and referrers act on
    the referrals that are due for attention, using only the desk's public operations: send,
    chase and attach missing documents, request and record prior authorizations (some denied,
    some appealed), acknowledge self-pay, switch to an in-network specialist, accept or decline,
    schedule and reschedule, record visits, no-shows and cancelled appointments, add interim
    notes and follow-ups, complete with a consult note, hold and resume, cancel, and document
    every contact (with an interpreter when the patient needs one). About one referral in six
    gets attention four times more slowly, so some end overdue.

    Each operation is done by the most specialised of ``actors`` allowed to do it. A refusal
    that is an expected outcome (:class:`~referralkit.errors.TransitionError` and its guard
    subclass, :class:`~referralkit.errors.PermissionDeniedError`,
    :class:`~referralkit.errors.ConcurrencyError`) is counted in the report, never raised.

    ``desk`` must use ``clock``. ``providers`` is the directory to choose specialists from;
    by default the specialists the requests name. ``progress(arrived, total)`` is called as
    requests arrive. The clock ends ``weeks`` after it started.

    With a ``scheduler``, the specialists are chosen with :func:`~referralkit.directory.match`
    over the providers as a directory, and appointments are booked through the scheduler with
    :meth:`~referralkit.desk.ReferralDesk.book`: the specialist's first free slot at or after
    the time the simulated patient asks for (each practice's schedule opens with 16
    half-hour slots a business day as the simulation reaches it).
    """
    if not isinstance(desk, ReferralDesk):
        raise ValidationError("desk", "expected a ReferralDesk")
    if not isinstance(clock, FakeClock):
        raise ValidationError("clock", "expected a FakeClock")
    if desk.clock is not clock:
        raise ValidationError("clock", "the desk must use the clock the simulation advances")
    team = (actors,) if isinstance(actors, Actor) else tuple(actors)
    if not team or not all(isinstance(a, Actor) for a in team):
        raise ValidationError("actors", "expected an Actor or a non-empty sequence of Actors")
    check_count(weeks, "weeks")
    pending = list(requests)
    if not all(isinstance(r, IntakeRequest) for r in pending):
        raise ValidationError("requests", "expected IntakeRequest values")
    if providers is None:
        seen: dict[str, Provider] = {}
        for request in pending:
            if request.target is not None:
                seen.setdefault(request.target.id, request.target)
        providers = tuple(seen.values())

    sim = _Simulation(desk, team, clock, tuple(providers), seed, scheduler)
    rng = sim.rng
    started = clock.now()
    ended = started + dt.timedelta(weeks=weeks)
    ticks: list[dt.datetime] = []
    when = started
    while when < ended:
        if _business(when):
            ticks.append(when)
        when += _TICK
    # arrivals: business ticks spread over the period; the very last day takes none, so
    # every referral gets at least a first look
    arrival_ticks = [t for t in ticks if t < ended - _DAY] or ticks[:1]
    arrivals = sorted(
        ((rng.choice(arrival_ticks) if arrival_ticks else started), i) for i in range(len(pending))
    )
    total = len(pending)
    cases: list[_Case] = []
    ids: list[str] = []
    next_arrival = 0
    for tick in ticks or [started]:
        clock.set(tick)
        while next_arrival < total and arrivals[next_arrival][0] <= tick:
            request = pending[arrivals[next_arrival][1]]
            next_arrival += 1
            sim.arrive(request, tick, cases, ids)
            if progress is not None:
                progress(next_arrival, total)
        for case in cases:
            if case.next_at <= tick and not case.referral.status.is_terminal:
                sim.step(case)
                if case.next_at <= tick:
                    sim.pace(case)
    # requests left over (no business tick in a zero-week run) still count for progress
    if progress is not None and next_arrival < total:
        progress(total, total)
    if clock.now() < ended:
        clock.set(ended)
    return SimulationReport(
        started=started,
        ended=clock.now(),
        referral_ids=tuple(ids),
        operations=tuple(sorted(sim.operations.items())),
        refused=tuple(sorted(sim.refused.items())),
        duplicates=sim.duplicates,
    )
