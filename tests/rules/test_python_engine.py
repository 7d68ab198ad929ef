"""The compiled python engine agrees with the reference meaning of conditions."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referralkit.errors import RulesError
from referralkit.rules import (
    Compare,
    HitPolicy,
    Kind,
    Op,
    PythonEngine,
    Rule,
    Ruleset,
    evaluate_condition,
    parse,
)
from referralkit.testing._rules import facts, rulesets

DAYS = st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2028, 12, 31))


def reference_matches(ruleset: Ruleset, f: dict[str, Any], day: dt.date) -> list[int]:
    found = [
        i
        for i, rule in enumerate(ruleset.rules)
        if rule.active_on(day) and evaluate_condition(rule.when, f)
    ]
    return found[:1] if ruleset.hit_policy is HitPolicy.FIRST else found


class TestAgreesWithReference:
    @settings(max_examples=150, deadline=None)
    @given(
        rulesets(),
        st.lists(facts(), min_size=1, max_size=8),
        st.lists(DAYS, min_size=1, max_size=3),
    )
    def test_matches(
        self, ruleset: Ruleset, many: list[dict[str, Any]], days: list[dt.date]
    ) -> None:
        """For generated rulesets, facts and days: the compiled matches are the reference's."""
        engine = PythonEngine(ruleset)
        for f in many:
            for day in days:
                assert engine.matches(f, day) == reference_matches(ruleset, f, day)

    @settings(max_examples=100, deadline=None)
    @given(rulesets(hit_policy="first"), facts(), DAYS)
    def test_explain_traces_every_rule(
        self, ruleset: Ruleset, f: dict[str, Any], day: dt.date
    ) -> None:
        """explain=True traces every rule: matched ones, inactive ones, and the failing
        condition of the others; the decision itself is unchanged."""
        engine = PythonEngine(ruleset)
        plain = engine.evaluate(f, day)
        explained = engine.evaluate(f, day, explain=True)
        assert (explained.matched, explained.outputs) == (plain.matched, plain.outputs)
        assert [t.rule_id for t in explained.trace] == [r.id for r in ruleset.rules]
        for rule, trace in zip(ruleset.rules, explained.trace, strict=True):
            assert trace.ruleset == ruleset.name
            assert trace.version == ruleset.version
            assert trace.active == rule.active_on(day)
            assert trace.matched == (rule.active_on(day) and evaluate_condition(rule.when, f))
            assert (trace.failed is None) == (trace.matched or not trace.active)


def one_rule(when: dict[str, Any], **extra: Any) -> Ruleset:
    return parse(
        {
            "ruleset": {"name": "t", "kind": "urgency"},
            "rules": [{"id": "r", "when": when, "then": {"priority": "urgent"}, **extra}],
        }
    )


DAY = dt.date(2026, 6, 1)


class TestOperators:
    @pytest.mark.parametrize(
        ("when", "f", "expected"),
        [
            ({"specialty": "cardiology"}, {"specialty": "cardiology"}, True),
            ({"specialty": {"ne": "cardiology"}}, {}, False),
            ({"specialty": {"ne": "cardiology"}}, {"specialty": "oncology"}, True),
            ({"specialty": {"not_in": ["a"]}}, {}, False),
            ({"specialty": {"prefix": "card"}}, {"specialty": "cardiology"}, True),
            ({"specialty": {"prefix": ["x", "y"]}}, {}, False),
            ({"patient.age": {"gte": 65, "lt": 75}}, {"patient.age": 65}, True),
            ({"patient.age": {"gte": 65, "lt": 75}}, {"patient.age": 75}, False),
            ({"patient.age": {"gt": 1}}, {"patient.age": None}, False),
            ({"patient.pregnant": True}, {"patient.pregnant": True}, True),
            ({"patient.pregnant": False}, {"patient.pregnant": 0}, False),
            ({"date": {"gte": dt.date(2026, 1, 1)}}, {"date": dt.date(2026, 1, 1)}, True),
            ({"coverage.payer": {"exists": True}}, {"coverage.payer": "x"}, True),
            ({"coverage.payer": {"missing": True}}, {"coverage.payer": None}, True),
            ({"diagnoses": {"any_prefix": ["C"]}}, {"diagnoses": ["R07", "C50.9"]}, True),
            ({"diagnoses": {"all_prefix": ["C"]}}, {"diagnoses": []}, False),
            ({"diagnoses": {"all_prefix": ["C"]}}, {"diagnoses": ["C1", "C2"]}, True),
            ({"diagnoses": {"none_prefix": ["C"]}}, {"diagnoses": ["R07"]}, True),
            ({"diagnoses": {"none_prefix": ["C"]}}, {}, False),
            ({"diagnoses": {"any_in": ["C50"]}}, {"diagnoses": ["C50"]}, True),
            ({"diagnoses": {"all_in": ["C50", "C51"]}}, {"diagnoses": ["C50"]}, True),
            ({"diagnoses": {"none_in": ["C50"]}}, {"diagnoses": ["C51"]}, True),
            ({"not": {"specialty": "a"}}, {}, True),
            ({"any": [{"specialty": "a"}, {"patient.age": {"lt": 2}}]}, {"patient.age": 1}, True),
            ({"all": [{"specialty": "a"}, {"patient.age": {"lt": 2}}]}, {"patient.age": 1}, False),
        ],
    )
    def test_operator(self, when: dict[str, Any], f: dict[str, Any], expected: bool) -> None:
        """Each operator means what the reference says, absent facts included."""
        ruleset = one_rule(when)
        assert evaluate_condition(ruleset.rules[0].when, f) is expected
        assert (PythonEngine(ruleset).matches(f, DAY) == [0]) is expected

    def test_effective_dates_are_inclusive(self) -> None:
        """A rule is in force from valid_from through valid_to."""
        engine = PythonEngine(
            one_rule({}, valid_from=dt.date(2026, 3, 1), valid_to=dt.date(2026, 3, 31))
        )
        assert engine.matches({}, dt.date(2026, 2, 28)) == []
        assert engine.matches({}, dt.date(2026, 3, 1)) == [0]
        assert engine.matches({}, dt.date(2026, 3, 31)) == [0]
        assert engine.matches({}, dt.date(2026, 4, 1)) == []


