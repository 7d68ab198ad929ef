"""PHI never leaks, by construction.

The PHI declaration is checked against the model itself: every text-holding field of every
model class (found by reading the classes, not listed by hand) is either declared PHI or on a
short, reviewed allow-list of non-PHI fields, with the reason. A new text field fails
:class:`TestClassification` until someone decides which it is.

Then canaries are planted in every PHI field (found the same way) and searched for in every
repr, str, log record, exception message and exception attribute (chained causes, contexts
and group members included), whatever the desk is asked to do, successfully or not.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import logging
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given, settings

# the canary walk (PHI fields found from the model's declaration), shared with the
# traceback tests: tests/phi_canaries.py
from phi_canaries import PLANTED_NEEDLES, canary, field_types, objects, plant, type_parts
from referralkit import (
    Actor,
    Appointment,
    Attachment,
    AttachmentKind,
    Authorization,
    Channel,
    Checklist,
    Code,
    Communication,
    ContactPoint,
    ContactSystem,
    Coverage,
    CoverageDecision,
    Covered,
    Direction,
    DocNeeded,
    FollowUp,
    FollowUpKind,
    IntakeRequest,
    MemoryStore,
    PaNeeded,
    Patient,
    PlanType,
    Priority,
    Provider,
    Query,
    Referral,
    ReferralDesk,
    ReferralEvent,
    ReferralKitError,
    Role,
    RuleHit,
    Status,
    UrgencyAssessment,
    from_dict,
    to_dict,
)
from referralkit.access import AccessOutcome, AccessRecord
from referralkit.model import RuleTrace, SurveyResponse, model_types, phi_fields
from referralkit.privacy import BreakGlass
from referralkit.testing import FakeClock, referrals

PATIENT_ID = "CANARY-PATIENT-ID-7f3a"
MRN = "CANARY-MRN-7f3a"
GIVEN = "CANARY-GIVEN-7f3a"
FAMILY = "CANARY-FAMILY-7f3a"
BIRTH = dt.date(1901, 2, 3)
CONTACT = "CANARY-CONTACT-7f3a"
COVERAGE_ID = "CANARY-COVERAGE-ID-7f3a"
MEMBER = "CANARY-MEMBER-7f3a"
REASON = "CANARY-REASON-7f3a"
DIAGNOSIS = "CANARY-DX-7f3a"
DIAGNOSIS_TEXT = "CANARY-DX-TEXT-7f3a"
SERVICE_TEXT = "CANARY-SERVICE-TEXT-7f3a"
STATUS_REASON = "CANARY-STATUS-7f3a"
TITLE = "CANARY-TITLE-7f3a"
ATTACHMENT = "CANARY-ATTACH-7f3a"
COUNTERPART = "CANARY-COUNTERPART-7f3a"
SUMMARY = "CANARY-SUMMARY-7f3a"
FOLLOW_UP = "CANARY-FOLLOWUP-7f3a"
NOTE = "CANARY-NOTE-7f3a"
SURVEY = "CANARY-SURVEY-7f3a"
AUTH_NUMBER = "CANARY-AUTH-7f3a"
AUTH_CODE = "CANARY-AUTH-CODE-7f3a"
DECISION_TEXT = "CANARY-DECISION-7f3a"
RULE = "CANARY-RULE-7f3a"

# What is searched for: every canary string shares the prefix; the birth date shows as
# 1901-02-03 in ISO form and as "1901" in a date's repr; pregnancy shows as a flag set.
NEEDLES = (
    "CANARY",
    "1901-02-03",
    "1901",
    "pregnant=True",
    "'pregnant': True",
    '"pregnant": true',
    '"pregnant":true',
)


# --------------------------------------------------------------------------- classification

# Every class whose values a referral is made of, or that carries them (a query, an actor);
# the classes their fields hold are found from there.
ROOTS: tuple[type, ...] = (
    *model_types(),
    IntakeRequest,
    Checklist,
    Actor,
    Query,
    AccessRecord,
)


def _holds_text(annotation: Any) -> bool:
    """A str, an optional str, a tuple of str, a mapping with str keys, or Any (a payload)."""
    origin = typing.get_origin(annotation)
    if annotation is str or annotation is Any:
        return True
    if origin in (Mapping, dict, typing.get_origin(Mapping[str, Any])):
        return True
    return any(part is str or part is Any for part in type_parts(annotation))


def model_classes() -> list[type]:
    """ROOTS and every attrs class reachable through their fields' annotations."""
    found: list[type] = []
    todo = list(ROOTS)
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        for annotation in field_types(cls).values():
            todo.extend(p for p in type_parts(annotation) if isinstance(p, type) and attrs.has(p))
    return sorted(found, key=lambda c: c.__name__)


