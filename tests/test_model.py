"""The domain model: validation with a path to the bad field, PHI redaction, behaviour."""

from __future__ import annotations

import datetime as dt
import functools
import typing
import zoneinfo
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referralkit import (
    TABLE,
    Actor,
    Appointment,
    AppointmentStatus,
    Attachment,
    AttachmentKind,
    Authorization,
    AuthStatus,
    Channel,
    Code,
    CodeSystem,
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
    InfoNeeded,
    IntakeRequest,
    NetworkStatus,
    PaNeeded,
    Patient,
    PlanType,
    Priority,
    Provider,
    Referral,
    ReferralEvent,
    Role,
    RuleHit,
    Sex,
    Status,
    SurveyResponse,
    UrgencyAssessment,
    ValidationError,
)
from referralkit.model import RuleTrace, model_types, phi_fields

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
NAIVE = dt.datetime(2026, 1, 5, 9, 0)
PLUS_TWO = dt.datetime(2026, 1, 5, 11, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
LONG = "x" * 10_001


def patient(**changes: Any) -> Patient:
    fields: dict[str, Any] = {
        "id": "p1",
        "mrn": "M1",
        "given_name": "Ann",
        "family_name": "Lee",
        "birth_date": dt.date(1990, 6, 15),
    }
    return Patient(**(fields | changes))


def provider(**changes: Any) -> Provider:
    fields: dict[str, Any] = {
        "id": "prov-1",
        "name": "Harbor Cardiology",
        "specialty": "cardiology",
    }
    return Provider(**(fields | changes))


def referral(**changes: Any) -> Referral:
    fields: dict[str, Any] = {
        "id": "r1",
        "patient": patient(),
        "referring": provider(id="pcp", specialty="family-medicine"),
        "specialty": "cardiology",
        "created_at": T0,
        "updated_at": T0,
    }
    return Referral(**(fields | changes))


# One valid construction per type, from keyword arguments, so each bad case changes one field.
VALID: dict[type, Callable[[], dict[str, Any]]] = {
    Code: lambda: {"system": CodeSystem.CPT, "code": "99204"},
    ContactPoint: lambda: {"system": ContactSystem.PHONE, "value": "+1-555-0100"},
    Patient: lambda: {
        "id": "p1",
        "mrn": "M1",
        "given_name": "Ann",
        "family_name": "Lee",
        "birth_date": dt.date(1990, 6, 15),
    },
    Coverage: lambda: {"id": "c1", "payer": "Acme", "plan": "Gold", "plan_type": PlanType.PPO},
    Provider: lambda: {"id": "prov-1", "name": "Harbor", "specialty": "cardiology"},
    Appointment: lambda: {"id": "a1", "start": T0, "provider_id": "prov-1"},
    Authorization: dict,
    Attachment: lambda: {"id": "d1", "kind": AttachmentKind.LAB, "added_at": T0},
    Communication: lambda: {
        "id": "c1",
        "at": T0,
        "channel": Channel.PHONE,
        "direction": Direction.OUTBOUND,
        "counterpart": "patient",
    },
    FollowUp: lambda: {"id": "f1", "kind": FollowUpKind.CALL, "due": dt.date(2026, 2, 1)},
    SurveyResponse: lambda: {"id": "s1", "at": T0, "score": 4},
    RuleHit: lambda: {"ruleset": "basic", "version": "1", "rule_id": "covered"},
    RuleTrace: lambda: {"ruleset": "basic", "version": "1", "rule_id": "covered", "matched": True},
    CoverageDecision: lambda: {"covered": Covered.COVERED, "pa_needed": PaNeeded.NO_AUTH},
    UrgencyAssessment: lambda: {"priority": Priority.URGENT, "score": 100.0},
    ReferralEvent: lambda: {
        "referral_id": "r1",
        "version": 1,
        "index": 0,
        "at": T0,
        "actor": "coord-1",
        "type": "created",
    },
    Referral: lambda: {
        "id": "r1",
        "patient": patient(),
        "referring": provider(),
        "specialty": "cardiology",
        "created_at": T0,
        "updated_at": T0,
    },
    IntakeRequest: lambda: {
        "source_id": "REQ-1",
        "patient": patient(),
        "referring": provider(),
        "specialty": "cardiology",
    },
    Actor: lambda: {"id": "u1", "roles": {Role.COORDINATOR}},
}

# (type, field, bad value, expected error path)
BAD: list[tuple[type, str, Any, str]] = [
    # blank, wrong type, too long, pattern
    (Code, "system", "", "system"),
    (Code, "system", "  ", "system"),
    (Code, "code", "a b", "code"),
    (Code, "code", 99204, "code"),
    (Code, "code", "9" * 101, "code"),
    (Code, "display", "", "display"),
    (ContactPoint, "system", "phone", "system"),
    (ContactPoint, "value", "", "value"),
    (Patient, "id", "", "id"),
    (Patient, "mrn", None, "mrn"),
    (Patient, "given_name", "   ", "given_name"),
    (Patient, "family_name", 7, "family_name"),
    (Patient, "birth_date", "1990-06-15", "birth_date"),
    (Patient, "birth_date", dt.datetime(1990, 6, 15, tzinfo=dt.UTC), "birth_date"),
    (Patient, "sex", "female", "sex"),
    (Patient, "preferred_language", "EN", "preferred_language"),
    (Patient, "preferred_language", "english", "preferred_language"),
    (Patient, "interpreter_needed", 1, "interpreter_needed"),
    (Patient, "pregnant", "no", "pregnant"),
    (Patient, "contacts", [ContactPoint(ContactSystem.SMS, "x")], "contacts"),
    (Patient, "contacts", (ContactPoint(ContactSystem.SMS, "x"), "555"), "contacts[1]"),
    (Coverage, "payer", "", "payer"),
    (Coverage, "plan_type", "HMO", "plan_type"),
    (Coverage, "member_id", "", "member_id"),
    (Coverage, "period_start", T0, "period_start"),
    (Coverage, "networks", ("net-a", " "), "networks[1]"),
    (Coverage, "networks", "net-a", "networks"),
    (Provider, "specialty", "Cardiology", "specialty"),
    (Provider, "npi", "12345", "npi"),
    (Provider, "taxonomy", "207RC0000X", "taxonomy"),
    (Provider, "languages", ("en", 3), "languages[1]"),
    (Provider, "accepting_new_patients", None, "accepting_new_patients"),
    (Appointment, "start", NAIVE, "start"),
    (Appointment, "start", dt.date(2026, 1, 5), "start"),
    (Appointment, "status", "booked", "status"),
    (Appointment, "minutes", -1, "minutes"),
    (Appointment, "minutes", True, "minutes"),
    (Appointment, "minutes", 30.0, "minutes"),
    (Appointment, "booked_at", NAIVE, "booked_at"),
    (Authorization, "status", "approved", "status"),
    (Authorization, "units", -2, "units"),
    (Authorization, "service_codes", ("70551", ""), "service_codes[1]"),
    (Authorization, "valid_from", "2026-01-01", "valid_from"),
    (Authorization, "expedited", "yes", "expedited"),
    (Authorization, "requested_at", NAIVE, "requested_at"),
    (Authorization, "decision_due_by", PLUS_TWO, None),  # valid: converted to UTC
    (Attachment, "kind", "lab", "kind"),
    (Attachment, "added_at", NAIVE, "added_at"),
    (Attachment, "title", "x" * 201, "title"),
    (Attachment, "text", "", "text"),
    (Communication, "channel", "phone", "channel"),
    (Communication, "direction", None, "direction"),
    (Communication, "counterpart", "", "counterpart"),
    (Communication, "summary", " ", "summary"),
    (Communication, "interpreter_used", None, "interpreter_used"),
    (Communication, "language", "Spanish", "language"),
    (FollowUp, "due", T0, "due"),
    (FollowUp, "kind", "call", "kind"),
    (FollowUp, "done_at", NAIVE, "done_at"),
    (RuleHit, "rule_id", "", "rule_id"),
    (RuleTrace, "matched", "yes", "matched"),
    (RuleTrace, "failed", "", "failed"),
    (CoverageDecision, "covered", "covered", "covered"),
    (CoverageDecision, "pa_needed", "no-auth", "pa_needed"),
    (CoverageDecision, "info_needed", ("performer",), "info_needed[0]"),
    (CoverageDecision, "explanation", None, "explanation"),
    (CoverageDecision, "hits", ("basic",), "hits[0]"),
    (UrgencyAssessment, "priority", "urgent", "priority"),
    (UrgencyAssessment, "score", "100", "score"),
    (UrgencyAssessment, "score", True, "score"),
    (UrgencyAssessment, "score", float("nan"), "score"),
    (UrgencyAssessment, "score", float("-inf"), "score"),
    (UrgencyAssessment, "score", 7, None),  # valid: an int is a number
    (UrgencyAssessment, "due_by", NAIVE, "due_by"),
    (UrgencyAssessment, "reasons", ("",), "reasons[0]"),
    (ReferralEvent, "version", -1, "version"),
    (ReferralEvent, "version", 2**31, "version"),
    (ReferralEvent, "index", 2**31, "index"),
    (ReferralEvent, "payload", {"a": (1, 2)}, "payload.a"),
    (ReferralEvent, "payload", {"a": [{"b": float("inf")}]}, "payload.a[0].b"),
    (ReferralEvent, "payload", {"a": {1: "x"}}, "payload.a"),
    (ReferralEvent, "payload", {"a": T0}, "payload.a"),
    (ReferralEvent, "payload", {"a b": "\x00"}, "payload.<key>"),
    (ReferralEvent, "type", "Status-Changed", "type"),
    (ReferralEvent, "at", NAIVE, "at"),
    (ReferralEvent, "payload", [("a", 1)], "payload"),
    (ReferralEvent, "actor", "", "actor"),
    (Referral, "id", "", "id"),
    (Referral, "patient", {"id": "p1"}, "patient"),
    (Referral, "referring", None, "referring"),
    (Referral, "specialty", "Heart Doctors", "specialty"),
    (Referral, "created_at", NAIVE, "created_at"),
    (Referral, "updated_at", PLUS_TWO, None),  # valid: converted to UTC
    (Referral, "status", "draft", "status"),
    (Referral, "version", -1, "version"),
    (Referral, "version", 2**31, "version"),
    (Referral, "coverage", "acme", "coverage"),
    (Referral, "target", patient(), "target"),
    (Referral, "reason", "", "reason"),
    (Referral, "diagnoses", (Code.icd10("R07.9"), "R07.9"), "diagnoses[1]"),
    (Referral, "services", [Code.cpt("99204")], "services"),
    (Referral, "priority", "stat", "priority"),
    (Referral, "held_from", "received", "held_from"),
    (Referral, "status_reason", "x" * 2001, "status_reason"),
    (Referral, "coverage_decision", {}, "coverage_decision"),
    (Referral, "urgency", Priority.STAT, "urgency"),
    (Referral, "self_pay_acknowledged", 0, "self_pay_acknowledged"),
    (Referral, "authorization", None, "authorization"),
    (Referral, "appointments", ("a1",), "appointments[0]"),
    (Referral, "attachments", (None,), "attachments[0]"),
    (Referral, "communications", ({},), "communications[0]"),
    (Referral, "follow_ups", ("call",), "follow_ups[0]"),
    (Referral, "reason", LONG, "reason"),
    (Referral, "surveys", ({"score": 5},), "surveys[0]"),
    (SurveyResponse, "score", 0, "score"),
    (SurveyResponse, "score", 6, "score"),
    (SurveyResponse, "score", True, "score"),
    (SurveyResponse, "score", 4.5, "score"),
    (SurveyResponse, "score", "5", "score"),
    (SurveyResponse, "comment", " ", "comment"),
    (SurveyResponse, "at", dt.datetime(2026, 1, 5), "at"),
    (IntakeRequest, "source_id", "", "source_id"),
    (IntakeRequest, "patient", None, "patient"),
    (IntakeRequest, "reason", " ", "reason"),
    (IntakeRequest, "coverage", Coverage.self_pay(), None),  # valid: sanity of the table
    (Actor, "id", "", "id"),
    (Actor, "roles", "coordinator", "roles"),
    (Actor, "roles", {"coordinator"}, "roles"),
    (Actor, "roles", 5, "roles"),
    (Actor, "roles", None, "roles"),
]


class TestValidators:
    @pytest.mark.parametrize("cls", list(VALID), ids=lambda c: c.__name__)
    def test_valid_baseline(self, cls: type) -> None:
        """Each type builds from its baseline arguments (so each bad case tests one field)."""
        assert isinstance(cls(**VALID[cls]()), cls)

    @pytest.mark.parametrize(
        ("cls", "field", "value", "path"),
        BAD,
        ids=[f"{c.__name__}.{f}-{i}" for i, (c, f, _, _) in enumerate(BAD)],
    )
    def test_bad_value_names_the_field(self, cls: type, field: str, value: Any, path: str) -> None:
        """A bad value raises ValidationError whose path names the field (or item)."""
        kwargs = VALID[cls]() | {field: value}
        if path is None:
            cls(**kwargs)
            return
        with pytest.raises(ValidationError) as info:
            cls(**kwargs)
        assert info.value.path == path
        assert str(info.value).startswith(f"{path}: ")
        assert isinstance(info.value, ValueError)

    def test_every_model_type_has_a_baseline(self) -> None:
        """The table above covers every attrs type of the model."""
        assert set(model_types()) <= set(VALID)

    def test_validators_run_on_evolve(self) -> None:
        """attrs.evolve re-validates: a frozen value cannot be made invalid."""
        with pytest.raises(ValidationError, match=r"^mrn: "):
            attrs.evolve(patient(), mrn="")

    def test_values_are_frozen(self) -> None:
        """Model values are immutable."""
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            patient().mrn = "other"  # type: ignore[misc]

    def test_non_phi_value_is_shown_but_truncated(self) -> None:
        """A rejected non-PHI value is repeated, cut to a readable length."""
        with pytest.raises(ValidationError) as info:
            provider(npi="1" * 100)
        assert "'1111" in info.value.reason
        assert info.value.reason.endswith("...")
        assert len(info.value.reason) < 140

    def test_error_at_prefixes_the_path(self) -> None:
        """ValidationError.at nests a path under a parent field or item."""
        error = ValidationError("code", "bad")
        assert error.at("diagnoses[1]").path == "diagnoses[1].code"
        assert ValidationError("[2]", "bad").at("contacts").path == "contacts[2]"
        assert ValidationError("", "bad").at("patient").path == "patient"
        assert str(ValidationError("", "just a reason")) == "just a reason"


class TestPeriods:
    def test_coverage_period_must_not_end_before_it_starts(self) -> None:
        """Coverage.period_end before period_start is refused, naming period_end."""
        with pytest.raises(ValidationError) as info:
            Coverage(
                "c1",
                "Acme",
                "Gold",
                PlanType.PPO,
                period_start=dt.date(2026, 2, 1),
                period_end=dt.date(2026, 1, 31),
            )
        assert info.value.path == "period_end"

    def test_authorization_validity_must_not_end_before_it_starts(self) -> None:
        """Authorization.valid_to before valid_from is refused, naming valid_to."""
        with pytest.raises(ValidationError) as info:
            Authorization(valid_from=dt.date(2026, 3, 1), valid_to=dt.date(2026, 2, 1))
        assert info.value.path == "valid_to"

    def test_one_day_and_open_periods_are_fine(self) -> None:
        """A period of one day and half-open periods are valid."""
        day = dt.date(2026, 3, 1)
        Coverage("c1", "Acme", "Gold", PlanType.PPO, period_start=day, period_end=day)
        Authorization(valid_from=day)
        Authorization(valid_to=day)


class TestCoverageDecisionConsistency:
    @pytest.mark.parametrize(
        "covered", [Covered.COVERED, Covered.CONDITIONAL, Covered.INDETERMINATE]
    )
    def test_pa_needed_is_required_unless_not_covered(self, covered: Covered) -> None:
        """CRD: pa_needed is required when the answer is anything but not-covered."""
        with pytest.raises(ValidationError) as info:
            CoverageDecision(covered)
        assert info.value.path == "pa_needed"

    def test_not_covered_needs_no_pa_answer(self) -> None:
        """CRD: a not-covered decision may omit pa_needed."""
        assert CoverageDecision(Covered.NOT_COVERED).pa_needed is None

    def test_info_needed_without_a_conditional_is_refused(self) -> None:
        """CRD: info_needed only goes with some conditional answer."""
        with pytest.raises(ValidationError) as info:
            CoverageDecision(Covered.COVERED, PaNeeded.NO_AUTH, info_needed=(InfoNeeded.PERFORMER,))
        assert info.value.path == "info_needed"
        with pytest.raises(ValidationError):
            CoverageDecision(Covered.NOT_COVERED, info_needed=(InfoNeeded.LOCATION,))

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"covered": Covered.CONDITIONAL, "pa_needed": PaNeeded.NO_AUTH},
            {"covered": Covered.COVERED, "pa_needed": PaNeeded.CONDITIONAL},
            {
                "covered": Covered.COVERED,
                "pa_needed": PaNeeded.AUTH_NEEDED,
                "doc_needed": DocNeeded.CONDITIONAL,
            },
        ],
    )
    def test_info_needed_with_a_conditional_is_fine(self, kwargs: dict[str, Any]) -> None:
        """A conditional covered, pa_needed or doc_needed allows info_needed."""
        decision = CoverageDecision(**kwargs, info_needed=(InfoNeeded.TIMEFRAME,))
        assert decision.info_needed == (InfoNeeded.TIMEFRAME,)

    @pytest.mark.parametrize(
        ("pa", "needs"),
        [
            (PaNeeded.AUTH_NEEDED, True),
            (PaNeeded.PERFORMPA, True),
            (PaNeeded.NO_AUTH, False),
            (PaNeeded.SATISFIED, False),
            (PaNeeded.CONDITIONAL, False),
            (PaNeeded.INDETERMINATE, False),
        ],
    )
    def test_needs_authorization(self, pa: PaNeeded, needs: bool) -> None:
        """auth-needed and performpa mean a prior authorization must be obtained."""
        assert CoverageDecision(Covered.COVERED, pa).needs_authorization is needs


