"""The rule loader: TOML and dictionaries in, rulesets or precise problems out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from referralkit.errors import RulesError
from referralkit.rules import (
    All,
    Always,
    AnyOf,
    Compare,
    HitPolicy,
    Kind,
    Not,
    Op,
    RulesetError,
    load,
    loads,
    parse,
)

GOOD = """
[ruleset]
name = "example"
kind = "coverage"
hit_policy = "first"
description = "test"

[[rules]]
id = "hmo"
description = "HMO members need a referral"
citation = "certificate §4.2"
when = { "coverage.plan_type" = "HMO", specialty = { not_in = ["obstetrics"] } }
then = { covered = "conditional", pa_needed = "no-auth", info_needed = ["performer"] }

[[rules]]
id = "imaging"
valid_from = 2026-01-01
valid_to = 2026-12-31
when = { services = { any_prefix = ["7055"] }, any = [
    { "patient.age" = { gte = 65 } }, { not = { "coverage.payer" = "Acme" } },
] }
then = { covered = "covered", pa_needed = "auth-needed", doc_needed = "clinical" }
"""


def ruleset_data(**rule: Any) -> dict[str, Any]:
    base = {"id": "r1", "then": {"covered": "covered", "pa_needed": "no-auth"}}
    base.update(rule)
    return {"ruleset": {"name": "t", "kind": "coverage"}, "rules": [base]}


def problems_of(data: Any) -> list[str]:
    with pytest.raises(RulesetError) as info:
        parse(data)
    return [str(p) for p in info.value.problems]


class TestLoading:
    def test_a_good_file(self, tmp_path: Path) -> None:
        """A well-formed file loads with its conditions, outputs, dates and source."""
        path = tmp_path / "good.toml"
        path.write_text(GOOD)
        ruleset = load(path)
        assert (ruleset.name, ruleset.kind, ruleset.hit_policy) == (
            "example",
            Kind.COVERAGE,
            HitPolicy.FIRST,
        )
        assert ruleset.source == str(path)
        hmo, imaging = ruleset.rules
        assert hmo.when == All(
            (
                Compare("coverage.plan_type", Op.EQ, "HMO"),
                Compare("specialty", Op.NOT_IN, ("obstetrics",)),
            )
        )
        assert hmo.then["info_needed"] == ("performer",)
        assert imaging.valid_from == dt.date(2026, 1, 1)
        assert isinstance(imaging.when, All)
        any_of = imaging.when.items[1]
        assert isinstance(any_of, AnyOf)
        assert isinstance(any_of.items[1], Not)

    def test_version_is_a_hash_of_the_content(self) -> None:
        """The version changes with the rules, not with descriptions or the source."""
        first = loads(GOOD, source="a.toml")
        assert loads(GOOD, source="b.toml").version == first.version
        assert loads(GOOD.replace("HMO members", "Members")).version == first.version
        assert loads(GOOD.replace('"7055"', '"7056"')).version != first.version

    def test_shorthands(self) -> None:
        """A list means 'in' (any_in for list facts); a scalar means eq; no when is always."""
        ruleset = parse(
            {
                "ruleset": {"name": "t", "kind": "urgency"},
                "rules": [
                    {"id": "a", "when": {"specialty": ["a", "b"]}, "then": {"priority": "urgent"}},
                    {"id": "b", "when": {"diagnoses": "C50"}, "then": {"priority": "urgent"}},
                    {"id": "c", "then": {"priority": "routine"}},
                ],
            }
        )
        a, b, c = ruleset.rules
        assert a.when == Compare("specialty", Op.IN, ("a", "b"))
        assert b.when == Compare("diagnoses", Op.ANY_IN, ("C50",))
        assert c.when == Always()

    def test_conditions_read_like_the_rule(self) -> None:
        """str() of a condition is readable."""
        rule = loads(GOOD).rules[0]
        assert str(rule.when) == "coverage.plan_type eq 'HMO' and specialty not_in ['obstetrics']"


class TestRefusals:
    def test_toml_syntax_error_names_the_line(self) -> None:
        """Invalid TOML is refused with its line."""
        with pytest.raises(RulesetError) as info:
            loads('[ruleset]\nname = "x"\nkind = \n', source="bad.toml")
        (problem,) = info.value.problems
        assert problem.source == "bad.toml"
        assert problem.line == 3

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A missing file is a RulesetError, not an OSError."""
        with pytest.raises(RulesetError, match="cannot read"):
            load(tmp_path / "missing.toml")

    def test_every_problem_names_file_line_rule_and_field(self, tmp_path: Path) -> None:
        """Unknown facts, operators, bad values: each problem says where."""
        text = GOOD.replace("specialty = {", "specialtyy = {").replace(
            '"patient.age" = { gte = 65 }', '"patient.age" = { gte = "65" }'
        )
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(RulesetError) as info:
            load(path)
        problems = info.value.problems
        assert len(problems) == 2
        unknown, wrong_type = problems
        assert (unknown.rule_id, unknown.field, unknown.line) == ("hmo", "when.specialtyy", 12)
        assert "did you mean 'specialty'" in unknown.message
        assert wrong_type.rule_id == "imaging"
        assert wrong_type.field == "when.any[0].patient.age.gte"
        assert "expected a integer value" in wrong_type.message
        assert str(unknown).startswith(f"{path}:12: rule 'hmo': field 'when.specialtyy': error")

    @pytest.mark.parametrize(
        ("rule", "expected"),
        [
            ({"when": {"specialty": {"gt": 3}}}, "does not apply to text fact"),
            ({"when": {"specialty": {"like": "x"}}}, "unknown operator 'like'"),
            ({"when": {"coverage.plan_type": "Gold"}}, "'Gold' is not one of"),
            ({"when": {"patient.age": {"lt": True}}}, "expected a integer value, got bool"),
            ({"when": {"patient.pregnant": "yes"}}, "expected a boolean value"),
            ({"when": {"date": {"gte": "2026-01-01"}}}, "expected a date value"),
            ({"when": {"services": {"any_prefix": []}}}, "takes a non-empty list"),
            ({"when": {"specialty": {"exists": False}}}, "'exists' takes true"),
            ({"when": {"all": []}}, "takes a non-empty list"),
            ({"when": "specialty"}, "a condition is a table"),
            ({"then": {"covered": "maybe"}}, "'maybe' is not one of"),
            ({"then": {"priority": "urgent"}}, "unknown coverage output 'priority'"),
            ({"then": {"alternatives": "one"}}, "expected a list"),
            ({"then": {}}, "expected a table of outputs"),
            ({"then": {"covered": "covered", "info_needed": ["performer"]}}, "only goes with"),
            ({"valid_from": "2026-01-01"}, "expected a TOML date"),
            ({"valid_from": dt.date(2026, 2, 1), "valid_to": dt.date(2026, 1, 1)}, "before"),
            ({"colour": "red"}, "unknown rule key 'colour'"),
            ({"id": "has space"}, "expected an id"),
        ],
    )
    def test_bad_rules(self, rule: dict[str, Any], expected: str) -> None:
        """Each kind of bad rule is refused with a message that says what is wrong."""
        problems = problems_of(ruleset_data(**rule))
        assert any(expected in p for p in problems), problems

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            ([], "a ruleset is a table"),
            ({"rules": []}, "missing [ruleset] table"),
            ({"ruleset": {"name": "t", "kind": "wrong"}, "rules": []}, "'wrong' is not one of"),
            ({"ruleset": {"name": "t"}, "rules": []}, "required"),
            ({"ruleset": {"name": "t", "kind": "coverage"}}, "at least one [[rules]]"),
            ({"ruleset": {"name": "t", "kind": "coverage", "extra": 1}}, "unknown ruleset key"),
            ({"ruleset": {"name": "t", "kind": "coverage"}, "rule": []}, "unknown top-level"),
            ({"ruleset": {"name": "bad name", "kind": "coverage"}}, "expected a name"),
            (
                {"ruleset": {"name": "t", "kind": "coverage", "aggregation": "sum"}},
                "aggregation only goes with hit_policy 'collect'",
            ),
            (
                {"ruleset": {"name": "t", "kind": "coverage", "hit_policy": "firsst"}},
                "did you mean 'first'",
            ),
        ],
    )
    def test_bad_headers(self, data: Any, expected: str) -> None:
        """Ruleset-level mistakes are refused too."""
        assert any(expected in p for p in problems_of(data))

    def test_duplicate_rule_ids(self) -> None:
        """Two rules with one id are refused, naming the second."""
        data = ruleset_data()
        data["rules"].append(dict(data["rules"][0]))
        (problem,) = problems_of(data)
        assert "duplicate rule id" in problem
        assert "rule 'r1'" in problem

    def test_rules_error_is_a_referralkit_error(self) -> None:
        """RulesetError is a RulesError, so one except clause catches every rules failure."""
        assert issubclass(RulesetError, RulesError)


