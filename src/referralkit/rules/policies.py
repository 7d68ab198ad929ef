"""Coverage and urgency policies built from rulesets, for :class:`~referralkit.desk.ReferralDesk`.

A policy holds one or more rulesets of its kind, for example one per payer and a fallback. It
asks them in order; the first ruleset with a matching rule decides. Every decision carries its
hits (ruleset, version, rule id) and, with ``explain=True``, a trace of every rule of the
rulesets it consulted.

>>> from referralkit.rules.policies import CoveragePolicy
>>> policy = CoveragePolicy.shipped()
>>> [r.name for r in policy.rulesets][:2]
['example-eligibility', 'example-medicare']
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from ..errors import RulesError
from ..model import (
    Code,
    CoverageDecision,
    Covered,
    DocNeeded,
    InfoNeeded,
    NetworkStatus,
    PaNeeded,
    Priority,
    Referral,
    RuleHit,
    RuleTrace,
    UrgencyAssessment,
)
from ..policy import add_business_days, default_due
from .engine import Evaluation, PythonEngine
from .facts import extract, utc
from .loader import load
from .model import HitPolicy, Kind, Ruleset

__all__ = [
    "DATA",
    "CoveragePolicy",
    "UrgencyPolicy",
    "coverage_decision",
    "default_policies",
    "shipped_paths",
    "urgency_assessment",
]

DATA: Final = Path(__file__).with_name("data")
"""The folder of the shipped example rulesets."""

EngineName = Literal["python", "durable"]


def shipped_paths(kind: Kind | None = None) -> list[Path]:
    """Paths of the shipped example rulesets (of ``kind``), in their consultation order."""
    paths = sorted(DATA.glob("*.toml"))
    if kind is None:
        return paths
    return [p for p in paths if p.name.startswith(f"{kind.value}-")]


def _engine(ruleset: Ruleset, name: EngineName) -> Any:
    if name == "python":
        return PythonEngine(ruleset)
    if name == "durable":
        from .durable import DurableEngine

        return DurableEngine(ruleset)
    raise RulesError(f"unknown engine {name!r} (python, durable)")


class _Policy:
    kind: Kind

    def __init__(self, rulesets: Iterable[Ruleset], *, engine: EngineName = "python") -> None:
        self.rulesets: tuple[Ruleset, ...] = tuple(rulesets)
        if not self.rulesets:
            raise RulesError(f"a {self.kind.value} policy needs at least one ruleset")
        for ruleset in self.rulesets:
            if ruleset.kind is not self.kind:
                raise RulesError(
                    f"ruleset {ruleset.name!r} is a {ruleset.kind.value} ruleset, "
                    f"not {self.kind.value}"
                )
        self.engine_name = engine
        self._engines = [_engine(r, engine) for r in self.rulesets]
        # When every ruleset is first-hit, "the first ruleset with a match decides" is the
        # first hit over all their rules in order: one engine, one index lookup per decision
        # instead of one per ruleset consulted.
        self._combined: PythonEngine | None = None
        self._origin: list[tuple[int, int]] = []
        if engine == "python" and all(r.hit_policy is HitPolicy.FIRST for r in self.rulesets):
            rules = tuple(rule for r in self.rulesets for rule in r.rules)
            self._origin = [
                (k, i) for k, r in enumerate(self.rulesets) for i in range(len(r.rules))
            ]
            combined = Ruleset(name="combined", kind=self.kind, rules=rules)
            # every part was checked by its own engine above; together they may exceed the
            # per-ruleset rule count, which only durable's priorities need
            self._combined = PythonEngine(combined, checked=True)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], **kwargs: Any) -> Any:
        """A policy from TOML files, consulted in the order given."""
        return cls([load(p) for p in paths], **kwargs)

    @classmethod
    def shipped(cls, **kwargs: Any) -> Any:
        """A policy from the shipped example rulesets (examples, not payer or clinical
        guidance)."""
        return cls.from_files(shipped_paths(cls.kind), **kwargs)

    def __repr__(self) -> str:
        names = ", ".join(f"{r.name}@{r.version}" for r in self.rulesets)
        return f"{type(self).__name__}([{names}], engine={self.engine_name!r})"

    @property
    def name(self) -> str:
        """The names of the rulesets, in consultation order."""
        return "+".join(r.name for r in self.rulesets)

    @property
    def version(self) -> str:
        """A hash of the rulesets' versions, in order: equal for policies that decide alike
        by construction."""
        joined = ",".join(r.version for r in self.rulesets)
        return hashlib.sha256(joined.encode()).hexdigest()[:12]

    def evaluate(
        self, facts: Mapping[str, Any], day: dt.date, *, explain: bool = False
    ) -> tuple[Evaluation | None, tuple[RuleTrace, ...]]:
        """The first ruleset's evaluation that matched (or ``None``), and the traces of every
        ruleset consulted when ``explain`` is set."""
        if self._combined is not None and not explain:
            index = self._combined.first(facts, day)
            if index is None:
                return None, ()
            which, rule = self._origin[index]
            return self._engines[which].single(rule), ()
        if not explain:
            for engine in self._engines:
                evaluation = engine.evaluate(facts, day)
                if evaluation.matched:
                    return evaluation, ()
            return None, ()
        traces: list[RuleTrace] = []
        for engine in self._engines:
            evaluation = engine.evaluate(facts, day, explain=explain)
            traces.extend(evaluation.trace)
            if evaluation.matched:
                return evaluation, tuple(traces)
        return None, tuple(traces)


_HITS: dict[tuple[str, str, str], RuleHit] = {}


def _hits(evaluation: Evaluation | None) -> tuple[RuleHit, ...]:
    if evaluation is None:
        return ()
    r = evaluation.ruleset
    found = []
    for rule_id in evaluation.matched:
        key = (r.name, r.version, rule_id)
        hit = _HITS.get(key)
        if hit is None:
            hit = _HITS[key] = RuleHit(*key)
        found.append(hit)
    return tuple(found)


def coverage_decision(
    evaluation: Evaluation | None,
    facts: Mapping[str, Any],
    trace: tuple[RuleTrace, ...] = (),
) -> CoverageDecision:
    """The :class:`~referralkit.model.CoverageDecision` for an evaluation's outputs.

    No matching rule gives ``indeterminate``. CRD's consistency rules hold by construction:
    ``pa_needed`` defaults to ``indeterminate`` unless not covered, and ``info_needed`` is kept
    only beside a ``conditional`` answer.
    """
    out = evaluation.outputs if evaluation is not None else {}
    covered = Covered(out.get("covered", Covered.INDETERMINATE.value))
    pa_raw = out.get("pa_needed")
    if pa_raw is None and covered is not Covered.NOT_COVERED:
        pa_raw = PaNeeded.INDETERMINATE.value
    pa = PaNeeded(pa_raw) if pa_raw is not None else None
    doc = DocNeeded(out["doc_needed"]) if "doc_needed" in out else None
    conditional = Covered.CONDITIONAL in (covered, pa) or doc is DocNeeded.CONDITIONAL
    info = tuple(InfoNeeded(i) for i in out.get("info_needed", ())) if conditional else ()
    network = NetworkStatus(out.get("network_status", facts.get("network_status", "unknown")))
    explanation = out.get("explanation") or (
        "No rule decided this referral; review it by hand."
        if evaluation is None
        else f"Decided by {', '.join(evaluation.matched)}."
    )
    return CoverageDecision(
        covered=covered,
        pa_needed=pa,
        doc_needed=doc,
        info_needed=info,
        reason=out.get("reason", "no-rule-matched" if evaluation is None else None),
        network_status=network,
        explanation=explanation,
        alternatives=tuple(out.get("alternatives", ())),
        alternative_services=tuple(
            Code.from_reference(text) for text in out.get("alternative_services", ())
        ),
        hits=_hits(evaluation),
        trace=trace,
    )


class CoveragePolicy(_Policy):
    """Coverage decisions from coverage rulesets; a
    :class:`~referralkit.policy.CoverageDecider`."""

    kind = Kind.COVERAGE

    def __init__(self, rulesets: Iterable[Ruleset], *, engine: EngineName = "python") -> None:
        super().__init__(rulesets, engine=engine)
        # a decision depends only on which rules matched and the network status: the same
        # immutable value serves every referral that got it
        self._decisions: dict[tuple[str, str, tuple[str, ...], Any], CoverageDecision] = {}

    def decide(
        self, referral: Referral, at: dt.datetime, *, explain: bool = False
    ) -> CoverageDecision:
        """Decide coverage for ``referral`` as of ``at``: any timezone-aware datetime, read as
        its UTC instant (the rules' date is the UTC date); a naive one raises
        :class:`~referralkit.errors.ValidationError`."""
        at = utc(at)
        facts = extract(referral, at)
        evaluation, trace = self.evaluate(facts, at.date(), explain=explain)
        if explain:
            return coverage_decision(evaluation, facts, trace)
        key = (
            ("", "", (), facts.get("network_status"))
            if evaluation is None
            else (
                evaluation.ruleset.name,
                evaluation.ruleset.version,
                evaluation.matched,
                facts.get("network_status"),
            )
        )
        decision = self._decisions.get(key)
        if decision is None:
            if len(self._decisions) > 4096:
                self._decisions.clear()
            decision = self._decisions[key] = coverage_decision(evaluation, facts)
        return decision


_PRIORITIES: Final = {p.value: p for p in Priority}
_END_OF_TIME: Final = dt.datetime.max.replace(tzinfo=dt.UTC)
_REASONS: dict[tuple[str, str, tuple[str, ...]], tuple[str, ...]] = {}


def _reasons(evaluation: Evaluation | None) -> tuple[str, ...]:
    """The ``reason`` outputs of the rules used, in their order (worked out once per set)."""
    if evaluation is None:
        return ()
    ruleset = evaluation.ruleset
    key = (ruleset.name, ruleset.version, evaluation.matched)
    found = _REASONS.get(key)
    if found is None:
        by_id = {rule.id: rule for rule in ruleset.rules}
        found = tuple(r for r in (by_id[i].then.get("reason") for i in evaluation.matched) if r)
        if len(_REASONS) > 4096:
            _REASONS.clear()
        _REASONS[key] = found
    return found


@attrs.frozen
class _Plan:
    """What an assessment takes from an evaluation and the requested priority: everything but
    the due date, which depends on the referral's receipt (worked out once per pair)."""

    evaluation: Evaluation | None
    priority: Priority
    score: float
    reasons: tuple[str, ...]
    hits: tuple[RuleHit, ...]
    windows: tuple[dt.timedelta, ...]
    business_days: int | None

    @classmethod
    def of(cls, evaluation: Evaluation | None, requested: Priority) -> _Plan:
        out = evaluation.outputs if evaluation is not None else {}
        ruled = _PRIORITIES[out["priority"]] if "priority" in out else requested
        priority = ruled if ruled.rank > requested.rank else requested
        reasons = list(_reasons(evaluation))
        if ruled.rank < requested.rank:
            reasons.append(f"kept the requested priority {requested.value}")
        windows = []
        if "due_hours" in out:
            windows.append(dt.timedelta(hours=out["due_hours"]))
        if "due_days" in out:
            windows.append(dt.timedelta(days=out["due_days"]))
        return cls(
            evaluation,
            priority,
            float(out.get("score", priority.rank * 100)),
            tuple(reasons),
            _hits(evaluation),
            tuple(windows),
            out.get("due_business_days"),
        )

    def due(self, start: dt.datetime, referral: Referral) -> dt.datetime:
        """The earliest of the rules' windows from ``start``, or the priority's default."""
        candidates: list[dt.datetime] = []
        try:
            for window in self.windows:
                candidates.append(start + window)
            if self.business_days is not None:
                candidates.append(add_business_days(start, self.business_days))
            if not candidates:
                decision = referral.coverage_decision
                needs_authorization = decision is not None and decision.needs_authorization
                candidates.append(default_due(self.priority, start, needs_authorization))
        except OverflowError:
            # a window (at most 10 years: limits.MAX_DUE) past the last representable instant,
            # for a referral received in the year 9990s: due at the end of time, not an error
            candidates.append(_END_OF_TIME)
        return min(candidates)


def urgency_assessment(
    evaluation: Evaluation | None,
    referral: Referral,
    at: dt.datetime,
    trace: tuple[RuleTrace, ...] = (),
) -> UrgencyAssessment:
    """The :class:`~referralkit.model.UrgencyAssessment` for an evaluation's outputs.

    The priority is never lower than the referrer asked for. The due date is the earliest of
    the windows the rules set (``due_hours``, ``due_days``, ``due_business_days``) counted from
    receipt, or the default window of the priority.
    """
    plan = _Plan.of(evaluation, referral.priority)
    return UrgencyAssessment(
        priority=plan.priority,
        score=plan.score,
        due_by=plan.due(referral.received_at or at, referral),
        reasons=plan.reasons,
        hits=plan.hits,
        trace=trace,
    )


_new = object.__new__
_set = object.__setattr__


class UrgencyPolicy(_Policy):
    """Urgency assessments from urgency rulesets; an
    :class:`~referralkit.policy.UrgencyAssessor`."""

    kind = Kind.URGENCY

    def __init__(self, rulesets: Iterable[Ruleset], *, engine: EngineName = "python") -> None:
        super().__init__(rulesets, engine=engine)
        # plans by (id of the evaluation, requested priority); an entry keeps its evaluation
        # alive, and is used only when it holds that very evaluation
        self._plans: dict[tuple[int, Priority], _Plan] = {}

    def assess(
        self, referral: Referral, at: dt.datetime, *, explain: bool = False
    ) -> UrgencyAssessment:
        """Assess the urgency of ``referral`` as of ``at`` (any timezone-aware datetime, read as
        its UTC instant; a naive one raises :class:`~referralkit.errors.ValidationError`)."""
        at = utc(at)
        evaluation, trace = self.evaluate(extract(referral, at), at.date(), explain=explain)
        if explain:
            return urgency_assessment(evaluation, referral, at, trace)
        requested = referral.priority
        key = (id(evaluation), requested)
        plan = self._plans.get(key)
        if plan is None or plan.evaluation is not evaluation:
            plan = _Plan.of(evaluation, requested)
            # validated once, as a whole, here: every assessment of this plan reuses its values
            UrgencyAssessment(plan.priority, plan.score, None, plan.reasons, plan.hits)
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = plan
        # built without the validators, which cost more than the rest of an assessment: the
        # plan's values were validated above, and the due date is a UTC datetime computed from
        # a validated one (received_at, or the UTC ``at``)
        assessment = _new(UrgencyAssessment)
        _set(assessment, "priority", plan.priority)
        _set(assessment, "score", plan.score)
        _set(assessment, "due_by", plan.due(referral.received_at or at, referral))
        _set(assessment, "reasons", plan.reasons)
        _set(assessment, "hits", plan.hits)
        _set(assessment, "trace", ())
        return assessment


@functools.cache
def default_policies() -> tuple[CoveragePolicy, UrgencyPolicy]:
    """The coverage and urgency policies of the shipped example rule files on the python engine:
    what a :class:`~referralkit.desk.ReferralDesk` decides with when given none (examples, not
    payer or clinical guidance).

    Built once per process and shared: a policy is immutable, and its caches only remember
    decisions it already made.

    >>> coverage, urgency = default_policies()
    >>> urgency.rulesets[0].name
    'example-urgency'

    .. versionadded:: 0.2
    """
    return CoveragePolicy.shipped(), UrgencyPolicy.shipped()
