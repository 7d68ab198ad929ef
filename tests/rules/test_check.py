"""``rules check``: near-linear, the same findings as comparing every pair, and a ruleset that
passes it never stops intake (issue 9, item 16)."""

from __future__ import annotations

import collections
import datetime as dt
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import referralkit as rk
from referralkit.errors import RulesError
from referralkit.model import ReferralEvent
from referralkit.rules import check as check_module
from referralkit.rules import loads, parse
from referralkit.rules.check import check, check_files
from referralkit.rules.engine import PythonEngine
from referralkit.rules.limits import problems as limit_problems
from referralkit.rules.model import HitPolicy, Kind, Ruleset
from referralkit.rules.policies import CoveragePolicy, UrgencyPolicy
from referralkit.rules.timeline import EventRules, durable_available
from referralkit.testing import policy_referrals, sample_request
from referralkit.testing._rules import DATES, facts, rulesets

CI = os.environ.get("CI", "").lower() == "true"
ENGINES = ("python", "durable") if durable_available() else ("python",)


def errors(found: list[Any]) -> list[str]:
    return [f"{p.rule_id}: {p.message}" for p in found if p.severity == "error"]


def ruleset(policy: str, rules: list[dict[str, Any]], kind: str = "coverage") -> Ruleset:
    return parse({"ruleset": {"name": "t", "kind": kind, "hit_policy": policy}, "rules": rules})


COVERED = {"covered": "covered", "pa_needed": "no-auth"}
NOT_COVERED = {"covered": "not-covered"}


# --------------------------------------------------------------------------- the reference


def reference(rs: Ruleset) -> list[tuple[str, str]]:
    """The old algorithm: every rule against every earlier rule (quadratic), with the same
    pair tests. The indexed check must find exactly what this finds, in the same order."""
    shapes = [check_module._Shape(i, rule) for i, rule in enumerate(rs.rules)]
    found: list[tuple[str, str]] = []
    for j, later in enumerate(shapes):
        if rs.hit_policy is HitPolicy.FIRST:
            for earlier in shapes[:j]:
                if check_module._shadows(earlier, later):
                    found.append((later.rule.id, f"shadowed by {earlier.rule.id}"))
                    break
        elif rs.hit_policy in (HitPolicy.UNIQUE, HitPolicy.ANY):
            for earlier in shapes[:j]:
                same = sorted(earlier.rule.then.items()) == sorted(later.rule.then.items())
                if rs.hit_policy is HitPolicy.ANY and same:
                    continue
                if check_module._overlap(earlier, later) is not False:
                    found.append((later.rule.id, f"overlaps {earlier.rule.id}"))
    return found


def indexed(rs: Ruleset) -> list[tuple[str, str]]:
    """What check() reports about shadowing and overlaps, in the reference's terms."""
    found = []
    for p in check(rs):
        if "can never fire" in p.message:
            other = p.message.split("'")[1]
            found.append((str(p.rule_id), f"shadowed by {other}"))
        elif "overlap" in p.message:
            other = p.message.split("'")[1]
            found.append((str(p.rule_id), f"overlaps {other}"))
    return found


# rules keyed on the facts the index uses, often sharing values, with other conditions
_KEYED = ("specialty", "coverage.payer", "coverage.plan_type", "priority")


@settings(max_examples=150 if CI else 60, deadline=None, database=None)
@given(
    rs=st.sampled_from(["first", "unique", "any"]).flatmap(
        lambda policy: rulesets(
            "coverage",
            hit_policy=policy,
            names=[*_KEYED, "patient.age", "services"],
            min_rules=2,
            max_rules=14,
            max_leaves=4,
        )
    )
)
def test_indexed_check_finds_what_comparing_every_pair_finds(rs: Ruleset) -> None:
    """On random rulesets (keys shared, missing, contradictory; ``or``/``not``; effective
    dates), the indexed check reports exactly the reference's shadowed rules and overlaps."""
    assert indexed(rs) == reference(rs)


