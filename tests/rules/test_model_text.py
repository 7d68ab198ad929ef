"""The rule model's text forms and look-ups, pinned exactly (``nox -s mutation`` found them
reached by no test, or by tests that do not read the text): a condition's ``str``, a rule's,
``Ruleset.rule`` and the notebook displays of a ruleset."""

from __future__ import annotations

from typing import Any

import pytest

from referralkit.display import ruleset_html, ruleset_text
from referralkit.rules import model
from referralkit.rules.model import (
    OUTPUTS,
    All,
    Always,
    AnyOf,
    Compare,
    Covered,
    Kind,
    Not,
    Op,
    Priority,
    Rule,
    Ruleset,
)

HMO = Compare("coverage.plan_type", Op.EQ, "HMO")
ADULT = Compare("patient.age", Op.GTE, 18)


def test_an_or_joins_its_items_and_brackets_a_nested_combination() -> None:
    assert str(AnyOf((HMO, ADULT))) == "coverage.plan_type eq 'HMO' or patient.age gte 18"
    assert str(AnyOf((HMO, All((ADULT, HMO))))) == (
        "coverage.plan_type eq 'HMO' or (patient.age gte 18 and coverage.plan_type eq 'HMO')"
    )
    assert str(AnyOf(())) == "never"
    assert str(All(())) == "always"
    assert str(Not(AnyOf((HMO, ADULT)))) == (
        "not (coverage.plan_type eq 'HMO' or patient.age gte 18)"
    )
    assert str(AnyOf((Always(),))) == "always"


def test_a_rule_reads_as_its_id_condition_and_outputs() -> None:
    rule = Rule("hmo-adult", All((HMO, ADULT)), {"covered": "covered", "codes": ["A", "B"]})
    assert str(rule) == (
        "hmo-adult: when coverage.plan_type eq 'HMO' and patient.age gte 18 "
        "then {'covered': 'covered', 'codes': ('A', 'B')}"
    )


def _ruleset() -> Ruleset:
    rules = (
        Rule("hmo", HMO, {"covered": "covered"}),
        Rule("adult", ADULT, {"covered": "conditional"}),
    )
    return Ruleset("t", Kind.COVERAGE, rules)


def test_a_rule_is_found_by_its_id() -> None:
    rs = _ruleset()
    assert rs.rule("adult") is rs.rules[1]
    assert rs.rule("hmo") is rs.rules[0]
    with pytest.raises(KeyError, match="nope"):
        rs.rule("nope")


def test_the_notebook_displays_are_the_text_and_html_renderings() -> None:
    rs = _ruleset()
    assert rs._repr_html_() == ruleset_html(rs)

    class Printer:
        def __init__(self) -> None:
            self.texts: list[Any] = []

        def text(self, value: Any) -> None:
            self.texts.append(value)

    printer = Printer()
    rs._repr_pretty_(printer, False)
    assert printer.texts == [ruleset_text(rs)]


def test_the_allowed_outputs_are_the_enumerations_values() -> None:
    # OUTPUTS is built at import, before mutmut forks for a mutant: the helper is called too
    assert model._vals(Covered) == ("covered", "not-covered", "conditional", "indeterminate")
    assert OUTPUTS[Kind.COVERAGE]["covered"].values == tuple(m.value for m in Covered)
    assert OUTPUTS[Kind.URGENCY]["priority"].values == tuple(m.value for m in Priority)