def text_fields() -> set[tuple[type, str]]:
    """Every (class, field) holding text: str, str in tuples, mapping keys, payloads."""
    return {
        (cls, name)
        for cls in model_classes()
        for name, annotation in field_types(cls).items()
        if _holds_text(annotation)
    }


def declared_phi() -> set[tuple[type, str]]:
    return {(cls, name) for cls in model_classes() for name in phi_fields(cls)}


NOT_PHI: dict[tuple[type, str], str] = {}
"""The reviewed allow-list: text fields that are not PHI, and why. Keep it short: when in
doubt, a field is PHI (declare it with ``attrs.field(..., **_validators.PHI_FIELD)``)."""


def _allow(reason: str, *fields: tuple[type, str]) -> None:
    for field in fields:
        NOT_PHI[field] = reason


_allow(
    "an opaque key the library or the source system gives a record that is not the patient "
    "(errors name it to say which record)",
    (Referral, "id"),
    (ReferralEvent, "referral_id"),
    (Appointment, "id"),
    (Attachment, "id"),
    (Communication, "id"),
    (FollowUp, "id"),
    (SurveyResponse, "id"),
)
_allow(
    "the referrer's identifier of the request (an order number, not the patient's): "
    "intake is idempotent by it and a duplicate is reported by it",
    (Referral, "source_id"),
    (IntakeRequest, "source_id"),
)
_allow(
    "a staff member's id (coordinator, actor), not the patient's",
    (Referral, "owner"),
    (ReferralEvent, "actor"),
    (Actor, "id"),
    (Query, "owner"),
)
_allow(
    "a value from a fixed vocabulary, checked by a pattern (enum-like): a specialty name, "
    "an event type, a MIME type, a query order, a language tag",
    (Referral, "specialty"),
    (IntakeRequest, "specialty"),
    (Query, "specialty"),
    (Checklist, "by_specialty"),
    (ReferralEvent, "type"),
    (Attachment, "content_type"),
    (Query, "order"),
    (Patient, "preferred_language"),
    (Communication, "language"),
)
_allow("the URI of a code system (the code and its text are PHI)", (Code, "system"))
_allow(
    "who the actor works for and why it reads (issue 13: scopes, the access log): an "
    "organisation, provider or care-team ids, a purpose of use, a break-glass grant's id",
    (Actor, "organization"),
    (Actor, "providers"),
    (Actor, "purpose"),
    (BreakGlass, "grant_id"),
    (AccessRecord, "actor"),
    (AccessRecord, "action"),
    (AccessRecord, "referral_ids"),
    (AccessRecord, "roles"),
    (AccessRecord, "organization"),
    (AccessRecord, "purpose"),
    (AccessRecord, "grant"),
    (AccessRecord, "chain"),
)
_allow(
    "the insurer and its product, the same for every member (the member id and the coverage "
    "id are PHI; a FHIR payor that is the patient or a relative is read as self-pay)",
    (Coverage, "payer"),
    (Coverage, "plan"),
    (Coverage, "group"),
    (Coverage, "networks"),
)
_allow(
    "directory data about the clinician or the clinic (public in NPPES), not the patient",
    (Provider, "id"),
    (Provider, "name"),
    (Provider, "specialty"),
    (Provider, "npi"),
    (Provider, "organization"),
    (Provider, "networks"),
    (Provider, "languages"),
    (Provider, "location"),
    (Appointment, "provider_id"),
    (Appointment, "location"),
)
_allow(
    "which policy decided, by name and version hash, the same for every referral it decides "
    "(the rule ids and texts, which tell what the patient matched, are PHI)",
    (RuleHit, "ruleset"),
    (RuleHit, "version"),
    (RuleTrace, "ruleset"),
    (RuleTrace, "version"),
)


