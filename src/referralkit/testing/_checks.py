"""Ready-made property checks a policy owner runs against their own rules.

Each check runs Hypothesis inside and raises ``AssertionError`` (with Hypothesis's minimal
falsifying example) when the property fails. Call them from a test::

    def test_my_payer_rules_are_total():
        check_totality(CoveragePolicy.from_files(["my-payer.toml"]))
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..errors import RulesError
from ..model import (
    Code,
    CodeSystem,
    Coverage,
    PlanType,
    Priority,
    Referral,
    Sex,
)
from ..rules.engine import PythonEngine, evaluate_condition
from ..rules.facts import extract
from ..rules.model import All, AnyOf, Compare, HitPolicy, Not, Ruleset
from ._samples import sample_request
from ._strategies import SPECIALTIES, codes

__all__ = [
    "policy_referrals",
    "check_determinism",
    "check_effective_dates",
    "check_monotonic_urgency",
    "check_no_conflicts",
    "check_totality",
]

Decide = Callable[[Referral, dt.datetime], Any]

_moments = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2032, 1, 1), timezones=st.just(dt.UTC)
)


_ICD = (
    "R07.9",
    "I20.0",
    "C50.911",
    "C18.9",
    "D05.10",
    "N63.0",
    "M17.11",
    "G43.909",
    "K21.9",
    "E11.9",
    "Z00.00",
    "O09.90",
    "F32.9",
    "J45.909",
)
_CPT = (
    "99204",
    "99214",
    "70551",
    "72148",
    "73721",
    "93306",
    "45378",
    "27447",
    "90837",
    "11102",
    "G0121",
)
_NETWORKS = ("net-a", "net-b")


def _template() -> Referral:
    at = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    return sample_request("policy-template").referral("policy-referral", at, received=True)


@st.composite
def policy_referrals(draw: st.DrawFn) -> Referral:
    """Referrals that vary in what coverage and urgency policies read (age, sex, pregnancy,
    plan type, payer, networks and coverage period, specialty, diagnoses, services,
    requested priority) and are cheap to generate: the checks' default input."""
    base = _template()
    patient = attrs.evolve(
        base.patient,
        birth_date=draw(st.dates(dt.date(1920, 1, 1), dt.date(2026, 1, 1)), label="birth date"),
        sex=draw(st.sampled_from(Sex)),
        pregnant=draw(st.booleans()),
    )
    coverage = None
    if draw(st.integers(0, 9), label="has coverage") > 0:
        start = draw(st.sampled_from((None, dt.date(2025, 1, 1), dt.date(2026, 7, 1))))
        coverage = Coverage(
            id="cov",
            payer=draw(st.sampled_from(("Acme Health", "Medicare", "State Medicaid", "Unity"))),
            plan="plan",
            plan_type=draw(st.sampled_from(PlanType)),
            period_start=start,
            period_end=draw(st.sampled_from((None, dt.date(2027, 12, 31)))),
            networks=tuple(draw(st.lists(st.sampled_from(_NETWORKS), max_size=2, unique=True))),
        )
    target = None
    if base.target is not None and draw(st.booleans()):
        networks = tuple(draw(st.lists(st.sampled_from(_NETWORKS), max_size=2, unique=True)))
        target = attrs.evolve(base.target, networks=networks)
    icd = st.sampled_from(_ICD) | codes(CodeSystem.ICD10CM).map(lambda c: c.code)
    cpt = st.sampled_from(_CPT)
    return attrs.evolve(
        base,
        patient=patient,
        coverage=coverage,
        target=target,
        specialty=draw(st.sampled_from(SPECIALTIES)),
        diagnoses=tuple(Code.icd10(c) for c in draw(st.lists(icd, max_size=3))),
        services=tuple(Code.cpt(c) for c in draw(st.lists(cpt, max_size=2))),
        priority=draw(st.sampled_from(Priority)),
    )


def _settings(examples: int) -> settings:
    # derandomized: the same rules get the same verdict on every run and every machine, so a
    # check that passed in review does not fail later by chance (or the other way round)
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _decider(policy: Any) -> Decide:
    for name in ("decide", "assess"):
        method = getattr(policy, name, None)
        if callable(method):
            return method  # type: ignore[no-any-return]
    raise RulesError("expected a coverage policy (decide) or an urgency policy (assess)")


def check_totality(
    policy: Any, *, examples: int = 200, strategy: st.SearchStrategy[Referral] | None = None
) -> None:
    """Every referral, on every date, gets a decision: no exception, a value back."""
    decide = _decider(policy)

    @_settings(examples)
    @given(strategy if strategy is not None else policy_referrals(), _moments)
    def run(referral: Referral, at: dt.datetime) -> None:
        assert decide(referral, at) is not None

    run()


def check_determinism(
    policy: Any, *, examples: int = 200, strategy: st.SearchStrategy[Referral] | None = None
) -> None:
    """The same referral on the same date always gets the same decision."""
    decide = _decider(policy)

    @_settings(examples)
    @given(strategy if strategy is not None else policy_referrals(), _moments)
    def run(referral: Referral, at: dt.datetime) -> None:
        assert decide(referral, at) == decide(referral, at)

    run()


