"""Ready-made property checks a policy owner runs against their own rules.

Every check takes a policy (a :class:`~referralkit.rules.policies.CoveragePolicy` or an
:class:`~referralkit.rules.policies.UrgencyPolicy`, or anything with ``decide``/``assess``
and ``rulesets``); the ruleset checks take a ruleset or a policy. By default the referrals come
from :func:`~referralkit.testing.referrals_for` the rules under test, each evaluated as of its
``updated_at``; pass ``strategy=`` to draw your own.

A check that holds returns a :class:`CheckResult`. One that fails raises :class:`CheckFailedError`
(an ``AssertionError``) carrying a :class:`Counterexample`: the minimal referral Hypothesis
found, the moment, the facts the rules read, and the rules involved; its
:meth:`Counterexample.snippet` is Python to paste into a regression test, and
:meth:`Counterexample.to_json` the same as JSON (``referralkit rules test`` prints it). Call
them from a test::

    def test_my_payer_rules_are_total():
        check_totality(CoveragePolicy.from_files(["my-payer.toml"]), fallback=False)

The referrals are synthetic: drawn by the kit (or by your strategy), never a patient's.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

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
from ..rules.model import Always, HitPolicy, Kind
from ..rules.timeline import durable_available
from ..serialization import to_dict
from ._derive import (
    _code,
    _compares,
    draw_examples,
    referrals_for,
    rulesets_of,
    sample_referrals,
)
from ._samples import sample_request
from ._strategies import SPECIALTIES, codes

__all__ = [
    "WORSENINGS",
    "CheckFailedError",
    "CheckResult",
    "Counterexample",
    "check_agreement",
    "check_determinism",
    "check_effective_dates",
    "check_monotonic_urgency",
    "check_no_conflicts",
    "check_rules_fire",
    "check_totality",
    "policy_referrals",
    "run_checks",
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
    requested priority, the moment: ``updated_at``), from fixed pools that know nothing of
    your rules. :func:`~referralkit.testing.referrals_for` draws from the rules themselves and
    is the checks' default."""
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
    at = draw(_moments, label="moment")
    received = at - dt.timedelta(days=draw(st.integers(0, 60), label="days waiting"))
    return attrs.evolve(
        base,
        patient=patient,
        coverage=coverage,
        target=target,
        specialty=draw(st.sampled_from(SPECIALTIES)),
        diagnoses=tuple(Code.icd10(c) for c in draw(st.lists(icd, max_size=3))),
        services=tuple(Code.cpt(c) for c in draw(st.lists(cpt, max_size=2))),
        priority=draw(st.sampled_from(Priority)),
        created_at=received,
        received_at=received,
        updated_at=at,
    )


# --------------------------------------------------------------------------- results