class TestActor:
    def test_roles_are_a_frozenset_of_role(self) -> None:
        """Roles given as any collection (or one Role) become a frozenset."""
        assert Actor("u1", [Role.AUDITOR, Role.AUDITOR]).roles == frozenset({Role.AUDITOR})
        assert Actor("u1", Role.SCHEDULER).roles == frozenset({Role.SCHEDULER})

    def test_may(self) -> None:
        """may() is true when one of the roles allows the operation."""
        both = Actor("u1", {Role.AUDITOR, Role.SCHEDULER})
        assert both.may("schedule")
        assert both.may("history")
        assert not both.may("accept")
        assert not Actor("u2", set()).may("get")

    def test_bad_role_member_names_roles(self) -> None:
        """A non-Role member is refused with path 'roles'."""
        with pytest.raises(ValidationError) as info:
            Actor("u1", {Role.ADMIN, "root"})
        assert info.value.path == "roles"


PHI_INVENTORY: dict[type, tuple[str, ...]] = {
    Code: ("code", "display"),
    Patient: ("id", "mrn", "given_name", "family_name", "birth_date", "pregnant", "contacts"),
    ContactPoint: ("value",),
    Coverage: ("id", "member_id"),
    Authorization: ("number", "service_codes"),
    Attachment: ("title", "text"),
    Communication: ("counterpart", "summary"),
    FollowUp: ("description",),
    RuleHit: ("rule_id",),
    RuleTrace: ("rule_id", "failed"),
    CoverageDecision: ("reason", "explanation", "alternatives", "alternative_services"),
    UrgencyAssessment: ("reasons",),
    SurveyResponse: ("comment",),
    ReferralEvent: ("payload",),
    Referral: ("reason", "diagnoses", "services", "status_reason"),
    IntakeRequest: ("reason", "diagnoses", "services"),
}


