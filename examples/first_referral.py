"""One referral from intake to a closed loop, and the history it leaves behind.

Run it with ``python examples/first_referral.py``. It uses a fake clock and an in-memory
store, so every run prints the same thing.
"""

from __future__ import annotations

import datetime as dt
import itertools

import referralkit as rk
from referralkit.testing import FakeClock, sample_request


def main() -> None:
    clock = FakeClock(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC))
    numbers = itertools.count(1)
    desk = rk.ReferralDesk(
        rk.open_store("memory://"), clock=clock, new_id=lambda: f"id-{next(numbers)}"
    )
    coordinator = rk.Actor("coord-1", {rk.Role.COORDINATOR})

    # Intake checks completeness: this request arrives without the medical history.
    referral = desk.intake(coordinator, sample_request(complete=False))
    missing = ", ".join(r.value for r in desk.missing(coordinator, referral.id))
    print(f"intake: referral {referral.id} is {referral.status}, missing: {missing}")
    desk.attach(coordinator, referral.id, rk.AttachmentKind.MEDICAL_HISTORY, title="History")

    desk.send(coordinator, referral.id)
    clock.advance(hours=4)
    referral = desk.accept(coordinator, referral.id)
    print(f"accepted: {referral.urgency.priority} referral, due by {referral.due_by:%Y-%m-%d}")

    # Cardiac chest pain: the desk's default (the shipped urgency rules) makes it urgent,
    # to be seen within 48 hours of receipt, so book the first slot inside that window.
    clock.advance(hours=2)
    visit = dt.datetime(2026, 1, 7, 8, 0, tzinfo=dt.UTC)
    referral = desk.schedule(coordinator, referral.id, visit)
    print(f"scheduled: {referral.current_appointment.start:%Y-%m-%d %H:%M} UTC")

    clock.set(visit + dt.timedelta(hours=1))
    desk.record_visit(coordinator, referral.id)
    clock.advance(days=2)
    referral = desk.complete(
        coordinator, referral.id, "Exercise stress test normal. No cardiology follow-up needed."
    )
    print(f"completed: status {referral.status}, version {referral.version}")

    history = desk.history(coordinator, referral.id)
    print(f"history: {len(history)} events")
    for event in history:
        if event.type == rk.EventType.STATUS_CHANGED:
            payload = event.payload
            print(f"  {event.at:%Y-%m-%d %H:%M} {payload['source']} -> {payload['target']}")
    assert rk.replay(history) == referral
    print("replay of the history equals the stored referral")


if __name__ == "__main__":
    main()
