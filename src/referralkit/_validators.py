"""Field validators and converters for the attrs model.

They raise :class:`~referralkit.errors.ValidationError` naming the field. A field declared as
PHI (``metadata={"phi": True}``) never has its value repeated in the message.

Which values the model accepts is decided here, once, so that every store keeps what the model
accepts and reads it back equal (:func:`storable_text`, :func:`number`, :func:`json_object`):

- text holds no NUL character (PostgreSQL refuses it in ``text`` and ``jsonb``) and no lone
  surrogate (not encodable as UTF-8, so no database can store it); every other character,
  control characters included, is kept;
- numbers are finite: NaN and infinity are not JSON, and PostgreSQL's ``json`` refuses them;
- versions and indexes fit PostgreSQL's 32-bit ``integer`` columns (:func:`counter`);
- event payloads are JSON values as JSON reads them back: objects with string keys, lists,
  strings, finite numbers, booleans and null (no tuples, sets or datetimes, which a JSON round
  trip would turn into something else).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

import attrs

from .errors import ValidationError

PHI = "phi"
"""The attrs metadata key that declares a field as protected health information."""

REDACTED = "<redacted>"

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _redact(_: object) -> str:
    return REDACTED


PHI_FIELD: Final[dict[str, Any]] = {"repr": _redact, "metadata": {PHI: True}}
"""Keyword arguments that declare an attrs field as PHI: ``attrs.field(..., **PHI_FIELD)``
(redacted in ``repr``, never shown in errors, listed by ``phi_fields``). Spelled as
``attrs.field`` arguments so that type checkers still see an attrs field."""


def phi_field(**kwargs: Any) -> Any:
    """An attrs field that holds PHI (kept for callers; ``attrs.field(..., **PHI_FIELD)`` is
    the spelling mypy's attrs plugin understands when a field without a default follows)."""
    return attrs.field(**PHI_FIELD, **kwargs)


def is_phi(attribute: attrs.Attribute[Any]) -> bool:
    return bool(attribute.metadata.get(PHI, False))


_SCALARS: Final = (str, int, float, type(None), enum.Enum, dt.date, dt.time, dt.timedelta)


def _shown(attribute: attrs.Attribute[Any], value: object, *, kind_only: bool = False) -> str:
    """How a rejected value may appear in a message: not at all when the field is PHI, by its
    type alone when it is not a plain value (a dict, a list, a model object can hold anything,
    PHI included) or when the field holds model objects (``kind_only``: a patient's MRN given
    where a Patient belongs is still an MRN), else as a short excerpt of its ``repr``."""
    if is_phi(attribute):
        return "a value"
    if kind_only or not isinstance(value, _SCALARS):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(
    attribute: attrs.Attribute[Any], value: object, expected: str, *, kind_only: bool = False
) -> ValidationError:
    shown = _shown(attribute, value, kind_only=kind_only)
    return ValidationError(attribute.name, f"expected {expected}, got {shown}")


def _composite(kind: type | tuple[type, ...]) -> bool:
    """True when ``kind`` includes a model (attrs) class: values are not shown then."""
    return any(attrs.has(k) for k in _as_tuple(kind))


_UNSTORABLE: Final = re.compile(r"[\x00\ud800-\udfff]")
_NUL: Final = "contains a NUL character, which no store keeps"
_SURROGATE: Final = "contains a lone surrogate (not encodable as UTF-8)"


def storable_text(value: str) -> str | None:
    """Why every store cannot keep ``value`` as text (a reason to show), or ``None`` when
    they can: a NUL character or a lone surrogate.

    >>> storable_text("Ann\\tLee"), storable_text("a\\x00b")
    (None, 'contains a NUL character, which no store keeps')
    """
    if value.isascii():
        return _NUL if "\x00" in value else None
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return _NUL if found.group() == "\x00" else _SURROGATE


def identifier(value: object, path: str) -> str:
    """``value`` when it is an id string every store can look up; otherwise a
    :class:`~referralkit.errors.ValidationError` naming ``path`` and the type given (never the
    value: a whole referral passed by mistake holds PHI).

    >>> identifier("r-1", "referral_id")
    'r-1'
    >>> identifier(17, "referral_id")
    Traceback (most recent call last):
      ...
    referralkit.errors.ValidationError: referral_id: expected an id (a string), got int
    """
    if not isinstance(value, str):
        raise ValidationError(path, f"expected an id (a string), got {type(value).__name__}")
    problem = storable_text(value)
    if problem is not None:
        raise ValidationError(path, problem)
    return value


def text(*, pattern: str | None = None, max_length: int = 10_000, blank: bool = False) -> Validator:
    """A non-blank string (any string with ``blank``), optionally matching ``pattern``, that
    every store can keep (:func:`storable_text`)."""
    compiled = re.compile(pattern) if pattern else None
    expected = f"a string matching {pattern}" if pattern else "a non-blank string"

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if (
            not isinstance(value, str)
            or len(value) > max_length
            or (not blank and not value.strip())
        ):
            raise _fail(attribute, value, expected)
        # storable_text inlined: this runs for every string of every model value built
        if "\x00" in value or (not value.isascii() and _UNSTORABLE.search(value)):
            raise ValidationError(attribute.name, storable_text(value) or _NUL)
        if compiled is not None and not compiled.fullmatch(value):
            raise _fail(attribute, value, expected)

    return check


def number(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A finite int or float (not a bool): NaN and infinity are not JSON."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(attribute, value, "a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(attribute.name, "expected a finite number, got NaN or infinity")


JSON_DEPTH: Final = 64
"""How deeply a payload may nest (JSON parsers recurse; a bound keeps every store safe)."""


_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,59}")


def json_problem(value: object) -> tuple[str, str] | None:
    """Where and why ``value`` is not a JSON value every store reads back equal, or ``None``.

    The place is a path below the value (``"[2].note"``); the reason never repeats the value.

    >>> json_problem({"a": [1, "x", None]}) is None
    True
    >>> json_problem({"a": [1, float("nan")]})
    ('.a[1]', 'expected a finite number, got NaN or infinity')
    """
    todo: list[tuple[object, str, int]] = [(value, "", 0)]
    while todo:
        item, where, depth = todo.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, str):
            problem = storable_text(item)
            if problem is not None:
                return where, problem
        elif isinstance(item, float):
            if not math.isfinite(item):
                return where, "expected a finite number, got NaN or infinity"
        elif depth >= JSON_DEPTH:
            return where, f"nested more than {JSON_DEPTH} levels deep"
        elif isinstance(item, dict):
            for key, member in item.items():
                if not isinstance(key, str):
                    return where, f"object keys must be strings, got {type(key).__name__}"
                problem = storable_text(key)
                if problem is not None:
                    return where, f"a key {problem}"
                # a key is named in the path only when it looks like a field name: a key
                # can be data too
                step = f".{key}" if _KEY.fullmatch(key) else ".<key>"
                todo.append((member, where + step, depth + 1))
        elif isinstance(item, list):
            todo.extend((member, f"{where}[{i}]", depth + 1) for i, member in enumerate(item))
        else:
            # a tuple, set or datetime would come back from a JSON store as something else
            return where, f"expected a JSON value, got {type(item).__name__}"
    return None


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_DECODER: Final = json.JSONDecoder()