class TestPhi:
    @pytest.mark.parametrize("cls", [*model_types(), IntakeRequest], ids=lambda c: c.__name__)
    def test_phi_fields_inventory(self, cls: type) -> None:
        """phi_fields lists exactly the fields declared as PHI, per type."""
        assert phi_fields(cls) == PHI_INVENTORY.get(cls, ())

    def test_repr_and_str_redact_phi(self) -> None:
        """repr/str show PHI fields as <redacted>, never their values."""
        secret = "SECRET-7f3a"
        values = [
            patient(
                id=secret,
                mrn=secret,
                given_name=secret,
                family_name=secret,
                birth_date=dt.date(1901, 2, 3),
                contacts=(ContactPoint(ContactSystem.EMAIL, secret),),
            ),
            Code.icd10(secret, secret),
            ContactPoint(ContactSystem.EMAIL, secret),
            Coverage(secret, "Acme", "Gold", PlanType.HMO, member_id=secret),
            Authorization(number=secret, service_codes=(secret,)),
            Attachment("d1", AttachmentKind.LAB, T0, title=secret, text=secret),
            Communication("m1", T0, Channel.FAX, Direction.INBOUND, secret, summary=secret),
            FollowUp("f1", FollowUpKind.TEST, dt.date(2026, 2, 1), description=secret),
            RuleHit("basic", "1", secret),
            RuleTrace("basic", "1", secret, False, failed=secret),
            CoverageDecision(
                Covered.NOT_COVERED, reason=secret, explanation=secret, alternatives=(secret,)
            ),
            UrgencyAssessment(Priority.URGENT, 1.0, reasons=(secret,)),
            ReferralEvent("r1", 1, 0, T0, "u1", "created", {"mrn": secret}),
            referral(
                reason=secret,
                status_reason=secret,
                diagnoses=(Code.icd10("C50.911"),),
                services=(Code.cpt("77067"),),
            ),
        ]
        for value in values:
            for text in (repr(value), str(value)):
                assert secret not in text
                assert "1901" not in text
                assert "C50.911" not in text
                assert "77067" not in text
                assert "<redacted>" in text
                for name in phi_fields(type(value)):
                    assert f"{name}=<redacted>" in text

    def test_non_phi_fields_stay_readable(self) -> None:
        """Fields not declared PHI appear in repr as usual."""
        text = repr(patient(pregnant=True))
        assert "preferred_language='en'" in text
        assert "pregnant=<redacted>" in text
        assert "sex=<Sex.UNKNOWN: 'unknown'>" in text
        assert "id='prov-42'" in repr(provider(id="prov-42"))
        assert "system='http://hl7.org/fhir/sid/icd-10-cm'" in repr(Code.icd10("C50.911"))

    @pytest.mark.parametrize(
        ("cls", "field", "value"),
        [
            (Patient, "id", "SECRET-7f3a" * 20),
            (Patient, "mrn", "SECRET-7f3a" * 20),
            (Patient, "pregnant", "SECRET-7f3a"),
            (Code, "code", "SECRET-7f3a and more"),
            (Code, "code", "SECRET-7f3a" * 20),
            (Code, "display", ["SECRET-7f3a"]),
            (Coverage, "id", "SECRET-7f3a" * 20),
            (Authorization, "number", "SECRET-7f3a" * 20),
            (Authorization, "service_codes", ("SECRET-7f3a", 5)),
            (Attachment, "title", "SECRET-7f3a" * 30),
            (RuleHit, "rule_id", "SECRET-7f3a" * 30),
            (RuleTrace, "failed", ["SECRET-7f3a"]),
            (CoverageDecision, "explanation", ["SECRET-7f3a"]),
            (CoverageDecision, "alternatives", ("SECRET-7f3a", 1)),
            (UrgencyAssessment, "reasons", ("SECRET-7f3a", None)),
            (Referral, "diagnoses", ("SECRET-7f3a",)),
            (Referral, "services", ["SECRET-7f3a"]),
            (Patient, "given_name", "SECRET-7f3a" * 30),
            (Patient, "birth_date", "SECRET-7f3a"),
            (Patient, "contacts", ("SECRET-7f3a",)),
            (ContactPoint, "value", "SECRET-7f3a" * 30),
            (Coverage, "member_id", "SECRET-7f3a" * 20),
            (Communication, "counterpart", ("SECRET-7f3a",)),
            (Communication, "summary", ["SECRET-7f3a"]),
            (FollowUp, "description", {"SECRET-7f3a"}),
            (Attachment, "text", b"SECRET-7f3a"),
            (Referral, "status_reason", "SECRET-7f3a" * 200),
            (IntakeRequest, "reason", ("SECRET-7f3a",)),
            (ReferralEvent, "payload", [("mrn", "SECRET-7f3a")]),
        ],
    )
    def test_rejected_phi_value_is_not_repeated(self, cls: type, field: str, value: Any) -> None:
        """A rejected PHI value is described as 'a value', never repeated."""
        with pytest.raises(ValidationError) as info:
            cls(**(VALID[cls]() | {field: value}))
        assert "SECRET" not in str(info.value)
        assert "SECRET" not in repr(info.value)
        assert "a value" in info.value.reason


