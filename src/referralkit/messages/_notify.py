"""Delivering messages: the :class:`Notifier` port and two adapters, an outbox and SMTP.

A notifier sends one :class:`~referralkit.messages.Message` to one contact point and returns a
:class:`Receipt`. It never puts the recipient's address or the message text into an error,
a log record or a ``repr``: those are PHI. Failures raise
:class:`~referralkit.errors.DeliveryError`, whose ``retry`` says whether trying later may help.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import hashlib
import os
import re
import smtplib
import ssl
import tempfile
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import attrs

from .. import _validators as v
from ..clock import Clock, SystemClock
from ..errors import DeliveryError, ValidationError
from ..model import Channel, ContactPoint, ContactSystem
from ._model import Message

__all__ = [
    "KEY_HEADER",
    "Notifier",
    "OutboxNotifier",
    "Receipt",
    "SmtpNotifier",
    "email_message",
]

KEY_HEADER: Final = "X-Referralkit-Key"
"""The e-mail header carrying the message's idempotency key."""

_CHANNEL: Final = {
    ContactSystem.EMAIL: Channel.EMAIL,
    ContactSystem.SMS: Channel.SMS,
    ContactSystem.PHONE: Channel.PHONE,
}
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._-]+")


@attrs.frozen
class Receipt:
    """What a notifier reports after a delivery.

    ``transport_id`` is what the channel knows the delivery by (an e-mail ``Message-ID``, an
    outbox file name); ``duplicate`` is true when the notifier recognised the message as
    already delivered to that contact and did nothing.
    """

    key: str
    channel: Channel
    at: dt.datetime = attrs.field(validator=v.utc_datetime)
    transport_id: str
    duplicate: bool = False


@runtime_checkable
class Notifier(Protocol):
    """Delivers a message to a contact point (the port; adapters live beside it).

    ``systems`` names the contact systems the notifier can reach; :meth:`send` raises
    :class:`~referralkit.errors.DeliveryError` for any other. Third-party notifiers run the
    contract suite in :mod:`referralkit.testing.notifiers`.
    """

    systems: frozenset[ContactSystem]

    def send(self, message: Message, contact: ContactPoint) -> Receipt: ...


def _check(message: object, contact: object, systems: frozenset[ContactSystem]) -> Channel:
    if not isinstance(message, Message):
        raise ValidationError("message", "expected a Message")
    if not isinstance(contact, ContactPoint):
        raise ValidationError("contact", "expected a ContactPoint")
    if contact.system not in systems:
        raise DeliveryError(contact.system.value, "this notifier cannot reach that contact system")
    return _CHANNEL[contact.system]


def message_id(message: Message) -> str:
    """A stable ``Message-ID`` for the message: the same key always gives the same id."""
    digest = hashlib.sha256(message.key.encode()).hexdigest()[:32]
    return f"<{digest}@referralkit.invalid>"


def email_message(
    message: Message, contact: ContactPoint, sender: str, at: dt.datetime
) -> EmailMessage:
    """The message as an e-mail (text, and HTML as an alternative when there is one).

    Refuses, with :class:`~referralkit.errors.DeliveryError`, an address that is not one
    e-mail address (a line break in it would add headers).
    """
    try:
        recipient = Address(addr_spec=contact.value.strip())
        if not recipient.domain or not recipient.username:
            raise ValueError("incomplete address")
        mail = EmailMessage(policy=email.policy.SMTP)
        mail["From"] = sender
        mail["To"] = recipient
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(at)
        mail["Message-ID"] = message_id(message)
        mail[KEY_HEADER] = message.key
    except (ValueError, IndexError, TypeError, HeaderParseError):
        raise DeliveryError("email", "not a usable e-mail address") from None
    mail.set_content(message.text)
    if message.html is not None:
        mail.add_alternative(message.html, subtype="html")
    # after the content: set_content() drops every Content-* header set before it
    mail["Content-Language"] = message.language
    return mail


def _clock(clock: Clock | None) -> Clock:
    return clock if clock is not None else SystemClock()