def _reads_back_equal(value: dict[str, Any]) -> bool:
    """True when ``value`` survives a JSON round trip equal, with only storable text: the
    quick test (the C encoder and decoder, about twice as fast as :func:`json_problem` on a
    whole referral's payload); False means :func:`json_problem` must look."""
    try:
        text = _ENCODER.encode(value)
        text.encode("utf-8")  # a lone surrogate is not UTF-8
    except (TypeError, ValueError, RecursionError):
        return False
    # the encoders of Python 3.12 and later go thousands of levels deep without a
    # RecursionError: a text with more opening brackets than the bound allows may nest too
    # deeply, and then json_problem looks (a text with fewer cannot)
    if text.count("{") + text.count("[") > JSON_DEPTH and _too_deep(value):
        return False
    # a NUL is written as an escape; this also matches a literal backslash-u0000 (then
    # json_problem finds nothing wrong)
    return "\\u0000" not in text and _DECODER.decode(text) == value


def _too_deep(value: dict[str, Any] | list[Any]) -> bool:
    """True when ``value`` nests more than :data:`JSON_DEPTH` containers deep."""
    todo: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        members = item.values() if isinstance(item, dict) else item
        for member in members:
            if isinstance(member, dict | list):
                if depth + 1 >= JSON_DEPTH:
                    return True
                todo.append((member, depth + 1))
    return False


class JsonObject(dict[str, Any]):
    """A dict the library made as JSON, which :func:`json_object` need not look into again: a
    desk payload built with ``to_dict`` from validated values, or a payload read from a store
    whose text passed :func:`storable_json`. (Checking a whole referral's payload costs about
    fifty microseconds, ten times the rest of building its event; the desk builds one at every
    intake and a store reads back every event of a history.)"""

    __slots__ = ()


