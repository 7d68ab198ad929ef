"""A condition's text, a checker warning to the letter, the line of a limit broken in
Python by a ruleset loaded from a file, and the limits' problems of a ruleset built in
Python.

Each test pins a behaviour that mutation testing (``nox -s mutation``) found no test held."""

from __future__ import annotations

from pathlib import Path

import attrs

from referralkit.rules.check import check
from referralkit.rules.limits import problems
from referralkit.rules.loader import load, loads
from referralkit.rules.model import All, AnyOf, Compare, Kind, Op, Rule, Ruleset

CARDIOLOGY = Compare("specialty", Op.EQ, "cardiology")
OLD = Compare("patient.age", Op.GTE, 65)


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