def test_indexed_check_agrees_on_a_large_keyed_table() -> None:
    """400 rules of a payer × plan × specialty table with ranges and service prefixes,
    under each policy: the same findings as the reference."""
    for policy in ("first", "unique", "any"):
        rs = _table(400, policy)
        assert indexed(rs) == reference(rs)


def _table(count: int, policy: str) -> Ruleset:
    """A rule table as payers write them (the benchmark's generator, smaller)."""
    rules = []
    for i in range(count):
        when: dict[str, Any] = {
            "coverage.payer": f"payer-{i % 7}",
            "specialty": f"spec-{(i // 7) % 40}",
        }
        if i % 3 == 0:
            when["coverage.plan_type"] = ["HMO", "PPO"][i % 2]
        if i % 5 == 0:
            when["patient.age"] = {"gte": 18 + i % 50}
        if i % 4 == 0:
            when["services"] = {"any_prefix": [f"7{i % 90:02d}"]}
        then = COVERED if i % 2 else {"covered": "conditional", "pa_needed": "conditional"}
        rules.append({"id": f"r{i}", "when": when, "then": then})
    return ruleset(policy, rules)


# --------------------------------------------------------------------------- shadowing


# (later rule's condition, earlier rule's condition, whether the earlier one shadows it under
# the first hit policy): each comparison the check reasons about, both ways (``nox -s
# mutation``: the reference above shares these pair tests, so only fixed answers pin them)
SHADOWING = [
    ({"patient.age": {"gte": 21}}, {"patient.age": {"exists": True}}, True),
    ({"patient.age": {"missing": True}}, {"patient.age": {"exists": True}}, False),
    ({"patient.age": {"gte": 21}}, {"patient.age": {"gte": 18}}, True),
    ({"patient.age": {"gt": 18}}, {"patient.age": {"gte": 18}}, True),
    ({"patient.age": {"gte": 18}}, {"patient.age": {"gt": 18}}, False),
    ({"patient.age": {"gte": 18}}, {"patient.age": {"gte": 21}}, False),
    ({"patient.age": {"lt": 60}}, {"patient.age": {"lt": 65}}, True),
    ({"patient.age": {"lt": 65}}, {"patient.age": {"lte": 65}}, True),
    ({"patient.age": {"lte": 65}}, {"patient.age": {"lt": 65}}, False),
    ({"patient.age": {"lt": 65}}, {"patient.age": {"gte": 18}}, False),
    ({"diagnoses": {"any_prefix": ["C50"]}}, {"diagnoses": {"any_prefix": ["C"]}}, True),
    ({"diagnoses": {"any_prefix": ["D1"]}}, {"diagnoses": {"any_prefix": ["C"]}}, False),
    ({"diagnoses": {"any_prefix": ["C50"]}}, {"diagnoses": {"all_prefix": ["C"]}}, False),
    ({"services": {"any_in": ["99213"]}}, {"services": {"any_in": ["99213", "99214"]}}, True),
    ({"services": {"any_in": ["99213", "99215"]}}, {"services": {"any_in": ["99213"]}}, False),
]


