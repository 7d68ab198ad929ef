"""The property-testing kit drawn from the rules under test (issue 11): referrals_for,
rule_coverage, checks that fail with counterexamples, and the mutation self-test."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis.errors import InvalidArgument

from referralkit.rules import load, loads
from referralkit.rules.facts import extract
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy
from referralkit.testing import referrals_for, rule_coverage
from referralkit.testing._derive import draw_examples, rulesets_of

NEW_PAYER = Path(__file__).parent.parent / "data" / "rules" / "new_payer.toml"
COVERAGE = CoveragePolicy.shipped()
URGENCY = UrgencyPolicy.shipped()


class TestReferralsFor:
    @pytest.mark.parametrize(
        "subject",
        [COVERAGE, URGENCY, CoveragePolicy([load(NEW_PAYER)])],
        ids=["shipped coverage", "shipped urgency", "new payer"],
    )
    def test_every_rule_matches_at_least_5_percent_of_1000(self, subject: object) -> None:
        """Issue 11's measure: each rule's condition holds, on a day it is in force, for a
        share of 1,000 referrals drawn from the rules (seeded: the same draw every run)."""
        measured = rule_coverage(subject, examples=1000)
        assert measured.total == 1000
        # measured with seed 0 (and seeds 1-5): the weakest rule of the shipped coverage
        # policy 6.2% (5.2-6.5%), of the shipped urgency policy 30.8% (29.7-30.8%), of the
        # new payer's file 8.0% (6.7-8.0%)
        assert measured.below(0.05) == {}, measured.least()

    def test_the_old_pools_left_a_new_payer_untested(self) -> None:
        """The fixed pools (policy_referrals) never name the new payer: none of its rules
        fires, which is why referrals_for is the default."""
        from referralkit.testing import policy_referrals

        policy = CoveragePolicy([load(NEW_PAYER)])
        measured = rule_coverage(policy, examples=200, strategy=policy_referrals())
        assert max(measured.matched.values()) == 0.0

    def test_values_just_beside_the_rules(self) -> None:
        """Ages one year either side of a threshold, the day before and of an effective date,
        and a code one character off a prefix are all drawn."""
        policy = CoveragePolicy([load(NEW_PAYER)])
        ages: set[int] = set()
        days: set[dt.date] = set()
        services: set[str] = set()

        def visit(referral: object) -> None:
            facts = extract(referral, referral.updated_at)  # type: ignore[attr-defined]
            ages.add(facts["patient.age"])
            days.add(facts["date"])
            services.update(facts["services"])

        draw_examples(referrals_for(policy), 400, visit)
        assert {17, 18, 19} <= ages  # bariatric lt 18, hearing aids lt 19
        assert {dt.date(2026, 3, 31), dt.date(2026, 4, 1)} <= days  # sleep study valid_from
        assert {dt.date(2026, 6, 30), dt.date(2026, 7, 1)} <= days  # fertility valid_to
        assert "95810" in services
        assert any(s.startswith("9581") and not s.startswith(("95810", "95811")) for s in services)

    def test_arguments_are_checked(self) -> None:
        """Shares outside 0..1, a subject without rules, or only event rules are refused."""
        with pytest.raises(InvalidArgument, match="aim"):
            referrals_for(COVERAGE, aim=1.5)
        with pytest.raises(InvalidArgument, match="beside"):
            referrals_for(COVERAGE, beside=True)
        with pytest.raises(InvalidArgument, match="Ruleset"):
            rulesets_of("my-payer.toml")
        from referralkit.rules.policies import shipped_paths

        event_rules = [load(p) for p in shipped_paths() if p.name.startswith("event-")]
        with pytest.raises(InvalidArgument, match="no coverage or urgency rules"):
            referrals_for(event_rules)

    def test_a_ruleset_and_a_list_of_policies_are_subjects(self) -> None:
        """A bare ruleset and a [coverage, urgency] pair both work; the pair exercises the
        rules of both."""
        both = rule_coverage([COVERAGE, URGENCY], examples=300)
        assert len(both.matched) == sum(len(r.rules) for r in rulesets_of([COVERAGE, URGENCY]))
        assert both.least()[1] > 0
        single = loads(
            """
[ruleset]
name = "one"
kind = "urgency"
[[rules]]
id = "languages"
when = { "patient.language" = { in = ["es", "vi"] }, "patient.interpreter_needed" = true }
then = { priority = "urgent" }
"""
        )
        assert rule_coverage(single, examples=100).matched[("one", "languages")] > 0.5


HMO_ONLY = """
[ruleset]
name = "hmo-only"
kind = "coverage"
[[rules]]
id = "hmo"
when = { "coverage.plan_type" = "HMO" }
then = { covered = "covered", pa_needed = "no-auth" }
"""
WITH_FALLBACK = (
    HMO_ONLY
    + """