def policy(
    hit_policy: str, *rules: tuple[str, dict[str, Any], dict[str, Any]], **header: Any
) -> PythonEngine:
    return PythonEngine(
        parse(
            {
                "ruleset": {"name": "p", "kind": "urgency", "hit_policy": hit_policy, **header},
                "rules": [{"id": i, "when": w, "then": t} for i, w, t in rules],
            }
        )
    )


RULES = (
    ("low", {}, {"priority": "routine", "score": 1, "reason": "base", "due_days": 20}),
    ("high", {"specialty": "oncology"}, {"priority": "urgent", "score": 5, "due_days": 14}),
    ("top", {"patient.age": {"lt": 2}}, {"priority": "stat", "score": 3, "due_hours": 24}),
)


class TestHitPolicies:
    def test_first(self) -> None:
        """first: the first matching rule in order."""
        engine = policy("first", *RULES)
        assert engine.evaluate({"specialty": "oncology"}, DAY).matched == ("low",)

    def test_priority_and_output_order(self) -> None:
        """priority: the highest-ranked output; output order: all, highest first."""
        f = {"specialty": "oncology", "patient.age": 1}
        assert policy("priority", *RULES).evaluate(f, DAY).matched == ("top",)
        assert policy("output order", *RULES).evaluate(f, DAY).matched == ("top", "high", "low")

    def test_collect_merges_and_aggregates(self) -> None:
        """collect: every match; ranked outputs keep the highest, windows the earliest,
        and the score is aggregated."""
        f = {"specialty": "oncology", "patient.age": 1}
        for aggregation, score in (("sum", 9.0), ("min", 1.0), ("max", 5.0), ("count", 3.0)):
            outcome = policy("collect", *RULES, aggregation=aggregation).evaluate(f, DAY)
            assert outcome.matched == ("low", "high", "top")
            assert outcome.outputs["priority"] == "stat"
            assert outcome.outputs["due_days"] == 14
            assert outcome.outputs["score"] == score
            assert outcome.outputs["reason"] == "base"

    def test_rule_order(self) -> None:
        """rule order: every match, in rule order."""
        f = {"specialty": "oncology"}
        assert policy("rule order", *RULES).evaluate(f, DAY).matched == ("low", "high")

    def test_unique_refuses_two_matches(self) -> None:
        """unique: one match is fine; two raise a RulesError naming the rules only."""
        engine = policy("unique", *RULES[1:])
        assert engine.evaluate({"specialty": "oncology"}, DAY).matched == ("high",)
        with pytest.raises(RulesError, match="high, top") as info:
            engine.evaluate({"specialty": "oncology", "patient.age": 1}, DAY)
        assert "oncology" not in str(info.value)

    def test_any_allows_equal_outputs_only(self) -> None:
        """any: several matches must agree on their outputs."""
        same = (
            ("a", {"specialty": "x"}, {"priority": "urgent"}),
            ("b", {"patient.age": {"lt": 5}}, {"priority": "urgent"}),
        )
        f = {"specialty": "x", "patient.age": 1}
        assert policy("any", *same).evaluate(f, DAY).matched == ("a",)
        with pytest.raises(RulesError, match="different outputs"):
            policy("any", *RULES).evaluate({"specialty": "oncology"}, DAY)

    def test_no_match(self) -> None:
        """No match: no rule ids, no outputs."""
        engine = policy("first", RULES[1])
        outcome = engine.evaluate({}, DAY)
        assert (outcome.matched, dict(outcome.outputs)) == ((), {})


class TestCompilation:
    def test_index_and_cache_are_thread_safe(self) -> None:
        """Threads evaluating one engine get the reference answers."""
        ruleset = Ruleset(
            name="t",
            kind=Kind.URGENCY,
            hit_policy=HitPolicy.COLLECT,
            rules=tuple(
                Rule(f"r{i}", Compare("specialty", Op.EQ, f"s{i % 7}"), {"priority": "urgent"})
                for i in range(40)
            ),
        )
        engine = PythonEngine(ruleset)
        errors: list[str] = []

        def work(k: int) -> None:
            for i in range(300):
                f = {"specialty": f"s{(i + k) % 9}"}
                if engine.matches(f, DAY) != reference_matches(ruleset, f, DAY):
                    errors.append(f"{k}:{i}")

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []

    def test_values_are_never_spliced_into_code(self) -> None:
        """A value that looks like Python stays a value."""
        evil = "x') or True or ('"
        engine = PythonEngine(one_rule({"specialty": evil}))
        assert engine.matches({"specialty": "cardiology"}, DAY) == []
        assert engine.matches({"specialty": evil}, DAY) == [0]