@pytest.mark.parametrize(("later", "earlier", "shadowed"), SHADOWING)
def test_which_comparisons_shadow_a_later_rule(
    later: dict[str, Any], earlier: dict[str, Any], shadowed: bool
) -> None:
    rs = ruleset(
        "first",
        [
            {"id": "earlier", "when": earlier, "then": COVERED},
            {"id": "later", "when": later, "then": NOT_COVERED},
        ],
    )
    assert indexed(rs) == ([("later", "shadowed by earlier")] if shadowed else [])


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ({"gt": 18}, {"lte": 18}, False),
        ({"gte": 18}, {"lt": 18}, False),
        ({"gt": 18}, {"lt": 18}, False),
        ({"gte": 18}, {"lte": 18}, True),  # exactly 18
        ({"gte": 18}, {"lt": 19}, True),
        ({"lt": 18}, {"gt": 17}, True),
    ],
)
def test_which_bounds_overlap_under_the_unique_policy(
    first: dict[str, int], second: dict[str, int], overlap: bool
) -> None:
    rs = ruleset(
        "unique",
        [
            {"id": "a", "when": {"patient.age": first}, "then": COVERED},
            {"id": "b", "when": {"patient.age": second}, "then": NOT_COVERED},
        ],
    )
    assert indexed(rs) == ([("b", "overlaps a")] if overlap else [])


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ({"valid_from": dt.date(2026, 6, 1)}, {}, False),  # the later rule is in force before
        ({"valid_from": dt.date(2026, 6, 1)}, {"valid_from": dt.date(2026, 1, 1)}, False),
        ({"valid_from": dt.date(2026, 1, 1)}, {"valid_from": dt.date(2026, 6, 1)}, True),
        ({"valid_to": dt.date(2026, 6, 1)}, {}, False),  # ... or after
        ({}, {"valid_to": dt.date(2026, 6, 1)}, True),
    ],
)
def test_a_rule_is_only_shadowed_on_the_days_it_is_in_force(
    earlier: dict[str, Any], later: dict[str, Any], shadowed: bool
) -> None:
    when = {"specialty": "cardiology"}
    rs = ruleset(
        "first",
        [
            {"id": "earlier", "when": when, "then": COVERED, **earlier},
            {"id": "later", "when": when, "then": NOT_COVERED, **later},
        ],
    )
    assert indexed(rs) == ([("later", "shadowed by earlier")] if shadowed else [])


# --------------------------------------------------------------------------- overlaps


class TestOverlaps:
    def test_unique_with_or_that_overlaps_is_an_error(self) -> None:
        """The reported case: an ``or`` made the pair 'may overlap', a warning, and the
        ruleset then failed at run time. Now the normal form shows the overlap."""
        rs = ruleset(
            "unique",
            [
                {
                    "id": "a",
                    "when": {"any": [{"specialty": "oncology"}, {"specialty": "cardiology"}]},
                    "then": COVERED,
                },
                {"id": "b", "when": {"specialty": "cardiology"}, "then": COVERED},
            ],
        )
        assert errors(check(rs)) == ["b: overlaps rule 'a': both can match, which 'unique' forbids"]

    def test_not_pushed_down_proves_rules_apart(self) -> None:
        """``not specialty = x`` against ``specialty = x``: disjoint, no error."""
        rs = ruleset(
            "unique",
            [
                {"id": "a", "when": {"specialty": "cardiology"}, "then": COVERED},
                {"id": "b", "when": {"not": {"specialty": "cardiology"}}, "then": COVERED},
                {
                    "id": "c",
                    "when": {"services": {"any_in": ["1"]}, "not": {"services": ["1", "2"]}},
                    "then": COVERED,
                },
            ],
        )
        assert errors(check(rs)) == []

    def test_any_allows_agreeing_overlaps_and_refuses_disagreeing_ones(self) -> None:
        """Under ``any``, rules that can both match must agree; the run-time error is now a
        check error."""
        rs = ruleset(
            "any",
            [
                {"id": "a", "when": {"patient.age": {"gte": 65}}, "then": COVERED},
                {"id": "b", "when": {"patient.age": {"gte": 70}}, "then": COVERED},
                {"id": "c", "when": {"patient.age": {"gte": 80}}, "then": NOT_COVERED},
                {"id": "d", "when": {"patient.age": {"lt": 18}}, "then": NOT_COVERED},
            ],
        )
        assert errors(check(rs)) == [
            "c: overlaps rule 'a': both can match, with different outputs, which 'any' forbids",
            "c: overlaps rule 'b': both can match, with different outputs, which 'any' forbids",
        ]

    def test_a_normal_form_too_large_to_expand_is_refused_as_a_possible_overlap(self) -> None:
        """Eight ``or``s of three: 6,561 terms, past MAX_TERMS: the checker cannot tell, so
        the pair is an error, not a silent pass."""
        big = {"all": [{"any": [{"patient.age": k}, {"priority": "stat"}, {}]} for k in range(8)]}
        rs = ruleset(
            "unique",
            [
                {"id": "a", "when": big, "then": COVERED},
                {"id": "b", "when": {"specialty": "x"}, "then": COVERED},
            ],
        )
        [message] = errors(check(rs))
        assert message.startswith("b: may overlap rule 'a'")

    def test_shipped_rulesets_stay_clean_on_both_engines(self) -> None:
        """The shipped examples pass the check for every engine present."""
        from referralkit.rules.policies import shipped_paths

        results = check_files(shipped_paths(), engines=ENGINES)
        assert {p: errors(v) for p, v in results.items()} == {p: [] for p in results}

    def test_unknown_engines_are_refused(self) -> None:
        """check() names the engines it knows."""
        rs = ruleset("first", [{"id": "a", "then": COVERED}])
        with pytest.raises(RulesError, match="unknown engines"):
            check(rs, engines=("rete",))
        with pytest.raises(RulesError, match="unknown engines"):
            check(rs, engines="python")