class TestClassification:
    def test_the_walk_finds_the_model(self) -> None:
        """Sanity: the walk reaches nested classes and finds text inside tuples, optionals,
        mappings and payloads."""
        classes = model_classes()
        assert {Patient, ContactPoint, Code, RuleTrace, Checklist, Query} <= set(classes)
        fields = text_fields()
        for field in [
            (Patient, "mrn"),
            (Coverage, "member_id"),
            (Authorization, "service_codes"),
            (ReferralEvent, "payload"),
            (Checklist, "by_specialty"),
            (CoverageDecision, "alternatives"),
        ]:
            assert field in fields
        assert (Patient, "birth_date") not in fields
        assert (Referral, "status") not in fields

    def test_every_text_field_is_phi_or_allowed(self) -> None:
        """Each text field is declared PHI or on the allow-list: a new field fails here until
        it is classified."""
        unclassified = text_fields() - declared_phi() - set(NOT_PHI)
        names = sorted(f"{c.__name__}.{n}" for c, n in unclassified)
        assert not unclassified, f"classify these text fields (PHI or NOT_PHI): {names}"

    def test_allow_list_is_exact(self) -> None:
        """The allow-list names only existing text fields, none of them declared PHI."""
        assert set(NOT_PHI) <= text_fields()
        assert not set(NOT_PHI) & declared_phi()

    def test_health_information_is_declared(self) -> None:
        """The fields that carry health information about the patient are PHI (not only
        text: pregnancy, birth date)."""
        for field in [
            (Patient, "id"),
            (Patient, "pregnant"),
            (Patient, "birth_date"),
            (Code, "code"),
            (Code, "display"),
            (Referral, "diagnoses"),
            (Referral, "services"),
            (Attachment, "title"),
            (Authorization, "number"),
            (UrgencyAssessment, "reasons"),
            (RuleHit, "rule_id"),
            (Query, "patient_id"),
        ]:
            assert field in declared_phi(), field


# --------------------------------------------------------------------------- planting


class TestPlantedCanaries:
    @settings(max_examples=40)
    @given(referral=referrals())
    def test_repr_and_str_of_every_part_show_no_phi(self, referral: Referral) -> None:
        """With a canary in every PHI field of a generated referral, no repr or str of the
        referral or any part of it shows one; each PHI field shows as <redacted>."""
        planted = plant(referral)
        data = str(to_dict(planted))
        assert "CANARY-Patient-mrn" in data  # really planted
        assert "1899-02-03" in data
        for part in objects(planted):
            for text in (repr(part), str(part)):
                assert_clean(text, f"repr of {type(part).__name__}", PLANTED_NEEDLES)
                for name in phi_fields(type(part)):
                    assert f"{name}=<redacted>" in text

    @pytest.mark.parametrize("cls", [c for c in model_classes() if phi_fields(c)])
    def test_rejected_phi_is_never_repeated(self, cls: type) -> None:
        """For every PHI field of every class: a value too long, or of the wrong type, holding
        a canary is refused without repeating it (message, repr, args, attributes)."""
        base = _baseline(cls)
        hints = field_types(cls)
        for name in phi_fields(cls):
            text = canary(cls, name)
            for bad in (text * 50_000, [text], {text: {text}}, (text, 5)):
                if hints[name] is bool or dt.date in set(type_parts(hints[name])):
                    bad = text  # a flag or a date given as text
                with pytest.raises(ReferralKitError) as info:
                    cls(**(base | {name: bad}))
                for found in texts_of_exception(info.value):
                    assert_clean(found, f"error for {cls.__name__}.{name}")


