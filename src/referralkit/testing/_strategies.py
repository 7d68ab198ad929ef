"""Hypothesis strategies for every model type.

Each is a plain function returning a ``SearchStrategy``. :data:`STRATEGIES` maps every attrs
type of :mod:`referralkit.model` to its strategy, so a test can cover them all.
"""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Mapping
from typing import Any, Final

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..intake import IntakeRequest
from ..model import (
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
    NetworkStatus,
    PaNeeded,
    Patient,
    PlanType,
    Priority,
    Provider,
    Referral,
    ReferralEvent,
    RuleHit,
    RuleTrace,
    Sex,
    Status,
    SurveyResponse,
    UrgencyAssessment,
)
from ..privacy import Actor, Role

__all__ = [
    "STRATEGIES",
    "actors",
    "appointments",
    "attachments",
    "authorizations",
    "codes",
    "communications",
    "contact_points",
    "coverage_decisions",
    "coverages",
    "follow_ups",
    "intake_requests",
    "patients",
    "providers",
    "referral_events",
    "referrals",
    "rule_hits",
    "rule_traces",
    "survey_responses",
    "urgency_assessments",
]

SPECIALTIES: Final = (
    "cardiology",
    "dermatology",
    "endocrinology",
    "gastroenterology",
    "neurology",
    "obstetrics",
    "oncology",
    "orthopedics",
    "psychiatry",
    "pulmonology",
    "urology",
)

# every character a store keeps: no NUL, no lone surrogate (what the model accepts as text)
_storable = st.characters(codec="utf-8", exclude_characters="\x00")
_ids = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
# printable text with at least one non-space character; PHI fields draw from it
_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(lambda s: s.strip() != "")
_short = st.text(
    alphabet=string.ascii_letters + string.digits + " -", min_size=1, max_size=20
).filter(lambda s: s.strip() != "")
_utc = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2040, 1, 1), timezones=st.just(dt.UTC)
)
_dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2040, 1, 1))
_languages = st.sampled_from(("en", "es", "zh", "vi", "ko", "ru", "ar", "tl", "fr", "pt-BR"))
_networks = st.lists(st.sampled_from(("net-a", "net-b", "net-c")), max_size=2, unique=True).map(
    tuple
)


def _period(draw: st.DrawFn) -> tuple[dt.date | None, dt.date | None]:
    start = draw(st.none() | _dates)
    end = draw(st.none() | _dates)
    if start is not None and end is not None and end < start:
        start, end = end, start
    return start, end


def codes(system: str | None = None) -> st.SearchStrategy[Code]:
    """Codes in ``system``, or in any system :class:`~referralkit.model.CodeSystem` names."""
    patterns = {
        CodeSystem.ICD10CM: r"[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?",
        CodeSystem.CPT: r"[0-9]{5}",
        CodeSystem.HCPCS: r"[A-V][0-9]{4}",
        CodeSystem.SNOMED: r"[1-9][0-9]{5,9}",
        CodeSystem.NUCC: r"[0-9]{3}[0-9A-Z]{6}X",
    }
    if system is not None and system not in patterns:
        raise InvalidArgument(f"unknown code system {system!r}")
    chosen = [system] if system else list(patterns)
    return st.one_of(
        [
            st.builds(
                Code,
                st.just(s),
                st.from_regex(patterns[s], fullmatch=True),
                st.none() | _short,
            )
            for s in chosen
        ]
    )


def contact_points() -> st.SearchStrategy[ContactPoint]:
    return st.builds(ContactPoint, st.sampled_from(ContactSystem), _text)


def patients() -> st.SearchStrategy[Patient]:
    return st.builds(
        Patient,
        id=_ids,
        mrn=_text,
        given_name=_text,
        family_name=_text,
        birth_date=st.dates(min_value=dt.date(1910, 1, 1), max_value=dt.date(2026, 1, 1)),
        sex=st.sampled_from(Sex),
        preferred_language=_languages,
        interpreter_needed=st.booleans(),
        pregnant=st.booleans(),
        contacts=st.lists(contact_points(), max_size=2).map(tuple),
    )


@st.composite
def coverages(draw: st.DrawFn) -> Coverage:
    """Coverages of every plan type, with or without a period and networks."""
    start, end = _period(draw)
    return Coverage(
        id=draw(_ids),
        payer=draw(_short),
        plan=draw(_short),
        plan_type=draw(st.sampled_from(PlanType)),
        member_id=draw(st.none() | _text),
        group=draw(st.none() | _short),
        period_start=start,
        period_end=end,
        networks=draw(_networks),
    )