def _problems(text: str) -> list[tuple[int | None, str | None, str | None, str]]:
    with pytest.raises(RulesetError) as refused:
        loads(text, source="f.toml")
    return [(p.line, p.rule_id, p.field, p.message) for p in refused.value.problems]


def test_toml_broken_at_the_end_has_no_line() -> None:
    assert _problems("a = [1,") == [
        (None, None, None, "invalid TOML: Invalid value (at end of document)")
    ]


def test_a_bad_aggregation_and_an_unknown_operator_name_their_fields() -> None:
    assert _problems(
        """[ruleset]
name = "x"
kind = "coverage"
aggregation = "avg"
[[rules]]
id = "r"
when = { specialty = { like = "x" } }
then = { covered = "covered" }
"""
    ) == [
        (4, None, "aggregation", "'avg' is not one of sum, min, max, count"),
        (7, "r", "when.specialty.like", "unknown operator 'like'"),
    ]


def test_event_rulesets_are_held_to_the_limits_too() -> None:
    """The event parser reads patterns; the limits every engine needs (stop signals, the
    length of a reason) are checked on event rulesets as on the others."""
    stops = ", ".join(['"scheduled"'] * 11)
    assert _problems(
        f"""[ruleset]
name = "ev"
kind = "event"
[[rules]]
id = "many"
deadline = {{ start = "received", stop = [{stops}], within = "1d" }}
then = {{ action = "notify", reason = "{"r" * 201}" }}
"""
    ) == [
        (6, "many", "deadline.stop", "at most 10 stop signals"),
        (7, "many", "then.reason", "at most 200 characters (got 201)"),
    ]
