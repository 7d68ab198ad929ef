"""The python engine's corners that mutation testing found unpinned (issue 11): conditions on
fields beyond the index limit, the merge of list outputs from several rules, aggregation with
no score, and ``first()`` under a hit policy that collects every match.

Each test here was written against a mutant of ``rules/engine.py`` that the rest of the suite
let live; ``nox -s mutation`` runs the mutation tool again (docs: benchmarks/README.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from referralkit.rules import (
    Compare,
    HitPolicy,
    Op,
    PythonEngine,
    Ruleset,
    evaluate_condition,
    parse,
)
from referralkit.rules import engine as engine_module
from referralkit.rules.engine import Evaluation, resolve

DAY = dt.date(2026, 6, 1)

# six equality conditions on text facts, each used once: the index takes four of them (by
# name), the other two stay in the residual test
SIX = {
    "authorization.status": "approved",
    "coverage.payer": "Acme Health",
    "coverage.plan": "Acme HMO Gold",
    "coverage.plan_type": "HMO",
    "patient.language": "es",
    "specialty": "cardiology",
}


def ruleset(
    kind: str, hit_policy: str, *rules: tuple[str, Any, dict[str, Any]], **header: Any
) -> Ruleset:
    return parse(
        {
            "ruleset": {"name": "edge", "kind": kind, "hit_policy": hit_policy, **header},
            "rules": [{"id": i, "when": w, "then": t} for i, w, t in rules],
        }
    )


class TestBeyondTheIndexLimit:
    def test_the_index_holds_at_most_four_fields(self) -> None:
        """The premise of the tests below: six candidate fields, four indexed."""
        engine = PythonEngine(ruleset("urgency", "first", ("r", SIX, {"priority": "urgent"})))
        (view,) = {id(v): v for v in engine._views}.values()
        assert len(SIX) > engine_module._MAX_INDEX_FIELDS == len(view.fields) == 4
        assert set(view.fields) < set(SIX)

    @pytest.mark.parametrize("hit_policy", ["first", "collect"])
    @pytest.mark.parametrize("changed", sorted(SIX))
    def test_every_condition_still_decides(self, hit_policy: str, changed: str) -> None:
        """A rule with more equality conditions than the index takes matches only facts that
        meet all of them: the fields left out of the index are tested, and each alone can
        make the rule fail."""
        engine = PythonEngine(ruleset("urgency", hit_policy, ("r", SIX, {"priority": "urgent"})))
        assert engine.matches(dict(SIX), DAY) == [0]
        facts = {**SIX, changed: "something else"}
        assert not evaluate_condition(engine.ruleset.rules[0].when, facts)
        assert engine.matches(facts, DAY) == []
        assert engine.first(facts, DAY) is None
        assert engine.evaluate(facts, DAY).matched == ()
        del facts[changed]
        assert engine.matches(facts, DAY) == []

    def test_lists_of_values_beyond_the_limit(self) -> None:
        """``in`` on a field beyond the index keeps every listed value and only those."""
        when = {**SIX, "specialty": {"in": ["cardiology", "oncology"]}}
        engine = PythonEngine(ruleset("urgency", "first", ("r", when, {"priority": "urgent"})))
        assert "specialty" not in {id(v): v for v in engine._views}.popitem()[1].fields
        for specialty, expected in (("cardiology", [0]), ("oncology", [0]), ("dermatology", [])):
            assert engine.matches({**SIX, "specialty": specialty}, DAY) == expected

    def test_rules_sharing_some_indexed_fields(self) -> None:
        """Two rules, one beyond the limit: each is tested on its own conditions."""
        narrow = ("narrow", SIX, {"priority": "stat"})
        wide = ("wide", {"coverage.payer": "Acme Health"}, {"priority": "routine"})
        engine = PythonEngine(ruleset("urgency", "first", narrow, wide))
        assert engine.evaluate(dict(SIX), DAY).matched == ("narrow",)
        off = {**SIX, "specialty": "oncology"}
        assert engine.evaluate(off, DAY).matched == ("wide",)


class TestMergingListOutputs:
    RULES = (
        ("a", {"specialty": "oncology"}, {"covered": "conditional", "info_needed": ["performer"]}),
        (
            "b",
            {"coverage.payer": "Acme Health"},
            {
                "covered": "covered",
                "pa_needed": "conditional",
                "info_needed": ["location", "performer"],
                "alternatives": ["x"],
            },
        ),
        (
            "c",
            {"patient.language": "es"},
            {"doc_needed": "conditional", "info_needed": ["timeframe"]},
        ),
    )

    @pytest.mark.parametrize("hit_policy", ["collect", "rule order"])
    def test_union_in_rule_order_without_repeats(self, hit_policy: str) -> None:
        """Several matching rules with a list output: the union, first seen first, each value
        once; the strictest ranked output wins."""
        engine = PythonEngine(ruleset("coverage", hit_policy, *self.RULES))
        facts = {"specialty": "oncology", "coverage.payer": "Acme Health", "patient.language": "es"}
        outcome = engine.evaluate(facts, DAY)
        assert outcome.matched == ("a", "b", "c")
        assert outcome.outputs["info_needed"] == ("performer", "location", "timeframe")
        assert outcome.outputs["alternatives"] == ("x",)
        assert outcome.outputs["covered"] == "conditional"

    def test_one_rule_keeps_its_list(self) -> None:
        """A single match: its list as written."""
        engine = PythonEngine(ruleset("coverage", "collect", *self.RULES))
        outcome = engine.evaluate({"coverage.payer": "Acme Health"}, DAY)
        assert outcome.outputs["info_needed"] == ("location", "performer")

    def test_output_order_ranks_before_merging(self) -> None:
        """output order: the strictest rule's list comes first."""
        engine = PythonEngine(ruleset("coverage", "output order", *self.RULES[:2]))
        facts = {"specialty": "oncology", "coverage.payer": "Acme Health"}
        outcome = engine.evaluate(facts, DAY)
        assert outcome.matched == ("a", "b")
        assert outcome.outputs["info_needed"] == ("performer", "location")

    def test_earliest_window_and_strictest_priority(self) -> None:
        """Windows merge to the earliest, whichever rule comes first."""
        rules = (
            ("late", {}, {"priority": "stat", "due_hours": 48}),
            ("early", {"specialty": "x"}, {"priority": "routine", "due_hours": 4}),
            ("later", {"specialty": "x"}, {"priority": "urgent", "due_hours": 72}),
        )
        outcome = PythonEngine(ruleset("urgency", "collect", *rules)).evaluate(
            {"specialty": "x"}, DAY
        )
        assert outcome.outputs == {"priority": "stat", "due_hours": 4}