class TestDurableCapacity:
    def test_a_table_durable_would_hang_on_is_refused_for_durable_only(self) -> None:
        """520 rules keyed on 520 specialties: durable-rules 2.0.28 loops forever building
        it. The python engine runs it; ``check(engines=(..., "durable"))`` says durable
        cannot, by name, and the durable engine refuses it instead of hanging."""
        rs = ruleset(
            "first",
            [{"id": f"r{i}", "when": {"specialty": f"s{i}"}, "then": COVERED} for i in range(520)],
        )
        assert errors(check(rs)) == []
        [message] = errors(check(rs, engines=("python", "durable")))
        assert "durable engine cannot hold it" in message
        assert "rule #501" in message
        assert CoveragePolicy([rs]).decide(_referral(), AT).hits == ()

    @pytest.mark.durable
    def test_the_durable_engine_refuses_instead_of_hanging(self) -> None:
        """1,200 codes in one any_in hung durable-rules; the engine refuses; 300 run."""
        from referralkit.rules.durable import DurableEngine

        codes = [f"7{i:04d}" for i in range(1_200)]
        rs = ruleset("first", [{"id": "pa-list", "when": {"services": codes}, "then": COVERED}])
        with pytest.raises(RulesError, match="durable engine cannot hold it"):
            DurableEngine(rs)
        small = ruleset("first", [{"id": "pa", "when": {"services": codes[:300]}, "then": COVERED}])
        assert DurableEngine(small).matches({"services": ["70299"]}, AT.date()) == [0]


AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def _referral() -> rk.Referral:
    return sample_request().referral("check-referral", AT, received=True)


# --------------------------------------------------------------------------- the property

INSTANTS = st.sampled_from(
    (
        AT,
        dt.datetime(1, 1, 2, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 30, 23, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14))),
    )
) | st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
)

outcomes: collections.Counter[str] = collections.Counter()


def decide_all(
    make: Callable[..., Any], method: str, rs: Ruleset, referrals: list[rk.Referral], at: Any
) -> None:
    for engine in ENGINES:
        policy = make([rs], engine=engine)
        decide = getattr(policy, method)
        for referral in referrals:
            assert decide(referral, at) is not None
            assert decide(referral, at, explain=True) is not None