def providers(specialty: str | None = None) -> st.SearchStrategy[Provider]:
    return st.builds(
        Provider,
        id=_ids,
        name=_short,
        specialty=st.just(specialty) if specialty else st.sampled_from(SPECIALTIES),
        npi=st.none() | st.from_regex(r"[0-9]{10}", fullmatch=True),
        taxonomy=st.none() | codes(CodeSystem.NUCC),
        organization=st.none() | _short,
        networks=_networks,
        languages=st.lists(_languages, min_size=1, max_size=3, unique=True).map(tuple),
        accepting_new_patients=st.booleans(),
        location=st.none() | _short,
    )


def appointments() -> st.SearchStrategy[Appointment]:
    return st.builds(
        Appointment,
        id=_ids,
        start=_utc,
        provider_id=_ids,
        status=st.sampled_from(AppointmentStatus),
        minutes=st.integers(0, 240),
        location=st.none() | _short,
        booked_at=st.none() | _utc,
    )


@st.composite
def authorizations(draw: st.DrawFn) -> Authorization:
    start, end = _period(draw)
    return Authorization(
        status=draw(st.sampled_from(AuthStatus)),
        number=draw(st.none() | _ids),
        service_codes=tuple(draw(st.lists(st.from_regex(r"[0-9]{5}", fullmatch=True), max_size=3))),
        units=draw(st.none() | st.integers(0, 50)),
        valid_from=start,
        valid_to=end,
        expedited=draw(st.booleans()),
        requested_at=draw(st.none() | _utc),
        decided_at=draw(st.none() | _utc),
        decision_due_by=draw(st.none() | _utc),
    )


def attachments() -> st.SearchStrategy[Attachment]:
    return st.builds(
        Attachment,
        id=_ids,
        kind=st.sampled_from(AttachmentKind),
        added_at=_utc,
        title=st.none() | _short,
        content_type=st.sampled_from(("text/plain", "application/pdf", "image/jpeg")),
        text=st.none() | _text,
    )


def communications() -> st.SearchStrategy[Communication]:
    return st.builds(
        Communication,
        id=_ids,
        at=_utc,
        channel=st.sampled_from(Channel),
        direction=st.sampled_from(Direction),
        counterpart=_text,
        summary=st.none() | _text,
        interpreter_used=st.booleans(),
        language=st.none() | st.sampled_from(("en", "es", "vi", "zh-Hant")),
    )


def follow_ups() -> st.SearchStrategy[FollowUp]:
    return st.builds(
        FollowUp,
        id=_ids,
        kind=st.sampled_from(FollowUpKind),
        due=_dates,
        description=st.none() | _text,
        done_at=st.none() | _utc,
    )


def survey_responses() -> st.SearchStrategy[SurveyResponse]:
    return st.builds(
        SurveyResponse,
        id=_ids,
        at=_utc,
        score=st.integers(1, 5),
        comment=st.none() | _text,
    )


def rule_hits() -> st.SearchStrategy[RuleHit]:
    return st.builds(RuleHit, _ids, st.from_regex(r"[0-9a-f]{8}", fullmatch=True), _ids)


def rule_traces() -> st.SearchStrategy[RuleTrace]:
    return st.builds(
        RuleTrace,
        ruleset=_ids,
        version=st.from_regex(r"[0-9a-f]{12}", fullmatch=True),
        rule_id=_ids,
        matched=st.booleans(),
        active=st.booleans(),
        failed=st.none() | _short,
    )


@st.composite
def coverage_decisions(draw: st.DrawFn) -> CoverageDecision:
    """Decisions that keep CRD's consistency rules."""
    covered = draw(st.sampled_from(Covered))
    pa = draw(
        (st.none() | st.sampled_from(PaNeeded))
        if covered is Covered.NOT_COVERED
        else st.sampled_from(PaNeeded)
    )
    doc = draw(st.none() | st.sampled_from(DocNeeded))
    conditional = Covered.CONDITIONAL in (covered, pa) or doc is DocNeeded.CONDITIONAL
    info = (
        tuple(draw(st.lists(st.sampled_from(InfoNeeded), max_size=3, unique=True)))
        if conditional
        else ()
    )
    return CoverageDecision(
        covered=covered,
        pa_needed=pa,
        doc_needed=doc,
        info_needed=info,
        reason=draw(st.none() | _ids),
        network_status=draw(st.sampled_from(NetworkStatus)),
        explanation=draw(st.text(alphabet=_storable, max_size=30)),
        alternatives=tuple(draw(st.lists(_short, max_size=2))),
        hits=tuple(draw(st.lists(rule_hits(), max_size=3))),
        trace=tuple(draw(st.lists(rule_traces(), max_size=2))),
    )


