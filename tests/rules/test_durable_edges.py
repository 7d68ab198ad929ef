"""The durable engine's compiled ruleset: the order its rules are tried in.

Pins a behaviour that mutation testing (``nox -s mutation``) found no test held."""

from __future__ import annotations

from referralkit.rules.durable import compile_ruleset
from referralkit.rules.loader import loads


def test_rules_are_tried_in_file_order_and_the_catch_all_last() -> None:
    """Durable tries lower ``pri`` first: rule ``i`` gets ``i + 1``, and the catch-all comes
    strictly after every rule, so under ``first`` it takes only an event no rule took."""
    ruleset = loads(
        """
[ruleset]
name = "order"
kind = "urgency"

[[rules]]
id = "old"
when = { "patient.age" = { gte = 65 } }
then = { priority = "urgent" }

[[rules]]
id = "pregnant"
when = { "patient.pregnant" = true }
then = { priority = "urgent" }

[[rules]]
id = "young"
when = { "patient.age" = { lt = 18 } }
then = { priority = "routine" }
"""
    )
    compiled = compile_ruleset(ruleset)
    assert {name: rule["pri"] for name, rule in compiled.items()} == {
        "r0": 1,
        "r1": 2,
        "r2": 3,
        "catch": 4,
    }