@settings(
    max_examples=250 if CI else 80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rs=st.sampled_from([Kind.COVERAGE, Kind.URGENCY]).flatmap(
        lambda kind: rulesets(kind, max_rules=5, max_leaves=5, extreme=True)
    ),
    referrals=st.lists(policy_referrals(), min_size=3, max_size=3),
    at=INSTANTS,
    cases=st.lists(st.tuples(facts(), DATES), min_size=12, max_size=12),
)
def test_a_ruleset_that_passes_the_check_never_stops_intake(
    rs: Ruleset,
    referrals: list[rk.Referral],
    at: dt.datetime,
    cases: list[tuple[dict[str, Any], dt.date]],
) -> None:
    """Rulesets drawn from the rule strategies with extreme values (nesting 60 deep,
    infinite scores, windows of centuries, 1,500 codes, the first and last dates, NUL
    characters, long ids...) either fail the check, or every engine present decides every
    drawn referral, with and without explain, without an exception; and evaluates drawn
    facts (from the rules' own value pools, so that rules match, together too: what makes
    ``unique`` and ``any`` fail at run time) without one."""
    if errors(check(rs, engines=ENGINES)):
        outcomes["refused"] += 1
        return
    outcomes["decided"] += 1
    engines: list[Any] = [PythonEngine(rs)]
    if "durable" in ENGINES:
        from referralkit.rules.durable import DurableEngine

        engines.append(DurableEngine(rs))
    for engine in engines:
        for fs, day in cases:
            engine.evaluate(fs, day, explain=True)
    if rs.kind is Kind.COVERAGE:
        decide_all(CoveragePolicy, "decide", rs, referrals, at)
    else:
        decide_all(UrgencyPolicy, "assess", rs, referrals, at)


def test_the_property_saw_both_outcomes() -> None:
    """The property above is not vacuous: in its run some rulesets were refused and some
    decided (runs after it in this module)."""
    if not outcomes:
        pytest.skip("run with test_a_ruleset_that_passes_the_check_never_stops_intake")
    assert outcomes["refused"] > 0
    assert outcomes["decided"] > 0


@settings(max_examples=80 if CI else 40, deadline=None, database=None)
@given(rs=rulesets("event", max_rules=3, extreme=True))
def test_an_event_ruleset_that_passes_the_check_runs(rs: Ruleset) -> None:
    """Extreme event rulesets (windows of zero or 10**12 seconds, counts of 0 or 12, a
    dozen stops) either fail the check or run on every evaluator present."""
    if errors(check(rs, engines=ENGINES)):
        with pytest.raises(RulesError):
            EventRules(rs, engine="python")
        return
    history = [
        ReferralEvent("x", 1, 0, AT, "t", "status_changed", {"target": "received"}),
        ReferralEvent(
            "x",
            2,
            0,
            AT,
            "t",
            "authorization_changed",
            {"authorization": {"status": "requested", "expedited": True}},
        ),
        ReferralEvent(
            "x", 3, 0, AT + dt.timedelta(hours=5), "t", "status_changed", {"target": "no_show"}
        ),
    ]
    for engine in ENGINES:
        events = EventRules(rs, engine=engine)  # type: ignore[arg-type]
        events.observe("x", history)
        events.due("x", AT + dt.timedelta(days=400))


# --------------------------------------------------------------------------- limits