class TestAggregationWithoutScores:
    RULES = (
        ("a", {}, {"priority": "routine"}),
        ("b", {"specialty": "x"}, {"priority": "urgent"}),
    )

    @pytest.mark.parametrize("aggregation", ["sum", "min", "max"])
    def test_no_score_aggregates_to_zero(self, aggregation: str) -> None:
        """Matching rules that set no score: sum, min and max give 0.0 (a float, not None)."""
        engine = PythonEngine(ruleset("urgency", "collect", *self.RULES, aggregation=aggregation))
        for facts in ({}, {"specialty": "x"}):
            score = engine.evaluate(facts, DAY).outputs["score"]
            assert score == 0.0
            assert type(score) is float

    def test_count_counts_scores(self) -> None:
        """count: as in DMN, the number of scores set (0.0 when no matching rule sets one)."""
        engine = PythonEngine(ruleset("urgency", "collect", *self.RULES, aggregation="count"))
        score = engine.evaluate({"specialty": "x"}, DAY).outputs["score"]
        assert (score, type(score)) == (0.0, float)

    @pytest.mark.parametrize(
        ("aggregation", "expected"), [("sum", 3.5), ("min", 1.0), ("max", 2.5), ("count", 2.0)]
    )
    def test_only_scored_rules_enter_sum_min_max(self, aggregation: str, expected: float) -> None:
        """A rule without a score does not count as 0 in min, nor at all in sum, max or
        count."""
        rules = (
            ("a", {}, {"priority": "routine", "score": 2.5}),
            ("b", {}, {"priority": "routine"}),
            ("c", {}, {"priority": "routine", "score": 1}),
        )
        engine = PythonEngine(ruleset("urgency", "collect", *rules, aggregation=aggregation))
        score = engine.evaluate({}, DAY).outputs["score"]
        assert (score, type(score)) == (expected, float)

    def test_no_match_sets_no_score(self) -> None:
        """Nothing matched: no score at all, aggregated or not."""
        engine = PythonEngine(ruleset("urgency", "collect", self.RULES[1], aggregation="sum"))
        assert engine.evaluate({}, DAY) == Evaluation(engine.ruleset, (), {})

    def test_resolve_directly(self) -> None:
        """resolve, shared by every engine, gives the same."""
        rs = ruleset("urgency", "collect", *self.RULES, aggregation="max")
        assert resolve(rs, [0, 1]).outputs == {"priority": "urgent", "score": 0.0}


class TestFirstUnderEveryHitPolicy:
    RULES = (
        ("a", {"specialty": "x"}, {"priority": "routine", "due_days": 30}),
        ("b", {"coverage.payer": "p"}, {"priority": "routine", "due_days": 30}),
        ("c", {}, {"priority": "routine", "due_days": 30}),
    )

    @pytest.mark.parametrize("hit_policy", [p.value for p in HitPolicy])
    def test_first_is_the_first_match_in_rule_order(self, hit_policy: str) -> None:
        """first(): the index of the first matching rule whatever the hit policy, as
        matches() lists them; None when nothing matches."""
        engine = PythonEngine(ruleset("urgency", hit_policy, *self.RULES))
        for facts, expected in (
            ({"specialty": "x", "coverage.payer": "p"}, 0),
            ({"coverage.payer": "p"}, 1),
            ({"specialty": "y"}, 2),
        ):
            assert engine.first(facts, DAY) == expected
            assert engine.matches(facts, DAY)[0] == expected
        bare = PythonEngine(ruleset("urgency", hit_policy, *self.RULES[:2]))
        assert bare.first({"specialty": "y"}, DAY) is None
        assert bare.matches({"specialty": "y"}, DAY) == []

    def test_collect_matches_every_rule(self) -> None:
        """collect: matches() lists every matching rule, first() only the first."""
        engine = PythonEngine(ruleset("urgency", "collect", *self.RULES))
        facts = {"specialty": "x", "coverage.payer": "p"}
        assert engine.matches(facts, DAY) == [0, 1, 2]
        assert engine.first(facts, DAY) == 0
        assert engine.single(1).matched == ("b",)


