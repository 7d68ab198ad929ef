"""What-if: run two versions of a ruleset over the same referrals and say what changed.

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
| routine → routine | 1 | ... |
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import attrs

from ..errors import RulesError
from ..model import Referral
from .engine import Evaluation, PythonEngine
from .facts import extract, utc
from .model import Kind, Ruleset
from .policies import coverage_decision, urgency_assessment

__all__ = ["Change", "WhatIf", "outcome", "what_if"]


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
class WhatIf:
    """The comparison of two ruleset versions over the same referrals."""

    old: Ruleset
    new: Ruleset
    total: int
    changes: tuple[Change, ...]

    @property
    def changed(self) -> int:
        """How many referrals got a different outcome."""
        return sum(c.count for c in self.changes if c.changed)

    def table(self) -> str:
        """A Markdown table of the outcome transitions, most frequent first."""
        rows = ["| old → new | referrals | sample ids |", "|---|---:|---|"]
        for c in self.changes:
            rows.append(f"| {c.old} → {c.new} | {c.count} | {', '.join(c.samples)} |")
        return "\n".join(rows)

    def _repr_html_(self) -> str:
        from ..display import whatif_html

        return whatif_html(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from ..display import whatif_text

        printer.text(whatif_text(self))


def outcome(
    ruleset: Ruleset, evaluation: Evaluation | None, referral: Referral, at: dt.datetime
) -> str:
    """A short label for a decision: ``covered/no-auth`` or ``urgent``."""
    at = utc(at)
    if ruleset.kind is Kind.COVERAGE:
        decision = coverage_decision(evaluation, extract(referral, at))
        pa = decision.pa_needed.value if decision.pa_needed is not None else "-"
        return f"{decision.covered.value}/{pa}"
    if ruleset.kind is Kind.URGENCY:
        return urgency_assessment(evaluation, referral, at).priority.value
    raise RulesError("what-if compares coverage or urgency rulesets")


def what_if(
    old: Ruleset,
    new: Ruleset,
    referrals: Iterable[Referral],
    *,
    at: dt.datetime | None = None,
    samples: int = 3,
) -> WhatIf:
    """Evaluate ``old`` and ``new`` on every referral (as of ``at``, default each referral's
    last update; any timezone-aware datetime, read as its UTC instant) and count the outcome
    transitions."""
    if old.kind is not new.kind:
        raise RulesError("what-if compares two rulesets of the same kind")
    if at is not None:
        at = utc(at)
    engines = (PythonEngine(old), PythonEngine(new))
    counts: dict[tuple[str, str], list[str]] = {}
    total = 0
    for referral in referrals:
        when = at or referral.updated_at
        facts = extract(referral, when)
        labels = []
        for ruleset, engine in zip((old, new), engines, strict=True):
            evaluation = engine.evaluate(facts, when.date())
            labels.append(
                outcome(ruleset, evaluation if evaluation.matched else None, referral, when)
            )
        ids = counts.setdefault((labels[0], labels[1]), [])
        ids.append(referral.id)
        total += 1
    changes = sorted(
        (Change(o, n, len(ids), tuple(ids[:samples])) for (o, n), ids in counts.items()),
        key=lambda c: (not c.changed, -c.count, c.old, c.new),
    )
    return WhatIf(old, new, total, tuple(changes))