@attrs.frozen
class Counterexample:
    """The minimal referral a check found that breaks its property.

    ``rules`` names the rules involved as ``ruleset/rule``; ``facts`` are the facts the
    rulesets read, as of ``at``. The referral is synthetic (drawn by the kit).
    """

    check: str
    message: str
    referral: Referral
    at: dt.datetime
    rules: tuple[str, ...] = ()
    facts: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The counterexample as JSON-compatible data (the referral in the shape
        :func:`referralkit.serialization.from_dict` reads)."""
        return {
            "check": self.check,
            "message": self.message,
            "rules": list(self.rules),
            "at": self.at.isoformat(),
            "facts": {k: _jsonable(v) for k, v in sorted(self.facts.items())},
            "referral": to_dict(self.referral),
        }

    def snippet(self) -> str:
        """Python that rebuilds the referral and the moment, for a regression test."""
        data = json.dumps(to_dict(self.referral), sort_keys=True)
        return (
            "import datetime as dt\n"
            "import json\n"
            "from referralkit.model import Referral\n"
            "from referralkit.serialization import from_dict\n\n"
            f"referral = from_dict(Referral, json.loads({data!r}))\n"
            f"at = dt.datetime.fromisoformat({self.at.isoformat()!r})\n"
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class CheckFailedError(RulesError, AssertionError):
    """A property check failed; ``counterexample`` shows where (``None`` when the
    failure has no single referral, e.g. a rule that never fired on any). An
    ``AssertionError`` too, so that a test runner reports it as a failed assertion."""

    def __init__(self, check: str, message: str, counterexample: Counterexample | None) -> None:
        self.check = check
        self.reason = message
        self.counterexample = counterexample
        text = f"{check}: {message}"
        if counterexample is not None:
            facts = ", ".join(f"{k}={v!r}" for k, v in sorted(counterexample.facts.items()))
            text += (
                f"\n  rules: {', '.join(counterexample.rules) or '(none)'}"
                f"\n  at: {counterexample.at.isoformat()}"
                f"\n  facts: {facts}"
                "\n  (the referral: .counterexample.snippet() or .to_json())"
            )
        super().__init__(text)


@attrs.frozen
class CheckResult:
    """The outcome of one check: ``status`` is ``passed``, ``failed`` or ``skipped``."""

    check: str
    subject: str
    status: str
    examples: int = 0
    reason: str = ""
    counterexample: Counterexample | None = None

    @property
    def passed(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "check": self.check,
            "subject": self.subject,
            "status": self.status,
            "examples": self.examples,
        }
        if self.reason:
            data["reason"] = self.reason
        if self.counterexample is not None:
            data["counterexample"] = self.counterexample.to_json()
        return data


class _ViolationError(RulesError):
    """Raised inside a property, so that Hypothesis shrinks it; carries what broke."""

    def __init__(self, message: str, referral: Referral, at: dt.datetime, rules: Iterable[str]):
        super().__init__(message)
        self.message = message
        self.referral = referral
        self.at = at
        self.rules = tuple(dict.fromkeys(rules))


def _settings(examples: int, shrink: bool = True) -> settings:
    # derandomized: the same rules get the same verdict on every run and every machine, so a
    # check that passed in review does not fail later by chance (or the other way round)
    from hypothesis import Phase

    phases = (Phase.explicit, Phase.generate, Phase.shrink) if shrink else (Phase.generate,)
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        report_multiple_bugs=False,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )


def _name(subject: Any) -> str:
    return ", ".join(r.name for r in rulesets_of(subject))


def _facts_of(subject: Any, referral: Referral, at: dt.datetime) -> dict[str, Any]:
    facts = extract(referral, at)
    used: set[str] = set()
    for ruleset in rulesets_of(subject):
        if ruleset.kind is not Kind.EVENT:
            used |= ruleset.facts_used()
    used.add("date")
    return {k: facts[k] for k in sorted(used) if k in facts}


def _cases(subject: Any, strategy: st.SearchStrategy[Referral] | None) -> Any:
    referrals = strategy if strategy is not None else referrals_for(subject)
    return referrals.map(lambda r: (r, r.updated_at))


def _simpler(referral: Referral) -> list[Referral]:
    """Referrals one step simpler than ``referral``: one list item fewer, a flag off, no
    target, the routine priority."""
    found: list[Referral] = []
    for i in range(len(referral.diagnoses)):
        shorter = referral.diagnoses[:i] + referral.diagnoses[i + 1 :]
        found.append(attrs.evolve(referral, diagnoses=shorter))
    for i in range(len(referral.services)):
        shorter = referral.services[:i] + referral.services[i + 1 :]
        found.append(attrs.evolve(referral, services=shorter))
    for i in range(len(referral.attachments)):
        fewer = referral.attachments[:i] + referral.attachments[i + 1 :]
        found.append(attrs.evolve(referral, attachments=fewer))
    patient = referral.patient
    if patient.pregnant:
        found.append(attrs.evolve(referral, patient=attrs.evolve(patient, pregnant=False)))
    if patient.interpreter_needed:
        plain = attrs.evolve(patient, interpreter_needed=False)
        found.append(attrs.evolve(referral, patient=plain))
    if referral.target is not None:
        found.append(attrs.evolve(referral, target=None))
    if referral.priority is not Priority.ROUTINE:
        found.append(attrs.evolve(referral, priority=Priority.ROUTINE))
    return found


def _shrunk(
    prop: Callable[[Referral, dt.datetime], None], found: _ViolationError
) -> _ViolationError:
    """Greedily simplify a failing referral while the property still fails on it."""
    current = found
    for _ in range(100):
        for candidate in _simpler(current.referral):
            try:
                prop(candidate, current.at)
            except _ViolationError as still:
                current = still
                break
        else:
            return current
    return current


def _run(
    check: str,
    subject: Any,
    examples: int,
    strategy: st.SearchStrategy[Referral] | None,
    prop: Callable[[Referral, dt.datetime], None],
    *,
    shrink: bool = True,
) -> CheckResult:
    """Run ``prop`` on drawn (referral, moment) cases; a :class:`_ViolationError` becomes
    :class:`CheckFailedError` with the shrunk case.

    Without ``strategy``: first ``examples`` independent draws of
    :func:`~referralkit.testing._derive.sample_referrals` (seeded), a failure simplified
    step by step; then half as many from Hypothesis (:func:`referrals_for`), whose draws
    favour edge values and shrink to a minimal referral."""
    found: _ViolationError | None = None
    if strategy is None:
        for referral in sample_referrals(subject, examples):
            try:
                prop(referral, referral.updated_at)
            except _ViolationError as violation:
                found = _shrunk(prop, violation) if shrink else violation
                break
    if found is None:

        @_settings(examples if strategy is not None else max(1, examples // 2), shrink)
        @given(_cases(subject, strategy))
        def run(case: tuple[Referral, dt.datetime]) -> None:
            prop(*case)

        try:
            run()
        except _ViolationError as violation:
            found = violation
    if found is not None:
        example = Counterexample(
            check,
            found.message,
            found.referral,
            found.at,
            found.rules,
            _facts_of(subject, found.referral, found.at),
        )
        raise CheckFailedError(check, found.message, example) from None
    return CheckResult(check, _name(subject), "passed", examples)


def _decider(policy: Any) -> Decide:
    for name in ("decide", "assess"):
        method = getattr(policy, name, None)
        if callable(method):
            return method  # type: ignore[no-any-return]
    raise RulesError("expected a coverage policy (decide) or an urgency policy (assess)")


def _hit_names(decision: Any) -> list[str]:
    return [f"{h.ruleset}/{h.rule_id}" for h in getattr(decision, "hits", ())]


def _catch_alls(policy: Any) -> set[tuple[str, str]]:
    """The (ruleset, rule) of the rules without a condition: fallbacks."""
    return {
        (r.name, rule.id)
        for r in rulesets_of(policy)
        for rule in r.rules
        if isinstance(rule.when, Always)
    }


# --------------------------------------------------------------------------- the checks


def check_totality(
    policy: Any,
    *,
    examples: int = 200,
    strategy: st.SearchStrategy[Referral] | None = None,
    fallback: bool = True,
) -> CheckResult:
    """Every referral, on every date, gets a decision: no error, and some rule decided it
    (a coverage decision with no hits is ``indeterminate``). With ``fallback=False``, a
    decision made only by catch-all rules (rules without a condition, such as a "manual
    review" fallback) counts as undecided too."""
    decide = _decider(policy)
    catch_alls = _catch_alls(policy)

    def prop(referral: Referral, at: dt.datetime) -> None:
        try:
            decision = decide(referral, at)
        except RulesError as error:
            raise _ViolationError(f"deciding raised {error}", referral, at, ()) from None
        hits = getattr(decision, "hits", ())
        if decision is None or not hits:
            raise _ViolationError("no rule decided this referral (indeterminate)", referral, at, ())
        if not fallback and all((h.ruleset, h.rule_id) in catch_alls for h in hits):
            raise _ViolationError(
                "only a catch-all rule decided this referral", referral, at, _hit_names(decision)
            )

    return _run("totality", policy, examples, strategy, prop)


def _plain(decision: Any) -> Any:
    """A decision without its hits and trace: what the patient and coordinator see."""
    if attrs.has(type(decision)):
        changes = {k: () for k in ("hits", "trace") if hasattr(decision, k)}
        return attrs.evolve(decision, **changes)
    return decision


def check_determinism(
    policy: Any, *, examples: int = 200, strategy: st.SearchStrategy[Referral] | None = None
) -> CheckResult:
    """The same referral on the same date always gets the same decision: asked twice, asked
    with ``explain=True`` (another code path) and asked after another referral."""
    decide = _decider(policy)
    other = _template()

    def prop(referral: Referral, at: dt.datetime) -> None:
        first = decide(referral, at)
        decide(other, at)
        again = decide(referral, at)
        if again != first:
            raise _ViolationError("asked twice, two decisions", referral, at, _hit_names(first))
        try:
            explained = decide(referral, at, explain=True)  # type: ignore[call-arg]
        except TypeError:
            return
        if _plain(explained) != _plain(first) or _hit_names(explained) != _hit_names(first):
            raise _ViolationError(
                "the decision with explain=True differs",
                referral,
                at,
                _hit_names(first) + _hit_names(explained),
            )

    return _run("determinism", policy, examples, strategy, prop)


def check_no_conflicts(
    subject: Any, *, examples: int = 300, strategy: st.SearchStrategy[Referral] | None = None
) -> CheckResult:
    """Under ``unique``, no referral matches two rules; under ``any``, matching rules agree.
    ``subject`` is a ruleset or a policy (each of its rulesets is checked)."""
    engines = [
        PythonEngine(r)
        for r in rulesets_of(subject)
        if r.hit_policy in (HitPolicy.UNIQUE, HitPolicy.ANY)
    ]
    if not engines:
        return CheckResult(
            "no conflicts", _name(subject), "skipped", reason="no ruleset is 'unique' or 'any'"
        )

    def prop(referral: Referral, at: dt.datetime) -> None:
        facts = extract(referral, at)
        for engine in engines:
            try:
                engine.evaluate(facts, at.date())
            except RulesError as error:
                names = [
                    f"{engine.ruleset.name}/{engine.ruleset.rules[i].id}"
                    for i in engine.matches(facts, at.date())
                ]
                raise _ViolationError(str(error), referral, at, names) from None

    return _run("no conflicts", subject, examples, strategy, prop)


def _mentioned(policy: Any, fact: str) -> set[str]:
    """Every value the policy's rules compare ``fact`` with (codes and prefixes)."""
    found: set[str] = set()
    for ruleset in rulesets_of(policy):
        for rule in ruleset.rules:
            for c in _compares(rule.when):
                if c.fact == fact and isinstance(c.value, tuple):
                    found.update(v for v in c.value if isinstance(v, str) and v.strip())
    return found


def _worse_diagnosis(
    referral: Referral, data: st.DataObject, mentioned: Sequence[str] = ()
) -> Referral:
    pool = st.sampled_from(_ICD).map(Code.icd10) | codes(CodeSystem.ICD10CM)
    if mentioned:
        # the codes and prefixes the rules themselves name are the red flags
        pool = st.sampled_from(list(mentioned)).map(Code.icd10) | pool
    extra = data.draw(pool, label="added diagnosis")
    return attrs.evolve(referral, diagnoses=(*referral.diagnoses, extra))


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
"""The default ways a clinical picture gets worse: one more diagnosis (a red flag the rules
name, or any code), a higher requested priority, a pregnancy."""


def check_monotonic_urgency(
    policy: Any,
    *,
    examples: int = 500,
    worsenings: Sequence[Callable[[Referral, st.DataObject], Referral]] = WORSENINGS,
    strategy: st.SearchStrategy[Referral] | None = None,
) -> CheckResult:
    """A worse clinical picture (an added red flag) never lowers the priority nor makes
    the due date later.

    An added diagnosis is drawn from the codes and prefixes the policy's rules name as well as
    from a general pool, so a rule keyed on one diagnosis family is exercised.
    """
    assess = _decider(policy)
    mentioned = tuple(sorted(_code(v, "diagnoses") for v in _mentioned(policy, "diagnoses")))
    chosen = [
        functools.partial(w, mentioned=mentioned) if w is _worse_diagnosis else w
        for w in worsenings
    ]

    @_settings(examples)
    @given(_cases(policy, strategy), st.sampled_from(chosen), st.data())
    def run(
        case: tuple[Referral, dt.datetime],
        worsen: Callable[[Referral, st.DataObject], Referral],
        data: st.DataObject,
    ) -> None:
        referral, at = case
        before = assess(referral, at)
        worse = worsen(referral, data)
        after = assess(worse, at)
        rules = _hit_names(before) + _hit_names(after)
        if after.priority.rank < before.priority.rank:
            raise _ViolationError(
                f"priority fell from {before.priority.value} to {after.priority.value} "
                "when the picture got worse",
                worse,
                at,
                rules,
            )
        if before.due_by is not None and after.due_by is not None and after.due_by > before.due_by:
            raise _ViolationError(
                f"the due date moved later ({before.due_by.isoformat()} -> "
                f"{after.due_by.isoformat()}) when the picture got worse",
                worse,
                at,
                rules,
            )

    try:
        run()
    except _ViolationError as found:
        example = Counterexample(
            "monotonic urgency",
            found.message,
            found.referral,
            found.at,
            found.rules,
            _facts_of(policy, found.referral, found.at),
        )
        raise CheckFailedError("monotonic urgency", found.message, example) from None
    return CheckResult("monotonic urgency", _name(policy), "passed", examples)


def check_rules_fire(
    policy: Any,
    *,
    examples: int = 1000,
    strategy: st.SearchStrategy[Referral] | None = None,
    fallbacks: bool = False,
) -> CheckResult:
    """Every rule decides at least one drawn referral: no rule can never fire (shadowed by
    an earlier rule or ruleset, or with a condition nothing meets). Catch-all rules (no
    condition) are exempt unless ``fallbacks``: a fallback that never fires is a policy that
    decides everything without it.

    The counterexample, when there is one, is a referral that met the dead rule's condition
    but was decided by the rules it names.
    """
    decide = _decider(policy)
    exempt = set() if fallbacks else _catch_alls(policy)
    rulesets = [r for r in rulesets_of(policy) if r.kind is not Kind.EVENT]
    fired: set[tuple[str, str]] = set()
    shadowed: dict[tuple[str, str], tuple[Referral, dt.datetime, list[str]]] = {}

    def visit(referral: Referral) -> None:
        at = referral.updated_at
        decision = decide(referral, at)
        hits = {(h.ruleset, h.rule_id) for h in decision.hits}
        fired.update(hits)
        facts = extract(referral, at)
        for ruleset in rulesets:
            for rule in ruleset.rules:
                key = (ruleset.name, rule.id)
                if key in fired or key in shadowed or key in exempt:
                    continue
                if rule.active_on(at.date()) and evaluate_condition(rule.when, facts):
                    shadowed[key] = (referral, at, _hit_names(decision))

    if strategy is None:
        for referral in sample_referrals(policy, examples):
            visit(referral)
    else:
        draw_examples(strategy, examples, visit)
    dead = [
        (r.name, rule.id)
        for r in rulesets
        for rule in r.rules
        if (r.name, rule.id) not in fired and (r.name, rule.id) not in exempt
    ]
    if not dead:
        return CheckResult("rules fire", _name(policy), "passed", examples)
    first = dead[0]
    names = ", ".join(f"{a}/{b}" for a, b in dead)
    if first in shadowed:
        referral, at, by = shadowed[first]
        message = (
            f"never decided a referral in {examples}: {names}; {first[0]}/{first[1]} met its "
            f"condition but {', '.join(by) or 'no rule'} decided"
        )
        example = Counterexample(
            "rules fire",
            message,
            referral,
            at,
            (f"{first[0]}/{first[1]}", *by),
            _facts_of(policy, referral, at),
        )
        raise CheckFailedError("rules fire", message, example)
    message = (
        f"never decided a referral in {examples}: {names}; no drawn referral met the "
        f"condition of {first[0]}/{first[1]}"
    )
    raise CheckFailedError("rules fire", message, None)


def check_agreement(
    policy: Any,
    other: Any = None,
    *,
    examples: int = 300,
    strategy: st.SearchStrategy[Referral] | None = None,
) -> CheckResult:
    """Two deciders agree on every referral.

    Without ``other``: the python and durable engines match the same rules of every ruleset
    of ``policy`` (skipped, with the reason, where durable-rules is not installed). With
    ``other`` (a second policy, such as the version in production): both give the same
    decisions, hits and traces aside; half the referrals are drawn from each policy's rules.
    """
    if other is None:
        return _engines_agree(policy, examples, strategy)
    decide, decide_other = _decider(policy), _decider(other)
    source = strategy

    def prop(referral: Referral, at: dt.datetime) -> None:
        a, b = decide(referral, at), decide_other(referral, at)
        if _plain(a) != _plain(b):
            raise _ViolationError(
                f"the decisions differ: {_summary(a)} vs {_summary(b)}",
                referral,
                at,
                _hit_names(a) + _hit_names(b),
            )

    # referrals from the rules of each side: a rule only one side has is aimed at too
    _run("agreement", policy, max(1, examples // 2), source, prop)
    _run("agreement", other, max(1, examples - examples // 2), source, prop)
    return CheckResult("agreement", _name([policy, other]), "passed", examples)


def _summary(decision: Any) -> str:
    if hasattr(decision, "covered"):
        pa = decision.pa_needed.value if decision.pa_needed is not None else "-"
        return f"{decision.covered.value}/{pa}"
    due = decision.due_by.isoformat() if decision.due_by is not None else "-"
    return f"{decision.priority.value} due {due} score {decision.score:g}"


def _engines_agree(
    policy: Any, examples: int, strategy: st.SearchStrategy[Referral] | None
) -> CheckResult:
    name = _name(policy)
    if not durable_available():
        return CheckResult(
            "engines agree",
            name,
            "skipped",
            reason="durable-rules is not installed (pip install durable-rules; not on Python 3.13)",
        )
    from ..rules.durable import DurableEngine

    pairs = [
        (PythonEngine(r), DurableEngine(r)) for r in rulesets_of(policy) if r.kind is not Kind.EVENT
    ]

    def prop(referral: Referral, at: dt.datetime) -> None:
        facts = extract(referral, at)
        for python, durable in pairs:
            a = sorted(python.matches(facts, at.date()))
            b = sorted(durable.matches(facts, at.date()))
            if a != b:
                rules = python.ruleset.rules
                names = [f"{python.ruleset.name}/{rules[i].id}" for i in sorted(set(a) ^ set(b))]
                raise _ViolationError(
                    f"python matched {[rules[i].id for i in a]}, "
                    f"durable {[rules[i].id for i in b]}",
                    referral,
                    at,
                    names,
                )

    return _run("engines agree", policy, examples, strategy, prop)


def check_effective_dates(
    subject: Any, *, examples: int = 200, strategy: st.SearchStrategy[Referral] | None = None
) -> CheckResult:
    """At every ``valid_from``/``valid_to`` boundary, only the rules whose boundary it is
    change between the day before and the day itself; ``valid_to`` is inclusive.
    ``subject`` is a ruleset or a policy."""
    rulesets = [r for r in rulesets_of(subject) if r.kind is not Kind.EVENT]
    boundaries: dict[dt.date, set[tuple[str, str]]] = {}
    for ruleset in rulesets:
        for rule in ruleset.rules:
            if rule.valid_from is not None:
                boundaries.setdefault(rule.valid_from, set()).add((ruleset.name, rule.id))
            if rule.valid_to is not None and rule.valid_to < dt.date.max:
                day = rule.valid_to + dt.timedelta(days=1)
                boundaries.setdefault(day, set()).add((ruleset.name, rule.id))
    if not boundaries:
        return CheckResult(
            "effective dates", _name(subject), "skipped", reason="no rule has effective dates"
        )
    engines = [
        PythonEngine(attrs.evolve(r, hit_policy=HitPolicy.COLLECT, aggregation=None))
        for r in rulesets
    ]
    referrals = strategy if strategy is not None else referrals_for(subject)

    @_settings(examples)
    @given(referrals, st.sampled_from(sorted(boundaries)))
    def run(referral: Referral, day: dt.date) -> None:
        at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
        facts = extract(referral, at)
        previous = day - dt.timedelta(days=1)
        for engine in engines:
            r = engine.ruleset
            before = {(r.name, r.rules[i].id) for i in engine.matches(facts, previous)}
            after = {(r.name, r.rules[i].id) for i in engine.matches(facts, day)}
            changed = (before ^ after) - boundaries[day]
            if changed:
                raise _ViolationError(
                    f"rules changed state on {day.isoformat()}, off their boundaries",
                    referral,
                    at,
                    [f"{a}/{b}" for a, b in sorted(changed)],
                )

    try:
        run()
    except _ViolationError as found:
        example = Counterexample(
            "effective dates",
            found.message,
            found.referral,
            found.at,
            found.rules,
            _facts_of(subject, found.referral, found.at),
        )
        raise CheckFailedError("effective dates", found.message, example) from None
    return CheckResult("effective dates", _name(subject), "passed", examples)


# --------------------------------------------------------------------------- all of them

CHECKS: Final = (
    "totality",
    "determinism",
    "rules fire",
    "no conflicts",
    "effective dates",
    "monotonic urgency",
    "engines agree",
)


def run_checks(
    policies: Iterable[Any], *, examples: int = 200, fallback: bool = True
) -> list[CheckResult]:
    """Every check that applies to each policy, failures reported rather than raised:
    totality, determinism, rules fire, no conflicts, effective dates, engines agree, and for
    an urgency policy monotonic urgency (what ``referralkit rules test`` runs)."""
    results: list[CheckResult] = []
    for policy in policies:
        runs: list[tuple[str, Callable[[], CheckResult]]] = [
            (
                "totality",
                functools.partial(check_totality, policy, examples=examples, fallback=fallback),
            ),
            ("determinism", functools.partial(check_determinism, policy, examples=examples)),
            (
                "rules fire",
                functools.partial(check_rules_fire, policy, examples=max(examples, 1000)),
            ),
            ("no conflicts", functools.partial(check_no_conflicts, policy, examples=examples)),
            (
                "effective dates",
                functools.partial(check_effective_dates, policy, examples=examples),
            ),
        ]
        if hasattr(policy, "assess"):
            runs.append(
                (
                    "monotonic urgency",
                    functools.partial(check_monotonic_urgency, policy, examples=examples),
                )
            )
        runs.append(
            ("engines agree", functools.partial(check_agreement, policy, examples=examples))
        )
        for name, call in runs:
            try:
                results.append(call())
            except CheckFailedError as failed:
                results.append(
                    CheckResult(
                        name,
                        _name(policy),
                        "failed",
                        examples,
                        failed.reason,
                        failed.counterexample,
                    )
                )
    return results