[[rules]]
id = "manual"
then = { covered = "indeterminate", pa_needed = "indeterminate" }
"""
)


class TestChecksFail:
    def test_totality_fails_on_indeterminate_with_a_pasteable_referral(self) -> None:
        """A ruleset that decides only HMO members fails totality; the counterexample
        rebuilds from its snippet and is indeed undecided."""
        from referralkit.testing import CheckFailedError, check_totality

        policy = CoveragePolicy([loads(HMO_ONLY)])
        with pytest.raises(CheckFailedError, match="indeterminate") as info:
            check_totality(policy, examples=100)
        example = info.value.counterexample
        assert example is not None
        scope: dict[str, object] = {}
        exec(example.snippet(), scope)
        rebuilt = scope["referral"]
        assert rebuilt == example.referral
        assert policy.decide(rebuilt, scope["at"]).hits == ()  # type: ignore[arg-type]
        # simplified: nothing the rules do not read is left in it
        assert (rebuilt.diagnoses, rebuilt.services, rebuilt.attachments) == ((), (), ())  # type: ignore[attr-defined]
        data = example.to_json()
        assert data["check"] == "totality"
        assert data["facts"]["coverage.plan_type"] != "HMO"

    def test_totality_optionally_refuses_a_catch_all(self) -> None:
        """With a fallback the policy is total; with fallback=False the fallback alone does
        not count as a decision, and the rule is named."""
        from referralkit.testing import CheckFailedError, check_totality

        policy = CoveragePolicy([loads(WITH_FALLBACK)])
        assert check_totality(policy, examples=50).status == "passed"
        with pytest.raises(CheckFailedError, match="catch-all") as info:
            check_totality(policy, examples=100, fallback=False)
        assert info.value.counterexample is not None
        assert info.value.counterexample.rules == ("hmo-only/manual",)

    def test_rules_fire_names_a_shadowed_rule_and_its_shadow(self) -> None:
        """A rule behind a broader earlier rule never decides: the check names both."""
        from referralkit.testing import CheckFailedError, check_rules_fire

        shadowed = loads(
            HMO_ONLY.replace('id = "hmo"', 'id = "broad"').replace(
                '"coverage.plan_type" = "HMO"', '"coverage.active" = true'
            )
            + """