class TestLimits:
    """Each limit: refused with file, line, rule id and field; the engines refuse the same
    ruleset built in Python (it never reaches a decision)."""

    HEAD = '[ruleset]\nname = "limits"\nkind = "{kind}"\n'

    def refused(self, kind: str, rule: str) -> Any:
        text = self.HEAD.format(kind=kind) + "\n[[rules]]\n" + rule
        with pytest.raises(RulesError) as info:
            loads(text, source="limits.toml")
        [problem] = info.value.problems  # type: ignore[attr-defined]
        assert problem.source == "limits.toml"
        assert problem.line is not None
        assert problem.line >= 5
        return problem

    def test_nesting(self) -> None:
        """200 levels of ``not`` (SyntaxError before) and 600 (RecursionError in the TOML
        reader) are both refused with the limit."""
        deep = "when = " + "{ not = " * 200 + '{ specialty = "x" }' + " }" * 200
        problem = self.refused("coverage", f'id = "deep"\n{deep}\nthen = {{ covered = "covered" }}')
        assert (problem.rule_id, problem.field.split(".")[0]) == ("deep", "when")
        assert "32 levels" in problem.message
        deeper = "when = " + "{ not = " * 600 + '{ specialty = "x" }' + " }" * 600
        with pytest.raises(RulesError, match="nested too deeply"):
            loads(self.HEAD.format(kind="coverage") + f'[[rules]]\nid = "d"\n{deeper}\n')

    def test_numbers_and_windows(self) -> None:
        """``score = inf``, a huge ``due_days``, an integer past 2**53."""
        for rule, field in (
            ('id = "s"\nthen = { priority = "urgent", score = inf }', "then.score"),
            ('id = "s"\nthen = { priority = "urgent", score = nan }', "then.score"),
            ('id = "d"\nthen = { priority = "urgent", due_days = 99999999999 }', "then.due_days"),
            ('id = "h"\nthen = { priority = "urgent", due_hours = 87601 }', "then.due_hours"),
            (
                'id = "a"\nwhen = { "patient.age" = { gt = 9007199254740993 } }\n'
                'then = { priority = "urgent" }',
                "when.patient.age",
            ),
        ):
            assert self.refused("urgency", rule).field == field

    def test_texts(self) -> None:
        """A NUL, a blank or overlong reason, an overlong id."""
        for rule, field in (
            (
                'id = "n"\nwhen = { specialty = "a\\u0000b" }\nthen = { covered = "covered" }',
                "when.specialty",
            ),
            ('id = "r"\nthen = { covered = "covered", reason = " " }', "then.reason"),
            (f'id = "r"\nthen = {{ covered = "covered", reason = "{"x" * 201}" }}', "then.reason"),
            (f'id = "{"i" * 101}"\nthen = {{ covered = "covered" }}', "id"),
        ):
            assert self.refused("coverage", rule).field == field

    def test_a_long_code_list_is_fine_in_python_and_its_trace_is_short(self) -> None:
        """1,200 service codes in one rule: the python engine runs it, and the explain trace
        (whose text used to exceed the model's limit) abbreviates the condition."""
        codes = ", ".join(f'"7{i:04d}"' for i in range(1_200))
        rs = loads(
            self.HEAD.format(kind="coverage")
            + f'[[rules]]\nid = "pa"\nwhen = {{ services = {{ any_in = [{codes}] }} }}\n'
            'then = { covered = "covered", pa_needed = "auth-needed" }\n'
        )
        decision = CoveragePolicy([rs]).decide(_referral(), AT, explain=True)
        [trace] = decision.trace
        assert trace.failed is not None
        assert len(trace.failed) <= 500
        assert "characters in all" in trace.failed

    def test_valid_to_the_last_day(self) -> None:
        """``valid_to = 9999-12-31`` raised OverflowError in the python engine."""
        rs = loads(
            self.HEAD.format(kind="coverage")
            + '[[rules]]\nid = "always"\nvalid_from = 0001-01-01\nvalid_to = 9999-12-31\n'
            'then = { covered = "covered", pa_needed = "no-auth" }\n'
        )
        policy = CoveragePolicy([rs])
        last = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)
        assert [h.rule_id for h in policy.decide(_referral(), last).hits] == ["always"]

    def test_rulesets_built_in_python_meet_the_same_limits(self) -> None:
        """A ruleset that never went through the loader: check() reports the limits and
        every engine refuses it before deciding anything."""
        from referralkit.rules.engine import PythonEngine
        from referralkit.rules.model import Compare, Not, Op, Rule

        deep: Any = Compare("specialty", Op.EQ, "x")
        for _ in range(40):
            deep = Not(deep)
        rs = Ruleset(
            "py",
            Kind.URGENCY,
            (
                Rule("deep", deep, {"priority": "urgent"}),
                Rule("inf", Compare("specialty", Op.EQ, "y"), {"score": float("inf")}),
            ),
        )
        found = [(p.rule_id, p.field) for p in limit_problems(rs)]
        assert found == [("deep", "when"), ("inf", "then.score")]
        assert [(p.rule_id, p.field) for p in check(rs)] == found
        with pytest.raises(RulesError):
            PythonEngine(rs)
        with pytest.raises(RulesError):
            UrgencyPolicy([rs])

    def test_an_alternative_service_that_is_not_a_code(self) -> None:
        """``alternative_services = ["reason one"]`` built in Python (the loader refuses it)
        passed the check and then stopped intake when the decision made it a Code: the check
        and the policy refuse it before any decision. (Found by the property above.)"""
        from referralkit.rules.model import Compare, Op, Rule

        rs = Ruleset(
            "py",
            Kind.COVERAGE,
            (
                Rule(
                    "alt",
                    Compare("patient.age", Op.EQ, 0),
                    {"covered": "not-covered", "alternative_services": ("reason one",)},
                ),
                Rule(
                    "ok",
                    Compare("patient.age", Op.EQ, 1),
                    {"covered": "not-covered", "alternative_services": ("cpt:99451",)},
                ),
            ),
        )
        found = [(p.rule_id, p.field) for p in limit_problems(rs)]
        assert found == [("alt", "then.alternative_services")]
        assert [(p.rule_id, p.field) for p in check(rs)] == found
        with pytest.raises(RulesError):
            CoveragePolicy([rs])


