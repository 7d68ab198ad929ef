"""Property-test rules with referralkit's ready-made checks: a pytest module to copy.

Run it with ``pytest examples/property_test_rules.py`` or as a script (it calls the same
functions). Point the policies at your own TOML files instead of the shipped examples.

Needs the ``test`` extra, for Hypothesis: ``pip install ".[test]"`` in a checkout of
referralkit.
"""

# extras: test

from __future__ import annotations

from referralkit.rules import Kind, load
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy, shipped_paths
from referralkit.testing import (
    check_agreement,
    check_determinism,
    check_effective_dates,
    check_monotonic_urgency,
    check_no_conflicts,
    check_rules_fire,
    check_totality,
)

COVERAGE = CoveragePolicy.shipped()  # CoveragePolicy.from_files(["my-payer.toml", ...])
URGENCY = UrgencyPolicy.shipped()


def test_every_referral_gets_a_coverage_decision() -> None:
    # fallback=False: a "manual review" catch-all alone does not count as a decision
    check_totality(COVERAGE, examples=100, fallback=False)


def test_every_rule_decides_some_referral() -> None:
    check_rules_fire(COVERAGE, examples=1000)
    check_rules_fire(URGENCY, examples=300)


def test_the_engines_agree() -> None:
    # skipped (the result says why) where durable-rules is not installed
    check_agreement(URGENCY, examples=100)


def test_coverage_is_deterministic() -> None:
    check_determinism(COVERAGE, examples=50)


def test_a_worse_picture_never_lowers_urgency() -> None:
    check_monotonic_urgency(URGENCY, examples=200)


def test_rulesets_keep_their_hit_policies_and_dates() -> None:
    for path in shipped_paths(Kind.COVERAGE) + shipped_paths(Kind.URGENCY):
        ruleset = load(path)
        check_no_conflicts(ruleset, examples=30)
        check_effective_dates(ruleset, examples=30)


if __name__ == "__main__":
    test_every_referral_gets_a_coverage_decision()
    test_every_rule_decides_some_referral()
    test_the_engines_agree()
    test_coverage_is_deterministic()
    test_a_worse_picture_never_lowers_urgency()
    test_rulesets_keep_their_hit_policies_and_dates()
    print("all rule properties hold")
