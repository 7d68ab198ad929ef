"""The shipped policies' fast paths (cached plans and decisions) decide exactly as their
explain paths, which build every value through the validating constructors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest

from referralkit import synth
from referralkit.model import Priority
from referralkit.rules import PythonEngine, evaluate_condition, parse
from referralkit.rules.facts import _extract
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy

AT = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
DAY = AT.date()


def test_fast_assessments_and_decisions_equal_the_explain_path() -> None:
    """Over varied synthetic referrals, every fast decision and assessment equals the explain
    path's with its trace left out."""
    coverage, urgency = CoveragePolicy.shipped(), UrgencyPolicy.shipped()
    referrals = list(synth.referrals(400, 5, AT))
    assert len({r.priority for r in referrals}) > 1
    for r in referrals:
        assert coverage.decide(r, AT) == attrs.evolve(
            coverage.decide(r, AT, explain=True), trace=()
        )
        fast = urgency.assess(r, AT)
        assert fast == attrs.evolve(urgency.assess(r, AT, explain=True), trace=())
        assert fast.trace == ()
        assert fast.due_by is not None
        assert fast.due_by.tzinfo is dt.UTC


def test_a_window_past_the_end_of_time_is_due_at_the_end_of_time() -> None:
    """A referral received days before the last representable instant is due at the end of
    time on the fast path as on the explain path."""
    urgency = UrgencyPolicy.shipped()
    late = dt.datetime(9999, 12, 20, tzinfo=dt.UTC)
    r = attrs.evolve(
        next(iter(synth.referrals(1, 3, AT))), received_at=late, priority=Priority.ROUTINE
    )
    fast = urgency.assess(r, late)
    assert fast.due_by == dt.datetime.max.replace(tzinfo=dt.UTC)
    assert fast == attrs.evolve(urgency.assess(r, late, explain=True), trace=())


def test_the_plan_cache_is_bounded_and_never_serves_another_evaluation() -> None:
    """A full plan cache is emptied before it grows further, and an entry whose key matches but
    that holds another evaluation is replaced, not used."""
    urgency = UrgencyPolicy.shipped()
    r = next(iter(synth.referrals(1, 7, AT)))
    expected = urgency.assess(r, AT)
    (key, plan), *_ = urgency._plans.items()
    urgency._plans[key] = attrs.evolve(plan, evaluation=None, priority=Priority.STAT, score=-1.0)
    assert urgency.assess(r, AT) == expected
    assert urgency._plans[key].evaluation is plan.evaluation
    urgency._plans.clear()
    urgency._plans.update({(i, Priority.ROUTINE): plan for i in range(4097)})
    assert urgency.assess(r, AT) == expected
    assert len(urgency._plans) == 1


def test_extracted_age_activity_and_waiting_agree_with_the_model() -> None:
    """The facts' age, coverage activity and days waiting are those the model's own methods
    give, on dates around birthdays, coverage ends and before receipt."""
    referrals = list(synth.referrals(200, 9, AT))
    days = [AT + dt.timedelta(days=d) for d in (-400, -3, 0, 1, 45, 200, 366, 3000)]
    for r in referrals:
        for at in days:
            facts = _extract(r, at)
            day = at.date()
            assert facts["patient.age"] == r.patient.age_on(day)
            expected = r.coverage.active_on(day) if r.coverage is not None else False
            assert facts["coverage.active"] is expected
            received = r.received_at
            assert facts["days_waiting"] == (max(0, (at - received).days) if received else 0)


def one_rule(when: dict[str, Any]) -> Any:
    return parse(
        {
            "ruleset": {"name": "t", "kind": "urgency"},
            "rules": [{"id": "r", "when": when, "then": {"priority": "urgent"}}],
        }
    )


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        ({}, False),
        ({"diagnoses": []}, False),
        ({"diagnoses": ["R07.9"]}, False),
        ({"diagnoses": ["R07.9", "C50.911"]}, True),
        ({"diagnoses": ["D05.1"]}, True),
    ],
)
def test_any_prefix_matches_as_the_reference(f: dict[str, Any], expected: bool) -> None:
    """The compiled any_prefix test is true exactly when some code starts with a prefix:
    false on an absent or empty list, as the reference meaning says."""
    ruleset = one_rule({"diagnoses": {"any_prefix": ["C50", "D05"]}})
    assert evaluate_condition(ruleset.rules[0].when, f) is expected
    assert (PythonEngine(ruleset).matches(f, DAY) == [0]) is expected
    explained = PythonEngine(ruleset).evaluate(f, DAY, explain=True).trace
    assert explained[0].matched is expected


def test_a_collect_policy_that_no_rule_matches_keeps_the_requested_priority() -> None:
    """With no matching rule in a collect ruleset, the fast assessment keeps the requested
    priority and its default window, as the explain path does."""
    ruleset = parse(
        {
            "ruleset": {"name": "t", "kind": "urgency", "hit_policy": "collect"},
            "rules": [
                {"id": "r", "when": {"specialty": "nowhere"}, "then": {"priority": "stat"}},
            ],
        }
    )
    urgency = UrgencyPolicy([ruleset])
    for r in list(synth.referrals(20, 4, AT)):
        fast = urgency.assess(r, AT)
        assert fast.hits == ()
        assert fast.priority is r.priority
        assert fast == attrs.evolve(urgency.assess(r, AT, explain=True), trace=())
