"""Small surfaces of ``referralkit.rules`` that ``nox -s mutation`` found read by no test: the
allowed values ``rules facts`` lists, a policy's repr and the options ``from_files`` passes
on, and an event engine's session id on the python evaluator."""

from __future__ import annotations

from importlib import resources

import pytest

from referralkit.model import AuthStatus, Priority
from referralkit.rules import load
from referralkit.rules.facts import FACTS
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy, shipped_paths
from referralkit.rules.timeline import EventRules


def test_enumerated_facts_list_their_values() -> None:
    assert FACTS["priority"].values == tuple(p.value for p in Priority)
    assert FACTS["authorization.status"].values == tuple(s.value for s in AuthStatus)
    assert "needed" in (FACTS["authorization.status"].values or ())


def test_a_policy_reads_as_its_rulesets_and_engine() -> None:
    policy = UrgencyPolicy.shipped()
    (ruleset,) = policy.rulesets
    assert repr(policy) == f"UrgencyPolicy([{ruleset.name}@{ruleset.version}], engine='python')"
    two = CoveragePolicy.shipped()
    names = ", ".join(f"{r.name}@{r.version}" for r in two.rulesets)
    assert repr(two) == f"CoveragePolicy([{names}], engine='python')"


def test_from_files_passes_its_options_on() -> None:
    pytest.importorskip("durable")
    policy = CoveragePolicy.from_files(shipped_paths(CoveragePolicy.kind), engine="durable")
    assert policy.engine_name == "durable"
    assert "engine='durable'" in repr(policy)


def test_the_python_evaluators_session_id_is_the_referral_id() -> None:
    path = resources.files("referralkit.rules") / "data" / "event-10-cms-0057-f.toml"
    rules = EventRules(load(str(path)), engine="python")
    assert rules.sid("R-17") == "R-17"


def test_a_presence_test_built_in_python_takes_true() -> None:
    """``exists``/``missing`` take ``true``: the parser says so for a file, the limits for a
    ruleset built in Python."""
    from referralkit.rules.limits import problems
    from referralkit.rules.model import Compare, Kind, Op, Rule, Ruleset

    for op in (Op.EXISTS, Op.MISSING):
        rule = Rule("r", Compare("patient.age", op, False), {"covered": "covered"})
        found = problems(Ruleset("x", Kind.COVERAGE, (rule,)))
        assert [(p.rule_id, p.field, p.message) for p in found] == [
            ("r", "when.patient.age", f"'{op.value}' takes true")
        ]


def test_rulesets_built_in_python_get_the_limits_messages() -> None:
    """What the limits say of a ruleset no file could spell: a NUL in an id, an alternative
    service that is not a code, an event rule without an action."""
    from referralkit.rules._patterns import Count, Signal
    from referralkit.rules.limits import problems
    from referralkit.rules.model import Always, Kind, Rule, Ruleset

    def said(kind: Kind, rule: Rule) -> list[tuple[str | None, str | None, str]]:
        return [(p.rule_id, p.field, p.message) for p in problems(Ruleset("x", kind, (rule,)))]

    assert said(Kind.COVERAGE, Rule("a\x00b", Always(), {"covered": "covered"})) == [
        ("a\x00b", "id", "contains a NUL character")
    ]
    odd = {"covered": "covered", "alternative_services": ("nope",)}
    assert said(Kind.COVERAGE, Rule("a", Always(), odd)) == [
        (
            "a",
            "then.alternative_services",
            "expected a service code: cpt:, hcpcs:, snomed: or icd10: and the code, "
            "or <system URI>|<code>",
        )
    ]
    silent = Rule("a", Count(Signal("no_show"), 2, 86_400), {"reason": "x"})  # type: ignore[arg-type]
    assert said(Kind.EVENT, silent) == [("a", "then.action", "an event rule needs an action")]
