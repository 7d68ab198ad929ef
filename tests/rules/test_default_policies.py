"""One default: a desk given no policies decides with the shipped rule files, and the
hand-written BasicCoverage and BasicUrgency agree with those rules wherever both decide. Every
intended difference is listed here, with its reason, and shown to occur."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

import attrs
import pytest

import referralkit as rk
from referralkit.model import Code, CoverageDecision, Covered, PaNeeded, Priority, Referral
from referralkit.policy import BasicCoverage, BasicUrgency
from referralkit.rules import Kind, load
from referralkit.rules.policies import (
    CoveragePolicy,
    UrgencyPolicy,
    default_policies,
    shipped_paths,
)
from referralkit.testing import FakeClock, sample_referrals, sample_request

# The shipped coverage rules that encode a payer's own policy, which the payer-agnostic
# BasicCoverage does not model: where one of them decides, the two may differ, as said.
COVERAGE_DIFFERENCES = {
    "medicare-opd-prior-auth": "Original Medicare's hospital outpatient prior-authorization "
    "list; BasicCoverage asks no authorization for those services",
    "medicare-specialist": "Original Medicare asks no authorization for advanced imaging; "
    "BasicCoverage does, on every plan",
    "medicaid-epsdt": "EPSDT covers patients under 21 without authorization, imaging included",
    "medicaid-specialist": "Medicaid covers on condition that the specialist is enrolled",
    "hmo-obgyn-direct-access": "HMO members see OB/GYN directly, without authorization",
    "hmo-specialist-needs-referral": "an HMO covers on condition of a PCP referral",
    "ppo-advanced-imaging": "PPO/POS imaging out of network: covered with authorization by the "
    "rules, conditional at a higher cost share by BasicCoverage",
    "manual-review": "a plan type no payer file names is left to a person (indeterminate)",
}
# Red flags only the shipped urgency rules know. The score is not compared at all: the rules
# sum each rule's score, BasicUrgency adds modifiers to 100 per rank; both only order the
# worklist. "very-old" changes only the score, so it needs no entry.
URGENCY_DIFFERENCES = {
    "breast-lump": "an unexplained breast lump is seen within two weeks (NICE NG12)",
    "cardiac-chest-pain": "chest pain referred to cardiology is urgent (NICE CG95)",
    "infant": "infants under two are seen urgently",
}


@functools.cache
def population() -> tuple[Referral, ...]:
    """2,000 referrals drawn from the shipped rules themselves, so every rule is exercised."""
    return tuple(sample_referrals(default_policies(), 2000, seed=11))


def coverage_answer(decision: CoverageDecision) -> tuple[Any, ...]:
    return (decision.covered, decision.pa_needed, decision.network_status)


def urgency_answer(assessor: Any, referral: Referral) -> tuple[Any, ...]:
    assessment = assessor.assess(referral, referral.updated_at)
    return (assessment.priority, assessment.due_by)


def compare(
    rule_ids: Callable[[Referral], set[str]],
    answers: Callable[[Referral], tuple[tuple[Any, ...], tuple[Any, ...]]],
    differences: dict[str, str],
) -> tuple[set[str], set[str], list[tuple[Referral, Any, Any]]]:
    """The rules that decided a referral on which the two agree, the listed rules seen in a
    disagreement, and the unlisted disagreements (referral, rules' answer, hand-written)."""
    agreeing: set[str] = set()
    differing: set[str] = set()
    unexplained = []
    for referral in population():
        fired = rule_ids(referral)
        ruled, written = answers(referral)
        listed = fired & differences.keys()
        if ruled == written:
            agreeing |= fired
        elif listed:
            differing |= listed
        else:
            unexplained.append((referral, ruled, written))
    return agreeing, differing, unexplained


def coverage_comparison() -> tuple[set[str], set[str], list[tuple[Referral, Any, Any]]]:
    policy, basic = default_policies()[0], BasicCoverage()

    def rules(referral: Referral) -> set[str]:
        return {h.rule_id for h in policy.decide(referral, referral.updated_at).hits}

    def answers(referral: Referral) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        at = referral.updated_at
        return coverage_answer(policy.decide(referral, at)), coverage_answer(
            basic.decide(referral, at)
        )

    return compare(rules, answers, COVERAGE_DIFFERENCES)


def urgency_comparison() -> tuple[set[str], set[str], list[tuple[Referral, Any, Any]]]:
    policy, basic = default_policies()[1], BasicUrgency()

    def rules(referral: Referral) -> set[str]:
        return {h.rule_id for h in policy.assess(referral, referral.updated_at).hits}

    def answers(referral: Referral) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return urgency_answer(policy, referral), urgency_answer(basic, referral)

    return compare(rules, answers, URGENCY_DIFFERENCES)


def rule_ids(kind: Kind) -> set[str]:
    return {rule.id for path in shipped_paths(kind) for rule in load(path).rules}


class TestTheDefaultDesk:
    def test_decides_with_the_shipped_rules(self) -> None:
        """A desk given no policies decides with the shipped rule files on the python engine,
        built once and shared by every desk."""
        desk = rk.ReferralDesk(rk.open_store("memory://"))
        coverage, urgency = default_policies()
        assert desk.coverage is coverage
        assert desk.urgency is urgency
        assert isinstance(coverage, CoveragePolicy)
        assert isinstance(urgency, UrgencyPolicy)
        assert coverage.engine_name == urgency.engine_name == "python"
        assert [r.name for r in urgency.rulesets] == ["example-urgency"]
        assert rk.ReferralDesk(rk.open_store("memory://")).coverage is coverage

    def test_a_policy_given_is_kept(self) -> None:
        """A desk given one policy decides with it and the default for the other; given
        both, with both."""
        basic_coverage, basic_urgency = BasicCoverage(), BasicUrgency()
        one = rk.ReferralDesk(rk.open_store("memory://"), coverage=basic_coverage)
        assert one.coverage is basic_coverage
        assert one.urgency is default_policies()[1]
        both = rk.ReferralDesk(
            rk.open_store("memory://"), coverage=basic_coverage, urgency=basic_urgency
        )
        assert (both.coverage, both.urgency) == (basic_coverage, basic_urgency)

    def test_suspected_cancer_is_seen_within_two_weeks(self) -> None:
        """A routine referral for suspected cancer is urgent and due 14 days after receipt
        (the two-week wait), at the default desk and with BasicUrgency alike."""
        clock = FakeClock(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
        request = attrs.evolve(
            sample_request(), specialty="oncology", diagnoses=(Code.icd10("C50.911"),)
        )
        for urgency in (None, BasicUrgency()):
            desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock, urgency=urgency)
            coordinator = rk.Actor("coord-1", {rk.Role.COORDINATOR})
            referral = desk.send(coordinator, desk.intake(coordinator, request).id)
            assert referral.urgency is not None
            assert referral.urgency.priority is Priority.URGENT
            assert referral.received_at is not None
            assert referral.urgency.due_by == referral.received_at + dt.timedelta(days=14)


class TestCoverageAgreement:
    def test_agree_wherever_both_decide(self) -> None:
        """On 2,000 referrals drawn from the shipped rules, BasicCoverage gives the same
        covered, prior-authorization and network answers as the shipped rules, except where a
        listed payer-specific rule decides."""
        _, _, unexplained = coverage_comparison()
        assert unexplained == []

    def test_every_shared_rule_is_exercised(self) -> None:
        """Every shipped coverage rule not listed as a difference decided some referral on
        which the two agree: the agreement is not vacuous."""
        agreeing, _, _ = coverage_comparison()
        assert rule_ids(Kind.COVERAGE) - COVERAGE_DIFFERENCES.keys() <= agreeing

    def test_every_listed_difference_occurs(self) -> None:
        """Each listed difference is a rule of the shipped files that does make the two
        disagree: the list holds nothing stale."""
        _, differing, _ = coverage_comparison()
        assert COVERAGE_DIFFERENCES.keys() <= rule_ids(Kind.COVERAGE)
        assert differing == COVERAGE_DIFFERENCES.keys()


class TestUrgencyAgreement:
    def test_agree_wherever_both_decide(self) -> None:
        """On 2,000 referrals drawn from the shipped rules, BasicUrgency gives the same
        priority and due date as the shipped rules, except where a listed red flag only the
        rules know fired."""
        _, _, unexplained = urgency_comparison()
        assert unexplained == []

    def test_the_shared_red_flags_are_exercised(self) -> None:
        """The requested windows, suspected cancer and pregnancy each decided referrals on
        which the two agree."""
        agreeing, _, _ = urgency_comparison()
        assert {
            "requested-stat",
            "requested-asap",
            "requested-urgent",
            "routine-window",
            "suspected-cancer",
            "pregnancy",
        } <= agreeing

    def test_every_listed_difference_occurs(self) -> None:
        """Each listed red flag is a shipped rule that does make the two disagree."""
        _, differing, _ = urgency_comparison()
        assert URGENCY_DIFFERENCES.keys() <= rule_ids(Kind.URGENCY)
        assert differing == URGENCY_DIFFERENCES.keys()

    @pytest.mark.parametrize(("urgency", "hours"), [(None, 48), (BasicUrgency(), 96)])
    def test_urgent_with_prior_authorization(self, urgency: Any, hours: int) -> None:
        """The one difference outside the drawn cases: an urgent referral that needs prior
        authorization is due in 48 hours by the shipped rules (no rule reads the coverage
        decision) and in 96 by BasicUrgency (the California timely-access clause)."""
        start = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
        decision = CoverageDecision(Covered.COVERED, PaNeeded.AUTH_NEEDED)
        referral = attrs.evolve(
            population()[0],
            priority=Priority.URGENT,
            diagnoses=(),
            coverage_decision=decision,
            received_at=start,
        )
        assessor = urgency or default_policies()[1]
        assert assessor.assess(referral, start).due_by == start + dt.timedelta(hours=hours)
