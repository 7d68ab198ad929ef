"""The contract every :class:`~referralkit.messages.Notifier` passes.

Subclass :class:`NotifierContract` in your test suite; provide a ``notifier`` fixture and a
``delivered`` fixture: a function that, given a :class:`~referralkit.messages.Receipt`,
reads back what the channel received (an :class:`email.message.EmailMessage` for e-mail,
the text for a text message). pytest collects the inherited tests::

    class TestMyNotifier(NotifierContract):
        @pytest.fixture
        def notifier(self, server):
            return MyNotifier(server.url)

        @pytest.fixture
        def delivered(self, server):
            return server.read_back

The tests cover: an e-mail arrives with its subject, text, HTML alternative, language and
idempotency key, non-ASCII text intact; a text message arrives with its text; a contact
system the notifier does not reach, and an address that would inject headers, raise
:class:`~referralkit.errors.DeliveryError`; receipts and errors never show the address or
the text. referralkit runs it against the outbox and the SMTP notifier (with a local SMTP
server).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Final

import attrs
import pytest

from ..clocks import Cause
from ..errors import DeliveryError
from ..messages import KEY_HEADER, Message, Moment, Money, Notifier, Receipt, Renderer
from ..model import (
    Appointment,
    AppointmentStatus,
    Attachment,
    AttachmentKind,
    Authorization,
    AuthStatus,
    ContactPoint,
    ContactSystem,
    CoverageDecision,
    Covered,
    PaNeeded,
    Referral,
)
from ._samples import sample_request

__all__ = ["NotifierContract", "sample_message", "staged"]

ADDRESS = "alex.canary@example.org"
NUMBER = "+1-555-0100"

Delivered = Callable[[Receipt], "EmailMessage | str"]


_DAY: Final = dt.timedelta(days=1)
_COVERAGE: Final = {
    Moment.COVERED: CoverageDecision(Covered.COVERED, PaNeeded.NO_AUTH),
    Moment.PRIOR_AUTH_NEEDED: CoverageDecision(Covered.COVERED, PaNeeded.AUTH_NEEDED),
    Moment.NOT_COVERED: CoverageDecision(
        Covered.NOT_COVERED,
        reason="auth-out-network",
        alternatives=("an in-network specialist", "self-pay or payment plan"),
    ),
    Moment.SELF_PAY: CoverageDecision(
        Covered.NOT_COVERED,
        reason="self-pay",
        alternatives=("payment plan", "sliding-scale fee", "financial assistance screening"),
    ),
    Moment.COVERAGE_PENDING: CoverageDecision(Covered.INDETERMINATE, PaNeeded.INDETERMINATE),
}


def staged(referral: Referral, moment: Moment, at: dt.datetime) -> tuple[Referral, dict[str, Any]]:
    """``referral`` changed so that it holds what ``moment`` is about, and the extra
    arguments :meth:`~referralkit.messages.Renderer.render` takes for it.

    For testing templates over many referrals (generated ones, your own samples): the
    coverage moments get a decision of that kind, the authorization moments an authorization
    in that state, the visit moments an appointment a week after ``at`` with the target
    specialist (booked, missed or held), the consult note a fulfilled visit and the note.
    """
    provider = referral.target.id if referral.target is not None else referral.referring.id
    visit = Appointment("visit-1", at + 7 * _DAY, provider, minutes=45, booked_at=at)
    changes: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if moment in _COVERAGE:
        changes["coverage_decision"] = _COVERAGE[moment]
        if moment in (Moment.NOT_COVERED, Moment.SELF_PAY):
            extra["estimate"] = Money("185.00")
    elif moment is Moment.AUTH_REQUESTED:
        changes["authorization"] = Authorization(
            AuthStatus.REQUESTED, requested_at=at, decision_due_by=at + 7 * _DAY
        )
    elif moment is Moment.AUTH_APPROVED:
        changes["authorization"] = Authorization(
            AuthStatus.APPROVED, valid_from=at.date(), valid_to=(at + 90 * _DAY).date()
        )
    elif moment is Moment.AUTH_DENIED:
        changes["authorization"] = Authorization(AuthStatus.DENIED, decided_at=at)
        changes["coverage_decision"] = _COVERAGE[Moment.NOT_COVERED]
    elif moment in (Moment.BOOKED, Moment.REMINDER):
        changes["appointments"] = (visit,)
    elif moment is Moment.MISSED:
        changes["appointments"] = (attrs.evolve(visit, status=AppointmentStatus.NOSHOW),)
    elif moment is Moment.DELAYED:
        extra.update(cause=Cause.INSURANCE, new_date=(at + 14 * _DAY).date())
    elif moment is Moment.CONSULT_NOTE:
        changes["appointments"] = (attrs.evolve(visit, status=AppointmentStatus.FULFILLED),)
        note = Attachment("note-1", AttachmentKind.CONSULT_NOTE, at + 8 * _DAY, text="note")
        changes["attachments"] = (*referral.attachments, note)
    return attrs.evolve(referral, **changes), extra


def sample_message(language: str = "es") -> Message:
    """A booked-visit message (with an HTML part) for the sample referral, in ``language``."""
    referral = sample_request().referral("r-contract", dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC))
    visit = Appointment("a-1", dt.datetime(2026, 3, 10, 16, 0, tzinfo=dt.UTC), "prov-card-1")
    booked = attrs.evolve(referral, appointments=(visit,))
    return _renderer().render(booked, Moment.BOOKED, language=language)


_RENDERERS: dict[str, Renderer] = {}


def _renderer() -> Renderer:
    if "default" not in _RENDERERS:
        _RENDERERS["default"] = Renderer(timezone="America/New_York")
    return _RENDERERS["default"]


def _body(mail: EmailMessage, subtype: str) -> str:
    part = mail.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content: str = part.get_content()
    return content.replace("\r\n", "\n").strip()


class NotifierContract:
    """Shared semantics of every notifier. Provide ``notifier`` and ``delivered`` fixtures."""

    @pytest.fixture
    def notifier(self) -> Notifier:  # pragma: no cover - overridden
        raise NotImplementedError("define a `notifier` fixture")

    @pytest.fixture
    def delivered(self) -> Delivered:  # pragma: no cover - overridden
        raise NotImplementedError("define a `delivered` fixture reading back a delivery")

    @pytest.fixture
    def message(self) -> Message:
        return sample_message("es")

    def test_is_a_notifier(self, notifier: Notifier) -> None:
        """The adapter satisfies the Notifier protocol and reaches at least one system."""
        assert isinstance(notifier, Notifier)
        assert notifier.systems
        assert notifier.systems <= set(ContactSystem)

    @pytest.mark.parametrize("system", list(ContactSystem), ids=lambda s: s.value)
    def test_every_contact_system_is_delivered_or_refused(
        self, notifier: Notifier, delivered: Delivered, message: Message, system: ContactSystem
    ) -> None:
        """A system the notifier reaches is delivered and reads back; any other is refused."""
        contact = ContactPoint(system, ADDRESS if system is ContactSystem.EMAIL else NUMBER)
        if system not in notifier.systems:
            with pytest.raises(DeliveryError) as info:
                notifier.send(message, contact)
            _assert_clean(info.value)
            return
        receipt = notifier.send(message, contact)
        assert receipt.key == message.key
        assert receipt.at.tzinfo is not None
        assert receipt.at.utcoffset() == dt.timedelta(0)
        assert not receipt.duplicate
        got = delivered(receipt)
        if system is ContactSystem.EMAIL:
            assert isinstance(got, EmailMessage)
            self.check_email(got, message)
        else:
            assert isinstance(got, str)
            assert message.sms in got

    def check_email(self, mail: EmailMessage, message: Message) -> None:
        """What every delivered e-mail holds."""
        assert str(mail["Subject"]) == message.subject
        assert ADDRESS in str(mail["To"])
        assert str(mail["Content-Language"]) == message.language
        assert str(mail[KEY_HEADER]) == message.key
        assert _body(mail, "plain") == message.text
        assert message.html is not None
        assert "<html" in _body(mail, "html")
        # non-ASCII survives the transport's encoding
        assert "á" in message.text
        assert "á" in _body(mail, "plain")

    def test_same_key_same_message_id(
        self, notifier: Notifier, delivered: Delivered, message: Message
    ) -> None:
        """The transport id comes from the message key, so a retry is recognisable."""
        if ContactSystem.EMAIL not in notifier.systems:
            pytest.skip("this notifier sends no e-mail; the SMS case is covered above")
        first = notifier.send(message, ContactPoint(ContactSystem.EMAIL, ADDRESS))
        again = notifier.send(message, ContactPoint(ContactSystem.EMAIL, ADDRESS))
        assert first.transport_id == again.transport_id
        assert first.key == again.key

    @pytest.mark.parametrize(
        "address",
        [f"{ADDRESS}\r\nBcc: canary@example.org", "not an address", "canary@"],
        ids=["header-injection", "no-at", "no-domain"],
    )
    def test_unusable_address_is_refused(
        self, notifier: Notifier, message: Message, address: str
    ) -> None:
        """An address that is not one e-mail address raises DeliveryError, without PHI."""
        if ContactSystem.EMAIL not in notifier.systems:
            pytest.skip("this notifier sends no e-mail")
        with pytest.raises(DeliveryError) as info:
            notifier.send(message, ContactPoint(ContactSystem.EMAIL, address))
        _assert_clean(info.value)
        assert info.value.retry is False

    def test_receipt_shows_no_phi(self, notifier: Notifier, message: Message) -> None:
        """A receipt's repr holds neither the address nor the message text."""
        system = sorted(notifier.systems)[0]
        value = ADDRESS if system is ContactSystem.EMAIL else NUMBER
        receipt = notifier.send(message, ContactPoint(system, value))
        shown = repr(receipt) + repr(notifier)
        for secret in (value, message.subject, "Alex"):
            assert secret not in shown

    def test_rejects_what_is_not_a_message(self, notifier: Notifier) -> None:
        """Anything but a Message and a ContactPoint is a typed error."""
        bad: Any = "a message"
        with pytest.raises((DeliveryError, ValueError)):
            notifier.send(bad, ContactPoint(ContactSystem.EMAIL, ADDRESS))


def _assert_clean(error: BaseException) -> None:
    text = f"{error} {error!r} {error.args!r}"
    for secret in ("canary", "Alex", NUMBER):
        assert secret not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