def _baseline(cls: type) -> dict[str, Any]:
    """Valid constructor arguments for ``cls``, from a planted canary request's parts."""
    request = canary_request()
    referral = request.referral("r-1", dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    samples: dict[type, Any] = {
        type(obj): obj
        for obj in [
            *objects(referral),
            *objects(_decision()),
            *objects(_assessment()),
            ReferralEvent("r-1", 1, 0, dt.datetime(2026, 1, 5, tzinfo=dt.UTC), "u", "created"),
            Communication(
                "m1", dt.datetime(2026, 1, 5, tzinfo=dt.UTC), Channel.FAX, Direction.INBOUND, "x"
            ),
            FollowUp("f1", FollowUpKind.CALL, dt.date(2026, 2, 1)),
            SurveyResponse("s1", dt.datetime(2026, 2, 1, tzinfo=dt.UTC), 4, comment=SURVEY),
            Query(),
            request,
            BreakGlass(
                "g-1",
                "reason",
                dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
                dt.datetime(2026, 1, 6, tzinfo=dt.UTC),
            ),
            AccessRecord(
                at=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
                actor="u",
                action="get",
                outcome=AccessOutcome.ALLOWED,
            ),
        ]
    }
    sample = samples[cls]
    return {f.alias or f.name: getattr(sample, f.name) for f in attrs.fields(cls) if f.init}


# --------------------------------------------------------------------------- the desk


def canary_request(source_id: str = "REQ-C1", *, complete: bool = True) -> IntakeRequest:
    """An intake request with a canary in every PHI field it has."""
    added = dt.datetime(2026, 1, 5, 8, 30, tzinfo=dt.UTC)
    return IntakeRequest(
        source_id=source_id,
        patient=Patient(
            id=PATIENT_ID,
            mrn=MRN,
            given_name=GIVEN,
            family_name=FAMILY,
            birth_date=BIRTH,
            pregnant=True,
            contacts=(ContactPoint(ContactSystem.PHONE, CONTACT),),
        ),
        referring=Provider("prov-pcp", "Riverside", "family-medicine", networks=("net-a",)),
        target=Provider("prov-card", "Harbor", "cardiology", networks=("net-a",)),
        specialty="cardiology",
        reason=REASON,
        diagnoses=(Code.icd10(DIAGNOSIS, DIAGNOSIS_TEXT),),
        services=(Code.cpt("99204", SERVICE_TEXT),),
        priority=Priority.ROUTINE,
        coverage=Coverage(
            COVERAGE_ID,
            "Acme Health",
            "Acme HMO",
            PlanType.HMO,
            member_id=MEMBER,
            period_start=dt.date(2026, 1, 1),
            period_end=dt.date(2026, 12, 31),
            networks=("net-a",),
        ),
        attachments=(
            (
                Attachment(
                    "doc-h", AttachmentKind.MEDICAL_HISTORY, added, title=TITLE, text=ATTACHMENT
                ),
            )
            if complete
            else ()
        ),
    )


def _decision(pa: PaNeeded = PaNeeded.NO_AUTH) -> CoverageDecision:
    return CoverageDecision(
        Covered.COVERED,
        pa_needed=pa,
        doc_needed=DocNeeded.CLINICAL,
        reason=DECISION_TEXT,
        explanation=DECISION_TEXT,
        alternatives=(DECISION_TEXT,),
        hits=(RuleHit("canary-policy", "1", RULE),),
        trace=(RuleTrace("canary-policy", "1", RULE, False, failed=DECISION_TEXT),),
    )


def _assessment() -> UrgencyAssessment:
    return UrgencyAssessment(
        Priority.URGENT,
        200.0,
        due_by=dt.datetime(2026, 1, 8, tzinfo=dt.UTC),
        reasons=(DECISION_TEXT,),
        hits=(RuleHit("canary-policy", "1", RULE),),
        trace=(RuleTrace("canary-policy", "1", RULE, True),),
    )


class CanaryPolicy:
    """Coverage and urgency decisions with a canary in every decision text and rule id;
    MRIs need prior authorization."""

    def decide(self, referral: Referral, at: dt.datetime) -> CoverageDecision:
        needs = any(c.code == "70551" for c in referral.services)
        return _decision(PaNeeded.AUTH_NEEDED if needs else PaNeeded.NO_AUTH)

    def assess(self, referral: Referral, at: dt.datetime) -> UrgencyAssessment:
        return _assessment()


def texts_of_exception(error: BaseException, seen: set[int] | None = None) -> Iterator[str]:
    """Messages, reprs and attributes of an exception, its cause and context chain and group
    members."""
    seen = set() if seen is None else seen
    if id(error) in seen:
        return
    seen.add(id(error))
    yield str(error)
    yield repr(error)
    yield from (repr(arg) for arg in error.args)
    yield from (str(note) for note in getattr(error, "__notes__", ()))
    yield from (f"{key}={value!r}" for key, value in vars(error).items())
    for inner in (error.__cause__, error.__context__):
        if inner is not None:
            yield from texts_of_exception(inner, seen)
    for member in getattr(error, "exceptions", ()) or ():
        yield from texts_of_exception(member, seen)


def assert_clean(text: str, where: str, needles: tuple[str, ...] = NEEDLES) -> None:
    for needle in needles:
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
    policy = CanaryPolicy()
    return ReferralDesk(
        MemoryStore(),
        clock=FakeClock(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)),
        coverage=policy,
        urgency=policy,
        new_id=lambda: f"id-{next(counter):04d}",
    )