[[rules]]
id = "narrow"
when = { "coverage.plan_type" = "PPO", "coverage.active" = true }
then = { covered = "not-covered" }
"""
        )
        with pytest.raises(CheckFailedError, match="hmo-only/narrow") as info:
            check_rules_fire(CoveragePolicy([shadowed]), examples=200)
        assert info.value.counterexample is not None
        assert "hmo-only/broad" in info.value.counterexample.rules

    def test_rules_fire_without_a_counterexample(self) -> None:
        """A rule whose condition nothing meets fails with no referral to show."""
        from referralkit.testing import CheckFailedError, check_rules_fire

        never = loads(
            WITH_FALLBACK.replace(
                '"coverage.plan_type" = "HMO"',
                '"patient.age" = { lt = 0 }',
            )
        )
        with pytest.raises(CheckFailedError, match="no drawn referral met") as info:
            check_rules_fire(CoveragePolicy([never]), examples=100)
        assert info.value.counterexample is None

    def test_no_conflicts_names_both_rules(self) -> None:
        """Two rules matching under 'unique' are named in the counterexample."""
        from referralkit.testing import CheckFailedError, check_no_conflicts

        unique = loads(
            WITH_FALLBACK.replace('kind = "coverage"', 'kind = "coverage"\nhit_policy = "unique"')
        )
        with pytest.raises(CheckFailedError, match="unique") as info:
            check_no_conflicts(unique, examples=100)
        assert info.value.counterexample is not None
        assert set(info.value.counterexample.rules) == {"hmo-only/hmo", "hmo-only/manual"}

    def test_determinism_catches_a_decider_that_changes_its_mind(self) -> None:
        """A policy whose answer depends on how often it was asked fails determinism."""
        from referralkit.testing import CheckFailedError, check_determinism

        class Fickle:
            rulesets = COVERAGE.rulesets
            calls = 0

            def decide(self, referral: object, at: dt.datetime) -> object:
                self.calls += 1
                return COVERAGE.decide(referral, at) if self.calls % 3 else None  # type: ignore[arg-type]

        with pytest.raises(CheckFailedError, match="twice"):
            check_determinism(Fickle(), examples=50)

    def test_engines_agree_or_skip_with_the_reason(self) -> None:
        """The python and durable engines agree on the shipped policies; without
        durable-rules the check is skipped and says why."""
        from referralkit.rules.timeline import durable_available
        from referralkit.testing import check_agreement

        result = check_agreement(URGENCY, examples=50)
        if durable_available():
            assert result.status == "passed"
        else:
            assert result.status == "skipped"
            assert "durable-rules" in result.reason

    def test_engines_that_disagree_are_caught(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """When the durable engine matches other rules than the python one (here: none), the
        check fails naming the rules that differ."""
        pytest.importorskip("durable")
        from referralkit.rules.durable import DurableEngine
        from referralkit.testing import CheckFailedError, check_agreement

        monkeypatch.setattr(DurableEngine, "matches", lambda self, facts, day: [])
        with pytest.raises(CheckFailedError, match="python matched") as info:
            check_agreement(URGENCY, examples=20)
        assert info.value.counterexample is not None
        assert "example-urgency/routine-window" in info.value.counterexample.rules


def _mutants(policy: object) -> list[tuple[str, object]]:
    """Broken variants of a policy: a deleted rule, a flipped comparison, a swapped output
    (one of each per ruleset that has the parts)."""
    import attrs

    from referralkit.rules.model import Always, Compare, Op

    flips = {
        Op.EQ: Op.NE,
        Op.NE: Op.EQ,
        Op.IN: Op.NOT_IN,
        Op.NOT_IN: Op.IN,
        Op.LT: Op.LTE,
        Op.GTE: Op.GT,
        Op.ANY_PREFIX: Op.NONE_PREFIX,
    }

    def flip(condition: object) -> object:
        if isinstance(condition, Compare) and condition.op in flips:
            if isinstance(condition.value, bool):
                return attrs.evolve(condition, value=not condition.value)
            return attrs.evolve(condition, op=flips[condition.op])
        items = getattr(condition, "items", None)
        if items:
            return attrs.evolve(condition, items=(*items[:-1], flip(items[-1])))
        return condition

    found: list[tuple[str, object]] = []
    rulesets = list(policy.rulesets)  # type: ignore[attr-defined]
    for k, ruleset in enumerate(rulesets):
        rules = list(ruleset.rules)
        conditioned = [i for i, r in enumerate(rules) if not isinstance(r.when, Always)]
        variants = []
        if conditioned:
            i = conditioned[0]
            variants.append((f"{ruleset.name}: delete {rules[i].id}", rules[:i] + rules[i + 1 :]))
            flipped = attrs.evolve(rules[i], when=flip(rules[i].when))
            variants.append(
                (f"{ruleset.name}: flip {rules[i].id}", [*rules[:i], flipped, *rules[i + 1 :]])
            )
        if len(rules) >= 2 and rules[0].then != rules[1].then:
            swapped = [
                attrs.evolve(rules[0], then=rules[1].then),
                attrs.evolve(rules[1], then=rules[0].then),
                *rules[2:],
            ]
            variants.append((f"{ruleset.name}: swap {rules[0].id}/{rules[1].id}", swapped))
        for label, changed in variants:
            mutated = attrs.evolve(ruleset, rules=tuple(changed))
            found.append((label, type(policy)([*rulesets[:k], mutated, *rulesets[k + 1 :]])))
    return found


@pytest.mark.parametrize(
    ("label", "mutant"),
    [m for policy in (COVERAGE, URGENCY) for m in _mutants(policy)],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_broken_variant_of_a_shipped_policy_is_caught(label: str, mutant: object) -> None:
    """Mutation self-test of the kit: a deleted rule, a flipped comparison or a swapped
    output in a shipped policy is caught by at least one check (the property checks, then
    agreement with the unbroken policy, which is how an owner tests an edit)."""
    from referralkit.testing import (
        CheckFailedError,
        check_agreement,
        check_monotonic_urgency,
        check_rules_fire,
        check_totality,
    )

    original = COVERAGE if isinstance(mutant, CoveragePolicy) else URGENCY
    checks = [
        lambda: check_totality(mutant, examples=100, fallback=False),
        lambda: check_rules_fire(mutant, examples=300),
        lambda: check_agreement(mutant, original, examples=300),
    ]
    if isinstance(mutant, UrgencyPolicy):
        checks.insert(0, lambda: check_monotonic_urgency(mutant, examples=100))
    caught = []
    for check in checks:
        try:
            check()
        except CheckFailedError as failure:
            caught.append(failure.check)
            break
    assert caught, f"{label} was not caught"
