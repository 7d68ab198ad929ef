"""The durable engine: same answers as the python engine, and safe by construction.

Hand-written rulesets cover every operator (and its negation) on present, absent, ``None``
and empty values, every hit policy, effective dates and the explain trace. The durable-rules
behaviours the compiler relies on are checked directly on a private host, so an upgrade that
changes one fails here first.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest

from referralkit.errors import RulesError
from referralkit.rules import durable as durable_module
from referralkit.rules.durable import SESSION, DurableEngine, mt_prefix, runtime
from referralkit.rules.engine import PythonEngine, evaluate_condition
from referralkit.rules.facts import FACTS, FactType
from referralkit.rules.loader import parse
from referralkit.rules.model import (
    OPERATORS,
    All,
    AnyOf,
    Compare,
    Condition,
    HitPolicy,
    Kind,
    Not,
    Op,
    Rule,
    Ruleset,
)

DAY = dt.date(2026, 1, 5)


def ruleset(
    rules: list[dict[str, Any]], policy: str = "collect", kind: str = "coverage"
) -> Ruleset:
    return parse({"ruleset": {"name": "t", "kind": kind, "hit_policy": policy}, "rules": rules})


def agree(rs: Ruleset, cases: list[dict[str, Any]], day: dt.date = DAY) -> list[list[int]]:
    """Both engines on every case: same matches, same evaluation (with its trace)."""
    python, durable = PythonEngine(rs), DurableEngine(rs)
    found = []
    for facts in cases:
        expected = python.matches(facts, day)
        assert durable.matches(facts, day) == expected, facts
        assert durable.evaluate(facts, day, explain=True) == python.evaluate(
            facts, day, explain=True
        )
        found.append(expected)
    return found


# --------------------------------------------------------------------------- operators

# a value per fact type that makes each operator true on some facts and false on others
OPERANDS: dict[FactType, dict[Op, Any]] = {
    FactType.TEXT: {
        Op.EQ: "C50.9",
        Op.NE: "C50.9",
        Op.IN: ("C50.9", "b"),
        Op.NOT_IN: ("C50.9", "b"),
        Op.PREFIX: ("C50.", "x%"),
    },
    FactType.INTEGER: {
        Op.EQ: 40,
        Op.NE: 40,
        Op.IN: (40, 41),
        Op.NOT_IN: (40, 41),
        Op.GT: 40,
        Op.GTE: 40,
        Op.LT: 40,
        Op.LTE: 40,
    },
    FactType.BOOLEAN: {Op.EQ: True, Op.NE: True},
    FactType.DATE: {
        Op.EQ: dt.date(2026, 1, 5),
        Op.NE: dt.date(2026, 1, 5),
        Op.IN: (dt.date(2026, 1, 5),),
        Op.NOT_IN: (dt.date(2026, 1, 5),),
        Op.GT: dt.date(2026, 1, 5),
        Op.GTE: dt.date(2026, 1, 5),
        Op.LT: dt.date(2026, 1, 5),
        Op.LTE: dt.date(2026, 1, 5),
    },
    FactType.TEXT_LIST: {
        Op.ANY_IN: ("C50.9", "E11.9"),
        Op.ALL_IN: ("C50.9", "E11.9"),
        Op.NONE_IN: ("C50.9", "E11.9"),
        Op.ANY_PREFIX: ("C50.", "E1"),
        Op.ALL_PREFIX: ("C50.", "E1"),
        Op.NONE_PREFIX: ("C50.", "E1"),
    },
}
VALUES: dict[FactType, list[Any]] = {
    FactType.TEXT: ["C50.9", "C50X9", "C50.91", "b", "x%y", ""],
    FactType.INTEGER: [39, 40, 41, 0],
    FactType.BOOLEAN: [True, False],
    FactType.DATE: [dt.date(2026, 1, 4), dt.date(2026, 1, 5), dt.date(2026, 1, 6)],
    FactType.TEXT_LIST: [
        [],
        ["C50.9"],
        ["C50X9"],
        ["C50.9", "E11.9"],
        ["C50.9", "Z00"],
        ["E11.2", "C50.1"],
        ["Z00", "Q1"],
    ],
}
SAMPLE_FACTS = {
    FactType.TEXT: "specialty",
    FactType.INTEGER: "patient.age",
    FactType.BOOLEAN: "patient.pregnant",
    FactType.DATE: "date",
    FactType.TEXT_LIST: "diagnoses",
}


def operator_cases() -> list[tuple[str, Op, Any]]:
    cases = []
    for kind, name in SAMPLE_FACTS.items():
        for op in sorted(OPERATORS[kind]):
            operand = True if op in (Op.EXISTS, Op.MISSING) else OPERANDS[kind][op]
            cases.append((name, op, operand))
    return cases


@pytest.mark.durable
@pytest.mark.parametrize(("name", "op", "operand"), operator_cases())
@pytest.mark.parametrize("negate", [False, True], ids=["plain", "not"])
def test_every_operator_matches_the_reference(
    name: str, op: Op, operand: Any, negate: bool
) -> None:
    condition: Condition = Compare(name, op, operand)
    if negate:
        condition = Not(condition)
    rs = Ruleset(
        "ops",
        Kind.COVERAGE,
        (Rule("r", condition, {"covered": "covered"}),),
        hit_policy=HitPolicy.COLLECT,
    )
    engine = DurableEngine(rs)
    kind = FACTS[name].type
    cases: list[dict[str, Any]] = [{}, {name: None}] + [{name: v} for v in VALUES[kind]]
    for facts in cases:
        expected = evaluate_condition(condition, facts)
        assert engine.matches(facts, DAY) == ([0] if expected else []), (condition, facts)


@pytest.mark.durable
def test_every_fact_and_operator_is_covered() -> None:
    assert {FACTS[n].type for n in SAMPLE_FACTS.values()} == {
        t for t in FactType if any(s.type is t for s in FACTS.values())
    }


@pytest.mark.durable
def test_nested_not_all_any_follow_de_morgan() -> None:
    age = Compare("patient.age", Op.GTE, 18)
    cancer = Compare("diagnoses", Op.ANY_PREFIX, ("C",))
    hmo = Compare("coverage.plan_type", Op.EQ, "HMO")
    conditions: list[Condition] = [
        Not(All((age, cancer))),
        Not(AnyOf((age, Not(hmo)))),
        Not(Not(All((age, AnyOf((cancer, Not(hmo))))))),
        AnyOf((Not(All(())), Not(AnyOf(())))),
        All(()),
        AnyOf(()),
    ]
    rules = tuple(Rule(f"r{i}", c, {"covered": "covered"}) for i, c in enumerate(conditions))
    rs = Ruleset("nested", Kind.COVERAGE, rules, hit_policy=HitPolicy.RULE_ORDER)
    cases: list[dict[str, Any]] = [
        {},
        {"patient.age": 20},
        {"patient.age": 20, "diagnoses": ["C50.9"]},
        {"patient.age": 10, "diagnoses": [], "coverage.plan_type": "HMO"},
        {"diagnoses": ["C1"], "coverage.plan_type": "PPO"},
    ]
    found = agree(rs, cases)
    for facts, matched in zip(cases, found, strict=True):
        assert matched == [i for i, c in enumerate(conditions) if evaluate_condition(c, facts)]


# --------------------------------------------------------------------------- prefixes

TRICKY = [
    "C50.9",
    "a%b",
    "a(b)",
    "x*y+z?",
    "[a]{b}|c",
    "back\\slash",
    'quote"d',
    "é-clinic",
    "日本",
]


def test_mt_prefix_escapes_the_pattern_dialect() -> None:
    assert mt_prefix("C50.9") == "C50%.9.*"
    assert mt_prefix("a%b(c)") == "a%%b%(c%).*"
    assert mt_prefix("") == ".*"
    assert mt_prefix("x-y/z") == "x-y/z.*"  # '%' before other punctuation does not compile


@pytest.mark.durable
@pytest.mark.parametrize("prefix", TRICKY)
def test_prefixes_with_pattern_metacharacters(prefix: str) -> None:
    variants = [
        prefix,
        prefix + "1",
        "X" + prefix,
        prefix[:-1],
        "".join("X" if not ch.isalnum() else ch for ch in prefix),
        "",
    ]
    rs = ruleset(
        [
            {
                "id": "scalar",
                "when": {"specialty": {"prefix": [prefix]}},
                "then": {"covered": "covered"},
            },
            {
                "id": "not-scalar",
                "when": {"not": {"specialty": {"prefix": [prefix]}}},
                "then": {"covered": "covered"},
            },
            {
                "id": "any",
                "when": {"diagnoses": {"any_prefix": [prefix]}},
                "then": {"covered": "covered"},
            },
            {
                "id": "all",
                "when": {"diagnoses": {"all_prefix": [prefix]}},
                "then": {"covered": "covered"},
            },
            {
                "id": "none",
                "when": {"diagnoses": {"none_prefix": [prefix]}},
                "then": {"covered": "covered"},
            },
        ]
    )
    cases = [{"specialty": v, "diagnoses": [v]} for v in variants]
    cases += [{"diagnoses": variants}, {"diagnoses": [prefix, "Q"]}, {}]
    agree(rs, cases)


@pytest.mark.durable
def test_the_dot_in_an_icd10_code_is_literal() -> None:
    rs = ruleset(
        [
            {
                "id": "breast",
                "when": {"diagnoses": {"any_prefix": ["C50.9"]}},
                "then": {"covered": "covered"},
            }
        ]
    )
    engine = DurableEngine(rs)
    assert engine.matches({"diagnoses": ["C50.91"]}, DAY) == [0]
    assert engine.matches({"diagnoses": ["C50X9"]}, DAY) == []
    assert engine.matches({"diagnoses": ["C50.9"]}, DAY) == [0]


# --------------------------------------------------------------------------- hit policies

OVERLAPPING = [
    {
        "id": "adult",
        "when": {"patient.age": {"gte": 18}},
        "then": {"priority": "routine", "score": 1, "due_days": 30, "reason": "adult"},
    },
    {
        "id": "cancer",
        "when": {"diagnoses": {"any_prefix": ["C"]}},
        "then": {"priority": "urgent", "score": 10, "due_days": 14, "reason": "cancer"},
    },
    {
        "id": "pregnant",
        "when": {"patient.pregnant": True},
        "then": {"priority": "urgent", "score": 5, "due_days": 7},
    },
    {
        "id": "same-as-adult",
        "when": {"patient.age": {"gte": 65}},
        "then": {"priority": "routine", "score": 1, "due_days": 30, "reason": "adult"},
    },
]
POLICY_CASES: list[dict[str, Any]] = [
    {},
    {"patient.age": 70},
    {"patient.age": 30, "diagnoses": ["C50.9"]},
    {"patient.age": 30, "patient.pregnant": True, "diagnoses": ["C18"]},
    {"patient.age": 10, "patient.pregnant": False},
]


@pytest.mark.durable
@pytest.mark.parametrize("policy", [p.value for p in HitPolicy])
def test_every_hit_policy(policy: str) -> None:
    header: dict[str, Any] = {"name": "pol", "kind": "urgency", "hit_policy": policy}
    if policy == "collect":
        header["aggregation"] = "sum"
    rs = parse({"ruleset": header, "rules": OVERLAPPING})
    python, durable = PythonEngine(rs), DurableEngine(rs)
    for facts in POLICY_CASES:
        assert durable.matches(facts, DAY) == python.matches(facts, DAY)
        assert outcome(durable, facts) == outcome(python, facts)


def outcome(engine: Any, facts: dict[str, Any]) -> Any:
    try:
        return engine.evaluate(facts, DAY)
    except RulesError as exc:  # unique and any refuse conflicting matches
        return ("refused", str(exc))


@pytest.mark.durable
def test_first_returns_only_the_first_match() -> None:
    rs = ruleset(OVERLAPPING, policy="first", kind="urgency")
    engine = DurableEngine(rs)
    assert engine.matches({"patient.age": 70, "diagnoses": ["C1"]}, DAY) == [0]
    assert engine.first({"patient.age": 10, "diagnoses": ["C1"]}, DAY) == 1
    assert engine.first({}, DAY) is None


# --------------------------------------------------------------------------- effective dates


@pytest.mark.durable
@pytest.mark.parametrize("policy", ["first", "rule order"])
def test_effective_dates(policy: str) -> None:
    rules = [
        {
            "id": "old",
            "valid_to": dt.date(2025, 12, 31),
            "when": {},
            "then": {"covered": "covered"},
        },
        {
            "id": "new",
            "valid_from": dt.date(2026, 1, 1),
            "when": {},
            "then": {"covered": "not-covered"},
        },
        {
            "id": "window",
            "valid_from": dt.date(2026, 1, 3),
            "valid_to": dt.date(2026, 1, 3),
            "when": {"patient.age": {"exists": True}},
            "then": {"covered": "conditional", "info_needed": ["detail-code"]},
        },
    ]
    rs = ruleset(rules, policy=policy)
    python, durable = PythonEngine(rs), DurableEngine(rs)
    for day in (
        dt.date(2025, 12, 31),
        dt.date(2026, 1, 1),
        dt.date(2026, 1, 2),
        dt.date(2026, 1, 3),
        dt.date(2026, 1, 4),
    ):
        for facts in ({}, {"patient.age": 5}):
            assert durable.matches(facts, day) == python.matches(facts, day)
            assert durable.evaluate(facts, day, explain=True) == python.evaluate(
                facts, day, explain=True
            )
    first = DurableEngine(ruleset(rules, policy="first"))
    assert first.first({}, dt.date(2025, 12, 31)) == 0
    assert first.first({}, dt.date(2026, 1, 1)) == 1  # "old" is not in force any more


@pytest.mark.durable
def test_explain_gives_the_python_trace() -> None:
    rs = ruleset(OVERLAPPING, policy="collect", kind="urgency")
    evaluation = DurableEngine(rs).evaluate({"patient.age": 30}, DAY, explain=True)
    assert evaluation == PythonEngine(rs).evaluate({"patient.age": 30}, DAY, explain=True)
    assert [t.matched for t in evaluation.trace] == [True, False, False, False]
    assert evaluation.trace[1].failed == "diagnoses any_prefix ['C']"


# --------------------------------------------------------------------------- safety


@pytest.mark.durable
def test_no_state_is_left_behind() -> None:
    rt = runtime()
    facts = {"patient.age": 30, "diagnoses": ["C1"]}
    collect = DurableEngine(ruleset(OVERLAPPING, policy="collect", kind="urgency"))
    collect.matches(facts, DAY)
    assert not rt.state_exists(collect.name, SESSION)  # facts: the session is deleted
    first = DurableEngine(ruleset(OVERLAPPING, policy="first", kind="urgency"))
    for _ in range(3):
        first.matches(facts, DAY)
        first.matches({}, DAY)  # taken by the catch-all
    with rt.lock:  # events: consumed, nothing pending, no fact
        assert rt.host.get_facts(first.name, SESSION) == []
        assert rt.host.get_pending_events(first.name, SESSION) == []


@pytest.mark.durable
def test_a_changed_ruleset_gets_a_fresh_durable_name_and_one_registration() -> None:
    rt = runtime()
    a = ruleset(OVERLAPPING[:2], policy="collect", kind="urgency")
    # a change no earlier run in this process made (mutmut runs the tests again in-process)
    changed_rule = {**OVERLAPPING[2], "id": f"pregnant-{uuid.uuid4().hex}"}
    b = ruleset([*OVERLAPPING[:2], changed_rule], policy="collect", kind="urgency")
    first = DurableEngine(a)
    registered = len(rt.definitions)
    again = DurableEngine(a)
    assert again.name == first.name
    assert len(rt.definitions) == registered
    changed = DurableEngine(b)
    assert changed.name != first.name
    assert changed.name == f"rk.c.t.{b.version}"
    assert len(rt.definitions) == registered + 1


@pytest.mark.durable
def test_no_timer_threads() -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = DurableEngine(ruleset(OVERLAPPING, policy="first", kind="urgency"))
    for age in range(50):
        engine.evaluate({"patient.age": age}, DAY)
    runtime().rebuild()  # a rebuilt host starts no timers either
    after = {t.ident for t in threading.enumerate()}
    assert after == before
    assert not any(isinstance(t, threading.Timer) for t in threading.enumerate())


@pytest.mark.durable
def test_threads_share_one_engine_safely() -> None:
    rs = ruleset(OVERLAPPING, policy="collect", kind="urgency")
    python, durable = PythonEngine(rs), DurableEngine(rs)
    cases = [
        {"patient.age": a, "diagnoses": ["C1"] if a % 3 else [], "patient.pregnant": a % 2 == 0}
        for a in range(60)
    ]
    expected = [python.evaluate(c, DAY) for c in cases]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                for case, want in zip(cases, expected, strict=True):
                    assert durable.evaluate(case, DAY) == want
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.durable
def test_memory_error_rebuilds_the_host_and_retries_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rs = ruleset(OVERLAPPING, policy="first", kind="urgency")
    engine = DurableEngine(rs)
    rt = runtime()
    rebuilds = rt.rebuilds
    host = rt.host
    original = host.post
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        raise MemoryError

    monkeypatch.setattr(host, "post", failing)
    assert engine.first({"patient.age": 30}, DAY) == 0  # answered by the rebuilt host
    assert calls["n"] == 1
    assert rt.rebuilds == rebuilds + 1
    assert rt.host is not host
    monkeypatch.setattr(host, "post", original)

    # a second MemoryError on the rebuilt host is refused, not retried forever
    def always(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(rt, "host_class", _failing_host(rt.host_class, always))
    monkeypatch.setattr(rt.host, "post", always)
    with pytest.raises(RulesError, match="MemoryError"):
        engine.first({"patient.age": 30}, DAY)
    monkeypatch.undo()
    rt.rebuild()  # leave a working host for the other tests
    assert engine.first({"patient.age": 30}, DAY) == 0


def _failing_host(base: Any, post: Any) -> Any:
    class Failing(base):  # type: ignore[misc]
        def post(self, *args: Any, **kwargs: Any) -> Any:
            return post(*args, **kwargs)

    return Failing


CANARY = "PHI-CANARY-Ada-Lovelace-1815"


@pytest.mark.durable
def test_durable_errors_never_carry_fact_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """durable's own exceptions embed the whole event; the adapter keeps only their kind."""
    from durable import engine as durable_engine

    rs = ruleset(OVERLAPPING, policy="first", kind="urgency")
    engine = DurableEngine(rs)
    facts = {"patient.age": 30, "diagnoses": [CANARY]}
    rt = runtime()
    for error in (
        durable_engine.MessageNotHandledException,
        durable_engine.MessageObservedException,
    ):

        def raising(name: str, message: dict[str, Any], error: Any = error) -> Any:
            raise error(message)

        monkeypatch.setattr(rt.host, "post", raising)
        with pytest.raises(RulesError) as info:
            engine.evaluate(facts, DAY)
        assert CANARY not in str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__
        assert error.__name__ in str(info.value)
    monkeypatch.undo()

    # a real failure: a value durable cannot take (a fact of the wrong type)
    class Opaque:
        def __repr__(self) -> str:
            return CANARY

    with pytest.raises(RulesError) as info:
        engine.evaluate({"patient.age": Opaque()}, DAY)
    assert CANARY not in str(info.value)
    assert "TypeError" in str(info.value)