class TestSegmentsAndDiagnostics:
    """Mutants the sampled run of ``nox -s mutation`` found alive: the fast paths under
    effective dates, the last representable day, the index's choice of fields, and what the
    engine says about itself."""

    RULES = (
        ("spring", {"specialty": "x"}, {"priority": "urgent"}),
        ("always", {}, {"priority": "routine"}),
    )

    def dated(self, hit_policy: str) -> PythonEngine:
        return PythonEngine(
            parse(
                {
                    "ruleset": {"name": "dated", "kind": "urgency", "hit_policy": hit_policy},
                    "rules": [
                        {
                            "id": "spring",
                            "when": {"specialty": "x"},
                            "then": {"priority": "urgent"},
                            "valid_from": dt.date(2026, 3, 1),
                            "valid_to": dt.date(2026, 5, 31),
                        },
                        {"id": "always", "then": {"priority": "routine"}},
                    ],
                }
            )
        )

    @pytest.mark.parametrize("hit_policy", ["first", "collect"])
    def test_every_entry_point_reads_the_day(self, hit_policy: str) -> None:
        """matches, first and evaluate each pick the rules in force on the day given."""
        engine = self.dated(hit_policy)
        facts = {"specialty": "x"}
        for day, first in (
            (dt.date(2026, 2, 28), 1),
            (dt.date(2026, 3, 1), 0),
            (dt.date(2026, 5, 31), 0),
            (dt.date(2026, 6, 1), 1),
        ):
            assert engine.first(facts, day) == first
            assert engine.matches(facts, day)[0] == first
            assert engine.evaluate(facts, day).matched[0] == ("spring", "always")[first]

    def test_a_rule_in_force_to_the_last_day(self) -> None:
        """valid_to 9999-12-31: in force on that day, with no day after it to mark."""
        engine = PythonEngine(
            parse(
                {
                    "ruleset": {"name": "forever", "kind": "urgency"},
                    "rules": [
                        {
                            "id": "r",
                            "then": {"priority": "urgent"},
                            "valid_from": dt.date(2026, 1, 1),
                            "valid_to": dt.date.max,
                        }
                    ],
                }
            )
        )
        assert engine.first({}, dt.date.max) == 0
        assert engine.first({}, dt.date(2025, 12, 31)) is None

    def test_the_index_takes_the_most_used_fields(self) -> None:
        """Of more candidate fields than it holds, the index takes those most rules test."""
        rules = [
            (
                f"r{i}",
                {
                    "specialty": f"s{i}",
                    "patient.language": "es",
                    "priority": "urgent",
                    "authorization.status": "approved",
                    **({"coverage.payer": "p"} if i < 3 else {}),
                    **({"coverage.plan": "q"} if i == 0 else {}),
                },
                {"priority": "urgent"},
            )
            for i in range(4)
        ]
        engine = PythonEngine(ruleset("urgency", "collect", *rules))
        (view,) = {id(v): v for v in engine._views}.values()
        assert set(view.fields) == {
            "specialty",
            "patient.language",
            "priority",
            "authorization.status",
        }

    def test_an_event_ruleset_is_sent_to_the_event_engine(self) -> None:
        """The python engine refuses event rules and says which class runs them."""
        from referralkit.errors import RulesError
        from referralkit.rules import load
        from referralkit.rules.model import Kind
        from referralkit.rules.policies import shipped_paths

        events = load(shipped_paths(Kind.EVENT)[0])
        with pytest.raises(RulesError, match=r"holds event patterns: run it with .*EventRules"):
            PythonEngine(events)

    def test_generated_code_is_named_as_such(self) -> None:
        """Tracebacks through generated code say where it comes from."""
        engine = PythonEngine(ruleset("urgency", "first", *self.RULES))
        (view,) = {id(v): v for v in engine._views}.values()
        assert view.key.__code__.co_filename == "<referralkit-rules>"
        assert view.lookup(view.key({})).__code__.co_filename == "<referralkit-rules>"

    def test_a_condition_of_the_longest_length_shown_whole(self) -> None:
        """A failed condition of up to 500 characters is shown whole; longer ones are cut."""
        prefix = str(Compare("specialty", Op.EQ, ""))
        for length, whole in ((500, True), (501, False)):
            value = "a" * (length - len(prefix))
            condition = Compare("specialty", Op.EQ, value)
            assert len(str(condition)) == length
            assert (engine_module._described(condition) == str(condition)) is whole
