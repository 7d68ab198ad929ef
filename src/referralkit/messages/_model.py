"""The values of :mod:`referralkit.messages`: moments, the organisation's voice, messages."""

from __future__ import annotations

import decimal
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from .. import _validators as v
from ..errors import ValidationError
from ..model import Channel, CoverageDecision, Covered, PlanType, Referral

if TYPE_CHECKING:
    from ._notify import Receipt

__all__ = [
    "Audience",
    "Message",
    "Moment",
    "Money",
    "Notification",
    "Organization",
]


class Audience(enum.StrEnum):
    """Who a message is written for."""

    PATIENT = "patient"
    REFERRER = "referrer"
    """The referring clinician (the consult-note message that closes the loop)."""


class Moment(enum.StrEnum):
    """The moments of a referral at which someone is told what happens next.

    Every moment but :attr:`CONSULT_NOTE` is written to the patient; that one goes back to
    the referring clinician. :meth:`for_coverage` picks the coverage moment from a decision.
    """

    RECEIVED = "received"
    """The referral was received: what happens next."""
    COVERED = "covered"
    """The plan covers the visit; nothing more is needed from the patient."""
    PRIOR_AUTH_NEEDED = "prior-auth-needed"
    """Covered once the plan approves it (prior authorization), and what that means."""
    NOT_COVERED = "not-covered"
    """The plan does not cover it: why, in plain words, and the concrete alternatives."""
    SELF_PAY = "self-pay"
    """The patient pays: the estimate (when known) and the ways to make it affordable."""
    COVERAGE_PENDING = "coverage-pending"
    """Coverage could not be decided yet (``indeterminate`` or ``conditional``)."""
    AUTH_REQUESTED = "auth-requested"
    """Prior authorization was requested; when the plan should answer."""
    AUTH_APPROVED = "auth-approved"
    """The plan approved the service."""
    AUTH_DENIED = "auth-denied"
    """The plan said no: the right to appeal, and the alternatives."""
    BOOKED = "booked"
    """The visit is booked: who, where, when, how to get there, what to bring and expect."""
    REMINDER = "reminder"
    """A reminder shortly before the visit."""
    MISSED = "missed"
    """The patient missed the visit: how to book a new one."""
    DELAYED = "delayed"
    """A delay, its cause in plain words and the new expected date."""
    CONSULT_NOTE = "consult-note"
    """To the referring clinician: the visit happened and the consult note is back."""

    @property
    def audience(self) -> Audience:
        return Audience.REFERRER if self is Moment.CONSULT_NOTE else Audience.PATIENT

    @classmethod
    def for_coverage(cls, referral: Referral) -> Moment:
        """The coverage moment that fits the referral's current coverage decision.

        Self-pay (a self-pay plan, a ``self-pay`` decision, or a patient who agreed to pay)
        comes before not-covered; a decision that needs prior authorization gives
        :attr:`PRIOR_AUTH_NEEDED`; one that is neither covered nor refused yet gives
        :attr:`COVERAGE_PENDING`.
        """
        decision = referral.coverage_decision
        if decision is None:
            raise ValidationError("coverage_decision", "the referral has no coverage decision")
        if _self_pay(referral, decision):
            return cls.SELF_PAY
        if decision.covered is Covered.NOT_COVERED:
            return cls.NOT_COVERED
        if decision.needs_authorization:
            return cls.PRIOR_AUTH_NEEDED
        if decision.covered is Covered.COVERED:
            return cls.COVERED
        return cls.COVERAGE_PENDING


def _self_pay(referral: Referral, decision: CoverageDecision) -> bool:
    plan = referral.coverage.plan_type if referral.coverage is not None else None
    return (
        plan is PlanType.SELF_PAY
        or decision.reason == "self-pay"
        or (decision.covered is Covered.NOT_COVERED and referral.self_pay_acknowledged)
    )