def urgency_assessments() -> st.SearchStrategy[UrgencyAssessment]:
    return st.builds(
        UrgencyAssessment,
        priority=st.sampled_from(Priority),
        score=st.floats(0, 1000, allow_nan=False),
        due_by=st.none() | _utc,
        reasons=st.lists(_short, max_size=3).map(tuple),
        hits=st.lists(rule_hits(), max_size=3).map(tuple),
        trace=st.lists(rule_traces(), max_size=2).map(tuple),
    )


_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | _short,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_ids, children, max_size=3),
    max_leaves=8,
)


def referral_events() -> st.SearchStrategy[ReferralEvent]:
    return st.builds(
        ReferralEvent,
        referral_id=_ids,
        version=st.integers(1, 1000),
        index=st.integers(0, 20),
        at=_utc,
        actor=_ids,
        type=st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
        payload=st.dictionaries(_ids, _json, max_size=4),
    )


def actors() -> st.SearchStrategy[Actor]:
    return st.builds(Actor, _ids, st.frozensets(st.sampled_from(Role), min_size=1))


def _tuples(strategy: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[Any]:
    return st.lists(strategy, max_size=max_size).map(tuple)


@st.composite
def referrals(draw: st.DrawFn, status: Status | None = None) -> Referral:
    """Referrals in any state (or ``status``), with all their parts."""
    created = draw(_utc)
    updated = created + draw(st.timedeltas(dt.timedelta(0), dt.timedelta(days=400)))
    return Referral(
        id=draw(_ids),
        source_id=draw(st.none() | _ids),
        patient=draw(patients()),
        referring=draw(providers()),
        target=draw(st.none() | providers()),
        specialty=draw(st.sampled_from(SPECIALTIES)),
        reason=draw(st.none() | _text),
        diagnoses=draw(_tuples(codes(CodeSystem.ICD10CM))),
        services=draw(_tuples(codes(CodeSystem.CPT) | codes(CodeSystem.HCPCS))),
        priority=draw(st.sampled_from(Priority)),
        status=status if status is not None else draw(st.sampled_from(Status)),
        version=draw(st.integers(1, 100)),
        created_at=created,
        updated_at=updated,
        received_at=draw(st.none() | st.just(created)),
        closed_at=draw(st.none() | st.just(updated)),
        owner=draw(st.none() | _ids),
        held_from=draw(st.none() | st.sampled_from(Status)),
        status_reason=draw(st.none() | _text),
        coverage=draw(st.none() | coverages()),
        coverage_decision=draw(st.none() | coverage_decisions()),
        urgency=draw(st.none() | urgency_assessments()),
        self_pay_acknowledged=draw(st.booleans()),
        authorization=draw(authorizations()),
        appointments=draw(_tuples(appointments())),
        attachments=draw(_tuples(attachments())),
        communications=draw(_tuples(communications())),
        follow_ups=draw(_tuples(follow_ups())),
        surveys=draw(_tuples(survey_responses())),
    )


def intake_requests() -> st.SearchStrategy[IntakeRequest]:
    return st.builds(
        IntakeRequest,
        source_id=_ids,
        patient=patients(),
        referring=providers(),
        specialty=st.sampled_from(SPECIALTIES),
        reason=st.none() | _text,
        diagnoses=_tuples(codes(CodeSystem.ICD10CM)),
        services=_tuples(codes(CodeSystem.CPT)),
        priority=st.sampled_from(Priority),
        coverage=st.none() | coverages(),
        target=st.none() | providers(),
        attachments=_tuples(attachments()),
    )


STRATEGIES: Final[Mapping[type, Any]] = {
    Code: codes,
    ContactPoint: contact_points,
    Patient: patients,
    Coverage: coverages,
    Provider: providers,
    Appointment: appointments,
    Authorization: authorizations,
    Attachment: attachments,
    Communication: communications,
    FollowUp: follow_ups,
    RuleHit: rule_hits,
    RuleTrace: rule_traces,
    CoverageDecision: coverage_decisions,
    UrgencyAssessment: urgency_assessments,
    ReferralEvent: referral_events,
    SurveyResponse: survey_responses,
    Referral: referrals,
    IntakeRequest: intake_requests,
    Actor: actors,
}
"""Every model type mapped to the function returning its strategy."""