class TestBehaviour:
    @pytest.mark.parametrize(
        ("born", "day", "age"),
        [
            (dt.date(1990, 6, 15), dt.date(2026, 6, 14), 35),
            (dt.date(1990, 6, 15), dt.date(2026, 6, 15), 36),
            (dt.date(1990, 6, 15), dt.date(1990, 6, 15), 0),
            (dt.date(2000, 2, 29), dt.date(2001, 2, 28), 0),
            (dt.date(2000, 2, 29), dt.date(2001, 3, 1), 1),
            (dt.date(2000, 12, 31), dt.date(2001, 1, 1), 0),
        ],
    )
    def test_age_on(self, born: dt.date, day: dt.date, age: int) -> None:
        """Patient.age_on counts whole years, birthdays included."""
        assert patient(birth_date=born).age_on(day) == age

    @pytest.mark.parametrize(
        ("start", "end", "day", "active"),
        [
            (None, None, dt.date(1999, 1, 1), True),
            (dt.date(2026, 1, 1), None, dt.date(2025, 12, 31), False),
            (dt.date(2026, 1, 1), None, dt.date(2026, 1, 1), True),
            (None, dt.date(2026, 12, 31), dt.date(2026, 12, 31), True),
            (None, dt.date(2026, 12, 31), dt.date(2027, 1, 1), False),
            (dt.date(2026, 1, 1), dt.date(2026, 12, 31), dt.date(2026, 6, 1), True),
        ],
    )
    def test_coverage_active_on(
        self, start: dt.date | None, end: dt.date | None, day: dt.date, active: bool
    ) -> None:
        """Coverage.active_on includes both ends; an open end is active."""
        coverage = Coverage("c1", "Acme", "Gold", PlanType.PPO, period_start=start, period_end=end)
        assert coverage.active_on(day) is active

    def test_self_pay_coverage(self) -> None:
        """Coverage.self_pay builds a self-pay coverage."""
        coverage = Coverage.self_pay()
        assert coverage.plan_type is PlanType.SELF_PAY
        assert coverage.id == "self-pay"
        assert Coverage.self_pay("sp-2").id == "sp-2"

    @pytest.mark.parametrize(
        ("status", "covers"),
        [
            (AuthStatus.NOT_REQUIRED, True),
            (AuthStatus.NEEDED, False),
            (AuthStatus.REQUESTED, False),
            (AuthStatus.DENIED, False),
            (AuthStatus.APPROVED, True),
        ],
    )
    def test_authorization_covers_by_status(self, status: AuthStatus, covers: bool) -> None:
        """Only not-required and approved authorizations cover a date."""
        assert Authorization(status=status).covers(dt.date(2026, 3, 1)) is covers

    @pytest.mark.parametrize(
        ("day", "covers"),
        [
            (dt.date(2026, 2, 28), False),
            (dt.date(2026, 3, 1), True),
            (dt.date(2026, 3, 31), True),
            (dt.date(2026, 4, 1), False),
        ],
    )
    def test_approved_authorization_covers_its_validity(self, day: dt.date, covers: bool) -> None:
        """An approved authorization covers the days of its validity, both ends included."""
        auth = Authorization(
            status=AuthStatus.APPROVED,
            valid_from=dt.date(2026, 3, 1),
            valid_to=dt.date(2026, 3, 31),
        )
        assert auth.covers(day) is covers

    @pytest.mark.parametrize(
        ("coverage_networks", "provider_networks", "expected"),
        [
            (("net-a",), ("net-a", "net-b"), NetworkStatus.IN_NETWORK),
            (("net-a",), ("net-b",), NetworkStatus.OUT_OF_NETWORK),
            ((), ("net-b",), NetworkStatus.UNKNOWN),
            (("net-a",), (), NetworkStatus.UNKNOWN),
        ],
    )
    def test_provider_in_network(
        self,
        coverage_networks: tuple[str, ...],
        provider_networks: tuple[str, ...],
        expected: NetworkStatus,
    ) -> None:
        """Provider.in_network compares networks; unknown without networks on either side."""
        coverage = Coverage("c1", "Acme", "Gold", PlanType.HMO, networks=coverage_networks)
        assert provider(networks=provider_networks).in_network(coverage) is expected

    def test_provider_in_network_without_coverage(self) -> None:
        """Without coverage the network status is unknown."""
        assert provider(networks=("net-a",)).in_network(None) is NetworkStatus.UNKNOWN

    def test_priority_rank(self) -> None:
        """Priority ranks routine < urgent < asap < stat, 0 to 3."""
        assert [p.rank for p in Priority] == [0, 1, 2, 3]
        assert Priority.STAT.rank > Priority.ASAP.rank > Priority.URGENT.rank
        assert Priority.URGENT.rank > Priority.ROUTINE.rank

    def test_status_is_terminal(self) -> None:
        """Exactly declined, cancelled, completed, failed and entered-in-error are terminal."""
        terminal = {s for s in Status if s.is_terminal}
        assert terminal == {
            Status.DECLINED,
            Status.CANCELLED,
            Status.COMPLETED,
            Status.FAILED,
            Status.ENTERED_IN_ERROR,
        }
        assert terminal == TABLE.terminal

    @pytest.mark.parametrize(
        ("factory", "system"),
        [
            (Code.icd10, CodeSystem.ICD10CM),
            (Code.cpt, CodeSystem.CPT),
            (Code.hcpcs, CodeSystem.HCPCS),
            (Code.snomed, CodeSystem.SNOMED),
            (Code.nucc, CodeSystem.NUCC),
        ],
    )
    def test_code_factories_use_the_standard_system(
        self, factory: Callable[..., Code], system: str
    ) -> None:
        """Code.icd10/cpt/hcpcs/snomed/nucc set the standard system URI."""
        code = factory("X1", "display")
        assert (code.system, code.code, code.display) == (system, "X1", "display")

    def test_follow_up_done(self) -> None:
        """A follow-up is done once it has done_at."""
        follow_up = FollowUp("f1", FollowUpKind.CALL, dt.date(2026, 2, 1))
        assert not follow_up.done
        assert attrs.evolve(follow_up, done_at=T0).done

    def test_referral_derived_properties(self) -> None:
        """effective_priority and due_by come from the urgency assessment when there is one."""
        plain = referral(priority=Priority.URGENT)
        assert plain.effective_priority is Priority.URGENT
        assert plain.due_by is None
        assert plain.current_appointment is None
        assessed = attrs.evolve(
            plain,
            urgency=UrgencyAssessment(Priority.STAT, 300, due_by=T0),
            appointments=(
                Appointment("a1", T0, "prov-1", status=AppointmentStatus.NOSHOW),
                Appointment("a2", T0, "prov-1"),
            ),
            attachments=(
                Attachment("d1", AttachmentKind.LAB, T0),
                Attachment("d2", AttachmentKind.LAB, T0),
                Attachment("d3", AttachmentKind.IMAGING, T0),
            ),
        )
        assert assessed.effective_priority is Priority.STAT
        assert assessed.due_by == T0
        assert assessed.current_appointment is not None
        assert assessed.current_appointment.id == "a2"
        assert assessed.attachment_kinds() == {AttachmentKind.LAB, AttachmentKind.IMAGING}

    @pytest.mark.parametrize(
        ("status", "due", "overdue"),
        [
            (Status.RECEIVED, T0 - dt.timedelta(seconds=1), True),
            (Status.RECEIVED, T0, False),
            (Status.RECEIVED, None, False),
            (Status.SCHEDULED, T0 - dt.timedelta(days=1), True),
            (Status.SEEN, T0 - dt.timedelta(days=1), False),
            (Status.COMPLETED, T0 - dt.timedelta(days=1), False),
            (Status.CANCELLED, T0 - dt.timedelta(days=1), False),
        ],
    )
    def test_is_overdue(self, status: Status, due: dt.datetime | None, overdue: bool) -> None:
        """Overdue: open, not yet seen, and past the due date."""
        urgency = UrgencyAssessment(Priority.URGENT, 100, due_by=due)
        assert referral(status=status, urgency=urgency).is_overdue(T0) is overdue

    def test_awaiting_consult_note(self) -> None:
        """A seen referral waits for the consult note: the loop is still open."""
        assert referral(status=Status.SEEN).awaiting_consult_note
        assert not referral(status=Status.SCHEDULED).awaiting_consult_note
        assert not referral(status=Status.COMPLETED).awaiting_consult_note

    def test_referral_defaults(self) -> None:
        """A new Referral is a version-0 draft, routine, with no authorization required."""
        fresh = referral()
        assert fresh.status is Status.DRAFT
        assert fresh.version == 0
        assert fresh.priority is Priority.ROUTINE
        assert fresh.authorization == Authorization()
        assert fresh.authorization.status is AuthStatus.NOT_REQUIRED

    def test_sex_default(self) -> None:
        """Administrative sex defaults to unknown."""
        assert patient().sex is Sex.UNKNOWN


