"""Rich display in notebooks: HTML (``_repr_html_``) and IPython text (``_repr_pretty_``).

:class:`~referralkit.model.Referral`, the decisions
(:class:`~referralkit.model.CoverageDecision`, :class:`~referralkit.model.UrgencyAssessment`)
with their rule hits and trace, :class:`~referralkit.rules.model.Ruleset` (a rule table),
:class:`~referralkit.analytics.Kpis` and :class:`~referralkit.rules.whatif.WhatIf` call the
functions here; the plain ``repr`` of each stays as it was (redacted). A referral shows as a
compact card: status, priority, dates, coverage, its clocks and its next action
(:func:`referralkit.worklist.assess`), never a field the model declares PHI: each field shown
is checked against the declaration (the attrs metadata key ``phi``) when the card is made.

A snapshot alone has no history, so its card reads the clocks from the snapshot as of its
last change; :func:`referral_card` takes the history and an instant for exact clocks:

>>> import datetime as dt
>>> import referralkit as rk
>>> from referralkit.testing import FakeClock, sample_request
>>> clock = FakeClock(dt.datetime(2026, 1, 5, 14, 0, tzinfo=dt.UTC))
>>> desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock)
>>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> r = desk.accept(actor, desk.send(actor, desk.intake(actor, sample_request()).id).id)
>>> _ = clock.advance(days=4)
>>> card = referral_card(r, desk.history(actor, r.id), as_of=clock.now())
>>> print(card.text)  # doctest: +NORMALIZE_WHITESPACE
Referral ... cardiology, accepted, urgent
  received 2026-01-05 14:00 UTC; due 2026-01-07 14:00 UTC
  coverage: Acme Health / Acme HMO Gold (HMO): conditional, no-auth, in-network
  clocks (as of 2026-01-09 14:00 UTC):
    schedule_by       breached  deadline 2026-01-07 14:00 UTC
    first_contact_by  breached  deadline 2026-01-08 05:00 UTC
  next action: schedule (schedule): accepted, not booked
  flags: OVERDUE, interpreter, breached, unassigned
>>> "<table" in card._repr_html_()
True

Rendering is plain string building with ``html.escape`` on every value: a handful of
small fixed layouts, not worth a template engine dependency in the core.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._validators import REDACTED, is_phi
from .model import CoverageDecision, Referral, ReferralEvent, RuleTrace, UrgencyAssessment
from .serialization import to_dict

if TYPE_CHECKING:
    from .analytics import Kpis
    from .rules.model import Ruleset
    from .rules.whatif import WhatIf

__all__ = [
    "Card",
    "decision_html",
    "decision_text",
    "kpis_html",
    "kpis_text",
    "referral_card",
    "referral_html",
    "referral_text",
    "ruleset_html",
    "ruleset_text",
    "whatif_html",
    "whatif_text",
]

_STYLE: Final = (
    "font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ccc;"
    "border-radius:6px;padding:8px 12px;max-width:760px"
)
_TABLE: Final = "border-collapse:collapse;margin:4px 0"
_CELL: Final = "border-bottom:1px solid #eee;padding:2px 8px;text-align:left"
_STATE_COLOURS: Final = {
    "breached": "#b00020",
    "running": "#1f6f43",
    "paused": "#8a6d00",
    "met": "#555",
}


@attrs.frozen
class Card:
    """A rendered card: ``html`` for notebooks (``_repr_html_``), ``text`` for terminals."""

    html: str
    text: str

    def _repr_html_(self) -> str:
        return self.html

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text)

    def __str__(self) -> str:
        return self.text


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _shown(obj: Any, name: str) -> Any:
    """``obj.name``, or the redaction mark when the model declares that field PHI."""
    field = attrs.fields_dict(type(obj))[name]
    return REDACTED if is_phi(field) else getattr(obj, name)


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f'<th style="{_CELL}">{_e(h)}</th>' for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{cell}</td>' for cell in row) + "</tr>"
        for row in rows
    )
    return f'<table style="{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _box(title: str, body: str) -> str:
    return f'<div style="{_STYLE}"><div style="font-weight:600">{title}</div>{body}</div>'


# --------------------------------------------------------------------------- referrals


def _snapshot_history(referral: Referral) -> list[ReferralEvent]:
    """A one-event history holding the snapshot, as imports record one."""
    return [
        ReferralEvent(
            referral.id,
            referral.version,
            0,
            referral.created_at,
            "display",
            "created",
            {"referral": to_dict(referral)},
        )
    ]


def _coverage_line(r: Referral) -> str:
    parts = []
    if r.coverage is not None:
        c = r.coverage
        parts.append(f"{_shown(c, 'payer')} / {_shown(c, 'plan')} ({c.plan_type.value})")
    else:
        parts.append("no coverage recorded")
    d = r.coverage_decision
    if d is not None:
        pa = d.pa_needed.value if d.pa_needed is not None else "-"
        parts.append(f"{d.covered.value}, {pa}, {d.network_status.value}")
    return ": ".join(parts)


def referral_card(
    referral: Referral,
    events: Sequence[ReferralEvent] | None = None,
    *,
    as_of: dt.datetime | None = None,
) -> Card:
    """The card of ``referral``: with its history (``events``) the clocks, delays and next
    action are read as of ``as_of`` (default: the referral's last change); without, from the
    snapshot alone (clocks that need the history, such as first contact, are missing)."""
    from .worklist import assess

    history = list(events) if events is not None else _snapshot_history(referral)
    when = as_of if as_of is not None else referral.updated_at
    item = assess(referral, history, when)
    r = referral
    target = r.target
    specialist = "-" if target is None else f"{_shown(target, 'name')} ({target.id})"
    priority = r.effective_priority.value
    title = f"Referral {r.id} · {r.specialty}, {r.status.value}, {priority}"
    dates = f"received {_when(r.received_at)}; due {_when(r.due_by)}"
    if r.closed_at is not None:
        dates += f"; closed {_when(r.closed_at)}"
    clocks = [(c.name.value, c.state.value, _when(c.deadline), c.key) for c in item.clocks]
    action = item.next_action
    action_text = (
        "none" if action is None else f"{action.kind.value} ({action.operation}): {action.reason}"
    )
    flags = ", ".join(f.value for f in item.flags) or "-"

    lines = [
        title,
        f"  {dates}",
        f"  coverage: {_coverage_line(r)}",
        f"  clocks (as of {_when(item.as_of)}):",
        *(f"    {n:<16}  {s:<8}  deadline {d}" for n, s, d, _ in clocks),
        f"  next action: {action_text}",
        f"  flags: {flags}",
    ]
    rows = [
        (
            _e(n) + (f" <small>{_e(k)}</small>" if k else ""),
            f'<span style="color:{_STATE_COLOURS.get(s, "#000")}">{_e(s)}</span>',
            _e(d),
        )
        for n, s, d, k in clocks
    ]
    body = (
        f"<div>{_e(dates)}</div>"
        f"<div>specialist: {_e(specialist)} · coverage: {_e(_coverage_line(r))}</div>"
        f"<div>clocks as of {_e(_when(item.as_of))}</div>"
        + (_table(("clock", "state", "deadline"), rows) if rows else "<div>no clock running</div>")
        + f"<div><b>next action</b>: {_e(action_text)}</div>"
        + f"<div>flags: {_e(flags)}</div>"
        + '<div style="color:#777">patient details are PHI: not shown</div>'
    )
    return Card(_box(_e(title), body), "\n".join(lines))


def referral_html(referral: Referral) -> str:
    """The HTML card of a referral snapshot (its ``_repr_html_``)."""
    return referral_card(referral).html


def referral_text(referral: Referral) -> str:
    """The text card of a referral snapshot (its ``_repr_pretty_``)."""
    return referral_card(referral).text


# --------------------------------------------------------------------------- decisions


def _field(obj: Any, name: str, reveal: bool) -> Any:
    return getattr(obj, name) if reveal else _shown(obj, name)


def _joined(obj: Any, name: str, reveal: bool) -> str:
    value = _field(obj, name, reveal)
    return value if isinstance(value, str) else "; ".join(value) or "-"


def _trace_rows(trace: Sequence[RuleTrace], reveal: bool) -> list[tuple[str, ...]]:
    return [
        (
            _e(_field(t, "rule_id", reveal)),
            "yes" if t.matched else "no",
            "yes" if t.active else "not in force",
            _e(_field(t, "failed", reveal) or ""),
        )
        for t in trace
    ]


def _decision_facts(
    decision: CoverageDecision | UrgencyAssessment, reveal: bool
) -> list[tuple[str, str]]:
    if isinstance(decision, CoverageDecision):
        return [
            ("covered", decision.covered.value),
            ("pa needed", decision.pa_needed.value if decision.pa_needed else "-"),
            ("doc needed", decision.doc_needed.value if decision.doc_needed else "-"),
            ("info needed", ", ".join(i.value for i in decision.info_needed) or "-"),
            ("reason", _field(decision, "reason", reveal) or "-"),
            ("network", decision.network_status.value),
            ("explanation", _field(decision, "explanation", reveal) or "-"),
            ("alternatives", _joined(decision, "alternatives", reveal)),
        ]
    return [
        ("priority", decision.priority.value),
        ("score", f"{decision.score:g}"),
        ("due by", _when(decision.due_by)),
        ("reasons", _joined(decision, "reasons", reveal)),
    ]


def decision_text(decision: CoverageDecision | UrgencyAssessment, *, reveal: bool = False) -> str:
    """A coverage decision or urgency assessment, its rule hits and its trace, as text.

    The texts of a decision and the ids of the rules it matched are PHI (a rule id such as
    ``suspected-cancer`` says what the patient has): they show as ``<redacted>`` unless
    ``reveal`` is set, for code that is allowed to see them (the desk's ``explain``, an
    identified notebook).
    """
    kind = "Coverage decision" if isinstance(decision, CoverageDecision) else "Urgency"
    lines = [kind]
    lines += [f"  {label}: {value}" for label, value in _decision_facts(decision, reveal)]
    for hit in decision.hits:
        lines.append(f"  hit: {hit.ruleset}@{hit.version} {_field(hit, 'rule_id', reveal)}")
    for t in decision.trace:
        why = "matched" if t.matched else (_field(t, "failed", reveal) or "not in force")
        lines.append(f"  trace: {_field(t, 'rule_id', reveal)}: {why}")
    return "\n".join(lines)


def decision_html(decision: CoverageDecision | UrgencyAssessment, *, reveal: bool = False) -> str:
    """The HTML of a decision: its outputs, the rules that made it, and the trace (PHI
    redacted unless ``reveal``, as in :func:`decision_text`)."""
    kind = "Coverage decision" if isinstance(decision, CoverageDecision) else "Urgency"
    facts = _table(("", ""), [(_e(k), _e(v)) for k, v in _decision_facts(decision, reveal)])
    hits = _table(
        ("ruleset", "version", "rule"),
        [(_e(h.ruleset), _e(h.version), _e(_field(h, "rule_id", reveal))) for h in decision.hits],
    )
    body = facts + "<div><b>rules that decided</b></div>" + hits
    if decision.trace:
        body += "<div><b>trace</b></div>" + _table(
            ("rule", "matched", "in force", "first false condition"),
            _trace_rows(decision.trace, reveal),
        )
    return _box(kind, body)


# --------------------------------------------------------------------------- rulesets


def _validity(rule: Any) -> str:
    if rule.valid_from is None and rule.valid_to is None:
        return "always"
    low = rule.valid_from.isoformat() if rule.valid_from else "…"
    high = rule.valid_to.isoformat() if rule.valid_to else "…"
    return f"{low} to {high}"


def _outputs(then: Any) -> str:
    return ", ".join(f"{k} = {v}" for k, v in dict(then).items())


def ruleset_text(ruleset: Ruleset) -> str:
    """A ruleset as text: its header and one line per rule."""
    lines = [
        f"Ruleset {ruleset.name}@{ruleset.version} ({ruleset.kind.value}, "
        f"{ruleset.hit_policy.value}, {len(ruleset.rules)} rules)"
    ]
    lines += [f"  {rule}" for rule in ruleset.rules]
    return "\n".join(lines)


def ruleset_html(ruleset: Ruleset) -> str:
    """A ruleset as a rule table: id, condition, outputs, validity, citation."""
    header = (
        f"Ruleset {_e(ruleset.name)} <small>@{_e(ruleset.version)} · {_e(ruleset.kind.value)} · "
        f"hit policy {_e(ruleset.hit_policy.value)}</small>"
    )
    rows = [
        (
            f"<code>{_e(r.id)}</code>",
            f"<code>{_e(r.when)}</code>",
            _e(_outputs(r.then)),
            _e(_validity(r)),
            _e(r.citation or r.description),
        )
        for r in ruleset.rules
    ]
    body = (f"<div>{_e(ruleset.description)}</div>" if ruleset.description else "") + _table(
        ("rule", "when", "then", "in force", "citation"), rows
    )
    return _box(header, body)


# --------------------------------------------------------------------------- KPIs, what-if


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:g} {unit}"


def _kpi_rows(k: Kpis) -> list[tuple[str, str]]:
    rows = [
        ("referrals", f"{k.total} ({k.open} open, {k.closed} closed)"),
        ("completion rate", _percent(k.completion_rate)),
        ("closed loop rate (CMS50)", _percent(k.closed_loop_rate)),
        ("median time to schedule", _number(k.median_days_to_schedule, "days")),
        ("median time to appointment", _number(k.median_days_to_appointment, "days")),
        ("median time to first contact", _number(k.median_hours_to_first_contact, "h")),
        ("no-show rate", _percent(k.no_show_rate)),
        ("leakage rate", _percent(k.leakage_rate)),
        ("overdue", str(k.overdue)),
        ("awaiting consult note", str(k.awaiting_consult_note)),
        ("authorization requested", str(k.auth_requested)),
        ("authorization denial rate", _percent(k.auth_denial_rate)),
        ("approved after appeal", _percent(k.auth_approved_after_denial_rate)),
        (
            "auth turnaround, standard (mean / median)",
            f"{_number(k.auth_turnaround_standard_mean_hours, 'h')} / "
            f"{_number(k.auth_turnaround_standard_median_hours, 'h')}",
        ),
        (
            "auth turnaround, expedited (mean / median)",
            f"{_number(k.auth_turnaround_expedited_mean_hours, 'h')} / "
            f"{_number(k.auth_turnaround_expedited_median_hours, 'h')}",
        ),
    ]
    rows += [(f"{clock.value} breach rate", _percent(rate)) for clock, rate in k.breach_rates]
    rows.append(
        (
            "patient satisfaction",
            f"{_number(k.satisfaction_mean, 'of 5')} ({k.satisfaction_responses} answers)",
        )
    )
    return rows


def kpis_text(k: Kpis) -> str:
    """The KPI summary as aligned text lines."""
    rows = _kpi_rows(k)
    width = max(len(label) for label, _ in rows)
    lines = [f"KPIs as of {_when(k.as_of)}"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def kpis_html(k: Kpis) -> str:
    """The KPI summary as an HTML table."""
    table = _table(("KPI", "value"), [(_e(a), _e(b)) for a, b in _kpi_rows(k)])
    return _box(f"KPIs as of {_e(_when(k.as_of))}", table)


def whatif_text(result: WhatIf) -> str:
    """A what-if comparison as text."""
    head = (
        f"What-if {result.old.name}@{result.old.version} → {result.new.name}@"
        f"{result.new.version}: {result.changed} of {result.total} referrals change"
    )
    return head + "\n" + result.table()


def whatif_html(result: WhatIf) -> str:
    """A what-if comparison as an HTML table of outcome transitions."""
    head = (
        f"What-if {_e(result.old.name)}@{_e(result.old.version)} → "
        f"{_e(result.new.name)}@{_e(result.new.version)}: {result.changed} of "
        f"{result.total} referrals change"
    )
    rows = [
        (
            _e(c.old),
            _e(c.new),
            f"<b>{c.count}</b>" if c.changed else str(c.count),
            _e(", ".join(c.samples)),
        )
        for c in result.changes
    ]
    return _box(head, _table(("old", "new", "referrals", "sample ids"), rows))
