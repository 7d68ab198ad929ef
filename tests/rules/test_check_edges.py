"""A condition's text, a checker warning to the letter, the line of a limit broken in
Python by a ruleset loaded from a file, and the limits' problems of a ruleset built in
Python.

Each test pins a behaviour that mutation testing (``nox -s mutation``) found no test held."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import attrs
import pytest

from referralkit.errors import ValidationError
from referralkit.model import Covered
from referralkit.rules.check import check
from referralkit.rules.facts import FactType, extract, utc
from referralkit.rules.limits import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_NUMBER,
    MAX_RULES,
    _Checker,
    problems,
)
from referralkit.rules.loader import load, loads
from referralkit.rules.model import All, AnyOf, Compare, Kind, Not, Op, Rule, Ruleset
from referralkit.rules.policies import coverage_decision
from referralkit.testing import sample_request

CARDIOLOGY = Compare("specialty", Op.EQ, "cardiology")
OLD = Compare("patient.age", Op.GTE, 65)
VERSION_V = "b2bcffdb2381"  # sha-256 of the normal form, first 12 hex digits


def test_a_group_of_one_is_written_without_parentheses() -> None:
    """Only a group of several conditions inside another is parenthesised."""
    assert str(All((AnyOf((CARDIOLOGY,)), OLD))) == (
        "specialty eq 'cardiology' and patient.age gte 65"
    )
    assert str(AnyOf((All((CARDIOLOGY,)), OLD))) == (
        "specialty eq 'cardiology' or patient.age gte 65"
    )
    assert str(All((AnyOf((CARDIOLOGY, OLD)), OLD))) == (
        "(specialty eq 'cardiology' or patient.age gte 65) and patient.age gte 65"
    )


def test_covered_without_pa_needed_is_a_warning_on_then() -> None:
    ruleset = loads(
        '[ruleset]\nname = "t"\nkind = "coverage"\n\n[[rules]]\nid = "a"\n'
        'when = { specialty = "cardiology" }\nthen = { covered = "covered" }\n',
        source="t.toml",
    )
    [warning] = check(ruleset)
    assert (warning.rule_id, warning.field, warning.severity, warning.message) == (
        "a",
        "then",
        "warning",
        "says covered without pa_needed: decisions will say 'indeterminate'",
    )


def test_a_limit_broken_after_loading_is_found_on_the_files_line(tmp_path: Path) -> None:
    """A ruleset loaded from a file and then changed in Python is checked against the
    limits again, each problem on the line of the file where its rule's field is."""
    path = tmp_path / "u.toml"
    path.write_text(
        '[ruleset]\nname = "u"\nkind = "urgency"\n\n[[rules]]\nid = "a"\n'
        'when = { specialty = "cardiology" }\nthen = { priority = "urgent", score = 1.0 }\n'
    )
    ruleset = load(path)
    changed = attrs.evolve(ruleset.rules[0], then={"priority": "urgent", "score": float("inf")})
    [problem] = check(attrs.evolve(ruleset, rules=(changed,)))
    assert (problem.line, problem.rule_id, problem.field, problem.message) == (
        8,
        "a",
        "then.score",
        "expected a finite number of magnitude at most 1e+06",
    )


def test_a_ruleset_built_in_python_gets_each_problem_with_its_field() -> None:
    """A group whose items are not a tuple, and a negative window, each named precisely."""
    ruleset = Ruleset(
        name="p",
        kind=Kind.URGENCY,
        rules=(
            Rule("listed", All([CARDIOLOGY]), {"priority": "urgent"}),  # type: ignore[arg-type]
            Rule("negative", CARDIOLOGY, {"priority": "urgent", "due_days": -1}),
        ),
    )
    found = [(p.rule_id, p.field, p.message) for p in problems(ruleset)]
    assert found == [
        ("listed", "when", "All needs a tuple of items"),
        ("negative", "then.due_days", "expected a whole number from 0"),
    ]


def test_a_condition_writes_its_lists_and_booleans_as_in_a_rule_file() -> None:
    """A list operand as ``['a', 'b']`` and a boolean as ``true``/``false``, as a rule file
    spells them (what ``rules check`` and explanations print)."""
    assert str(Compare("specialty", Op.IN, ("cardiology", "oncology"))) == (
        "specialty in ['cardiology', 'oncology']"
    )
    assert str(Compare("target.accepting_new_patients", Op.EQ, True)) == (
        "target.accepting_new_patients eq true"
    )
    assert str(Compare("target.accepting_new_patients", Op.EQ, False)) == (
        "target.accepting_new_patients eq false"
    )


