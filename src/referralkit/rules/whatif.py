"""What-if: run two versions of a ruleset, or two whole policies, over the same referrals and
say what changed.

Each side is a ruleset, a :class:`~referralkit.rules.policies.CoveragePolicy`, an
:class:`~referralkit.rules.policies.UrgencyPolicy`, or a ``(coverage, urgency)`` pair; the
population is any iterable of referrals or a store (its ``query()``). An urgency outcome
reads as its priority and its due window (``urgent, due 14d``), so halving a window shows as a
change. The result counts the from→to transitions (with sample ids per cell), keeps one
:class:`Difference` record per referral whose decision changed (:meth:`WhatIf.records`,
:meth:`WhatIf.to_frame` with pandas) and a from→to :meth:`WhatIf.matrix`.

>>> import datetime as dt
>>> from referralkit.rules import loads
>>> old = loads('''
... [ruleset]
... name = "demo"
... kind = "urgency"
... [[rules]]
... id = "all-routine"
... then = { priority = "routine" }
... ''')
>>> new = loads('''
... [ruleset]
... name = "demo"
... kind = "urgency"
... [[rules]]
... id = "cancer-urgent"
... when = { diagnoses = { any_prefix = ["C"] } }
... then = { priority = "urgent" }
... [[rules]]
... id = "all-routine"
... then = { priority = "routine" }
... ''')
>>> from referralkit.testing import sample_request
>>> import referralkit as rk
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=rk.FakeClock())
>>> actor = rk.Actor("analyst", {rk.Role.COORDINATOR})
>>> referral = desk.intake(actor, sample_request())
>>> print(what_if(old, new, [referral]).table())
| old → new | referrals | sample ids |
|---|---:|---|
| routine, due 21d → routine, due 21d | 1 | ... |
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..errors import RulesError
from ..model import CoverageDecision, Referral, UrgencyAssessment
from .engine import Evaluation
from .facts import extract, utc
from .model import Kind, Ruleset
from .policies import CoveragePolicy, UrgencyPolicy, coverage_decision, urgency_assessment

__all__ = ["Change", "Difference", "WhatIf", "outcome", "what_if"]


@attrs.frozen
class Change:
    """How many referrals went from outcome ``old`` to ``new``, with some of their ids."""

    old: str
    new: str
    count: int
    samples: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.old != self.new


@attrs.frozen
class Difference:
    """One referral whose decision differs between the two sides (coverage fields are
    ``None`` when only urgency was compared, and the other way round)."""

    referral_id: str
    old: str
    new: str
    old_covered: str | None = None
    new_covered: str | None = None
    old_pa_needed: str | None = None
    new_pa_needed: str | None = None
    old_priority: str | None = None
    new_priority: str | None = None
    old_due_by: dt.datetime | None = None
    new_due_by: dt.datetime | None = None
    old_rules: tuple[str, ...] = ()
    new_rules: tuple[str, ...] = ()

    @property
    def due_shift_hours(self) -> float | None:
        """How much later (positive) or earlier the new due date is, in hours."""
        if self.old_due_by is None or self.new_due_by is None:
            return None
        return (self.new_due_by - self.old_due_by).total_seconds() / 3600


@attrs.frozen
class WhatIf:
    """The comparison of two rulesets or policies over the same referrals."""

    old: Any
    new: Any
    total: int
    changes: tuple[Change, ...]
    differences: tuple[Difference, ...] = ()

    @property
    def changed(self) -> int:
        """How many referrals got a different outcome."""
        return sum(c.count for c in self.changes if c.changed)

    def table(self, *, only_changed: bool = False) -> str:
        """A Markdown table of the outcome transitions, most frequent first (with
        ``only_changed``, the rows whose outcome changed)."""
        rows = ["| old → new | referrals | sample ids |", "|---|---:|---|"]
        for c in self.changes:
            if only_changed and not c.changed:
                continue
            rows.append(f"| {c.old} → {c.new} | {c.count} | {', '.join(c.samples)} |")
        return "\n".join(rows)

    def matrix(self) -> dict[str, dict[str, int]]:
        """The from→to matrix: ``matrix()[old][new]`` referrals."""
        found: dict[str, dict[str, int]] = {}
        for c in self.changes:
            found.setdefault(c.old, {})[c.new] = c.count
        return found

    def records(self) -> list[dict[str, Any]]:
        """One dictionary per referral whose decision changed."""
        return [
            {**attrs.asdict(d, recurse=False), "due_shift_hours": d.due_shift_hours}
            for d in self.differences
        ]

    def to_frame(self) -> Any:
        """:meth:`records` as a pandas DataFrame (needs pandas: the analytics extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "WhatIf.to_frame needs pandas, from referralkit's 'analytics' extra: "
                "pip install '.[analytics]' in a checkout"
            ) from None
        columns = [f.name for f in attrs.fields(Difference)] + ["due_shift_hours"]
        return pd.DataFrame(self.records(), columns=columns)

    def _repr_html_(self) -> str:
        from ..display import whatif_html

        return whatif_html(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from ..display import whatif_text

        printer.text(whatif_text(self))


def _window(assessment: UrgencyAssessment, start: dt.datetime) -> str:
    if assessment.due_by is None:
        return assessment.priority.value
    seconds = (assessment.due_by - start).total_seconds()
    # windows under a week read in hours (the 48 and 96 hours of timely-access rules)
    if seconds % 86400 == 0 and seconds >= 7 * 86400:
        return f"{assessment.priority.value}, due {int(seconds // 86400)}d"
    return f"{assessment.priority.value}, due {seconds / 3600:g}h"


def outcome(
    ruleset: Ruleset, evaluation: Evaluation | None, referral: Referral, at: dt.datetime
) -> str:
    """A short label for a decision: ``covered/no-auth``, or ``urgent, due 48h`` (the
    priority and the window from receipt to the due date)."""
    at = utc(at)
    if ruleset.kind is Kind.COVERAGE:
        return _coverage_label(coverage_decision(evaluation, extract(referral, at)))
    if ruleset.kind is Kind.URGENCY:
        assessment = urgency_assessment(evaluation, referral, at)
        return _window(assessment, referral.received_at or at)
    raise RulesError("what-if compares coverage or urgency rulesets")


def _coverage_label(decision: CoverageDecision) -> str:
    pa = decision.pa_needed.value if decision.pa_needed is not None else "-"
    return f"{decision.covered.value}/{pa}"


@attrs.frozen
class _Both:
    """A coverage and an urgency policy compared together."""

    coverage: CoveragePolicy
    urgency: UrgencyPolicy

    @property
    def name(self) -> str:
        return f"{self.coverage.name} & {self.urgency.name}"

    @property
    def version(self) -> str:
        return f"{self.coverage.version}+{self.urgency.version}"


_Side = CoveragePolicy | UrgencyPolicy | _Both


def _side(subject: Any) -> _Side:
    if isinstance(subject, Ruleset):
        if subject.kind is Kind.COVERAGE:
            return CoveragePolicy([subject])
        if subject.kind is Kind.URGENCY:
            return UrgencyPolicy([subject])
        raise RulesError("what-if compares coverage or urgency rulesets")
    if isinstance(subject, CoveragePolicy | UrgencyPolicy):
        return subject
    if isinstance(subject, tuple | list) and len(subject) == 2:
        coverage, urgency = (_side(part) for part in subject)
        if isinstance(coverage, CoveragePolicy) and isinstance(urgency, UrgencyPolicy):
            return _Both(coverage, urgency)
    raise RulesError(
        "what-if compares rulesets, coverage policies, urgency policies or "
        "(coverage, urgency) pairs; got "
        f"{type(subject).__name__}"
    )


def _kind(side: _Side) -> str:
    return "both" if isinstance(side, _Both) else side.kind.value


_Outcome = tuple[str, CoverageDecision | None, UrgencyAssessment | None]
_Pair = Callable[[Referral, dt.datetime], tuple[_Outcome, _Outcome]]


def _decider(side: CoveragePolicy | UrgencyPolicy) -> Callable[[Referral, dt.datetime], _Outcome]:
    if isinstance(side, CoveragePolicy):

        def cover(referral: Referral, at: dt.datetime) -> _Outcome:
            decision = side.decide(referral, at)
            return _coverage_label(decision), decision, None

        return cover

    def assess(referral: Referral, at: dt.datetime) -> _Outcome:
        assessment = side.assess(referral, at)
        return _window(assessment, referral.received_at or at), None, assessment

    return assess


def _needs_authorization(decision: CoverageDecision | None) -> bool:
    return decision is not None and decision.needs_authorization


def _both(left: _Both, right: _Both) -> _Pair:
    """Both sides' coverage decisions, then both urgency assessments, each urgency policy
    seeing its own side's coverage decision (the default window of a priority is shorter
    when authorization is needed).

    An :class:`UrgencyPolicy` reads nothing of the coverage decision but whether it needs
    authorization: when that is what the stored decision says, the referral is assessed as
    it is; otherwise as a copy holding the new decision, made once per referral and shared by
    the two sides when they agree on it. So the facts are extracted once or twice per
    referral, not four times, and a copy is made only where the answer can differ. An urgency
    policy of another class (which may read more of the decision) always gets the copy.
    """
    labels: dict[int, tuple[CoverageDecision, str]] = {}

    def label(decision: CoverageDecision) -> str:
        # the policies return one immutable decision per outcome: label each once
        found = labels.get(id(decision))
        if found is None or found[0] is not decision:
            if len(labels) > 4096:
                labels.clear()
            found = labels[id(decision)] = (decision, _coverage_label(decision))
        return found[1]

    windows: dict[tuple[Any, float], str] = {}

    def window(assessment: UrgencyAssessment, start: dt.datetime) -> str:
        # few distinct (priority, window) pairs: format each once
        if assessment.due_by is None:
            return assessment.priority.value
        key = (assessment.priority, (assessment.due_by - start).total_seconds())
        found = windows.get(key)
        if found is None:
            if len(windows) > 4096:
                windows.clear()
            found = windows[key] = _window(assessment, start)
        return found

    # whether each side's urgency policy reads only the authorization need (decided once)
    plain = tuple(type(side.urgency).assess is UrgencyPolicy.assess for side in (left, right))
    sides = tuple(zip((left, right), plain, strict=True))

    def pair(referral: Referral, at: dt.datetime) -> tuple[_Outcome, _Outcome]:
        stored = _needs_authorization(referral.coverage_decision)
        copies: dict[bool, Referral] = {}
        start = referral.received_at or at
        found = []
        for side, reads_need_only in sides:
            decision = side.coverage.decide(referral, at)
            subject = referral
            if not reads_need_only:
                subject = attrs.evolve(referral, coverage_decision=decision)
            else:
                needs = decision.needs_authorization
                if needs is not stored:
                    subject = copies.get(needs) or copies.setdefault(
                        needs, attrs.evolve(referral, coverage_decision=decision)
                    )
            assessment = side.urgency.assess(subject, at)
            text = f"{label(decision)} · {window(assessment, start)}"
            found.append((text, decision, assessment))
        return found[0], found[1]

    return pair


def _pair(left: _Side, right: _Side) -> _Pair:
    if isinstance(left, _Both):
        assert isinstance(right, _Both)  # what_if compares two of the same kind
        return _both(left, right)
    assert not isinstance(right, _Both)
    a, b = _decider(left), _decider(right)
    return lambda referral, at: (a(referral, at), b(referral, at))


def _rules(decision: Any) -> tuple[str, ...]:
    if decision is None:
        return ()
    return tuple(f"{h.ruleset}/{h.rule_id}" for h in decision.hits)


def what_if(
    old: Any,
    new: Any,
    referrals: Iterable[Referral] | Any,
    *,
    at: dt.datetime | None = None,
    samples: int = 3,
) -> WhatIf:
    """Decide every referral with ``old`` and with ``new`` (as of ``at``, default each
    referral's last update; any timezone-aware datetime, read as its UTC instant) and count
    the outcome transitions, keeping a :class:`Difference` for each referral that changed.

    ``old`` and ``new`` are rulesets, coverage policies, urgency policies or
    ``(coverage, urgency)`` pairs, both of the same kind; ``referrals`` an iterable of
    referrals or a store.
    """
    left, right = _side(old), _side(new)
    if _kind(left) != _kind(right):
        raise RulesError(f"what-if compares two of the same kind: {_kind(left)} and {_kind(right)}")
    if at is not None:
        at = utc(at)
    population = referrals.query() if hasattr(referrals, "query") else referrals
    decide = _pair(left, right)
    counts: dict[tuple[str, str], list[str]] = {}
    differences: list[Difference] = []
    total = 0
    for referral in population:
        when = at or referral.updated_at
        (a, a_cov, a_urg), (b, b_cov, b_urg) = decide(referral, when)
        counts.setdefault((a, b), []).append(referral.id)
        total += 1
        if a != b:
            differences.append(
                Difference(
                    referral.id,
                    a,
                    b,
                    a_cov.covered.value if a_cov else None,
                    b_cov.covered.value if b_cov else None,
                    _pa(a_cov),
                    _pa(b_cov),
                    a_urg.priority.value if a_urg else None,
                    b_urg.priority.value if b_urg else None,
                    a_urg.due_by if a_urg else None,
                    b_urg.due_by if b_urg else None,
                    _rules(a_cov) + _rules(a_urg),
                    _rules(b_cov) + _rules(b_urg),
                )
            )
    changes = sorted(
        (Change(o, n, len(ids), tuple(ids[:samples])) for (o, n), ids in counts.items()),
        key=lambda c: (not c.changed, -c.count, c.old, c.new),
    )
    return WhatIf(
        old if isinstance(old, Ruleset) else left,
        new if isinstance(new, Ruleset) else right,
        total,
        tuple(changes),
        tuple(differences),
    )


def _pa(decision: CoverageDecision | None) -> str | None:
    if decision is None or decision.pa_needed is None:
        return None
    return decision.pa_needed.value