# --------------------------------------------------------------------------- what stores keep


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _holds_text(annotation: Any) -> str | None:
    """'text' for a str (or optional str) field, 'items' for a tuple of str, else None."""
    args = typing.get_args(annotation)
    if annotation is str or (args and str in args and type(None) in args and len(args) == 2):
        return "text"
    if typing.get_origin(annotation) is tuple and args and args[0] is str:
        return "items"
    return None


TEXT_FIELDS = [
    (cls, name, kind)
    for cls in VALID
    for name, annotation in _field_types(cls).items()
    if (kind := _holds_text(annotation)) is not None
]
FLOAT_FIELDS = [
    (cls, name)
    for cls in VALID
    for name, annotation in _field_types(cls).items()
    if annotation is float or float in typing.get_args(annotation)
]


class TestOnlyWhatEveryStoreKeeps:
    """The model refuses, with a path, the text and numbers some store could not keep, so
    memory, SQLite and PostgreSQL agree on everything the model accepts."""

    def test_the_field_tables_were_found(self) -> None:
        """Sanity: the walk over the model's annotations found its text and number fields."""
        assert (Referral, "id", "text") in TEXT_FIELDS
        assert (Provider, "networks", "items") in TEXT_FIELDS
        assert (Actor, "id", "text") in TEXT_FIELDS
        assert len(TEXT_FIELDS) > 50
        assert [(UrgencyAssessment, "score")] == FLOAT_FIELDS

    @pytest.mark.parametrize(
        ("bad", "reason"),
        [("a\x00b", "NUL"), ("\x00", "NUL"), ("a\ud800b", "surrogate"), ("\udfff", "surrogate")],
        ids=["nul", "only-nul", "high-surrogate", "low-surrogate"],
    )
    @pytest.mark.parametrize(
        ("cls", "name", "kind"), TEXT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n, _ in TEXT_FIELDS]
    )
    def test_every_text_field_refuses_unstorable_text(
        self, cls: type, name: str, kind: str, bad: str, reason: str
    ) -> None:
        """Every str field (ids included), and every str in a tuple, refuses a NUL character
        and a lone surrogate with a ValidationError naming the field (or item)."""
        value: Any = bad if kind == "text" else ("ok", bad)
        with pytest.raises(ValidationError) as info:
            cls(**(VALID[cls]() | {name: value}))
        assert info.value.path == (name if kind == "text" else f"{name}[1]")
        assert reason in info.value.reason
        assert bad not in str(info.value)

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
    @pytest.mark.parametrize(("cls", "name"), FLOAT_FIELDS)
    def test_every_float_field_refuses_nan_and_infinity(
        self, cls: type, name: str, value: float
    ) -> None:
        """NaN and infinity are not JSON: refused with the field's path."""
        with pytest.raises(ValidationError) as info:
            cls(**(VALID[cls]() | {name: value}))
        assert info.value.path == name
        assert "finite" in info.value.reason

    def test_other_control_characters_and_any_script_are_kept(self) -> None:
        """Tabs, newlines, escape codes, emoji and every script are legitimate text."""
        text = "Line 1\r\n\tLine 2 \x1b[0m \x7f é 中文 عربى 😀 \ufeff\uffff"
        assert patient(given_name=text).given_name == text
        assert Code.icd10("R07.9", text).display == text

    @pytest.mark.parametrize(
        ("payload", "path"),
        [
            ({"note": "a\x00"}, "payload.note"),
            ({"a": ["ok", "\ud83d"]}, "payload.a[1]"),
            ({"\ud83d": 1}, "payload"),
            ({"a": {"b": float("nan")}}, "payload.a.b"),
            ({"a": {"x", "y"}}, "payload.a"),
            ({"a": b"bytes"}, "payload.a"),
            (
                # deeper than JSON encoders go (json.dumps raises RecursionError)
                functools.reduce(lambda inner, _: {"n": inner}, range(5000), {}),
                "payload" + ".n" * 64,
            ),
        ],
        ids=["nul", "surrogate-in-list", "surrogate-key", "nan", "set", "bytes", "too-deep"],
    )
    def test_payload_is_json_every_store_reads_back_equal(
        self, payload: dict[str, Any], path: str
    ) -> None:
        """An event payload holds only JSON values every store reads back equal."""
        with pytest.raises(ValidationError) as info:
            ReferralEvent("r1", 1, 0, T0, "u1", "created", payload)
        assert info.value.path == path

    def test_payload_accepts_json(self) -> None:
        """Nested objects, lists, numbers, booleans, null and any storable text are fine."""
        payload = {"a": [1, 2.5, -0.0, True, None, {"b": "é\t😀"}], "c": {}, "d": 10**30}
        assert ReferralEvent("r1", 1, 0, T0, "u1", "created", payload).payload == payload

    def test_versions_fit_the_stores_integer_columns(self) -> None:
        """A version or index above 2**31 - 1 (PostgreSQL integer) is refused."""
        assert referral(version=2**31 - 1).version == 2**31 - 1
        with pytest.raises(ValidationError, match=r"^version: "):
            referral(version=2**31)


