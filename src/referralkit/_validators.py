"""Field validators for the attrs model.

They raise :class:`~referralkit.errors.ValidationError` naming the field. A field declared as
PHI (``metadata={"phi": True}``) never has its value repeated in the message.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable
from typing import Any

import attrs

from .errors import ValidationError

PHI = "phi"
"""The attrs metadata key that declares a field as protected health information."""

REDACTED = "<redacted>"

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _redact(_: object) -> str:
    return REDACTED


def phi_field(**kwargs: Any) -> Any:
    """An attrs field that holds PHI: redacted in ``repr`` and never shown in errors."""
    return attrs.field(repr=_redact, metadata={PHI: True}, **kwargs)


def is_phi(attribute: attrs.Attribute[Any]) -> bool:
    return bool(attribute.metadata.get(PHI, False))


def _shown(attribute: attrs.Attribute[Any], value: object) -> str:
    """How a rejected value may appear in a message: not at all when it is PHI."""
    if is_phi(attribute):
        return "a value"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(attribute: attrs.Attribute[Any], value: object, expected: str) -> ValidationError:
    return ValidationError(attribute.name, f"expected {expected}, got {_shown(attribute, value)}")


def text(*, pattern: str | None = None, max_length: int = 10_000) -> Validator:
    """A non-blank string, optionally matching ``pattern``."""
    compiled = re.compile(pattern) if pattern else None
    expected = f"a string matching {pattern}" if pattern else "a non-blank string"

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str) or not value.strip() or len(value) > max_length:
            raise _fail(attribute, value, expected)
        if compiled is not None and not compiled.fullmatch(value):
            raise _fail(attribute, value, expected)

    return check


def optional(inner: Validator) -> Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            inner(instance, attribute, value)

    return check


def instance(kind: type | tuple[type, ...], description: str) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        # bool is an int subclass; a flag given where a number belongs is a mistake
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise _fail(attribute, value, description)

    return check


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def member(enum_type: type[enum.Enum]) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, enum_type):
            names = ", ".join(str(m.value) for m in enum_type)
            raise _fail(attribute, value, f"a {enum_type.__name__} ({names})")

    return check


def as_utc(value: object, path: str) -> dt.datetime:
    """``value`` as a UTC datetime: any timezone-aware datetime is converted to UTC.

    A naive datetime (no ``tzinfo``, or one whose ``utcoffset()`` is ``None``) has no instant
    to convert, and anything that is not a datetime is not a time: both raise
    :class:`~referralkit.errors.ValidationError` naming ``path``. Every public entry point that
    takes a datetime calls this, so the same instant always gives the same answer whatever
    zone it was written in.

    >>> import datetime as dt
    >>> as_utc(dt.datetime(2026, 1, 5, 4, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))), "at")
    datetime.datetime(2026, 1, 5, 9, 0, tzinfo=datetime.timezone.utc)
    """
    if not isinstance(value, dt.datetime):
        raise ValidationError(
            path, f"expected a timezone-aware datetime, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(path, "expected a timezone-aware datetime, got a naive one")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValidationError(path, "the datetime is out of range in UTC") from None


def utc_datetime(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        not isinstance(value, dt.datetime)
        or value.tzinfo is None
        or value.utcoffset() != dt.timedelta(0)
    ):
        raise _fail(attribute, value, "a timezone-aware UTC datetime")


def date(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise _fail(attribute, value, "a date")


def tuple_of(kind: type | tuple[type, ...], description: str) -> Validator:
    """A tuple whose items are all ``kind``; the path names the bad item."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, tuple):
            raise _fail(attribute, value, f"a tuple of {description}")
        for index, item in enumerate(value):
            if not isinstance(item, kind) or (isinstance(item, str) and not item.strip()):
                shown = "a value" if is_phi(attribute) else repr(item)[:60]
                raise ValidationError(
                    f"{attribute.name}[{index}]", f"expected {description}, got {shown}"
                )

    return check


def non_negative(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(attribute, value, "a non-negative integer")
