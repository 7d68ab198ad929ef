"""The default policies: BasicCoverage and BasicUrgency, and business-day arithmetic."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from referralkit import (
    BasicCoverage,
    BasicUrgency,
    Code,
    Coverage,
    CoverageDecider,
    CoverageDecision,
    Covered,
    DocNeeded,
    NetworkStatus,
    PaNeeded,
    PlanType,
    Priority,
    Provider,
    Referral,
    UrgencyAssessor,
)
from referralkit.policy import add_business_days
from referralkit.testing import referrals, sample_request

AT = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)  # a Monday
MRI = Code.cpt("70551")


def referral(**changes: Any) -> Referral:
    request = sample_request()
    fields: dict[str, Any] = {
        "id": "r1",
        "patient": request.patient,
        "referring": request.referring,
        "target": request.target,
        "specialty": request.specialty,
        "reason": request.reason,
        "diagnoses": request.diagnoses,
        "services": request.services,
        "coverage": request.coverage,
        "created_at": AT,
        "updated_at": AT,
    }
    return Referral(**(fields | changes))


def far_provider() -> Provider:
    return Provider("far", "Far Clinic", "cardiology", networks=("elsewhere",))


def reference_business_days(start: dt.datetime, days: int) -> dt.datetime:
    """The plain definition: step day by day, counting weekdays only."""
    current, remaining = start, days
    while remaining > 0:
        current += dt.timedelta(days=1)
        if current.weekday() < 5:
            remaining -= 1
    return current


class TestBusinessDays:
    @given(
        start=st.datetimes(
            dt.datetime(2020, 1, 1), dt.datetime(2030, 1, 1), timezones=st.just(dt.UTC)
        ),
        days=st.integers(-3, 400),
    )
    def test_agrees_with_counting_day_by_day(self, start: dt.datetime, days: int) -> None:
        """add_business_days equals stepping one day at a time over weekdays."""
        assert add_business_days(start, days) == reference_business_days(start, days)

    @pytest.mark.parametrize(
        ("start", "days", "expected"),
        [
            (dt.date(2026, 11, 27), 1, dt.date(2026, 11, 30)),  # Friday -> Monday
            (dt.date(2026, 11, 28), 1, dt.date(2026, 11, 30)),  # Saturday -> Monday
            (dt.date(2026, 11, 29), 5, dt.date(2026, 12, 4)),  # Sunday -> Friday
            (dt.date(2026, 1, 5), 15, dt.date(2026, 1, 26)),  # Monday + 3 weeks
            (dt.date(2026, 1, 5), 0, dt.date(2026, 1, 5)),
        ],
    )
    def test_examples(self, start: dt.date, days: int, expected: dt.date) -> None:
        """Weekends are skipped; the time of day is kept."""
        moment = dt.datetime.combine(start, dt.time(9, 30), tzinfo=dt.UTC)
        result = add_business_days(moment, days)
        assert result.date() == expected
        assert result.time() == dt.time(9, 30)


class TestBasicCoverage:
    def test_is_a_coverage_decider(self) -> None:
        """BasicCoverage satisfies the CoverageDecider protocol."""
        assert isinstance(BasicCoverage(), CoverageDecider)
        assert repr(BasicCoverage()) == "BasicCoverage()"

    def test_covered_in_network(self) -> None:
        """An in-network office visit is covered without authorization."""
        decision = BasicCoverage().decide(referral(), AT)
        assert (decision.covered, decision.pa_needed) == (Covered.COVERED, PaNeeded.NO_AUTH)
        assert decision.network_status is NetworkStatus.IN_NETWORK
        assert [h.rule_id for h in decision.hits] == ["covered"]

    def test_advanced_imaging_needs_authorization(self) -> None:
        """Advanced imaging (CPT 7055x) needs prior authorization with clinical documents."""
        decision = BasicCoverage().decide(referral(services=(MRI,)), AT)
        assert decision.covered is Covered.COVERED
        assert decision.pa_needed is PaNeeded.AUTH_NEEDED
        assert decision.doc_needed is DocNeeded.CLINICAL
        assert decision.needs_authorization
        assert [h.rule_id for h in decision.hits] == ["advanced-imaging-pa", "covered"]

    @pytest.mark.parametrize(
        "changes",
        [
            {"coverage": None},
            {
                "coverage": Coverage(
                    "c", "Acme", "Gold", PlanType.PPO, period_end=dt.date(2025, 12, 31)
                )
            },
            {
                "coverage": Coverage(
                    "c", "Acme", "Gold", PlanType.PPO, period_start=dt.date(2026, 2, 1)
                )
            },
        ],
    )
    def test_no_active_coverage(self, changes: dict[str, Any]) -> None:
        """No coverage, or coverage not active on the date: not covered, with alternatives."""
        decision = BasicCoverage().decide(referral(**changes), AT)
        assert decision.covered is Covered.NOT_COVERED
        assert decision.reason == "no-active-coverage"
        assert decision.pa_needed is None
        assert "self-pay or payment plan" in decision.alternatives

    def test_self_pay(self) -> None:
        """A self-pay plan is not covered; a payment plan is offered."""
        decision = BasicCoverage().decide(referral(coverage=Coverage.self_pay()), AT)
        assert (decision.covered, decision.reason) == (Covered.NOT_COVERED, "self-pay")
        assert decision.alternatives == ("payment plan",)

    @pytest.mark.parametrize(
        ("code", "needs"),
        [
            ("70551", True),  # MRI brain
            ("70544", True),  # MRA head
            ("70450", True),  # CT head
            ("72148", True),  # MRI lumbar spine
            ("73721", True),  # MRI joint, lower extremity
            ("74181", True),  # MRI abdomen
            ("78815", True),  # PET/CT
            ("99204", False),  # office visit
            ("71046", False),  # chest X-ray
            ("93000", False),  # ECG
        ],
    )
    def test_prior_authorization_by_service(self, code: str, needs: bool) -> None:
        """Advanced imaging families need prior authorization; visits and plain films do not."""
        decision = BasicCoverage().decide(referral(services=(Code.cpt(code),)), AT)
        assert decision.needs_authorization is needs

    @pytest.mark.parametrize(
        "plan", [PlanType.HMO, PlanType.EPO, PlanType.MEDICAID, PlanType.MEDICARE_ADVANTAGE]
    )
    def test_out_of_network_on_a_narrow_network_plan(self, plan: PlanType) -> None:
        """Out of network on HMO/EPO/Medicaid/MA: not covered, an in-network specialist offered."""
        coverage = attrs.evolve(sample_request().coverage, plan_type=plan)
        decision = BasicCoverage().decide(referral(coverage=coverage, target=far_provider()), AT)
        assert decision.covered is Covered.NOT_COVERED
        assert decision.reason == "auth-out-network"
        assert decision.network_status is NetworkStatus.OUT_OF_NETWORK
        assert decision.alternatives[0] == "an in-network specialist"

    @pytest.mark.parametrize("plan", [PlanType.PPO, PlanType.POS, PlanType.MEDICARE])
    def test_out_of_network_on_a_broad_plan(self, plan: PlanType) -> None:
        """Out of network on PPO/POS/Medicare: conditional (higher cost share)."""
        coverage = attrs.evolve(sample_request().coverage, plan_type=plan)
        decision = BasicCoverage().decide(
            referral(coverage=coverage, target=far_provider(), services=(MRI,)), AT
        )
        assert decision.covered is Covered.CONDITIONAL
        assert decision.pa_needed is PaNeeded.AUTH_NEEDED
        assert decision.reason == "out-of-network"

    def test_without_a_target_the_network_is_unknown(self) -> None:
        """Without a chosen specialist the network status is unknown, and it is covered."""
        decision = BasicCoverage().decide(referral(target=None), AT)
        assert decision.network_status is NetworkStatus.UNKNOWN
        assert decision.covered is Covered.COVERED

    @given(referrals())
    def test_always_a_consistent_decision(self, value: Referral) -> None:
        """Whatever the referral, the decision is a valid CRD decision."""
        decision = BasicCoverage().decide(value, AT)
        assert isinstance(decision, CoverageDecision)
        assert decision.hits


class TestBasicUrgency:
    def test_is_an_urgency_assessor(self) -> None:
        """BasicUrgency satisfies the UrgencyAssessor protocol."""
        assert isinstance(BasicUrgency(), UrgencyAssessor)
        assert repr(BasicUrgency()) == "BasicUrgency()"

    def test_routine_within_15_business_days(self) -> None:
        """Routine: due 15 business days after receipt (or now, before receipt)."""
        assessment = BasicUrgency().assess(referral(), AT)
        assert assessment.priority is Priority.ROUTINE
        assert assessment.due_by == dt.datetime(2026, 1, 26, 9, tzinfo=dt.UTC)
        assert assessment.score == 0
        received = BasicUrgency().assess(referral(received_at=AT - dt.timedelta(days=7)), AT)
        assert received.due_by == dt.datetime(2026, 1, 19, 9, tzinfo=dt.UTC)

    @pytest.mark.parametrize(
        ("priority", "hours"),
        [(Priority.STAT, 24), (Priority.ASAP, 48), (Priority.URGENT, 48)],
    )
    def test_windows(self, priority: Priority, hours: int) -> None:
        """stat 24 h, asap and urgent 48 h."""
        assessment = BasicUrgency().assess(referral(priority=priority), AT)
        assert assessment.priority is priority
        assert assessment.due_by == AT + dt.timedelta(hours=hours)
        assert assessment.score == priority.rank * 100

    def test_urgent_with_authorization_gets_96_hours(self) -> None:
        """Urgent with prior authorization needed: 96 hours (California timely access)."""
        decision = CoverageDecision(Covered.COVERED, PaNeeded.AUTH_NEEDED)
        assessment = BasicUrgency().assess(
            referral(priority=Priority.URGENT, coverage_decision=decision), AT
        )
        assert assessment.due_by == AT + dt.timedelta(hours=96)

    @pytest.mark.parametrize("code", ["C50.911", "D05.10"])
    def test_suspected_cancer(self, code: str) -> None:
        """Suspected cancer on a routine request is urgent and due within 14 days (the
        two-week wait, as in the shipped rule file), not within the 48 hours of an urgent
        request."""
        assessment = BasicUrgency().assess(referral(diagnoses=(Code.icd10(code),)), AT)
        assert assessment.priority is Priority.URGENT
        assert assessment.score == 150
        assert "suspected cancer: two-week wait" in assessment.reasons
        assert assessment.due_by == AT + dt.timedelta(days=14)

    def test_urgent_cancer_keeps_the_shorter_window(self) -> None:
        """Requested urgent with suspected cancer: the earlier of 48 hours and 14 days."""
        assessment = BasicUrgency().assess(
            referral(priority=Priority.URGENT, diagnoses=(Code.icd10("C50.911"),)), AT
        )
        assert assessment.due_by == AT + dt.timedelta(hours=48)

    def test_stat_cancer_stays_stat(self) -> None:
        """A higher requested priority is kept."""
        assessment = BasicUrgency().assess(
            referral(priority=Priority.STAT, diagnoses=(Code.icd10("C34.90"),)), AT
        )
        assert assessment.priority is Priority.STAT
        assert assessment.due_by == AT + dt.timedelta(hours=24)

    def test_pregnancy(self) -> None:
        """Pregnancy makes a routine referral urgent, due within 96 hours."""
        patient = attrs.evolve(sample_request().patient, pregnant=True)
        assessment = BasicUrgency().assess(referral(patient=patient), AT)
        assert assessment.priority is Priority.URGENT
        assert assessment.due_by == AT + dt.timedelta(hours=96)
        assert "pregnancy" in assessment.reasons
        assert [h.rule_id for h in assessment.hits] == ["requested-routine", "pregnancy"]

    def test_pregnancy_in_obstetrics_keeps_its_priority(self) -> None:
        """Prenatal care itself is not escalated because the patient is pregnant."""
        patient = attrs.evolve(sample_request().patient, pregnant=True)
        assessment = BasicUrgency().assess(referral(patient=patient, specialty="obstetrics"), AT)
        assert assessment.priority is Priority.ROUTINE
        assert "pregnancy" not in assessment.reasons

    @given(referrals())
    def test_never_lowers_the_requested_priority(self, value: Referral) -> None:
        """The assessed priority is never below the requested one, and always has a due date."""
        assessment = BasicUrgency().assess(value, AT)
        assert assessment.priority.rank >= value.priority.rank
        assert assessment.due_by is not None
        assert assessment.due_by >= (value.received_at or AT)