def _decimal(value: object) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | decimal.Decimal):
        raise ValidationError("amount", "expected a Decimal, an int or a numeric string")
    try:
        amount = decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise ValidationError("amount", f"not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValidationError("amount", "expected a finite amount of at least zero")
    return amount


@attrs.frozen
class Money:
    """An amount in a currency (ISO 4217), formatted for the reader's locale.

    >>> Money("125.50").amount
    Decimal('125.50')
    """

    amount: decimal.Decimal = attrs.field(converter=_decimal)
    currency: str = attrs.field(default="USD", validator=v.text(pattern=r"[A-Z]{3}"))


@attrs.frozen
class Organization:
    """The voice messages speak in: who signs them and how to reach them.

    ``email`` is the sender address the e-mail notifiers use; ``phone`` is the number
    messages give for questions, rebooking and appeals.
    """

    name: str = attrs.field(default="Your care team", validator=v.text(max_length=200))
    phone: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=60)))
    email: str = attrs.field(default="care-team@example.org", validator=v.text(max_length=200))
    website: str | None = attrs.field(default=None, validator=v.optional(v.text(max_length=200)))


def _facts_repr(_: object) -> str:
    return v.REDACTED


@attrs.frozen
class Message:
    """One rendered message: what a notifier sends and the desk records.

    ``subject``, ``text`` (the plain-text body), ``html`` (the same body as HTML, when the
    templates give one) and ``sms`` (a short form for text messages) hold the patient's first
    name and visit details, so they are PHI and redacted in ``repr``, like ``facts``, the
    referral facts the templates used (name to value).

    ``language`` is the catalog the message was written from and ``locale`` the locale its
    dates, times and amounts were formatted for; ``requested_language`` is what the reader
    prefers. ``missing`` lists the source texts shown in English because the catalog had no
    translation for them; :attr:`complete` tells whether the reader got their language in full.

    ``key`` identifies the message for idempotent sending: the same referral, moment and
    version give the same key.
    """

    referral_id: str
    moment: Moment
    version: int
    key: str
    subject: str = v.phi_field()
    text: str = v.phi_field()
    sms: str = v.phi_field()
    html: str | None = v.phi_field(default=None)
    language: str = "en"
    locale: str = "en"
    requested_language: str = "en"
    interpreter: bool = False
    """True when the message says an interpreter is arranged."""
    channels: tuple[Channel, ...] = ()
    """The channels to try, best first (from the moment and the reader's contacts)."""
    facts: Mapping[str, Any] = attrs.field(factory=dict, repr=_facts_repr, eq=True, hash=False)
    missing: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    """The template files the message was rendered from."""

    @property
    def audience(self) -> Audience:
        return self.moment.audience

    @property
    def complete(self) -> bool:
        """The reader's preferred language, with no text left in English."""
        wanted = self.requested_language.replace("_", "-").split("-")[0].lower()
        return self.language == wanted and not self.missing


CHANNELS_BY_MOMENT: Final[Mapping[Moment, tuple[Channel, ...]]] = {
    moment: (
        (Channel.PORTAL, Channel.FAX, Channel.EMAIL)
        if moment is Moment.CONSULT_NOTE
        # news that calls for a conversation: a call first, then in writing
        else (Channel.PHONE, Channel.EMAIL, Channel.SMS, Channel.MAIL)
        if moment in (Moment.NOT_COVERED, Moment.AUTH_DENIED, Moment.DELAYED, Moment.MISSED)
        else (Channel.EMAIL, Channel.SMS, Channel.PHONE, Channel.MAIL)
    )
    for moment in Moment
}


@attrs.frozen
class Notification:
    """What :meth:`ReferralDesk.notify <referralkit.desk.ReferralDesk.notify>` did.

    ``referral`` is the referral afterwards (with the communication recorded), ``message``
    the message, ``receipt`` the notifier's receipt; ``duplicate`` is true when the same
    message (same key) had been sent and recorded before, and nothing was sent again
    (``receipt`` is then ``None``).
    """

    referral: Referral
    message: Message
    receipt: Receipt | None = None
    duplicate: bool = False