def test_numbers_durable_cannot_read_are_refused_without_their_value() -> None:
    assert durable_module.json_number(1e16, "x") == 10**16
    assert durable_module.json_number(1.5, "x") == 1.5
    with pytest.raises(RulesError) as info:
        durable_module.json_number(1e-05, "fact 'x'")
    assert "1e-05" not in str(info.value)
    with pytest.raises(RulesError):
        durable_module.json_number(float("nan"), "x")


# --------------------------------------------------------------------------- durable itself


class _Probe:
    """A private host with one rule and a catch-all, to check the dialect facts relied on."""

    def __init__(self, condition: dict[str, Any]) -> None:
        rt = runtime()
        self.hits: list[str] = []
        self.host = rt.host_class()
        self.host.register_rulesets(
            {
                "probe": {
                    "r": {
                        "all": [{"m": {"$and": [{"k": 1}, condition]}}],
                        "pri": 1,
                        "run": lambda c: self.hits.append("r"),
                    },
                    "catch": {"all": [{"m": {"k": 1}}], "pri": 2, "run": lambda c: None},
                }
            }
        )

    def __call__(self, message: dict[str, Any]) -> bool:
        self.hits.clear()
        with runtime().lock:
            self.host.post("probe", {**message, "k": 1, "sid": "1", "id": runtime().next_id()})
            self.host.delete_state("probe", "1")
        return self.hits == ["r"]


