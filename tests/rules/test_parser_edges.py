"""Rule files refused (or not) to the letter: an enumerated fact's unknown value, an empty
prefix, a prefix of an enumerated value, and a file nested too deeply for the TOML reader,
each problem with its file, line, rule and field.

Each test pins a behaviour that mutation testing (``nox -s mutation``) found no test held."""

from __future__ import annotations

import pytest

from referralkit.rules.loader import RulesetError, loads

HEAD = """[ruleset]
name = "t"
kind = "coverage"
"""

PLAN_TYPES = "HMO, PPO, EPO, POS, Medicare, Medicare Advantage, Medicaid, self-pay, other"


def test_values_of_enumerated_facts_and_empty_prefixes_are_refused_where_they_are() -> None:
    """An enumerated fact compared with a value it never takes is refused; an empty prefix
    too (it matches everything); a prefix of an enumerated value is not (``HM`` for HMO)."""
    text = (
        HEAD
        + """
[[rules]]
id = "r"
when = { "coverage.plan_type" = "Gold" }
then = { covered = "covered" }

[[rules]]
id = "s"
when = { diagnoses = { any_prefix = [""] } }
then = { covered = "covered" }

[[rules]]
id = "u"
when = { "coverage.plan_type" = { prefix = "HM" } }
then = { covered = "covered" }
"""
    )
    with pytest.raises(RulesetError) as info:
        loads(text, source="t.toml")
    found = [(p.source, p.line, p.rule_id, p.field, p.message) for p in info.value.problems]
    assert found == [
        ("t.toml", 7, "r", "when.coverage.plan_type", f"'Gold' is not one of {PLAN_TYPES}"),
        (
            "t.toml",
            12,
            "s",
            "when.diagnoses.any_prefix[0]",
            "an empty prefix matches everything; remove the condition",
        ),
    ]


def test_a_file_nested_too_deeply_to_read_names_its_source() -> None:
    """Nesting that exhausts the TOML reader's stack is refused as one problem of the file
    (no line: the reader never got that far)."""
    deeper = "when = " + "{ not = " * 600 + '{ specialty = "x" }' + " }" * 600
    text = HEAD + f'[[rules]]\nid = "d"\n{deeper}\nthen = {{ covered = "covered" }}\n'
    with pytest.raises(RulesetError) as info:
        loads(text, source="deep.toml")
    [problem] = info.value.problems
    assert (problem.source, problem.line, problem.rule_id) == ("deep.toml", None, None)
    assert problem.message == "nested too deeply to read (the limit is 32 levels of all/any/not)"
    assert str(problem).startswith("deep.toml: ")


def test_header_and_output_problems_to_the_letter() -> None:
    """A misspelt hit policy points at its own line and field; a list output with an item
    of the wrong type names the type its items must have."""
    text = """[ruleset]
name = "t"
kind = "coverage"
hit_policy = "firsst"

[[rules]]
id = "r"
then = { covered = "covered", alternatives = ["a", 1] }
"""
    with pytest.raises(RulesetError) as info:
        loads(text, source="t.toml")
    found = [(p.line, p.rule_id, p.field, p.message) for p in info.value.problems]
    assert found == [
        (
            4,
            None,
            "hit_policy",
            "'firsst' is not one of unique, any, priority, first, collect, rule order, "
            "output order (did you mean 'first'?)",
        ),
        (8, "r", "then.alternatives", "expected str values"),
    ]


def test_only_urgency_rulesets_aggregate() -> None:
    """A coverage ruleset that collects may not aggregate: there is no score to sum."""
    text = HEAD + 'hit_policy = "collect"\naggregation = "sum"\n'
    text += '\n[[rules]]\nid = "r"\nthen = { covered = "covered" }\n'
    with pytest.raises(RulesetError) as info:
        loads(text, source="t.toml")
    found = [(p.line, p.field, p.message) for p in info.value.problems]
    assert found == [(5, "aggregation", "only urgency rulesets aggregate (their score)")]


def test_a_key_missing_from_a_rule_points_at_the_rule_not_at_the_next_one() -> None:
    """A rule without ``then`` is refused at its own ``[[rules]]`` line, not at the ``then``
    of the rule after it."""
    text = (
        HEAD
        + """
[[rules]]
id = "a"
when = { specialty = "cardiology" }

[[rules]]
id = "b"
when = { specialty = "oncology" }
then = { covered = "covered" }
"""
    )
    with pytest.raises(RulesetError) as info:
        loads(text, source="t.toml")
    found = [(p.line, p.rule_id, p.field, p.message) for p in info.value.problems]
    assert found == [(5, "a", "then", "expected a table of outputs")]