class TestCommand:
    """``referralkit rules check``: limits refused with file and line; ``--engine durable``
    adds what durable cannot hold."""

    def test_check_names_file_line_rule_and_field(
        self, tmp_path: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A limit broken in a file is reported with file, line, rule id and field; exit 1."""
        from referralkit.cli import main

        path = tmp_path / "urgent.toml"
        path.write_text(
            '[ruleset]\nname = "u"\nkind = "urgency"\n\n[[rules]]\nid = "forever"\n'
            'then = { priority = "urgent", score = inf }\n'
        )
        assert main(["rules", "check", str(path)]) == 1
        out = capsys.readouterr().out
        assert f"{path}:7: rule 'forever': field 'then.score': error:" in out

    def test_engine_durable_adds_durables_capacity(
        self, tmp_path: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A table durable cannot hold passes for python and fails with --engine durable."""
        from referralkit.cli import main

        rules = "".join(
            f'\n[[rules]]\nid = "r{i}"\nwhen = {{ specialty = "s{i}" }}\n'
            'then = { covered = "covered", pa_needed = "no-auth" }\n'
            for i in range(520)
        )
        path = tmp_path / "wide.toml"
        path.write_text('[ruleset]\nname = "wide"\nkind = "coverage"\n' + rules)
        assert main(["rules", "check", str(path)]) == 0
        assert capsys.readouterr().out.strip() == f"{path}: ok"
        assert main(["rules", "check", "--engine", "python", "--engine", "durable", str(path)]) == 1
        out = capsys.readouterr().out
        assert f"{path}:2507: rule 'r500': field 'when': error: durable engine" in out
        assert "durable engine cannot hold it" in out


class TestRulesetsBuiltInPython:
    """A ruleset made in Python never went through the loader: the limits module checks its
    shape as well as its values, and names the rule and field of each problem."""

    def test_every_malformed_part_is_named(self) -> None:
        from referralkit.rules.model import AnyOf, Compare, Not, Op, Rule

        rules = (
            Rule("unknown-fact", Compare("patient.shoe_size", Op.EQ, 1), {"priority": "urgent"}),
            Rule("wrong-op", Compare("specialty", Op.GT, "a"), {"priority": "urgent"}),
            Rule("not-a-tuple", Compare("specialty", Op.IN, "abc"), {"priority": "urgent"}),
            Rule("bad-value", Compare("priority", Op.EQ, "soon"), {"priority": "urgent"}),
            Rule("bad-bool", Compare("patient.pregnant", Op.EQ, 1), {"priority": "urgent"}),
            Rule("bad-date", Compare("date", Op.LT, "2026-01-01"), {"priority": "urgent"}),
            Rule("float-age", Compare("patient.age", Op.GT, 1.5), {"priority": "urgent"}),
            Rule("bad-exists", Compare("specialty", Op.EXISTS, False), {"priority": "urgent"}),
            Rule("bad-items", AnyOf([Compare("specialty", Op.EQ, "x")]), {"priority": "urgent"}),  # type: ignore[arg-type]
            Rule("not-condition", Not("specialty"), {"priority": "urgent"}),  # type: ignore[arg-type]
            Rule("bad-output", Compare("specialty", Op.EQ, "x"), {"colour": "red"}),
            Rule("bad-due", Compare("specialty", Op.EQ, "x"), {"due_days": -1}),
            Rule("bad-priority", Compare("specialty", Op.EQ, "x"), {"priority": "whenever"}),
            Rule("bad-reason", Compare("specialty", Op.EQ, "x"), {"reason": 7}),
            Rule("no-outputs", Compare("specialty", Op.EQ, "x"), {}),
            Rule(
                "backwards",
                Compare("specialty", Op.EQ, "x"),
                {"priority": "urgent"},
                valid_from=dt.date(2026, 2, 1),
                valid_to=dt.date(2026, 1, 1),
            ),
            Rule("lone-surrogate", Compare("specialty", Op.EQ, "\ud800"), {"priority": "urgent"}),
        )
        rs = Ruleset("py", Kind.URGENCY, rules)
        found = {p.rule_id: p for p in limit_problems(rs)}
        assert set(found) == {rule.id for rule in rules}
        # the operator is named as a rule file spells it, not as the enum's repr
        assert found["wrong-op"].message == "operator 'gt' does not apply to text facts"
        with pytest.raises(RulesError):
            PythonEngine(rs)

    def test_coverage_outputs_and_event_patterns(self) -> None:
        """info_needed without a conditional answer; a non-pattern event rule; too many
        stops; a list output that is not a list."""
        from referralkit.rules.model import Always, Rule
        from referralkit.rules.timeline import Deadline, Signal

        coverage = Ruleset(
            "cov",
            Kind.COVERAGE,
            (
                Rule("info", Always(), {"covered": "covered", "info_needed": ("performer",)}),
                Rule("alts", Always(), {"covered": "covered", "alternatives": "self-pay"}),
            ),
        )
        assert [(p.rule_id, p.field) for p in limit_problems(coverage)] == [
            ("info", "then.info_needed"),
            ("alts", "then.alternatives"),
        ]
        stops = tuple(Signal("scheduled") for _ in range(11))
        events = Ruleset(
            "ev",
            Kind.EVENT,
            (
                Rule("plain", Always(), {"action": "notify"}),
                Rule("stops", Deadline(Signal("received"), stops, 3600), {"action": "notify"}),  # type: ignore[arg-type]
                Rule("broken", Deadline("received", 5, 3600), {"action": "notify"}),  # type: ignore[arg-type]
            ),
        )
        assert [(p.rule_id, p.field) for p in limit_problems(events)] == [
            ("plain", "when"),
            ("stops", "deadline.stop"),
            ("broken", "when"),
        ]
        with pytest.raises(RulesError):
            EventRules(events, engine="python")

    def test_a_window_past_the_end_of_time_ends_there(self) -> None:
        """A referral received in 9999 with a ten-year window is due at the last instant,
        not an OverflowError (the property test's extreme instants reach this too)."""
        rs = loads(
            '[ruleset]\nname = "u"\nkind = "urgency"\n[[rules]]\nid = "decade"\n'
            'then = { priority = "urgent", due_days = 3650, due_hours = 1 }\n'
        )
        late = dt.datetime(9999, 6, 1, tzinfo=dt.UTC)
        referral = sample_request().referral("late", late, received=True)
        assessment = UrgencyPolicy([rs]).assess(referral, late)
        assert assessment.due_by == late + dt.timedelta(hours=1)
        only_decade = loads(
            '[ruleset]\nname = "v"\nkind = "urgency"\n[[rules]]\nid = "decade"\n'
            'then = { priority = "urgent", due_days = 3650 }\n'
        )
        assessment = UrgencyPolicy([only_decade]).assess(referral, late)
        assert assessment.due_by == dt.datetime.max.replace(tzinfo=dt.UTC)
