"""The desk sends messages and records them as communications, once per (referral, moment,
version)."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest

from referralkit import (
    Actor,
    Channel,
    ConcurrencyError,
    ContactPoint,
    ContactSystem,
    DeliveryError,
    Direction,
    EventType,
    MemoryStore,
    PermissionDeniedError,
    ReferralDesk,
    Role,
    ValidationError,
)
from referralkit.messages import Moment, OutboxNotifier, Renderer
from referralkit.testing import FakeClock, sample_request

COORDINATOR = Actor("coord-1", {Role.COORDINATOR})
VISIT = dt.datetime(2026, 1, 20, 15, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(timezone="America/Chicago")


@pytest.fixture
def desk() -> ReferralDesk:
    counter = itertools.count(1)
    return ReferralDesk(
        MemoryStore(),
        clock=FakeClock(dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)),
        new_id=lambda: f"id-{next(counter):04d}",
    )


@pytest.fixture
def outbox(tmp_path: Path) -> OutboxNotifier:
    return OutboxNotifier(tmp_path / "outbox")


def booked(desk: ReferralDesk, *, email: bool = True) -> str:
    request = sample_request()
    if email:
        patient = request.patient
        contacts = (*patient.contacts, ContactPoint(ContactSystem.EMAIL, "alex@example.org"))
        request = attrs.evolve(request, patient=attrs.evolve(patient, contacts=contacts))
    referral = desk.intake(COORDINATOR, request)
    desk.send(COORDINATOR, referral.id)
    desk.accept(COORDINATOR, referral.id)
    desk.schedule(COORDINATOR, referral.id, VISIT)
    return referral.id


def messages_logged(desk: ReferralDesk, referral_id: str) -> list[dict[str, Any]]:
    return [
        dict(e.payload["message"])
        for e in desk.history(COORDINATOR, referral_id)
        if e.type == EventType.COMMUNICATION_LOGGED.value and "message" in e.payload
    ]


class TestNotify:
    def test_sends_and_records_a_communication(
        self, desk: ReferralDesk, outbox: OutboxNotifier, renderer: Renderer
    ) -> None:
        """The message is written to the outbox and logged as an outbound communication."""
        rid = booked(desk)
        sent = desk.notify(COORDINATOR, rid, Moment.BOOKED, outbox, renderer=renderer)
        assert not sent.duplicate
        assert sent.receipt is not None
        assert sent.message.language == "es"
        assert sent.message.interpreter
        (communication,) = sent.referral.communications
        assert communication.direction is Direction.OUTBOUND
        # the sample patient has a phone and an e-mail; the outbox reaches e-mail and SMS, and
        # a patient who needs an interpreter is called first: phone is skipped, e-mail used
        assert communication.channel is Channel.EMAIL
        assert communication.counterpart == "patient"
        assert not communication.interpreter_used
        assert communication.language == "es"
        assert communication.summary == "booked message sent in es"
        (logged,) = messages_logged(desk, rid)
        assert logged["key"] == sent.message.key
        assert logged["language"] == "es"
        assert logged["interpreter_promised"] is True
        assert (outbox.folder / sent.receipt.transport_id).exists()

    def test_second_call_sends_nothing(
        self, desk: ReferralDesk, outbox: OutboxNotifier, renderer: Renderer
    ) -> None:
        """Notifying the same moment again for the same facts is a recorded duplicate."""
        rid = booked(desk)
        first = desk.notify(COORDINATOR, rid, Moment.BOOKED, outbox, renderer=renderer)
        again = desk.notify(COORDINATOR, rid, Moment.BOOKED, outbox, renderer=renderer)
        assert again.duplicate
        assert again.receipt is None
        assert again.message.key == first.message.key
        assert len(desk.get(COORDINATOR, rid).communications) == 1
        assert len(list(outbox.folder.iterdir())) == 1

    def test_a_new_booking_is_a_new_message(
        self, desk: ReferralDesk, outbox: OutboxNotifier, renderer: Renderer
    ) -> None:
        """After a reschedule the booked message is sent again, with a new key."""
        rid = booked(desk)
        first = desk.notify(COORDINATOR, rid, Moment.BOOKED, outbox, renderer=renderer)
        desk.reschedule(COORDINATOR, rid, VISIT + dt.timedelta(days=2))
        second = desk.notify(COORDINATOR, rid, Moment.BOOKED, outbox, renderer=renderer)
        assert not second.duplicate
        assert second.message.key != first.message.key
        assert len(messages_logged(desk, rid)) == 2

    def test_failed_delivery_records_nothing(
        self, desk: ReferralDesk, renderer: Renderer, tmp_path: Path
    ) -> None:
        """No contact the notifier can reach: DeliveryError, and the history is unchanged."""
        rid = booked(desk, email=False)

        class EmailOnly(OutboxNotifier):
            systems = frozenset({ContactSystem.EMAIL})

        before = desk.history(COORDINATOR, rid)
        with pytest.raises(DeliveryError):
            desk.notify(COORDINATOR, rid, Moment.BOOKED, EmailOnly(tmp_path), renderer=renderer)
        assert desk.history(COORDINATOR, rid) == before

    def test_consult_note_goes_to_the_given_contact(
        self, desk: ReferralDesk, outbox: OutboxNotifier, renderer: Renderer
    ) -> None:
        """Closing the loop needs the referrer's contact; the counterpart is the referrer."""
        rid = booked(desk)
        desk.record_visit(COORDINATOR, rid)
        desk.complete(COORDINATOR, rid, "Consult: findings and plan")
        with pytest.raises(ValidationError, match="contact"):
            desk.notify(COORDINATOR, rid, Moment.CONSULT_NOTE, outbox, renderer=renderer)
        referrer = ContactPoint(ContactSystem.EMAIL, "referrals@riverside.example")
        sent = desk.notify(
            COORDINATOR, rid, Moment.CONSULT_NOTE, outbox, renderer=renderer, contact=referrer
        )
        assert sent.message.language == "en"
        assert sent.referral.communications[-1].counterpart == "Riverside Family Medicine"

    def test_needs_permission(
        self, desk: ReferralDesk, outbox: OutboxNotifier, renderer: Renderer
    ) -> None:
        """An auditor may not send messages."""
        rid = booked(desk)
        with pytest.raises(PermissionDeniedError):
            desk.notify(Actor("a", {Role.AUDITOR}), rid, Moment.BOOKED, outbox, renderer=renderer)

    def test_recorded_even_if_the_referral_changed_meanwhile(
        self,
        desk: ReferralDesk,
        outbox: OutboxNotifier,
        renderer: Renderer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A conflicting write between send and record: the record is retried, not lost."""
        rid = booked(desk)
        real_save = desk.store.save
        calls = iter([True])

        def flaky(*args: Any, **kwargs: Any) -> None:
            if next(calls, False):
                raise ConcurrencyError(rid, 0, 1)
            real_save(*args, **kwargs)

        monkeypatch.setattr(desk.store, "save", flaky)
        sent = desk.notify(COORDINATOR, rid, Moment.BOOKED, outbox, renderer=renderer)
        assert not sent.duplicate
        assert len(messages_logged(desk, rid)) == 1

    def test_no_phi_in_the_record_or_the_logs(
        self,
        desk: ReferralDesk,
        outbox: OutboxNotifier,
        renderer: Renderer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The communication and the log hold no name, address or message text."""
        rid = booked(desk)
        caplog.set_level(logging.DEBUG, logger="referralkit")
        sent = desk.notify(COORDINATOR, rid, Moment.BOOKED, outbox, renderer=renderer)
        recorded = str(desk.history(COORDINATOR, rid)[-1].payload)
        for secret in ("Alex", "alex@example.org", "+1-555-0100", sent.message.subject):
            assert secret not in recorded
            assert secret not in caplog.text

    def test_default_renderer_is_built_once(
        self, desk: ReferralDesk, outbox: OutboxNotifier
    ) -> None:
        """Without a renderer the desk builds one on first use and keeps it."""
        rid = booked(desk)
        desk.notify(COORDINATOR, rid, Moment.RECEIVED, outbox)
        kept = desk._renderer  # type: ignore[attr-defined]
        desk.notify(COORDINATOR, rid, Moment.BOOKED, outbox)
        assert desk._renderer is kept  # type: ignore[attr-defined]