class OutboxNotifier:
    """Writes each message to a folder instead of sending it: for demos, tests and audits.

    E-mail goes to ``<name>.eml`` (RFC 5322, readable with :mod:`email`), text messages to
    ``<name>.sms.txt`` (headers, a blank line, the text). The name comes from the message key
    and a digest of the contact, never the address itself; the files are created readable by
    their owner only (they hold PHI). Sending the same message to the same contact again
    writes nothing and returns a receipt marked ``duplicate``. Phone contacts are refused.

    >>> import tempfile
    >>> OutboxNotifier(tempfile.mkdtemp()).systems == {ContactSystem.EMAIL, ContactSystem.SMS}
    True
    """

    systems: frozenset[ContactSystem] = frozenset({ContactSystem.EMAIL, ContactSystem.SMS})

    def __init__(
        self,
        folder: str | Path,
        *,
        sender: str = "care-team@example.org",
        clock: Clock | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.sender = sender
        self.clock = _clock(clock)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ValidationError("folder", f"cannot create the outbox: {exc.strerror}") from None

    def __repr__(self) -> str:
        return f"OutboxNotifier({str(self.folder)!r})"

    def path(self, message: Message, contact: ContactPoint) -> Path:
        """Where :meth:`send` writes ``message`` for ``contact``."""
        digest = hashlib.sha256(contact.value.encode()).hexdigest()[:10]
        stem = _UNSAFE_NAME.sub("_", f"{message.key}-{digest}")
        suffix = ".eml" if contact.system is ContactSystem.EMAIL else ".sms.txt"
        return self.folder / f"{stem}{suffix}"

    def send(self, message: Message, contact: ContactPoint) -> Receipt:
        channel = _check(message, contact, self.systems)
        at = self.clock.now()
        path = self.path(message, contact)
        if path.exists():
            return Receipt(message.key, channel, at, path.name, duplicate=True)
        if channel is Channel.EMAIL:
            data = email_message(message, contact, self.sender, at).as_bytes()
        else:
            data = _sms_file(message, contact, at)
        _write_private(path, data)
        return Receipt(message.key, channel, at, path.name)


def _sms_file(message: Message, contact: ContactPoint, at: dt.datetime) -> bytes:
    number = contact.value.strip()
    if not number or any(c in number for c in "\r\n"):
        raise DeliveryError("sms", "not a usable phone number")
    head = f"To: {number}\nDate: {at.isoformat()}\nLanguage: {message.language}\n"
    return f"{head}Key: {message.key}\n\n{message.sms}\n".encode()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".outbox-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise DeliveryError("outbox", f"cannot write: {exc.strerror}", retry=True) from None


class SmtpNotifier:
    """Sends e-mail through an SMTP server with the standard library's :mod:`smtplib`.

    ``starttls`` upgrades the connection with the system's trusted certificates before
    ``username``/``password`` log in; ``ssl_context`` replaces that context. One connection
    per message: simple and enough for notification volumes; put a queue in front for bulk.
    Only e-mail contacts are reachable. Server and network failures raise
    :class:`~referralkit.errors.DeliveryError` with ``retry=True`` for temporary ones (4xx
    replies, a refused or dropped connection) and ``retry=False`` for permanent ones (5xx);
    neither repeats the server's reply text, which can quote the address.
    """

    systems: frozenset[ContactSystem] = frozenset({ContactSystem.EMAIL})

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str = "care-team@example.org",
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self._password = password
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.clock = _clock(clock)

    def __repr__(self) -> str:
        return f"SmtpNotifier({self.host!r}, {self.port})"

    def send(self, message: Message, contact: ContactPoint) -> Receipt:
        _check(message, contact, self.systems)
        at = self.clock.now()
        mail = email_message(message, contact, self.sender, at)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self._password or "")
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError("email", "the server refused the recipient") from None
        except smtplib.SMTPResponseException as exc:
            temporary = 400 <= exc.smtp_code < 500
            raise DeliveryError(
                "email", f"the server answered {exc.smtp_code}", retry=temporary
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                "email", f"cannot reach the server ({type(exc).__name__})", retry=True
            ) from None
        return Receipt(message.key, Channel.EMAIL, at, str(mail["Message-ID"]))