def storable_json(value: object) -> bool:
    """True when decoded JSON ``value`` holds only finite numbers and storable text (what a
    JSON decoder can give that no store keeps: a lone surrogate or a NUL from an escape)."""
    try:
        text = _ENCODER.encode(value)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return False
    return "\\u0000" not in text


def json_object(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A dict that is a JSON object every store reads back equal: no NaN or infinity, only
    storable text, nothing a JSON round trip changes (a tuple, a set, a non-string key)."""
    if type(value) is JsonObject:
        return
    if not isinstance(value, dict):
        raise _fail(attribute, value, "a dict")
    if _reads_back_equal(value):
        return
    found = json_problem(value)
    if found is not None:
        where, reason = found
        raise ValidationError(f"{attribute.name}{where}", reason)


def optional(inner: Validator) -> Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            inner(instance, attribute, value)

    return check


def instance(kind: type | tuple[type, ...], description: str) -> Validator:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        # bool is an int subclass; a flag given where a number belongs is a mistake
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise _fail(attribute, value, description, kind_only=composite)

    composite = _composite(kind)
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
    if type(value) is dt.datetime and value.tzinfo is dt.UTC and not value.fold:
        return value
    if not isinstance(value, dt.datetime):
        raise ValidationError(
            path, f"expected a timezone-aware datetime, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(path, "expected a timezone-aware datetime, got a naive one")
    try:
        # fold only tells apart repeated local times; in UTC it means nothing, and a value
        # that kept it would differ in repr from the same instant converted from elsewhere
        return value.astimezone(dt.UTC).replace(fold=0)
    except OverflowError:
        raise ValidationError(path, "the datetime is out of range in UTC") from None


def to_utc(value: Any) -> Any:
    """An attrs converter: any timezone-aware datetime becomes the same instant in UTC (so equal
    instants give equal values whatever zone they were written in). Anything else (``None``
    for an optional field, a naive datetime, a time with no UTC equivalent) is left for
    :func:`utc_datetime` to accept or refuse, naming the field."""
    if value is None or (type(value) is dt.datetime and value.tzinfo is dt.UTC and not value.fold):
        return value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        try:
            return as_utc(value, "")
        except ValidationError:
            return value
    return value


def utc_datetime(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is dt.datetime and value.tzinfo is dt.UTC:
        return  # what to_utc gives: the common case, checked first
    if not isinstance(value, dt.datetime):
        raise _fail(attribute, value, "a timezone-aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(attribute.name, "expected a timezone-aware datetime, got a naive one")
    if value.utcoffset() != dt.timedelta(0):
        # to_utc converts every aware datetime that has a UTC equivalent
        raise ValidationError(attribute.name, "the datetime is out of range in UTC")


def date(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise _fail(attribute, value, "a date")


def tuple_of(kind: type | tuple[type, ...], description: str) -> Validator:
    """A tuple whose items are all ``kind`` (strings non-blank and storable); the path names
    the bad item."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, tuple):
            raise _fail(attribute, value, f"a tuple of {description}")
        for index, item in enumerate(value):
            if not isinstance(item, kind):
                raise _item_error(attribute, index, item)
            if text_items and isinstance(item, str):
                # storable_text inlined: this runs for every item of every model value built
                if not item.strip():
                    raise _item_error(attribute, index, item)
                if "\x00" in item or (not item.isascii() and _UNSTORABLE.search(item)):
                    raise ValidationError(f"{attribute.name}[{index}]", storable_text(item) or _NUL)

    def _item_error(attribute: attrs.Attribute[Any], index: int, item: Any) -> ValidationError:
        shown = _shown(attribute, item, kind_only=composite)
        return ValidationError(f"{attribute.name}[{index}]", f"expected {description}, got {shown}")

    composite = _composite(kind)
    # whether an item can be text (kind is str, a StrEnum, or a base of str): found once, here
    text_items = any(issubclass(k, str) or issubclass(str, k) for k in _as_tuple(kind))
    return check


def non_negative(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(attribute, value, "a non-negative integer")


INT32_MAX: Final = 2**31 - 1
"""The largest version or index a store keeps (PostgreSQL ``integer`` columns)."""

INT64_MAX: Final = 2**63 - 1
"""The largest row count or offset a store takes (SQLite and PostgreSQL 64-bit integers)."""


def row_count(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A whole number of rows from 0 to :data:`INT64_MAX` (a limit, an offset)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise _fail(attribute, value, "a whole number >= 0")


def counter(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A whole number from 0 to :data:`INT32_MAX`: a version or an index, which the SQL stores
    keep in 32-bit integer columns."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT32_MAX:
        raise _fail(attribute, value, f"a whole number from 0 to {INT32_MAX}")
