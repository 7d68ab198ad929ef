"""Events and replay: the history rebuilds the snapshot; bad histories are typed errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest

from referralkit import (
    Actor,
    EventType,
    ReferralDesk,
    ReferralEvent,
    Role,
    Status,
    ValidationError,
    replay,
)
from referralkit.events import apply, apply_all
from referralkit.testing import FakeClock, sample_request

T = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)


@pytest.fixture
def history(desk: ReferralDesk, coordinator: Actor) -> list[ReferralEvent]:
    referral = desk.intake(coordinator, sample_request())
    desk.send(coordinator, referral.id)
    desk.hold(coordinator, referral.id, "waiting")
    return desk.history(coordinator, referral.id)


def event(referral_id: str, version: int, kind: str, payload: dict[str, Any]) -> ReferralEvent:
    return ReferralEvent(referral_id, version, 0, T, "u1", kind, payload)


class TestReplay:
    def test_replay_equals_applying_one_by_one(self, history: list[ReferralEvent]) -> None:
        """replay(events) equals applying each event in turn."""
        referral = None
        for item in history:
            referral = apply(referral, item)
        assert referral == replay(history)
        assert referral is not None
        assert referral.status is Status.ON_HOLD
        assert referral.held_from is Status.RECEIVED

    def test_prefixes_replay_to_earlier_versions(self, history: list[ReferralEvent]) -> None:
        """Replaying the events up to a version gives the referral as it was then."""
        versions = sorted({e.version for e in history})
        states = [replay([e for e in history if e.version <= v]) for v in versions]
        assert [s.version for s in states] == versions
        assert [s.status for s in states] == [Status.DRAFT, Status.RECEIVED, Status.ON_HOLD]

    def test_apply_all_continues_from_a_snapshot(self, history: list[ReferralEvent]) -> None:
        """apply_all continues from a snapshot; with no events it returns the snapshot."""
        first = replay([e for e in history if e.version == 1])
        later = [e for e in history if e.version > 1]
        assert apply_all(first, later) == replay(history)
        assert apply_all(first, []) == first

    def test_version_and_updated_at_come_from_the_last_event(
        self, history: list[ReferralEvent]
    ) -> None:
        """The replayed version and updated_at are those of the last event."""
        referral = replay(history)
        assert (referral.version, referral.updated_at) == (history[-1].version, history[-1].at)

    def test_nothing_to_replay(self) -> None:
        """Replaying no events is a ValidationError."""
        with pytest.raises(ValidationError) as info:
            replay([])
        assert info.value.path == "events"

    def test_created_must_come_first(self, history: list[ReferralEvent]) -> None:
        """A second 'created' event is refused."""
        with pytest.raises(ValidationError, match="must come first") as info:
            replay([*history, history[0]])
        assert info.value.path == "type"

    def test_a_history_must_start_with_created(self, history: list[ReferralEvent]) -> None:
        """A history that does not start with 'created' is refused."""
        with pytest.raises(ValidationError, match="needs an existing referral") as info:
            replay(history[1:])
        assert info.value.path == "type"

    def test_unknown_event_type(self, history: list[ReferralEvent]) -> None:
        """An event type referralkit does not know is a ValidationError naming type."""
        referral = replay(history)
        with pytest.raises(ValidationError) as info:
            apply(referral, event(referral.id, referral.version + 1, "teleported", {}))
        assert info.value.path == "type"

    @pytest.mark.parametrize(
        ("kind", "payload"),
        [
            ("status_changed", {"source": "on_hold"}),
            ("status_changed", {"source": "on_hold", "target": "lost"}),
            ("appointment_changed", {"status": "cancelled"}),
            ("attachment_added", {"attachment": {"id": "d1"}}),
            ("owner_assigned", {"owner": 5}),
            ("alert_raised", {"ruleset": "r", "rule_id": 5}),
            ("alert_cleared", {}),
        ],
    )
    def test_malformed_payload(
        self, history: list[ReferralEvent], kind: str, payload: dict[str, Any]
    ) -> None:
        """An imported event with a malformed payload is a ValidationError, not a KeyError."""
        referral = replay(history)
        with pytest.raises(ValidationError):
            apply(referral, event(referral.id, referral.version + 1, kind, payload))


class TestEventTypes:
    def test_values_are_snake_case(self) -> None:
        """Event type values are lower snake case, as ReferralEvent.type requires."""
        for kind in EventType:
            assert kind.value == kind.name.lower()

    def test_every_type_can_be_stored(self) -> None:
        """Every EventType value is a valid ReferralEvent.type."""
        for kind in EventType:
            assert event("r1", 1, kind.value, {}).type == kind.value


class TestTimestamps:
    def test_received_at_is_set_once(self, store: Any, coordinator: Actor) -> None:
        """received_at is the first time the referral was received; resume keeps it."""
        clock = FakeClock(T)
        desk = ReferralDesk(store, clock=clock)
        referral = desk.intake(coordinator, sample_request())
        clock.advance(hours=1)
        received = desk.send(coordinator, referral.id)
        clock.advance(hours=1)
        desk.hold(coordinator, referral.id, "waiting")
        clock.advance(hours=1)
        resumed = desk.resume(coordinator, referral.id)
        assert resumed.status is Status.RECEIVED
        assert resumed.received_at == received.received_at == T + dt.timedelta(hours=1)

    def test_closed_at_on_terminal(self, desk: ReferralDesk, coordinator: Actor) -> None:
        """closed_at is stamped when the referral reaches a terminal state."""
        referral = desk.intake(coordinator, sample_request())
        assert referral.closed_at is None
        closed = desk.mark_entered_in_error(coordinator, referral.id, "test entry")
        assert closed.closed_at == closed.updated_at
        assert attrs.evolve(closed).status.is_terminal
        assert Actor("x", {Role.AUDITOR}).may("history")
