"""Typical use of the public API, checked by ``mypy --strict`` (``nox -s typecheck``).

It is also imported by the test suite, so it must run as well as type-check.
"""

from __future__ import annotations

import datetime as dt

import referralkit as rk
from referralkit.interop.fhir import FhirError, Part, from_fhir, part_from_fhir, to_fhir
from referralkit.testing import sample_request


def walk_one_referral() -> rk.Referral:
    clock = rk.FakeClock()
    desk: rk.ReferralDesk = rk.ReferralDesk(rk.open_store("memory://"), clock=clock)
    actor = rk.Actor("coordinator-1", {rk.Role.COORDINATOR})
    referral: rk.Referral = desk.intake(actor, sample_request())
    referral = desk.send(actor, referral.id)
    referral = desk.accept(actor, referral.id, expected_version=referral.version)
    start: dt.datetime = clock.now() + dt.timedelta(days=7)
    referral = desk.schedule(actor, referral.id, start)
    referral = desk.record_visit(actor, referral.id)
    referral = desk.complete(actor, referral.id, "Consult note text")
    status: rk.Status = referral.status
    assert status is rk.Status.COMPLETED
    history: list[rk.ReferralEvent] = desk.history(actor, referral.id)
    assert rk.replay(history) == referral
    return referral


def handle_errors(desk: rk.ReferralDesk, actor: rk.Actor, referral_id: str) -> str:
    try:
        desk.accept(actor, referral_id)
    except rk.GuardError as error:
        return f"refused: {error.detail}"
    except rk.TransitionError as error:
        return f"not now: {error.state} / {error.event}"
    except rk.ReferralKitError as error:
        return type(error).__name__
    return "accepted"


class EscalateChildren:
    """A custom urgency policy satisfies the UrgencyAssessor protocol structurally."""

    def __init__(self) -> None:
        self.fallback = rk.BasicUrgency()

    def assess(self, referral: rk.Referral, at: dt.datetime) -> rk.UrgencyAssessment:
        base = self.fallback.assess(referral, at)
        if referral.patient.age_on(at.date()) < 18 and base.priority is rk.Priority.ROUTINE:
            return rk.UrgencyAssessment(rk.Priority.URGENT, base.score + 100, base.due_by)
        return base


def custom_desk() -> rk.ReferralDesk:
    urgency: rk.UrgencyAssessor = EscalateChildren()
    return rk.ReferralDesk(rk.MemoryStore(), urgency=urgency, clock=rk.SystemClock())


def transition_table_checks() -> list[str]:
    return sorted(rk.TABLE.events_from(rk.Status.RECEIVED))


def as_json(referral: rk.Referral) -> rk.Referral:
    data = rk.to_dict(referral)
    return rk.from_dict(rk.Referral, data)


def over_fhir(referral: rk.Referral) -> rk.Referral:
    bundle: dict[str, object] = to_fhir(referral, validate=True)
    try:
        return from_fhir(bundle)
    except FhirError as error:
        raise ValueError(error.path) from None


def first_part(bundle: dict[str, list[dict[str, dict[str, object]]]]) -> Part:
    return part_from_fhir(bundle["entry"][2]["resource"])


def why_this_decision(desk: rk.ReferralDesk, actor: rk.Actor, referral_id: str) -> list[str]:
    from referralkit.rules.provenance import DecisionExplanation, Replay

    explained = desk.explain(actor, referral_id)
    coverage: DecisionExplanation | None = explained.coverage
    fired: list[str] = list(coverage.fired) if coverage is not None else []
    replayed: Replay = desk.replay(actor, referral_id, as_of=dt.datetime.now(dt.UTC))
    return fired + [str(d) for d in replayed.urgency.differences]


if __name__ == "__main__":
    referral = walk_one_referral()
    assert over_fhir(referral) == referral
