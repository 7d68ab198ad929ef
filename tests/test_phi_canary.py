"""PHI never leaks: canaries planted in every PHI field must not appear in any repr, str, log
record or exception message (chained causes, contexts and group members included), whatever
the desk is asked to do, successfully or not.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from referralkit import (
    Actor,
    Attachment,
    AttachmentKind,
    Channel,
    Code,
    Communication,
    ContactPoint,
    ContactSystem,
    Coverage,
    Direction,
    FollowUp,
    FollowUpKind,
    IntakeRequest,
    MemoryStore,
    Patient,
    PlanType,
    Priority,
    Provider,
    Referral,
    ReferralDesk,
    ReferralEvent,
    ReferralKitError,
    Role,
    Status,
    from_dict,
    to_dict,
)
from referralkit.model import model_types, phi_fields
from referralkit.testing import FakeClock

MRN = "CANARY-MRN-7f3a"
GIVEN = "CANARY-GIVEN-7f3a"
FAMILY = "CANARY-FAMILY-7f3a"
BIRTH = dt.date(1901, 2, 3)
CONTACT = "CANARY-CONTACT-7f3a"
MEMBER = "CANARY-MEMBER-7f3a"
REASON = "CANARY-REASON-7f3a"
STATUS_REASON = "CANARY-STATUS-7f3a"
ATTACHMENT = "CANARY-ATTACH-7f3a"
COUNTERPART = "CANARY-COUNTERPART-7f3a"
SUMMARY = "CANARY-SUMMARY-7f3a"
FOLLOW_UP = "CANARY-FOLLOWUP-7f3a"
NOTE = "CANARY-NOTE-7f3a"

# What is searched for: every canary string shares the prefix; the birth date shows as
# 1901-02-03 in ISO form and as "1901" in a date's repr.
NEEDLES = ("CANARY", "1901-02-03", "1901")

# Every PHI field of every type, and the canary planted in it.
PLANTED: dict[tuple[type, str], str] = {
    (Patient, "mrn"): MRN,
    (Patient, "given_name"): GIVEN,
    (Patient, "family_name"): FAMILY,
    (Patient, "birth_date"): "1901-02-03",
    (Patient, "contacts"): CONTACT,
    (ContactPoint, "value"): CONTACT,
    (Coverage, "member_id"): MEMBER,
    (Referral, "reason"): REASON,
    (Referral, "status_reason"): STATUS_REASON,
    (IntakeRequest, "reason"): REASON,
    (Attachment, "text"): ATTACHMENT,
    (Communication, "counterpart"): COUNTERPART,
    (Communication, "summary"): SUMMARY,
    (FollowUp, "description"): FOLLOW_UP,
    (ReferralEvent, "payload"): REASON,
}


def canary_request(source_id: str = "REQ-C1", *, complete: bool = True) -> IntakeRequest:
    """An intake request with a canary in every PHI field it has."""
    added = dt.datetime(2026, 1, 5, 8, 30, tzinfo=dt.UTC)
    return IntakeRequest(
        source_id=source_id,
        patient=Patient(
            id="pat-canary",
            mrn=MRN,
            given_name=GIVEN,
            family_name=FAMILY,
            birth_date=BIRTH,
            contacts=(ContactPoint(ContactSystem.PHONE, CONTACT),),
        ),
        referring=Provider("prov-pcp", "Riverside", "family-medicine", networks=("net-a",)),
        target=Provider("prov-card", "Harbor", "cardiology", networks=("net-a",)),
        specialty="cardiology",
        reason=REASON,
        diagnoses=(Code.icd10("R07.9"),),
        services=(Code.cpt("99204"),),
        priority=Priority.ROUTINE,
        coverage=Coverage(
            "cov-1",
            "Acme",
            "Acme HMO",
            PlanType.HMO,
            member_id=MEMBER,
            period_start=dt.date(2026, 1, 1),
            period_end=dt.date(2026, 12, 31),
            networks=("net-a",),
        ),
        attachments=(
            (Attachment("doc-h", AttachmentKind.MEDICAL_HISTORY, added, text=ATTACHMENT),)
            if complete
            else ()
        ),
    )


def texts_of_exception(error: BaseException, seen: set[int] | None = None) -> Iterator[str]:
    """Messages and reprs of an exception, its cause and context chain and group members."""
    seen = set() if seen is None else seen
    if id(error) in seen:
        return
    seen.add(id(error))
    yield str(error)
    yield repr(error)
    yield from (repr(arg) for arg in error.args)
    yield from (str(note) for note in getattr(error, "__notes__", ()))
    for inner in (error.__cause__, error.__context__):
        if inner is not None:
            yield from texts_of_exception(inner, seen)
    for member in getattr(error, "exceptions", ()) or ():
        yield from texts_of_exception(member, seen)


def assert_clean(text: str, where: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, f"PHI canary {needle!r} leaked in {where}: {text[:300]}"


class Recorder:
    """Runs desk calls, keeping every result and every exception for the final scan."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.errors: list[BaseException] = []

    def ok(self, call: Callable[[], Any]) -> Any:
        result = call()
        self.results.append(result)
        return result

    def fails(self, call: Callable[[], Any], kind: type[BaseException] = ReferralKitError) -> None:
        with pytest.raises(kind) as info:
            call()
        self.errors.append(info.value)