def test_a_rulesets_version_is_its_content_address() -> None:
    """The version is the content address every stored decision refers to (issue 11's
    provenance): the same rules give the same version in every release, so it is pinned."""
    ruleset = Ruleset(
        name="v",
        kind=Kind.COVERAGE,
        rules=(
            Rule("a", All((CARDIOLOGY, Not(OLD))), {"covered": "covered"}),
            Rule("b", AnyOf((OLD,)), {"covered": "not-covered"}),
        ),
    )
    assert ruleset.version == VERSION_V


def test_a_condition_too_deep_or_too_long_in_python_is_refused() -> None:
    """A group nested exactly to the depth limit is still checked to its leaves; more
    comparisons than the limit in one rule are refused, with the limit named."""
    deep: Any = Compare("no.such.fact", Op.EQ, "x")
    for _ in range(MAX_DEPTH):
        deep = All((deep,))
    long = All(tuple(OLD for _ in range(MAX_CONDITIONS + 1)))
    ruleset = Ruleset(
        name="p",
        kind=Kind.COVERAGE,
        rules=(
            Rule("deep", deep, {"covered": "covered"}),
            Rule("long", long, {"covered": "covered"}),
        ),
    )
    found = [(p.rule_id, p.field, p.message) for p in problems(ruleset)]
    assert found == [
        ("deep", "when", "unknown fact 'no.such.fact'"),
        ("long", "when", f"at most {MAX_CONDITIONS} comparisons in one rule"),
    ]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e16, -1e16])
def test_a_number_operand_must_be_finite_and_bounded(value: float) -> None:
    """The operand rule for a number fact (none is shipped yet: the check is called
    directly): NaN, infinities and magnitudes over the limit are all refused."""
    assert _Checker.scalar(FactType.NUMBER, None, value, False) == (
        f"expected a finite number of magnitude at most {MAX_NUMBER:g}"
    )
    assert _Checker.scalar(FactType.NUMBER, None, MAX_NUMBER, False) is None


def test_a_date_is_not_an_instant() -> None:
    """A date (no time, no zone) where an instant is expected is a ValidationError naming
    the field, not an AttributeError."""
    with pytest.raises(ValidationError) as info:
        utc(dt.date(2026, 2, 2), "now")
    assert info.value.path == "now"


def test_a_referral_without_a_target_has_an_unknown_network_status() -> None:
    at = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    referral = sample_request().referral("no-target", at, received=True)
    referral = attrs.evolve(referral, target=None)
    facts = extract(referral, at)
    assert facts["network_status"] == "unknown"
    assert "target.accepting_new_patients" not in facts


def test_no_matching_rule_gives_the_no_rule_matched_reason() -> None:
    decision = coverage_decision(None, {})
    assert (decision.covered, decision.reason) == (Covered.INDETERMINATE, "no-rule-matched")


def test_a_rulesets_own_fields_built_in_python_are_checked() -> None:
    """A blank name, a description that is not a string or holds a NUL, and more rules
    than the limit: each refused, on the ruleset's own field."""
    rule = Rule("a", CARDIOLOGY, {"covered": "covered"})
    cases = [
        (Ruleset(name="  ", kind=Kind.COVERAGE, rules=(rule,)), "name", "must not be blank"),
        (
            Ruleset(name="p", kind=Kind.COVERAGE, rules=(rule,), description=5),  # type: ignore[arg-type]
            "description",
            "expected a string, got int",
        ),
        (
            Ruleset(name="p", kind=Kind.COVERAGE, rules=(rule,), description="a\x00b"),
            "description",
            "contains a NUL character",
        ),
        (
            Ruleset(name="p", kind=Kind.COVERAGE, rules=(rule,) * (MAX_RULES + 1)),
            "rules",
            f"at most {MAX_RULES} rules (got {MAX_RULES + 1})",
        ),
    ]
    for ruleset, field, message in cases:
        found = [(p.rule_id, p.field, p.message) for p in problems(ruleset)]
        assert found == [(None, field, message)]


def test_a_rules_description_and_citation_built_in_python_are_checked() -> None:
    rules = (
        Rule("a", CARDIOLOGY, {"covered": "covered"}, description="x\x00"),
        Rule("b", CARDIOLOGY, {"covered": "covered"}, citation=7),  # type: ignore[arg-type]
    )
    found = [
        (p.rule_id, p.field, p.message)
        for p in problems(Ruleset(name="p", kind=Kind.COVERAGE, rules=rules))
    ]
    assert found == [
        ("a", "description", "contains a NUL character"),
        ("b", "citation", "expected a string, got int"),
    ]


def test_info_needed_without_a_conditional_output_built_in_python_is_refused() -> None:
    then = {"covered": "covered", "info_needed": ("performer",)}
    ruleset = Ruleset(name="p", kind=Kind.COVERAGE, rules=(Rule("a", CARDIOLOGY, then),))
    assert [(p.rule_id, p.field, p.message) for p in problems(ruleset)] == [
        ("a", "then.info_needed", "info_needed only goes with a 'conditional' output")
    ]