class TestValuesShownInErrors:
    @pytest.mark.parametrize(
        ("cls", "field", "value", "shown"),
        [
            (Referral, "patient", "MRN-SHOWN", "got str"),
            (Referral, "coverage", {"member_id": "MRN-SHOWN"}, "got dict"),
            (Referral, "appointments", ("MRN-SHOWN",), "got str"),
            (Provider, "networks", ["MRN-SHOWN"], "got list"),
            (Provider, "languages", ("en", ("MRN-SHOWN",)), "got tuple"),
        ],
    )
    def test_only_the_type_of_a_composite_or_misplaced_value(
        self, cls: type, field: str, value: Any, shown: str
    ) -> None:
        """A dict, list or model object can hold anything, and text given where a model object
        belongs can be anything: the error names the type, never the value."""
        with pytest.raises(ValidationError) as info:
            cls(**(VALID[cls]() | {field: value}))
        assert "MRN-SHOWN" not in str(info.value)
        assert info.value.reason.endswith(shown)


# --------------------------------------------------------------------------- time zones

ZONES = st.sampled_from(
    [
        dt.UTC,
        dt.timezone(dt.timedelta(hours=-5)),
        dt.timezone(dt.timedelta(hours=5, minutes=45)),
        dt.timezone(dt.timedelta(hours=14)),
        dt.timezone(dt.timedelta(hours=-12)),
        zoneinfo.ZoneInfo("America/New_York"),
        zoneinfo.ZoneInfo("Australia/Lord_Howe"),
        zoneinfo.ZoneInfo("UTC"),
    ]
)
INSTANTS = st.datetimes(
    min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(2090, 1, 1), timezones=st.just(dt.UTC)
)

