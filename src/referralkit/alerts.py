"""Alerts: the event rules' findings, recorded once each in a referral's history.

An event rule (:mod:`referralkit.rules.timeline`) says, at an instant, which of its rules are
due for a referral: a prior-authorization decision overdue under CMS-0057-F, a referral not
scheduled inside its urgency window, three no-shows in 180 days. The desk's
:meth:`~referralkit.desk.ReferralDesk.sweep` records what changed since the last sweep as
events, so history and analytics can count breaches:

- :attr:`~referralkit.events.EventType.ALERT_RAISED` when a rule becomes due that has no
  active alert (the payload says which rule of which ruleset, what to do, why and since when);
- :attr:`~referralkit.events.EventType.ALERT_CLEARED` when an active alert's rule is no
  longer due (the rule went out of force, or left the ruleset).

An alert is identified by its ruleset's *name* and its rule id, not the ruleset's version: a
new version of the same rules does not raise its alerts again. Since a breach, once it
happened, stays (the event rules never undo one), an alert raised on an open referral stays
active until it closes. :func:`changes` compares what is due with what the history already
holds, so recording is idempotent: a second sweep with nothing new finds nothing to write.

Nothing here writes; the payloads hold rule ids, actions, reasons from the ruleset and times,
never PHI.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from .model import ReferralEvent
from .rules.timeline import Alert

__all__ = [
    "CLEARED",
    "RAISED",
    "ActiveAlert",
    "SweepReport",
    "active",
    "changes",
    "cleared_payload",
    "raised_payload",
]

RAISED = "alert_raised"
CLEARED = "alert_cleared"


class SweepReport(NamedTuple):
    """What one :meth:`~referralkit.desk.ReferralDesk.sweep` did, as of ``as_of``: how many
    open referrals it read, the alerts it raised and cleared (recorded as events), how many
    referrals it wrote, how many writes lost a race and were read again (``retried``), and
    how many it left for the next sweep because they kept changing (``skipped``)."""

    as_of: dt.datetime
    swept: int
    raised: tuple[Alert, ...]
    cleared: tuple[ActiveAlert, ...]
    written: int
    retried: int
    skipped: int


class ActiveAlert(NamedTuple):
    """An alert the history holds as raised and not cleared: its rule, what to do and why,
    when it became due and the event (version, index) that recorded it."""

    ruleset: str
    rule_id: str
    action: str
    reason: str
    due_at: dt.datetime
    recorded: tuple[int, int]


def active(events: Iterable[ReferralEvent]) -> dict[tuple[str, str], ActiveAlert]:
    """The alerts raised in ``events`` (a referral's history, oldest first) and not cleared
    since, by ``(ruleset, rule_id)``."""
    found: dict[tuple[str, str], ActiveAlert] = {}
    for event in events:
        if event.type == RAISED:
            p = event.payload
            key = (str(p.get("ruleset")), str(p.get("rule_id")))
            found[key] = ActiveAlert(
                key[0],
                key[1],
                str(p.get("action", "")),
                str(p.get("reason", "")),
                dt.datetime.fromisoformat(str(p.get("due_at"))),
                (event.version, event.index),
            )
        elif event.type == CLEARED:
            p = event.payload
            found.pop((str(p.get("ruleset")), str(p.get("rule_id"))), None)
    return found


def raised_payload(alert: Alert) -> dict[str, Any]:
    """The payload of the event that records ``alert`` as raised."""
    return {
        "ruleset": alert.ruleset,
        "version": alert.version,
        "rule_id": alert.rule_id,
        "action": alert.action,
        "reason": alert.reason,
        "due_at": alert.at.isoformat(),
    }


def cleared_payload(alert: ActiveAlert, why: str) -> dict[str, Any]:
    """The payload of the event that records ``alert`` as cleared, saying ``why``."""
    return {"ruleset": alert.ruleset, "rule_id": alert.rule_id, "why": why}


def changes(
    due: Sequence[Alert],
    history: Iterable[ReferralEvent],
    *,
    ruleset: str,
    as_of: dt.datetime | None = None,
) -> tuple[list[Alert], list[ActiveAlert]]:
    """What to record: the alerts of ``due`` (the rules due at ``as_of``) with no active alert
    in ``history``, and the active alerts of ``ruleset`` that are no longer due. Both empty
    when the history is up to date (the idempotence the sweep relies on). An alert that
    became due after ``as_of`` is not cleared: a sweep as of an earlier instant does not undo
    what a later one found."""
    standing = active(history)
    wanted = {(a.ruleset, a.rule_id) for a in due}
    raised = [a for a in due if (a.ruleset, a.rule_id) not in standing]
    cleared = [
        a
        for key, a in standing.items()
        if a.ruleset == ruleset and key not in wanted and (as_of is None or a.due_at <= as_of)
    ]
    return raised, cleared