@pytest.fixture
def canary_desk() -> ReferralDesk:
    counter = itertools.count(1)
    return ReferralDesk(
        MemoryStore(),
        clock=FakeClock(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)),
        new_id=lambda: f"id-{next(counter):04d}",
    )


class TestInventory:
    def test_every_phi_field_has_a_canary(self) -> None:
        """The canaries cover exactly the PHI fields the model declares (phi_fields)."""
        declared = {
            (cls, name) for cls in [*model_types(), IntakeRequest] for name in phi_fields(cls)
        }
        assert declared == set(PLANTED)

    def test_the_canaries_are_really_in_the_data(self, canary_desk: ReferralDesk) -> None:
        """Sanity: the planted values are in the stored data, so the scans mean something."""
        actor = Actor("coord-1", {Role.COORDINATOR})
        referral = canary_desk.intake(actor, canary_request())
        data = str(to_dict(referral))
        for value in (MRN, GIVEN, FAMILY, "1901-02-03", CONTACT, MEMBER, REASON, ATTACHMENT):
            assert value in data


class TestDeskNeverLeaks:
    def test_every_operation_successful_or_not(
        self, canary_desk: ReferralDesk, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Run every desk operation, with failures of every kind, and scan everything."""
        desk = canary_desk
        clock = desk.clock
        assert isinstance(clock, FakeClock)
        coordinator = Actor("coord-1", {Role.COORDINATOR})
        auditor = Actor("audit-1", {Role.AUDITOR})
        scheduler = Actor("sched-1", {Role.SCHEDULER})
        run = Recorder()
        caplog.set_level(logging.DEBUG, logger="referralkit")

        # successes along the whole path, with canaries in every free-text argument
        referral = run.ok(lambda: desk.intake(coordinator, canary_request()))
        rid = referral.id
        run.ok(lambda: desk.intake(coordinator, canary_request()))  # idempotent re-intake
        run.ok(lambda: desk.attach(coordinator, rid, AttachmentKind.LAB, text=ATTACHMENT))
        run.ok(
            lambda: desk.log_communication(
                coordinator,
                rid,
                Channel.PHONE,
                Direction.OUTBOUND,
                COUNTERPART,
                summary=SUMMARY,
                interpreter_used=True,
            )
        )
        follow_up = run.ok(
            lambda: desk.add_follow_up(
                coordinator, rid, FollowUpKind.CALL, dt.date(2026, 1, 9), description=FOLLOW_UP
            )
        ).follow_ups[-1]
        run.ok(lambda: desk.complete_follow_up(coordinator, rid, follow_up.id))
        run.ok(lambda: desk.assign(coordinator, rid, "coord-2"))
        run.ok(lambda: desk.reassess(coordinator, rid))
        run.ok(lambda: desk.send(coordinator, rid))
        run.ok(lambda: desk.hold(coordinator, rid, STATUS_REASON))
        run.ok(lambda: desk.resume(coordinator, rid))
        run.ok(lambda: desk.accept(coordinator, rid))
        start = clock.now() + dt.timedelta(days=7)
        run.ok(lambda: desk.schedule(coordinator, rid, start))
        run.ok(lambda: desk.reschedule(coordinator, rid, start + dt.timedelta(days=1)))
        run.ok(lambda: desk.cancel_appointment(coordinator, rid, STATUS_REASON))
        run.ok(lambda: desk.reschedule(coordinator, rid, start + dt.timedelta(days=2)))
        run.ok(lambda: desk.record_no_show(coordinator, rid))
        run.ok(lambda: desk.reschedule(coordinator, rid, start + dt.timedelta(days=3)))
        run.ok(lambda: desk.record_visit(coordinator, rid))
        run.ok(lambda: desk.add_interim_note(coordinator, rid, NOTE, title="Interim"))
        run.ok(lambda: desk.complete(coordinator, rid, NOTE))
        run.ok(lambda: desk.get(auditor, rid))
        run.ok(lambda: desk.history(auditor, rid))
        run.ok(lambda: desk.missing(auditor, rid))
        run.ok(lambda: desk.worklist(auditor))

        # other ends of the lifecycle, each with a canary reason
        for source, steps in {
            "REQ-C2": ("decline",),
            "REQ-C3": ("request_cancellation", "confirm_cancellation"),
            "REQ-C4": ("fail",),
        }.items():
            other = run.ok(lambda s=source: desk.intake(coordinator, canary_request(s))).id
            run.ok(lambda o=other: desk.send(coordinator, o))
            for step in steps:
                method = getattr(desk, step)
                if step == "confirm_cancellation":
                    run.ok(lambda m=method, o=other: m(coordinator, o))
                else:
                    run.ok(lambda m=method, o=other: m(coordinator, o, STATUS_REASON))
        err = run.ok(lambda: desk.intake(coordinator, canary_request("REQ-C5"))).id
        run.ok(lambda: desk.mark_entered_in_error(coordinator, err, STATUS_REASON))

        # authorization and self-pay on a referral that needs them
        imaging = attrs.evolve(
            canary_request("REQ-C6", complete=False), services=(Code.cpt("70551"),), coverage=None
        )
        pa = run.ok(lambda: desk.intake(coordinator, imaging)).id
        run.ok(lambda: desk.acknowledge_self_pay(coordinator, pa))
        run.ok(
            lambda: desk.assign_specialist(
                coordinator, pa, Provider("prov-2", "Bayview", "cardiology", networks=("x",))
            )
        )
        needs_pa = attrs.evolve(imaging, source_id="REQ-C7", coverage=canary_request().coverage)
        pa_ref = run.ok(lambda: desk.intake(coordinator, needs_pa))
        run.ok(lambda: desk.request_authorization(coordinator, pa_ref.id, expedited=True))
        run.ok(lambda: desk.record_authorization(coordinator, pa_ref.id, approved=False))

        # failures: illegal transitions, guards, permissions, validation, concurrency, absence
        draft = run.ok(lambda: desk.intake(coordinator, canary_request("REQ-C8", complete=False)))
        d = draft.id
        run.fails(lambda: desk.decline(coordinator, d, STATUS_REASON))
        run.fails(lambda: desk.complete(coordinator, d, NOTE))
        run.fails(lambda: desk.add_interim_note(coordinator, d, NOTE))
        run.fails(lambda: desk.cancel_appointment(coordinator, d, STATUS_REASON))
        run.ok(lambda: desk.send(coordinator, d))
        run.fails(lambda: desk.accept(coordinator, d))  # guard: incomplete intake
        run.fails(lambda: desk.request_authorization(coordinator, d))  # guard: not needed
        run.fails(lambda: desk.record_authorization(coordinator, d, approved=True))
        run.fails(lambda: desk.hold(auditor, d, STATUS_REASON))
        run.fails(lambda: desk.intake(auditor, canary_request("REQ-C9")))
        run.fails(
            lambda: desk.log_communication(
                auditor,
                d,
                Channel.SMS,
                Direction.OUTBOUND,
                COUNTERPART,
                summary=SUMMARY,
            )
        )
        run.fails(
            lambda: desk.log_communication(
                coordinator, d, Channel.SMS, Direction.OUTBOUND, COUNTERPART * 20
            )
        )
        run.fails(
            lambda: desk.log_communication(
                coordinator, d, Channel.SMS, Direction.OUTBOUND, COUNTERPART, summary=[SUMMARY]
            )
        )
        run.fails(
            lambda: desk.add_follow_up(
                coordinator, d, FollowUpKind.TEST, dt.date(2026, 2, 1), description=(FOLLOW_UP,)
            )
        )
        run.fails(lambda: desk.attach(coordinator, d, AttachmentKind.LAB, text=[ATTACHMENT]))
        run.fails(lambda: desk.attach(coordinator, d, AttachmentKind.LAB, text=b"CANARY-bytes"))
        run.fails(lambda: desk.hold(coordinator, d, STATUS_REASON, expected_version=1))
        run.fails(lambda: desk.decline(coordinator, d, STATUS_REASON, expected_version=99))
        run.fails(lambda: desk.intake(coordinator, {"patient": {"mrn": MRN}}))  # type: ignore[arg-type]
        run.fails(lambda: desk.intake(coordinator, MRN))  # type: ignore[arg-type]
        run.fails(lambda: desk.assign_specialist(coordinator, d, {"name": MRN}))  # type: ignore[arg-type]
        run.fails(lambda: desk.hold(MRN, d, STATUS_REASON))  # type: ignore[arg-type]
        run.fails(lambda: desk.get(auditor, "no-such-id"))
        run.fails(lambda: desk.schedule(coordinator, d, dt.datetime(2026, 2, 1, 9)))
        run.fails(lambda: desk.hold(coordinator, d, "  "))
        run.fails(lambda: desk.accept(scheduler, d))
        run.fails(lambda: desk.schedule(scheduler, d, start))

        # direct construction with bad PHI values
        for build in (
            lambda: Patient("p", MRN * 10, GIVEN, FAMILY, BIRTH),
            lambda: Patient("p", MRN, GIVEN * 20, FAMILY, BIRTH),
            lambda: Patient("p", MRN, GIVEN, FAMILY, "1901-02-03"),
            lambda: Patient("p", MRN, GIVEN, FAMILY, BIRTH, contacts=(CONTACT,)),
            lambda: Patient("p", MRN, GIVEN, FAMILY, BIRTH, contacts=[CONTACT]),
            lambda: ContactPoint(ContactSystem.SMS, CONTACT * 20),
            lambda: Coverage("c", "Acme", "HMO", PlanType.HMO, member_id=MEMBER * 10),
            lambda: attrs.evolve(canary_request(), reason=(REASON,)),
            lambda: attrs.evolve(referral, status_reason=STATUS_REASON * 200),
            lambda: attrs.evolve(referral, reason=[REASON]),
            lambda: Communication(
                "m",
                dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
                Channel.FAX,
                Direction.INBOUND,
                COUNTERPART * 20,
            ),
            lambda: FollowUp("f", FollowUpKind.CALL, BIRTH, description=FOLLOW_UP * 1000),
            lambda: ReferralEvent(
                "r", 1, 0, dt.datetime(2026, 1, 5, tzinfo=dt.UTC), "u", "x", [MRN]
            ),
        ):
            run.fails(build)

        # scan: every result (and the items of lists), every event, every log record, every error
        history = [e for r in desk.store.query() for e in desk.store.events(r.id)]
        assert len(history) > 40
        objects = [*run.results, *history, *desk.store.query()]
        for obj in objects:
            for item in obj if isinstance(obj, list | tuple) else [obj]:
                assert_clean(repr(item), f"repr of {type(item).__name__}")
                assert_clean(str(item), f"str of {type(item).__name__}")
        assert caplog.records, "the desk logs its changes at DEBUG"
        for record in caplog.records:
            assert_clean(record.getMessage(), f"log record {record.name}")
            assert_clean(repr(record.args), f"log args {record.name}")
            assert_clean(str(record.exc_text or ""), f"log exc_text {record.name}")
        assert caplog.text
        assert_clean(caplog.text, "captured log text")
        assert len(run.errors) >= 35
        for error in run.errors:
            for text in texts_of_exception(error):
                assert_clean(text, f"{type(error).__name__}")


def _referral_data() -> dict[str, Any]:
    counter = itertools.count(1)
    desk = ReferralDesk(
        MemoryStore(),
        clock=FakeClock(),
        new_id=lambda: f"id-{next(counter):04d}",
    )
    referral = desk.intake(Actor("c", {Role.COORDINATOR}), canary_request())
    referral = attrs.evolve(
        referral,
        status=Status.ON_HOLD,
        status_reason=STATUS_REASON,
        communications=(
            Communication(
                "m1",
                dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
                Channel.PHONE,
                Direction.INBOUND,
                COUNTERPART,
                summary=SUMMARY,
            ),
        ),
        follow_ups=(FollowUp("f1", FollowUpKind.TEST, dt.date(2026, 2, 1), FOLLOW_UP),),
    )
    return to_dict(referral)


FROM_DICT_CASES: list[tuple[tuple[Any, ...], Any]] = [
    (("patient", "mrn"), MRN * 10),
    (("patient", "given_name"), GIVEN * 20),
    (("patient", "family_name"), ""),
    (("patient", "birth_date"), "CANARY-1901-02-03"),
    (("patient", "birth_date"), "1901-02-30"),
    (("patient", "birth_date"), 19010203),
    (("patient", "contacts"), [{"system": "phone", "value": CONTACT * 20}]),
    (("patient", "contacts"), [{"system": CONTACT, "value": CONTACT}]),
    (("patient", "contacts"), CONTACT),
    (("coverage", "member_id"), MEMBER * 10),
    (("reason",), REASON * 1000),
    (("status_reason",), STATUS_REASON * 200),
    (("attachments", 0, "text"), [ATTACHMENT]),
    (("attachments", 0, "kind"), ATTACHMENT),
    (("communications", 0, "counterpart"), COUNTERPART * 20),
    (("communications", 0, "summary"), {"text": SUMMARY}),
    (("follow_ups", 0, "description"), FOLLOW_UP * 1000),
    (("follow_ups", 0, "due"), "CANARY-due"),
    (("patient", "sex"), "CANARY-sex"),
    (("patient",), MRN),
    (("created_at",), "CANARY-1901-02-03T00:00"),
]


class TestFromDictNeverLeaks:
    @pytest.mark.parametrize(
        ("path", "value"), FROM_DICT_CASES, ids=[".".join(map(str, p)) for p, _ in FROM_DICT_CASES]
    )
    def test_canary_in_bad_input(self, path: tuple[Any, ...], value: Any) -> None:
        """from_dict errors about PHI values carry no canary anywhere in the chain."""
        data = copy.deepcopy(_referral_data())
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(ReferralKitError) as info:
            from_dict(Referral, data)
        for text in texts_of_exception(info.value):
            assert_clean(text, f"from_dict error at {'.'.join(map(str, path))}")

    def test_non_mapping_input(self) -> None:
        """A whole record given as text is refused without echoing it."""
        with pytest.raises(ReferralKitError) as info:
            from_dict(Referral, f"{MRN} {GIVEN} 1901-02-03")
        for text in texts_of_exception(info.value):
            assert_clean(text, "from_dict of a string")