DATETIME_FIELDS = [
    (cls, name)
    for cls in VALID
    for name, annotation in _field_types(cls).items()
    if annotation is dt.datetime or dt.datetime in typing.get_args(annotation)
]


class TestTimeZones:
    def test_the_datetime_fields_were_found(self) -> None:
        """Sanity: every datetime field of the model is in the table."""
        assert (Referral, "created_at") in DATETIME_FIELDS
        assert (Appointment, "start") in DATETIME_FIELDS
        assert len(DATETIME_FIELDS) == 15

    @pytest.mark.parametrize(
        ("cls", "name"), DATETIME_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in DATETIME_FIELDS]
    )
    @settings(max_examples=10)
    @given(instant=INSTANTS, zone=ZONES)
    def test_any_zone_is_the_same_instant_in_utc(
        self, cls: type, name: str, instant: dt.datetime, zone: dt.tzinfo
    ) -> None:
        """The same instant written in any zone gives an equal object, stored in UTC."""
        base = VALID[cls]()
        in_utc = cls(**(base | {name: instant}))
        elsewhere = cls(**(base | {name: instant.astimezone(zone)}))
        assert elsewhere == in_utc
        assert repr(elsewhere) == repr(in_utc)
        assert getattr(elsewhere, name).tzinfo is dt.UTC

    @pytest.mark.parametrize(
        ("cls", "name"), DATETIME_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in DATETIME_FIELDS]
    )
    def test_naive_is_refused_with_the_field(self, cls: type, name: str) -> None:
        """A naive datetime has no instant: ValidationError naming the field."""
        with pytest.raises(ValidationError) as info:
            cls(**(VALID[cls]() | {name: NAIVE}))
        assert info.value.path == name
        assert "naive" in info.value.reason

    def test_a_zone_without_an_offset_is_naive(self) -> None:
        """A tzinfo whose utcoffset() is None makes a naive datetime (Python's definition)."""

        class NoOffset(dt.tzinfo):
            def utcoffset(self, when: dt.datetime | None) -> None:
                return None

        with pytest.raises(ValidationError, match="naive"):
            referral(created_at=dt.datetime(2026, 1, 5, tzinfo=NoOffset()))

    def test_out_of_range_in_utc(self) -> None:
        """An aware time that has no UTC equivalent (year 1, east of UTC) is refused."""
        early = dt.datetime(1, 1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))
        with pytest.raises(ValidationError, match="out of range"):
            referral(created_at=early)

    @settings(max_examples=25)
    @given(instant=INSTANTS, zone=ZONES)
    def test_is_overdue_in_any_zone(self, instant: dt.datetime, zone: dt.tzinfo) -> None:
        """is_overdue gives the same answer for the same instant in any zone."""
        urgency = UrgencyAssessment(Priority.URGENT, 100, due_by=T0)
        item = referral(status=Status.RECEIVED, urgency=urgency)
        assert item.is_overdue(instant.astimezone(zone)) is item.is_overdue(instant)
        with pytest.raises(ValidationError, match=r"^now: "):
            item.is_overdue(NAIVE)
