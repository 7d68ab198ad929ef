"""Differential test: the durable engine and the python engine give the same answers.

Generated rulesets (every operator of every fact type, ``all``/``any``/``not`` nesting, all
seven hit policies, effective dates) meet generated facts (present, absent, ``None``, empty
lists) on generated days. Both engines must return the same matched indices and the same
:class:`~referralkit.rules.engine.Evaluation` (outputs, matched ids, the explain trace) or
refuse with the same :class:`~referralkit.errors.RulesError`, every time.

Under ``CI=true`` the test makes at least 2,000 comparisons (the issue's figure); it counts
them and says so.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referralkit.errors import RulesError
from referralkit.rules.durable import DurableEngine
from referralkit.rules.engine import PythonEngine, evaluate_condition
from referralkit.rules.model import HitPolicy, Kind, Ruleset
from referralkit.testing._rules import DATES, facts, rulesets

pytestmark = pytest.mark.durable

CI = os.environ.get("CI", "").lower() == "true"
CASES_PER_RULESET = 10
EXAMPLES = 230 if CI else 40
MINIMUM = 2_000 if CI else 300


def outcome(engine: Any, fs: dict[str, Any], day: dt.date) -> Any:
    """What an engine says, or the RulesError it raises (hit policies unique and any)."""
    try:
        evaluation = engine.evaluate(fs, day, explain=True)
    except RulesError as exc:
        return ("refused", str(exc))
    return ("decided", evaluation.matched, dict(evaluation.outputs), evaluation.trace)


def compare(rs: Ruleset, cases: list[tuple[dict[str, Any], dt.date]]) -> int:
    python, durable = PythonEngine(rs), DurableEngine(rs)
    for fs, day in cases:
        expected = python.matches(fs, day)
        # the python engine itself agrees with the reference semantics
        reference = [
            i for i, r in enumerate(rs.rules) if r.active_on(day) and evaluate_condition(r.when, fs)
        ]
        if rs.hit_policy is HitPolicy.FIRST:
            reference = reference[:1]
        assert expected == reference
        assert durable.matches(fs, day) == expected, (rs, fs, day)
        assert durable.first(fs, day) == python.first(fs, day)
        assert outcome(durable, fs, day) == outcome(python, fs, day)
    return len(cases)


def test_durable_engine_agrees_with_python_engine() -> None:
    count = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        rs=st.sampled_from([Kind.COVERAGE, Kind.URGENCY]).flatmap(
            lambda kind: rulesets(kind, max_rules=6, max_leaves=6)
        ),
        cases=st.lists(
            st.tuples(facts(), DATES), min_size=CASES_PER_RULESET, max_size=CASES_PER_RULESET
        ),
    )
    def check(rs: Ruleset, cases: list[tuple[dict[str, Any], dt.date]]) -> None:
        nonlocal count
        count += compare(rs, cases)

    check()
    print(f"differential: {count} comparisons, 0 disagreements")
    assert count >= MINIMUM


@given(
    rs=rulesets(hit_policy="first", max_rules=4),
    cases=st.lists(st.tuples(facts(), DATES), min_size=5, max_size=5),
)
@settings(max_examples=15, deadline=None, database=None)
def test_first_hit_policy_agrees(rs: Ruleset, cases: list[tuple[dict[str, Any], dt.date]]) -> None:
    """The ``first`` path posts events (consumed by the highest-priority rule); the others
    assert facts: both paths are exercised on their own too."""
    compare(rs, cases)