@pytest.mark.durable
def test_durable_dialect_facts_the_compiler_relies_on() -> None:
    # $mt is anchored; '%' escapes; a backslash does not
    assert _Probe({"$mt": {"x": "C50%.9.*"}})({"x": "C50.9"})
    assert not _Probe({"$mt": {"x": "C50%.9.*"}})({"x": "C50X9"})
    assert _Probe({"$mt": {"x": "C50.9.*"}})({"x": "C50X9"})
    assert not _Probe({"$mt": {"x": "C50.*"}})({"x": "xC50"})
    # $neq and comparisons are false on an absent field; $ex holds on a null
    assert not _Probe({"$neq": {"x": 1}})({})
    assert not _Probe({"$lt": {"x": 1}})({})
    assert _Probe({"$ex": {"x": 1}})({"x": None})
    # $iall is false on an empty list; $i.<key> reads a field of an item
    assert not _Probe({"$iall": {"xs": {"$neq": {"$i": "a"}}}})({"xs": []})
    assert _Probe({"$iany": {"xs": {"$neq": {"$i.p": "a"}}}})({"xs": [{"p": "a"}, {"p": "b"}]})


@pytest.mark.durable
def test_durable_refuses_what_the_adapter_works_around() -> None:
    from durable import engine as durable_engine

    host = runtime().host_class()
    host.register_rulesets({"bare": {"r": {"all": [{"m": {"k": 1}}], "run": lambda c: None}}})
    with runtime().lock:
        # without a catch-all, an unmatched event raises, with the event in its message
        with pytest.raises(durable_engine.MessageNotHandledException) as info:
            host.post("bare", {"k": 2, "sid": "1", "id": 1, "secret": CANARY})
        assert CANARY in info.value.message
        # the same fact twice (same id) is refused
        host.assert_fact("bare", {"k": 1, "sid": "1", "id": "same"})
        with pytest.raises(durable_engine.MessageObservedException):
            host.assert_fact("bare", {"k": 1, "sid": "1", "id": "same"})
        host.delete_state("bare", "1")
    # an exponent without a fraction does not parse
    with pytest.raises(Exception, match="error code: 204"):
        host.register_rulesets(
            {"exp": {"r": {"all": [{"m": {"$gt": {"x": 1e16}}}], "run": lambda c: None}}}
        )


# --------------------------------------------------------------------------- failures


@pytest.mark.durable
def test_durable_failures_name_their_kind_and_code_never_their_text() -> None:
    class error(Exception):  # noqa: N801, N818 - the name of what durable raises
        pass

    made = runtime().error(error("Could not assert, error code: 309 {'phi': 'x'}"), "post", "rs")
    assert str(made) == "durable-rules: post failed on ruleset 'rs' (error, durable error code 309)"
    other = runtime().error(ValueError("error code: 12 {'phi': 'x'}"), "post", "rs")
    assert str(other) == "durable-rules: post failed on ruleset 'rs' (ValueError)"
    plain = runtime().error(error("no code here"), "assert", "rs")
    assert str(plain) == "durable-rules: assert failed on ruleset 'rs' (error)"
