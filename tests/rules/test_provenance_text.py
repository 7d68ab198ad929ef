"""The text of an explanation and of a replay, line for line (``nox -s mutation`` found these
lines read by no test: which rulesets were consulted, the rules grouped by ruleset, the
"the same"/"DIFFERENT" verdict with its differences, a custom decider's provenance)."""

from __future__ import annotations

import datetime as dt
import json

import attrs
import pytest

from referralkit.errors import RulesError, ValidationError
from referralkit.rules import loads
from referralkit.rules.provenance import (
    UNVERSIONED,
    DecisionExplanation,
    Difference,
    Explanation,
    Provenance,
    Replay,
    ReplayedDecision,
    RuleOutcome,
    canonical_json,
    ruleset_digest,
    ruleset_document,
    ruleset_from_json,
)

AT = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
POLICY = Provenance("0123456789abcdef" * 4, "CoveragePolicy")
COVERED = Difference("covered", "covered", "not-covered")


def test_a_rule_outcome_reads_with_its_failed_condition_and_description() -> None:
    assert str(RuleOutcome("rs", "hmo", "no match", "HMO members", "plan eq 'HMO'")) == (
        "hmo: no match (plan eq 'HMO' is false) -- HMO members"
    )
    assert str(RuleOutcome("rs", "hmo", "fired")) == "hmo: fired"


def test_a_provenance_reads_as_its_policy_or_what_made_it() -> None:
    assert str(POLICY) == "policy 0123456789ab"
    assert str(Provenance(UNVERSIONED, "MyDecider")) == "unversioned (MyDecider: not rule-based)"
    assert str(Provenance(UNVERSIONED)) == "unversioned (a custom decider: not rule-based)"


EXPLAINED = DecisionExplanation(
    "coverage",
    AT,
    POLICY,
    "covered=covered",
    ("a", "b"),
    rulesets=("first (aaa)", "second (bbb)"),
    rules=(
        RuleOutcome("first", "a", "fired"),
        RuleOutcome("first", "b", "fired"),
        RuleOutcome("second", "c", "not consulted", "a fallback"),
        RuleOutcome("first", "d", "no match", "", "age gte 18"),
    ),
    reproduced=True,
)
HEAD = [
    "coverage: covered=covered",
    "  decided 2026-03-02 09:30 UTC with policy 0123456789ab",
    "  rulesets consulted in order: first (aaa), second (bbb)",
    "  rules that fired: a, b",
    "  ruleset first:",
    "    a: fired",
    "    b: fired",
    "  ruleset second:",
    "    c: not consulted -- a fallback",
    "  ruleset first:",
    "    d: no match (age gte 18 is false)",
]


def test_an_explanation_groups_the_rules_by_ruleset_and_says_whether_it_reproduces() -> None:
    assert EXPLAINED.lines() == [*HEAD, "  decided again with the stored rules: the same"]
    different = attrs.evolve(EXPLAINED, reproduced=False, differences=(COVERED,), note="n")
    assert str(different) == "\n".join(
        [
            *HEAD,
            "  decided again with the stored rules: DIFFERENT",
            "    covered: covered -> not-covered",
            "  n",
        ]
    )
    bare = DecisionExplanation("urgency", AT, POLICY, "priority=routine", ())
    assert bare.lines() == [
        "urgency: priority=routine",
        "  decided 2026-03-02 09:30 UTC with policy 0123456789ab",
        "  rules that fired: none",
    ]


def test_an_explanation_of_a_referral_shows_both_kinds() -> None:
    assert str(Explanation("R-1", None, None)) == (
        "referral R-1: why it got its decisions\n"
        "coverage: no decision stored\n"
        "urgency: no decision stored"
    )
    assert str(Explanation("R-1", EXPLAINED, None)).splitlines() == [
        "referral R-1: why it got its decisions",
        *EXPLAINED.lines(),
        "urgency: no decision stored",
    ]


def test_a_replay_reads_as_both_kinds_decided_again() -> None:
    coverage = ReplayedDecision(
        "coverage", AT, AT, POLICY, POLICY.policy, "covered=covered; rules a", (COVERED,)
    )
    urgency = ReplayedDecision("urgency", AT, None, None, None, note="no decision stored")
    replayed = Replay("R-1", None, coverage, urgency)
    assert str(replayed).splitlines() == [
        "referral R-1: replayed as each decision was made",
        "coverage: decided again as of 2026-03-02 09:30 UTC with policy 0123456789ab",
        "  replayed: covered=covered; rules a",
        "  stored 2026-03-02 09:30 UTC with policy 0123456789ab: DIFFERENT",
        "    covered: covered -> not-covered",
        "urgency: not replayed: no decision stored",
    ]
    assert not replayed.same
    assert str(attrs.evolve(replayed, as_of=AT)).splitlines()[0] == (
        "referral R-1: replayed as of 2026-03-02 09:30 UTC"
    )


def test_a_replay_without_a_moment_a_stored_decision_or_differences() -> None:
    bare = ReplayedDecision("urgency", None, None, None, POLICY.policy, "priority=routine; rules -")
    assert bare.lines() == [
        "urgency: decided again as of - with policy 0123456789ab",
        "  replayed: priority=routine; rules -",
        "  no stored decision to compare with",
    ]
    same = attrs.evolve(bare, decided_at=AT, stored_at=AT, stored=POLICY, note="n")
    assert same.lines()[2:] == [
        "  stored 2026-03-02 09:30 UTC with policy 0123456789ab: the same",
        "  n",
    ]


def test_an_unnamed_ruleset_still_heads_its_rules() -> None:
    unnamed = DecisionExplanation(
        "coverage", AT, POLICY, "covered=covered", (), rules=(RuleOutcome("", "a", "fired"),)
    )
    assert unnamed.lines()[3:] == ["  ruleset :", "    a: fired"]


def test_the_stored_policy_document_lists_its_kind_and_rulesets() -> None:
    from referralkit.rules.policies import CoveragePolicy
    from referralkit.rules.provenance import policy_versions

    *rulesets, document = policy_versions(CoveragePolicy.shipped(), AT)
    assert json.loads(document.document) == {
        "kind": "coverage",
        "rulesets": [v.digest for v in rulesets],
    }


def test_documents_refuse_what_they_cannot_write_or_read_naming_it() -> None:
    """The errors name the field or the thing refused (``nox -s mutation``: no test read
    them), and a ruleset read back from the store says where it came from."""
    with pytest.raises(ValidationError) as refused:
        ruleset_document("not a ruleset")  # type: ignore[arg-type]
    assert refused.value.path == "ruleset"
    with pytest.raises(ValidationError) as refused:
        Provenance.from_payload({"provenance": {"policy": 7}})
    assert refused.value.path == "provenance"
    assert str(refused.value) == "provenance: expected a policy digest or marker"
    ruleset = loads(RULESET)
    odd = attrs.evolve(ruleset, rules=(attrs.evolve(ruleset.rules[0], when="x"),))
    with pytest.raises(RulesError) as unwritable:
        ruleset_document(odd)
    assert str(unwritable.value) == "cannot write a str condition"
    stored = ruleset_from_json(canonical_json(ruleset_document(ruleset)))
    assert stored.source == "<stored ruleset>"
    assert ruleset_digest(stored) == ruleset_digest(ruleset)


RULESET = """
[ruleset]
name = "small"
kind = "coverage"

[[rules]]
id = "hmo"
when = { "coverage.plan_type" = "HMO" }
then = { covered = "covered" }
"""
