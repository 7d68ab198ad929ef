"""Plug a custom urgency policy into the desk: children are seen at least as urgently as
"urgent", within 48 hours of receipt.

Run it with ``python examples/custom_policy.py``. Example policy, not clinical guidance.
"""

from __future__ import annotations

import datetime as dt

import attrs

import referralkit as rk
from referralkit.testing import FakeClock, sample_request

ADULT_AGE = 18
PEDIATRIC_WINDOW = dt.timedelta(hours=48)


class PediatricUrgency:
    """Decide as ``base`` does (:class:`~referralkit.policy.BasicUrgency` by default), then
    escalate patients under 18 to at least urgent, due within 48 hours of receipt.

    Any object with ``assess(referral, at)`` is an :class:`~referralkit.policy.UrgencyAssessor`;
    no base class is needed.
    """

    hit = rk.RuleHit("pediatric-escalation", "2026-03", "under-18-urgent")

    def __init__(self, base: rk.UrgencyAssessor | None = None) -> None:
        self.base = base or rk.BasicUrgency()

    def __repr__(self) -> str:
        return f"PediatricUrgency(base={self.base!r})"

    def assess(self, referral: rk.Referral, at: dt.datetime) -> rk.UrgencyAssessment:
        assessment = self.base.assess(referral, at)
        child = referral.patient.age_on(at.date()) < ADULT_AGE
        if not child or assessment.priority.rank >= rk.Priority.URGENT.rank:
            return assessment
        due = (referral.received_at or at) + PEDIATRIC_WINDOW
        return attrs.evolve(
            assessment,
            priority=rk.Priority.URGENT,
            score=assessment.score + 100,
            due_by=min(assessment.due_by, due) if assessment.due_by is not None else due,
            reasons=(*assessment.reasons, f"patient under {ADULT_AGE}"),
            hits=(*assessment.hits, self.hit),
        )


def main() -> None:
    policy = PediatricUrgency()
    assert isinstance(policy, rk.UrgencyAssessor)
    clock = FakeClock(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC))
    desk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock, urgency=policy)
    coordinator = rk.Actor("coord-1", {rk.Role.COORDINATOR})

    adult_request = sample_request("REQ-ADULT")
    child = attrs.evolve(adult_request.patient, id="pat-child", birth_date=dt.date(2016, 5, 20))
    child_request = attrs.evolve(adult_request, source_id="REQ-CHILD", patient=child)

    for request in (adult_request, child_request):
        referral = desk.intake(coordinator, request)
        referral = desk.send(coordinator, referral.id)
        urgency = referral.urgency
        rules = ", ".join(hit.rule_id for hit in urgency.hits)
        print(
            f"{request.source_id}: {urgency.priority}, due by {urgency.due_by:%Y-%m-%d %H:%M}"
            f" (rules: {rules})"
        )

    # The worklist puts the child first: as much of its window left, and a higher priority.
    first = desk.get(coordinator, desk.worklist(coordinator)[0].referral_id)
    print(f"worklist first: {first.source_id}")


if __name__ == "__main__":
    main()