class TestTheCanariesAreInTheData:
    def test_stored_data_holds_every_canary(self, canary_desk: ReferralDesk) -> None:
        """Sanity: the planted values are in the stored data, so the scans mean something."""
        actor = Actor("coord-1", {Role.COORDINATOR})
        referral = canary_desk.intake(actor, canary_request())
        data = str(to_dict(referral))
        for value in (
            PATIENT_ID,
            MRN,
            GIVEN,
            "1901-02-03",
            CONTACT,
            COVERAGE_ID,
            MEMBER,
            REASON,
            DIAGNOSIS,
            DIAGNOSIS_TEXT,
            TITLE,
            ATTACHMENT,
            DECISION_TEXT,
            RULE,
            "'pregnant': True",
        ):
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
        run.ok(
            lambda: desk.attach(coordinator, rid, AttachmentKind.LAB, title=TITLE, text=ATTACHMENT)
        )
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
        run.ok(lambda: desk.record_survey(coordinator, rid, 5, comment=SURVEY))
        run.ok(lambda: desk.get(auditor, rid))
        run.ok(lambda: desk.history(auditor, rid))
        run.ok(lambda: desk.missing(auditor, rid))
        run.ok(lambda: desk.worklist(auditor))
        run.ok(lambda: desk.worklist(auditor, patient_id=PATIENT_ID))
        run.ok(lambda: desk.count(auditor, patient_id=PATIENT_ID))

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
        run.ok(
            lambda: desk.record_authorization(
                coordinator, pa_ref.id, approved=True, number=AUTH_NUMBER, service_codes=[AUTH_CODE]
            )
        )
        run.fails(
            lambda: desk.record_authorization(
                coordinator, pa_ref.id, approved=False, number=AUTH_NUMBER, service_codes=AUTH_CODE
            )
        )
        run.ok(lambda: desk.request_authorization(coordinator, pa_ref.id))
        run.fails(
            lambda: desk.record_authorization(
                coordinator, pa_ref.id, approved=True, number=AUTH_NUMBER * 10
            )
        )
        run.fails(
            lambda: desk.record_authorization(
                coordinator, pa_ref.id, approved=True, service_codes=[AUTH_CODE, 7]
            )
        )

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
        run.fails(lambda: desk.attach(coordinator, d, AttachmentKind.LAB, title=TITLE * 20))
        run.fails(lambda: desk.attach(coordinator, d, AttachmentKind.LAB, title=f"{TITLE}\x00"))
        run.fails(lambda: desk.get(auditor, desk.get(auditor, d)))  # a Referral for an id
        run.fails(lambda: desk.count(auditor, mrn=MRN))
        run.fails(lambda: desk.worklist(auditor, patient_id=[PATIENT_ID]))
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
        run.fails(lambda: desk.record_survey(coordinator, d, 6, comment=SURVEY))
        run.fails(lambda: desk.record_survey(coordinator, d, 3, comment=SURVEY * 1000))
        run.fails(lambda: desk.record_survey(scheduler, d, 3, comment=SURVEY))

        # direct construction with bad PHI values
        for build in (
            lambda: Patient("p", MRN * 10, GIVEN, FAMILY, BIRTH),
            lambda: Patient("p", MRN, GIVEN * 20, FAMILY, BIRTH),
            lambda: Patient("p", MRN, GIVEN, FAMILY, "1901-02-03"),
            lambda: Patient("p", MRN, GIVEN, FAMILY, BIRTH, contacts=(CONTACT,)),
            lambda: Patient("p", MRN, GIVEN, FAMILY, BIRTH, contacts=[CONTACT]),
            lambda: Patient(PATIENT_ID * 10, MRN, GIVEN, FAMILY, BIRTH),
            lambda: Patient("p", MRN, GIVEN, FAMILY, BIRTH, pregnant="CANARY-yes"),
            lambda: Code.icd10(f"{DIAGNOSIS} x", DIAGNOSIS_TEXT),
            lambda: Code.icd10(DIAGNOSIS, [DIAGNOSIS_TEXT]),
            lambda: Coverage(COVERAGE_ID * 10, "Acme Health", "HMO", PlanType.HMO),
            lambda: attrs.evolve(canary_request(), diagnoses=(DIAGNOSIS,)),
            lambda: attrs.evolve(canary_request(), patient=MRN),
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
    (("patient", "id"), PATIENT_ID * 10),
    (("patient", "id"), [PATIENT_ID]),
    (("patient", "pregnant"), "CANARY-yes"),
    (("diagnoses", 0, "code"), f"{DIAGNOSIS} {DIAGNOSIS}"),
    (("diagnoses", 0, "display"), [DIAGNOSIS_TEXT]),
    (("diagnoses", 0), DIAGNOSIS),
    (("services", 0, "code"), {"x": SERVICE_TEXT}),
    (("coverage", "id"), COVERAGE_ID * 10),
    (("attachments", 0, "title"), TITLE * 20),
    (("attachments", 0, "title"), f"{TITLE}\ud800"),
    (("reason",), f"{REASON}\x00"),
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