def check_no_conflicts(
    ruleset: Ruleset, *, examples: int = 300, strategy: st.SearchStrategy[Referral] | None = None
) -> None:
    """Under ``unique``, no referral matches two rules; under ``any``, matching rules agree."""
    if ruleset.hit_policy not in (HitPolicy.UNIQUE, HitPolicy.ANY):
        return
    engine = PythonEngine(ruleset)

    @_settings(examples)
    @given(strategy if strategy is not None else policy_referrals(), _moments)
    def run(referral: Referral, at: dt.datetime) -> None:
        try:
            engine.evaluate(extract(referral, at), at.date())
        except RulesError as error:
            raise AssertionError(str(error)) from None

    run()


def _worse_diagnosis(
    referral: Referral, data: st.DataObject, mentioned: Sequence[str] = ()
) -> Referral:
    pool = st.sampled_from(_ICD).map(Code.icd10) | codes(CodeSystem.ICD10CM)
    if mentioned:
        # the codes and prefixes the rules themselves name are where a rule can misfire
        pool = st.sampled_from(list(mentioned)).map(Code.icd10) | pool
    extra = data.draw(pool, label="added diagnosis")
    return attrs.evolve(referral, diagnoses=(*referral.diagnoses, extra))


def _mentioned(policy: Any, fact: str) -> set[str]:
    """Every value the policy's rules compare ``fact`` with (codes and prefixes)."""
    found: set[str] = set()

    def walk(condition: Any) -> None:
        if isinstance(condition, Compare):
            if condition.fact == fact and isinstance(condition.value, tuple):
                found.update(v for v in condition.value if isinstance(v, str) and v.strip())
        elif isinstance(condition, All | AnyOf):
            for item in condition.items:
                walk(item)
        elif isinstance(condition, Not):
            walk(condition.item)

    for ruleset in getattr(policy, "rulesets", ()):
        for rule in ruleset.rules:
            walk(rule.when)
    return found


def _worse_priority(referral: Referral, data: st.DataObject) -> Referral:
    higher = [p for p in Priority if p.rank > referral.priority.rank]
    if not higher:
        return referral
    return attrs.evolve(referral, priority=data.draw(st.sampled_from(higher), label="priority"))


def _pregnant(referral: Referral, data: st.DataObject) -> Referral:
    return attrs.evolve(referral, patient=attrs.evolve(referral.patient, pregnant=True))


WORSENINGS: tuple[Callable[[Referral, st.DataObject], Referral], ...] = (
    _worse_diagnosis,
    _worse_priority,
    _pregnant,
)
"""The default ways a clinical picture gets worse: one more diagnosis, a higher requested
priority, a pregnancy."""


def check_monotonic_urgency(
    policy: Any,
    *,
    examples: int = 500,
    worsenings: Sequence[Callable[[Referral, st.DataObject], Referral]] = WORSENINGS,
    strategy: st.SearchStrategy[Referral] | None = None,
) -> None:
    """A worse clinical picture never lowers the priority (nor makes the due date later).

    An added diagnosis is drawn from the codes and prefixes the policy's rules name as well as
    from a general pool, so a rule keyed on one diagnosis family is exercised.
    """
    assess = _decider(policy)
    mentioned = tuple(sorted(_mentioned(policy, "diagnoses")))
    worsenings = [
        functools.partial(w, mentioned=mentioned) if w is _worse_diagnosis else w
        for w in worsenings
    ]

    @_settings(examples)
    @given(
        strategy if strategy is not None else policy_referrals(),
        _moments,
        st.sampled_from(list(worsenings)),
        st.data(),
    )
    def run(
        referral: Referral,
        at: dt.datetime,
        worsen: Callable[[Referral, st.DataObject], Referral],
        data: st.DataObject,
    ) -> None:
        before = assess(referral, at)
        after = assess(worsen(referral, data), at)
        assert after.priority.rank >= before.priority.rank, (
            f"priority fell from {before.priority.value} to {after.priority.value}"
        )
        if before.due_by is not None and after.due_by is not None:
            assert after.due_by <= before.due_by, "the due date moved later"

    run()


def check_effective_dates(
    ruleset: Ruleset, *, examples: int = 200, strategy: st.SearchStrategy[Referral] | None = None
) -> None:
    """At every ``valid_from``/``valid_to`` boundary, only the rules whose boundary it is
    change between the day before and the day itself; ``valid_to`` is inclusive."""
    engine = PythonEngine(ruleset)
    boundaries: dict[dt.date, set[str]] = {}
    for rule in ruleset.rules:
        if rule.valid_from is not None:
            boundaries.setdefault(rule.valid_from, set()).add(rule.id)
        if rule.valid_to is not None:
            boundaries.setdefault(rule.valid_to + dt.timedelta(days=1), set()).add(rule.id)
    if not boundaries:
        return
    collect_all = attrs.evolve(ruleset, hit_policy=HitPolicy.COLLECT, aggregation=None)
    collect_engine = PythonEngine(collect_all)

    @_settings(examples)
    @given(
        strategy if strategy is not None else policy_referrals(),
        st.sampled_from(sorted(boundaries)),
    )
    def run(referral: Referral, day: dt.date) -> None:
        at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
        facts = extract(referral, at)
        before = {
            collect_all.rules[i].id
            for i in collect_engine.matches(facts, day - dt.timedelta(days=1))
        }
        after = {collect_all.rules[i].id for i in collect_engine.matches(facts, day)}
        assert (before ^ after) <= boundaries[day], "a rule changed state off its boundary"
        for rule in ruleset.rules:
            if rule.id in before ^ after:
                assert evaluate_condition(rule.when, facts)
                assert rule.active_on(day) != rule.active_on(day - dt.timedelta(days=1))
        engine.evaluate(facts, day)

    run()
