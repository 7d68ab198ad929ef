"""Keep the patient informed: plain-language messages per moment, in the patient's language.

A :class:`Renderer` turns a referral and a :class:`Moment` (referral received, coverage
outcome, prior authorization, visit booked, reminder, missed visit, delay, consult note back
to the referrer) into a :class:`Message`: subject, plain-text body, HTML body, a short SMS
form, the language it is written in and what it fell back on, channel hints, the referral
facts it used, and an idempotency key.

- Texts come from gettext catalogs managed with Babel (``locale/<lang>/LC_MESSAGES``);
  English and Spanish are complete, and a missing translation falls back to English and is
  reported in :attr:`Message.missing`, never left blank.
- Templates are Jinja2, sandboxed, with ``StrictUndefined`` and autoescaping for HTML; a
  deployment overrides any of them from a folder (per-specialty preparation texts live in
  ``prep/<specialty>.txt``). Unknown placeholders and broken templates fail when the
  renderer is built, naming the template and line (:class:`~referralkit.errors.TemplateError`).
- Dates, times and amounts are formatted for the reader's locale with Babel.
- A :class:`Notifier` delivers a message to a contact: :class:`OutboxNotifier` writes
  ``.eml`` and SMS text files, :class:`SmtpNotifier` sends e-mail over SMTP.

>>> import datetime as dt
>>> import referralkit as rk
>>> from referralkit.messages import Moment, Renderer
>>> at = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
>>> referral = rk.Referral(
...     "r-1",
...     rk.Patient("p-1", "MRN-1", "Ana", "Example", dt.date(1980, 5, 1), preferred_language="es"),
...     rk.Provider("pcp-1", "Lakeview Family Medicine", "family-medicine"),
...     "cardiology",
...     at,
...     at,
...     appointments=(rk.Appointment("a-1", at + dt.timedelta(days=8), "pcp-1"),),
... )
>>> renderer = Renderer(timezone="America/Los_Angeles")
>>> renderer.render(referral, Moment.BOOKED, language="en").subject
'Your visit is booked for Tuesday, March 10, 2026'
>>> print(renderer.render(referral, Moment.BOOKED).subject)
Su cita está reservada para el martes, 10 de marzo de 2026
"""

from ._catalogs import DOMAIN, LOCALE_DIR
from ._facts import COMMON, FACTS
from ._model import Audience, Message, Moment, Money, Notification, Organization
from ._notify import KEY_HEADER, Notifier, OutboxNotifier, Receipt, SmtpNotifier, email_message
from ._render import TEMPLATE_DIR, Renderer

__all__ = [
    "COMMON",
    "DOMAIN",
    "FACTS",
    "KEY_HEADER",
    "LOCALE_DIR",
    "TEMPLATE_DIR",
    "Audience",
    "Message",
    "Moment",
    "Money",
    "Notification",
    "Notifier",
    "Organization",
    "OutboxNotifier",
    "Receipt",
    "Renderer",
    "SmtpNotifier",
    "email_message",
]
